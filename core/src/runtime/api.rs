//! [`Engine`]: the handle callers on any thread hold. Catalog operations go to the
//! controller task and run one at a time; appends and reads go straight to the owning
//! shard's inbox; checkpoints go to the positions task.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use glommio::{LocalExecutorBuilder, Placement};

use super::control::{core_main, publish, set_thread_nice, CoreStart, Route, Routing, Signals};
use super::messages::{ControlFn, ControlMsg, CoreMsg, Ctl, PositionMsg, ShardMsg, StoreOutcome};
use super::{EngineConfig, StartError};
use crate::catalog::{
    CatalogError, NewResource, ResourceKey, ResourceKind, ResourceMeta, ResourceUpdate, StreamMode,
};
use crate::clock::Clock;
use crate::controller::{self, ShardKey};
use crate::dedupe::{self, Stamp};
use crate::error::EngineError;
use crate::positions::PositionKey;
use crate::shard_log::{ReadLimits, StartPosition};
use crate::signal::CommitSignal;
use crate::types::{HashKey, Record, SequenceNumber, ShardId, StoredRecord, StreamName};

/// A record that was appended: where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub shard: ShardId,
    pub sequence: SequenceNumber,
}

/// The answer to a read of one shard.
#[derive(Debug, Clone)]
pub struct ShardRead {
    pub records: Vec<StoredRecord>,
    /// Where the next read continues; `None` when the shard is closed and fully read.
    pub next: Option<SequenceNumber>,
    pub millis_behind_latest: i64,
    /// When the shard is closed and fully read: the shards that continue it.
    pub child_shards: Vec<ShardId>,
}

/// Counts of this engine's group commits.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub groups: AtomicU64,
    pub batches: AtomicU64,
}

/// Group commits since start: `batches` appends were made durable in `groups` commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    pub groups: u64,
    pub batches: u64,
}

/// Catalog operations waiting for the controller, at most.
const CONTROL_QUEUE: usize = 1024;

pub(crate) struct Shared {
    pub control: flume::Sender<ControlMsg>,
    pub positions: flume::Sender<PositionMsg>,
    pub routing: RwLock<Routing>,
    threads: Mutex<Vec<glommio::ExecutorJoinHandle<()>>>,
    cores: Vec<flume::Sender<CoreMsg>>,
    pub signals: Signals,
    pub stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
}

/// A handle on the running engine; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

type Outcomes = Vec<Option<Result<Appended, EngineError>>>;

fn fail(results: &mut Outcomes, positions: &[usize], error: &EngineError) {
    for &position in positions {
        results[position] = Some(Err(error.clone()));
    }
}

impl Engine {
    /// Starts one executor per core, recovers the catalog, the positions and every shard, and
    /// returns once the engine serves requests.
    pub fn start(mut config: EngineConfig) -> Result<Engine, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        // A relative directory has an empty parent, which cannot be synced; the same
        // directory named from the root has one.
        config.data_dir = std::fs::canonicalize(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = config.cores.max(1);
        let (control_tx, control_rx) = flume::bounded(CONTROL_QUEUE);
        let (positions_tx, positions_rx) = flume::bounded(config.positions_inbox.max(1));
        let (core_txs, core_rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| flume::unbounded()).unzip();
        let shared = Arc::new(Shared {
            control: control_tx,
            positions: positions_tx,
            routing: RwLock::new(Routing::default()),
            threads: Mutex::new(Vec::new()),
            cores: core_txs.clone(),
            signals: Signals::default(),
            stats: Arc::new(Stats::default()),
            clock: config.clock.clone(),
        });
        let (started_tx, started_rx) = flume::bounded::<Result<(), EngineError>>(1);
        let mut first = Some((control_rx, positions_rx));
        for (core, inbox) in core_rxs.into_iter().enumerate() {
            let config = config.clone();
            let io_memory = config.io_memory_bytes;
            let (control, positions) = first.take().map_or((None, None), |(c, p)| (Some(c), Some(p)));
            let start =
                CoreStart { inbox, control, positions, cores: core_txs.clone(), started: started_tx.clone() };
            let shared_for_core = Arc::clone(&shared);
            let handle = LocalExecutorBuilder::new(Placement::Fixed(core % cpus))
                .name(&format!("millrace-core-{core}"))
                .io_memory(config.io_memory_bytes)
                .spawn(move || async move {
                    set_thread_nice(core, config.executor_nice);
                    core_main(core, config, shared_for_core, start).await
                })
                .map_err(|source| StartError::Executor {
                    core,
                    io_memory_bytes: io_memory,
                    source: source.into(),
                })?;
            shared.threads.lock().expect("not poisoned").push(handle);
        }
        drop(started_tx);
        let engine = Engine { shared };
        match started_rx.recv() {
            Ok(Ok(())) => Ok(engine),
            Ok(Err(error)) => {
                engine.stop_threads();
                Err(StartError::Recovery(error))
            }
            Err(_) => {
                engine.stop_threads();
                Err(StartError::Recovery(EngineError::ShuttingDown))
            }
        }
    }

    fn stop_threads(&self) {
        for core in &self.shared.cores {
            let _ = core.send(CoreMsg::Stop);
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock().expect("not poisoned"));
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Finishes in-flight commits, stops every shard and executor, and returns when all
    /// threads have exited. Requests still queued get [`EngineError::ShuttingDown`].
    pub fn shutdown(&self) {
        let (tx, rx) = flume::bounded(1);
        if self.shared.control.send(ControlMsg::Stop { reply: tx }).is_ok() {
            let _ = rx.recv();
        }
        self.stop_threads();
    }

    /// The engine's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.shared.clock.clone()
    }

    pub fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// Group commits since start.
    pub fn commit_stats(&self) -> CommitStats {
        use std::sync::atomic::Ordering;
        CommitStats {
            groups: self.shared.stats.groups.load(Ordering::Relaxed),
            batches: self.shared.stats.batches.load(Ordering::Relaxed),
        }
    }

    /// Runs `op` on the controller, after every catalog operation queued before it.
    async fn control<T: Send + 'static>(
        &self,
        op: impl for<'a> FnOnce(&'a mut Ctl) -> Pin<Box<dyn Future<Output = Result<T, EngineError>> + 'a>>
            + Send
            + 'static,
    ) -> Result<T, EngineError> {
        let (tx, rx) = flume::bounded(1);
        let shared = self.shared.clone();
        let run: ControlFn = Box::new(move |ctl| {
            Box::pin(async move {
                let result = op(ctl).await;
                // Publish before answering, so that the caller sees its own change.
                publish(ctl, &shared);
                let _ = tx.send(result);
            })
        });
        self.shared.control.send_async(ControlMsg::Run(run)).await.map_err(|_| EngineError::ShuttingDown)?;
        rx.recv_async().await.map_err(|_| EngineError::ShuttingDown)?
    }

    // ---------------------------------------------------------------------------------
    // Resources of any kind

    /// Creates a resource (a data stream, a delivery stream, …) with its shard logs.
    pub async fn create(&self, new: NewResource) -> Result<(), EngineError> {
        let clock = self.shared.clock.clone();
        self.control(move |ctl| Box::pin(async move { ctl.create(new, clock.now_ms()).await })).await
    }

    /// Deletes a resource, its shard logs and its positions.
    pub async fn delete(
        &self,
        key: &ResourceKey,
        enforce_consumer_deletion: bool,
    ) -> Result<(), EngineError> {
        let (key, clock) = (key.clone(), self.shared.clock.clone());
        let uid = self
            .control(move |ctl| {
                Box::pin(async move { ctl.delete(&key, enforce_consumer_deletion, clock.now_ms()).await })
            })
            .await?;
        // Best effort: positions of a gone resource are dropped again at the next start.
        let (reply, rx) = flume::bounded(1);
        let change = crate::positions::PositionChange::DropResource { uid };
        if self.shared.positions.send_async(PositionMsg::Commit { change, reply }).await.is_ok() {
            let _ = rx.recv_async().await;
        }
        Ok(())
    }

    /// A simple change: retention, tags, consumers, mode, record size, encryption, settings.
    /// Bumps the resource's version.
    pub async fn update(&self, key: &ResourceKey, update: ResourceUpdate) -> Result<(), EngineError> {
        self.update_at(key, None, update).await
    }

    /// [`Engine::update`] if the resource is still at `version` (as the caller read it, to
    /// check the change against it); else `Invalid::Version`, and nothing changes.
    pub async fn update_at(
        &self,
        key: &ResourceKey,
        version: Option<u64>,
        update: ResourceUpdate,
    ) -> Result<(), EngineError> {
        let (key, clock) = (key.clone(), self.shared.clock.clone());
        self.control(move |ctl| {
            Box::pin(async move { ctl.update(&key, update, version, clock.now_ms()).await })
        })
        .await
    }

    /// The resource's current description.
    pub fn describe(&self, key: &ResourceKey) -> Result<Arc<ResourceMeta>, EngineError> {
        Ok(self.route(key)?.meta.clone())
    }

    /// Every resource of a kind, sorted by name.
    pub fn list(&self, kind: ResourceKind) -> Vec<Arc<ResourceMeta>> {
        let routing = self.shared.routing.read().expect("not poisoned");
        let mut resources: Vec<Arc<ResourceMeta>> = routing
            .resources
            .iter()
            .filter(|(key, _)| key.kind == kind)
            .map(|(_, route)| route.meta.clone())
            .collect();
        resources.sort_by(|left, right| left.name().cmp(right.name()));
        resources
    }

    pub async fn split_shard(
        &self,
        key: &ResourceKey,
        shard: ShardId,
        new_start: HashKey,
    ) -> Result<(), EngineError> {
        let (key, clock) = (key.clone(), self.shared.clock.clone());
        self.control(move |ctl| {
            Box::pin(async move { ctl.split_shard(&key, shard, new_start, clock.now_ms()).await })
        })
        .await
    }

    pub async fn merge_shards(
        &self,
        key: &ResourceKey,
        shard: ShardId,
        adjacent: ShardId,
    ) -> Result<(), EngineError> {
        let (key, clock) = (key.clone(), self.shared.clock.clone());
        self.control(move |ctl| {
            Box::pin(async move { ctl.merge_shards(&key, shard, adjacent, clock.now_ms()).await })
        })
        .await
    }

    pub async fn update_shard_count(&self, key: &ResourceKey, target: u32) -> Result<(), EngineError> {
        let (key, clock) = (key.clone(), self.shared.clock.clone());
        self.control(move |ctl| {
            Box::pin(async move { ctl.update_shard_count(&key, target, clock.now_ms()).await })
        })
        .await
    }

    /// Trims every shard to its resource's retention now (by the engine's clock) and returns
    /// once the expired segments are gone. Retention also runs by itself every
    /// [`EngineConfig::retention_interval`].
    pub async fn run_retention(&self) -> Result<(), EngineError> {
        let (done, finished) = flume::bounded::<()>(1);
        self.shared
            .control
            .send_async(ControlMsg::Retention { done: Some(done) })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        // Every shard holds a clone of `done` until it has trimmed: the channel closes then.
        let _ = finished.recv_async().await;
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Data streams

    pub async fn create_stream(
        &self,
        name: &StreamName,
        shard_count: u32,
        mode: StreamMode,
    ) -> Result<(), EngineError> {
        self.create(NewResource::data_stream(name, shard_count, mode)).await
    }

    pub async fn delete_stream(
        &self,
        name: &StreamName,
        enforce_consumer_deletion: bool,
    ) -> Result<(), EngineError> {
        self.delete(&ResourceKey::from(name), enforce_consumer_deletion).await
    }

    pub async fn update_stream(&self, name: &StreamName, update: ResourceUpdate) -> Result<(), EngineError> {
        self.update(&ResourceKey::from(name), update).await
    }

    pub fn describe_stream(&self, name: &StreamName) -> Result<Arc<ResourceMeta>, EngineError> {
        self.describe(&ResourceKey::from(name))
    }

    /// Names of every data stream, sorted.
    pub fn list_streams(&self) -> Vec<String> {
        self.list(ResourceKind::DataStream).iter().map(|meta| meta.name().to_owned()).collect()
    }

    // ---------------------------------------------------------------------------------
    // Positions

    /// Stores `owner`'s position in a shard durably (the last sequence number it processed).
    /// Many checkpoints share one fdatasync; none costs a catalog commit.
    pub async fn checkpoint(
        &self,
        key: &ResourceKey,
        owner: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<(), EngineError> {
        let meta = self.describe(key)?;
        let change = controller::prepare_checkpoint(&meta, owner, shard, sequence, self.now_ms())?;
        let (reply, rx) = flume::bounded(1);
        self.shared
            .positions
            .send_async(PositionMsg::Commit { change, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.recv_async()
            .await
            .map_err(|_| EngineError::ShuttingDown)?
            .map_err(|error| error.at(&key.name, Some(shard)))
    }

    pub async fn get_checkpoint(
        &self,
        key: &ResourceKey,
        owner: &str,
        shard: ShardId,
    ) -> Result<Option<SequenceNumber>, EngineError> {
        let meta = self.describe(key)?;
        if meta.shard(shard).is_none() {
            return Err(CatalogError::ShardNotFound { name: key.name.clone(), shard }.into());
        }
        let key = PositionKey { uid: meta.uid(), owner: owner.to_owned(), shard: shard.get() };
        let (reply, rx) = flume::bounded(1);
        self.shared
            .positions
            .send_async(PositionMsg::Get { key, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        let position = rx.recv_async().await.map_err(|_| EngineError::ShuttingDown)?;
        Ok(position.map(|position| SequenceNumber(position.sequence)))
    }

    // ---------------------------------------------------------------------------------
    // The data path

    /// Appends records; returns, in input order, where each went once all are durable.
    /// Records of one partition key keep their order. Fails as a whole if any shard's
    /// commit failed (see [`Engine::append_each`] for per-record outcomes).
    pub async fn append(
        &self,
        key: &ResourceKey,
        records: Vec<Record>,
    ) -> Result<Vec<Appended>, EngineError> {
        self.append_each(key, records).await?.into_iter().collect()
    }

    /// Appends records, answering for each one: where it went once durable, or why its
    /// shard's commit failed. The outer error is for the whole batch (unknown resource, a
    /// record too large) and means nothing was stored.
    pub async fn append_each(
        &self,
        key: &ResourceKey,
        records: Vec<Record>,
    ) -> Result<Vec<Result<Appended, EngineError>>, EngineError> {
        self.append_stamped(key, records, None).await
    }

    /// [`Engine::append_each`] for an idempotent producer: a batch sent again with the same
    /// stamp (after a lost acknowledgement) is not stored again; it gets the sequence numbers
    /// it was stored under, in whichever shard stored it, also after the shard was split or
    /// merged. Stamps grow by one per batch and producer, one batch at a time.
    pub async fn append_stamped(
        &self,
        key: &ResourceKey,
        records: Vec<Record>,
        stamp: Option<Stamp>,
    ) -> Result<Vec<Result<Appended, EngineError>>, EngineError> {
        let total = records.len();
        let mut results: Outcomes = vec![None; total];
        let mut pending: Vec<(usize, Record)> = records.into_iter().enumerate().collect();
        // A shard may close between routing and appending (a split): retry those records
        // once the controller has published the new shards. Bounded.
        for attempt in 0..8 {
            if pending.is_empty() {
                break;
            }
            let indices: Vec<usize> = pending.iter().map(|(index, _)| *index).collect();
            if attempt > 0 {
                // Wait for the operation that closed the shard to finish and publish (and, if
                // its catalog commit failed, for the catalog to be recovered).
                let clock = self.shared.clock.clone();
                if let Err(error) =
                    self.control(move |ctl| Box::pin(async move { ctl.ready(clock.now_ms()).await })).await
                {
                    fail(&mut results, &indices, &error);
                    pending.clear();
                    break;
                }
            }
            let records: Vec<Record> =
                std::mem::take(&mut pending).into_iter().map(|(_, record)| record).collect();
            let routed = self
                .route(key)
                .and_then(|route| Ok((controller::route_records(&route.meta, records)?, route)));
            let (groups, route) = match routed {
                Ok(routed) => routed,
                // Nothing is stored yet: the whole batch fails.
                Err(error) if attempt == 0 => return Err(error),
                Err(error) => {
                    fail(&mut results, &indices, &error);
                    break;
                }
            };
            let mut waits = Vec::with_capacity(groups.len());
            for (shard, group) in groups {
                let (positions, records): (Vec<usize>, Vec<Record>) =
                    group.into_iter().map(|(position, record)| (indices[position], record)).unzip();
                let Some(sender) = route.shards.get(&shard.get()) else {
                    fail(&mut results, &positions, &EngineError::ShuttingDown);
                    continue;
                };
                let (reply, rx) = flume::bounded(1);
                let key_id = route.key_id.clone();
                if sender.send_async(ShardMsg::Append { records, key_id, stamp, reply }).await.is_err() {
                    fail(&mut results, &positions, &EngineError::ShuttingDown);
                    continue;
                }
                waits.push((shard, positions, rx));
            }
            for (shard, positions, rx) in waits {
                match rx.recv_async().await {
                    Ok(Ok(StoreOutcome::Stored { base })) => {
                        for (offset, position) in positions.into_iter().enumerate() {
                            let sequence = SequenceNumber(base + offset as u128);
                            results[position] = Some(Ok(Appended { shard, sequence }));
                        }
                    }
                    Ok(Ok(StoreOutcome::Duplicate(last))) => {
                        let stored_in = last.stored_in.map_or(shard, ShardId::new);
                        let group_len = positions.len();
                        for (group_index, position) in positions.into_iter().enumerate() {
                            results[position] =
                                Some(match dedupe::restate(last, total, position, group_len, group_index) {
                                    Some(sequence) => {
                                        Ok(Appended { shard: stored_in, sequence: SequenceNumber(sequence) })
                                    }
                                    None => Err(EngineError::RetryAcrossReshard {
                                        name: key.name.clone(),
                                        producer_id: stamp.map_or(0, |stamp| stamp.producer_id),
                                        batch: stamp.map_or(0, |stamp| stamp.batch),
                                    }),
                                });
                        }
                    }
                    Ok(Err((EngineError::Catalog(CatalogError::ShardClosed { .. }), Some(records)))) => {
                        pending.extend(positions.into_iter().zip(records))
                    }
                    Ok(Err((error, _))) => fail(&mut results, &positions, &named(error, &key.name, shard)),
                    Err(_) => fail(&mut results, &positions, &EngineError::ShuttingDown),
                }
            }
        }
        let busy = EngineError::Resharding { name: key.name.clone() };
        let left: Vec<usize> = pending.iter().map(|(position, _)| *position).collect();
        fail(&mut results, &left, &busy);
        Ok(results.into_iter().map(|result| result.expect("every record answered")).collect())
    }

    fn route(&self, key: &ResourceKey) -> Result<Arc<Route>, EngineError> {
        let routing = self.shared.routing.read().expect("not poisoned");
        routing
            .resources
            .get(key)
            .cloned()
            .ok_or_else(|| CatalogError::NotFound { kind: key.kind, name: key.name.clone() }.into())
    }

    fn shard_sender(
        &self,
        key: &ResourceKey,
        shard: ShardId,
    ) -> Result<(Arc<Route>, flume::Sender<ShardMsg>), EngineError> {
        let route = self.route(key)?;
        let sender = route
            .shards
            .get(&shard.get())
            .cloned()
            .ok_or_else(|| CatalogError::ShardNotFound { name: key.name.clone(), shard })?;
        Ok((route, sender))
    }

    /// The shard's commit signal: take its generation before a read, and when the read
    /// finds nothing new, wait for [`CommitSignal::changed`] instead of polling.
    pub fn commit_signal(&self, key: &ResourceKey, shard: ShardId) -> Result<Arc<CommitSignal>, EngineError> {
        let route = self.route(key)?;
        if !route.shards.contains_key(&shard.get()) {
            return Err(CatalogError::ShardNotFound { name: key.name.clone(), shard }.into());
        }
        Ok(self.shared.signals.get(ShardKey { uid: route.meta.uid(), shard }))
    }

    /// Resolves an iterator's start to the position (sequence number) a read starts from.
    pub async fn resolve(
        &self,
        key: &ResourceKey,
        shard: ShardId,
        start: StartPosition,
    ) -> Result<SequenceNumber, EngineError> {
        let (route, sender) = self.shard_sender(key, shard)?;
        if let StartPosition::AtSequence(sequence) | StartPosition::AfterSequence(sequence) = start {
            let owns = route.meta.shard(shard).is_some_and(|meta| meta.owns(sequence));
            if !owns {
                return Err(EngineError::ForeignSequence {
                    name: key.name.clone(),
                    shard,
                    sequence: sequence.0,
                });
            }
        }
        let (reply, rx) = flume::bounded(1);
        sender.send_async(ShardMsg::Resolve { start, reply }).await.map_err(|_| EngineError::ShuttingDown)?;
        let position = rx.recv_async().await.map_err(|_| EngineError::ShuttingDown)?;
        position.map(SequenceNumber).map_err(|error| named(error, &key.name, shard))
    }

    /// Reads from a position, within limits.
    pub async fn read(
        &self,
        key: &ResourceKey,
        shard: ShardId,
        from: SequenceNumber,
        limits: ReadLimits,
    ) -> Result<ShardRead, EngineError> {
        let (route, sender) = self.shard_sender(key, shard)?;
        let (reply, rx) = flume::bounded(1);
        sender
            .send_async(ShardMsg::Read { from: from.0, limits, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        let outcome = rx.recv_async().await.map_err(|_| EngineError::ShuttingDown)?;
        let outcome = outcome.map_err(|error| named(error, &key.name, shard))?;
        // A closed shard gets no more records: once caught up, the reader moves to its children.
        let meta = &route.meta;
        let exhausted = meta.shard(shard).is_some_and(|meta| !meta.is_open()) && outcome.caught_up;
        Ok(ShardRead {
            records: outcome.records,
            next: (!exhausted).then_some(SequenceNumber(outcome.next)),
            millis_behind_latest: outcome.millis_behind_latest,
            child_shards: if exhausted { meta.children(shard) } else { Vec::new() },
        })
    }
}

/// Puts the resource's name (and shard) into an error a shard task sent without them.
fn named(error: EngineError, name: &str, shard: ShardId) -> EngineError {
    match error {
        EngineError::StaleBatch { producer_id, batch, last_batch, .. } => {
            EngineError::StaleBatch { name: name.to_owned(), shard, producer_id, batch, last_batch }
        }
        EngineError::RetryOutsideWindow { producer_id, batch, .. } => {
            EngineError::RetryOutsideWindow { name: name.to_owned(), shard, producer_id, batch }
        }
        EngineError::ForeignSequence { sequence, .. } => {
            EngineError::ForeignSequence { name: name.to_owned(), shard, sequence }
        }
        EngineError::Catalog(CatalogError::ShardClosed { .. }) => {
            EngineError::Catalog(CatalogError::ShardClosed { name: name.to_owned(), shard })
        }
        other => other.at(name, Some(shard)),
    }
}

impl From<&StreamName> for ResourceKey {
    fn from(name: &StreamName) -> ResourceKey {
        ResourceKey::new(ResourceKind::DataStream, name.as_str())
    }
}
