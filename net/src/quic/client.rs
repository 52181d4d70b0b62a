//! The client side of the native protocol: a connection that has said HELLO, and channels
//! (bidirectional streams) that carry pipelined requests, their answers matched by request id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::CertificateDer;

use super::frame::{self, EncodeError, ErrorCode, FrameError, Message, HEADER_BYTES};
use super::server::{transport_config, ALPN};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    #[error("connecting to {server}: {what}")]
    Connect { server: SocketAddr, what: String },
    #[error("the server refused the connection: {code:?}: {message}")]
    Refused { code: Option<ErrorCode>, message: String },
    #[error("the server answered {code:?}: {message}")]
    Server { code: Option<ErrorCode>, message: String },
    #[error("the connection was lost: {what}")]
    Lost { what: String },
    #[error("the server sent a bad frame: {0}")]
    BadFrame(FrameError),
    #[error("the server answered with an unexpected message")]
    Unexpected,
    /// The request cannot be put in a frame (a field longer than the protocol allows).
    #[error("the request cannot be sent: {0}")]
    Encode(EncodeError),
}

impl QuicError {
    /// Whether the request may succeed if sent again (after reconnecting, for `Lost`).
    pub fn is_transient(&self) -> bool {
        match self {
            QuicError::Server { code: Some(code), .. } => code.is_transient(),
            QuicError::Lost { .. } => true,
            _ => false,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    /// The name the server's certificate carries (`localhost` for a generated one).
    pub server_name: String,
    /// The certificate to trust (the server's own, when self-signed).
    pub trusted_cert: CertificateDer<'static>,
    pub token: Vec<u8>,
}

impl ClientConfig {
    /// For a server on this machine: its certificate and token from its data directory.
    pub fn from_data_dir(server: SocketAddr, data_dir: &std::path::Path) -> std::io::Result<ClientConfig> {
        let trusted_cert = CertificateDer::from(std::fs::read(data_dir.join(super::CERT_FILE))?);
        let token = std::fs::read(data_dir.join(super::TOKEN_FILE))?;
        Ok(ClientConfig { server, server_name: "localhost".into(), trusted_cert, token })
    }
}

/// A connection that has been welcomed.
pub struct QuicClient {
    connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
    first: Mutex<Option<Channel>>,
}

impl QuicClient {
    pub async fn connect(config: &ClientConfig) -> Result<QuicClient, QuicError> {
        let hello = Message::Hello { version: 1, token: config.token.clone(), client: "millrace-sdk".into() };
        QuicClient::connect_opening_with(config, &hello.to_frame(0).map_err(QuicError::Encode)?).await
    }

    /// Connects and opens the first stream with `first` (normally the HELLO frame). For
    /// tests of the server's checks before HELLO.
    #[doc(hidden)]
    pub async fn connect_opening_with(config: &ClientConfig, first: &[u8]) -> Result<QuicClient, QuicError> {
        let connect_error = |what: String| QuicError::Connect { server: config.server, what };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(config.trusted_cert.clone()).map_err(|error| connect_error(error.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| connect_error(error.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|error| connect_error(error.to_string()))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
        client_config.transport_config(Arc::new(transport_config()));
        let bind: SocketAddr =
            if config.server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("valid");
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|error| connect_error(error.to_string()))?;
        endpoint.set_default_client_config(client_config);
        let connection = endpoint
            .connect(config.server, &config.server_name)
            .map_err(|error| connect_error(error.to_string()))?
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        let (mut send, mut recv) =
            connection.open_bi().await.map_err(|error| connect_error(error.to_string()))?;
        send.write_all(first).await.map_err(|error| connect_error(error.to_string()))?;
        match read_frame(&mut recv).await {
            Ok(Some((_, Message::Welcome { .. }))) => {}
            Ok(Some((_, Message::Error { code, message }))) => {
                return Err(QuicError::Refused { code: ErrorCode::from_u16(code), message })
            }
            Ok(_) => return Err(QuicError::Unexpected),
            Err(error) => return Err(error),
        }
        let first = Channel::new(send, recv);
        Ok(QuicClient { connection, _endpoint: endpoint, first: Mutex::new(Some(first)) })
    }

    /// A channel for pipelined requests (the HELLO stream first, then new streams).
    pub async fn channel(&self) -> Result<Channel, QuicError> {
        if let Some(first) = self.first.lock().expect("not poisoned").take() {
            return Ok(first);
        }
        let (send, recv) =
            self.connection.open_bi().await.map_err(|error| QuicError::Lost { what: error.to_string() })?;
        Ok(Channel::new(send, recv))
    }

    pub fn close(&self) {
        self.connection.close(0u32.into(), b"done");
    }
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Option<(u64, Message)>, QuicError> {
    let mut header = [0u8; HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(error) => return Err(QuicError::Lost { what: error.to_string() }),
    }
    let checked = frame::decode_header(&header).map_err(QuicError::BadFrame)?;
    let mut payload = vec![0u8; checked.length as usize];
    recv.read_exact(&mut payload).await.map_err(|error| QuicError::Lost { what: error.to_string() })?;
    checked.check_payload(&payload).map_err(QuicError::BadFrame)?;
    let message =
        Message::decode_with_flags(checked.kind, checked.flags, &payload).map_err(QuicError::BadFrame)?;
    Ok(Some((checked.request_id, message)))
}

/// Who waits for the answers to a request: one answer, or a stream of them (subscriptions).
enum Waiter {
    Once(tokio::sync::oneshot::Sender<Result<Message, QuicError>>),
    Many(tokio::sync::mpsc::UnboundedSender<Result<Message, QuicError>>),
}

impl Waiter {
    /// Hands over an answer; returns the waiter if it expects more.
    fn deliver(self, answer: Result<Message, QuicError>) -> Option<Waiter> {
        match self {
            Waiter::Once(sender) => {
                let _ = sender.send(answer);
                None
            }
            Waiter::Many(sender) => {
                let last = answer.is_err() || matches!(answer, Ok(Message::Records { ended: true, .. }));
                let open = sender.send(answer).is_ok();
                (open && !last).then_some(Waiter::Many(sender))
            }
        }
    }
}

type Waiters = Arc<Mutex<Option<HashMap<u64, Waiter>>>>;

/// One bidirectional stream carrying many requests at once.
pub struct Channel {
    send: tokio::sync::Mutex<quinn::SendStream>,
    waiters: Waiters,
    next_id: AtomicU64,
}

impl Channel {
    fn new(send: quinn::SendStream, mut recv: quinn::RecvStream) -> Channel {
        let waiters: Waiters = Arc::new(Mutex::new(Some(HashMap::new())));
        let reader_waiters = waiters.clone();
        tokio::spawn(async move {
            let failure = loop {
                match read_frame(&mut recv).await {
                    Ok(Some((id, message))) => {
                        let waiter = reader_waiters
                            .lock()
                            .expect("not poisoned")
                            .as_mut()
                            .and_then(|all| all.remove(&id));
                        match (waiter, message) {
                            (Some(waiter), Message::Error { code, message }) => {
                                let error = QuicError::Server { code: ErrorCode::from_u16(code), message };
                                let _ = waiter.deliver(Err(error));
                            }
                            (Some(waiter), message) => {
                                if let Some(waiter) = waiter.deliver(Ok(message)) {
                                    if let Some(all) = reader_waiters.lock().expect("not poisoned").as_mut() {
                                        all.insert(id, waiter);
                                    }
                                }
                            }
                            // An error for no request (a bad frame of ours): the stream ends.
                            (None, Message::Error { code, message }) => {
                                break QuicError::Server { code: ErrorCode::from_u16(code), message }
                            }
                            (None, _) => {}
                        }
                    }
                    Ok(None) => break QuicError::Lost { what: "the server closed the stream".into() },
                    Err(error) => break error,
                }
            };
            // Everyone still waiting learns why; later requests fail at once.
            if let Some(waiting) = reader_waiters.lock().expect("not poisoned").take() {
                for (_, waiter) in waiting {
                    let _ = waiter.deliver(Err(failure.clone()));
                }
            }
        });
        Channel { send: tokio::sync::Mutex::new(send), waiters, next_id: AtomicU64::new(1) }
    }

    /// Sends a request and waits for its answer; other requests may be sent meanwhile.
    pub async fn request(&self, message: &Message) -> Result<Message, QuicError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = message.to_frame(id).map_err(QuicError::Encode)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.waiters.lock().expect("not poisoned").as_mut() {
            Some(waiters) => waiters.insert(id, Waiter::Once(tx)),
            None => return Err(QuicError::Lost { what: "the stream has ended".into() }),
        };
        if let Err(error) = self.send.lock().await.write_all(&frame).await {
            if let Some(waiters) = self.waiters.lock().expect("not poisoned").as_mut() {
                waiters.remove(&id);
            }
            return Err(QuicError::Lost { what: error.to_string() });
        }
        rx.await.map_err(|_| QuicError::Lost { what: "the stream has ended".into() })?
    }

    /// Sends a request whose answers keep coming (SUBSCRIBE); returns its id, to grant
    /// credits with, and the answers.
    pub async fn request_stream(
        &self,
        message: &Message,
    ) -> Result<(u64, tokio::sync::mpsc::UnboundedReceiver<Result<Message, QuicError>>), QuicError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = message.to_frame(id).map_err(QuicError::Encode)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        match self.waiters.lock().expect("not poisoned").as_mut() {
            Some(waiters) => waiters.insert(id, Waiter::Many(tx)),
            None => return Err(QuicError::Lost { what: "the stream has ended".into() }),
        };
        self.send_frame(&frame).await?;
        Ok((id, rx))
    }

    /// Sends a frame that expects no answer (CREDIT).
    pub async fn send_frame(&self, frame: &[u8]) -> Result<(), QuicError> {
        self.send
            .lock()
            .await
            .write_all(frame)
            .await
            .map_err(|error| QuicError::Lost { what: error.to_string() })
    }

    /// Sends raw bytes as request `id` and waits for the answer to that id (tests of bad
    /// frames: the server answers a frame it cannot trust with id 0).
    pub async fn request_raw(&self, id: u64, bytes: &[u8], finish: bool) -> Result<Message, QuicError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.waiters.lock().expect("not poisoned").as_mut() {
            Some(waiters) => waiters.insert(id, Waiter::Once(tx)),
            None => return Err(QuicError::Lost { what: "the stream has ended".into() }),
        };
        {
            let mut send = self.send.lock().await;
            send.write_all(bytes).await.map_err(|error| QuicError::Lost { what: error.to_string() })?;
            if finish {
                let _ = send.finish();
            }
        }
        rx.await.map_err(|_| QuicError::Lost { what: "the stream has ended".into() })?
    }
}
