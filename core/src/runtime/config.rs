//! Start-up settings of the engine, and why it may fail to start.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::crypto::Keyring;
use crate::error::EngineError;
use crate::shard_log::LogConfig;

/// Start-up settings. Everything has a default that works on a laptop.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Number of shard cores (executors). Defaults to the number of CPUs.
    pub cores: usize,
    pub log: LogConfig,
    /// Memory each executor registers with io_uring for DMA buffers. Counts against the
    /// memlock limit (RLIMIT_MEMLOCK) for users without CAP_IPC_LOCK.
    pub io_memory_bytes: usize,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Most append messages one group commit takes.
    pub group_max_batches: usize,
    /// Bound of each shard's inbox; senders wait when it is full (backpressure).
    pub shard_inbox: usize,
    /// Bound of the positions journal's inbox.
    pub positions_inbox: usize,
    /// Longest a task on an executor waits on a cross-thread channel before looking again
    /// (see `control::recv_or_tick`).
    pub heartbeat_interval: Duration,
    /// Key material for encryption at rest; streams with an encryption key id need it.
    pub keyring: Option<Arc<Keyring>>,
    /// Nice value for the executor threads; 0 leaves them as they are. Below 0 (which needs
    /// root or CAP_SYS_NICE; without it the engine says so once and runs on) the scheduler
    /// runs an executor as soon as its fdatasync completes even when other threads keep
    /// every core busy: measured with CPU hogs on both cores, a write+fdatasync loop's p99
    /// went from 4.4 ms at nice 0 to 0.5 ms at nice -10.
    pub executor_nice: i32,
    /// Where time comes from: arrival times, retention, timestamps. Tests give a
    /// [`crate::ManualClock`] and advance it.
    pub clock: Arc<dyn Clock>,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            log: LogConfig::default(),
            io_memory_bytes: 2 << 20,
            retention_interval: Duration::from_secs(60),
            group_max_batches: 4096,
            shard_inbox: 8192,
            positions_inbox: 8192,
            heartbeat_interval: TICK,
            keyring: None,
            executor_nice: -10,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why the engine did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot start executor for core {core}: {source}. If this mentions memory, the memlock limit \
         (ulimit -l) is below the {io_memory_bytes} bytes of io_uring memory each core registers: raise it \
         or run as root"
    )]
    Executor { core: usize, io_memory_bytes: usize, source: std::io::Error },
    #[error("recovery failed: {0}")]
    Recovery(EngineError),
}

/// The default for [`EngineConfig::heartbeat_interval`].
pub(crate) const TICK: Duration = Duration::from_millis(1);
