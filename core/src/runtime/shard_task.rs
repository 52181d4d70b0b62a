//! One shard's task: it owns the shard's log outright and serves every message for it in
//! turn, on its core's `ingest` queue.
//!
//! Group commit: the task takes the first message, then drains every message already queued
//! (up to a bound) and commits all their batches with one fdatasync per segment. Whatever
//! arrives during that fdatasync forms the next group. Stamped batches are judged against
//! the shard's producer record first (see [`crate::dedupe`]): a retry is answered with where
//! it was stored and not stored again.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use glommio::TaskQueueHandle;

use super::control::{recv_or_tick, Signals};
use super::messages::{AppendReply, ShardMsg, StoreOutcome};
use super::EngineConfig;
use crate::controller::{self, ShardKey};
use crate::dedupe::{self, Judged, Pending, Stamp, Verdict};
use crate::dma::DmaStorage;
use crate::error::{EngineError, Operation};
use crate::shard_log::{self, ShardLog};
use crate::types::Record;

/// An append waiting in a shard's group commit.
struct PendingAppend {
    records: Vec<Record>,
    key_id: Option<Arc<str>>,
    stamp: Option<Stamp>,
    reply: AppendReply,
}

/// What a shard task works with besides its log and inbox.
pub(crate) struct ShardContext {
    pub key: ShardKey,
    pub storage: DmaStorage,
    pub epoch: u64,
    pub config: EngineConfig,
    pub background: TaskQueueHandle,
    pub signals: Signals,
    pub stats: Arc<super::api::Stats>,
}

pub(crate) async fn shard_task(
    shard: ShardContext,
    mut log: ShardLog<DmaStorage>,
    inbox: flume::Receiver<ShardMsg>,
) {
    let ShardContext { key, storage, epoch, config, background, signals, stats } = shard;
    let signal = signals.get(key);
    let mut closed = false;
    log.set_keyring(config.keyring.clone());
    while let Ok(first) = recv_or_tick(&inbox, config.heartbeat_interval).await {
        let mut appends: Vec<PendingAppend> = Vec::new();
        let mut others = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            // A control message ends the group, so that an append that arrives after a
            // Close, Remove or Stop is never committed (and acknowledged) before it.
            let ends_group =
                matches!(message, ShardMsg::Close { .. } | ShardMsg::Remove { .. } | ShardMsg::Stop { .. });
            match message {
                ShardMsg::Append { records, key_id, stamp, reply } => {
                    appends.push(PendingAppend { records, key_id, stamp, reply })
                }
                other => others.push(other),
            }
            if !ends_group && appends.len() < config.group_max_batches {
                next = inbox.try_recv().ok();
            }
        }
        if !appends.is_empty() {
            commit_group(key, &mut log, appends, closed, &config, &stats).await;
            // Readers waiting for new records look again (a failed commit wakes them for
            // nothing, which costs them one read).
            signal.notify();
            if log.is_poisoned() {
                // The page cache can no longer be trusted: recover from the disk.
                let dir = log.dir().to_owned();
                let now = config.clock.now_ms();
                match ShardLog::open_for_writes(&storage, &dir, epoch, config.log, now).await {
                    Ok(mut recovered) => {
                        recovered.set_keyring(config.keyring.clone());
                        // The parents' producers are in the catalog, not in this log.
                        recovered.adopt_inherited(&log);
                        if closed {
                            recovered.close();
                        }
                        log = recovered;
                    }
                    Err(error) => eprintln!("millrace: shard log {dir} cannot recover: {error}"),
                }
            }
        }
        for message in others {
            match message {
                ShardMsg::Append { .. } => unreachable!("appends were taken out"),
                ShardMsg::Read { from, limits, reply } => {
                    let read = log
                        .read(from, limits)
                        .await
                        .map_err(|error| EngineError::log(Operation::Read, error));
                    let _ = reply.send(read);
                }
                ShardMsg::Resolve { start, reply } => {
                    let resolved =
                        log.resolve(start).await.map_err(|error| EngineError::log(Operation::Resolve, error));
                    let _ = reply.send(resolved);
                }
                ShardMsg::Close { reply } => {
                    closed = true;
                    log.close();
                    // The children will answer retries from these producers' frames.
                    match log.confirm_all().await {
                        Ok(()) => {
                            let _ = reply.send(Ok(log.closed_state(key.shard.get())));
                        }
                        Err(error) => {
                            // Not closed after all: the resharding fails and the shard goes on.
                            closed = false;
                            log.reopen_writes();
                            let _ = reply.send(Err(EngineError::log(Operation::Close, error)));
                        }
                    }
                }
                ShardMsg::Reopen { reply } => {
                    closed = false;
                    log.reopen_writes();
                    let _ = reply.send(Ok(()));
                }
                ShardMsg::Trim { cutoff_ms, now_ms, done } => {
                    match log.detach_expired(cutoff_ms, now_ms).await {
                        Ok(expired) if !expired.0.is_empty() => {
                            let (storage, dir) = (storage.clone(), log.dir().to_owned());
                            let removal = async move {
                                if let Err(error) = shard_log::remove_files(&storage, &dir, expired).await {
                                    eprintln!(
                                        "millrace: retention could not remove segments of {dir}: {error}"
                                    );
                                }
                                drop(done);
                            };
                            glommio::spawn_local_into(removal, background).expect("queue exists").detach();
                        }
                        Ok(_) => {}
                        Err(error) => eprintln!("millrace: retention of {}: {error}", log.dir()),
                    }
                }
                ShardMsg::Remove { reply } => {
                    let dir = log.dir().to_owned();
                    drop(log);
                    signals.remove(key);
                    let removed =
                        controller::remove_dir_files(&storage, &dir).await.map_err(EngineError::from);
                    let _ = reply.send(removed);
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

/// Judges every stamped append, then commits what is to be stored with one fdatasync per
/// segment, and answers each append.
async fn commit_group(
    key: ShardKey,
    log: &mut ShardLog<DmaStorage>,
    appends: Vec<PendingAppend>,
    closed: bool,
    config: &EngineConfig,
    stats: &super::api::Stats,
) {
    if closed {
        // Hand the records back: the engine handle re-routes them to the children.
        for append in appends {
            let error = EngineError::Catalog(crate::catalog::CatalogError::ShardClosed {
                name: String::new(),
                shard: key.shard,
            });
            let _ = append.reply.send(Err((error, Some(append.records))));
        }
        return;
    }
    let pending = appends
        .into_iter()
        .map(|append| Pending {
            records: append.records,
            key_id: append.key_id,
            stamp: append.stamp,
            reply: append.reply,
        })
        .collect();
    let Judged { batches, waiting: replies, answered } = dedupe::judge_group(log.producers(), pending);
    for (reply, stamp, verdict) in answered {
        let (producer_id, batch) = (stamp.producer_id, stamp.batch);
        let answer = match verdict {
            Verdict::Duplicate(last) => match log.confirm(producer_id, last).await {
                Ok(()) => Ok(StoreOutcome::Duplicate(last)),
                Err(error) => Err((EngineError::log(Operation::Append, error), None)),
            },
            Verdict::Stale { last_batch } => Err((
                EngineError::StaleBatch {
                    name: String::new(),
                    shard: key.shard,
                    producer_id,
                    batch,
                    last_batch,
                },
                None,
            )),
            Verdict::OutsideWindow => Err((
                EngineError::RetryOutsideWindow { name: String::new(), shard: key.shard, producer_id, batch },
                None,
            )),
            Verdict::Store => unreachable!("stored batches are not answered here"),
        };
        let _ = reply.send(answer);
    }
    if batches.is_empty() {
        return;
    }
    stats.groups.fetch_add(1, Ordering::Relaxed);
    stats.batches.fetch_add(batches.len() as u64, Ordering::Relaxed);
    let started = std::time::Instant::now();
    match log.append_group_stamped(batches, config.clock.now_ms()).await {
        Ok(bases) => {
            for (waiting, base) in replies.into_iter().zip(bases) {
                for reply in waiting {
                    let _ = reply.send(Ok(StoreOutcome::Stored { base }));
                }
            }
        }
        Err(error) => {
            let error = EngineError::log(Operation::Append, error);
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Err((error.clone(), None)));
            }
        }
    }
    crate::metrics::COMMITS.committed(started.elapsed());
}
