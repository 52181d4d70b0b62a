//! A small Kinesis HTTP client: JSON 1.1 over HTTP/1.1 (or HTTP/2 with prior knowledge),
//! signed with SigV4. Used by the `millrace` CLI, `millrace-bench kinesis` and the tests;
//! it talks to any Kinesis-compatible endpoint over plain HTTP.
//!
//! One client holds one connection and sends one request at a time; make more clients for
//! concurrency. A dropped connection is re-opened on the next call.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use millrace_core::{Clock, SystemClock};

use crate::aws::eventstream::{DecodeError, Message};
use crate::aws::sigv4::{self, Payload, SignedRequest};
use crate::aws::{document as value, Protocol, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error (`__type` and `message`).
    #[error("{code}: {message}")]
    Api { code: String, message: String, status: u16 },
    #[error("{operation}: {what}")]
    Transport { operation: String, what: String },
    #[error("{operation}: the answer could not be decoded: {what}")]
    Decode { operation: String, what: String },
}

impl ClientError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), as the Java SDK uses for SubscribeToShard.
    Http2,
}

enum Connection {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

pub struct KinesisClient {
    /// `host:port`, where to connect.
    authority: String,
    /// The endpoint's host (and port, if it named one), as the Host header and signature say it.
    host_header: String,
    /// The host name for TLS (SNI and certificate check); `None` for plain HTTP.
    tls_host: Option<String>,
    credentials: Option<Credentials>,
    region: String,
    version: HttpVersion,
    connection: Option<Connection>,
    pub timeout: Duration,
    /// `X-Amz-Target` prefix and SigV4 signing name of the service it calls.
    target_prefix: &'static str,
    signing_name: &'static str,
}

impl KinesisClient {
    /// A client for `http://host[:port]` or `https://host[:port]`.
    pub fn new(
        endpoint: &str,
        credentials: Option<Credentials>,
        region: &str,
    ) -> Result<KinesisClient, ClientError> {
        let bad = |what: &str| ClientError::Transport {
            operation: "connect".into(),
            what: format!("endpoint {endpoint}: {what}"),
        };
        let (rest, tls, default_port) = if let Some(rest) = endpoint.strip_prefix("https://") {
            (rest, true, 443)
        } else if let Some(rest) = endpoint.strip_prefix("http://") {
            (rest, false, 80)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let host_header = rest.trim_end_matches('/');
        if host_header.is_empty() || host_header.contains('/') {
            return Err(bad("expected scheme://host[:port]"));
        }
        let port = host_header.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok());
        let host = port.map_or(host_header, |(host, _)| host);
        let authority =
            if port.is_some() { host_header.to_owned() } else { format!("{host_header}:{default_port}") };
        Ok(KinesisClient {
            tls_host: tls.then(|| host.trim_start_matches('[').trim_end_matches(']').to_owned()),
            host_header: host_header.to_owned(),
            authority,
            credentials,
            region: region.to_owned(),
            version: HttpVersion::Http1,
            connection: None,
            timeout: Duration::from_secs(60),
            target_prefix: "Kinesis_20131202",
            signing_name: "kinesis",
        })
    }

    pub fn with_version(mut self, version: HttpVersion) -> KinesisClient {
        self.version = version;
        self
    }

    /// The same client for another JSON 1.1 service of the endpoint (Firehose:
    /// `Firehose_20150804`, signed for `firehose`).
    pub fn for_service(mut self, target_prefix: &'static str, signing_name: &'static str) -> KinesisClient {
        self.target_prefix = target_prefix;
        self.signing_name = signing_name;
        self
    }

    async fn connect(&mut self, operation: &str) -> Result<(), ClientError> {
        let transport = |what: String| ClientError::Transport { operation: operation.to_owned(), what };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|error| transport(format!("connecting to {}: {error}", self.authority)))?;
        let _ = stream.set_nodelay(true);
        self.connection = Some(match &self.tls_host {
            None => handshake(self.version, TokioIo::new(stream), operation).await?,
            Some(host) => {
                let server_name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|error| transport(format!("TLS server name {host}: {error}")))?;
                let tls = tls_connector(self.version)
                    .connect(server_name, stream)
                    .await
                    .map_err(|error| transport(format!("TLS handshake with {host}: {error}")))?;
                handshake(self.version, TokioIo::new(tls), operation).await?
            }
        });
        Ok(())
    }

    fn request(&self, operation: &str, body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
        let target = format!("{}.{operation}", self.target_prefix);
        let amz_date = sigv4::format_amz_date(SystemClock.now_ms());
        let mut headers = vec![
            ("content-type".to_owned(), Protocol::Json.content_type().to_owned()),
            ("host".to_owned(), self.host_header.clone()),
            ("x-amz-date".to_owned(), amz_date.clone()),
            ("x-amz-target".to_owned(), target),
        ];
        if let Some(credentials) = &self.credentials {
            let signed = SignedRequest {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                payload: Payload::Body(&body),
            };
            let authorization = sigv4::sign(
                &signed,
                &credentials.access_key_id,
                &credentials.secret_access_key,
                &self.region,
                self.signing_name,
                &amz_date,
            );
            headers.push(("authorization".to_owned(), authorization));
        }
        let scheme = if self.tls_host.is_some() { "https" } else { "http" };
        let uri = match self.version {
            HttpVersion::Http1 => "/".to_owned(),
            HttpVersion::Http2 => format!("{scheme}://{}/", self.host_header),
        };
        let mut builder = hyper::Request::builder().method("POST").uri(uri);
        for (name, value) in &headers {
            if self.version == HttpVersion::Http2 && name == "host" {
                continue; // carried as :authority
            }
            builder = builder.header(name, value);
        }
        builder.body(Full::new(Bytes::from(body))).expect("valid request")
    }

    async fn send(
        &mut self,
        operation: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        // One retry on a connection that closed while idle.
        for attempt in 0..2 {
            if self.connection.is_none() {
                self.connect(operation).await?;
            }
            let request = self.request(operation, body.clone());
            let sent = match self.connection.as_mut().expect("connected") {
                Connection::Http1(sender) => match sender.ready().await {
                    Ok(()) => sender.send_request(request).await,
                    Err(error) => Err(error),
                },
                Connection::Http2(sender) => match sender.ready().await {
                    Ok(()) => sender.send_request(request).await,
                    Err(error) => Err(error),
                },
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(error) => {
                    self.connection = None;
                    if attempt == 1 || !(error.is_closed() || error.is_canceled()) {
                        return Err(ClientError::Transport {
                            operation: operation.to_owned(),
                            what: error.to_string(),
                        });
                    }
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Calls an operation with a JSON body; returns the decoded answer or the service's error.
    pub async fn call(&mut self, operation: &str, body: &Value) -> Result<Value, ClientError> {
        let encoded = value::encode(Protocol::Json, body);
        let timeout = self.timeout;
        let exchange = async {
            let response = self.send(operation, encoded).await?;
            let status = response.status().as_u16();
            Ok::<_, ClientError>((status, body_bytes(operation, response).await?))
        };
        let (status, bytes) = tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            self.connection = None;
            ClientError::Transport {
                operation: operation.to_owned(),
                what: format!("no answer within {timeout:?}"),
            }
        })??;
        decode_answer(operation, status, &bytes)
    }

    /// SubscribeToShard: returns the event-stream messages as they arrive, starting with the
    /// initial response. The session holds this client's connection until it ends.
    pub async fn subscribe(&mut self, body: &Value) -> Result<EventStream, ClientError> {
        let operation = "SubscribeToShard";
        let response = self.send(operation, value::encode(Protocol::Json, body)).await?;
        let status = response.status().as_u16();
        if status != 200 {
            let bytes = body_bytes(operation, response).await?;
            return Err(decode_answer(operation, status, &bytes).err().unwrap_or_else(|| {
                ClientError::Decode {
                    operation: operation.to_owned(),
                    what: format!("status {status} without an error body"),
                }
            }));
        }
        Ok(EventStream { body: response.into_body(), buffer: Vec::new() })
    }
}

/// The HTTP handshake on a connected stream, plain or TLS.
async fn handshake<T>(
    version: HttpVersion,
    io: TokioIo<T>,
    operation: &str,
) -> Result<Connection, ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let transport = |what: String| ClientError::Transport { operation: operation.to_owned(), what };
    Ok(match version {
        HttpVersion::Http1 => {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|error| transport(format!("HTTP/1.1 handshake: {error}")))?;
            tokio::spawn(connection);
            Connection::Http1(sender)
        }
        HttpVersion::Http2 => {
            let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|error| transport(format!("HTTP/2 handshake: {error}")))?;
            tokio::spawn(connection);
            Connection::Http2(sender)
        }
    })
}

/// TLS with the webpki root certificates, offering the HTTP version by ALPN.
pub(crate) fn tls_connector(version: HttpVersion) -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match version {
        HttpVersion::Http1 => b"http/1.1".to_vec(),
        HttpVersion::Http2 => b"h2".to_vec(),
    }];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The whole body of a response.
async fn body_bytes(
    operation: &str,
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<Bytes, ClientError> {
    let collected = response.into_body().collect().await.map_err(|error| ClientError::Transport {
        operation: operation.to_owned(),
        what: error.to_string(),
    })?;
    Ok(collected.to_bytes())
}

fn decode_answer(operation: &str, status: u16, bytes: &[u8]) -> Result<Value, ClientError> {
    let decoded = value::decode(Protocol::Json, bytes)
        .map_err(|error| ClientError::Decode { operation: operation.to_owned(), what: error.message });
    if status == 200 {
        return decoded;
    }
    let decoded = decoded.unwrap_or_else(|_| Value::map());
    let text = |name: &str| match decoded.get(name) {
        Some(Value::Str(text)) => Some(text.clone()),
        _ => None,
    };
    let code = text("__type").unwrap_or_else(|| format!("HTTP {status}"));
    // Some services prefix the type with a namespace: `com.amazonaws...#Code`.
    let code = code.rsplit('#').next().unwrap_or(&code).to_owned();
    let message = text("message").or_else(|| text("Message")).unwrap_or_default();
    Err(ClientError::Api { code, message, status })
}

/// The messages of a SubscribeToShard response.
pub struct EventStream {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next message, or `None` when the session ended.
    pub async fn next(&mut self) -> Result<Option<Message>, ClientError> {
        let failed = |what: String| ClientError::Decode { operation: "SubscribeToShard".into(), what };
        loop {
            match Message::decode(&self.buffer) {
                Ok((message, used)) => {
                    self.buffer.drain(..used);
                    return Ok(Some(message));
                }
                Err(DecodeError::Incomplete { .. }) => {}
                Err(error) => return Err(failed(error.to_string())),
            }
            match self.body.frame().await {
                None if self.buffer.is_empty() => return Ok(None),
                None => {
                    return Err(failed(format!("{} bytes of a message, then the end", self.buffer.len())))
                }
                Some(Err(error)) => {
                    return Err(ClientError::Transport {
                        operation: "SubscribeToShard".into(),
                        what: error.to_string(),
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let aws = KinesisClient::new("https://kinesis.eu-west-1.amazonaws.com", None, "eu-west-1").unwrap();
        assert_eq!(aws.authority, "kinesis.eu-west-1.amazonaws.com:443");
        assert_eq!(aws.host_header, "kinesis.eu-west-1.amazonaws.com");
        assert_eq!(aws.tls_host.as_deref(), Some("kinesis.eu-west-1.amazonaws.com"));
        let local = KinesisClient::new("http://127.0.0.1:4567/", None, "us-east-1").unwrap();
        assert_eq!(
            (local.authority.as_str(), local.host_header.as_str()),
            ("127.0.0.1:4567", "127.0.0.1:4567")
        );
        assert!(local.tls_host.is_none());
        assert!(KinesisClient::new("ftp://x", None, "r").is_err());
        assert!(KinesisClient::new("http://x/path", None, "r").is_err());
    }
}
