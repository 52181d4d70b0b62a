//! The catalog of every resource kind (data streams; delivery streams, video streams,
//! analytics applications and Glue tables as their services land): one crash-safe store keyed
//! by kind and name, with a versioned on-disk schema.
//!
//! - [`schema`]: the on-disk types, by schema version, and the upgrade of older ones;
//! - [`state`]: the pure state machine that validates and prepares every change;
//! - the store is a [`crate::journal::Journal`] of [`Catalog`] (snapshot, then changes).
//!
//! Positions that change often (consumer checkpoints, delivery cursors, application
//! checkpoints) are not here: each would cost a catalog fsync. They live in
//! [`crate::positions`].
#![forbid(unsafe_code)]

pub mod schema;
pub mod state;

pub use schema::{ConsumerMeta, InheritedStamp, ResourceKind, ResourceMeta, ShardMeta, StreamMode};
pub use state::{
    Catalog, CatalogError, Closed, Invalid, Limit, NewResource, ResourceKey, ResourceUpdate,
    CONSUMERS_PER_STREAM_MAX, DEFAULT_MAX_RECORD_BYTES, MAX_RECORD_BYTES_LIMIT, MAX_RECORD_BYTES_MIN,
    ON_DEMAND_SHARDS, RETENTION_HOURS_MAX, RETENTION_HOURS_MIN, SHARDS_PER_STREAM_MAX, TAGS_PER_RESOURCE_MAX,
};

use crate::types::ShardId;

/// The durable catalog.
pub(crate) type CatalogStore<S> = crate::journal::Journal<S, Catalog>;

/// Where a resource's shard lives, relative to the data directory.
pub(crate) fn shard_dir(uid: u64, id: ShardId) -> String {
    format!("shards/{uid}-{}", id.get())
}
