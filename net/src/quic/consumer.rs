//! The consumer SDK: subscribe to every shard of a stream from a position and receive its
//! records as they become durable, in order per shard, following resharding (a child shard
//! starts once every parent it has is read to its end), with credit-based flow control (the
//! server sends no more than the consumer has room for) and server-side checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::client::{Channel, QuicClient, QuicError};
use super::frame::{Message, ReadStart, ShardInfo};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub shard: u32,
    pub sequence: u128,
    pub arrival_ms: i64,
    pub partition_key: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// Records granted to each shard's subscription at a time.
    pub credits_per_shard: u32,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig { credits_per_shard: 4096 }
    }
}

/// What the shard tasks report to the coordinator.
enum Event {
    Records(Vec<ConsumedRecord>),
    Ended { shard: u32, children: Vec<u32> },
    Failed(QuicError),
}

pub struct Consumer {
    records: mpsc::Receiver<Result<Vec<ConsumedRecord>, QuicError>>,
    checkpoints: Channel,
    stream: String,
}

impl Consumer {
    /// Subscribes to `stream` from `start` (TRIM_HORIZON and AT_TIMESTAMP start at the oldest
    /// shards and follow their lineage; LATEST starts at the open shards).
    pub async fn subscribe(
        client: Arc<QuicClient>,
        stream: &str,
        start: ReadStart,
        config: ConsumerConfig,
    ) -> Result<Consumer, QuicError> {
        let control = client.channel().await?;
        let shards = match control.request(&Message::Describe { stream: stream.to_owned() }).await? {
            Message::Description { shards } => shards,
            _ => return Err(QuicError::Unexpected),
        };
        let (records, receiver) = mpsc::channel(64);
        tokio::spawn(coordinate(client, stream.to_owned(), shards, start, config, records));
        Ok(Consumer { records: receiver, checkpoints: control, stream: stream.to_owned() })
    }

    /// The next batch of records of one shard, in that shard's order; `None` when every shard
    /// has ended (the stream was deleted, or only closed shards were left).
    pub async fn next(&mut self) -> Option<Result<Vec<ConsumedRecord>, QuicError>> {
        self.records.recv().await
    }

    /// Stores `owner`'s position in a shard on the server, durably.
    pub async fn checkpoint(&self, owner: &str, shard: u32, sequence: u128) -> Result<(), QuicError> {
        let request =
            Message::Checkpoint { stream: self.stream.clone(), owner: owner.to_owned(), shard, sequence };
        match self.checkpoints.request(&request).await? {
            Message::CheckpointAck => Ok(()),
            _ => Err(QuicError::Unexpected),
        }
    }
}

async fn coordinate(
    client: Arc<QuicClient>,
    stream: String,
    shards: Vec<ShardInfo>,
    start: ReadStart,
    config: ConsumerConfig,
    out: mpsc::Sender<Result<Vec<ConsumedRecord>, QuicError>>,
) {
    let mut parents = parent_map(&shards);
    let first: Vec<u32> = shards
        .iter()
        .filter(|shard| if start == ReadStart::Latest { shard.open } else { parents[&shard.id].is_empty() })
        .map(|shard| shard.id)
        .collect();
    let (events, mut inbox) = mpsc::channel::<Event>(64);
    let mut running = 0usize;
    let mut ended: BTreeSet<u32> = BTreeSet::new();
    for shard in first {
        running += 1;
        tokio::spawn(follow(client.clone(), stream.clone(), shard, start, config, events.clone()));
    }
    while running > 0 {
        let Some(event) = inbox.recv().await else { return };
        match event {
            Event::Records(records) => {
                if out.send(Ok(records)).await.is_err() {
                    return; // the consumer was dropped
                }
            }
            Event::Ended { shard, children } => {
                running -= 1;
                ended.insert(shard);
                if children.iter().any(|child| !parents.contains_key(child)) {
                    // Made after we looked: learn the children's lineage.
                    let described = async {
                        let channel = client.channel().await?;
                        match channel.request(&Message::Describe { stream: stream.clone() }).await? {
                            Message::Description { shards } => Ok(shards),
                            _ => Err(QuicError::Unexpected),
                        }
                    };
                    match described.await {
                        Ok(shards) => parents = parent_map(&shards),
                        Err(error) => {
                            let _ = out.send(Err(error)).await;
                            return;
                        }
                    }
                }
                // Children whose every parent is read start from their beginning.
                for (child, its_parents) in &parents {
                    if its_parents.contains(&shard) && its_parents.iter().all(|parent| ended.contains(parent))
                    {
                        running += 1;
                        let events = events.clone();
                        tokio::spawn(follow(
                            client.clone(),
                            stream.clone(),
                            *child,
                            ReadStart::TrimHorizon,
                            config,
                            events,
                        ));
                    }
                }
            }
            Event::Failed(error) => {
                let _ = out.send(Err(error)).await;
                return;
            }
        }
    }
}

/// Each shard's parents among the stream's shards (a parent trimmed away is not waited for).
fn parent_map(shards: &[ShardInfo]) -> BTreeMap<u32, Vec<u32>> {
    let known: BTreeSet<u32> = shards.iter().map(|shard| shard.id).collect();
    shards
        .iter()
        .map(|shard| {
            (shard.id, shard.parents.iter().copied().filter(|parent| known.contains(parent)).collect())
        })
        .collect()
}

/// One shard's subscription: forwards its records and grants credits as they are passed on.
async fn follow(
    client: Arc<QuicClient>,
    stream: String,
    shard: u32,
    start: ReadStart,
    config: ConsumerConfig,
    events: mpsc::Sender<Event>,
) {
    let outcome = async {
        let channel = client.channel().await?;
        let subscribe = Message::Subscribe { stream, shard, start, credits: config.credits_per_shard };
        let (id, mut answers) = channel.request_stream(&subscribe).await?;
        let mut outstanding = config.credits_per_shard;
        while let Some(answer) = answers.recv().await {
            match answer? {
                Message::Records { ended, records, children, .. } => {
                    let count = records.len() as u32;
                    if !records.is_empty() {
                        let records = records
                            .into_iter()
                            .map(|record| ConsumedRecord {
                                shard,
                                sequence: record.sequence,
                                arrival_ms: record.arrival_ms,
                                partition_key: record.partition_key,
                                data: record.data,
                            })
                            .collect();
                        if events.send(Event::Records(records)).await.is_err() {
                            return Ok(());
                        }
                    }
                    if ended {
                        let _ = events.send(Event::Ended { shard, children }).await;
                        return Ok(());
                    }
                    // Top the window up once half of it is used.
                    outstanding = outstanding.saturating_sub(count);
                    if outstanding < config.credits_per_shard / 2 {
                        let grant = config.credits_per_shard - outstanding;
                        channel
                            .send_frame(
                                &Message::Credit { credits: grant }
                                    .to_frame(id)
                                    .map_err(QuicError::Encode)?,
                            )
                            .await?;
                        outstanding += grant;
                    }
                }
                _ => return Err(QuicError::Unexpected),
            }
        }
        Err(QuicError::Lost { what: "the subscription ended".into() })
    };
    if let Err(error) = outcome.await {
        let _ = events.send(Event::Failed(error)).await;
    }
}
