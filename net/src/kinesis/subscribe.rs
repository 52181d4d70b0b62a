//! SubscribeToShard: enhanced fan-out. One HTTP response carries an event stream: an
//! `initial-response`, then `SubscribeToShardEvent`s with the records as they become
//! durable, for up to five minutes, after which the client subscribes again from the last
//! `ContinuationSequenceNumber`.
//!
//! The session is a task on the HTTP runtime that reads the shard from the engine and
//! pushes events into a bounded channel that the response body drains, so a slow client
//! slows its own session and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use millrace_core::{ReadLimits, SequenceNumber, ShardId, StartPosition, StreamName};

use super::error::{self, codes};
use super::records::{parse_sequence, record_value};
use super::KinesisApi;
use crate::aws::eventstream::Message;
use crate::aws::ApiError;
use crate::aws::{document as value, Protocol, Request, Value};

/// Most bytes one event carries (AWS pushes up to 2 MiB per second per shard).
const EVENT_BYTES_MAX: usize = 2 << 20;
/// An event goes out at least this often, records or not, so the client knows the session
/// is alive (AWS: every 5 s).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest wait between looks at a caught-up shard. The shard's commit signal wakes a
/// session at once; this only backs it up.
const POLL_MAX: Duration = Duration::from_millis(500);
/// Events buffered per session before the session waits for the client.
const EVENTS_BUFFERED: usize = 4;

/// A new session for a consumer and shard within this long of the last one's start is
/// refused; after it, the new one takes over (AWS: "If you call SubscribeToShard 5 seconds or
/// more after a successful call, the second call takes over the subscription and the previous
/// connection expires or fails with a ResourceInUseException").
const TAKEOVER_AFTER: Duration = Duration::from_secs(5);

/// One consumer's session on one shard.
struct Active {
    id: u64,
    started: Instant,
    /// Told when a newer session takes over.
    taken_over: Arc<tokio::sync::Notify>,
}

/// Active sessions, by consumer and shard: AWS allows one at a time.
#[derive(Default)]
pub struct Sessions {
    active: Mutex<HashMap<(String, u32), Active>>,
    next_id: std::sync::atomic::AtomicU64,
}

struct SessionGuard {
    api: Arc<KinesisApi>,
    key: (String, u32),
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut active = self.api.sessions.active.lock().expect("not poisoned");
        // A session that was taken over leaves its successor's entry alone.
        if active.get(&self.key).is_some_and(|entry| entry.id == self.id) {
            active.remove(&self.key);
        }
    }
}

impl KinesisApi {
    /// Validates a SubscribeToShard request and starts its session; the receiver yields the
    /// encoded event-stream messages of the response body.
    pub async fn subscribe(
        self: &Arc<Self>,
        protocol: Protocol,
        body: &[u8],
        request_id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<Bytes>, ApiError> {
        let decoded = value::decode(protocol, body)?;
        let request = Request::new(protocol, &decoded);
        let consumer_arn = request.str_req("ConsumerARN")?.to_owned();
        let (stream, _consumer) = self.consumer_of(request)?;
        let shard = super::streams::parse_shard(&stream, "ShardId", request.str_req("ShardId")?)?;
        let position =
            request.structure_opt("StartingPosition")?.ok_or_else(|| value::missing("StartingPosition"))?;
        let start = starting_position(position)?;
        self.describe(&stream)?;
        let from = self.engine.resolve(&super::key(&stream), shard, start).await?;
        let key = (consumer_arn.clone(), shard.get());
        let id = self.sessions.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let taken_over = Arc::new(tokio::sync::Notify::new());
        {
            let mut active = self.sessions.active.lock().expect("not poisoned");
            if let Some(previous) = active.get(&key) {
                if previous.started.elapsed() < TAKEOVER_AFTER {
                    return Err(ApiError::new(
                        codes::RESOURCE_IN_USE,
                        format!("Another active subscription exists for consumer {consumer_arn} and shard {shard}."),
                    ));
                }
                previous.taken_over.notify_one();
            }
            active
                .insert(key.clone(), Active { id, started: Instant::now(), taken_over: taken_over.clone() });
        }
        let guard = SessionGuard { api: self.clone(), key, id };
        let (tx, rx) = tokio::sync::mpsc::channel(EVENTS_BUFFERED);
        let initial = Message::event(
            "initial-response",
            protocol.content_type(),
            value::encode(protocol, &Value::map()),
        );
        tx.try_send(Bytes::from(initial.encode())).expect("a fresh channel has room");
        let deadline = Instant::now() + Duration::from_millis(self.config.subscription_ms as u64);
        let api = self.clone();
        let request_id = request_id.to_owned();
        tokio::spawn(async move {
            let _guard = guard;
            let session = Session { stream, shard, position: from, protocol, deadline, request_id };
            tokio::select! {
                _ = api.pump(session, tx.clone()) => {}
                _ = taken_over.notified() => {
                    // The previous connection fails with a ResourceInUseException.
                    let payload = Value::map().with("message", "A newer subscription for this consumer and shard took over.");
                    let message = Message::exception("ResourceInUseException", protocol.content_type(), value::encode(protocol, &payload));
                    let _ = tx.send(Bytes::from(message.encode())).await;
                }
            }
        });
        Ok(rx)
    }

    async fn pump(&self, mut session: Session, tx: tokio::sync::mpsc::Sender<Bytes>) {
        let mut last_sent: Option<Instant> = None;
        // Woken by the shard's commits; timers only for heartbeats and the session's end.
        let signal = self.engine.commit_signal(&super::key(&session.stream), session.shard).ok();
        while Instant::now() < session.deadline {
            let limits = ReadLimits { max_records: 10_000, max_bytes: EVENT_BYTES_MAX };
            let seen = signal.as_ref().map(|signal| signal.generation());
            let read = match self
                .engine
                .read(&super::key(&session.stream), session.shard, session.position, limits)
                .await
            {
                Ok(read) => read,
                Err(error) => {
                    let error =
                        crate::aws::error::scrub(ApiError::from(error), "kinesis", &session.request_id);
                    let payload = Value::map().with("message", error.message.as_str());
                    let message = Message::exception(
                        error.code.type_name(),
                        session.protocol.content_type(),
                        value::encode(session.protocol, &payload),
                    );
                    let _ = tx.send(Bytes::from(message.encode())).await;
                    return;
                }
            };
            let has_records = !read.records.is_empty();
            let finished = read.next.is_none();
            let due = last_sent.is_none_or(|sent| sent.elapsed() >= HEARTBEAT);
            if has_records || finished || due {
                // The last record delivered, or the position just before the next one: a
                // client resumes AFTER_SEQUENCE_NUMBER of it either way.
                let continuation = read
                    .records
                    .last()
                    .map_or(session.position.as_u128().saturating_sub(1), |record| record.sequence.as_u128());
                let meta = self.engine.describe_stream(&session.stream).ok();
                let records: Vec<Value> = read.records.into_iter().map(record_value).collect();
                let mut event = Value::map()
                    .with("Records", Value::List(records))
                    .with("ContinuationSequenceNumber", continuation.to_string())
                    .with("MillisBehindLatest", read.millis_behind_latest);
                if finished {
                    if let Some(meta) = &meta {
                        event = event.with(
                            "ChildShards",
                            super::records::child_shards_value(meta, &read.child_shards),
                        );
                    }
                }
                let message = Message::event(
                    "SubscribeToShardEvent",
                    session.protocol.content_type(),
                    value::encode(session.protocol, &event),
                );
                if tx.send(Bytes::from(message.encode())).await.is_err() {
                    return; // the client went away
                }
                last_sent = Some(Instant::now());
            }
            match read.next {
                None => return,
                Some(next) => session.position = next,
            }
            if !has_records {
                // Caught up: wait for a commit, the next heartbeat, the session's end or the
                // client going away, whichever comes first.
                let heartbeat_due = last_sent.map_or(Instant::now(), |sent| sent + HEARTBEAT);
                let wake_at = heartbeat_due.min(session.deadline).min(Instant::now() + POLL_MAX);
                let committed = async {
                    match (&signal, seen) {
                        (Some(signal), Some(seen)) => signal.changed(seen).await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = committed => {}
                    _ = tokio::time::sleep_until(wake_at.into()) => {}
                    _ = tx.closed() => return,
                }
            }
        }
    }
}

struct Session {
    stream: StreamName,
    shard: ShardId,
    position: SequenceNumber,
    protocol: Protocol,
    deadline: Instant,
    request_id: String,
}

fn starting_position(position: Request<'_>) -> Result<StartPosition, ApiError> {
    let kind = position.str_req("Type")?;
    let sequence = || {
        let text = position.str_opt("SequenceNumber")?.ok_or_else(|| {
            error::invalid(format!("StartingPosition of type {kind} requires a SequenceNumber"))
        })?;
        parse_sequence("StartingPosition.SequenceNumber", text)
    };
    Ok(match kind {
        "TRIM_HORIZON" => StartPosition::TrimHorizon,
        "LATEST" => StartPosition::Latest,
        "AT_SEQUENCE_NUMBER" => StartPosition::AtSequence(sequence()?),
        "AFTER_SEQUENCE_NUMBER" => StartPosition::AfterSequence(sequence()?),
        "AT_TIMESTAMP" => StartPosition::AtTimestamp {
            arrival_ms: position.timestamp_opt("Timestamp")?.ok_or_else(|| {
                error::invalid("StartingPosition of type AT_TIMESTAMP requires a Timestamp")
            })?,
        },
        other => return Err(ApiError::validation(
            "StartingPosition.Type",
            other,
            "Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, \
                 LATEST, AT_TIMESTAMP]",
        )),
    })
}
