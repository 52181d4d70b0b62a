//! AWS's per-shard throughput limits, enforced only when `--emulate-limits` is on, so that
//! users can test their retry logic against ProvisionedThroughputExceededException.
//!
//! Per shard: writes 1 MiB/s and 1,000 records/s; reads 5 GetRecords calls/s and 2 MiB/s.
//! Token buckets with a one-second burst; a read may overdraw the byte bucket (AWS answers
//! a large read and then throttles the following calls until the debt is paid).

use std::collections::HashMap;
use std::sync::Mutex;

pub const WRITE_BYTES_PER_SEC: f64 = 1_048_576.0;
pub const WRITE_RECORDS_PER_SEC: f64 = 1000.0;
pub const READ_CALLS_PER_SEC: f64 = 5.0;
pub const READ_BYTES_PER_SEC: f64 = 2_097_152.0;

/// A token bucket; pure, `now` from the caller.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    rate_per_sec: f64,
    updated_ms: i64,
}

impl Bucket {
    pub fn full(rate_per_sec: f64, now_ms: i64) -> Bucket {
        Bucket { tokens: rate_per_sec, rate_per_sec, updated_ms: now_ms }
    }

    fn refill(&mut self, now_ms: i64) {
        let elapsed_ms = (now_ms - self.updated_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed_ms * self.rate_per_sec / 1000.0).min(self.rate_per_sec);
        self.updated_ms = now_ms.max(self.updated_ms);
    }

    pub fn available(&mut self, now_ms: i64) -> f64 {
        self.refill(now_ms);
        self.tokens
    }

    /// Takes `amount` if it is there.
    pub fn try_take(&mut self, amount: f64, now_ms: i64) -> bool {
        self.refill(now_ms);
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// Takes `amount` even into debt.
    pub fn take(&mut self, amount: f64, now_ms: i64) {
        self.refill(now_ms);
        self.tokens -= amount;
    }
}

#[derive(Debug, Clone, Copy)]
struct ShardBuckets {
    write_bytes: Bucket,
    write_records: Bucket,
    read_calls: Bucket,
    read_bytes: Bucket,
}

impl ShardBuckets {
    fn new(now_ms: i64) -> ShardBuckets {
        ShardBuckets {
            write_bytes: Bucket::full(WRITE_BYTES_PER_SEC, now_ms),
            write_records: Bucket::full(WRITE_RECORDS_PER_SEC, now_ms),
            read_calls: Bucket::full(READ_CALLS_PER_SEC, now_ms),
            read_bytes: Bucket::full(READ_BYTES_PER_SEC, now_ms),
        }
    }
}

/// Every shard's buckets, keyed by stream uid and shard id. Bounded by the number of
/// shards that exist; a deleted stream's entries go when [`ShardLimits::forget_stream`] runs.
#[derive(Default)]
pub struct ShardLimits {
    shards: Mutex<HashMap<(u64, u32), ShardBuckets>>,
}

impl ShardLimits {
    /// Admits one record of `bytes` to a shard, or says it is over the limit.
    pub fn admit_write(&self, stream_uid: u64, shard: u32, bytes: usize, now_ms: i64) -> bool {
        let mut shards = self.shards.lock().expect("not poisoned");
        let buckets = shards.entry((stream_uid, shard)).or_insert_with(|| ShardBuckets::new(now_ms));
        if buckets.write_records.available(now_ms) < 1.0
            || buckets.write_bytes.available(now_ms) < bytes as f64
        {
            return false;
        }
        buckets.write_records.take(1.0, now_ms);
        buckets.write_bytes.take(bytes as f64, now_ms);
        true
    }

    /// Admits a GetRecords call, or says it is over the limit.
    pub fn admit_read(&self, stream_uid: u64, shard: u32, now_ms: i64) -> bool {
        let mut shards = self.shards.lock().expect("not poisoned");
        let buckets = shards.entry((stream_uid, shard)).or_insert_with(|| ShardBuckets::new(now_ms));
        if buckets.read_bytes.available(now_ms) < 0.0 {
            return false;
        }
        buckets.read_calls.try_take(1.0, now_ms)
    }

    /// Charges the bytes a read returned.
    pub fn charge_read(&self, stream_uid: u64, shard: u32, bytes: usize, now_ms: i64) {
        let mut shards = self.shards.lock().expect("not poisoned");
        let buckets = shards.entry((stream_uid, shard)).or_insert_with(|| ShardBuckets::new(now_ms));
        buckets.read_bytes.take(bytes as f64, now_ms);
    }

    pub fn forget_stream(&self, stream_uid: u64) {
        self.shards.lock().expect("not poisoned").retain(|(uid, _), _| *uid != stream_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_limited_to_a_thousand_records_a_second() {
        let limits = ShardLimits::default();
        let admitted = (0..1500).filter(|_| limits.admit_write(1, 0, 10, 0)).count();
        assert_eq!(admitted, 1000);
        // Half a second refills half the bucket; other shards are independent.
        let admitted = (0..1500).filter(|_| limits.admit_write(1, 0, 10, 500)).count();
        assert_eq!(admitted, 500);
        assert!(limits.admit_write(1, 1, 10, 500));
    }

    #[test]
    fn writes_are_limited_to_a_mebibyte_a_second() {
        let limits = ShardLimits::default();
        assert!(limits.admit_write(1, 0, 1 << 20, 0));
        assert!(!limits.admit_write(1, 0, 1, 0));
        assert!(limits.admit_write(1, 0, 1 << 19, 500));
    }

    #[test]
    fn a_large_read_throttles_the_following_calls_until_repaid() {
        let limits = ShardLimits::default();
        assert!(limits.admit_read(1, 0, 0));
        limits.charge_read(1, 0, 10 << 20, 0);
        assert!(!limits.admit_read(1, 0, 1000));
        // 10 MiB at 2 MiB/s, from a full bucket of 2 MiB: repaid after 4 s.
        assert!(limits.admit_read(1, 0, 4000));
    }

    #[test]
    fn five_reads_a_second() {
        let limits = ShardLimits::default();
        assert_eq!((0..10).filter(|_| limits.admit_read(1, 0, 0)).count(), 5);
    }
}
