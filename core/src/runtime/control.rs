//! The tasks behind the engine handle: each core's main loop (which opens shard tasks), the
//! controller task (catalog operations, one at a time, on core 0's background queue), the
//! positions task (group-committed checkpoints, beside it), and the publication of the
//! catalog and shard inboxes for the data path.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glommio::{Latency, Shares};

use super::api::Shared;
use super::messages::{ControlMsg, CoreMsg, Ctl, PositionMsg, ShardMsg};
use super::shard_task::{shard_task, ShardContext};
use super::EngineConfig;
use crate::catalog::{Closed, ResourceKey, ResourceMeta};
use crate::controller::{self, Controller, OpenShard, ShardHosts, ShardKey};
use crate::dma::DmaStorage;
use crate::error::{EngineError, Operation, StorageFault};
use crate::journal::Journal;
use crate::positions::{PositionChange, Positions};
use crate::signal::CommitSignal;

/// Each shard's commit signal, made by whoever asks first: the shard task or a reader.
#[derive(Clone, Default)]
pub(crate) struct Signals(Arc<Mutex<HashMap<ShardKey, Arc<CommitSignal>>>>);

impl Signals {
    pub fn get(&self, key: ShardKey) -> Arc<CommitSignal> {
        self.0.lock().expect("not poisoned").entry(key).or_default().clone()
    }

    /// The shard is gone: wake its readers (their next read says so) and forget it.
    pub fn remove(&self, key: ShardKey) {
        if let Some(signal) = self.0.lock().expect("not poisoned").remove(&key) {
            signal.notify();
        }
    }
}

/// What the data path needs to know about a resource, published by the controller.
pub(crate) struct Route {
    pub meta: Arc<ResourceMeta>,
    pub key_id: Option<Arc<str>>,
    pub shards: HashMap<u32, flume::Sender<ShardMsg>>,
}

#[derive(Default)]
pub(crate) struct Routing {
    pub resources: HashMap<ResourceKey, Arc<Route>>,
}

/// Receives from a channel fed by other threads, on a glommio executor. With glommio 0.9 a
/// wake sent from a foreign thread is sometimes lost: the benchmark saw a shard task sleep
/// for 49 s with appends in its inbox, until an unrelated message arrived. So no task waits
/// on a cross-thread channel without a timer: after `tick` it looks again, which bounds the
/// cost of a lost wake to one tick while normal wakes still arrive at once.
pub(crate) async fn recv_or_tick<T>(rx: &flume::Receiver<T>, tick: Duration) -> Result<T, flume::RecvError> {
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
pub(crate) fn set_thread_nice(core: usize, nice: i32) {
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

/// Shard placement: spread each resource's shards over the cores.
fn core_of(key: ShardKey, cores: usize) -> usize {
    (key.uid as usize).wrapping_add(key.shard.get() as usize) % cores
}

/// [`ShardHosts`] over the cores: opening a shard asks its core to recover it and start its
/// task; closing and removing talk to the shard task.
pub(crate) struct MeshHosts {
    cores: Vec<flume::Sender<CoreMsg>>,
    pub(crate) shards: HashMap<ShardKey, flume::Sender<ShardMsg>>,
    tick: Duration,
}

async fn ask<T>(
    sender: &flume::Sender<ShardMsg>,
    message: impl FnOnce(flume::Sender<Result<T, EngineError>>) -> ShardMsg,
    tick: Duration,
) -> Result<T, EngineError> {
    let (reply, rx) = flume::bounded(1);
    sender.send_async(message(reply)).await.map_err(|_| EngineError::ShuttingDown)?;
    recv_or_tick(&rx, tick).await.map_err(|_| EngineError::ShuttingDown)?
}

impl ShardHosts for MeshHosts {
    async fn open(&mut self, shard: OpenShard, now_ms: i64) -> Result<(), EngineError> {
        if self.shards.contains_key(&shard.key) {
            return Ok(());
        }
        let key = shard.key;
        let core = &self.cores[core_of(key, self.cores.len())];
        let (reply, rx) = flume::bounded(1);
        core.send_async(CoreMsg::Open { shard, now_ms, reply })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        let sender = recv_or_tick(&rx, self.tick).await.map_err(|_| EngineError::ShuttingDown)??;
        self.shards.insert(key, sender);
        Ok(())
    }

    async fn close(&mut self, key: ShardKey) -> Result<Closed, EngineError> {
        let sender = self.shards.get(&key).ok_or(EngineError::ShuttingDown)?;
        ask(sender, |reply| ShardMsg::Close { reply }, self.tick).await
    }

    async fn reopen(&mut self, key: ShardKey) -> Result<(), EngineError> {
        let sender = self.shards.get(&key).ok_or(EngineError::ShuttingDown)?;
        ask(sender, |reply| ShardMsg::Reopen { reply }, self.tick).await
    }

    async fn remove(&mut self, key: ShardKey) -> Result<(), EngineError> {
        let Some(sender) = self.shards.remove(&key) else { return Ok(()) };
        ask(&sender, |reply| ShardMsg::Remove { reply }, self.tick).await
    }
}

/// Channels a core's main loop starts with.
pub(crate) struct CoreStart {
    pub inbox: flume::Receiver<CoreMsg>,
    pub control: Option<flume::Receiver<ControlMsg>>,
    pub positions: Option<flume::Receiver<PositionMsg>>,
    pub cores: Vec<flume::Sender<CoreMsg>>,
    pub started: flume::Sender<Result<(), EngineError>>,
}

pub(crate) async fn core_main(core: usize, config: EngineConfig, shared: Arc<Shared>, start: CoreStart) {
    let CoreStart { inbox, control, positions, cores, started } = start;
    let storage = DmaStorage::new(&config.data_dir);
    let signals = shared.signals.clone();
    if let Err(error) = crate::dma::probe_device(&config.data_dir, core).await {
        let path = Some(error.path.clone());
        let _ = started.send(Err(StorageFault::new(Operation::Start, path, error).into()));
        return;
    }
    let executor = glommio::executor();
    // Both queues are `Latency::NotImportant`: with a `Latency::Matters` queue, glommio 0.9
    // loses wakes from foreign threads and executors sleep with work queued (reproduced
    // outside Millrace with no I/O at all; see `recv_or_tick`). Shares still favour ingest.
    let ingest = executor.create_task_queue(Shares::Static(1000), Latency::NotImportant, "ingest");
    let background = executor.create_task_queue(Shares::Static(50), Latency::NotImportant, "background");
    if let (Some(control), Some(positions)) = (control, positions) {
        let hosts = MeshHosts { cores, shards: HashMap::new(), tick: config.heartbeat_interval };
        let task = controller_task(
            storage.clone(),
            hosts,
            control,
            positions,
            shared.clone(),
            config.clone(),
            started,
        );
        glommio::spawn_local_into(task, background).expect("queue exists").detach();
    } else {
        drop(started);
    }
    while let Ok(message) = recv_or_tick(&inbox, config.heartbeat_interval).await {
        match message {
            CoreMsg::Open { shard, now_ms, reply } => {
                match controller::open_shard_log(&storage, &shard, config.log, now_ms).await {
                    Ok(log) => {
                        let (tx, rx) = flume::bounded(config.shard_inbox);
                        let context = ShardContext {
                            key: shard.key,
                            storage: storage.clone(),
                            epoch: shard.epoch,
                            config: config.clone(),
                            background,
                            signals: signals.clone(),
                            stats: shared.stats.clone(),
                        };
                        let task = shard_task(context, log, rx);
                        glommio::spawn_local_into(task, ingest).expect("queue exists").detach();
                        let _ = reply.send(Ok(tx));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(EngineError::log(Operation::Open, error)));
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
    positions_inbox: flume::Receiver<PositionMsg>,
    shared: Arc<Shared>,
    config: EngineConfig,
    started: flume::Sender<Result<(), EngineError>>,
) {
    let (mut ctl, positions) = match Controller::start(&storage, hosts, config.clock.now_ms()).await {
        Ok(started) => started,
        Err(error) => {
            let _ = started.send(Err(error));
            return;
        }
    };
    publish(&ctl, &shared);
    glommio::spawn_local(positions_task(positions, positions_inbox, config.clone())).detach();
    let _ = started.send(Ok(()));
    drop(started);
    // Retention ticks arrive as control messages so that they never race a catalog change.
    let ticker = shared.control.clone();
    let interval = config.retention_interval;
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(interval).await;
            if ticker.send_async(ControlMsg::Retention { done: None }).await.is_err() {
                break;
            }
        }
    })
    .detach();
    while let Ok(message) = recv_or_tick(&control, config.heartbeat_interval).await {
        match message {
            ControlMsg::Run(op) => op(&mut ctl).await,
            ControlMsg::Retention { done } => {
                let now = config.clock.now_ms();
                for resource in ctl.catalog().all() {
                    let cutoff_ms = now - i64::from(resource.retention_hours()) * 3_600_000;
                    for shard in resource.shards() {
                        let key = ShardKey { uid: resource.uid(), shard: shard.shard_id() };
                        if let Some(sender) = ctl.hosts().shards.get(&key) {
                            // A full inbox skips this round; the next one trims.
                            let _ = sender.try_send(ShardMsg::Trim {
                                cutoff_ms,
                                now_ms: now,
                                done: done.clone(),
                            });
                        }
                    }
                }
            }
            ControlMsg::Stop { reply } => {
                let senders: Vec<_> = ctl.hosts().shards.values().cloned().collect();
                for sender in senders {
                    let (tx, rx) = flume::bounded(1);
                    if sender.send_async(ShardMsg::Stop { reply: tx }).await.is_ok() {
                        let _ = recv_or_tick(&rx, config.heartbeat_interval).await;
                    }
                }
                ctl.hosts_mut().shards.clear();
                shared.routing.write().expect("not poisoned").resources.clear();
                let (tx, rx) = flume::bounded(1);
                if shared.positions.send_async(PositionMsg::Stop { reply: tx }).await.is_ok() {
                    let _ = recv_or_tick(&rx, config.heartbeat_interval).await;
                }
                let _ = reply.send(());
                break;
            }
        }
    }
}

/// Serves positions: every commit that arrives while one is being written shares the next
/// fdatasync.
async fn positions_task(
    mut journal: Journal<DmaStorage, Positions>,
    inbox: flume::Receiver<PositionMsg>,
    config: EngineConfig,
) {
    while let Ok(first) = recv_or_tick(&inbox, config.heartbeat_interval).await {
        let mut changes: Vec<PositionChange> = Vec::new();
        let mut replies = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                PositionMsg::Commit { change, reply } => {
                    changes.push(change);
                    replies.push(reply);
                }
                PositionMsg::Get { key, reply } => {
                    // Answered after the changes queued before it are durable.
                    if !changes.is_empty() {
                        commit_positions(&mut journal, &mut changes, &mut replies, &config).await;
                    }
                    let _ = reply.send(journal.state().get(&key));
                }
                PositionMsg::Stop { reply } => {
                    commit_positions(&mut journal, &mut changes, &mut replies, &config).await;
                    let _ = reply.send(());
                    return;
                }
            }
            if changes.len() < config.group_max_batches {
                next = inbox.try_recv().ok();
            }
        }
        commit_positions(&mut journal, &mut changes, &mut replies, &config).await;
    }
}

async fn commit_positions(
    journal: &mut Journal<DmaStorage, Positions>,
    changes: &mut Vec<PositionChange>,
    replies: &mut Vec<super::messages::Reply<()>>,
    config: &EngineConfig,
) {
    if changes.is_empty() {
        return;
    }
    let result = journal.commit(changes, config.clock.now_ms()).await.map_err(|error| {
        let path = Some(error.path().to_owned());
        EngineError::Storage(StorageFault::new(Operation::Positions, path, error))
    });
    for reply in replies.drain(..) {
        let _ = reply.send(result.clone());
    }
    changes.clear();
}

/// Publishes the catalog and the shard inboxes for the data path.
pub(crate) fn publish(ctl: &Ctl, shared: &Shared) {
    let mut resources = HashMap::new();
    for resource in ctl.catalog().all() {
        let shards = resource
            .shards()
            .iter()
            .filter_map(|shard| {
                let key = ShardKey { uid: resource.uid(), shard: shard.shard_id() };
                ctl.hosts().shards.get(&key).map(|sender| (shard.shard_id().get(), sender.clone()))
            })
            .collect();
        let route = Route {
            meta: Arc::new(resource.clone()),
            key_id: resource.encryption_key_id().map(Arc::from),
            shards,
        };
        resources.insert(ResourceKey::new(resource.kind(), resource.name()), Arc::new(route));
    }
    shared.routing.write().expect("not poisoned").resources = resources;
}
