//! The shared AWS layer every service of Millrace speaks through: the document model and its
//! two encodings (JSON 1.1, CBOR) that the JSON protocols and rest-json bodies use, error
//! shapes with a stable code table, SigV4 (with each service's signing name) and its
//! aws-chunked payloads, the event-stream codec, and the [`Service`] trait the front end
//! routes to, by `X-Amz-Target` prefix or by method and path.
//!
//! A service module (`kinesis`, and `firehose`, `kinesis_video`, `analytics`, … as they land)
//! validates, translates and calls the engine; it never re-implements a codec, auth or an
//! error shape. Everything here is pure (bytes and `now` in, values out) and fuzzed.

pub mod cbor;
pub mod chunked;
pub mod document;
pub mod error;
pub mod eventstream;
pub mod json;
pub mod restjson;
pub mod service;
pub mod sigv4;

pub use document::{Protocol, Request, Value};
pub use error::{codes, ApiError, ErrorCode, ErrorStyle};
pub use service::{
    BodyError, BodyStream, Call, Head, Reply, ReplyBody, ReplyFuture, RequestBody, Router, Routing, Service,
};

/// The account id in ARNs and messages. Millrace is one account.
pub const ACCOUNT_ID: &str = "000000000000";
