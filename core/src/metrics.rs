//! Process-wide counters of the append path, cheap enough to keep always on: how many group
//! commits ran, how many bytes and batches they carried, and where their time went (encoding
//! on the shard's core, the data and slot writes, the fdatasync). Benchmarks and operators
//! read them as a [`CommitSnapshot`] and take differences between two snapshots.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The counters. Every engine in the process adds to the same ones.
pub struct CommitMetrics {
    commits: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
    encode_ns: AtomicU64,
    write_ns: AtomicU64,
    sync_ns: AtomicU64,
    /// Time from the commit's start to the last reply sent.
    commit_ns: AtomicU64,
    sync_max_ns: AtomicU64,
    commit_max_ns: AtomicU64,
    /// fdatasync times by power of two of microseconds: bucket `b` counts `[2^(b-1), 2^b)` µs.
    sync_log2_us: [AtomicU64; BUCKETS],
}

const BUCKETS: usize = 32;

fn bucket(elapsed: Duration) -> usize {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    ((u64::BITS - us.leading_zeros()) as usize).min(BUCKETS - 1)
}

pub static COMMITS: CommitMetrics = CommitMetrics {
    commits: AtomicU64::new(0),
    batches: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
    encode_ns: AtomicU64::new(0),
    write_ns: AtomicU64::new(0),
    sync_ns: AtomicU64::new(0),
    commit_ns: AtomicU64::new(0),
    sync_max_ns: AtomicU64::new(0),
    commit_max_ns: AtomicU64::new(0),
    sync_log2_us: [const { AtomicU64::new(0) }; BUCKETS],
};

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

impl CommitMetrics {
    pub fn encoded(&self, batches: usize, bytes: usize, elapsed: Duration) {
        self.batches.fetch_add(batches as u64, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.encode_ns.fetch_add(nanos(elapsed), Relaxed);
    }

    pub fn wrote(&self, elapsed: Duration) {
        self.write_ns.fetch_add(nanos(elapsed), Relaxed);
    }

    pub fn synced(&self, elapsed: Duration) {
        self.sync_ns.fetch_add(nanos(elapsed), Relaxed);
        self.sync_max_ns.fetch_max(nanos(elapsed), Relaxed);
        self.sync_log2_us[bucket(elapsed)].fetch_add(1, Relaxed);
    }

    pub fn committed(&self, elapsed: Duration) {
        self.commits.fetch_add(1, Relaxed);
        self.commit_ns.fetch_add(nanos(elapsed), Relaxed);
        self.commit_max_ns.fetch_max(nanos(elapsed), Relaxed);
    }

    pub fn snapshot(&self) -> CommitSnapshot {
        CommitSnapshot {
            commits: self.commits.load(Relaxed),
            batches: self.batches.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            encode_ns: self.encode_ns.load(Relaxed),
            write_ns: self.write_ns.load(Relaxed),
            sync_ns: self.sync_ns.load(Relaxed),
            commit_ns: self.commit_ns.load(Relaxed),
            sync_max_ns: self.sync_max_ns.load(Relaxed),
            commit_max_ns: self.commit_max_ns.load(Relaxed),
            sync_log2_us: std::array::from_fn(|at| self.sync_log2_us[at].load(Relaxed)),
        }
    }
}

/// The counters at one moment; subtract two to describe what happened in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSnapshot {
    pub commits: u64,
    pub batches: u64,
    pub bytes: u64,
    pub encode_ns: u64,
    pub write_ns: u64,
    pub sync_ns: u64,
    pub commit_ns: u64,
    /// The longest fdatasync and commit so far (since the process started: a difference of
    /// snapshots keeps the later maximum).
    pub sync_max_ns: u64,
    pub commit_max_ns: u64,
    /// fdatasync times by power of two of microseconds (see [`CommitSnapshot::slow_syncs`]).
    pub sync_log2_us: [u64; BUCKETS],
}

impl CommitSnapshot {
    /// fdatasyncs that took at least `at_least_us` (rounded down to a power of two).
    pub fn slow_syncs(&self, at_least_us: u64) -> u64 {
        let from = bucket(Duration::from_micros(at_least_us));
        self.sync_log2_us[from..].iter().sum()
    }

    pub fn syncs(&self) -> u64 {
        self.sync_log2_us.iter().sum()
    }
}

impl std::ops::Sub for CommitSnapshot {
    type Output = CommitSnapshot;

    fn sub(self, earlier: CommitSnapshot) -> CommitSnapshot {
        CommitSnapshot {
            commits: self.commits.saturating_sub(earlier.commits),
            batches: self.batches.saturating_sub(earlier.batches),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            encode_ns: self.encode_ns.saturating_sub(earlier.encode_ns),
            write_ns: self.write_ns.saturating_sub(earlier.write_ns),
            sync_ns: self.sync_ns.saturating_sub(earlier.sync_ns),
            commit_ns: self.commit_ns.saturating_sub(earlier.commit_ns),
            sync_max_ns: self.sync_max_ns,
            commit_max_ns: self.commit_max_ns,
            sync_log2_us: std::array::from_fn(|at| {
                self.sync_log2_us[at].saturating_sub(earlier.sync_log2_us[at])
            }),
        }
    }
}

impl std::fmt::Display for CommitSnapshot {
    /// Means per commit, for a line in a report.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = |total: u64| total as f64 / self.commits.max(1) as f64;
        write!(
            f,
            "{} group commits, {:.1} batches and {:.0} KiB each; mean µs per commit: encode {:.0}, \
             write {:.0}, fdatasync {:.0} (max {:.0}; {} of {} took 4 ms or more), whole commit to last \
             reply {:.0} (max {:.0})",
            self.commits,
            per(self.batches),
            per(self.bytes) / 1024.0,
            per(self.encode_ns) / 1e3,
            per(self.write_ns) / 1e3,
            per(self.sync_ns) / 1e3,
            self.sync_max_ns as f64 / 1e3,
            self.slow_syncs(4096),
            self.syncs(),
            per(self.commit_ns) / 1e3,
            self.commit_max_ns as f64 / 1e3,
        )
    }
}
