//! The QUIC server of the native protocol: quinn on the front-end tokio runtime, one task
//! per connection and per stream, requests on a stream handled concurrently and answered as
//! each finishes (pipelined acks), batches handed to the engine's shard cores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use millrace_core::Engine;
use millrace_core::{
    EngineError, HashKey, PartitionKey, ReadLimits, Record, ResourceKey, SequenceNumber, ShardId, Stamp,
    StartPosition, StoredRecord, StreamName,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::frame::{self, ErrorCode, FrameError, Message, ReadStart, RecordOut, ShardInfo, HEADER_BYTES};

/// The protocol's ALPN name.
pub const ALPN: &[u8] = b"millrace/1";
/// Requests one stream may have in flight before the server stops reading it (backpressure).
const IN_FLIGHT_PER_STREAM: usize = 256;
/// Requests one connection may have in flight over all its streams.
const IN_FLIGHT_PER_CONNECTION: usize = 1024;
/// Push subscriptions one connection may hold.
pub const SUBSCRIPTIONS_PER_CONNECTION: usize = 64;
/// Largest frame payload before HELLO passed: a version, a token and a client name.
pub const HELLO_PAYLOAD_MAX: u32 = 4096;
/// Time a new connection has to say HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest read a client may ask for, in bytes.
const READ_BYTES_MAX: usize = 10 << 20;

pub struct QuicConfig {
    pub listen: SocketAddr,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// What a client must present in HELLO.
    pub token: Vec<u8>,
}

/// A running QUIC endpoint.
pub struct QuicServer {
    endpoint: quinn::Endpoint,
    runtime: tokio::runtime::Handle,
}

/// The transport settings both ends use. quinn's defaults are sized for the open internet
/// (a peer measured its QUIC path at a tenth of its TCP path with them): larger windows keep
/// a 1 Gbit/s+ link full at LAN round trips, and more streams allow more pipelining.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    transport.stream_receive_window((32u32 << 20).into());
    transport.receive_window((128u32 << 20).into());
    transport.send_window(128 << 20);
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    // A peer that vanished without closing is noticed after this long (keep-alives keep a
    // quiet but live connection open).
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into().expect("10 s fits")));
    transport
}

impl QuicServer {
    /// Binds the endpoint on the current tokio runtime and starts accepting.
    pub fn start(engine: Engine, config: QuicConfig) -> std::io::Result<QuicServer> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(config.cert_chain, config.key)
            .map_err(std::io::Error::other)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(std::io::Error::other)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport_config()));
        let endpoint = quinn::Endpoint::server(server_config, config.listen)?;
        let token: Arc<[u8]> = config.token.into();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let (engine, token) = (engine.clone(), token.clone());
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        serve_connection(engine, connection, token).await;
                    }
                });
            }
        });
        Ok(QuicServer { endpoint, runtime: tokio::runtime::Handle::current() })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Refuses new connections and closes the open ones, waiting (a second at most) until
    /// the peers have been told, so that clients reconnect at once instead of waiting for
    /// their idle timeout. Call it from outside the runtime.
    pub fn shutdown(&self) {
        self.endpoint.close((ErrorCode::ShuttingDown as u32).into(), b"server stopping");
        let endpoint = self.endpoint.clone();
        // The timer is made inside the runtime: `timeout` needs its time driver.
        self.runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        });
    }
}

/// Reads one whole frame of at most `payload_bytes_max`; `Ok(None)` at a clean end of
/// stream. The length is checked against the limit before anything is allocated.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    payload_bytes_max: u32,
) -> Result<Option<(u64, Message)>, FrameError> {
    let mut header = [0u8; HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(_) => return Err(FrameError::Truncated { needed: HEADER_BYTES, available: 0 }),
    }
    let checked = frame::decode_header(&header)?;
    if checked.length > payload_bytes_max {
        return Err(FrameError::TooLarge { length: checked.length });
    }
    let mut payload = vec![0u8; checked.length as usize];
    recv.read_exact(&mut payload)
        .await
        .map_err(|_| FrameError::Truncated { needed: checked.length as usize, available: 0 })?;
    checked.check_payload(&payload)?;
    Ok(Some((checked.request_id, Message::decode_with_flags(checked.kind, checked.flags, &payload)?)))
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// A frame for the wire. The server's own messages always fit (their lengths are bounded by
/// what it checked on the way in); should one not, the client gets an ERROR instead of a
/// frame cut short.
fn encoded(message: &Message, request_id: u64) -> Vec<u8> {
    message.to_frame(request_id).unwrap_or_else(|error| {
        let refusal = Message::error(ErrorCode::Internal, format!("the answer cannot be encoded: {error}"));
        refusal.to_frame(request_id).expect("a short error fits")
    })
}

/// What a connection may hold at once: every path a client can fill is bounded.
struct Bounds {
    /// Requests being handled, over all the connection's streams.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Push subscriptions.
    subscriptions: Arc<tokio::sync::Semaphore>,
}

async fn serve_connection(engine: Engine, connection: quinn::Connection, token: Arc<[u8]>) {
    // The first stream must open with HELLO, and nothing else is served before it passes.
    // Until then a frame may be no larger than a HELLO can be.
    let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await
    else {
        connection.close((ErrorCode::Unauthenticated as u32).into(), b"no HELLO");
        return;
    };
    let refusal = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, HELLO_PAYLOAD_MAX)).await {
        Ok(Ok(Some((id, Message::Hello { version, token: presented, .. })))) => {
            if version != u16::from(frame::VERSION) {
                Some((
                    id,
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {version} is not supported; this server speaks 1"),
                ))
            } else if !constant_time_eq(&presented, &token) {
                Some((id, ErrorCode::Unauthenticated, "the token is not valid".to_owned()))
            } else {
                let welcome = Message::Welcome { version: 1, payload_bytes_max: frame::PAYLOAD_BYTES_MAX };
                if send.write_all(&encoded(&welcome, id)).await.is_err() {
                    return;
                }
                None
            }
        }
        Ok(Ok(Some((id, _)))) => {
            Some((id, ErrorCode::Unauthenticated, "the first frame must be HELLO".to_owned()))
        }
        Ok(Err(error @ FrameError::TooLarge { .. })) => Some((
            0,
            ErrorCode::FrameTooLarge,
            format!("{error}: before HELLO a frame holds at most {HELLO_PAYLOAD_MAX} bytes"),
        )),
        Ok(Err(error)) => Some((0, error.code(), error.to_string())),
        _ => Some((0, ErrorCode::Unauthenticated, "no HELLO".to_owned())),
    };
    if let Some((id, code, message)) = refusal {
        let _ = send.write_all(&encoded(&Message::error(code, message), id)).await;
        let _ = send.finish();
        // Let the refusal reach the client before the connection goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        connection.close((code as u32).into(), b"refused");
        return;
    }
    let bounds = Arc::new(Bounds {
        in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_PER_CONNECTION)),
        subscriptions: Arc::new(tokio::sync::Semaphore::new(SUBSCRIPTIONS_PER_CONNECTION)),
    });
    tokio::spawn(serve_stream(engine.clone(), send, recv, bounds.clone()));
    while let Ok((send, recv)) = connection.accept_bi().await {
        tokio::spawn(serve_stream(engine.clone(), send, recv, bounds.clone()));
    }
}

/// Credits granted to a subscription and not yet used: a counter, however many CREDIT
/// frames arrive (a queue of them would grow with each).
#[derive(Default)]
struct Credits {
    granted: std::sync::Mutex<u64>,
    more: tokio::sync::Notify,
    closed: std::sync::atomic::AtomicBool,
}

impl Credits {
    fn grant(&self, credits: u32) {
        let mut granted = self.granted.lock().expect("not poisoned");
        *granted = granted.saturating_add(u64::from(credits)).min(u64::from(u32::MAX));
        self.more.notify_one();
    }

    fn take_all(&self) -> u64 {
        std::mem::take(&mut *self.granted.lock().expect("not poisoned"))
    }

    /// The stream is gone: the subscription stops.
    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.more.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Serves the requests of one stream: each is handled in its own task and answered as soon
/// as it is done; at most [`IN_FLIGHT_PER_STREAM`] at once on the stream, and
/// [`IN_FLIGHT_PER_CONNECTION`] over the connection.
async fn serve_stream(
    engine: Engine,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    bounds: Arc<Bounds>,
) {
    let (answers, mut outbox) = tokio::sync::mpsc::channel::<Vec<u8>>(IN_FLIGHT_PER_STREAM);
    let writer = tokio::spawn(async move {
        let mut send = send;
        while let Some(frame) = outbox.recv().await {
            if send.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_PER_STREAM));
    let mut subscriptions: std::collections::HashMap<u64, Arc<Credits>> = std::collections::HashMap::new();
    loop {
        let request = read_frame(&mut recv, frame::PAYLOAD_BYTES_MAX).await;
        match request {
            Ok(Some((id, Message::Subscribe { stream, shard, start, credits }))) => {
                // Finished subscriptions leave the map, so that it stays as small as the
                // connection's bound on live ones.
                subscriptions.retain(|_, credits| Arc::strong_count(credits) > 1);
                let Ok(slot) = bounds.subscriptions.clone().try_acquire_owned() else {
                    let error = Message::error(
                        ErrorCode::LimitExceeded,
                        format!("a connection may hold at most {SUBSCRIPTIONS_PER_CONNECTION} subscriptions"),
                    );
                    let _ = answers.send(encoded(&error, id)).await;
                    continue;
                };
                let sink = Arc::new(Credits::default());
                sink.grant(credits);
                subscriptions.insert(id, sink.clone());
                let subscription = Subscription { id, stream, shard, start };
                let (engine, answers) = (engine.clone(), answers.clone());
                tokio::spawn(async move {
                    subscription.run(engine, sink, answers).await;
                    drop(slot);
                });
            }
            Ok(Some((id, Message::Credit { credits }))) => match subscriptions.get(&id) {
                Some(sink) if Arc::strong_count(sink) > 1 => sink.grant(credits),
                _ => {
                    let error = Message::error(
                        ErrorCode::InvalidArgument,
                        format!("no subscription {id} on this stream"),
                    );
                    let _ = answers.send(encoded(&error, id)).await;
                }
            },
            Ok(Some((id, message))) => {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let Ok(connection_permit) = bounds.in_flight.clone().acquire_owned().await else { break };
                let (engine, answers) = (engine.clone(), answers.clone());
                tokio::spawn(async move {
                    let answer = handle(&engine, message, id).await;
                    let _ = answers.send(encoded(&answer, id)).await;
                    drop((permit, connection_permit));
                });
            }
            Ok(None) => break,
            Err(error) => {
                // A bad frame ends this stream (its framing can no longer be trusted); the
                // connection and its other streams go on.
                let _ = answers.send(encoded(&Message::error(error.code(), error.to_string()), 0)).await;
                let _ = recv.stop(0u32.into());
                break;
            }
        }
    }
    for sink in subscriptions.values() {
        sink.close();
    }
    drop(answers);
    let _ = writer.await;
}

/// The engine's errors as the protocol's codes. Internal failures keep their detail (which
/// may name the server's files) for the server's log.
fn engine_error(error: EngineError, request_id: u64) -> Message {
    use millrace_core::CatalogError;
    let code = match &error {
        EngineError::Catalog(CatalogError::NotFound { .. }) => ErrorCode::StreamNotFound,
        EngineError::Catalog(CatalogError::ShardNotFound { .. }) => ErrorCode::ShardNotFound,
        EngineError::Catalog(CatalogError::Exists { .. } | CatalogError::HasConsumers { .. }) => {
            ErrorCode::ResourceInUse
        }
        EngineError::Catalog(CatalogError::Limit(_)) => ErrorCode::LimitExceeded,
        EngineError::Catalog(_) | EngineError::ForeignSequence { .. } | EngineError::StaleBatch { .. } => {
            ErrorCode::InvalidArgument
        }
        EngineError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
        EngineError::Resharding { .. } => ErrorCode::ResourceInUse,
        EngineError::RetryOutsideWindow { .. } | EngineError::RetryAcrossReshard { .. } => {
            ErrorCode::Unconfirmable
        }
        EngineError::ShuttingDown => ErrorCode::ShuttingDown,
        _ => ErrorCode::Internal,
    };
    if code == ErrorCode::Internal {
        eprintln!("millrace: QUIC request {request_id}: internal failure: {error}");
        return Message::error(
            code,
            format!("internal failure; the server's log has the details (request {request_id})"),
        );
    }
    Message::error(code, error.to_string())
}

/// A stored record as RECORDS carries it.
fn record_out(record: StoredRecord) -> RecordOut {
    RecordOut {
        sequence: record.sequence.as_u128(),
        arrival_ms: record.arrival_ms,
        partition_key: record.partition_key,
        data: record.data,
    }
}

fn stream_key(text: &str) -> Result<ResourceKey, Message> {
    let name: StreamName = text
        .parse()
        .map_err(|_| Message::error(ErrorCode::InvalidArgument, format!("{text:?} is not a stream name")))?;
    Ok(ResourceKey::from(&name))
}

async fn handle(engine: &Engine, message: Message, request_id: u64) -> Message {
    let outcome = match message {
        Message::Put { stream, records } => put(engine, &stream, records, None, request_id).await,
        Message::PutStamped { producer_id, batch, resent, stream, records } => {
            put(engine, &stream, records, Some(Stamp { producer_id, batch, resent }), request_id).await
        }
        Message::Describe { stream } => describe(engine, &stream, request_id),
        Message::Read { stream, shard, start, max_records } => {
            read(engine, &stream, shard, start, max_records, request_id).await
        }
        Message::Checkpoint { stream, owner, shard, sequence } => {
            checkpoint(engine, &stream, &owner, shard, sequence, request_id).await
        }
        Message::Hello { .. } => Err(Message::error(ErrorCode::InvalidArgument, "already greeted")),
        other => {
            Err(Message::error(ErrorCode::UnknownKind, format!("kind {} is not a request", other.kind())))
        }
    };
    outcome.unwrap_or_else(|error| error)
}

async fn put(
    engine: &Engine,
    stream: &str,
    records: Vec<frame::PutRecord>,
    stamp: Option<Stamp>,
    request_id: u64,
) -> Result<Message, Message> {
    let key = stream_key(stream)?;
    if records.is_empty() {
        return Err(Message::error(ErrorCode::InvalidArgument, "a PUT needs at least one record"));
    }
    let records = records
        .into_iter()
        .map(|record| {
            let partition_key: PartitionKey = record.partition_key.parse().map_err(|_| {
                Message::error(ErrorCode::InvalidArgument, "partition keys are 1 to 256 characters")
            })?;
            Ok(Record {
                partition_key,
                explicit_hash_key: record.explicit_hash_key.map(HashKey::new),
                data: record.data,
            })
        })
        .collect::<Result<Vec<_>, Message>>()?;
    let appended =
        engine.append_stamped(&key, records, stamp).await.map_err(|error| engine_error(error, request_id))?;
    let acks = appended
        .into_iter()
        .map(|done| done.map(|done| (done.shard.get(), done.sequence.as_u128())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| engine_error(error, request_id))?;
    Ok(Message::PutAck { acks })
}

fn describe(engine: &Engine, stream: &str, request_id: u64) -> Result<Message, Message> {
    let meta = engine.describe(&stream_key(stream)?).map_err(|error| engine_error(error, request_id))?;
    let shards = meta
        .shards()
        .iter()
        .map(|shard| ShardInfo {
            id: shard.shard_id().get(),
            open: shard.is_open(),
            hash_start: shard.range().start(),
            hash_end: shard.range().end(),
            parents: shard.parents().map(|parent| parent.get()).collect(),
        })
        .collect();
    Ok(Message::Description { shards })
}

async fn read(
    engine: &Engine,
    stream: &str,
    shard: u32,
    start: ReadStart,
    max_records: u32,
    request_id: u64,
) -> Result<Message, Message> {
    let key = stream_key(stream)?;
    let shard = ShardId::new(shard);
    let failed = |error| engine_error(error, request_id);
    let position = match start {
        ReadStart::At(position) => SequenceNumber::from_u128(position),
        other => {
            let start = match other {
                ReadStart::TrimHorizon => StartPosition::TrimHorizon,
                ReadStart::Latest => StartPosition::Latest,
                ReadStart::AtSequence(sequence) => {
                    StartPosition::AtSequence(SequenceNumber::from_u128(sequence))
                }
                ReadStart::AfterSequence(sequence) => {
                    StartPosition::AfterSequence(SequenceNumber::from_u128(sequence))
                }
                ReadStart::AtTimestamp(arrival_ms) => StartPosition::AtTimestamp { arrival_ms },
                ReadStart::At(_) => unreachable!("handled above"),
            };
            engine.resolve(&key, shard, start).await.map_err(failed)?
        }
    };
    let limits = ReadLimits { max_records: max_records.clamp(1, 10_000) as usize, max_bytes: READ_BYTES_MAX };
    let read = engine.read(&key, shard, position, limits).await.map_err(failed)?;
    let records = read.records.into_iter().map(record_out).collect::<Vec<_>>();
    // Where the next read starts; past the last record when the shard has ended.
    let next = read
        .next
        .map(SequenceNumber::as_u128)
        .unwrap_or_else(|| records.last().map_or(position.as_u128(), |last| last.sequence + 1));
    Ok(Message::Records {
        next,
        ended: read.next.is_none(),
        millis_behind_latest: read.millis_behind_latest,
        children: read.child_shards.iter().map(|child| child.get()).collect(),
        records,
    })
}

async fn checkpoint(
    engine: &Engine,
    stream: &str,
    owner: &str,
    shard: u32,
    sequence: u128,
    request_id: u64,
) -> Result<Message, Message> {
    let key = stream_key(stream)?;
    engine
        .checkpoint(&key, owner, ShardId::new(shard), SequenceNumber::from_u128(sequence))
        .await
        .map_err(|error| engine_error(error, request_id))?;
    Ok(Message::CheckpointAck)
}

/// Longest wait between looks at a caught-up shard. The shard's commit signal wakes a
/// subscription at once; this only backs it up (a shard removed and made again, say).
const SUBSCRIPTION_POLL_MAX: Duration = Duration::from_millis(500);

/// A push subscription: RECORDS frames with the SUBSCRIBE's id, as records become durable,
/// never more records than the client has granted credits for.
struct Subscription {
    id: u64,
    stream: String,
    shard: u32,
    start: ReadStart,
}

impl Subscription {
    async fn run(self, engine: Engine, credits: Arc<Credits>, answers: tokio::sync::mpsc::Sender<Vec<u8>>) {
        let id = self.id;
        let failed = |error: Message| encoded(&error, id);
        let key = match stream_key(&self.stream) {
            Ok(key) => key,
            Err(error) => {
                let _ = answers.send(failed(error)).await;
                return;
            }
        };
        let shard = ShardId::new(self.shard);
        let mut position = match self.start {
            ReadStart::At(position) => position,
            _ => match read(&engine, &self.stream, self.shard, self.start, 1, id).await {
                // A one-record read resolves the start; begin from its first record.
                Ok(Message::Records { records, next, .. }) => {
                    records.first().map_or(next, |first| first.sequence)
                }
                Ok(_) => return,
                Err(error) => {
                    let _ = answers.send(failed(error)).await;
                    return;
                }
            },
        };
        // Woken by the shard's commits; the timer only backs it up.
        let signal = match engine.commit_signal(&key, shard) {
            Ok(signal) => signal,
            Err(error) => {
                let _ = answers.send(failed(engine_error(error, id))).await;
                return;
            }
        };
        let mut available: u64 = 0;
        loop {
            if credits.is_closed() {
                return;
            }
            available = available.saturating_add(credits.take_all());
            if available == 0 {
                credits.more.notified().await;
                continue;
            }
            let limits = ReadLimits { max_records: available.min(10_000) as usize, max_bytes: 4 << 20 };
            let seen = signal.generation();
            let outcome = match engine.read(&key, shard, SequenceNumber::from_u128(position), limits).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    let _ = answers.send(failed(engine_error(error, id))).await;
                    return;
                }
            };
            let ended = outcome.next.is_none();
            let count = outcome.records.len();
            if count > 0 || ended {
                let records: Vec<RecordOut> = outcome.records.into_iter().map(record_out).collect();
                let next = outcome
                    .next
                    .map(SequenceNumber::as_u128)
                    .unwrap_or_else(|| records.last().map_or(position, |last| last.sequence + 1));
                let message = Message::Records {
                    next,
                    ended,
                    millis_behind_latest: outcome.millis_behind_latest,
                    children: outcome.child_shards.iter().map(|child| child.get()).collect(),
                    records,
                };
                if answers.send(encoded(&message, id)).await.is_err() {
                    return; // the stream is gone
                }
                available -= count as u64;
                position = next;
                if ended {
                    return;
                }
                continue;
            }
            // Caught up: look again once the shard commits, or credits arrive.
            tokio::select! {
                _ = signal.changed(seen) => {}
                _ = tokio::time::sleep(SUBSCRIPTION_POLL_MAX) => {}
                _ = credits.more.notified() => {}
            }
        }
    }
}
