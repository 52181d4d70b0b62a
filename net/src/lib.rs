//! Millrace on the wire: the shared AWS layer ([`aws`]: document model, JSON 1.1, CBOR,
//! rest-json, error shapes, SigV4, event streams, routing), one module tree per AWS service
//! over it ([`kinesis`] today; Firehose, Kinesis Video, Analytics, Glue and CloudWatch as
//! they land), the front end that serves them all on one port ([`front`]), the native
//! protocol over QUIC ([`quic`]) with its server and SDK, and an HTTP Kinesis client.
//!
//! What it does not do: no storage (that is `millrace-core`; operations here only validate,
//! translate and hand batches to the engine), no `unsafe`. Codecs (`aws::*`,
//! `kinesis::iterator`, `quic::frame`) are pure: bytes and `now` in, values out, fuzzable.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod aws;
pub mod client;
pub mod firehose;
pub mod front;
pub mod glue;
pub mod kinesis;
pub mod quic;
pub mod secrets;
