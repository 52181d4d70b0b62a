//! The stream catalog: streams, their shards and lineage, retention, tags, registered
//! consumers and checkpoints. [`Catalog`] is the pure state machine (every change is a
//! [`CatalogOp`] validated against the state); [`CatalogStore`] makes it durable as a log of
//! rkyv-archived ops in the same crash-safe segment format as shard data, each catalog
//! segment starting with a full snapshot. Compaction writes a new segment and deletes the
//! old one only once the new one is durable.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::format::{self, FrameMeta};
use crate::segment::{self, Segment};
use crate::storage::{IoError, Storage};
use crate::types::{HashKey, HashKeyRange, SequenceNumber, ShardId, StreamName};

pub const RETENTION_HOURS_MIN: u32 = 24;
pub const RETENTION_HOURS_MAX: u32 = 8760;
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 1 << 20;
pub const MAX_RECORD_BYTES_LIMIT: u32 = 10 << 20;
pub const TAGS_PER_STREAM_MAX: usize = 50;
pub const CONSUMERS_PER_STREAM_MAX: usize = 20;
pub const SHARDS_PER_STREAM_MAX: u32 = 10_000;
/// On-demand streams start with this many shards, as Kinesis' on-demand mode does.
pub const ON_DEMAND_SHARDS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShardMeta {
    pub id: u32,
    pub hash_start: u128,
    pub hash_end: u128,
    /// Shards this one was made from: one for a split, two for a merge, the overlapping
    /// ones for a uniform re-scale. Kinesis shows the first two as Parent/AdjacentParent.
    pub parents: Vec<u32>,
    /// High 64 bits of every sequence number of this shard; above every parent's.
    pub epoch: u64,
    /// Last sequence number, once the shard is closed.
    pub ending_sequence: Option<u128>,
    pub created_ms: i64,
}

impl ShardMeta {
    pub fn shard_id(&self) -> ShardId {
        ShardId(self.id)
    }

    pub fn range(&self) -> HashKeyRange {
        HashKeyRange::new(self.hash_start, self.hash_end).expect("stored ranges are valid")
    }

    pub fn starting_sequence(&self) -> u128 {
        SequenceNumber::new(self.epoch, 0).0
    }

    pub fn is_open(&self) -> bool {
        self.ending_sequence.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ConsumerMeta {
    pub name: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StreamMeta {
    /// Unique for the life of the data directory; names can be reused after deletion.
    pub uid: u64,
    pub name: String,
    pub created_ms: i64,
    pub mode: StreamMode,
    pub retention_hours: u32,
    pub max_record_bytes: u32,
    pub shards: Vec<ShardMeta>,
    pub next_shard_id: u32,
    pub next_epoch: u64,
    pub tags: Vec<(String, String)>,
    pub consumers: Vec<ConsumerMeta>,
    /// Key id used to encrypt new data at rest, if encryption is on.
    pub encryption_key_id: Option<String>,
}

impl StreamMeta {
    pub fn shard(&self, id: ShardId) -> Option<&ShardMeta> {
        self.shards.iter().find(|shard| shard.id == id.0)
    }

    pub fn open_shards(&self) -> impl Iterator<Item = &ShardMeta> {
        self.shards.iter().filter(|shard| shard.is_open())
    }

    /// Where on disk this stream's shard lives.
    pub fn shard_dir(&self, id: ShardId) -> String {
        shard_dir(self.uid, id)
    }

    /// Shards whose parents include `id`.
    pub fn children(&self, id: ShardId) -> Vec<ShardId> {
        self.shards.iter().filter(|shard| shard.parents.contains(&id.0)).map(ShardMeta::shard_id).collect()
    }
}

pub fn shard_dir(stream_uid: u64, id: ShardId) -> String {
    format!("shards/{stream_uid}-{}", id.0)
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Checkpoint {
    pub stream_uid: u64,
    /// The consumer or application that owns the checkpoint.
    pub owner: String,
    pub shard: u32,
    pub sequence: u128,
    pub updated_ms: i64,
}

/// One durable change.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum CatalogOp {
    PutStream(StreamMeta),
    DropStream { uid: u64 },
    PutCheckpoint(Checkpoint),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Snapshot {
    pub next_uid: u64,
    pub streams: Vec<StreamMeta>,
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum CatalogRecord {
    Snapshot(Snapshot),
    Op(CatalogOp),
}

/// Why a catalog operation was refused. Each maps onto one Kinesis error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
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
    #[error("stream {stream} has registered consumers")]
    HasConsumers { stream: String },
    #[error("{what}")]
    InvalidArgument { what: String },
    #[error("{what}")]
    LimitExceeded { what: String },
}

fn invalid(what: impl Into<String>) -> CatalogError {
    CatalogError::InvalidArgument { what: what.into() }
}

/// The catalog's state. Every mutation is prepared as a [`CatalogOp`] (validated, not yet
/// applied) so that the store can make it durable before it becomes visible.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    next_uid: u64,
    streams: BTreeMap<String, StreamMeta>,
    checkpoints: BTreeMap<(u64, String, u32), Checkpoint>,
}

impl Catalog {
    pub fn from_snapshot(snapshot: Snapshot) -> Catalog {
        let mut catalog = Catalog { next_uid: snapshot.next_uid, ..Catalog::default() };
        for stream in snapshot.streams {
            catalog.apply(CatalogOp::PutStream(stream));
        }
        for checkpoint in snapshot.checkpoints {
            catalog.apply(CatalogOp::PutCheckpoint(checkpoint));
        }
        catalog
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            next_uid: self.next_uid,
            streams: self.streams.values().cloned().collect(),
            checkpoints: self.checkpoints.values().cloned().collect(),
        }
    }

    pub fn apply(&mut self, op: CatalogOp) {
        match op {
            CatalogOp::PutStream(stream) => {
                self.next_uid = self.next_uid.max(stream.uid + 1);
                self.streams.insert(stream.name.clone(), stream);
            }
            CatalogOp::DropStream { uid } => {
                self.streams.retain(|_, stream| stream.uid != uid);
                self.checkpoints.retain(|(stream_uid, _, _), _| *stream_uid != uid);
            }
            CatalogOp::PutCheckpoint(checkpoint) => {
                let key = (checkpoint.stream_uid, checkpoint.owner.clone(), checkpoint.shard);
                self.checkpoints.insert(key, checkpoint);
            }
        }
    }

    /// The stream id the next created stream gets; every id below was issued.
    pub fn next_uid(&self) -> u64 {
        self.next_uid
    }

    pub fn stream(&self, name: &StreamName) -> Result<&StreamMeta, CatalogError> {
        self.streams.get(name.as_str()).ok_or_else(|| CatalogError::StreamNotFound { name: name.to_string() })
    }

    pub fn streams(&self) -> impl Iterator<Item = &StreamMeta> {
        self.streams.values()
    }

    pub fn checkpoint(&self, stream_uid: u64, owner: &str, shard: ShardId) -> Option<&Checkpoint> {
        self.checkpoints.get(&(stream_uid, owner.to_owned(), shard.0))
    }

    fn open_shard(&self, name: &StreamName, id: ShardId) -> Result<(&StreamMeta, &ShardMeta), CatalogError> {
        let stream = self.stream(name)?;
        let shard = stream
            .shard(id)
            .ok_or_else(|| CatalogError::ShardNotFound { stream: name.to_string(), shard: id })?;
        if !shard.is_open() {
            return Err(CatalogError::ShardClosed { stream: name.to_string(), shard: id });
        }
        Ok((stream, shard))
    }

    pub fn prepare_create(
        &self,
        name: &StreamName,
        shard_count: u32,
        mode: StreamMode,
        now_ms: i64,
    ) -> Result<CatalogOp, CatalogError> {
        if self.streams.contains_key(name.as_str()) {
            return Err(CatalogError::StreamExists { name: name.to_string() });
        }
        if shard_count == 0 {
            return Err(invalid("ShardCount must be at least 1"));
        }
        if shard_count > SHARDS_PER_STREAM_MAX {
            return Err(CatalogError::LimitExceeded {
                what: format!("ShardCount {shard_count} is above the limit of {SHARDS_PER_STREAM_MAX}"),
            });
        }
        let shards = HashKeyRange::uniform(shard_count)
            .into_iter()
            .enumerate()
            .map(|(index, range)| ShardMeta {
                id: index as u32,
                hash_start: range.start(),
                hash_end: range.end(),
                parents: Vec::new(),
                epoch: 1 + index as u64,
                ending_sequence: None,
                created_ms: now_ms,
            })
            .collect();
        Ok(CatalogOp::PutStream(StreamMeta {
            uid: self.next_uid,
            name: name.to_string(),
            created_ms: now_ms,
            mode,
            retention_hours: RETENTION_HOURS_MIN,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            shards,
            next_shard_id: shard_count,
            next_epoch: 1 + u64::from(shard_count),
            tags: Vec::new(),
            consumers: Vec::new(),
            encryption_key_id: None,
        }))
    }

    pub fn prepare_delete(
        &self,
        name: &StreamName,
        enforce_consumer_deletion: bool,
    ) -> Result<CatalogOp, CatalogError> {
        let stream = self.stream(name)?;
        if !enforce_consumer_deletion && !stream.consumers.is_empty() {
            return Err(CatalogError::HasConsumers { stream: name.to_string() });
        }
        Ok(CatalogOp::DropStream { uid: stream.uid })
    }

    /// Checks a split before the parent is closed.
    pub fn check_split(
        &self,
        name: &StreamName,
        parent: ShardId,
        new_start: HashKey,
    ) -> Result<(), CatalogError> {
        let (stream, shard) = self.open_shard(name, parent)?;
        if shard.range().split_at(new_start).is_none() {
            return Err(invalid(format!(
                "NewStartingHashKey {new_start} is not inside shard {parent}'s range {}..{} (exclusive of its start)",
                shard.hash_start, shard.hash_end
            )));
        }
        self.check_shard_room(stream, 1)
    }

    fn check_shard_room(&self, stream: &StreamMeta, extra: u32) -> Result<(), CatalogError> {
        let open = stream.open_shards().count() as u32;
        if open + extra > SHARDS_PER_STREAM_MAX {
            return Err(CatalogError::LimitExceeded {
                what: format!(
                    "stream {} would have more than {SHARDS_PER_STREAM_MAX} open shards",
                    stream.name
                ),
            });
        }
        Ok(())
    }

    /// The split, once the parent's log is closed at `ending_sequence`.
    pub fn prepare_split(
        &self,
        name: &StreamName,
        parent: ShardId,
        new_start: HashKey,
        ending_sequence: u128,
        now_ms: i64,
    ) -> Result<CatalogOp, CatalogError> {
        self.check_split(name, parent, new_start)?;
        let mut stream = self.stream(name)?.clone();
        let shard = stream.shards.iter_mut().find(|shard| shard.id == parent.0).expect("checked");
        shard.ending_sequence = Some(ending_sequence);
        let (left, right) = shard.range().split_at(new_start).expect("checked");
        for range in [left, right] {
            add_child(&mut stream, range, vec![parent.0], now_ms);
        }
        Ok(CatalogOp::PutStream(stream))
    }

    pub fn check_merge(
        &self,
        name: &StreamName,
        shard: ShardId,
        adjacent: ShardId,
    ) -> Result<HashKeyRange, CatalogError> {
        let (_, first) = self.open_shard(name, shard)?;
        let (_, second) = self.open_shard(name, adjacent)?;
        first.range().merge(&second.range()).ok_or_else(|| {
            invalid(format!("shards {shard} and {adjacent} are not adjacent in the hash key space"))
        })
    }

    /// The merge, once both parents' logs are closed.
    pub fn prepare_merge(
        &self,
        name: &StreamName,
        shard: ShardId,
        adjacent: ShardId,
        endings: [u128; 2],
        now_ms: i64,
    ) -> Result<CatalogOp, CatalogError> {
        let range = self.check_merge(name, shard, adjacent)?;
        let mut stream = self.stream(name)?.clone();
        for (id, ending) in [shard, adjacent].into_iter().zip(endings) {
            let parent = stream.shards.iter_mut().find(|meta| meta.id == id.0).expect("checked");
            parent.ending_sequence = Some(ending);
        }
        add_child(&mut stream, range, vec![shard.0, adjacent.0], now_ms);
        Ok(CatalogOp::PutStream(stream))
    }

    /// Checks a uniform re-scale (Kinesis allows half to double the open shard count).
    pub fn check_rescale(&self, name: &StreamName, target: u32) -> Result<(), CatalogError> {
        let stream = self.stream(name)?;
        let open = stream.open_shards().count() as u32;
        if target == 0 || target > SHARDS_PER_STREAM_MAX {
            return Err(invalid(format!("TargetShardCount {target} must be 1..={SHARDS_PER_STREAM_MAX}")));
        }
        if target > open * 2 || target < open.div_ceil(2) {
            return Err(invalid(format!(
                "TargetShardCount {target} must be between half ({}) and double ({}) of the open shard count {open}",
                open.div_ceil(2),
                open * 2
            )));
        }
        Ok(())
    }

    /// The re-scale, once every open shard's log is closed (`endings` by shard id): every
    /// open shard closes and `target` children with uniform ranges open, each naming the
    /// parents its range overlaps.
    pub fn prepare_rescale(
        &self,
        name: &StreamName,
        target: u32,
        endings: &BTreeMap<u32, u128>,
        now_ms: i64,
    ) -> Result<CatalogOp, CatalogError> {
        self.check_rescale(name, target)?;
        let mut stream = self.stream(name)?.clone();
        let parents: Vec<(u32, HashKeyRange)> =
            stream.open_shards().map(|shard| (shard.id, shard.range())).collect();
        for shard in stream.shards.iter_mut().filter(|shard| shard.is_open()) {
            shard.ending_sequence = Some(*endings.get(&shard.id).expect("every open shard closed"));
        }
        for range in HashKeyRange::uniform(target) {
            let overlapping = parents
                .iter()
                .filter(|(_, parent)| parent.start() <= range.end() && range.start() <= parent.end())
                .map(|(id, _)| *id)
                .collect();
            add_child(&mut stream, range, overlapping, now_ms);
        }
        Ok(CatalogOp::PutStream(stream))
    }

    /// Applies `change` to a copy of a stream, for the simple updates (retention, tags,
    /// consumers, mode, record size, encryption).
    pub fn prepare_update(
        &self,
        name: &StreamName,
        change: impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError>,
    ) -> Result<CatalogOp, CatalogError> {
        let mut stream = self.stream(name)?.clone();
        change(&mut stream)?;
        Ok(CatalogOp::PutStream(stream))
    }

    pub fn prepare_checkpoint(
        &self,
        name: &StreamName,
        owner: &str,
        shard: ShardId,
        sequence: SequenceNumber,
        now_ms: i64,
    ) -> Result<CatalogOp, CatalogError> {
        let stream = self.stream(name)?;
        let meta = stream
            .shard(shard)
            .ok_or_else(|| CatalogError::ShardNotFound { stream: name.to_string(), shard })?;
        if owner.is_empty() || owner.len() > 128 {
            return Err(invalid("checkpoint owner must be 1-128 bytes"));
        }
        if sequence.epoch() != meta.epoch {
            return Err(invalid(format!("sequence number {sequence} does not belong to shard {shard}")));
        }
        Ok(CatalogOp::PutCheckpoint(Checkpoint {
            stream_uid: stream.uid,
            owner: owner.to_owned(),
            shard: shard.0,
            sequence: sequence.0,
            updated_ms: now_ms,
        }))
    }
}

fn add_child(stream: &mut StreamMeta, range: HashKeyRange, parents: Vec<u32>, now_ms: i64) {
    let id = stream.next_shard_id;
    stream.next_shard_id += 1;
    let epoch = stream.next_epoch;
    stream.next_epoch += 1;
    stream.shards.push(ShardMeta {
        id,
        hash_start: range.start(),
        hash_end: range.end(),
        parents,
        epoch,
        ending_sequence: None,
        created_ms: now_ms,
    });
}

/// Simple stream updates with Kinesis' validation.
pub mod updates {
    use super::*;

    pub fn retention(hours: u32) -> impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> {
        move |stream| {
            if !(RETENTION_HOURS_MIN..=RETENTION_HOURS_MAX).contains(&hours) {
                return Err(invalid(format!(
                    "retention period {hours} hours must be {RETENTION_HOURS_MIN}..={RETENTION_HOURS_MAX}"
                )));
            }
            stream.retention_hours = hours;
            Ok(())
        }
    }

    pub fn add_tags(tags: Vec<(String, String)>) -> impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> {
        move |stream| {
            for (key, value) in tags {
                if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
                    return Err(invalid(format!(
                        "tag {key:?} must have a 1-128 character key and a value of at most 256"
                    )));
                }
                match stream.tags.iter_mut().find(|(existing, _)| *existing == key) {
                    Some(slot) => slot.1 = value,
                    None => stream.tags.push((key, value)),
                }
            }
            if stream.tags.len() > TAGS_PER_STREAM_MAX {
                return Err(CatalogError::LimitExceeded {
                    what: format!("a stream can have at most {TAGS_PER_STREAM_MAX} tags"),
                });
            }
            stream.tags.sort();
            Ok(())
        }
    }

    pub fn remove_tags(keys: Vec<String>) -> impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> {
        move |stream| {
            stream.tags.retain(|(key, _)| !keys.contains(key));
            Ok(())
        }
    }

    pub fn register_consumer(
        name: String,
        now_ms: i64,
    ) -> impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> {
        move |stream| {
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
            if name.is_empty() || name.len() > 128 || !name.chars().all(valid) {
                return Err(invalid(format!(
                    "consumer name {name:?} must be 1-128 characters of [a-zA-Z0-9_.-]"
                )));
            }
            if stream.consumers.iter().any(|consumer| consumer.name == name) {
                return Err(CatalogError::ConsumerExists { stream: stream.name.clone(), consumer: name });
            }
            if stream.consumers.len() >= CONSUMERS_PER_STREAM_MAX {
                return Err(CatalogError::LimitExceeded {
                    what: format!("a stream can have at most {CONSUMERS_PER_STREAM_MAX} consumers"),
                });
            }
            stream.consumers.push(ConsumerMeta { name, created_ms: now_ms });
            Ok(())
        }
    }

    pub fn deregister_consumer(name: String) -> impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> {
        move |stream| {
            let before = stream.consumers.len();
            stream.consumers.retain(|consumer| consumer.name != name);
            if stream.consumers.len() == before {
                return Err(CatalogError::ConsumerNotFound { stream: stream.name.clone(), consumer: name });
            }
            Ok(())
        }
    }

    pub fn max_record_bytes(bytes: u32) -> impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> {
        move |stream| {
            if !(1024..=MAX_RECORD_BYTES_LIMIT).contains(&bytes) {
                return Err(invalid(format!(
                    "MaxRecordSizeInKiB must be 1..={} KiB",
                    MAX_RECORD_BYTES_LIMIT >> 10
                )));
            }
            stream.max_record_bytes = bytes;
            Ok(())
        }
    }

    pub fn mode(mode: StreamMode) -> impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> {
        move |stream| {
            stream.mode = mode;
            Ok(())
        }
    }

    pub fn encryption(key_id: Option<String>) -> impl FnOnce(&mut StreamMeta) -> Result<(), CatalogError> {
        move |stream| {
            stream.encryption_key_id = key_id;
            Ok(())
        }
    }
}

/// Errors of the durable catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("catalog segment {path} is damaged: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("the catalog failed to persist earlier and must be reopened: {cause}")]
    Poisoned { cause: String },
}

const CATALOG_DIR: &str = "catalog";
/// Compact once the active catalog segment passes this size.
const COMPACT_BYTES: u64 = 1 << 20;

/// The durable catalog.
pub struct CatalogStore<S: Storage> {
    storage: S,
    catalog: Catalog,
    active: Segment<S::File>,
    next_op: u128,
    poisoned: Option<String>,
    /// Size of the snapshot that starts the active segment.
    snapshot_bytes: u64,
}

impl<S: Storage> CatalogStore<S> {
    /// Opens the catalog, or creates an empty one.
    pub async fn open(storage: &S, now_ms: i64) -> Result<CatalogStore<S>, StoreError>
    where
        S: Clone,
    {
        storage.create_dir_all(CATALOG_DIR).await?;
        let mut ids: Vec<u64> = storage
            .list(CATALOG_DIR)
            .await?
            .iter()
            .filter_map(|name| segment::parse_segment_file_name(name))
            .collect();
        ids.sort_unstable();
        // The newest segment that starts with a valid snapshot wins; newer ones are leftovers
        // of a compaction that did not finish, older ones of one that did.
        let mut found = None;
        let mut any_frames = false;
        for &id in ids.iter().rev() {
            if let Some((segment, _)) = segment::recover(storage, CATALOG_DIR, id).await? {
                any_frames |= !segment.is_empty();
                if let Some((catalog, next_op)) = replay(&segment).await? {
                    found = Some((id, catalog, next_op));
                    let _ = next_op;
                    break;
                }
            }
        }
        if found.is_none() && any_frames {
            // Something was committed, yet nothing replays: starting empty would make every
            // stream's data look like garbage. Refuse, and leave the files for an operator.
            return Err(StoreError::Corrupt {
                path: CATALOG_DIR.to_owned(),
                reason: "catalog segments hold frames but none starts with a valid snapshot".to_owned(),
            });
        }
        let catalog = found.map(|(_, catalog, _)| catalog).unwrap_or_default();
        let next_id = ids.last().map_or(1, |last| last + 1);
        let stale = ids;
        // Start a fresh segment with a snapshot: recovered segments are sealed.
        let (active, next_op) = write_snapshot(storage, next_id, &catalog, now_ms).await?;
        for id in stale {
            let path = crate::storage::join(CATALOG_DIR, &segment::segment_file_name(id));
            storage.remove(&path).await?;
        }
        storage.sync_dir(CATALOG_DIR).await?;
        let snapshot_bytes = active.len();
        Ok(CatalogStore {
            storage: storage.clone(),
            catalog,
            active,
            next_op,
            poisoned: None,
            snapshot_bytes,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Makes `op` durable, then applies it.
    pub async fn commit(&mut self, op: CatalogOp, now_ms: i64) -> Result<(), StoreError> {
        if let Some(cause) = &self.poisoned {
            return Err(StoreError::Poisoned { cause: cause.clone() });
        }
        let result = self.commit_inner(op, now_ms).await;
        if let Err(error) = &result {
            self.poisoned = Some(error.to_string());
        }
        result
    }

    async fn commit_inner(&mut self, op: CatalogOp, now_ms: i64) -> Result<(), StoreError> {
        let record = CatalogRecord::Op(op.clone());
        let (frame, meta) = encode_record(&record, self.next_op, now_ms);
        self.active.commit(&frame, &[meta]).await?;
        self.next_op += 1;
        self.catalog.apply(op);
        // The op is durable and applied: from here on a failure does not undo it. Compaction
        // waits until the log is well past the size of a snapshot, so that a large catalog
        // does not compact on every commit.
        if self.active.len() > COMPACT_BYTES.max(4 * self.snapshot_bytes) {
            if let Err(error) = self.compact(now_ms).await {
                self.poisoned = Some(format!("compaction failed: {error}"));
            }
        }
        Ok(())
    }

    async fn compact(&mut self, now_ms: i64) -> Result<(), StoreError> {
        let id = self.active.id + 1;
        let (active, next_op) = write_snapshot(&self.storage, id, &self.catalog, now_ms).await?;
        self.snapshot_bytes = active.len();
        let old = std::mem::replace(&mut self.active, active);
        self.next_op = next_op;
        self.storage.remove(old.path()).await?;
        self.storage.sync_dir(CATALOG_DIR).await?;
        Ok(())
    }
}

fn encode_record(record: &CatalogRecord, sequence: u128, now_ms: i64) -> (Vec<u8>, FrameMeta) {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(record).expect("serialising to memory cannot fail");
    let meta = FrameMeta {
        base_sequence: sequence,
        record_count: 1,
        first_arrival_ms: now_ms,
        last_arrival_ms: now_ms,
    };
    let mut frame = Vec::new();
    format::encode_frame(&mut frame, meta, &body);
    (frame, meta)
}

async fn write_snapshot<S: Storage>(
    storage: &S,
    id: u64,
    catalog: &Catalog,
    now_ms: i64,
) -> Result<(Segment<S::File>, u128), StoreError> {
    let mut segment = Segment::create(storage, CATALOG_DIR, id, 0, now_ms, 0).await?;
    let (frame, meta) = encode_record(&CatalogRecord::Snapshot(catalog.snapshot()), 0, now_ms);
    segment.commit(&frame, &[meta]).await?;
    Ok((segment, 1))
}

/// Replays a catalog segment: a snapshot, then ops. `None` if it does not start with a
/// valid snapshot.
async fn replay<F: crate::storage::StorageFile>(
    segment: &Segment<F>,
) -> Result<Option<(Catalog, u128)>, StoreError> {
    let mut catalog: Option<Catalog> = None;
    let mut next_op = 0u128;
    let mut failure = None;
    let path = segment.path().to_owned();
    let result = segment
        .scan(0, |_, frame| {
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(frame.body.len());
            aligned.extend_from_slice(frame.body);
            let record = match rkyv::from_bytes::<CatalogRecord, rkyv::rancor::Error>(&aligned) {
                Ok(record) => record,
                Err(error) => {
                    failure = Some(error.to_string());
                    return Ok(false);
                }
            };
            match (record, catalog.as_mut()) {
                (CatalogRecord::Snapshot(snapshot), None) => catalog = Some(Catalog::from_snapshot(snapshot)),
                (CatalogRecord::Op(op), Some(catalog)) => catalog.apply(op),
                _ => {
                    failure = Some("records out of order".to_owned());
                    return Ok(false);
                }
            }
            next_op = frame.meta.base_sequence + 1;
            Ok(true)
        })
        .await;
    result.map_err(|error| StoreError::Corrupt { path: path.clone(), reason: error.to_string() })?;
    match (catalog, failure) {
        (Some(catalog), None) => Ok(Some((catalog, next_op))),
        (None, _) => Ok(None),
        // CRCs passed but the body did not decode: not a torn write, a real problem.
        (Some(_), Some(reason)) => Err(StoreError::Corrupt { path, reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, SimDisk};
    use futures_lite::future::block_on;

    fn name(text: &str) -> StreamName {
        text.parse().unwrap()
    }

    #[test]
    fn split_merge_rescale_keep_lineage_and_epochs() {
        let mut catalog = Catalog::default();
        let op = catalog.prepare_create(&name("s"), 2, StreamMode::Provisioned, 1).unwrap();
        catalog.apply(op);
        assert!(catalog.prepare_create(&name("s"), 1, StreamMode::Provisioned, 1).is_err());
        let stream = catalog.stream(&name("s")).unwrap().clone();
        let mid = stream.shards[0].hash_end / 2;
        assert!(catalog.check_split(&name("s"), ShardId(0), HashKey(0)).is_err());
        let op = catalog.prepare_split(&name("s"), ShardId(0), HashKey(mid), 99, 2).unwrap();
        catalog.apply(op);
        let stream = catalog.stream(&name("s")).unwrap().clone();
        assert_eq!(stream.children(ShardId(0)), vec![ShardId(2), ShardId(3)]);
        assert!(stream.shards[2].epoch > stream.shards[0].epoch);
        assert!(catalog.check_merge(&name("s"), ShardId(2), ShardId(1)).is_err(), "not adjacent");
        let op = catalog.prepare_merge(&name("s"), ShardId(3), ShardId(1), [5, 6], 3).unwrap();
        catalog.apply(op);
        let stream = catalog.stream(&name("s")).unwrap().clone();
        let open: Vec<u32> = stream.open_shards().map(|shard| shard.id).collect();
        assert_eq!(open, vec![2, 4]);
        assert!(catalog.check_rescale(&name("s"), 5).is_err());
        let endings = [(2, 1), (4, 1)].into_iter().collect();
        let op = catalog.prepare_rescale(&name("s"), 3, &endings, 4).unwrap();
        catalog.apply(op);
        let stream = catalog.stream(&name("s")).unwrap();
        let open: Vec<&ShardMeta> = stream.open_shards().collect();
        assert_eq!(open.len(), 3);
        // Shard 2 covers the first quarter, shard 4 the rest: only the first third overlaps both.
        assert_eq!(open[0].parents, vec![2, 4]);
        assert_eq!(open[1].parents, vec![4]);
        let covered: u128 = open.iter().map(|shard| shard.hash_end - shard.hash_start).sum::<u128>() + 2;
        assert_eq!(covered, u128::MAX);
    }

    #[test]
    fn store_survives_power_cuts_and_compaction() {
        block_on(async {
            let disk = SimDisk::new(3, Faults::default());
            let mut store = CatalogStore::open(&disk, 0).await.unwrap();
            for index in 0..3000 {
                let stream_name = name(&format!("s{}", index % 7));
                let op = match store.catalog().stream(&stream_name) {
                    Ok(_) => store.catalog().prepare_update(
                        &stream_name,
                        updates::add_tags(vec![("k".into(), index.to_string())]),
                    ),
                    Err(_) => store.catalog().prepare_create(&stream_name, 3, StreamMode::OnDemand, index),
                }
                .unwrap();
                store.commit(op, index).await.unwrap();
            }
            let expected = store.catalog().snapshot();
            drop(store);
            disk.power_cut();
            let store = CatalogStore::open(&disk, 0).await.unwrap();
            assert_eq!(store.catalog().snapshot(), expected);
            assert!(disk.file_names().iter().filter(|name| name.starts_with("catalog/")).count() == 1);
        });
    }
}
