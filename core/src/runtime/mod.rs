//! The thread-per-core runtime: one glommio executor per core (`Placement::Fixed`), each
//! owning its shards outright, one task per shard. Callers on any thread (tokio front ends,
//! benchmarks, the CLI) hold an [`Engine`], which routes each batch to the owning shard's
//! inbox (a bounded flume channel) and awaits the durable acknowledgement. Catalog
//! operations run one at a time on core 0's controller task; checkpoints on the positions
//! task beside it.
//!
//! Task queues per core: `ingest` (shard tasks: appends and reads) with high shares and
//! latency that matters, `background` (the controller, positions, segment removal after
//! retention) with low shares, so that background work never stalls an acknowledgement.
//!
//! - [`config`]: start-up settings;
//! - [`api`]: the [`Engine`] handle;
//! - `messages`: what travels between the handle and the tasks;
//! - `control`: each core's main loop, the controller and positions tasks, publication;
//! - `shard_task`: a shard's task and its group commit (with [`crate::dedupe`]).
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
mod control;
mod messages;
mod shard_task;

pub use api::{Appended, CommitStats, Engine, ShardRead};
pub use config::{EngineConfig, StartError};
