//! Millrace's storage engine: streams of shards, each shard an append-only log of batch
//! frames in segment files written with direct I/O, acknowledged only once durable; the
//! crash-safe stream catalog; and the thread-per-core runtime that owns them.
//!
//! What it does not do: no networking, no HTTP or wire protocols, no GPU. Pure logic
//! (`format`, `types`, `segment` math, the catalog's state machine) takes bytes and `now`
//! from the caller; disk access goes through the [`storage::Storage`] trait, implemented with
//! glommio's direct I/O in [`dma`] and in memory, with injected faults, in [`sim`].

pub mod catalog;
pub mod crypto;
pub mod dma;
pub mod engine;
pub mod format;
pub mod metrics;
pub mod runtime;
pub mod segment;
pub mod shard_log;
pub mod signal;
pub mod sim;
pub mod storage;
pub mod sys;
pub mod types;
