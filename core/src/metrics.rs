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
    /// Time from the commit's I/O starting to the last reply sent.
    commit_ns: AtomicU64,
}

pub static COMMITS: CommitMetrics = CommitMetrics {
    commits: AtomicU64::new(0),
    batches: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
    encode_ns: AtomicU64::new(0),
    write_ns: AtomicU64::new(0),
    sync_ns: AtomicU64::new(0),
    commit_ns: AtomicU64::new(0),
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
    }

    pub fn committed(&self, elapsed: Duration) {
        self.commits.fetch_add(1, Relaxed);
        self.commit_ns.fetch_add(nanos(elapsed), Relaxed);
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
        }
    }
}

/// The counters at one moment; subtract two to describe what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitSnapshot {
    pub commits: u64,
    pub batches: u64,
    pub bytes: u64,
    pub encode_ns: u64,
    pub write_ns: u64,
    pub sync_ns: u64,
    pub commit_ns: u64,
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
             write {:.0}, fdatasync {:.0}, whole commit to last reply {:.0}",
            self.commits,
            per(self.batches),
            per(self.bytes) / 1024.0,
            per(self.encode_ns) / 1e3,
            per(self.write_ns) / 1e3,
            per(self.sync_ns) / 1e3,
            per(self.commit_ns) / 1e3,
        )
    }
}
