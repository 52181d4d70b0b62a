//! Millrace on the wire: the AWS-compatible HTTP API for Kinesis Data Streams (JSON 1.1 and
//! CBOR, SigV4, event streams), served by [`http::HttpServer`] over the storage engine; the
//! native protocol over QUIC ([`quic`]) with its server and producer SDK; an HTTP Kinesis
//! client.
//!
//! What it does not do: no storage (that is `millrace-core`; operations here only validate,
//! translate and hand batches to the engine), no `unsafe`. Codecs (`kinesis::value`,
//! `kinesis::iterator`, `sigv4`) are pure: bytes and `now` in, values out, fuzzable.
#![forbid(unsafe_code)]

pub mod client;
pub mod eventstream;
pub mod http;
pub mod kinesis;
pub mod quic;
pub mod secrets;
pub mod sigv4;
