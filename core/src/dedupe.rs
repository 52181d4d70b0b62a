//! Idempotent producers: a shard's record of each producer's last stored batch, and the
//! judgement of a stamped batch against it. Pure.
//!
//! A producer numbers its batches per shard queue, from 1. A batch sent again after a lost
//! acknowledgement carries the same stamp and is answered with where it was stored instead of
//! being stored again. The record is complete when it holds every producer whose batches the
//! shard still keeps or ever kept:
//!
//! - at open it is rebuilt from every frame of every segment (recovery reads them all anyway);
//! - a child shard inherits its parents' records when a split, merge or re-scale closes them,
//!   through the catalog, in the same commit that creates it; so a retry that routes to a
//!   child after a reshard finds the batch its parent stored;
//! - it stays bounded ([`PRODUCERS_MAX`]); evicting an entry, retention removing a segment,
//!   or inheriting from an incomplete parent makes it incomplete.
//!
//! A resent batch of a producer the record does not know is stored when the record is
//! complete (it cannot have been stored) and refused with a clear error when it is not (it
//! may have been stored, and storing it again would be a duplicate). A producer's first
//! sending of a batch is stored either way.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::InheritedStamp;
use crate::format::ProducerStamp;
use crate::shard_log::StampedBatch;
use crate::types::Record;

/// Producers a shard keeps, at most.
pub const PRODUCERS_MAX: usize = 4096;

/// An idempotent producer's stamp on a batch, and whether this is a resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub producer_id: u64,
    pub batch: u32,
    /// The producer sent this batch before (its acknowledgement was lost).
    pub resent: bool,
}

/// A producer's last batch stored in a shard (or in one of its parents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastBatch {
    pub batch: u32,
    /// First sequence number of its frame, and the frame's record count.
    pub base: u128,
    pub count: u32,
    /// The parent shard that stored it; `None` for this shard.
    pub stored_in: Option<u32>,
    /// Known durable: written and synced by this process, or made durable since. A frame
    /// found by recovery may be visible without being on disk (after a failed fdatasync the
    /// page cache can show what the disk lost), so before it answers a retry as stored, it is
    /// written again and synced ([`crate::shard_log::ShardLog::confirm`]).
    pub proven: bool,
}

/// What to do with a stamped batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Store,
    /// Already stored: answer from here.
    Duplicate(LastBatch),
    /// Older than the producer's last stored batch.
    Stale {
        last_batch: u32,
    },
    /// A resend the shard can no longer judge.
    OutsideWindow,
}

#[derive(Debug, Clone)]
pub(crate) struct ProducerTable {
    last: HashMap<u64, LastBatch>,
    complete: bool,
}

impl Default for ProducerTable {
    fn default() -> ProducerTable {
        ProducerTable { last: HashMap::new(), complete: true }
    }
}

impl ProducerTable {
    #[cfg(test)]
    pub fn entry(&self, producer_id: u64) -> Option<LastBatch> {
        self.last.get(&producer_id).copied()
    }

    pub fn judge(&self, stamp: Stamp) -> Verdict {
        match self.last.get(&stamp.producer_id) {
            Some(last) if stamp.batch == last.batch => Verdict::Duplicate(*last),
            Some(last) if stamp.batch < last.batch => Verdict::Stale { last_batch: last.batch },
            // This shard's own last batch of the producer: the true last one (what expired is
            // older). A parent's is only the last before this shard began: this shard may
            // have stored later ones in segments that expired.
            Some(last) if last.stored_in.is_none() || !stamp.resent || self.complete => Verdict::Store,
            Some(_) => Verdict::OutsideWindow,
            None if stamp.resent && !self.complete => Verdict::OutsideWindow,
            None => Verdict::Store,
        }
    }

    /// A batch of this shard became durable.
    pub fn record(&mut self, producer_id: u64, last: LastBatch) {
        self.last.insert(producer_id, last);
        if self.last.len() > PRODUCERS_MAX {
            // The producer whose last batch is oldest goes.
            let oldest = self.last.iter().min_by_key(|(_, last)| last.base).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.last.remove(&oldest);
            }
            self.complete = false;
        }
    }

    /// The parents' producers, for a child; its own batches (already recorded) win.
    pub fn inherit(&mut self, stamps: &[InheritedStamp], complete: bool) {
        for stamp in stamps {
            self.last.entry(stamp.producer_id).or_insert(LastBatch {
                batch: stamp.batch,
                base: stamp.base,
                count: stamp.count,
                stored_in: Some(stamp.shard),
                // A parent makes its producers' frames durable before it closes.
                proven: true,
            });
        }
        self.complete &= complete;
        if self.last.len() > PRODUCERS_MAX {
            self.complete = false;
        }
    }

    /// Every entry of this shard's own that is not known durable.
    pub fn unproven(&self) -> Vec<(u64, LastBatch)> {
        self.last.iter().filter(|(_, last)| !last.proven).map(|(id, last)| (*id, *last)).collect()
    }

    /// The producer's last batch is now known durable.
    pub fn prove(&mut self, producer_id: u64) {
        if let Some(last) = self.last.get_mut(&producer_id) {
            last.proven = true;
        }
    }

    /// Something the record was rebuilt without (segments that expired before this open).
    pub fn forget_history(&mut self) {
        self.complete = false;
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// What a child inherits from this shard (`own` is this shard's id).
    pub fn export(&self, own: u32) -> Vec<InheritedStamp> {
        let mut stamps: Vec<InheritedStamp> = self
            .last
            .iter()
            .map(|(&producer_id, last)| InheritedStamp {
                producer_id,
                batch: last.batch,
                shard: last.stored_in.unwrap_or(own),
                base: last.base,
                count: last.count,
            })
            .collect();
        stamps.sort_by_key(|stamp| stamp.producer_id);
        stamps
    }
}

/// An append as a shard's group commit receives it, with whoever waits for the answer.
pub(crate) struct Pending<R> {
    pub records: Vec<Record>,
    pub key_id: Option<Arc<str>>,
    pub stamp: Option<Stamp>,
    pub reply: R,
}

/// A group judged: what to store (each batch with everyone waiting for it), and what is
/// answered without storing.
pub(crate) struct Judged<R> {
    pub batches: Vec<StampedBatch>,
    pub waiting: Vec<Vec<R>>,
    pub answered: Vec<(R, Stamp, Verdict)>,
}

/// Judges every stamped append of a group against the shard's record. Two copies of one
/// batch in the same group are stored once, and both wait for it.
pub(crate) fn judge_group<R>(table: &ProducerTable, appends: Vec<Pending<R>>) -> Judged<R> {
    let mut judged =
        Judged { batches: Vec::with_capacity(appends.len()), waiting: Vec::new(), answered: Vec::new() };
    for append in appends {
        let producer =
            append.stamp.map(|stamp| ProducerStamp { producer_id: stamp.producer_id, batch: stamp.batch });
        if let Some(stamp) = append.stamp {
            match table.judge(stamp) {
                Verdict::Store => {}
                other => {
                    judged.answered.push((append.reply, stamp, other));
                    continue;
                }
            }
            if let Some(index) = judged.batches.iter().position(|batch| batch.producer == producer) {
                judged.waiting[index].push(append.reply);
                continue;
            }
        }
        judged.batches.push(StampedBatch { records: append.records, key_id: append.key_id, producer });
        judged.waiting.push(vec![append.reply]);
    }
    judged
}

/// How a duplicate's records get their sequence numbers: record `index` of the producer's
/// batch (of `batch_len` records, `group_index` within the part routed to this shard).
/// `None` when the stored frame does not correspond to the batch as resent.
pub(crate) fn restate(
    last: LastBatch,
    batch_len: usize,
    index: usize,
    group_len: usize,
    group_index: usize,
) -> Option<u128> {
    match last.stored_in {
        // Stored here: the same records routed here the first time, in the same order.
        None if last.count as usize == group_len => Some(last.base + group_index as u128),
        // Stored whole in a parent: its frame is the batch, in order.
        Some(_) if last.count as usize == batch_len => Some(last.base + index as u128),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(producer_id: u64, batch: u32, resent: bool) -> Stamp {
        Stamp { producer_id, batch, resent }
    }

    #[test]
    fn judges_against_the_last_batch() {
        let mut table = ProducerTable::default();
        assert_eq!(table.judge(stamp(1, 1, false)), Verdict::Store);
        assert_eq!(
            table.judge(stamp(1, 7, true)),
            Verdict::Store,
            "complete: a resend never seen was never stored"
        );
        let last = LastBatch { batch: 3, base: 100, count: 2, stored_in: None, proven: true };
        table.record(1, last);
        assert_eq!(table.judge(stamp(1, 3, true)), Verdict::Duplicate(last));
        assert_eq!(table.judge(stamp(1, 2, true)), Verdict::Stale { last_batch: 3 });
        assert_eq!(table.judge(stamp(1, 4, false)), Verdict::Store);
        table.forget_history();
        assert_eq!(table.judge(stamp(2, 5, true)), Verdict::OutsideWindow);
        assert_eq!(table.judge(stamp(2, 5, false)), Verdict::Store, "a first sending is stored");
        assert_eq!(table.judge(stamp(1, 4, true)), Verdict::Store, "its own last batch is the true last");
        // A parent's entry, once history is incomplete, says nothing about later batches.
        table.inherit(&[InheritedStamp { producer_id: 3, batch: 2, shard: 0, base: 10, count: 1 }], true);
        assert_eq!(
            table.judge(stamp(3, 2, true)),
            Verdict::Duplicate(LastBatch { batch: 2, base: 10, count: 1, stored_in: Some(0), proven: true })
        );
        assert_eq!(table.judge(stamp(3, 1, true)), Verdict::Stale { last_batch: 2 });
        assert_eq!(table.judge(stamp(3, 3, true)), Verdict::OutsideWindow);
        assert_eq!(table.judge(stamp(3, 3, false)), Verdict::Store);
    }

    #[test]
    fn children_answer_for_their_parents_and_the_table_stays_bounded() {
        let mut parent = ProducerTable::default();
        parent.record(9, LastBatch { batch: 4, base: 50, count: 3, stored_in: None, proven: true });
        let mut child = ProducerTable::default();
        child.inherit(&parent.export(0), parent.is_complete());
        let Verdict::Duplicate(last) = child.judge(stamp(9, 4, true)) else { panic!() };
        assert_eq!(last.stored_in, Some(0));
        // Resent whole to the child: record i is the parent's base + i.
        assert_eq!(restate(last, 3, 2, 1, 0), Some(52));
        // Only part of it was stored whole elsewhere: cannot be restated.
        assert_eq!(restate(LastBatch { count: 2, ..last }, 3, 2, 1, 0), None);
        for producer in 0..PRODUCERS_MAX as u64 + 1 {
            child.record(
                1000 + producer,
                LastBatch {
                    batch: 1,
                    base: 1000 + u128::from(producer),
                    count: 1,
                    stored_in: None,
                    proven: true,
                },
            );
        }
        assert!(!child.is_complete());
        assert_eq!(child.judge(stamp(9, 4, true)), Verdict::OutsideWindow, "the oldest entry was evicted");
    }
}
