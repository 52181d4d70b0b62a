//! The producer SDK: `send(stream, partition_key, data) -> SequenceNumber`.
//!
//! Records are routed by hash key to their shard (the stream's shard map is fetched once and
//! again after resharding), batched per shard by size and linger time, and sent as PUT frames
//! on one pipelined channel; each record's future resolves with its sequence number once the
//! batch is durable. Memory is bounded: `send` waits while `buffer_bytes_max` of records are
//! unacknowledged (backpressure). A batch that fails with a transient error is sent again;
//! with one batch in flight per shard (the default) a retry never reorders the records of a
//! partition key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use millrace_core::{HashKey, SequenceNumber};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::client::{Channel, ClientConfig, QuicClient, QuicError};
use super::frame::{Message, PutRecord};

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a record waits for others to join its batch.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes of data and keys...
    pub batch_bytes_max: usize,
    /// ...or this many records.
    pub batch_records_max: usize,
    /// Bytes of records accepted and not yet acknowledged; `send` waits beyond it.
    pub buffer_bytes_max: usize,
    /// Batches in flight per shard. 1 keeps the records of a key in order through retries.
    pub in_flight_per_shard: usize,
    /// Attempts of a batch that fails with a transient error.
    pub attempts_max: u32,
    /// Stamp every batch (producer id and batch number per shard) so that the server stores
    /// a batch sent again once; implies one batch in flight per shard. With
    /// [`Producer::connect`], a lost connection is re-established and the unacknowledged
    /// batches are sent again: nothing acknowledged is lost and nothing is stored twice.
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            linger: Duration::from_millis(2),
            batch_bytes_max: 1 << 20,
            batch_records_max: 2000,
            buffer_bytes_max: 64 << 20,
            in_flight_per_shard: 1,
            attempts_max: 5,
            idempotent: false,
        }
    }
}

type Outcome = Result<SequenceNumber, QuicError>;

/// What every caller gets once the producer's tasks are gone.
fn stopped() -> QuicError {
    QuicError::Lost { what: "the producer has stopped".into() }
}

/// Who waits for a record's acknowledgement.
enum Reply {
    /// A caller of `send` or `queue`.
    One(oneshot::Sender<Outcome>),
    /// A caller of `queue_many`: the record's place in its call.
    Part(Arc<Many>, usize),
}

impl Reply {
    fn send(self, outcome: Outcome) {
        match self {
            Reply::One(sender) => {
                let _ = sender.send(outcome);
            }
            Reply::Part(many, index) => many.complete(index, outcome),
        }
    }
}

/// The records of one `queue_many` call: their outcomes, gathered as their batches are
/// answered, go back together once all are in. Holds the call's buffer permit until then.
struct Many {
    state: std::sync::Mutex<ManyState>,
}

struct ManyState {
    outcomes: Vec<Option<Outcome>>,
    remaining: usize,
    done: Option<oneshot::Sender<Vec<Outcome>>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Many {
    fn complete(&self, index: usize, outcome: Outcome) {
        let mut state = self.state.lock().expect("not poisoned");
        if state.outcomes[index].replace(outcome).is_none() {
            state.remaining -= 1;
        }
        if state.remaining == 0 {
            let outcomes = std::mem::take(&mut state.outcomes);
            if let Some(done) = state.done.take() {
                let _ = done.send(outcomes.into_iter().map(|outcome| outcome.expect("all in")).collect());
            }
            state.permit = None;
        }
    }
}

struct Item {
    stream: Arc<str>,
    record: PutRecord,
    reply: Option<Reply>,
    /// The record's share of the buffer; `queue_many` holds one for all its records.
    _permit: Option<OwnedSemaphorePermit>,
}

/// What the batcher takes in: one record, or the records of one `queue_many` call.
enum Inbound {
    One(Item),
    Many(Vec<Item>),
}

/// A handle on the producer; cheap to clone.
#[derive(Clone)]
pub struct Producer {
    items: mpsc::Sender<Inbound>,
    memory: Arc<Semaphore>,
    buffer_bytes_max: usize,
}

impl Producer {
    /// Starts a producer over a channel of a welcomed connection (no reconnection).
    pub fn new(channel: Channel, config: ProducerConfig) -> Producer {
        Producer::start(Arc::new(Link::fixed(channel)), config)
    }

    /// Connects and starts a producer that reconnects when the connection is lost.
    pub async fn connect(client: ClientConfig, config: ProducerConfig) -> Result<Producer, QuicError> {
        Ok(Producer::start(Arc::new(Link::connect(client).await?), config))
    }

    fn start(link: Arc<Link>, mut config: ProducerConfig) -> Producer {
        if config.idempotent {
            config.in_flight_per_shard = 1;
        }
        let (items, inbox) = mpsc::channel(8192);
        let memory = Arc::new(Semaphore::new(config.buffer_bytes_max));
        let buffer_bytes_max = config.buffer_bytes_max;
        tokio::spawn(batcher(link, config, inbox));
        Producer { items, memory, buffer_bytes_max }
    }

    /// Waits for `bytes` of buffer (all of it, for more than the whole buffer).
    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, QuicError> {
        let bytes = bytes.clamp(1, self.buffer_bytes_max) as u32;
        self.memory.clone().acquire_many_owned(bytes).await.map_err(|_| stopped())
    }

    async fn enqueue(
        &self,
        stream: &str,
        partition_key: &str,
        data: Vec<u8>,
        reply: Option<Reply>,
    ) -> Result<(), QuicError> {
        let permit = self.reserve(data.len() + partition_key.len()).await?;
        let record = PutRecord { partition_key: partition_key.to_owned(), explicit_hash_key: None, data };
        self.items
            .send(Inbound::One(Item { stream: Arc::from(stream), record, reply, _permit: Some(permit) }))
            .await
            .map_err(|_| stopped())
    }

    /// Sends one record; resolves with its sequence number once it is durable.
    pub async fn send(
        &self,
        stream: &str,
        partition_key: &str,
        data: Vec<u8>,
    ) -> Result<SequenceNumber, QuicError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(stream, partition_key, data, Some(Reply::One(reply))).await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Queues one record in call order (waiting only for buffer space) and returns the
    /// future of its acknowledgement: one task can keep many records in flight and still
    /// have them stored in the order it queued them (per partition key).
    pub async fn queue(
        &self,
        stream: &str,
        partition_key: &str,
        data: Vec<u8>,
    ) -> Result<impl std::future::Future<Output = Result<SequenceNumber, QuicError>>, QuicError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(stream, partition_key, data, Some(Reply::One(reply))).await?;
        Ok(async move { answer.await.map_err(|_| stopped())? })
    }

    /// Queues many records at once, as [`Producer::queue`] does one (a `PutRecords` of this
    /// SDK): waits for buffer space for all of them, and returns the future of their outcomes,
    /// in the order given. Each record is routed and batched on its own, so one call may
    /// span shards; a call costs one buffer reservation, one hand-over to the batcher and
    /// one future, where as many `queue` calls cost one each per record.
    pub async fn queue_many(
        &self,
        stream: &str,
        records: Vec<(String, Vec<u8>)>,
    ) -> Result<impl std::future::Future<Output = Vec<Result<SequenceNumber, QuicError>>>, QuicError> {
        let count = records.len();
        let (done, answer) = oneshot::channel();
        if count > 0 {
            let permit = self.reserve(records.iter().map(|(key, data)| key.len() + data.len()).sum()).await?;
            let many = Arc::new(Many {
                state: std::sync::Mutex::new(ManyState {
                    outcomes: (0..count).map(|_| None).collect(),
                    remaining: count,
                    done: Some(done),
                    permit: Some(permit),
                }),
            });
            let stream: Arc<str> = Arc::from(stream);
            let items = records
                .into_iter()
                .enumerate()
                .map(|(index, (partition_key, data))| Item {
                    stream: stream.clone(),
                    record: PutRecord { partition_key, explicit_hash_key: None, data },
                    reply: Some(Reply::Part(many.clone(), index)),
                    _permit: None,
                })
                .collect();
            self.items.send(Inbound::Many(items)).await.map_err(|_| stopped())?;
        } else {
            let _ = done.send(Vec::new());
        }
        Ok(async move { answer.await.unwrap_or_else(|_| (0..count).map(|_| Err(stopped())).collect()) })
    }

    /// Fire and forget: returns once the record is buffered (waiting while the buffer is
    /// full). Failures are not reported; use [`Producer::flush`] to wait for everything sent.
    pub async fn send_nowait(
        &self,
        stream: &str,
        partition_key: &str,
        data: Vec<u8>,
    ) -> Result<(), QuicError> {
        self.enqueue(stream, partition_key, data, None).await
    }

    /// Waits until every record handed in so far is acknowledged (or has failed).
    pub async fn flush(&self) {
        let all = u32::try_from(self.buffer_bytes_max).unwrap_or(u32::MAX);
        if let Ok(permit) = self.memory.acquire_many(all).await {
            drop(permit);
        }
    }
}

/// The shard map of a stream: (hash start, shard id) of the open shards, sorted.
type ShardMap = Vec<(u128, u32)>;

/// The connection the producer sends on, re-established when lost (if it may be).
struct Link {
    client: Option<ClientConfig>,
    state: tokio::sync::Mutex<(u64, Arc<Channel>, Option<QuicClient>)>,
}

impl Link {
    fn fixed(channel: Channel) -> Link {
        Link { client: None, state: tokio::sync::Mutex::new((0, Arc::new(channel), None)) }
    }

    async fn connect(config: ClientConfig) -> Result<Link, QuicError> {
        let client = QuicClient::connect(&config).await?;
        let channel = Arc::new(client.channel().await?);
        Ok(Link { client: Some(config), state: tokio::sync::Mutex::new((0, channel, Some(client))) })
    }

    async fn current(&self) -> (u64, Arc<Channel>) {
        let state = self.state.lock().await;
        (state.0, state.1.clone())
    }

    /// Replaces the connection of generation `seen` (once, whoever asks first).
    async fn reconnect(&self, seen: u64) -> Result<(), QuicError> {
        let Some(config) = &self.client else {
            return Err(QuicError::Lost {
                what: "the connection was lost and this producer does not reconnect".into(),
            });
        };
        let mut state = self.state.lock().await;
        if state.0 != seen {
            return Ok(());
        }
        let client = QuicClient::connect(config).await?;
        let channel = Arc::new(client.channel().await?);
        if let Some(old) = state.2.take() {
            old.close();
        }
        *state = (seen + 1, channel, Some(client));
        Ok(())
    }

    /// Sends a request, reconnecting and sending again while the connection is lost (for
    /// up to a minute: a server restart).
    /// A stamped batch sent again says so (the server may have stored the first sending).
    async fn request(&self, message: &Message) -> Result<Message, QuicError> {
        let mut lost_since: Option<tokio::time::Instant> = None;
        let mut resent: Option<Message> = None;
        loop {
            let (generation, channel) = self.current().await;
            match channel.request(resent.as_ref().unwrap_or(message)).await {
                Err(QuicError::Lost { what }) if self.client.is_some() => {
                    let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > Duration::from_secs(60) {
                        return Err(QuicError::Lost { what });
                    }
                    if resent.is_none() {
                        resent = Some(message.as_resent());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = self.reconnect(generation).await;
                }
                other => return other,
            }
        }
    }
}

async fn shard_map(link: &Link, stream: &str) -> Result<ShardMap, QuicError> {
    match link.request(&Message::Describe { stream: stream.to_owned() }).await? {
        Message::Description { shards } => {
            let mut map: ShardMap = shards
                .into_iter()
                .filter(|shard| shard.open)
                .map(|shard| (shard.hash_start, shard.id))
                .collect();
            map.sort_unstable();
            Ok(map)
        }
        _ => Err(QuicError::Unexpected),
    }
}

fn route(map: &ShardMap, key: u128) -> u32 {
    let at = map.partition_point(|(start, _)| *start <= key);
    at.checked_sub(1).map_or(0, |at| map[at].1)
}

async fn batcher(link: Arc<Link>, config: ProducerConfig, mut inbox: mpsc::Receiver<Inbound>) {
    // Idempotence: each shard queue is a producer of its own (its batches are numbered in
    // the order they are stored), under a random id per producer start.
    let base_id = u64::from_le_bytes(
        crate::secrets::random_bytes(8).map_or([7; 8], |bytes| bytes.try_into().expect("8 bytes")),
    );
    let mut maps: HashMap<Arc<str>, ShardMap> = HashMap::new();
    // One task per shard batches and sends; the memory semaphore bounds what they hold.
    let mut shards: HashMap<(Arc<str>, u32), mpsc::UnboundedSender<Item>> = HashMap::new();
    while let Some(inbound) = inbox.recv().await {
        let (one, many) = match inbound {
            Inbound::One(item) => (Some(item), Vec::new()),
            Inbound::Many(items) => (None, items),
        };
        for item in one.into_iter().chain(many) {
            dispatch(item, &link, &config, base_id, &mut maps, &mut shards).await;
        }
    }
}

/// Routes a record to its shard's sender, starting the sender on the shard's first record.
async fn dispatch(
    item: Item,
    link: &Arc<Link>,
    config: &ProducerConfig,
    base_id: u64,
    maps: &mut HashMap<Arc<str>, ShardMap>,
    shards: &mut HashMap<(Arc<str>, u32), mpsc::UnboundedSender<Item>>,
) {
    if !maps.contains_key(&item.stream) {
        match shard_map(link, &item.stream).await {
            Ok(map) => {
                maps.insert(item.stream.clone(), map);
            }
            Err(error) => {
                if let Some(reply) = item.reply {
                    reply.send(Err(error));
                }
                return;
            }
        }
    }
    let key = item
        .record
        .explicit_hash_key
        .unwrap_or_else(|| HashKey::from_partition_key(&item.record.partition_key).get());
    let shard = route(&maps[&item.stream], key);
    let sender = shards.entry((item.stream.clone(), shard)).or_insert_with(|| {
        let (sender, receiver) = mpsc::unbounded_channel();
        let producer_id = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            (base_id, &item.stream, shard).hash(&mut hasher);
            hasher.finish()
        };
        let stamps = config.idempotent.then_some(producer_id);
        tokio::spawn(shard_sender(link.clone(), config.clone(), stamps, receiver));
        sender
    });
    if let Err(mpsc::error::SendError(item)) = sender.send(item) {
        if let Some(reply) = item.reply {
            reply.send(Err(stopped()));
        }
    }
}

/// Batches one shard's records by size and linger time and sends them, at most
/// `in_flight_per_shard` batches at once; records arriving meanwhile form the next batch.
async fn shard_sender(
    link: Arc<Link>,
    config: ProducerConfig,
    producer_id: Option<u64>,
    mut items: mpsc::UnboundedReceiver<Item>,
) {
    let in_flight = Arc::new(Semaphore::new(config.in_flight_per_shard.max(1)));
    let mut batch_number = 0u32;
    while let Some(first) = items.recv().await {
        let deadline = tokio::time::Instant::now() + config.linger;
        let mut bytes = first.record.data.len() + first.record.partition_key.len();
        let mut batch = vec![first];
        while batch.len() < config.batch_records_max && bytes < config.batch_bytes_max {
            let item = tokio::select! {
                item = items.recv() => item,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(item) = item else { break };
            bytes += item.record.data.len() + item.record.partition_key.len();
            batch.push(item);
        }
        let Ok(slot) = in_flight.clone().acquire_owned().await else { return };
        let link = link.clone();
        let attempts_max = config.attempts_max.max(1);
        batch_number += 1;
        let stamp = producer_id.map(|producer_id| (producer_id, batch_number));
        tokio::spawn(async move {
            send_batch(&link, batch, stamp, attempts_max).await;
            drop(slot);
        });
    }
}

/// A sent record's reply and buffer share, kept until its batch is answered.
type Waiting = (Option<Reply>, Option<OwnedSemaphorePermit>);

async fn send_batch(link: &Link, items: Vec<Item>, stamp: Option<(u64, u32)>, attempts_max: u32) {
    let stream = items[0].stream.to_string();
    // The records move into the request (kept for retries); the items keep their replies and
    // their memory permits until the answer.
    let (records, items): (Vec<PutRecord>, Vec<Waiting>) =
        items.into_iter().map(|item| (item.record, (item.reply, item._permit))).unzip();
    let request = match stamp {
        Some((producer_id, batch)) => {
            Message::PutStamped { producer_id, batch, resent: false, stream, records }
        }
        None => Message::Put { stream, records },
    };
    let mut attempt = 0;
    let mut request = request;
    let outcome = loop {
        attempt += 1;
        if attempt == 2 {
            // Sent before: a stamped batch now says so.
            request = request.as_resent();
        }
        match link.request(&request).await {
            Ok(Message::PutAck { acks }) if acks.len() == items.len() => break Ok(acks),
            Ok(_) => break Err(QuicError::Unexpected),
            // A lost connection is the caller's to re-establish; server-side transient
            // errors are retried here, in place, so the shard's order holds.
            Err(error)
                if error.is_transient()
                    && attempt < attempts_max
                    && !matches!(error, QuicError::Lost { .. }) =>
            {
                tokio::time::sleep(Duration::from_millis(10 << attempt.min(6))).await;
            }
            Err(error) => break Err(error),
        }
    };
    match outcome {
        Ok(acks) => {
            for ((reply, _permit), (_, sequence)) in items.into_iter().zip(acks) {
                if let Some(reply) = reply {
                    reply.send(Ok(SequenceNumber::from_u128(sequence)));
                }
            }
        }
        Err(error) => {
            for (reply, _permit) in items {
                if let Some(reply) = reply {
                    reply.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_follows_the_shard_map() {
        let map: ShardMap = vec![(0, 3), (1 << 127, 4)];
        assert_eq!(route(&map, 0), 3);
        assert_eq!(route(&map, (1 << 127) - 1), 3);
        assert_eq!(route(&map, 1 << 127), 4);
        assert_eq!(route(&map, u128::MAX), 4);
    }
}
