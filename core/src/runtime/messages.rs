//! What travels between the engine handle, the controller, the positions journal, the cores
//! and the shard tasks. Every channel a caller can fill is bounded.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::catalog::Closed;
use crate::controller::{Controller, OpenShard};
use crate::dedupe::{LastBatch, Stamp};
use crate::dma::DmaStorage;
use crate::error::EngineError;
use crate::positions::{Position, PositionChange, PositionKey};
use crate::shard_log::{ReadLimits, ReadOutcome, StartPosition};
use crate::types::Record;

pub(crate) type Reply<T> = flume::Sender<Result<T, EngineError>>;

/// Where a batch is: stored now at `base`, or already stored (a producer's retry).
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreOutcome {
    Stored { base: u128 },
    Duplicate(LastBatch),
}

/// The answer to an append; records come back when the shard had closed, so that the caller
/// can re-route them without having kept a copy.
pub(crate) type AppendReply = flume::Sender<Result<StoreOutcome, (EngineError, Option<Vec<Record>>)>>;

pub(crate) enum ShardMsg {
    /// Records to store, sealed under the key id when there is one, stamped by an idempotent
    /// producer when there is a stamp.
    Append {
        records: Vec<Record>,
        key_id: Option<Arc<str>>,
        stamp: Option<Stamp>,
        reply: AppendReply,
    },
    Read {
        from: u128,
        limits: ReadLimits,
        reply: Reply<ReadOutcome>,
    },
    Resolve {
        start: StartPosition,
        reply: Reply<u128>,
    },
    Close {
        reply: Reply<Closed>,
    },
    Reopen {
        reply: Reply<()>,
    },
    Trim {
        cutoff_ms: i64,
        now_ms: i64,
        done: Option<flume::Sender<()>>,
    },
    Remove {
        reply: Reply<()>,
    },
    Stop {
        reply: flume::Sender<()>,
    },
}

pub(crate) enum CoreMsg {
    Open { shard: OpenShard, now_ms: i64, reply: Reply<flume::Sender<ShardMsg>> },
    Stop,
}

pub(crate) type Ctl = Controller<DmaStorage, super::control::MeshHosts>;
pub(crate) type ControlFn =
    Box<dyn for<'a> FnOnce(&'a mut Ctl) -> Pin<Box<dyn Future<Output = ()> + 'a>> + Send>;

pub(crate) enum ControlMsg {
    Run(ControlFn),
    /// Trim every shard now; `done` answers once every shard has trimmed.
    Retention {
        done: Option<flume::Sender<()>>,
    },
    Stop {
        reply: flume::Sender<()>,
    },
}

pub(crate) enum PositionMsg {
    Commit { change: PositionChange, reply: Reply<()> },
    Get { key: PositionKey, reply: flume::Sender<Option<Position>> },
    Stop { reply: flume::Sender<()> },
}
