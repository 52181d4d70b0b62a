//! The one trait every AWS service implements, and how the front end routes to it.
//!
//! A service says how it is reached ([`Routing`]): the JSON protocols by an
//! `X-Amz-Target: Prefix.Operation` header (Kinesis `Kinesis_20131202`, Firehose
//! `Firehose_20150804`, …), rest-json services by method and path (Kinesis Video's
//! `POST /createStream`, `POST /putMedia`). The front end authenticates the request with the
//! service's SigV4 signing name before the service sees it, decodes `aws-chunked` bodies, and
//! hands over a [`Call`]: the head, and the body either whole or, for the operations the
//! service asks for ([`Service::streams_body`]), as a [`BodyStream`] that it reads while it
//! answers with a streamed [`Reply`] (PutMedia's acknowledgements go out while its upload
//! continues).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::document::Protocol;
use super::error::{codes, error_body, ApiError, ErrorCode, ErrorStyle};

/// How a service is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// `X-Amz-Target: <prefix>.<Operation>`; JSON 1.1 or CBOR bodies.
    Target { prefix: &'static str },
    /// rest-json: requests whose path starts with one of these (the service matches the
    /// operation itself, by method and path).
    Paths { prefixes: &'static [&'static str] },
}

/// A request as a service receives it (authenticated).
#[derive(Debug, Clone)]
pub struct Head {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    /// The operation named by `X-Amz-Target` (JSON services); `None` for rest-json.
    pub operation: Option<String>,
    /// The body's encoding, by `Content-Type`.
    pub protocol: Protocol,
    /// The id of this request in the server's log and in `x-amzn-RequestId`.
    pub request_id: String,
    /// The access key that signed it (`None` without authentication).
    pub access_key: Option<String>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Why reading a streamed body failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the client's upload failed: {what}")]
    Transport { what: String },
    #[error("{0}")]
    Refused(ApiError),
}

/// A body read as it arrives: already decoded from aws-chunked and verified chunk by chunk.
pub struct BodyStream {
    receiver: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>,
}

impl BodyStream {
    pub(crate) fn new(receiver: tokio::sync::mpsc::Receiver<Result<Bytes, BodyError>>) -> BodyStream {
        BodyStream { receiver }
    }

    /// The next piece of the body; `None` once it ended cleanly.
    pub async fn next(&mut self) -> Option<Result<Bytes, BodyError>> {
        self.receiver.recv().await
    }
}

pub enum RequestBody {
    Full(Bytes),
    Stream(BodyStream),
}

impl RequestBody {
    /// The whole body (empty for a stream: services that stream read [`RequestBody::Stream`]).
    pub fn bytes(&self) -> &[u8] {
        match self {
            RequestBody::Full(bytes) => bytes,
            RequestBody::Stream(_) => &[],
        }
    }
}

pub struct Call {
    pub head: Head,
    pub body: RequestBody,
}

/// What a service answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody,
}

pub enum ReplyBody {
    Full(Bytes),
    /// Sent as it is produced (event streams, PutMedia acknowledgements).
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Reply {
    /// A whole answer in the request's encoding.
    pub fn encoded(status: u16, protocol: Protocol, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", protocol.content_type().to_owned())],
            body: ReplyBody::Full(body.into()),
        }
    }

    /// The answer of a JSON 1.1 (`X-Amz-Target`) operation: its value in the request's
    /// encoding, or its error in the JSON shape with the error's status.
    pub fn target(protocol: Protocol, outcome: Result<super::document::Value, ApiError>) -> Reply {
        match outcome {
            Ok(value) => Reply::encoded(200, protocol, super::document::encode(protocol, &value)),
            Err(error) => Reply::error(ErrorStyle::Json, protocol, error.code.status(), &error),
        }
    }

    /// An error in a service's shape.
    pub fn error(style: ErrorStyle, protocol: Protocol, status: u16, error: &ApiError) -> Reply {
        let content_type = match style {
            ErrorStyle::Json => protocol.content_type(),
            ErrorStyle::RestJson => "application/json",
        };
        Reply {
            status,
            headers: vec![
                ("content-type", content_type.to_owned()),
                ("x-amzn-errortype", error.code.type_name().to_owned()),
            ],
            body: ReplyBody::Full(error_body(style, protocol, error).into()),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// An AWS API served on the front end's port.
pub trait Service: Send + Sync + 'static {
    /// For the server's log.
    fn name(&self) -> &'static str;
    /// The SigV4 signing name clients scope their credentials to.
    fn signing_name(&self) -> &'static str;
    fn routing(&self) -> Routing;
    /// How its errors are shaped; by default, the one its routing implies.
    fn error_style(&self) -> ErrorStyle {
        match self.routing() {
            Routing::Target { .. } => ErrorStyle::Json,
            Routing::Paths { .. } => ErrorStyle::RestJson,
        }
    }
    /// The HTTP status it answers `code` with (services differ for a few codes).
    fn status_of(&self, code: ErrorCode) -> u16 {
        code.status()
    }
    /// Whether this request's body is handed over as it arrives rather than whole.
    fn streams_body(&self, head: &Head) -> bool {
        let _ = head;
        false
    }
    fn call(self: Arc<Self>, call: Call) -> ReplyFuture;
}

/// Every service of one front end.
#[derive(Clone, Default)]
pub struct Router {
    services: Vec<Arc<dyn Service>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    pub fn with(mut self, service: Arc<dyn Service>) -> Router {
        self.services.push(service);
        self
    }

    /// The service a request is for, and its operation (the target's suffix).
    pub fn find(
        &self,
        target: Option<&str>,
        path: &str,
    ) -> Result<(Arc<dyn Service>, Option<String>), ApiError> {
        if let Some(target) = target {
            for service in &self.services {
                if let Routing::Target { prefix } = service.routing() {
                    if let Some(operation) =
                        target.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('.'))
                    {
                        return Ok((service.clone(), Some(operation.to_owned())));
                    }
                }
            }
            return Err(ApiError::new(codes::UNKNOWN_OPERATION, format!("Unknown target {target}")));
        }
        for service in &self.services {
            if let Routing::Paths { prefixes } = service.routing() {
                if prefixes.iter().any(|prefix| path.starts_with(prefix)) {
                    return Ok((service.clone(), None));
                }
            }
        }
        Err(ApiError::new(
            codes::UNKNOWN_OPERATION,
            format!("Missing X-Amz-Target header, and no service serves {path}"),
        ))
    }

    /// The style of errors answered before any service is found (JSON, as the JSON
    /// protocols, which most clients speak).
    pub fn services(&self) -> &[Arc<dyn Service>] {
        &self.services
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(Routing);

    impl Service for Named {
        fn name(&self) -> &'static str {
            "named"
        }
        fn signing_name(&self) -> &'static str {
            "named"
        }
        fn routing(&self) -> Routing {
            self.0
        }
        fn call(self: Arc<Self>, _call: Call) -> ReplyFuture {
            Box::pin(async { Reply::encoded(200, Protocol::Json, b"{}".to_vec()) })
        }
    }

    #[test]
    fn routes_by_target_prefix_and_by_path() {
        let router = Router::new()
            .with(Arc::new(Named(Routing::Target { prefix: "Kinesis_20131202" })))
            .with(Arc::new(Named(Routing::Target { prefix: "Firehose_20150804" })))
            .with(Arc::new(Named(Routing::Paths { prefixes: &["/createStream", "/putMedia"] })));
        let (service, operation) = router.find(Some("Firehose_20150804.PutRecord"), "/").unwrap();
        assert_eq!(
            (service.routing(), operation.as_deref()),
            (Routing::Target { prefix: "Firehose_20150804" }, Some("PutRecord"))
        );
        let (service, operation) = router.find(None, "/putMedia").unwrap();
        assert!(matches!(service.routing(), Routing::Paths { .. }) && operation.is_none());
        assert_eq!(
            router.find(Some("Kinesis_20131202ListStreams"), "/").err().map(|e| e.code),
            Some(codes::UNKNOWN_OPERATION)
        );
        assert_eq!(router.find(None, "/nothing").err().map(|e| e.code), Some(codes::UNKNOWN_OPERATION));
    }
}
