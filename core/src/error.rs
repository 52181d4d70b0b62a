//! The engine's errors, as callers see them: structured facts (which resource, which shard,
//! which numbers) that each wire protocol maps onto its own error codes and words as its
//! clients expect. Failures of the disk keep their source, the operation and where it
//! happened, for the server's log; they are never meant to be shown to a client as they are
//! (they name files of the server).
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use crate::catalog::CatalogError;
use crate::types::{HashKey, ShardId};

/// Every error of [`crate::Engine`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The catalog refused the request (not found, exists, invalid, over a limit).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("record of {size_bytes} bytes is above the limit of {limit_bytes}")]
    RecordTooLarge { size_bytes: usize, limit_bytes: usize },
    #[error("sequence number {sequence} does not belong to shard {shard} of {name}")]
    ForeignSequence { name: String, shard: ShardId, sequence: u128 },
    /// An idempotent producer sent a batch older than its last one stored.
    #[error("batch {batch} of producer {producer_id:#x} is older than its last batch {last_batch} stored in shard {shard} of {name}")]
    StaleBatch { name: String, shard: ShardId, producer_id: u64, batch: u32, last_batch: u32 },
    /// A resent batch of a producer the shard has no record of, where the shard's record of
    /// producers is no longer complete (expired segments, or more producers than it keeps):
    /// it cannot tell whether the batch was stored, so it stores nothing.
    #[error("batch {batch} of producer {producer_id:#x} was resent, and shard {shard} of {name} no longer knows whether it stored it (its producer's history expired)")]
    RetryOutsideWindow { name: String, shard: ShardId, producer_id: u64, batch: u32 },
    /// A resent batch that was stored split over shards that have since been resharded: it
    /// is stored, but its sequence numbers cannot be restated.
    #[error("batch {batch} of producer {producer_id:#x} was stored before {name} was resharded, split over shards; its sequence numbers cannot be restated")]
    RetryAcrossReshard { name: String, producer_id: u64, batch: u32 },
    /// Shards closed under a batch and it could not be placed in a few tries.
    #[error("{name} is being resharded; retry")]
    Resharding { name: String },
    /// No open shard owns a hash key: the shard map is broken. A bug, not a bad request.
    #[error("internal fault: no open shard of {name} owns hash key {hash_key}")]
    NoOwningShard { name: String, hash_key: HashKey },
    #[error(transparent)]
    Storage(StorageFault),
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// What the engine was doing when the disk failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    Start,
    Open,
    Append,
    Read,
    Resolve,
    Close,
    Remove,
    Retention,
    Catalog,
    Positions,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Start => "start",
            Operation::Open => "opening a shard",
            Operation::Append => "append",
            Operation::Read => "read",
            Operation::Resolve => "resolving a position",
            Operation::Close => "closing a shard",
            Operation::Remove => "removing a shard",
            Operation::Retention => "retention",
            Operation::Catalog => "catalog commit",
            Operation::Positions => "positions commit",
        })
    }
}

/// A failed disk operation: the operation, the resource and shard it was for, the file, and
/// the underlying error.
#[derive(Debug, Clone)]
pub struct StorageFault {
    operation: Operation,
    resource: Option<String>,
    shard: Option<ShardId>,
    path: Option<String>,
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl StorageFault {
    pub(crate) fn new(
        operation: Operation,
        path: Option<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StorageFault {
        StorageFault { operation, resource: None, shard: None, path, source: Arc::new(source) }
    }

    pub(crate) fn at(mut self, resource: &str, shard: Option<ShardId>) -> StorageFault {
        self.resource = Some(resource.to_owned());
        self.shard = shard.or(self.shard);
        self
    }

    pub fn operation(&self) -> Operation {
        self.operation
    }

    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    pub fn shard(&self) -> Option<ShardId> {
        self.shard
    }

    /// The file or directory, relative to the data directory: for the server's log only.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed", self.operation)?;
        if let Some(resource) = &self.resource {
            write!(f, " for {resource}")?;
        }
        if let Some(shard) = self.shard {
            write!(f, " shard {shard}")?;
        }
        if let Some(path) = &self.path {
            write!(f, " at {path}")?;
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for StorageFault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

impl EngineError {
    /// Adds the resource and shard to a storage fault; other errors name theirs already.
    pub(crate) fn at(self, resource: &str, shard: Option<ShardId>) -> EngineError {
        match self {
            EngineError::Storage(fault) => EngineError::Storage(fault.at(resource, shard)),
            other => other,
        }
    }

    /// Worth retrying as it is: the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, EngineError::Resharding { .. } | EngineError::ShuttingDown | EngineError::Storage(_))
    }
}

impl From<StorageFault> for EngineError {
    fn from(fault: StorageFault) -> EngineError {
        EngineError::Storage(fault)
    }
}

impl From<crate::storage::IoError> for EngineError {
    fn from(error: crate::storage::IoError) -> EngineError {
        let path = Some(error.path.clone());
        EngineError::Storage(StorageFault::new(Operation::Open, path, error))
    }
}

impl From<crate::journal::JournalError> for EngineError {
    fn from(error: crate::journal::JournalError) -> EngineError {
        let path = Some(error.path().to_owned());
        EngineError::Storage(StorageFault::new(Operation::Catalog, path, error))
    }
}

impl EngineError {
    /// A shard log's failure during `operation`.
    pub(crate) fn log(operation: Operation, error: crate::shard_log::LogError) -> EngineError {
        match error {
            crate::shard_log::LogError::ForeignSequence { sequence, .. } => {
                EngineError::ForeignSequence { name: String::new(), shard: ShardId::new(0), sequence }
            }
            other => {
                let path = Some(other.dir().to_owned());
                EngineError::Storage(StorageFault::new(operation, path, other))
            }
        }
    }
}
