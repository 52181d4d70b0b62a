//! The catalog's on-disk schema: the rkyv types of every catalog record, by schema version.
//!
//! A catalog segment (see [`crate::journal`]) holds one snapshot followed by ops, all in the
//! schema its segment header names ([`crate::format::SegmentHeader::schema`]). The current
//! schema's types are also the catalog's in-memory model; when it changes, today's types are
//! frozen into a `vN` module beside [`v1`] with a conversion, and the version goes up. Each
//! open rewrites the catalog as a fresh snapshot in the current schema, so older segments
//! are read at most once.
//!
//! Versions:
//! - **0** (release 0.1.0, no version in the header): data streams only, with consumer
//!   checkpoints in the catalog. Its types are frozen in [`v1`].
//! - **2**: every resource kind keyed by kind and name, each with a version, tags, the
//!   service's own settings document and, where it stores data, shard logs; shards carry the
//!   producer stamps inherited from their parents. Checkpoints moved to the positions
//!   journal ([`crate::positions`]).
#![forbid(unsafe_code)]

use crate::types::{HashKeyRange, SequenceNumber, ShardId};

/// The schema this release writes.
pub(crate) const SCHEMA: u32 = 2;
/// The schema of catalogs written before versions existed (release 0.1.0).
pub(crate) const SCHEMA_V1: u32 = 0;

/// What a catalog entry is. The names are stable: they are part of the on-disk schema.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub enum ResourceKind {
    /// A Kinesis data stream.
    DataStream,
    /// A Firehose delivery stream (its shard log is the delivery buffer).
    DeliveryStream,
    /// A Kinesis video stream (its shard log holds the fragments).
    VideoStream,
    /// A Kinesis Data Analytics application.
    AnalyticsApplication,
    /// A Glue Data Catalog database.
    GlueDatabase,
    /// A Glue Data Catalog table (name `database.table`).
    GlueTable,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 6] = [
        ResourceKind::DataStream,
        ResourceKind::DeliveryStream,
        ResourceKind::VideoStream,
        ResourceKind::AnalyticsApplication,
        ResourceKind::GlueDatabase,
        ResourceKind::GlueTable,
    ];

    /// How messages name it.
    pub fn noun(self) -> &'static str {
        match self {
            ResourceKind::DataStream => "stream",
            ResourceKind::DeliveryStream => "delivery stream",
            ResourceKind::VideoStream => "video stream",
            ResourceKind::AnalyticsApplication => "application",
            ResourceKind::GlueDatabase => "database",
            ResourceKind::GlueTable => "table",
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.noun())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

/// An idempotent producer's last batch stored in a shard's parent: a child answers a retry
/// of it after a split or merge (see `runtime::dedupe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct InheritedStamp {
    pub producer_id: u64,
    pub batch: u32,
    /// The shard that stored it.
    pub shard: u32,
    /// First sequence number of its frame there, and the frame's record count.
    pub base: u128,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShardMeta {
    pub(crate) id: u32,
    pub(crate) hash_start: u128,
    pub(crate) hash_end: u128,
    /// Shards this one was made from: one for a split, two for a merge, the overlapping
    /// ones for a uniform re-scale. Kinesis shows the first two as Parent/AdjacentParent.
    pub(crate) parents: Vec<u32>,
    /// High 64 bits of every sequence number of this shard; above every parent's.
    pub(crate) epoch: u64,
    /// Last sequence number, once the shard is closed.
    pub(crate) ending_sequence: Option<u128>,
    pub(crate) created_ms: i64,
    /// The parents' idempotent producers, as they stood when the parents closed.
    pub(crate) inherited: Vec<InheritedStamp>,
    /// Whether `inherited` holds every producer the parents ever stored (nothing expired or
    /// was evicted); if not, a resent batch of an unknown producer cannot be judged.
    pub(crate) inherited_complete: bool,
}

impl ShardMeta {
    pub fn shard_id(&self) -> ShardId {
        ShardId::new(self.id)
    }

    pub fn range(&self) -> HashKeyRange {
        HashKeyRange::new(self.hash_start, self.hash_end).expect("stored ranges are valid")
    }

    pub fn parents(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.parents.iter().map(|&id| ShardId::new(id))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The shard's starting sequence number (counter 0 of its epoch; no record has it).
    pub fn starting_sequence(&self) -> SequenceNumber {
        SequenceNumber::new(self.epoch, 0)
    }

    pub fn ending_sequence(&self) -> Option<SequenceNumber> {
        self.ending_sequence.map(SequenceNumber::from_u128)
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn is_open(&self) -> bool {
        self.ending_sequence.is_none()
    }

    /// Whether `sequence` is one of this shard's numbers.
    pub fn owns(&self, sequence: SequenceNumber) -> bool {
        sequence.epoch() == self.epoch
    }
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ConsumerMeta {
    pub(crate) name: String,
    pub(crate) created_ms: i64,
}

impl ConsumerMeta {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }
}

/// One catalog entry: any resource kind. Every kind has a name, a version that grows with
/// each change, tags and the owning service's settings (`spec`, a document the engine
/// stores and never reads). Kinds that store data (data, delivery and video streams) also
/// have shard logs; the data-stream-only parts (mode, consumers) stay empty for the others.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ResourceMeta {
    pub(crate) kind: ResourceKind,
    /// Unique for the life of the data directory, over every kind; names can be reused
    /// after deletion.
    pub(crate) uid: u64,
    pub(crate) name: String,
    pub(crate) created_ms: i64,
    /// 1 at creation, one more with every change.
    pub(crate) version: u64,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) spec: Vec<u8>,
    pub(crate) shards: Vec<ShardMeta>,
    pub(crate) next_shard_id: u32,
    pub(crate) next_epoch: u64,
    pub(crate) retention_hours: u32,
    pub(crate) max_record_bytes: u32,
    /// Key id used to encrypt new data at rest, if encryption is on.
    pub(crate) encryption_key_id: Option<String>,
    pub(crate) mode: StreamMode,
    pub(crate) consumers: Vec<ConsumerMeta>,
}

impl ResourceMeta {
    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resource's id: unique over every kind for the life of the data directory.
    pub fn uid(&self) -> u64 {
        self.uid
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn tags(&self) -> &[(String, String)] {
        &self.tags
    }

    /// The owning service's settings, as it stored them.
    pub fn spec(&self) -> &[u8] {
        &self.spec
    }

    pub fn shards(&self) -> &[ShardMeta] {
        &self.shards
    }

    pub fn retention_hours(&self) -> u32 {
        self.retention_hours
    }

    pub fn max_record_bytes(&self) -> u32 {
        self.max_record_bytes
    }

    pub fn encryption_key_id(&self) -> Option<&str> {
        self.encryption_key_id.as_deref()
    }

    pub fn mode(&self) -> StreamMode {
        self.mode
    }

    pub fn consumers(&self) -> &[ConsumerMeta] {
        &self.consumers
    }

    pub fn shard(&self, id: ShardId) -> Option<&ShardMeta> {
        self.shards.iter().find(|shard| shard.id == id.get())
    }

    pub fn open_shards(&self) -> impl Iterator<Item = &ShardMeta> {
        self.shards.iter().filter(|shard| shard.is_open())
    }

    /// Shards whose parents include `id`.
    pub fn children(&self, id: ShardId) -> Vec<ShardId> {
        self.shards
            .iter()
            .filter(|shard| shard.parents.contains(&id.get()))
            .map(ShardMeta::shard_id)
            .collect()
    }

    /// The open shard whose range holds `key`.
    pub fn owning_shard(&self, key: crate::types::HashKey) -> Option<&ShardMeta> {
        self.open_shards().find(|shard| shard.range().contains(key))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Snapshot {
    pub(crate) next_uid: u64,
    pub(crate) resources: Vec<ResourceMeta>,
}

/// One durable change.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum CatalogOp {
    Put(ResourceMeta),
    Drop { uid: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) enum CatalogRecord {
    Snapshot(Snapshot),
    Op(CatalogOp),
}

/// A checkpoint found in a schema-0 catalog, for the positions journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LegacyCheckpoint {
    pub stream_uid: u64,
    pub owner: String,
    pub shard: u32,
    pub sequence: u128,
    pub updated_ms: i64,
}

/// What one catalog frame body decodes to, in the current model.
pub(crate) enum Decoded {
    Snapshot(Snapshot, Vec<LegacyCheckpoint>),
    Op(CatalogOp),
    /// A schema-0 checkpoint op.
    Checkpoint(LegacyCheckpoint),
}

/// Why a catalog body did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("catalog schema {found} is newer than this release's ({SCHEMA}): upgrade Millrace")]
    Newer { found: u32 },
    #[error("catalog schema {found} is not one this release reads")]
    Unknown { found: u32 },
    #[error("catalog record does not decode in schema {schema}: {reason}")]
    Body { schema: u32, reason: String },
}

pub(crate) fn encode(record: &CatalogRecord) -> Vec<u8> {
    rkyv::to_bytes::<rkyv::rancor::Error>(record).expect("serialising to memory cannot fail").into_vec()
}

/// Decodes one frame body of a segment written in `schema`.
pub(crate) fn decode(schema: u32, body: &[u8]) -> Result<Decoded, SchemaError> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let bad = |reason: rkyv::rancor::Error| SchemaError::Body { schema, reason: reason.to_string() };
    match schema {
        SCHEMA => match rkyv::from_bytes::<CatalogRecord, rkyv::rancor::Error>(&aligned).map_err(bad)? {
            CatalogRecord::Snapshot(snapshot) => Ok(Decoded::Snapshot(snapshot, Vec::new())),
            CatalogRecord::Op(op) => Ok(Decoded::Op(op)),
        },
        SCHEMA_V1 => {
            let record = rkyv::from_bytes::<v1::CatalogRecord, rkyv::rancor::Error>(&aligned).map_err(bad)?;
            Ok(v1::upgrade(record))
        }
        found if found > SCHEMA => Err(SchemaError::Newer { found }),
        found => Err(SchemaError::Unknown { found }),
    }
}

/// The schema of release 0.1.0, frozen: these types must never change.
pub(crate) mod v1 {
    use super::{ConsumerMeta, Decoded, LegacyCheckpoint, ResourceKind, ResourceMeta, ShardMeta};

    #[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub enum StreamMode {
        Provisioned,
        OnDemand,
    }

    #[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct ShardMeta1 {
        pub id: u32,
        pub hash_start: u128,
        pub hash_end: u128,
        pub parents: Vec<u32>,
        pub epoch: u64,
        pub ending_sequence: Option<u128>,
        pub created_ms: i64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct ConsumerMeta1 {
        pub name: String,
        pub created_ms: i64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct StreamMeta1 {
        pub uid: u64,
        pub name: String,
        pub created_ms: i64,
        pub mode: StreamMode,
        pub retention_hours: u32,
        pub max_record_bytes: u32,
        pub shards: Vec<ShardMeta1>,
        pub next_shard_id: u32,
        pub next_epoch: u64,
        pub tags: Vec<(String, String)>,
        pub consumers: Vec<ConsumerMeta1>,
        pub encryption_key_id: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Checkpoint1 {
        pub stream_uid: u64,
        pub owner: String,
        pub shard: u32,
        pub sequence: u128,
        pub updated_ms: i64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub enum CatalogOp1 {
        PutStream(StreamMeta1),
        DropStream { uid: u64 },
        PutCheckpoint(Checkpoint1),
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Snapshot1 {
        pub next_uid: u64,
        pub streams: Vec<StreamMeta1>,
        pub checkpoints: Vec<Checkpoint1>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub enum CatalogRecord {
        Snapshot(Snapshot1),
        Op(CatalogOp1),
    }

    fn stream(old: StreamMeta1) -> ResourceMeta {
        ResourceMeta {
            kind: ResourceKind::DataStream,
            uid: old.uid,
            name: old.name,
            created_ms: old.created_ms,
            version: 1,
            tags: old.tags,
            spec: Vec::new(),
            shards: old
                .shards
                .into_iter()
                .map(|shard| ShardMeta {
                    // Children made by 0.1.0 did not inherit their parents' producers.
                    inherited_complete: shard.parents.is_empty(),
                    id: shard.id,
                    hash_start: shard.hash_start,
                    hash_end: shard.hash_end,
                    parents: shard.parents,
                    epoch: shard.epoch,
                    ending_sequence: shard.ending_sequence,
                    created_ms: shard.created_ms,
                    inherited: Vec::new(),
                })
                .collect(),
            next_shard_id: old.next_shard_id,
            next_epoch: old.next_epoch,
            retention_hours: old.retention_hours,
            max_record_bytes: old.max_record_bytes,
            encryption_key_id: old.encryption_key_id,
            mode: match old.mode {
                StreamMode::Provisioned => super::StreamMode::Provisioned,
                StreamMode::OnDemand => super::StreamMode::OnDemand,
            },
            consumers: old
                .consumers
                .into_iter()
                .map(|consumer| ConsumerMeta { name: consumer.name, created_ms: consumer.created_ms })
                .collect(),
        }
    }

    fn checkpoint(old: Checkpoint1) -> LegacyCheckpoint {
        LegacyCheckpoint {
            stream_uid: old.stream_uid,
            owner: old.owner,
            shard: old.shard,
            sequence: old.sequence,
            updated_ms: old.updated_ms,
        }
    }

    pub(crate) fn upgrade(record: CatalogRecord) -> Decoded {
        match record {
            CatalogRecord::Snapshot(snapshot) => Decoded::Snapshot(
                super::Snapshot {
                    next_uid: snapshot.next_uid,
                    resources: snapshot.streams.into_iter().map(stream).collect(),
                },
                snapshot.checkpoints.into_iter().map(checkpoint).collect(),
            ),
            CatalogRecord::Op(CatalogOp1::PutStream(meta)) => {
                Decoded::Op(super::CatalogOp::Put(stream(meta)))
            }
            CatalogRecord::Op(CatalogOp1::DropStream { uid }) => Decoded::Op(super::CatalogOp::Drop { uid }),
            CatalogRecord::Op(CatalogOp1::PutCheckpoint(old)) => Decoded::Checkpoint(checkpoint(old)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> ResourceMeta {
        ResourceMeta {
            kind: ResourceKind::DeliveryStream,
            uid: 7,
            name: "to-s3".into(),
            created_ms: 5,
            version: 3,
            tags: vec![("k".into(), "v".into())],
            spec: b"{\"Destination\":\"S3\"}".to_vec(),
            shards: vec![ShardMeta {
                id: 0,
                hash_start: 0,
                hash_end: u128::MAX,
                parents: vec![],
                epoch: 1,
                ending_sequence: None,
                created_ms: 5,
                inherited: vec![InheritedStamp { producer_id: 9, batch: 4, shard: 2, base: 77, count: 3 }],
                inherited_complete: true,
            }],
            next_shard_id: 1,
            next_epoch: 2,
            retention_hours: 24,
            max_record_bytes: 1_024_000,
            encryption_key_id: None,
            mode: StreamMode::Provisioned,
            consumers: vec![],
        }
    }

    #[test]
    fn current_records_round_trip() {
        let snapshot = Snapshot { next_uid: 8, resources: vec![resource()] };
        let body = encode(&CatalogRecord::Snapshot(snapshot.clone()));
        match decode(SCHEMA, &body).unwrap() {
            Decoded::Snapshot(decoded, legacy) => assert!(decoded == snapshot && legacy.is_empty()),
            _ => panic!("not a snapshot"),
        }
        let body = encode(&CatalogRecord::Op(CatalogOp::Drop { uid: 7 }));
        assert!(matches!(decode(SCHEMA, &body).unwrap(), Decoded::Op(CatalogOp::Drop { uid: 7 })));
    }

    #[test]
    fn schema_zero_records_upgrade() {
        let old = v1::CatalogRecord::Snapshot(v1::Snapshot1 {
            next_uid: 3,
            streams: vec![v1::StreamMeta1 {
                uid: 2,
                name: "s".into(),
                created_ms: 1,
                mode: v1::StreamMode::OnDemand,
                retention_hours: 48,
                max_record_bytes: 1 << 20,
                shards: vec![v1::ShardMeta1 {
                    id: 0,
                    hash_start: 0,
                    hash_end: u128::MAX,
                    parents: vec![],
                    epoch: 1,
                    ending_sequence: Some(5),
                    created_ms: 1,
                }],
                next_shard_id: 1,
                next_epoch: 2,
                tags: vec![("a".into(), "b".into())],
                consumers: vec![v1::ConsumerMeta1 { name: "c".into(), created_ms: 4 }],
                encryption_key_id: Some("alias/x".into()),
            }],
            checkpoints: vec![v1::Checkpoint1 {
                stream_uid: 2,
                owner: "o".into(),
                shard: 0,
                sequence: 9,
                updated_ms: 1,
            }],
        });
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let Decoded::Snapshot(snapshot, checkpoints) = decode(SCHEMA_V1, &body).unwrap() else { panic!() };
        let stream = &snapshot.resources[0];
        assert_eq!(
            (stream.kind, stream.name.as_str(), stream.retention_hours),
            (ResourceKind::DataStream, "s", 48)
        );
        assert_eq!(stream.mode, StreamMode::OnDemand);
        assert_eq!(stream.shards[0].ending_sequence, Some(5));
        assert_eq!(stream.consumers[0].name, "c");
        assert_eq!(checkpoints[0].sequence, 9);
        assert!(matches!(decode(SCHEMA + 1, &body), Err(SchemaError::Newer { .. })));
    }
}
