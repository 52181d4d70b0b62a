//! The HTTP listener: hyper (HTTP/1.1 and HTTP/2, cleartext, one port) in front of every
//! AWS-compatible service. For each request: route it (by `X-Amz-Target` or by path, see
//! [`Router`]), authenticate it with SigV4 under the service's signing name before the service
//! sees anything (so a bad signature stores nothing), decode an aws-chunked body, and call the
//! service, with the body whole or, for the operations a service streams, as it arrives.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use millrace_core::{Clock, SystemClock};
use sha2::{Digest, Sha256};

use crate::aws::chunked::ChunkedDecoder;
use crate::aws::error::{codes, ApiError, ErrorStyle};
use crate::aws::service::{
    BodyError, BodyStream, Call, Head, Reply, ReplyBody, RequestBody, Router, Service,
};
use crate::aws::sigv4::{self, Payload, SignedRequest, Verified};
use crate::aws::Protocol;

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No checks: local development only.
    None,
    /// SigV4 against these access key → secret pairs.
    SigV4(HashMap<String, String>),
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub auth: Auth,
    /// Largest request body taken whole (a 10 MiB record in base64 JSON is about 14 MiB).
    /// Streamed bodies have no total limit.
    pub body_bytes_max: usize,
    /// Where the signature check's `now` comes from.
    pub clock: Arc<dyn Clock>,
}

impl HttpConfig {
    pub fn new(listen: SocketAddr, auth: Auth) -> HttpConfig {
        HttpConfig { listen, auth, body_bytes_max: 16 << 20, clock: Arc::new(SystemClock) }
    }
}

/// Pieces of a streamed body buffered ahead of the service.
const STREAM_BUFFERED: usize = 16;

/// A response body: a whole answer, or a stream fed by a task.
pub enum Body {
    Full(Option<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Body::Stream(receiver) => {
                receiver.poll_recv(cx).map(|next| next.map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(Some(bytes)) => hyper::body::SizeHint::with_exact(bytes.len() as u64),
            Body::Full(None) => hyper::body::SizeHint::with_exact(0),
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

struct Shared {
    router: Router,
    config: HttpConfig,
    request_ids: AtomicU64,
    request_id_salt: u64,
}

/// One listening port.
pub(crate) struct Listener {
    local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Listener {
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        router: Router,
        config: HttpConfig,
    ) -> std::io::Result<Listener> {
        let listener = runtime.block_on(tokio::net::TcpListener::bind(config.listen))?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let salt = config.clock.now_ms() as u64 ^ (u64::from(std::process::id()) << 40);
        let shared =
            Arc::new(Shared { router, config, request_ids: AtomicU64::new(0), request_id_salt: salt });
        runtime.spawn(accept_loop(listener, shared, stopped));
        Ok(Listener { local_addr, stop })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: back off rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(shared.handle(request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), handler).await;
        });
    }
}

fn response(reply: Reply, request_id: &str) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("x-amzn-RequestId", request_id);
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    let body = match reply.body {
        ReplyBody::Full(bytes) => Body::Full(Some(bytes)),
        ReplyBody::Stream(receiver) => Body::Stream(receiver),
    };
    builder.body(body).unwrap_or_else(|_| {
        let mut fallback = Response::new(Body::Full(None));
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

/// The headers as SigV4 sees them: lower-case names, and the request's authority as
/// `:authority` (HTTP/2) and as `host` when the client sent none.
fn signed_headers(parts: &hyper::http::request::Parts) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    if let Some(authority) = parts.uri.authority() {
        headers.push((":authority".to_owned(), authority.as_str().to_owned()));
        if !headers.iter().any(|(name, _)| name == "host") {
            headers.push(("host".to_owned(), authority.as_str().to_owned()));
        }
    }
    headers
}

impl Shared {
    fn request_id(&self) -> String {
        let counter = self.request_ids.fetch_add(1, Ordering::Relaxed);
        let mixed = (counter ^ self.request_id_salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (mixed >> 32) as u32,
            (mixed >> 16) as u16,
            (mixed & 0xfff) as u16,
            (counter >> 48) as u16 & 0xfff,
            counter & 0xffff_ffff_ffff
        )
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let request_id = self.request_id();
        let protocol = request
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map_or(Protocol::Json, Protocol::from_content_type);
        if request.method() == hyper::Method::GET && request.uri().path() == "/ping" {
            return response(Reply::encoded(200, Protocol::Json, b"{}".to_vec()), &request_id);
        }
        let target =
            request.headers().get("x-amz-target").and_then(|value| value.to_str().ok()).map(str::to_owned);
        let (service, operation) = match self.router.find(target.as_deref(), request.uri().path()) {
            Ok(found) => found,
            Err(error) => {
                let status = if target.is_none() { 404 } else { error.code.status() };
                return response(Reply::error(ErrorStyle::Json, protocol, status, &error), &request_id);
            }
        };
        let style = service.error_style();
        match self.call(&service, request, operation, protocol, request_id.clone()).await {
            Ok(reply) => response(reply, &request_id),
            Err(error) => {
                let status = service.status_of(error.code);
                response(Reply::error(style, protocol, status, &error), &request_id)
            }
        }
    }

    /// Authenticates, reads the body (whole, or as a stream for the operations that stream),
    /// and calls the service.
    async fn call(
        &self,
        service: &Arc<dyn Service>,
        request: Request<Incoming>,
        operation: Option<String>,
        protocol: Protocol,
        request_id: String,
    ) -> Result<Reply, ApiError> {
        let (parts, body) = request.into_parts();
        let mut head = Head {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers: parts.headers.clone(),
            operation,
            protocol,
            request_id,
            access_key: None,
        };
        let chunked_claim =
            head.header("x-amz-content-sha256").is_some_and(|claim| claim.starts_with("STREAMING-"))
                || head.header("content-encoding").is_some_and(|encoding| encoding.contains("aws-chunked"));
        if service.streams_body(&head) {
            let verified = self.authenticate(&parts, Payload::Unread, service.signing_name())?;
            head.access_key = verified.as_ref().map(|verified| verified.access_key.clone());
            let stream = stream_body(body, verified, chunked_claim);
            return Ok(service.clone().call(Call { head, body: RequestBody::Stream(stream) }).await);
        }
        let raw = read_whole(body, self.config.body_bytes_max).await?;
        let verified = self.authenticate(&parts, Payload::Body(&raw), service.signing_name())?;
        head.access_key = verified.as_ref().map(|verified| verified.access_key.clone());
        let body = if chunked_claim {
            let mut decoder = match &verified {
                Some(verified) => ChunkedDecoder::new(verified),
                None => ChunkedDecoder::unsigned(),
            };
            let mut decoded = Vec::with_capacity(raw.len());
            decoder
                .push(&raw, &mut decoded)
                .and_then(|()| decoder.finish())
                .map_err(|error| ApiError::new(codes::INVALID_SIGNATURE, error.to_string()))?;
            Bytes::from(decoded)
        } else {
            raw
        };
        Ok(service.clone().call(Call { head, body: RequestBody::Full(body) }).await)
    }

    fn authenticate(
        &self,
        parts: &hyper::http::request::Parts,
        payload: Payload<'_>,
        signing_name: &str,
    ) -> Result<Option<Verified>, ApiError> {
        let Auth::SigV4(secrets) = &self.config.auth else { return Ok(None) };
        let headers = signed_headers(parts);
        let signed = SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &headers,
            payload,
        };
        sigv4::verify(&signed, secrets, signing_name, self.config.clock.now_ms()).map(Some)
    }
}

async fn read_whole(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(ApiError::new(
                    codes::REQUEST_TOO_LARGE,
                    format!("request body is larger than {limit} bytes"),
                ))
            } else {
                Err(ApiError::new(codes::SERIALIZATION, format!("reading the request body failed: {error}")))
            }
        }
    }
}

/// Reads a body as it arrives on a task of its own, decoding aws-chunked (chunk by chunk,
/// each verified before it is handed on) or checking a claimed payload hash at the end.
fn stream_body(mut body: Incoming, verified: Option<Verified>, chunked: bool) -> BodyStream {
    let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_BUFFERED);
    let claimed_hash = verified
        .as_ref()
        .and_then(|verified| verified.content_sha256.clone())
        .filter(|claim| claim.len() == 64 && claim.bytes().all(|byte| byte.is_ascii_hexdigit()));
    let mut decoder = chunked.then(|| match &verified {
        Some(verified) => ChunkedDecoder::new(verified),
        None => ChunkedDecoder::unsigned(),
    });
    tokio::spawn(async move {
        let mut hasher = claimed_hash.as_ref().map(|_| Sha256::new());
        let refuse = |error: String| BodyError::Refused(ApiError::new(codes::INVALID_SIGNATURE, error));
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    let _ = sender.send(Err(BodyError::Transport { what: error.to_string() })).await;
                    return;
                }
            };
            let Ok(data) = frame.into_data() else { continue };
            let piece = match decoder.as_mut() {
                Some(decoder) => {
                    let mut out = Vec::new();
                    if let Err(error) = decoder.push(&data, &mut out) {
                        let _ = sender.send(Err(refuse(error.to_string()))).await;
                        return;
                    }
                    Bytes::from(out)
                }
                None => data,
            };
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&piece);
            }
            if !piece.is_empty() && sender.send(Ok(piece)).await.is_err() {
                return; // the service stopped reading
            }
        }
        if let Some(decoder) = &decoder {
            if let Err(error) = decoder.finish() {
                let _ = sender.send(Err(refuse(error.to_string()))).await;
                return;
            }
        }
        if let (Some(hasher), Some(claimed)) = (hasher, claimed_hash) {
            if sigv4::hex(&hasher.finalize()) != claimed {
                let error =
                    "The provided 'x-amz-content-sha256' header does not match what was computed.".to_owned();
                let _ = sender.send(Err(refuse(error))).await;
            }
        }
    });
    BodyStream::new(receiver)
}
