//! The catalog's state machine: every resource by kind and name. Every change is prepared as
//! a [`CatalogOp`] (validated against the state, not yet applied) so that the store can make
//! it durable before it becomes visible. Pure: no I/O, `now` from the caller.
//!
//! Validation here states facts in neutral words ([`CatalogError`] and its parts carry the
//! numbers); each wire protocol words them as its clients expect.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use super::schema::{
    self, CatalogOp, CatalogRecord, ConsumerMeta, Decoded, InheritedStamp, LegacyCheckpoint, ResourceKind,
    ResourceMeta, ShardMeta, Snapshot, StreamMode,
};
use crate::journal::JournalState;
use crate::types::{HashKey, HashKeyRange, ShardId};

pub const RETENTION_HOURS_MIN: u32 = 24;
pub const RETENTION_HOURS_MAX: u32 = 8760;
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 1 << 20;
pub const MAX_RECORD_BYTES_MIN: u32 = 1 << 10;
pub const MAX_RECORD_BYTES_LIMIT: u32 = 10 << 20;
pub const TAGS_PER_RESOURCE_MAX: usize = 50;
pub const CONSUMERS_PER_STREAM_MAX: usize = 20;
pub const SHARDS_PER_STREAM_MAX: u32 = 10_000;
/// On-demand streams start with this many shards, as Kinesis' on-demand mode does.
pub const ON_DEMAND_SHARDS: u32 = 4;
/// Largest settings document a resource may have.
pub const SPEC_BYTES_MAX: usize = 1 << 20;
/// Longest resource name (every service's own limit is lower).
pub const NAME_BYTES_MAX: usize = 1024;
/// Producer stamps a child inherits from its parents, at most.
pub const INHERITED_STAMPS_MAX: usize = 1024;

/// A resource's identity: its kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: ResourceKind,
    pub name: String,
}

impl ResourceKey {
    pub fn new(kind: ResourceKind, name: impl Into<String>) -> ResourceKey {
        ResourceKey { kind, name: name.into() }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// A request the state refuses, with the facts that make it wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    #[error("shard count {count} is below 1")]
    ShardCount { count: u32 },
    #[error("hash key {new_start} is not inside shard {shard}'s range {}..={} (exclusive of its start)", .range.start(), .range.end())]
    SplitOutsideRange { shard: ShardId, new_start: HashKey, range: HashKeyRange },
    #[error("shards {shard} and {adjacent} are not adjacent in the hash key space")]
    NotAdjacent { shard: ShardId, adjacent: ShardId },
    #[error("target shard count {target} is outside half to double of the open shard count {open}")]
    RescaleTarget { target: u32, open: u32 },
    #[error("retention of {hours} hours is outside {RETENTION_HOURS_MIN}..={RETENTION_HOURS_MAX}")]
    RetentionHours { hours: u32 },
    #[error("tag key {key:?} must be 1-128 characters and its value at most 256")]
    Tag { key: String },
    #[error("consumer name {name:?} must be 1-128 characters of [a-zA-Z0-9_.-]")]
    ConsumerName { name: String },
    #[error("record size limit {bytes} is outside {MAX_RECORD_BYTES_MIN}..={MAX_RECORD_BYTES_LIMIT} bytes")]
    MaxRecordBytes { bytes: u32 },
    #[error("checkpoint owner must be 1-128 bytes")]
    CheckpointOwner,
    #[error("sequence number {sequence} does not belong to shard {shard}")]
    ForeignSequence { shard: ShardId, sequence: u128 },
    #[error("version {given} is not the current version {current}")]
    Version { given: u64, current: u64 },
    #[error("resource name must be 1..={NAME_BYTES_MAX} bytes")]
    Name,
    #[error("settings of {bytes} bytes are above {SPEC_BYTES_MAX}")]
    SpecTooLarge { bytes: usize },
    #[error("{kind} {name} has no shards")]
    NoShards { kind: ResourceKind, name: String },
}

/// A limit a request would pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Limit {
    #[error("{requested} shards are above the limit of {max}")]
    Shards { requested: u32, max: u32 },
    #[error("a resource can have at most {max} tags")]
    Tags { max: usize },
    #[error("a stream can have at most {max} consumers")]
    Consumers { max: usize },
}

/// Why a catalog operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("{kind} {name} not found")]
    NotFound { kind: ResourceKind, name: String },
    #[error("{kind} {name} already exists")]
    Exists { kind: ResourceKind, name: String },
    #[error("shard {shard} of {name} not found")]
    ShardNotFound { name: String, shard: ShardId },
    #[error("shard {shard} of {name} is closed")]
    ShardClosed { name: String, shard: ShardId },
    #[error("consumer {consumer} of stream {stream} not found")]
    ConsumerNotFound { stream: String, consumer: String },
    #[error("consumer {consumer} of stream {stream} already exists")]
    ConsumerExists { stream: String, consumer: String },
    #[error("stream {stream} has registered consumers")]
    HasConsumers { stream: String },
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Limit(#[from] Limit),
}

/// A new resource.
#[derive(Debug, Clone)]
pub struct NewResource {
    pub key: ResourceKey,
    /// Shard logs to create (0 for kinds that store no data).
    pub shards: u32,
    pub mode: StreamMode,
    pub spec: Vec<u8>,
    pub tags: Vec<(String, String)>,
    pub retention_hours: u32,
    pub max_record_bytes: u32,
    pub encryption_key_id: Option<String>,
}

impl NewResource {
    /// A data stream as CreateStream makes one.
    pub fn data_stream(name: &crate::types::StreamName, shards: u32, mode: StreamMode) -> NewResource {
        NewResource {
            key: ResourceKey::new(ResourceKind::DataStream, name.as_str()),
            shards,
            mode,
            spec: Vec::new(),
            tags: Vec::new(),
            retention_hours: RETENTION_HOURS_MIN,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            encryption_key_id: None,
        }
    }
}

/// A simple change to a resource. Each bumps its version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceUpdate {
    Retention {
        hours: u32,
    },
    AddTags(Vec<(String, String)>),
    RemoveTags(Vec<String>),
    RegisterConsumer {
        name: String,
        created_ms: i64,
    },
    DeregisterConsumer {
        name: String,
    },
    MaxRecordBytes {
        bytes: u32,
    },
    Mode(StreamMode),
    Encryption {
        key_id: Option<String>,
    },
    /// New settings (the service's own document).
    Spec(Vec<u8>),
}

/// The catalog's state.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    next_uid: u64,
    resources: BTreeMap<ResourceKey, ResourceMeta>,
    /// Checkpoints found in a schema-0 catalog, for the positions journal; empty otherwise.
    legacy_checkpoints: BTreeMap<(u64, String, u32), LegacyCheckpoint>,
}

fn key_of(meta: &ResourceMeta) -> ResourceKey {
    ResourceKey::new(meta.kind, meta.name.clone())
}

impl Catalog {
    pub fn from_snapshot(snapshot: Snapshot) -> Catalog {
        let mut catalog = Catalog { next_uid: snapshot.next_uid, ..Catalog::default() };
        for resource in snapshot.resources {
            catalog.apply(CatalogOp::Put(resource));
        }
        catalog
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot { next_uid: self.next_uid, resources: self.resources.values().cloned().collect() }
    }

    pub fn apply(&mut self, op: CatalogOp) {
        match op {
            CatalogOp::Put(resource) => {
                self.next_uid = self.next_uid.max(resource.uid + 1);
                self.resources.insert(key_of(&resource), resource);
            }
            CatalogOp::Drop { uid } => {
                self.resources.retain(|_, resource| resource.uid != uid);
                self.legacy_checkpoints.retain(|(stream_uid, _, _), _| *stream_uid != uid);
            }
        }
    }

    /// Takes the checkpoints a schema-0 catalog held.
    pub(crate) fn take_legacy_checkpoints(&mut self) -> Vec<LegacyCheckpoint> {
        std::mem::take(&mut self.legacy_checkpoints).into_values().collect()
    }

    /// The id the next created resource gets; every id below was issued.
    pub fn next_uid(&self) -> u64 {
        self.next_uid
    }

    pub fn resource(&self, key: &ResourceKey) -> Result<&ResourceMeta, CatalogError> {
        self.resources
            .get(key)
            .ok_or_else(|| CatalogError::NotFound { kind: key.kind, name: key.name.clone() })
    }

    /// Every resource of every kind.
    pub fn all(&self) -> impl Iterator<Item = &ResourceMeta> {
        self.resources.values()
    }

    /// The resources of one kind, by name.
    #[cfg(test)]
    pub fn of_kind(&self, kind: ResourceKind) -> impl Iterator<Item = &ResourceMeta> {
        self.resources.values().filter(move |resource| resource.kind == kind)
    }

    pub fn by_uid(&self, uid: u64) -> Option<&ResourceMeta> {
        self.resources.values().find(|resource| resource.uid == uid)
    }

    fn open_shard(
        &self,
        key: &ResourceKey,
        id: ShardId,
    ) -> Result<(&ResourceMeta, &ShardMeta), CatalogError> {
        let resource = self.resource(key)?;
        let shard = resource
            .shard(id)
            .ok_or_else(|| CatalogError::ShardNotFound { name: key.name.clone(), shard: id })?;
        if !shard.is_open() {
            return Err(CatalogError::ShardClosed { name: key.name.clone(), shard: id });
        }
        Ok((resource, shard))
    }

    pub fn prepare_create(&self, new: NewResource, now_ms: i64) -> Result<CatalogOp, CatalogError> {
        let NewResource {
            key,
            shards,
            mode,
            spec,
            tags,
            retention_hours,
            max_record_bytes,
            encryption_key_id,
        } = new;
        if key.name.is_empty() || key.name.len() > NAME_BYTES_MAX {
            return Err(Invalid::Name.into());
        }
        if self.resources.contains_key(&key) {
            return Err(CatalogError::Exists { kind: key.kind, name: key.name });
        }
        if shards == 0 && key.kind == ResourceKind::DataStream {
            return Err(Invalid::ShardCount { count: 0 }.into());
        }
        if shards > SHARDS_PER_STREAM_MAX {
            return Err(Limit::Shards { requested: shards, max: SHARDS_PER_STREAM_MAX }.into());
        }
        check_spec(&spec)?;
        let mut resource = ResourceMeta {
            kind: key.kind,
            uid: self.next_uid,
            name: key.name,
            created_ms: now_ms,
            version: 1,
            tags: Vec::new(),
            spec,
            shards: Vec::new(),
            next_shard_id: shards,
            next_epoch: 1 + u64::from(shards),
            retention_hours: RETENTION_HOURS_MIN,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            encryption_key_id,
            mode,
            consumers: Vec::new(),
        };
        if shards > 0 {
            resource.shards = HashKeyRange::uniform(shards)
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
                    inherited: Vec::new(),
                    inherited_complete: true,
                })
                .collect();
        }
        apply_update(&mut resource, ResourceUpdate::Retention { hours: retention_hours })?;
        apply_update(&mut resource, ResourceUpdate::MaxRecordBytes { bytes: max_record_bytes })?;
        apply_update(&mut resource, ResourceUpdate::AddTags(tags))?;
        resource.version = 1;
        Ok(CatalogOp::Put(resource))
    }

    pub fn prepare_delete(
        &self,
        key: &ResourceKey,
        enforce_consumer_deletion: bool,
    ) -> Result<CatalogOp, CatalogError> {
        let resource = self.resource(key)?;
        if !enforce_consumer_deletion && !resource.consumers.is_empty() {
            return Err(CatalogError::HasConsumers { stream: key.name.clone() });
        }
        Ok(CatalogOp::Drop { uid: resource.uid })
    }

    /// Checks a split before the parent is closed.
    pub fn check_split(
        &self,
        key: &ResourceKey,
        parent: ShardId,
        new_start: HashKey,
    ) -> Result<(), CatalogError> {
        let (resource, shard) = self.open_shard(key, parent)?;
        if shard.range().split_at(new_start).is_none() {
            return Err(Invalid::SplitOutsideRange { shard: parent, new_start, range: shard.range() }.into());
        }
        check_shard_room(resource, 1)
    }

    /// The split, once the parent's log is closed at `ending_sequence`; the children inherit
    /// the parent's producer stamps.
    pub fn prepare_split(
        &self,
        key: &ResourceKey,
        parent: ShardId,
        new_start: HashKey,
        ending: Closed,
        now_ms: i64,
    ) -> Result<CatalogOp, CatalogError> {
        self.check_split(key, parent, new_start)?;
        let mut resource = self.resource(key)?.clone();
        let shard = resource.shards.iter_mut().find(|shard| shard.id == parent.get()).expect("checked");
        shard.ending_sequence = Some(ending.ending_sequence);
        let (left, right) = shard.range().split_at(new_start).expect("checked");
        let inherited = merge_stamps([ending.stamps.as_slice()]);
        for range in [left, right] {
            add_child(&mut resource, range, vec![parent.get()], (inherited.clone(), ending.complete), now_ms);
        }
        resource.version += 1;
        Ok(CatalogOp::Put(resource))
    }

    pub fn check_merge(
        &self,
        key: &ResourceKey,
        shard: ShardId,
        adjacent: ShardId,
    ) -> Result<HashKeyRange, CatalogError> {
        let (_, first) = self.open_shard(key, shard)?;
        let (_, second) = self.open_shard(key, adjacent)?;
        first.range().merge(&second.range()).ok_or_else(|| Invalid::NotAdjacent { shard, adjacent }.into())
    }

    /// The merge, once both parents' logs are closed.
    pub fn prepare_merge(
        &self,
        key: &ResourceKey,
        shard: ShardId,
        adjacent: ShardId,
        endings: [Closed; 2],
        now_ms: i64,
    ) -> Result<CatalogOp, CatalogError> {
        let range = self.check_merge(key, shard, adjacent)?;
        let mut resource = self.resource(key)?.clone();
        let inherited = merge_stamps(endings.iter().map(|ending| ending.stamps.as_slice()));
        let complete = endings.iter().all(|ending| ending.complete);
        let inherited = (inherited, complete);
        for (id, ending) in [shard, adjacent].into_iter().zip(endings) {
            let parent = resource.shards.iter_mut().find(|meta| meta.id == id.get()).expect("checked");
            parent.ending_sequence = Some(ending.ending_sequence);
        }
        add_child(&mut resource, range, vec![shard.get(), adjacent.get()], inherited, now_ms);
        resource.version += 1;
        Ok(CatalogOp::Put(resource))
    }

    /// Checks a uniform re-scale (Kinesis allows half to double the open shard count).
    pub fn check_rescale(&self, key: &ResourceKey, target: u32) -> Result<(), CatalogError> {
        let resource = self.resource(key)?;
        let open = resource.open_shards().count() as u32;
        if open == 0 {
            return Err(Invalid::NoShards { kind: key.kind, name: key.name.clone() }.into());
        }
        if target > SHARDS_PER_STREAM_MAX {
            return Err(Limit::Shards { requested: target, max: SHARDS_PER_STREAM_MAX }.into());
        }
        if target == 0 || target > open * 2 || target < open.div_ceil(2) {
            return Err(Invalid::RescaleTarget { target, open }.into());
        }
        Ok(())
    }

    /// The re-scale, once every open shard's log is closed (`endings` by shard id): every
    /// open shard closes and `target` children with uniform ranges open, each naming (and
    /// inheriting the stamps of) the parents its range overlaps.
    pub fn prepare_rescale(
        &self,
        key: &ResourceKey,
        target: u32,
        endings: &BTreeMap<u32, Closed>,
        now_ms: i64,
    ) -> Result<CatalogOp, CatalogError> {
        self.check_rescale(key, target)?;
        let mut resource = self.resource(key)?.clone();
        let parents: Vec<(u32, HashKeyRange)> =
            resource.open_shards().map(|shard| (shard.id, shard.range())).collect();
        for shard in resource.shards.iter_mut().filter(|shard| shard.is_open()) {
            shard.ending_sequence =
                Some(endings.get(&shard.id).expect("every open shard closed").ending_sequence);
        }
        for range in HashKeyRange::uniform(target) {
            let overlapping: Vec<u32> = parents
                .iter()
                .filter(|(_, parent)| parent.start() <= range.end() && range.start() <= parent.end())
                .map(|(id, _)| *id)
                .collect();
            let stamps = merge_stamps(overlapping.iter().map(|id| endings[id].stamps.as_slice()));
            let complete = overlapping.iter().all(|id| endings[id].complete);
            add_child(&mut resource, range, overlapping, (stamps, complete), now_ms);
        }
        resource.version += 1;
        Ok(CatalogOp::Put(resource))
    }

    /// Applies a simple update to a copy of a resource, if it is still at `expected_version`
    /// (when one is given: a caller that read the resource, checked it and decided).
    pub fn prepare_update(
        &self,
        key: &ResourceKey,
        update: ResourceUpdate,
        expected_version: Option<u64>,
    ) -> Result<CatalogOp, CatalogError> {
        let mut resource = self.resource(key)?.clone();
        if let Some(given) = expected_version.filter(|given| *given != resource.version) {
            return Err(Invalid::Version { given, current: resource.version }.into());
        }
        apply_update(&mut resource, update)?;
        resource.version += 1;
        Ok(CatalogOp::Put(resource))
    }
}

/// What closing a shard's log leaves for its children: where it ended and its producers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closed {
    pub ending_sequence: u128,
    pub stamps: Vec<InheritedStamp>,
    /// `stamps` covers every producer the shard (and its own parents) ever stored.
    pub complete: bool,
}

/// The union of several parents' stamps: per producer the latest batch (the highest
/// number), at most [`INHERITED_STAMPS_MAX`] of them (the most recent by sequence).
fn merge_stamps<'a>(parents: impl IntoIterator<Item = &'a [InheritedStamp]>) -> Vec<InheritedStamp> {
    let mut by_producer: BTreeMap<u64, InheritedStamp> = BTreeMap::new();
    for stamps in parents {
        for stamp in stamps {
            let slot = by_producer.entry(stamp.producer_id).or_insert(*stamp);
            if stamp.batch > slot.batch {
                *slot = *stamp;
            }
        }
    }
    let mut merged: Vec<InheritedStamp> = by_producer.into_values().collect();
    if merged.len() > INHERITED_STAMPS_MAX {
        merged.sort_by_key(|stamp| std::cmp::Reverse(stamp.base));
        merged.truncate(INHERITED_STAMPS_MAX);
        merged.sort_by_key(|stamp| stamp.producer_id);
    }
    merged
}

fn check_spec(spec: &[u8]) -> Result<(), CatalogError> {
    if spec.len() > SPEC_BYTES_MAX {
        return Err(Invalid::SpecTooLarge { bytes: spec.len() }.into());
    }
    Ok(())
}

fn check_shard_room(resource: &ResourceMeta, extra: u32) -> Result<(), CatalogError> {
    let open = resource.open_shards().count() as u32;
    if open + extra > SHARDS_PER_STREAM_MAX {
        return Err(Limit::Shards { requested: open + extra, max: SHARDS_PER_STREAM_MAX }.into());
    }
    Ok(())
}

fn add_child(
    resource: &mut ResourceMeta,
    range: HashKeyRange,
    parents: Vec<u32>,
    (inherited, inherited_complete): (Vec<InheritedStamp>, bool),
    now_ms: i64,
) {
    let inherited_len = inherited.len();
    let id = resource.next_shard_id;
    resource.next_shard_id += 1;
    let epoch = resource.next_epoch;
    resource.next_epoch += 1;
    resource.shards.push(ShardMeta {
        id,
        hash_start: range.start(),
        hash_end: range.end(),
        parents,
        epoch,
        ending_sequence: None,
        created_ms: now_ms,
        inherited,
        // At the bound, some stamps may have been left out.
        inherited_complete: inherited_complete && inherited_len < INHERITED_STAMPS_MAX,
    });
}

fn valid_name(name: &str) -> bool {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    !name.is_empty() && name.len() <= 128 && name.chars().all(valid)
}

fn apply_update(resource: &mut ResourceMeta, update: ResourceUpdate) -> Result<(), CatalogError> {
    match update {
        ResourceUpdate::Retention { hours } => {
            if !(RETENTION_HOURS_MIN..=RETENTION_HOURS_MAX).contains(&hours) {
                return Err(Invalid::RetentionHours { hours }.into());
            }
            resource.retention_hours = hours;
        }
        ResourceUpdate::AddTags(tags) => {
            for (key, value) in tags {
                if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
                    return Err(Invalid::Tag { key }.into());
                }
                match resource.tags.iter_mut().find(|(existing, _)| *existing == key) {
                    Some(slot) => slot.1 = value,
                    None => resource.tags.push((key, value)),
                }
            }
            if resource.tags.len() > TAGS_PER_RESOURCE_MAX {
                return Err(Limit::Tags { max: TAGS_PER_RESOURCE_MAX }.into());
            }
            resource.tags.sort();
        }
        ResourceUpdate::RemoveTags(keys) => resource.tags.retain(|(key, _)| !keys.contains(key)),
        ResourceUpdate::RegisterConsumer { name, created_ms } => {
            if !valid_name(&name) {
                return Err(Invalid::ConsumerName { name }.into());
            }
            if resource.consumers.iter().any(|consumer| consumer.name == name) {
                return Err(CatalogError::ConsumerExists { stream: resource.name.clone(), consumer: name });
            }
            if resource.consumers.len() >= CONSUMERS_PER_STREAM_MAX {
                return Err(Limit::Consumers { max: CONSUMERS_PER_STREAM_MAX }.into());
            }
            resource.consumers.push(ConsumerMeta { name, created_ms });
        }
        ResourceUpdate::DeregisterConsumer { name } => {
            let before = resource.consumers.len();
            resource.consumers.retain(|consumer| consumer.name != name);
            if resource.consumers.len() == before {
                return Err(CatalogError::ConsumerNotFound { stream: resource.name.clone(), consumer: name });
            }
        }
        ResourceUpdate::MaxRecordBytes { bytes } => {
            if !(MAX_RECORD_BYTES_MIN..=MAX_RECORD_BYTES_LIMIT).contains(&bytes) {
                return Err(Invalid::MaxRecordBytes { bytes }.into());
            }
            resource.max_record_bytes = bytes;
        }
        ResourceUpdate::Mode(mode) => resource.mode = mode,
        ResourceUpdate::Encryption { key_id } => resource.encryption_key_id = key_id,
        ResourceUpdate::Spec(spec) => {
            check_spec(&spec)?;
            resource.spec = spec;
        }
    }
    Ok(())
}

impl JournalState for Catalog {
    type Change = CatalogOp;
    const DIR: &'static str = "catalog";
    const SCHEMA: u32 = schema::SCHEMA;

    fn empty() -> Catalog {
        Catalog::default()
    }

    fn snapshot_body(&self) -> Vec<u8> {
        schema::encode(&CatalogRecord::Snapshot(self.snapshot()))
    }

    fn change_body(change: &CatalogOp) -> Vec<u8> {
        schema::encode(&CatalogRecord::Op(change.clone()))
    }

    fn replay(state: Option<Catalog>, schema: u32, body: &[u8]) -> Result<Catalog, String> {
        let decoded = schema::decode(schema, body).map_err(|error| error.to_string())?;
        match (decoded, state) {
            (Decoded::Snapshot(snapshot, checkpoints), None) => {
                let mut catalog = Catalog::from_snapshot(snapshot);
                for checkpoint in checkpoints {
                    catalog.note_legacy(checkpoint);
                }
                Ok(catalog)
            }
            (Decoded::Op(op), Some(mut catalog)) => {
                catalog.apply(op);
                Ok(catalog)
            }
            (Decoded::Checkpoint(checkpoint), Some(mut catalog)) => {
                catalog.note_legacy(checkpoint);
                Ok(catalog)
            }
            _ => Err("catalog records out of order".to_owned()),
        }
    }

    fn apply(&mut self, change: CatalogOp) {
        Catalog::apply(self, change)
    }
}

impl Catalog {
    fn note_legacy(&mut self, checkpoint: LegacyCheckpoint) {
        let key = (checkpoint.stream_uid, checkpoint.owner.clone(), checkpoint.shard);
        self.legacy_checkpoints.insert(key, checkpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> ResourceKey {
        ResourceKey::new(ResourceKind::DataStream, name)
    }

    fn create(catalog: &mut Catalog, name: &str, shards: u32) {
        let new = NewResource::data_stream(&name.parse().unwrap(), shards, StreamMode::Provisioned);
        let op = catalog.prepare_create(new, 1).unwrap();
        catalog.apply(op);
    }

    fn closed(ending: u128) -> Closed {
        Closed { ending_sequence: ending, stamps: Vec::new(), complete: true }
    }

    #[test]
    fn split_merge_rescale_keep_lineage_and_epochs() {
        let mut catalog = Catalog::default();
        create(&mut catalog, "s", 2);
        let again = NewResource::data_stream(&"s".parse().unwrap(), 1, StreamMode::Provisioned);
        assert!(matches!(catalog.prepare_create(again, 1), Err(CatalogError::Exists { .. })));
        let key = stream("s");
        let resource = catalog.resource(&key).unwrap().clone();
        let mid = resource.shards[0].hash_end / 2;
        assert!(matches!(
            catalog.check_split(&key, ShardId::new(0), HashKey::new(0)),
            Err(CatalogError::Invalid(Invalid::SplitOutsideRange { .. }))
        ));
        let op = catalog.prepare_split(&key, ShardId::new(0), HashKey::new(mid), closed(99), 2).unwrap();
        catalog.apply(op);
        let resource = catalog.resource(&key).unwrap().clone();
        assert_eq!(resource.children(ShardId::new(0)), vec![ShardId::new(2), ShardId::new(3)]);
        assert!(resource.shards[2].epoch > resource.shards[0].epoch);
        assert_eq!(resource.version, 2);
        assert!(catalog.check_merge(&key, ShardId::new(2), ShardId::new(1)).is_err(), "not adjacent");
        let op =
            catalog.prepare_merge(&key, ShardId::new(3), ShardId::new(1), [closed(5), closed(6)], 3).unwrap();
        catalog.apply(op);
        let resource = catalog.resource(&key).unwrap().clone();
        let open: Vec<u32> = resource.open_shards().map(|shard| shard.id).collect();
        assert_eq!(open, vec![2, 4]);
        assert!(matches!(
            catalog.check_rescale(&key, 5),
            Err(CatalogError::Invalid(Invalid::RescaleTarget { target: 5, open: 2 }))
        ));
        let endings = [(2, closed(1)), (4, closed(1))].into_iter().collect();
        let op = catalog.prepare_rescale(&key, 3, &endings, 4).unwrap();
        catalog.apply(op);
        let resource = catalog.resource(&key).unwrap();
        let open: Vec<&ShardMeta> = resource.open_shards().collect();
        assert_eq!(open.len(), 3);
        // Shard 2 covers the first quarter, shard 4 the rest: only the first third overlaps both.
        assert_eq!(open[0].parents, vec![2, 4]);
        assert_eq!(open[1].parents, vec![4]);
        let covered: u128 = open.iter().map(|shard| shard.hash_end - shard.hash_start).sum::<u128>() + 2;
        assert_eq!(covered, u128::MAX);
    }

    #[test]
    fn children_inherit_the_latest_stamp_of_each_producer() {
        let mut catalog = Catalog::default();
        create(&mut catalog, "s", 2);
        let key = stream("s");
        let stamp =
            |producer_id, batch, shard, base| InheritedStamp { producer_id, batch, shard, base, count: 2 };
        let endings = [
            Closed {
                ending_sequence: 10,
                stamps: vec![stamp(1, 4, 0, 7), stamp(2, 9, 0, 3)],
                complete: true,
            },
            Closed {
                ending_sequence: 20,
                stamps: vec![stamp(1, 6, 1, 15), stamp(3, 1, 1, 12)],
                complete: false,
            },
        ];
        let op = catalog.prepare_merge(&key, ShardId::new(0), ShardId::new(1), endings, 2).unwrap();
        catalog.apply(op);
        let child = catalog.resource(&key).unwrap().shard(ShardId::new(2)).unwrap().clone();
        assert_eq!(child.inherited, vec![stamp(1, 6, 1, 15), stamp(2, 9, 0, 3), stamp(3, 1, 1, 12)]);
        assert!(!child.inherited_complete, "one parent had lost stamps");
    }

    #[test]
    fn kinds_have_their_own_names_and_versions_guard_updates() {
        let mut catalog = Catalog::default();
        create(&mut catalog, "orders", 1);
        let delivery = ResourceKey::new(ResourceKind::DeliveryStream, "orders");
        let new = NewResource {
            key: delivery.clone(),
            shards: 1,
            mode: StreamMode::Provisioned,
            spec: b"v1".to_vec(),
            tags: vec![("a".into(), "b".into())],
            retention_hours: 24,
            max_record_bytes: 1_024_000,
            encryption_key_id: None,
        };
        let op = catalog.prepare_create(new, 5).unwrap();
        catalog.apply(op);
        assert_eq!(catalog.of_kind(ResourceKind::DataStream).count(), 1);
        assert_eq!(catalog.of_kind(ResourceKind::DeliveryStream).count(), 1);
        let uids: Vec<u64> = catalog.all().map(|resource| resource.uid).collect();
        assert_eq!(uids.len(), 2);
        assert_ne!(uids[0], uids[1]);
        assert!(matches!(
            catalog.prepare_update(&delivery, ResourceUpdate::Spec(b"v2".to_vec()), Some(7)),
            Err(CatalogError::Invalid(Invalid::Version { given: 7, current: 1 }))
        ));
        let op = catalog.prepare_update(&delivery, ResourceUpdate::Spec(b"v2".to_vec()), Some(1)).unwrap();
        catalog.apply(op);
        let resource = catalog.resource(&delivery).unwrap();
        assert_eq!((resource.version, resource.spec.as_slice()), (2, &b"v2"[..]));
        let glue = NewResource {
            key: ResourceKey::new(ResourceKind::GlueTable, "db.t"),
            shards: 0,
            ..NewResource::data_stream(&"x".parse().unwrap(), 1, StreamMode::Provisioned)
        };
        let op = catalog.prepare_create(glue, 1).unwrap();
        catalog.apply(op);
        assert!(catalog
            .resource(&ResourceKey::new(ResourceKind::GlueTable, "db.t"))
            .unwrap()
            .shards
            .is_empty());
    }
}
