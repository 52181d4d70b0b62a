//! The engine's control logic, independent of threads: the [`Controller`] runs catalog
//! operations (create, delete, split, merge, re-scale, …) and applies their effects to shard
//! logs through [`ShardHosts`], in an order that is safe at any crash point:
//!
//! - split/merge/re-scale: close the parents' logs (no more writes), commit the catalog
//!   change with their ending sequence numbers, then open the children. A crash before the
//!   commit leaves the parents open, as if nothing happened.
//! - delete: commit the removal, then delete the files. A crash in between leaves orphan
//!   directories that the next start removes.
//!
//! [`LocalHosts`] keeps every shard log in the calling task (the simulation and single-core
//! tests); the runtime (`runtime`) implements `ShardHosts` with one task per shard spread over
//! cores.
#![forbid(unsafe_code)]
#![allow(async_fn_in_trait)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::catalog::{self, CatalogError, CatalogOp, CatalogStore, StoreError, StreamMeta, StreamMode};
use crate::crypto::Keyring;
use crate::shard_log::{self, LogConfig, LogError, ShardLog};
use crate::storage::{IoError, Storage};
use crate::types::{HashKey, Record, SequenceNumber, ShardId, StreamName};

/// The engine's errors, as callers see them. The network layers map each variant onto
/// their protocol's error codes. Deliberately flat (it repeats [`CatalogError`]'s variants
/// rather than wrapping it), so that each protocol maps every engine error in one table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("stream {name} not found")]
    StreamNotFound { name: String },
    #[error("stream {name} already exists")]
    StreamExists { name: String },
    #[error("shard {shard} of stream {stream} not found")]
    ShardNotFound { stream: String, shard: ShardId },
    #[error("shard {shard} of stream {stream} is closed")]
    ShardClosed { stream: String, shard: ShardId },
    #[error("consumer {consumer} of stream {stream} not found")]
    ConsumerNotFound { stream: String, consumer: String },
    #[error("consumer {consumer} of stream {stream} already exists")]
    ConsumerExists { stream: String, consumer: String },
    #[error("{what}")]
    ResourceInUse { what: String },
    #[error("{what}")]
    InvalidArgument { what: String },
    #[error("{what}")]
    LimitExceeded { what: String },
    #[error("record of {size_bytes} bytes is above the stream's limit of {limit_bytes}")]
    RecordTooLarge { size_bytes: usize, limit_bytes: usize },
    #[error("storage failure: {what}")]
    Storage { what: String },
    #[error("the engine is shutting down")]
    ShuttingDown,
}

impl From<CatalogError> for EngineError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::StreamNotFound { name } => EngineError::StreamNotFound { name },
            CatalogError::StreamExists { name } => EngineError::StreamExists { name },
            CatalogError::ShardNotFound { stream, shard } => EngineError::ShardNotFound { stream, shard },
            CatalogError::ShardClosed { stream, shard } => EngineError::ShardClosed { stream, shard },
            CatalogError::ConsumerNotFound { stream, consumer } => {
                EngineError::ConsumerNotFound { stream, consumer }
            }
            CatalogError::ConsumerExists { stream, consumer } => {
                EngineError::ConsumerExists { stream, consumer }
            }
            CatalogError::HasConsumers { stream } => EngineError::ResourceInUse {
                what: format!(
                    "stream {stream} has registered consumers; deregister them or enforce consumer deletion"
                ),
            },
            CatalogError::InvalidArgument { what } => EngineError::InvalidArgument { what },
            CatalogError::LimitExceeded { what } => EngineError::LimitExceeded { what },
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> Self {
        EngineError::Storage { what: error.to_string() }
    }
}

impl From<IoError> for EngineError {
    fn from(error: IoError) -> Self {
        EngineError::Storage { what: error.to_string() }
    }
}

impl From<LogError> for EngineError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::ForeignSequence { sequence, .. } => EngineError::InvalidArgument {
                what: format!("sequence number {sequence} does not belong to this shard"),
            },
            other => EngineError::Storage { what: other.to_string() },
        }
    }
}

/// A shard, engine-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardKey {
    pub stream_uid: u64,
    pub shard: ShardId,
}

/// Whoever owns shard logs. Opening recovers the log from disk.
pub trait ShardHosts {
    async fn open(&mut self, key: ShardKey, epoch: u64, closed: bool, now_ms: i64)
        -> Result<(), EngineError>;
    /// Stops writes to the shard; returns its ending sequence number.
    async fn close(&mut self, key: ShardKey) -> Result<u128, EngineError>;
    /// Deletes the shard's files.
    async fn remove(&mut self, key: ShardKey) -> Result<(), EngineError>;
    /// Undoes a close whose resharding failed before its catalog commit.
    async fn reopen(&mut self, key: ShardKey) -> Result<(), EngineError>;
}

/// Runs catalog operations and their effects on shard logs.
pub struct Controller<S: Storage, H> {
    storage: S,
    store: CatalogStore<S>,
    hosts: H,
}

impl<S: Storage + Clone, H: ShardHosts> Controller<S, H> {
    /// Opens the catalog, removes leftovers of deletions that did not finish, and opens
    /// (recovers) every shard log.
    pub async fn start(storage: &S, mut hosts: H, now_ms: i64) -> Result<Controller<S, H>, EngineError> {
        let store = CatalogStore::open(storage, now_ms).await?;
        let mut live = std::collections::BTreeSet::new();
        for stream in store.catalog().streams() {
            for shard in &stream.shards {
                live.insert(catalog::shard_dir(stream.uid, shard.shard_id()));
            }
        }
        storage.create_dir_all("shards").await?;
        let next_uid = store.catalog().next_uid();
        for name in storage.list("shards").await? {
            let dir = crate::storage::join("shards", &name);
            if live.contains(&dir) {
                continue;
            }
            // Only streams the catalog knows it created and deleted are garbage; a directory
            // from a stream id it never issued means the catalog is older than the data, so
            // it is kept for an operator to look at rather than deleted.
            let uid = name.split_once('-').and_then(|(uid, _)| uid.parse::<u64>().ok());
            match uid {
                Some(uid) if uid < next_uid => remove_dir_files(storage, &dir).await?,
                _ => eprintln!("millrace: keeping {dir}: the catalog does not know stream id {uid:?}"),
            }
        }
        for stream in store.catalog().streams() {
            for shard in &stream.shards {
                let key = ShardKey { stream_uid: stream.uid, shard: shard.shard_id() };
                hosts.open(key, shard.epoch, !shard.is_open(), now_ms).await?;
            }
        }
        Ok(Controller { storage: storage.clone(), store, hosts })
    }

    pub fn catalog(&self) -> &catalog::Catalog {
        self.store.catalog()
    }

    pub fn hosts(&self) -> &H {
        &self.hosts
    }

    pub fn hosts_mut(&mut self) -> &mut H {
        &mut self.hosts
    }

    pub fn stream(&self, name: &StreamName) -> Result<&StreamMeta, EngineError> {
        Ok(self.store.catalog().stream(name)?)
    }

    async fn commit(&mut self, op: CatalogOp, now_ms: i64) -> Result<(), EngineError> {
        Ok(self.store.commit(op, now_ms).await?)
    }

    pub async fn create_stream(
        &mut self,
        name: &StreamName,
        shard_count: u32,
        mode: StreamMode,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let op = self.catalog().prepare_create(name, shard_count, mode, now_ms)?;
        let CatalogOp::PutStream(stream) = &op else { unreachable!("create makes a PutStream") };
        let shards: Vec<(ShardKey, u64)> = stream
            .shards
            .iter()
            .map(|shard| (ShardKey { stream_uid: stream.uid, shard: shard.shard_id() }, shard.epoch))
            .collect();
        // Logs first: a crash before the commit leaves orphan directories, removed at start.
        for (key, epoch) in &shards {
            self.hosts.open(*key, *epoch, false, now_ms).await?;
        }
        self.commit(op, now_ms).await
    }

    pub async fn delete_stream(
        &mut self,
        name: &StreamName,
        enforce_consumer_deletion: bool,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let op = self.catalog().prepare_delete(name, enforce_consumer_deletion)?;
        let stream = self.stream(name)?.clone();
        self.commit(op, now_ms).await?;
        for shard in &stream.shards {
            self.hosts.remove(ShardKey { stream_uid: stream.uid, shard: shard.shard_id() }).await?;
        }
        Ok(())
    }

    pub async fn split_shard(
        &mut self,
        name: &StreamName,
        parent: ShardId,
        new_start: HashKey,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.catalog().check_split(name, parent, new_start)?;
        let uid = self.stream(name)?.uid;
        let parent_key = ShardKey { stream_uid: uid, shard: parent };
        let ending = self.hosts.close(parent_key).await?;
        let committed = match self.catalog().prepare_split(name, parent, new_start, ending, now_ms) {
            Ok(op) => self.commit(op, now_ms).await,
            Err(error) => Err(error.into()),
        };
        self.undo_closes_on_error(committed, &[parent_key]).await?;
        self.open_new_children(name, now_ms).await
    }

    pub async fn merge_shards(
        &mut self,
        name: &StreamName,
        shard: ShardId,
        adjacent: ShardId,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.catalog().check_merge(name, shard, adjacent)?;
        let uid = self.stream(name)?.uid;
        let keys = [ShardKey { stream_uid: uid, shard }, ShardKey { stream_uid: uid, shard: adjacent }];
        let first = self.hosts.close(keys[0]).await?;
        let second = match self.hosts.close(keys[1]).await {
            Ok(ending) => ending,
            Err(error) => return self.undo_closes_on_error(Err(error), &keys[..1]).await,
        };
        let committed = match self.catalog().prepare_merge(name, shard, adjacent, [first, second], now_ms) {
            Ok(op) => self.commit(op, now_ms).await,
            Err(error) => Err(error.into()),
        };
        self.undo_closes_on_error(committed, &keys).await?;
        self.open_new_children(name, now_ms).await
    }

    pub async fn update_shard_count(
        &mut self,
        name: &StreamName,
        target: u32,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.catalog().check_rescale(name, target)?;
        let stream = self.stream(name)?.clone();
        let mut endings = BTreeMap::new();
        let mut closed = Vec::new();
        for shard in stream.open_shards() {
            let key = ShardKey { stream_uid: stream.uid, shard: shard.shard_id() };
            match self.hosts.close(key).await {
                Ok(ending) => {
                    endings.insert(shard.id, ending);
                    closed.push(key);
                }
                Err(error) => return self.undo_closes_on_error(Err(error), &closed).await,
            }
        }
        let committed = match self.catalog().prepare_rescale(name, target, &endings, now_ms) {
            Ok(op) => self.commit(op, now_ms).await,
            Err(error) => Err(error.into()),
        };
        self.undo_closes_on_error(committed, &closed).await?;
        self.open_new_children(name, now_ms).await
    }

    /// On error, reopens the shards a failed resharding had closed: the catalog still has
    /// them open, so they must keep taking writes.
    async fn undo_closes_on_error(
        &mut self,
        result: Result<(), EngineError>,
        closed: &[ShardKey],
    ) -> Result<(), EngineError> {
        if result.is_err() {
            for key in closed {
                let _ = self.hosts.reopen(*key).await;
            }
        }
        result
    }

    /// Opens the logs of open shards created by the last commit (those with no log yet are
    /// exactly the ones whose id is at or above the lowest new id; opening is idempotent).
    async fn open_new_children(&mut self, name: &StreamName, now_ms: i64) -> Result<(), EngineError> {
        let stream = self.stream(name)?.clone();
        for shard in stream.open_shards().filter(|shard| !shard.parents.is_empty()) {
            let key = ShardKey { stream_uid: stream.uid, shard: shard.shard_id() };
            self.hosts.open(key, shard.epoch, false, now_ms).await?;
        }
        Ok(())
    }

    /// A simple update (retention, tags, consumers, mode, record size, encryption).
    pub async fn update_stream(
        &mut self,
        name: &StreamName,
        change: impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let op = self.catalog().prepare_update(name, change)?;
        self.commit(op, now_ms).await
    }

    pub async fn checkpoint(
        &mut self,
        name: &StreamName,
        owner: &str,
        shard: ShardId,
        sequence: SequenceNumber,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let op = self.catalog().prepare_checkpoint(name, owner, shard, sequence, now_ms)?;
        self.commit(op, now_ms).await
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }
}

/// Removes every file of a directory, then the directory.
pub async fn remove_dir_files<S: Storage>(storage: &S, dir: &str) -> Result<(), IoError> {
    let files: Vec<String> =
        storage.list(dir).await?.iter().map(|name| crate::storage::join(dir, name)).collect();
    shard_log::remove_files(storage, dir, shard_log::Expired(files)).await?;
    match storage.remove_dir(dir).await {
        Err(error) if !error.is_not_found() => Err(error),
        _ => Ok(()),
    }
}

/// Records bound for one shard, each with its index in the caller's batch.
pub type RoutedGroup = (ShardId, Vec<(usize, Record)>);

/// Checks a batch against the stream's limits and groups it by the open shard that owns
/// each record's hash key. Returns, per shard, the records with their index in the input.
pub fn route_records(stream: &StreamMeta, records: Vec<Record>) -> Result<Vec<RoutedGroup>, EngineError> {
    let limit_bytes = stream.max_record_bytes as usize;
    let mut open: Vec<(u128, u128, ShardId)> =
        stream.open_shards().map(|shard| (shard.hash_start, shard.hash_end, shard.shard_id())).collect();
    open.sort_unstable();
    let mut groups: BTreeMap<ShardId, Vec<(usize, Record)>> = BTreeMap::new();
    for (index, record) in records.into_iter().enumerate() {
        // Kinesis counts the partition key towards the record size.
        let size_bytes = record.data.len() + record.partition_key.as_str().len();
        if size_bytes > limit_bytes {
            return Err(EngineError::RecordTooLarge { size_bytes, limit_bytes });
        }
        let key = record.hash_key().0;
        let at = open.partition_point(|(start, _, _)| *start <= key);
        let (_, end, shard) = at.checked_sub(1).map(|at| open[at]).expect("open shards tile the key space");
        assert!(key <= end, "open shards tile the key space");
        groups.entry(shard).or_default().push((index, record));
    }
    Ok(groups.into_iter().collect())
}

/// Opens a shard's log: a closed shard only recovers; an open one also gets a fresh
/// segment that durably records its next sequence number (see
/// [`ShardLog::open_for_writes`]).
pub async fn open_shard_log<S: Storage + Clone>(
    storage: &S,
    dir: &str,
    epoch: u64,
    config: LogConfig,
    closed: bool,
    now_ms: i64,
) -> Result<ShardLog<S>, LogError> {
    if closed {
        let mut log = ShardLog::open(storage, dir, epoch, config).await?;
        log.close();
        Ok(log)
    } else {
        ShardLog::open_for_writes(storage, dir, epoch, config, now_ms).await
    }
}

/// Every shard log in one place, owned by the caller's task: the simulation and
/// single-threaded tests.
pub struct LocalHosts<S: Storage> {
    storage: S,
    config: LogConfig,
    keyring: Option<Arc<Keyring>>,
    pub logs: HashMap<ShardKey, ShardLog<S>>,
}

impl<S: Storage + Clone> LocalHosts<S> {
    pub fn new(storage: &S, config: LogConfig) -> LocalHosts<S> {
        LocalHosts { storage: storage.clone(), config, keyring: None, logs: HashMap::new() }
    }

    /// Every log opened from now on seals and opens encrypted frames with this keyring.
    pub fn with_keyring(mut self, keyring: Option<Arc<Keyring>>) -> LocalHosts<S> {
        self.keyring = keyring;
        self
    }
}

impl<S: Storage + Clone> ShardHosts for LocalHosts<S> {
    async fn open(
        &mut self,
        key: ShardKey,
        epoch: u64,
        closed: bool,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        if self.logs.contains_key(&key) {
            return Ok(());
        }
        let dir = catalog::shard_dir(key.stream_uid, key.shard);
        let mut log = open_shard_log(&self.storage, &dir, epoch, self.config, closed, now_ms).await?;
        log.set_keyring(self.keyring.clone());
        self.logs.insert(key, log);
        Ok(())
    }

    async fn close(&mut self, key: ShardKey) -> Result<u128, EngineError> {
        let log = self.logs.get_mut(&key).expect("open shards have logs");
        Ok(log.close())
    }

    async fn reopen(&mut self, key: ShardKey) -> Result<(), EngineError> {
        if let Some(log) = self.logs.get_mut(&key) {
            log.reopen_writes();
        }
        Ok(())
    }

    async fn remove(&mut self, key: ShardKey) -> Result<(), EngineError> {
        self.logs.remove(&key);
        let dir = catalog::shard_dir(key.stream_uid, key.shard);
        Ok(remove_dir_files(&self.storage, &dir).await?)
    }
}
