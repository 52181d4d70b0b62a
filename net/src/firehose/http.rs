//! The one HTTP client call Firehose's deliveries make (PutObject to S3, POST to an HTTP
//! endpoint, Invoke of a Lambda function): one request on a fresh HTTP/1.1 connection,
//! `http://` or `https://` (webpki roots), with a deadline and a cap on the answer's size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// `host:port` to connect to.
    pub authority: String,
    /// The Host header: the URL's host and port as written.
    pub host_header: String,
    /// The URL's path and query (`/` when it has none).
    pub path_and_query: String,
}

/// Why a call got no answer (each maps to one of AWS's delivery error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Reset(String),
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url}: expected an http:// or https:// URL"));
        };
        let (host_header, path_and_query) = match rest.find(['/', '?']) {
            Some(at) if rest.as_bytes()[at] == b'/' => (&rest[..at], rest[at..].to_owned()),
            Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
            None => (rest, "/".to_owned()),
        };
        if host_header.is_empty() || host_header.contains('@') {
            return Err(format!("{url}: no host"));
        }
        let has_port = host_header.rsplit_once(':').is_some_and(|(host, port)| {
            port.parse::<u16>().is_ok() && (!host.starts_with('[') || host.ends_with(']'))
        });
        let authority = if has_port {
            host_header.to_owned()
        } else {
            format!("{host_header}:{}", if tls { 443 } else { 80 })
        };
        Ok(Target { tls, authority, host_header: host_header.to_owned(), path_and_query })
    }

    fn host(&self) -> &str {
        let host = match self.host_header.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => &self.host_header,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// One request; `headers` are sent as given (the caller adds Host and Content-Length).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
        timeout: Duration,
        max_answer: usize,
    ) -> Result<Answer, CallError> {
        let mut builder = hyper::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder.body(Full::new(body)).map_err(|error| CallError::Reset(error.to_string()))?;
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|error| CallError::Connect(format!("{}: {error}", self.authority)))?;
            let _ = stream.set_nodelay(true);
            let response = if self.tls {
                let name =
                    rustls::pki_types::ServerName::try_from(self.host().to_owned()).map_err(|error| {
                        CallError::Connect(format!("TLS server name {}: {error}", self.host()))
                    })?;
                let stream = crate::client::tls_connector(crate::client::HttpVersion::Http1)
                    .connect(name, stream)
                    .await
                    .map_err(|error| {
                        CallError::Connect(format!("TLS handshake with {}: {error}", self.host()))
                    })?;
                send(TokioIo::new(stream), request).await?
            } else {
                send(TokioIo::new(stream), request).await?
            };
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
                })
                .collect();
            let body = Limited::new(response.into_body(), max_answer)
                .collect()
                .await
                .map_err(|error| {
                    if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        CallError::TooLarge(max_answer)
                    } else {
                        CallError::Reset(format!("reading the answer: {error}"))
                    }
                })?
                .to_bytes()
                .to_vec();
            Ok(Answer { status, headers, body })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| CallError::Timeout(timeout))?
    }
}

async fn send<T>(
    io: TokioIo<T>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, CallError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Header names as AWS writes them (`X-Amz-Firehose-Request-Id`), for receivers that
    // look them up by their exact case.
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(io)
        .await
        .map_err(|error| CallError::Connect(format!("HTTP handshake: {error}")))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|error| CallError::Reset(format!("sending the request: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let target = Target::parse("http://127.0.0.1:9000/ingest?token=a").unwrap();
        assert_eq!((target.tls, target.authority.as_str()), (false, "127.0.0.1:9000"));
        assert_eq!(target.path_and_query, "/ingest?token=a");
        let target = Target::parse("https://example.com").unwrap();
        assert_eq!(
            (target.authority.as_str(), target.path_and_query.as_str(), target.host()),
            ("example.com:443", "/", "example.com")
        );
        assert_eq!(Target::parse("https://h?x=1").unwrap().path_and_query, "/?x=1");
        assert_eq!(Target::parse("http://[::1]:8080/p").unwrap().host(), "::1");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http:///path").is_err());
    }
}
