//! Millrace's storage engine: resources of every kind (data streams; delivery streams, video
//! streams, analytics applications, Glue tables) in one crash-safe, versioned catalog; shard
//! logs of batch frames in segment files written with direct I/O, acknowledged only once
//! durable; positions (checkpoints) in their own group-committed journal; and the
//! thread-per-core runtime that owns them.
//!
//! What it does not do: no networking, no HTTP or wire protocols, no GPU, and no wording for
//! clients (errors are structured facts; each protocol words them). Pure logic (`format`,
//! `types`, `segment` math, the catalog's state machine, `dedupe`) takes bytes and `now` from
//! the caller; disk access goes through a `Storage` trait, implemented with glommio's direct
//! I/O and, for the simulation, in memory with injected faults; time comes from a [`Clock`].
//!
//! The public surface is this page: the types below and the [`metrics`] module. Everything
//! else is internal (`pub(crate)`), so that the layout can change without breaking callers.
//! `unsafe` lives in two leaf modules (`dma`, `sys`); every other module forbids it.

mod catalog;
mod clock;
mod controller;
mod crypto;
mod dedupe;
mod dma;
mod error;
mod format;
mod journal;
pub mod metrics;
mod positions;
mod runtime;
mod segment;
mod shard_log;
mod signal;
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code))]
mod sim;
#[cfg(test)]
mod simulation;
mod storage;
mod sys;
mod types;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use catalog::schema::SchemaError;
pub use catalog::{
    CatalogError, ConsumerMeta, Invalid, Limit, NewResource, ResourceKey, ResourceKind, ResourceMeta,
    ResourceUpdate, ShardMeta, StreamMode, CONSUMERS_PER_STREAM_MAX, DEFAULT_MAX_RECORD_BYTES,
    MAX_RECORD_BYTES_LIMIT, MAX_RECORD_BYTES_MIN, ON_DEMAND_SHARDS, RETENTION_HOURS_MAX, RETENTION_HOURS_MIN,
    SHARDS_PER_STREAM_MAX, TAGS_PER_RESOURCE_MAX,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use crypto::{Keyring, KEY_ID_BYTES_MAX};
pub use dedupe::Stamp;
pub use error::{EngineError, Operation, StorageFault};
pub use runtime::{Appended, CommitStats, Engine, EngineConfig, ShardRead, StartError};
pub use shard_log::{LogConfig, ReadLimits, StartPosition};
pub use signal::CommitSignal;
pub use types::{
    HashKey, HashKeyRange, PartitionKey, Record, SequenceNumber, ShardId, StoredRecord, StreamName,
    ValueError,
};
