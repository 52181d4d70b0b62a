//! The thread-per-core runtime: one glommio executor per core (`Placement::Fixed`), each
//! owning its shards outright, one task per shard. Callers on any thread (tokio front ends,
//! benchmarks, the CLI) hold an [`Engine`], which routes each batch to the owning shard's
//! inbox (a bounded flume channel) and awaits the durable acknowledgement. Catalog
//! operations run one at a time on core 0's controller task.
//!
//! Task queues per core: `ingest` (shard tasks: appends and reads) with high shares and
//! latency that matters, `background` (segment removal after retention) with low shares, so
//! that background work never stalls an acknowledgement.
//!
//! Group commit: a shard task takes the first message, then drains every message already
//! queued (up to a bound) and commits all their batches with one fdatasync per segment.
//! Whatever arrives during that fdatasync forms the next group.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

use crate::catalog::{self, CatalogError, StreamMeta, StreamMode};
use crate::crypto::Keyring;
use crate::dma::DmaStorage;
use crate::engine::{self, Controller, EngineError, ShardHosts, ShardKey};
use crate::format::ProducerStamp;
use crate::shard_log::{self, LogConfig, ReadLimits, ShardLog, StampedBatch, StartPosition};
use crate::signal::CommitSignal;
use crate::types::{HashKey, Record, SequenceNumber, ShardId, StoredRecord, StreamName};

/// Start-up settings. Everything has a default that works on a laptop.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Number of shard cores (executors). Defaults to the number of CPUs.
    pub cores: usize,
    pub log: LogConfig,
    /// Memory each executor registers with io_uring for DMA buffers. Counts against the
    /// memlock limit (RLIMIT_MEMLOCK) for users without CAP_IPC_LOCK.
    pub io_memory_bytes: usize,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Most append messages one group commit takes.
    pub group_max_batches: usize,
    /// Bound of each shard's inbox; senders wait when it is full (backpressure).
    pub shard_inbox: usize,
    /// Longest a task on an executor waits on a cross-thread channel before looking again
    /// (see [`recv_or_tick`]).
    pub heartbeat_interval: Duration,
    /// Key material for encryption at rest; streams with an encryption key id need it.
    pub keyring: Option<Arc<Keyring>>,
    /// Nice value for the executor threads; 0 leaves them as they are. Below 0 (which needs
    /// root or CAP_SYS_NICE; without it the engine says so once and runs on) the scheduler
    /// runs an executor as soon as its fdatasync completes even when other threads keep
    /// every core busy: measured with CPU hogs on both cores, a write+fdatasync loop's p99
    /// went from 4.4 ms at nice 0 to 0.5 ms at nice -10.
    pub executor_nice: i32,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            log: LogConfig::default(),
            io_memory_bytes: 2 << 20,
            retention_interval: Duration::from_secs(60),
            group_max_batches: 4096,
            shard_inbox: 8192,
            heartbeat_interval: TICK,
            keyring: None,
            executor_nice: -10,
        }
    }
}

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot start executor for core {core}: {source}. If this mentions memory, the memlock limit \
         (ulimit -l) is below the {io_memory_bytes} bytes of io_uring memory each core registers: raise it \
         or run as root"
    )]
    Executor { core: usize, io_memory_bytes: usize, source: std::io::Error },
    #[error("recovery failed: {0}")]
    Recovery(EngineError),
}

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
    pub next: Option<u128>,
    pub millis_behind_latest: i64,
    /// When the shard is closed and fully read: the shards that continue it.
    pub child_shards: Vec<ShardId>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

type Reply<T> = flume::Sender<Result<T, EngineError>>;

/// An append waiting in a shard's group commit.
struct PendingAppend {
    records: Vec<Record>,
    key_id: Option<Arc<str>>,
    producer: Option<ProducerStamp>,
    reply: AppendReply,
}

/// The answer to an append: the first sequence number, or the error; records come back
/// when the shard had closed, so that the caller can re-route them without having kept a copy.
type AppendReply = flume::Sender<Result<u128, (EngineError, Option<Vec<Record>>)>>;

enum ShardMsg {
    /// Records to store, sealed under the key id when there is one, stamped by an idempotent
    /// producer when there is a stamp.
    Append {
        records: Vec<Record>,
        key_id: Option<Arc<str>>,
        producer: Option<ProducerStamp>,
        reply: AppendReply,
    },
    Read {
        from: u128,
        limits: ReadLimits,
        reply: Reply<shard_log::ReadOutcome>,
    },
    Resolve {
        start: StartPosition,
        reply: Reply<u128>,
    },
    Close {
        reply: Reply<u128>,
    },
    Reopen {
        reply: Reply<()>,
    },
    Trim {
        cutoff_ms: i64,
    },
    Remove {
        reply: Reply<()>,
    },
    Stop {
        reply: flume::Sender<()>,
    },
}

enum CoreMsg {
    Open { key: ShardKey, epoch: u64, closed: bool, now_ms: i64, reply: Reply<flume::Sender<ShardMsg>> },
    Stop,
}

type Hosts = MeshHosts;
type Ctl = Controller<DmaStorage, Hosts>;
type ControlFn = Box<dyn for<'a> FnOnce(&'a mut Ctl) -> Pin<Box<dyn Future<Output = ()> + 'a>> + Send>;

enum ControlMsg {
    Run(ControlFn),
    Retention,
    Stop { reply: flume::Sender<()> },
}

/// Each shard's inbox, by shard id.
type ShardInboxes = HashMap<u32, flume::Sender<ShardMsg>>;

/// What the data path needs to know about a stream, published by the controller.
struct RouteStream {
    meta: Arc<StreamMeta>,
    shards: HashMap<u32, flume::Sender<ShardMsg>>,
}

#[derive(Default)]
struct Routing {
    streams: HashMap<String, RouteStream>,
}

struct Shared {
    control: flume::Sender<ControlMsg>,
    routing: RwLock<Routing>,
    threads: Mutex<Vec<glommio::ExecutorJoinHandle<()>>>,
    cores: Vec<flume::Sender<CoreMsg>>,
    signals: Signals,
}

/// Each shard's commit signal, made by whoever asks first: the shard task or a reader.
#[derive(Clone, Default)]
struct Signals(Arc<Mutex<HashMap<ShardKey, Arc<CommitSignal>>>>);

impl Signals {
    fn get(&self, key: ShardKey) -> Arc<CommitSignal> {
        self.0.lock().expect("not poisoned").entry(key).or_default().clone()
    }

    /// The shard is gone: wake its readers (their next read says so) and forget it.
    fn remove(&self, key: ShardKey) {
        if let Some(signal) = self.0.lock().expect("not poisoned").remove(&key) {
            signal.notify();
        }
    }
}

/// A handle on the running engine; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    /// Starts one executor per core, recovers the catalog and every shard, and returns once
    /// the engine serves requests.
    pub fn start(config: EngineConfig) -> Result<Engine, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = config.cores.max(1);
        let (control_tx, control_rx) = flume::unbounded();
        let mut core_txs = Vec::new();
        let mut core_rxs = Vec::new();
        for _ in 0..cores {
            let (tx, rx) = flume::unbounded();
            core_txs.push(tx);
            core_rxs.push(rx);
        }
        let shared = Arc::new(Shared {
            control: control_tx,
            routing: RwLock::new(Routing::default()),
            threads: Mutex::new(Vec::new()),
            cores: core_txs.clone(),
            signals: Signals::default(),
        });
        let (started_tx, started_rx) = flume::bounded::<Result<(), EngineError>>(1);
        let mut control_rx = Some(control_rx);
        for (core, inbox) in core_rxs.into_iter().enumerate() {
            let config = config.clone();
            let io_memory = config.io_memory_bytes;
            let control = if core == 0 { control_rx.take() } else { None };
            let shared_for_core = shared.clone();
            let started = started_tx.clone();
            let core_txs = core_txs.clone();
            let handle = LocalExecutorBuilder::new(Placement::Fixed(core % cpus))
                .name(&format!("millrace-core-{core}"))
                .io_memory(config.io_memory_bytes)
                .spawn(move || async move {
                    set_thread_nice(core, config.executor_nice);
                    core_main(core, config, inbox, control, shared_for_core, core_txs, started).await
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

    pub async fn create_stream(
        &self,
        name: &StreamName,
        shard_count: u32,
        mode: StreamMode,
    ) -> Result<(), EngineError> {
        let name = name.clone();
        self.control(move |ctl| {
            Box::pin(async move { ctl.create_stream(&name, shard_count, mode, now_ms()).await })
        })
        .await
    }

    pub async fn delete_stream(
        &self,
        name: &StreamName,
        enforce_consumer_deletion: bool,
    ) -> Result<(), EngineError> {
        let name = name.clone();
        self.control(move |ctl| {
            Box::pin(async move { ctl.delete_stream(&name, enforce_consumer_deletion, now_ms()).await })
        })
        .await
    }

    pub async fn split_shard(
        &self,
        name: &StreamName,
        shard: ShardId,
        new_start: HashKey,
    ) -> Result<(), EngineError> {
        let name = name.clone();
        self.control(move |ctl| {
            Box::pin(async move { ctl.split_shard(&name, shard, new_start, now_ms()).await })
        })
        .await
    }

    pub async fn merge_shards(
        &self,
        name: &StreamName,
        shard: ShardId,
        adjacent: ShardId,
    ) -> Result<(), EngineError> {
        let name = name.clone();
        self.control(move |ctl| {
            Box::pin(async move { ctl.merge_shards(&name, shard, adjacent, now_ms()).await })
        })
        .await
    }

    pub async fn update_shard_count(&self, name: &StreamName, target: u32) -> Result<(), EngineError> {
        let name = name.clone();
        self.control(move |ctl| {
            Box::pin(async move { ctl.update_shard_count(&name, target, now_ms()).await })
        })
        .await
    }

    /// A simple update; see [`catalog::updates`] for the ready-made ones.
    pub async fn update_stream(
        &self,
        name: &StreamName,
        change: impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> + Send + 'static,
    ) -> Result<(), EngineError> {
        let name = name.clone();
        self.control(move |ctl| Box::pin(async move { ctl.update_stream(&name, change, now_ms()).await }))
            .await
    }

    pub async fn checkpoint(
        &self,
        name: &StreamName,
        owner: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<(), EngineError> {
        let (name, owner) = (name.clone(), owner.to_owned());
        self.control(move |ctl| {
            Box::pin(async move { ctl.checkpoint(&name, &owner, shard, sequence, now_ms()).await })
        })
        .await
    }

    pub async fn get_checkpoint(
        &self,
        name: &StreamName,
        owner: &str,
        shard: ShardId,
    ) -> Result<Option<SequenceNumber>, EngineError> {
        let (name, owner) = (name.clone(), owner.to_owned());
        self.control(move |ctl| {
            Box::pin(async move {
                let uid = ctl.stream(&name)?.uid;
                Ok(ctl
                    .catalog()
                    .checkpoint(uid, &owner, shard)
                    .map(|checkpoint| SequenceNumber(checkpoint.sequence)))
            })
        })
        .await
    }

    /// The stream's current description.
    pub fn describe(&self, name: &StreamName) -> Result<Arc<StreamMeta>, EngineError> {
        let routing = self.shared.routing.read().expect("not poisoned");
        routing
            .streams
            .get(name.as_str())
            .map(|stream| stream.meta.clone())
            .ok_or_else(|| EngineError::StreamNotFound { name: name.to_string() })
    }

    /// Names of every stream, sorted.
    pub fn list_streams(&self) -> Vec<String> {
        let routing = self.shared.routing.read().expect("not poisoned");
        let mut names: Vec<String> = routing.streams.keys().cloned().collect();
        names.sort();
        names
    }

    /// Appends records; returns, in input order, where each went once all are durable.
    /// Records of one partition key keep their order. Fails as a whole if any shard's
    /// commit failed (see [`Engine::append_each`] for per-record outcomes).
    pub async fn append(
        &self,
        name: &StreamName,
        records: Vec<Record>,
    ) -> Result<Vec<Appended>, EngineError> {
        self.append_each(name, records).await?.into_iter().collect()
    }

    /// Appends records, answering for each one: where it went once durable, or why its
    /// shard's commit failed. The outer error is for the whole batch (unknown stream, a
    /// record too large) and means nothing was stored.
    pub async fn append_each(
        &self,
        name: &StreamName,
        records: Vec<Record>,
    ) -> Result<Vec<Result<Appended, EngineError>>, EngineError> {
        self.append_stamped(name, records, None).await
    }

    /// [`Engine::append_each`] for an idempotent producer: a batch sent again with the same
    /// stamp (after a lost acknowledgement) is not stored again; it gets the sequence numbers
    /// it was stored under. Stamps must grow by one per batch and shard, one batch at a time.
    pub async fn append_stamped(
        &self,
        name: &StreamName,
        records: Vec<Record>,
        producer: Option<ProducerStamp>,
    ) -> Result<Vec<Result<Appended, EngineError>>, EngineError> {
        let total = records.len();
        let mut results: Vec<Option<Result<Appended, EngineError>>> = vec![None; total];
        let mut pending: Vec<(usize, Record)> = records.into_iter().enumerate().collect();
        let fail = |results: &mut [Option<Result<Appended, EngineError>>],
                    positions: &[usize],
                    error: &EngineError| {
            for &position in positions {
                results[position] = Some(Err(error.clone()));
            }
        };
        // A shard may close between routing and appending (a split): retry those records
        // once the controller has published the new shards. Bounded.
        for attempt in 0..8 {
            if pending.is_empty() {
                break;
            }
            let indices: Vec<usize> = pending.iter().map(|(index, _)| *index).collect();
            if attempt > 0 {
                // Wait for the operation that closed the shard to finish and publish.
                if let Err(error) = self.control(|_| Box::pin(async { Ok(()) })).await {
                    fail(&mut results, &indices, &error);
                    pending.clear();
                    break;
                }
            }
            let records: Vec<Record> =
                std::mem::take(&mut pending).into_iter().map(|(_, record)| record).collect();
            let routed = self.route(name).and_then(|(meta, senders)| {
                let key_id: Option<Arc<str>> = meta.encryption_key_id.as_deref().map(Arc::from);
                Ok((engine::route_records(&meta, records)?, senders, key_id))
            });
            let (groups, senders, key_id) = match routed {
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
                let Some(sender) = senders.get(&shard.0) else {
                    fail(&mut results, &positions, &EngineError::ShuttingDown);
                    continue;
                };
                let (reply, rx) = flume::bounded(1);
                let key_id = key_id.clone();
                if sender.send_async(ShardMsg::Append { records, key_id, producer, reply }).await.is_err() {
                    fail(&mut results, &positions, &EngineError::ShuttingDown);
                    continue;
                }
                waits.push((shard, positions, rx));
            }
            for (shard, positions, rx) in waits {
                match rx.recv_async().await {
                    Ok(Ok(base)) => {
                        for (offset, position) in positions.into_iter().enumerate() {
                            let sequence = SequenceNumber(base + offset as u128);
                            results[position] = Some(Ok(Appended { shard, sequence }));
                        }
                    }
                    Ok(Err((EngineError::ShardClosed { .. }, Some(records)))) => {
                        pending.extend(positions.into_iter().zip(records))
                    }
                    Ok(Err((error, _))) => fail(&mut results, &positions, &error),
                    Err(_) => fail(&mut results, &positions, &EngineError::ShuttingDown),
                }
            }
        }
        let busy = EngineError::ResourceInUse { what: format!("stream {name} is being resharded; retry") };
        let left: Vec<usize> = pending.iter().map(|(position, _)| *position).collect();
        fail(&mut results, &left, &busy);
        Ok(results.into_iter().map(|result| result.expect("every record answered")).collect())
    }

    fn route(&self, name: &StreamName) -> Result<(Arc<StreamMeta>, ShardInboxes), EngineError> {
        let routing = self.shared.routing.read().expect("not poisoned");
        let stream = routing
            .streams
            .get(name.as_str())
            .ok_or_else(|| EngineError::StreamNotFound { name: name.to_string() })?;
        Ok((stream.meta.clone(), stream.shards.clone()))
    }

    fn shard_sender(
        &self,
        name: &StreamName,
        shard: ShardId,
    ) -> Result<(Arc<StreamMeta>, flume::Sender<ShardMsg>), EngineError> {
        let routing = self.shared.routing.read().expect("not poisoned");
        let stream = routing
            .streams
            .get(name.as_str())
            .ok_or_else(|| EngineError::StreamNotFound { name: name.to_string() })?;
        let sender = stream
            .shards
            .get(&shard.0)
            .ok_or_else(|| EngineError::ShardNotFound { stream: name.to_string(), shard })?;
        Ok((stream.meta.clone(), sender.clone()))
    }

    /// The shard's commit signal: take its generation before a read, and when the read
    /// finds nothing new, wait for [`CommitSignal::changed`] instead of polling.
    pub fn commit_signal(&self, name: &StreamName, shard: ShardId) -> Result<Arc<CommitSignal>, EngineError> {
        let routing = self.shared.routing.read().expect("not poisoned");
        let stream = routing
            .streams
            .get(name.as_str())
            .ok_or_else(|| EngineError::StreamNotFound { name: name.to_string() })?;
        if !stream.shards.contains_key(&shard.0) {
            return Err(EngineError::ShardNotFound { stream: name.to_string(), shard });
        }
        Ok(self.shared.signals.get(ShardKey { stream_uid: stream.meta.uid, shard }))
    }

    /// Resolves an iterator's start to a position in the shard.
    pub async fn resolve(
        &self,
        name: &StreamName,
        shard: ShardId,
        start: StartPosition,
    ) -> Result<u128, EngineError> {
        let (_, sender) = self.shard_sender(name, shard)?;
        let (reply, rx) = flume::bounded(1);
        sender.send_async(ShardMsg::Resolve { start, reply }).await.map_err(|_| EngineError::ShuttingDown)?;
        rx.recv_async().await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Reads from a position, within limits.
    pub async fn read(
        &self,
        name: &StreamName,
        shard: ShardId,
        from: u128,
        limits: ReadLimits,
    ) -> Result<ShardRead, EngineError> {
        let (meta, sender) = self.shard_sender(name, shard)?;
        let (reply, rx) = flume::bounded(1);
        sender
            .send_async(ShardMsg::Read { from, limits, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        let outcome = rx.recv_async().await.map_err(|_| EngineError::ShuttingDown)??;
        // A closed shard gets no more records: once caught up, the reader moves to its children.
        let exhausted = meta.shard(shard).is_some_and(|meta| !meta.is_open()) && outcome.caught_up;
        Ok(ShardRead {
            records: outcome.records,
            next: (!exhausted).then_some(outcome.next),
            millis_behind_latest: outcome.millis_behind_latest,
            child_shards: if exhausted { meta.children(shard) } else { Vec::new() },
        })
    }
}

/// Receives from a channel fed by other threads, on a glommio executor. With glommio 0.9 a
/// wake sent from a foreign thread is sometimes lost: the benchmark saw a shard task sleep
/// for 49 s with appends in its inbox, until an unrelated message arrived. So no task waits
/// on a cross-thread channel without a timer: after `tick` it looks again, which bounds the
/// cost of a lost wake to one tick while normal wakes still arrive at once.
async fn recv_or_tick<T>(rx: &flume::Receiver<T>, tick: Duration) -> Result<T, flume::RecvError> {
    loop {
        match rx.try_recv() {
            Ok(value) => return Ok(value),
            Err(flume::TryRecvError::Disconnected) => return Err(flume::RecvError::Disconnected),
            Err(flume::TryRecvError::Empty) => {}
        }
        let received = async { Some(rx.recv_async().await) };
        let ticked = async {
            glommio::timer::sleep(tick).await;
            None
        };
        if let Some(result) = futures_lite::future::or(received, ticked).await {
            return result;
        }
    }
}

/// Sets the calling thread's nice value (on Linux, `setpriority(PRIO_PROCESS, 0, ..)`
/// applies to the calling thread only). Core 0 reports a refusal; the others stay quiet.
fn set_thread_nice(core: usize, nice: i32) {
    if nice == 0 {
        return;
    }
    if let (Err(error), 0) = (crate::sys::set_thread_nice(nice), core) {
        eprintln!(
            "millrace: executors keep their priority (setpriority to nice {nice}: {error}); \
             acknowledgement latency may suffer when other threads keep every core busy"
        );
    }
}

/// The default for [`EngineConfig::heartbeat_interval`].
const TICK: Duration = Duration::from_millis(1);

/// Shard placement: spread each stream's shards over the cores.
fn core_of(key: ShardKey, cores: usize) -> usize {
    (key.stream_uid as usize).wrapping_add(key.shard.0 as usize) % cores
}

/// [`ShardHosts`] over the cores: opening a shard asks its core to recover it and start its
/// task; closing and removing talk to the shard task.
struct MeshHosts {
    cores: Vec<flume::Sender<CoreMsg>>,
    shards: HashMap<ShardKey, flume::Sender<ShardMsg>>,
}

impl ShardHosts for MeshHosts {
    async fn open(
        &mut self,
        key: ShardKey,
        epoch: u64,
        closed: bool,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        if self.shards.contains_key(&key) {
            return Ok(());
        }
        let core = &self.cores[core_of(key, self.cores.len())];
        let (reply, rx) = flume::bounded(1);
        core.send_async(CoreMsg::Open { key, epoch, closed, now_ms, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        let sender = recv_or_tick(&rx, TICK).await.map_err(|_| EngineError::ShuttingDown)??;
        self.shards.insert(key, sender);
        Ok(())
    }

    async fn close(&mut self, key: ShardKey) -> Result<u128, EngineError> {
        let sender = self.shards.get(&key).ok_or(EngineError::ShuttingDown)?;
        let (reply, rx) = flume::bounded(1);
        sender.send_async(ShardMsg::Close { reply }).await.map_err(|_| EngineError::ShuttingDown)?;
        recv_or_tick(&rx, TICK).await.map_err(|_| EngineError::ShuttingDown)?
    }

    async fn reopen(&mut self, key: ShardKey) -> Result<(), EngineError> {
        let sender = self.shards.get(&key).ok_or(EngineError::ShuttingDown)?;
        let (reply, rx) = flume::bounded(1);
        sender.send_async(ShardMsg::Reopen { reply }).await.map_err(|_| EngineError::ShuttingDown)?;
        recv_or_tick(&rx, TICK).await.map_err(|_| EngineError::ShuttingDown)?
    }

    async fn remove(&mut self, key: ShardKey) -> Result<(), EngineError> {
        let Some(sender) = self.shards.remove(&key) else { return Ok(()) };
        let (reply, rx) = flume::bounded(1);
        sender.send_async(ShardMsg::Remove { reply }).await.map_err(|_| EngineError::ShuttingDown)?;
        recv_or_tick(&rx, TICK).await.map_err(|_| EngineError::ShuttingDown)?
    }
}

async fn core_main(
    core: usize,
    config: EngineConfig,
    inbox: flume::Receiver<CoreMsg>,
    control: Option<flume::Receiver<ControlMsg>>,
    shared: Arc<Shared>,
    core_txs: Vec<flume::Sender<CoreMsg>>,
    started: flume::Sender<Result<(), EngineError>>,
) {
    let storage = DmaStorage::new(&config.data_dir);
    let signals = shared.signals.clone();
    if let Err(error) = crate::dma::probe_device(&config.data_dir, core).await {
        let _ = started.send(Err(error.into()));
        return;
    }
    let executor = glommio::executor();
    // Both queues are `Latency::NotImportant`: with a `Latency::Matters` queue, glommio 0.9
    // loses wakes from foreign threads and executors sleep with work queued (reproduced
    // outside Millrace with no I/O at all; see `recv_or_tick`). Shares still favour ingest.
    let ingest = executor.create_task_queue(Shares::Static(1000), Latency::NotImportant, "ingest");
    let background = executor.create_task_queue(Shares::Static(50), Latency::NotImportant, "background");
    if let Some(control) = control {
        let hosts = MeshHosts { cores: core_txs, shards: HashMap::new() };
        let task = controller_task(storage.clone(), hosts, control, shared, config.clone(), started);
        glommio::spawn_local_into(task, background).expect("queue exists").detach();
    } else {
        drop(started);
    }
    while let Ok(message) = recv_or_tick(&inbox, config.heartbeat_interval).await {
        match message {
            CoreMsg::Open { key, epoch, closed, now_ms, reply } => {
                let dir = catalog::shard_dir(key.stream_uid, key.shard);
                match engine::open_shard_log(&storage, &dir, epoch, config.log, closed, now_ms).await {
                    Ok(log) => {
                        let (tx, rx) = flume::bounded(config.shard_inbox);
                        let shard = ShardContext {
                            key,
                            storage: storage.clone(),
                            epoch,
                            config: config.clone(),
                            background,
                            signals: signals.clone(),
                        };
                        let task = shard_task(shard, log, rx);
                        glommio::spawn_local_into(task, ingest).expect("queue exists").detach();
                        let _ = reply.send(Ok(tx));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.into()));
                    }
                }
            }
            CoreMsg::Stop => break,
        }
    }
}

async fn controller_task(
    storage: DmaStorage,
    hosts: MeshHosts,
    control: flume::Receiver<ControlMsg>,
    shared: Arc<Shared>,
    config: EngineConfig,
    started: flume::Sender<Result<(), EngineError>>,
) {
    let mut ctl = match Controller::start(&storage, hosts, now_ms()).await {
        Ok(ctl) => ctl,
        Err(error) => {
            let _ = started.send(Err(error));
            return;
        }
    };
    publish(&ctl, &shared);
    let _ = started.send(Ok(()));
    drop(started);
    // Retention ticks arrive as control messages so that they never race a catalog change.
    let ticker = shared.control.clone();
    let interval = config.retention_interval;
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(interval).await;
            if ticker.send_async(ControlMsg::Retention).await.is_err() {
                break;
            }
        }
    })
    .detach();
    while let Ok(message) = recv_or_tick(&control, config.heartbeat_interval).await {
        match message {
            ControlMsg::Run(op) => op(&mut ctl).await,
            ControlMsg::Retention => {
                let now = now_ms();
                for stream in ctl.catalog().streams() {
                    let cutoff_ms = now - i64::from(stream.retention_hours) * 3_600_000;
                    for shard in &stream.shards {
                        let key = ShardKey { stream_uid: stream.uid, shard: shard.shard_id() };
                        if let Some(sender) = ctl.hosts().shards.get(&key) {
                            let _ = sender.try_send(ShardMsg::Trim { cutoff_ms });
                        }
                    }
                }
            }
            ControlMsg::Stop { reply } => {
                let senders: Vec<_> = ctl.hosts().shards.values().cloned().collect();
                for sender in senders {
                    let (tx, rx) = flume::bounded(1);
                    if sender.send_async(ShardMsg::Stop { reply: tx }).await.is_ok() {
                        let _ = recv_or_tick(&rx, TICK).await;
                    }
                }
                ctl.hosts_mut().shards.clear();
                shared.routing.write().expect("not poisoned").streams.clear();
                let _ = reply.send(());
                break;
            }
        }
    }
}

/// Publishes the catalog and the shard inboxes for the data path.
fn publish(ctl: &Ctl, shared: &Shared) {
    let mut streams = HashMap::new();
    for stream in ctl.catalog().streams() {
        let shards = stream
            .shards
            .iter()
            .filter_map(|shard| {
                let key = ShardKey { stream_uid: stream.uid, shard: shard.shard_id() };
                ctl.hosts().shards.get(&key).map(|sender| (shard.id, sender.clone()))
            })
            .collect();
        streams.insert(stream.name.clone(), RouteStream { meta: Arc::new(stream.clone()), shards });
    }
    shared.routing.write().expect("not poisoned").streams = streams;
}

/// What a shard task works with besides its log and inbox.
struct ShardContext {
    key: ShardKey,
    storage: DmaStorage,
    epoch: u64,
    config: EngineConfig,
    background: TaskQueueHandle,
    signals: Signals,
}

async fn shard_task(shard: ShardContext, mut log: ShardLog<DmaStorage>, inbox: flume::Receiver<ShardMsg>) {
    let ShardContext { key, storage, epoch, config, background, signals } = shard;
    let signal = signals.get(key);
    let mut closed = false;
    log.set_keyring(config.keyring.clone());
    while let Ok(first) = recv_or_tick(&inbox, config.heartbeat_interval).await {
        let mut appends: Vec<PendingAppend> = Vec::new();
        let mut others = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            // A control message ends the group, so that an append that arrives after a
            // Remove or Stop is never committed (and acknowledged) before it.
            let ends_group =
                matches!(message, ShardMsg::Close { .. } | ShardMsg::Remove { .. } | ShardMsg::Stop { .. });
            match message {
                ShardMsg::Append { records, key_id, producer, reply } => {
                    appends.push(PendingAppend { records, key_id, producer, reply })
                }
                other => others.push(other),
            }
            if !ends_group && appends.len() < config.group_max_batches {
                next = inbox.try_recv().ok();
            }
        }
        if !appends.is_empty() {
            commit_group(key, &mut log, appends, closed).await;
            // Readers waiting for new records look again (a failed commit wakes them for
            // nothing, which costs them one read).
            signal.notify();
            if log.is_poisoned() {
                // The page cache can no longer be trusted: recover from the disk.
                let dir = log.dir().to_owned();
                match ShardLog::open_for_writes(&storage, &dir, epoch, config.log, now_ms()).await {
                    Ok(recovered) => {
                        log = recovered;
                        log.set_keyring(config.keyring.clone());
                        if closed {
                            log.close();
                        }
                    }
                    Err(error) => eprintln!("millrace: shard log {dir} cannot recover: {error}"),
                }
            }
        }
        for message in others {
            match message {
                ShardMsg::Append { .. } => unreachable!("appends were taken out"),
                ShardMsg::Read { from, limits, reply } => {
                    let _ = reply.send(log.read(from, limits).await.map_err(Into::into));
                }
                ShardMsg::Resolve { start, reply } => {
                    let _ = reply.send(log.resolve(start).await.map_err(Into::into));
                }
                ShardMsg::Close { reply } => {
                    closed = true;
                    let _ = reply.send(Ok(log.close()));
                }
                ShardMsg::Reopen { reply } => {
                    closed = false;
                    log.reopen_writes();
                    let _ = reply.send(Ok(()));
                }
                ShardMsg::Trim { cutoff_ms } => match log.detach_expired(cutoff_ms, now_ms()).await {
                    Ok(expired) if !expired.0.is_empty() => {
                        let (storage, dir) = (storage.clone(), log.dir().to_owned());
                        let removal = async move {
                            if let Err(error) = shard_log::remove_files(&storage, &dir, expired).await {
                                eprintln!("millrace: retention could not remove segments of {dir}: {error}");
                            }
                        };
                        glommio::spawn_local_into(removal, background).expect("queue exists").detach();
                    }
                    Ok(_) => {}
                    Err(error) => eprintln!("millrace: retention of {}: {error}", log.dir()),
                },
                ShardMsg::Remove { reply } => {
                    let dir = log.dir().to_owned();
                    drop(log);
                    signals.remove(key);
                    let _ = reply.send(engine::remove_dir_files(&storage, &dir).await.map_err(Into::into));
                    return;
                }
                ShardMsg::Stop { reply } => {
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }
}

async fn commit_group(
    key: ShardKey,
    log: &mut ShardLog<DmaStorage>,
    appends: Vec<PendingAppend>,
    closed: bool,
) {
    if closed {
        // Hand the records back: the engine handle re-routes them to the children.
        for append in appends {
            let error = EngineError::ShardClosed { stream: log.dir().to_owned(), shard: key.shard };
            let _ = append.reply.send(Err((error, Some(append.records))));
        }
        return;
    }
    // Retries of stamped batches are answered from what is stored (or from the batch they
    // repeat in this same group) and not stored again.
    let mut batches: Vec<StampedBatch> = Vec::with_capacity(appends.len());
    let mut replies: Vec<Vec<AppendReply>> = Vec::with_capacity(appends.len());
    for append in appends {
        if let Some(stamp) = append.producer {
            if let Some((last, base)) = log.producer_last(stamp.producer_id) {
                if stamp.batch == last {
                    let _ = append.reply.send(Ok(base));
                    continue;
                }
                if stamp.batch < last {
                    let error = EngineError::InvalidArgument {
                        what: format!(
                            "batch {} of producer {:#x} is older than its last stored batch {last}",
                            stamp.batch, stamp.producer_id
                        ),
                    };
                    let _ = append.reply.send(Err((error, None)));
                    continue;
                }
            }
            if let Some(index) = batches.iter().position(|batch| batch.producer == Some(stamp)) {
                replies[index].push(append.reply);
                continue;
            }
        }
        batches.push(StampedBatch {
            records: append.records,
            key_id: append.key_id,
            producer: append.producer,
        });
        replies.push(vec![append.reply]);
    }
    if batches.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    match log.append_group_stamped(batches, now_ms()).await {
        Ok(bases) => {
            for (waiting, base) in replies.into_iter().zip(bases) {
                for reply in waiting {
                    let _ = reply.send(Ok(base));
                }
            }
        }
        Err(error) => {
            let error = EngineError::from(error);
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Err((error.clone(), None)));
            }
        }
    }
    crate::metrics::COMMITS.committed(started.elapsed());
}
