//! The records of a stream's shards merged into one ROWTIME order, with a watermark per
//! shard: what an application's input reader feeds the runner.
//!
//! - A record's ROWTIME is its stored arrival time (the time it entered the stream, to the
//!   millisecond: KDA's definition, and a replay gives the same answer).
//! - Each shard promises that no record it has not yet given will arrive below its
//!   *promise*: the arrival of the last record read from it (arrivals do not decrease within
//!   a shard), or, when a read found it caught up, `now − grace` (appends still in flight
//!   are committed within the grace). A shard that is caught up, idle, promises the clock,
//!   so an idle shard does not hold the watermark back.
//! - The watermark is the least promise of the shards still open. Records below it are
//!   released in (arrival, shard, sequence) order. Since a future record can tie with the
//!   watermark but not fall below it, that order does not depend on how reads were chunked
//!   or interleaved: a replay from the same positions releases the same rows in the same
//!   order, which is what lets a restarted application produce the same output.
//! - The watermark is also the rowtime bound to give the runner
//!   ([`super::ApplicationRunner::advance`]): windows that end by it close.
//! - A record below its shard's promise (the promise broken: a clock stepped back, or a commit
//!   slower than the grace) is late: it is counted, and takes the promise as its ROWTIME, so
//!   that ROWTIME never decreases (KDA guarantees that of every in-application stream).

use std::collections::{BTreeMap, VecDeque};

/// A record released by the merge: its ROWTIME, where it came from, and the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released<T> {
    pub rowtime_ms: i64,
    pub shard: u32,
    pub sequence: u128,
    pub item: T,
    /// It arrived below its shard's promise; its ROWTIME was raised to the promise.
    pub late: bool,
}

struct ShardQueue<T> {
    /// Arrival (raised to the promise where it was below), sequence, item, late.
    pending: VecDeque<(i64, u128, T, bool)>,
    /// No record not yet pushed arrives below this.
    promise_ms: i64,
    /// Exhausted (a closed shard read to its end): it no longer holds the watermark.
    done: bool,
}

pub struct ShardMerge<T> {
    shards: BTreeMap<u32, ShardQueue<T>>,
    grace_ms: i64,
    /// The ROWTIME of the last record released.
    released_ms: i64,
    late: u64,
}

impl<T> ShardMerge<T> {
    /// `grace_ms`: how long after `now` an append may still commit with an earlier arrival.
    /// `resume_ms`: the ROWTIME released last before (a restart), or `i64::MIN`.
    pub fn new(grace_ms: i64, resume_ms: i64) -> ShardMerge<T> {
        ShardMerge { shards: BTreeMap::new(), grace_ms, released_ms: resume_ms, late: 0 }
    }

    /// A shard to read (a stream's shard at start, or a child once its parents are done).
    pub fn add_shard(&mut self, shard: u32) {
        self.shards.entry(shard).or_insert(ShardQueue {
            pending: VecDeque::new(),
            promise_ms: i64::MIN,
            done: false,
        });
    }

    /// A record read from `shard`, in the shard's order.
    pub fn push(&mut self, shard: u32, arrival_ms: i64, sequence: u128, item: T) {
        let queue = self.shards.get_mut(&shard).expect("records come from a shard that was added");
        let late = arrival_ms < queue.promise_ms;
        if late {
            self.late += 1;
        }
        let arrival_ms = arrival_ms.max(queue.promise_ms);
        queue.promise_ms = arrival_ms;
        queue.pending.push_back((arrival_ms, sequence, item, late));
    }

    /// A read found `shard` caught up at `now_ms`: nothing it gives later arrives before
    /// `now_ms − grace`.
    pub fn caught_up(&mut self, shard: u32, now_ms: i64) {
        let grace_ms = self.grace_ms;
        if let Some(queue) = self.shards.get_mut(&shard) {
            queue.promise_ms = queue.promise_ms.max(now_ms.saturating_sub(grace_ms));
        }
    }

    /// `shard` is closed and read to its end (its children take over).
    pub fn finish(&mut self, shard: u32) {
        if let Some(queue) = self.shards.get_mut(&shard) {
            queue.done = true;
        }
    }

    /// The least promise of the shards that are not done (`i64::MAX` when none is left).
    pub fn watermark_ms(&self) -> i64 {
        self.shards
            .values()
            .filter(|queue| !queue.done)
            .map(|queue| queue.promise_ms)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// The ROWTIME of the last record released (`resume_ms` until one is): what a restart
    /// passes back as `resume_ms`.
    pub fn released_ms(&self) -> i64 {
        self.released_ms
    }

    /// Records late so far.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Records held, not yet released.
    pub fn held(&self) -> usize {
        self.shards.values().map(|queue| queue.pending.len()).sum()
    }

    /// Releases every record below the watermark, in (arrival, shard, sequence) order, and
    /// drops the shards that are done and empty.
    pub fn release(&mut self) -> Vec<Released<T>> {
        let watermark = self.watermark_ms();
        let mut out = Vec::new();
        loop {
            // The least head below the watermark (heads are each shard's least record).
            let next = self
                .shards
                .iter()
                .filter_map(|(shard, queue)| queue.pending.front().map(|(arrival, ..)| (*arrival, *shard)))
                .filter(|(arrival, _)| *arrival < watermark)
                .min();
            let Some((_, shard)) = next else { break };
            let queue = self.shards.get_mut(&shard).expect("a shard with a head");
            let (arrival_ms, sequence, item, late) = queue.pending.pop_front().expect("a head");
            // Below the watermark and at or above every promise kept so far: not below what
            // was released, except after a restart that resumed past it.
            self.released_ms = self.released_ms.max(arrival_ms);
            out.push(Released { rowtime_ms: self.released_ms, shard, sequence, item, late });
        }
        self.shards.retain(|_, queue| !(queue.done && queue.pending.is_empty()));
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_idle_shard_does_not_hold_the_watermark_back() {
        let mut merge = ShardMerge::new(100, i64::MIN);
        merge.add_shard(0);
        merge.add_shard(1);
        merge.push(0, 1_000, 1, "a");
        merge.push(0, 2_000, 2, "b");
        // Shard 1 has given nothing and promised nothing: nothing can be released yet.
        assert!(merge.release().is_empty());
        // A read finds shard 1 caught up at 2,500: it will give nothing before 2,400.
        merge.caught_up(1, 2_500);
        let released: Vec<&str> = merge.release().into_iter().map(|record| record.item).collect();
        // 2,000 is at shard 0's promise, which a later record of shard 0 could tie: held.
        assert_eq!(released, ["a"]);
        merge.caught_up(0, 2_500);
        assert_eq!(merge.release().into_iter().map(|record| record.item).collect::<Vec<_>>(), ["b"]);
        assert_eq!(merge.watermark_ms(), 2_400);
    }

    #[test]
    fn late_records_keep_rowtime_from_decreasing_and_are_counted() {
        let mut merge = ShardMerge::new(0, i64::MIN);
        merge.add_shard(0);
        merge.add_shard(1);
        merge.push(0, 5_000, 1, 'a');
        merge.caught_up(1, 6_000);
        merge.caught_up(0, 6_000);
        assert_eq!(merge.release().len(), 1);
        // Shard 1 broke its promise (a slow commit): its record is late and takes the promise.
        merge.push(1, 4_000, 1, 'b');
        assert_eq!(merge.late(), 1);
        assert!(merge.release().is_empty());
        merge.caught_up(0, 7_000);
        merge.caught_up(1, 7_000);
        let released = merge.release();
        assert_eq!(released, [Released { rowtime_ms: 6_000, shard: 1, sequence: 1, item: 'b', late: true }]);
    }

    #[test]
    fn a_finished_parent_gives_way_to_its_children() {
        let mut merge = ShardMerge::new(0, i64::MIN);
        merge.add_shard(0);
        merge.push(0, 10, 1, 0);
        merge.finish(0);
        assert_eq!(merge.watermark_ms(), i64::MAX);
        assert_eq!(merge.release().len(), 1);
        merge.add_shard(1);
        merge.add_shard(2);
        merge.push(1, 20, 1, 1);
        merge.caught_up(2, 30);
        merge.caught_up(1, 30);
        assert_eq!(merge.release().len(), 1);
        assert_eq!(merge.held(), 0);
    }

    /// Per shard, records with nondecreasing arrivals; then a random schedule of reads.
    fn shards_strategy() -> impl Strategy<Value = Vec<Vec<i64>>> {
        proptest::collection::vec(
            proptest::collection::vec(0i64..50, 0..40).prop_map(|steps| {
                let mut arrival = 0;
                steps
                    .into_iter()
                    .map(|step| {
                        arrival += step;
                        arrival
                    })
                    .collect()
            }),
            1..5,
        )
    }

    proptest! {
        /// However reads are chunked and interleaved (and whenever shards are found caught
        /// up, keeping their promises), the records come out in (arrival, shard, sequence)
        /// order, each once, none late.
        #[test]
        fn the_order_does_not_depend_on_how_reads_were_chunked(
            shards in shards_strategy(),
            schedule in proptest::collection::vec((0usize..5, 1usize..6, any::<bool>()), 0..200),
        ) {
            let grace = 10;
            let mut merge = ShardMerge::new(grace, i64::MIN);
            for shard in 0..shards.len() {
                merge.add_shard(shard as u32);
            }
            let mut next = vec![0usize; shards.len()];
            let mut out = Vec::new();
            for (shard, chunk, caught_up) in schedule {
                let shard = shard % shards.len();
                let records = &shards[shard];
                for _ in 0..chunk {
                    if next[shard] < records.len() {
                        merge.push(shard as u32, records[next[shard]], next[shard] as u128, (shard, next[shard]));
                        next[shard] += 1;
                    }
                }
                // A read that found no more: the shard is caught up at a "now" that keeps
                // its promise (its next record, if it had one, is at least now - grace).
                if caught_up {
                    let now = records.get(next[shard]).map_or(i64::MAX / 2, |arrival| arrival + grace);
                    merge.caught_up(shard as u32, now);
                }
                out.extend(merge.release());
            }
            for (shard, records) in shards.iter().enumerate() {
                while next[shard] < records.len() {
                    merge.push(shard as u32, records[next[shard]], next[shard] as u128, (shard, next[shard]));
                    next[shard] += 1;
                }
                merge.finish(shard as u32);
            }
            out.extend(merge.release());
            let mut expected: Vec<(i64, usize, usize)> = shards
                .iter()
                .enumerate()
                .flat_map(|(shard, records)| records.iter().enumerate().map(move |(index, arrival)| (*arrival, shard, index)))
                .collect();
            expected.sort();
            let got: Vec<(i64, usize, usize)> = out.iter().map(|record| (record.rowtime_ms, record.item.0, record.item.1)).collect();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(merge.late(), 0);
        }
    }
}
