//! The engine's control logic, independent of threads: the [`Controller`] runs catalog
//! operations (create, delete, split, merge, re-scale, updates) for every resource kind and
//! applies their effects to shard logs through [`ShardHosts`], in an order that is safe at
//! any crash point:
//!
//! - create: open the logs, then commit. A crash in between leaves orphan directories that
//!   the next start removes.
//! - split/merge/re-scale: close the parents' logs (no more writes), commit the catalog
//!   change with their ending sequence numbers and producer stamps, then open the children
//!   (which inherit the stamps). A crash before the commit leaves the parents open, as if
//!   nothing happened.
//! - delete: commit the removal, then delete the files.
//!
//! A failed catalog commit does not stop the control plane: the catalog is recovered from
//! the disk at once (whatever of the failed change is visible becomes durable, the rest is
//! gone) and the shard logs are brought in line with what it says ([`Controller::reconcile`]).
//!
//! [`LocalHosts`] keeps every shard log in the calling task (the simulation and single-core
//! tests); the runtime implements `ShardHosts` with one task per shard spread over cores.
#![forbid(unsafe_code)]
#![allow(async_fn_in_trait)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::catalog::{
    self, Catalog, CatalogError, CatalogStore, Closed, InheritedStamp, NewResource, ResourceKey,
    ResourceMeta, ResourceUpdate,
};
use crate::error::{EngineError, Operation, StorageFault};
use crate::journal::Journal;
use crate::positions::{Position, PositionChange, PositionKey, Positions};
use crate::shard_log::{self, LogConfig, LogError, ShardLog};
use crate::storage::{IoError, Storage};
use crate::types::{HashKey, Record, ShardId};

/// A shard, engine-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ShardKey {
    pub uid: u64,
    pub shard: ShardId,
}

/// How a shard log is to be opened.
#[derive(Debug, Clone)]
pub(crate) struct OpenShard {
    pub key: ShardKey,
    pub epoch: u64,
    pub closed: bool,
    /// The parents' producers (see [`crate::dedupe`]), and whether that record is complete.
    pub inherited: Arc<[InheritedStamp]>,
    pub inherited_complete: bool,
}

impl OpenShard {
    fn of(resource: &ResourceMeta, shard: &catalog::ShardMeta) -> OpenShard {
        OpenShard {
            key: ShardKey { uid: resource.uid, shard: shard.shard_id() },
            epoch: shard.epoch,
            closed: !shard.is_open(),
            inherited: shard.inherited.clone().into(),
            inherited_complete: shard.inherited_complete,
        }
    }
}

/// Whoever owns shard logs. Opening recovers the log from disk.
pub(crate) trait ShardHosts {
    async fn open(&mut self, shard: OpenShard, now_ms: i64) -> Result<(), EngineError>;
    /// Stops writes to the shard; returns where it ended and its producers.
    async fn close(&mut self, key: ShardKey) -> Result<Closed, EngineError>;
    /// Deletes the shard's files.
    async fn remove(&mut self, key: ShardKey) -> Result<(), EngineError>;
    /// Undoes a close whose resharding did not commit.
    async fn reopen(&mut self, key: ShardKey) -> Result<(), EngineError>;
}

/// Runs catalog operations and their effects on shard logs.
pub(crate) struct Controller<S: Storage, H> {
    storage: S,
    store: CatalogStore<S>,
    hosts: H,
    /// Every log the hosts hold, and whether it is closed to writes.
    logs: BTreeMap<ShardKey, bool>,
    /// A catalog commit failed and the catalog could not be recovered yet.
    store_failed: bool,
}

fn catalog_fault(error: crate::journal::JournalError) -> EngineError {
    let path = Some(error.path().to_owned());
    EngineError::Storage(StorageFault::new(Operation::Catalog, path, error))
}

impl<S: Storage + Clone, H: ShardHosts> Controller<S, H> {
    /// Opens the catalog and the positions journal (moving the checkpoints of a catalog
    /// written by 0.1.0 into the positions, durably, before the catalog is rewritten),
    /// removes leftovers of deletions that did not finish, and opens (recovers) every shard
    /// log. Returns the positions journal for whoever serves positions.
    pub async fn start(
        storage: &S,
        hosts: H,
        now_ms: i64,
    ) -> Result<(Controller<S, H>, Journal<S, Positions>), EngineError> {
        let mut recovered = CatalogStore::recover(storage).await.map_err(catalog_fault)?;
        let mut positions = Journal::<S, Positions>::recover(storage).await.map_err(positions_fault)?;
        for legacy in recovered.state.take_legacy_checkpoints() {
            let key = PositionKey { uid: legacy.stream_uid, owner: legacy.owner, shard: legacy.shard };
            let position = Position { sequence: legacy.sequence, updated_ms: legacy.updated_ms };
            crate::journal::JournalState::apply(&mut positions.state, PositionChange::Put(key, position));
        }
        // Positions of resources that are gone (deleted while the journal was not told).
        let live: BTreeSet<u64> = recovered.state.all().map(|resource| resource.uid).collect();
        positions.state.retain_uids(&live);
        let positions = positions.start(now_ms).await.map_err(positions_fault)?;
        let store = recovered.start(now_ms).await.map_err(catalog_fault)?;
        let mut controller =
            Controller { storage: storage.clone(), store, hosts, logs: BTreeMap::new(), store_failed: false };
        controller.remove_orphans().await?;
        let shards: Vec<OpenShard> = controller
            .catalog()
            .all()
            .flat_map(|resource| resource.shards.iter().map(|shard| OpenShard::of(resource, shard)))
            .collect();
        for shard in shards {
            controller.open_log(shard, now_ms).await?;
        }
        Ok((controller, positions))
    }

    /// Removes shard directories of resources the catalog created and then deleted.
    async fn remove_orphans(&mut self) -> Result<(), EngineError> {
        let storage = self.storage.clone();
        let mut live = BTreeSet::new();
        for resource in self.catalog().all() {
            for shard in &resource.shards {
                live.insert(catalog::shard_dir(resource.uid, shard.shard_id()));
            }
        }
        storage.create_dir_all("shards").await?;
        let next_uid = self.catalog().next_uid();
        for name in storage.list("shards").await? {
            let dir = crate::storage::join("shards", &name);
            if live.contains(&dir) {
                continue;
            }
            // Only resources the catalog knows it created and deleted are garbage; a
            // directory from an id it never issued means the catalog is older than the data,
            // so it is kept for an operator to look at rather than deleted.
            let uid = name.split_once('-').and_then(|(uid, _)| uid.parse::<u64>().ok());
            match uid {
                Some(uid) if uid < next_uid => remove_dir_files(&storage, &dir).await?,
                _ => eprintln!("millrace: keeping {dir}: the catalog does not know resource id {uid:?}"),
            }
        }
        Ok(())
    }

    pub fn catalog(&self) -> &Catalog {
        self.store.state()
    }

    pub fn hosts(&self) -> &H {
        &self.hosts
    }

    pub fn hosts_mut(&mut self) -> &mut H {
        &mut self.hosts
    }

    pub fn resource(&self, key: &ResourceKey) -> Result<&ResourceMeta, EngineError> {
        Ok(self.catalog().resource(key)?)
    }

    async fn open_log(&mut self, shard: OpenShard, now_ms: i64) -> Result<(), EngineError> {
        let (key, closed) = (shard.key, shard.closed);
        self.hosts.open(shard, now_ms).await?;
        self.logs.insert(key, closed);
        Ok(())
    }

    async fn close_log(&mut self, key: ShardKey) -> Result<Closed, EngineError> {
        let closed = self.hosts.close(key).await?;
        self.logs.insert(key, true);
        Ok(closed)
    }

    async fn reopen_log(&mut self, key: ShardKey) -> Result<(), EngineError> {
        self.hosts.reopen(key).await?;
        self.logs.insert(key, false);
        Ok(())
    }

    async fn remove_log(&mut self, key: ShardKey) -> Result<(), EngineError> {
        self.logs.remove(&key);
        self.hosts.remove(key).await
    }

    /// Makes `op` durable. On failure the catalog is recovered from the disk at once and the
    /// logs follow it; the error is returned either way (the change may or may not have
    /// happened: the catalog now says which).
    async fn commit(&mut self, op: catalog::schema::CatalogOp, now_ms: i64) -> Result<(), EngineError> {
        match self.store.commit(&[op], now_ms).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.store_failed = true;
                // Best effort now; [`Controller::ready`] tries again before the next operation.
                let _ = self.recover(now_ms).await;
                Err(catalog_fault(error))
            }
        }
    }

    /// Reopens the catalog from the disk and brings the logs in line with it.
    async fn recover(&mut self, now_ms: i64) -> Result<(), EngineError> {
        self.store.reopen(now_ms).await.map_err(catalog_fault)?;
        self.store_failed = false;
        self.reconcile(now_ms).await
    }

    /// Whether a catalog commit failed and the catalog has not been recovered since: until
    /// it is, that commit may or may not have happened, and the shards it closed stay closed.
    #[cfg(test)]
    pub fn catalog_failed(&self) -> bool {
        self.store_failed
    }

    /// Before an operation: if an earlier commit failed and its recovery did too, recover
    /// now, so that the operation starts from what the disk holds.
    pub async fn ready(&mut self, now_ms: i64) -> Result<(), EngineError> {
        if self.store_failed {
            self.recover(now_ms).await?;
        }
        Ok(())
    }

    /// Brings the shard logs in line with the catalog: opens what it lists and the hosts
    /// lack, closes or reopens to match, and removes logs it does not list.
    pub async fn reconcile(&mut self, now_ms: i64) -> Result<(), EngineError> {
        let wanted: BTreeMap<ShardKey, OpenShard> = self
            .catalog()
            .all()
            .flat_map(|resource| resource.shards.iter().map(|shard| OpenShard::of(resource, shard)))
            .map(|shard| (shard.key, shard))
            .collect();
        let held: Vec<(ShardKey, bool)> = self.logs.iter().map(|(key, closed)| (*key, *closed)).collect();
        let mut outcome = Ok(());
        for (key, closed) in held {
            let step = match wanted.get(&key) {
                None => self.remove_log(key).await,
                Some(want) if want.closed && !closed => self.close_log(key).await.map(|_| ()),
                Some(want) if !want.closed && closed => self.reopen_log(key).await,
                Some(_) => Ok(()),
            };
            outcome = outcome.and(step);
        }
        for (key, shard) in wanted {
            if !self.logs.contains_key(&key) {
                outcome = outcome.and(self.open_log(shard, now_ms).await);
            }
        }
        outcome
    }

    pub async fn create(&mut self, new: NewResource, now_ms: i64) -> Result<(), EngineError> {
        self.ready(now_ms).await?;
        let op = self.catalog().prepare_create(new, now_ms)?;
        let catalog::schema::CatalogOp::Put(resource) = &op else { unreachable!("create makes a Put") };
        let shards: Vec<OpenShard> =
            resource.shards.iter().map(|shard| OpenShard::of(resource, shard)).collect();
        // Logs first: a crash before the commit leaves orphan directories, removed at start.
        for shard in shards {
            self.open_log(shard, now_ms).await?;
        }
        self.commit(op, now_ms).await
    }

    /// Deletes a resource; returns its uid (for its positions).
    pub async fn delete(
        &mut self,
        key: &ResourceKey,
        enforce_consumer_deletion: bool,
        now_ms: i64,
    ) -> Result<u64, EngineError> {
        self.ready(now_ms).await?;
        let op = self.catalog().prepare_delete(key, enforce_consumer_deletion)?;
        let resource = self.resource(key)?.clone();
        self.commit(op, now_ms).await?;
        for shard in &resource.shards {
            self.remove_log(ShardKey { uid: resource.uid, shard: shard.shard_id() }).await?;
        }
        Ok(resource.uid)
    }

    pub async fn split_shard(
        &mut self,
        key: &ResourceKey,
        parent: ShardId,
        new_start: HashKey,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.ready(now_ms).await?;
        self.catalog().check_split(key, parent, new_start)?;
        let uid = self.resource(key)?.uid;
        let parent_key = ShardKey { uid, shard: parent };
        let ending = self.close_log(parent_key).await?;
        let committed = match self.catalog().prepare_split(key, parent, new_start, ending, now_ms) {
            Ok(op) => self.commit(op, now_ms).await,
            Err(error) => Err(error.into()),
        };
        self.undo_closes_on_error(committed, &[parent_key], now_ms).await?;
        self.open_new_children(key, now_ms).await
    }

    pub async fn merge_shards(
        &mut self,
        key: &ResourceKey,
        shard: ShardId,
        adjacent: ShardId,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.ready(now_ms).await?;
        self.catalog().check_merge(key, shard, adjacent)?;
        let uid = self.resource(key)?.uid;
        let keys = [ShardKey { uid, shard }, ShardKey { uid, shard: adjacent }];
        let first = self.close_log(keys[0]).await?;
        let second = match self.close_log(keys[1]).await {
            Ok(ending) => ending,
            Err(error) => return self.undo_closes_on_error(Err(error), &keys[..1], now_ms).await,
        };
        let committed = match self.catalog().prepare_merge(key, shard, adjacent, [first, second], now_ms) {
            Ok(op) => self.commit(op, now_ms).await,
            Err(error) => Err(error.into()),
        };
        self.undo_closes_on_error(committed, &keys, now_ms).await?;
        self.open_new_children(key, now_ms).await
    }

    pub async fn update_shard_count(
        &mut self,
        key: &ResourceKey,
        target: u32,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.ready(now_ms).await?;
        self.catalog().check_rescale(key, target)?;
        let resource = self.resource(key)?.clone();
        let mut endings = BTreeMap::new();
        let mut closed = Vec::new();
        for shard in resource.open_shards() {
            let shard_key = ShardKey { uid: resource.uid, shard: shard.shard_id() };
            match self.close_log(shard_key).await {
                Ok(ending) => {
                    endings.insert(shard.id, ending);
                    closed.push(shard_key);
                }
                Err(error) => return self.undo_closes_on_error(Err(error), &closed, now_ms).await,
            }
        }
        let committed = match self.catalog().prepare_rescale(key, target, &endings, now_ms) {
            Ok(op) => self.commit(op, now_ms).await,
            Err(error) => Err(error.into()),
        };
        self.undo_closes_on_error(committed, &closed, now_ms).await?;
        self.open_new_children(key, now_ms).await
    }

    /// On error, reopens the shards a failed resharding had closed if the catalog still has
    /// them open (after a failed commit, once recovered, it says whether the change
    /// happened). While the catalog could not be recovered the change may still show up, so
    /// they stay closed (writes are refused, never taken past an ending the catalog may yet
    /// record); the recovery before the next operation reopens them or opens the children.
    async fn undo_closes_on_error(
        &mut self,
        result: Result<(), EngineError>,
        closed: &[ShardKey],
        now_ms: i64,
    ) -> Result<(), EngineError> {
        if result.is_err() && !self.store_failed {
            let still_open: Vec<ShardKey> = closed
                .iter()
                .copied()
                .filter(|key| {
                    self.catalog()
                        .by_uid(key.uid)
                        .and_then(|resource| resource.shard(key.shard))
                        .is_some_and(|shard| shard.is_open())
                })
                .collect();
            for key in still_open {
                let _ = self.reopen_log(key).await;
            }
            // A commit that did happen despite its error made children: open them.
            let _ = self.reconcile(now_ms).await;
        }
        result
    }

    /// Opens the logs of open children that have none yet.
    async fn open_new_children(&mut self, key: &ResourceKey, now_ms: i64) -> Result<(), EngineError> {
        let resource = self.resource(key)?.clone();
        for shard in resource.open_shards().filter(|shard| !shard.parents.is_empty()) {
            let open = OpenShard::of(&resource, shard);
            if !self.logs.contains_key(&open.key) {
                self.open_log(open, now_ms).await?;
            }
        }
        Ok(())
    }

    /// A simple update (retention, tags, consumers, mode, record size, encryption, settings).
    pub async fn update(
        &mut self,
        key: &ResourceKey,
        update: ResourceUpdate,
        expected_version: Option<u64>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.ready(now_ms).await?;
        let op = self.catalog().prepare_update(key, update, expected_version)?;
        self.commit(op, now_ms).await
    }
}

fn positions_fault(error: crate::journal::JournalError) -> EngineError {
    let path = Some(error.path().to_owned());
    EngineError::Storage(StorageFault::new(Operation::Positions, path, error))
}

/// A checkpoint, validated against the resource: the shard exists, the owner is named, the
/// sequence number is one of the shard's.
pub(crate) fn prepare_checkpoint(
    resource: &ResourceMeta,
    owner: &str,
    shard: ShardId,
    sequence: crate::types::SequenceNumber,
    now_ms: i64,
) -> Result<PositionChange, EngineError> {
    let meta = resource
        .shard(shard)
        .ok_or_else(|| CatalogError::ShardNotFound { name: resource.name.clone(), shard })?;
    if owner.is_empty() || owner.len() > 128 {
        return Err(CatalogError::Invalid(catalog::Invalid::CheckpointOwner).into());
    }
    if !meta.owns(sequence) {
        return Err(EngineError::ForeignSequence {
            name: resource.name.clone(),
            shard,
            sequence: sequence.0,
        });
    }
    let key = PositionKey { uid: resource.uid, owner: owner.to_owned(), shard: shard.get() };
    Ok(PositionChange::Put(key, Position { sequence: sequence.0, updated_ms: now_ms }))
}

/// Removes every file of a directory, then the directory.
pub(crate) async fn remove_dir_files<S: Storage>(storage: &S, dir: &str) -> Result<(), IoError> {
    let files: Vec<String> =
        storage.list(dir).await?.iter().map(|name| crate::storage::join(dir, name)).collect();
    shard_log::remove_files(storage, dir, shard_log::Expired(files)).await?;
    match storage.remove_dir(dir).await {
        Err(error) if !error.is_not_found() => Err(error),
        _ => Ok(()),
    }
}

/// Records bound for one shard, each with its index in the caller's batch.
pub(crate) type RoutedGroup = (ShardId, Vec<(usize, Record)>);

/// Checks a batch against the resource's limits and groups it by the open shard that owns
/// each record's hash key. Returns, per shard, the records with their index in the input.
pub(crate) fn route_records(
    resource: &ResourceMeta,
    records: Vec<Record>,
) -> Result<Vec<RoutedGroup>, EngineError> {
    let limit_bytes = resource.max_record_bytes as usize;
    let mut open: Vec<(u128, u128, ShardId)> =
        resource.open_shards().map(|shard| (shard.hash_start, shard.hash_end, shard.shard_id())).collect();
    open.sort_unstable();
    let mut groups: BTreeMap<ShardId, Vec<(usize, Record)>> = BTreeMap::new();
    for (index, record) in records.into_iter().enumerate() {
        // Kinesis counts the partition key towards the record size.
        let size_bytes = record.data.len() + record.partition_key.as_str().len();
        if size_bytes > limit_bytes {
            return Err(EngineError::RecordTooLarge { size_bytes, limit_bytes });
        }
        let key = record.hash_key();
        let at = open.partition_point(|(start, _, _)| *start <= key.0);
        let owner = at.checked_sub(1).map(|at| open[at]).filter(|(_, end, _)| key.0 <= *end);
        let Some((_, _, shard)) = owner else {
            // Open shards tile the key space; a gap is a broken shard map, not a bad request.
            return Err(EngineError::NoOwningShard { name: resource.name.clone(), hash_key: key });
        };
        groups.entry(shard).or_default().push((index, record));
    }
    Ok(groups.into_iter().collect())
}

/// Opens a shard's log: a closed shard only recovers; an open one also gets a fresh
/// segment that durably records its next sequence number (see
/// [`ShardLog::open_for_writes`]). A child gets its parents' producers.
pub(crate) async fn open_shard_log<S: Storage + Clone>(
    storage: &S,
    shard: &OpenShard,
    config: LogConfig,
    now_ms: i64,
) -> Result<ShardLog<S>, LogError> {
    let dir = catalog::shard_dir(shard.key.uid, shard.key.shard);
    let mut log = if shard.closed {
        let mut log = ShardLog::open(storage, &dir, shard.epoch, config).await?;
        log.close();
        log
    } else {
        ShardLog::open_for_writes(storage, &dir, shard.epoch, config, now_ms).await?
    };
    log.inherit(&shard.inherited, shard.inherited_complete);
    Ok(log)
}

/// Every shard log in one place, owned by the caller's task: the simulation and
/// single-threaded tests.
#[cfg(test)]
pub(crate) struct LocalHosts<S: Storage> {
    storage: S,
    config: LogConfig,
    keyring: Option<Arc<crate::crypto::Keyring>>,
    pub logs: std::collections::HashMap<ShardKey, ShardLog<S>>,
}

#[cfg(test)]
impl<S: Storage + Clone> LocalHosts<S> {
    pub fn new(storage: &S, config: LogConfig) -> LocalHosts<S> {
        LocalHosts { storage: storage.clone(), config, keyring: None, logs: Default::default() }
    }

    /// Every log opened from now on seals and opens encrypted frames with this keyring.
    pub fn with_keyring(mut self, keyring: Option<Arc<crate::crypto::Keyring>>) -> LocalHosts<S> {
        self.keyring = keyring;
        self
    }
}

#[cfg(test)]
impl<S: Storage + Clone> ShardHosts for LocalHosts<S> {
    async fn open(&mut self, shard: OpenShard, now_ms: i64) -> Result<(), EngineError> {
        if self.logs.contains_key(&shard.key) {
            return Ok(());
        }
        let mut log = open_shard_log(&self.storage, &shard, self.config, now_ms)
            .await
            .map_err(|error| EngineError::log(Operation::Open, error))?;
        log.set_keyring(self.keyring.clone());
        self.logs.insert(shard.key, log);
        Ok(())
    }

    async fn close(&mut self, key: ShardKey) -> Result<Closed, EngineError> {
        let log = self.logs.get_mut(&key).expect("open shards have logs");
        log.close();
        if let Err(error) = log.confirm_all().await {
            log.reopen_writes();
            return Err(EngineError::log(Operation::Close, error));
        }
        Ok(log.closed_state(key.shard.get()))
    }

    async fn reopen(&mut self, key: ShardKey) -> Result<(), EngineError> {
        if let Some(log) = self.logs.get_mut(&key) {
            log.reopen_writes();
        }
        Ok(())
    }

    async fn remove(&mut self, key: ShardKey) -> Result<(), EngineError> {
        self.logs.remove(&key);
        let dir = catalog::shard_dir(key.uid, key.shard);
        Ok(remove_dir_files(&self.storage, &dir).await?)
    }
}
