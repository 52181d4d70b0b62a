//! The HTTP front end: hyper (HTTP/1.1 and HTTP/2) on a small tokio runtime, one port for
//! every AWS-compatible API. Requests are authenticated (SigV4) before any operation runs,
//! so a bad signature stores nothing; operations then hand batches to the shard cores.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use millrace_core::runtime::now_ms;

use crate::kinesis::error::{ApiError, ErrorCode};
use crate::kinesis::value::Protocol;
use crate::kinesis::{self, KinesisApi};
use crate::sigv4;

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
    /// Largest request body taken (a 10 MiB record in base64 JSON is about 14 MiB).
    pub body_bytes_max: usize,
    /// Threads of the tokio runtime.
    pub threads: usize,
}

impl HttpConfig {
    pub fn new(listen: SocketAddr, auth: Auth) -> HttpConfig {
        HttpConfig { listen, auth, body_bytes_max: 16 << 20, threads: 2 }
    }
}

const KINESIS_TARGET_PREFIX: &str = "Kinesis_20131202.";

/// A response body: a whole answer, or an event stream fed by a session task.
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

/// What one request gets back.
enum Reply {
    Answer(kinesis::Answer),
    EventStream(tokio::sync::mpsc::Receiver<Bytes>),
}

struct Service {
    kinesis: Arc<KinesisApi>,
    config: HttpConfig,
    request_ids: AtomicU64,
    request_id_salt: u64,
}

/// A running HTTP server.
pub struct HttpServer {
    runtime: tokio::runtime::Runtime,
    local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl HttpServer {
    /// Binds the port and starts serving; returns once the port accepts connections.
    pub fn start(kinesis: Arc<KinesisApi>, config: HttpConfig) -> std::io::Result<HttpServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("millrace-http")
            .enable_io()
            .enable_time()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(config.listen))?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let salt = now_ms() as u64 ^ u64::from(std::process::id()) << 40;
        let service =
            Arc::new(Service { kinesis, config, request_ids: AtomicU64::new(0), request_id_salt: salt });
        runtime.spawn(accept_loop(listener, service, stopped));
        Ok(HttpServer { runtime, local_addr, stop })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The front-end runtime, for the other front ends (QUIC) to run on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// Stops accepting, gives in-flight requests a moment to finish, and stops the threads.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
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
        let service = service.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |request| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(service.handle(request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), handler).await;
        });
    }
}

impl Service {
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
        let answer = match self.answer(request, protocol).await {
            Ok(Reply::Answer(answer)) => answer,
            Ok(Reply::EventStream(events)) => {
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(hyper::header::CONTENT_TYPE, "application/vnd.amazon.eventstream")
                    .header("x-amzn-RequestId", request_id)
                    .body(Body::Stream(events))
                    .expect("headers are valid");
            }
            Err((status, error)) => {
                let mut answer = kinesis::error_response(protocol, &error);
                if let Some(status) = status {
                    answer.status = status;
                }
                answer
            }
        };
        let mut response = Response::builder()
            .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(hyper::header::CONTENT_TYPE, protocol.content_type())
            .header("x-amzn-RequestId", request_id);
        if let Some(error_type) = answer.error_type {
            response = response.header("x-amzn-ErrorType", error_type);
        }
        response.body(Body::Full(Some(Bytes::from(answer.body)))).expect("headers are valid")
    }

    /// Authenticates and runs one request. Errors carry an HTTP status only where it is not
    /// the error code's own.
    async fn answer(
        &self,
        request: Request<Incoming>,
        protocol: Protocol,
    ) -> Result<Reply, (Option<u16>, ApiError)> {
        let (parts, body) = request.into_parts();
        if parts.method == hyper::Method::GET && parts.uri.path() == "/ping" {
            return Ok(Reply::Answer(kinesis::Answer {
                status: 200,
                body: b"{}".to_vec(),
                error_type: None,
            }));
        }
        let body = match Limited::new(body, self.config.body_bytes_max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let too_large = error.downcast_ref::<http_body_util::LengthLimitError>().is_some();
                let (status, message) = if too_large {
                    (413, format!("request body is larger than {} bytes", self.config.body_bytes_max))
                } else {
                    (400, format!("reading the request body failed: {error}"))
                };
                return Err((Some(status), ApiError::new(ErrorCode::Serialization, message)));
            }
        };
        if let Auth::SigV4(secrets) = &self.config.auth {
            let mut headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
                .collect();
            if !headers.iter().any(|(name, _)| name == "host") {
                // HTTP/2 carries the host as :authority.
                if let Some(authority) = parts.uri.authority() {
                    headers.push(("host".to_owned(), authority.as_str().to_owned()));
                }
            }
            let signed = sigv4::SignedRequest {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or(""),
                headers: &headers,
                body: &body,
            };
            sigv4::verify(&signed, secrets, now_ms()).map_err(|error| (None, error))?;
        }
        let target =
            parts.headers.get("x-amz-target").and_then(|value| value.to_str().ok()).ok_or_else(|| {
                (None, ApiError::new(ErrorCode::UnknownOperation, "Missing X-Amz-Target header"))
            })?;
        match target.strip_prefix(KINESIS_TARGET_PREFIX) {
            Some("SubscribeToShard") => match self.kinesis.subscribe(protocol, &body).await {
                Ok(events) => Ok(Reply::EventStream(events)),
                Err(error) => Err((None, error)),
            },
            Some(operation) => Ok(Reply::Answer(self.kinesis.handle(operation, protocol, &body).await)),
            None => {
                Err((None, ApiError::new(ErrorCode::UnknownOperation, format!("Unknown target {target}"))))
            }
        }
    }
}
