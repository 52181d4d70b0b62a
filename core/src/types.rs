//! Identifiers and values of the data model: stream names, shard ids, hash keys and their
//! ranges, sequence numbers, records. Pure values with fallible constructors; no I/O.
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

/// Why a value given by a caller is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    #[error("stream name {name:?} must be 1-128 characters of [a-zA-Z0-9_.-]")]
    StreamName { name: String },
    #[error("shard id {text:?} is not of the form shardId-NNNNNNNNNNNN")]
    ShardId { text: String },
    #[error("partition key must be 1-256 characters, got {len_chars}")]
    PartitionKey { len_chars: usize },
    #[error("hash key {text:?} is not a decimal integer in 0..2^128")]
    HashKey { text: String },
    #[error("sequence number {text:?} is not a decimal integer in 0..2^128")]
    SequenceNumber { text: String },
    #[error("hash key range start {start} is above end {end}")]
    HashKeyRange { start: u128, end: u128 },
}

/// A stream's name: 1–128 characters of `[a-zA-Z0-9_.-]`, as Kinesis allows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName(String);

impl StreamName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamName {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if text.is_empty() || text.len() > 128 || !text.chars().all(valid_char) {
            return Err(ValueError::StreamName { name: text.to_owned() });
        }
        Ok(StreamName(text.to_owned()))
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shard's index within its stream, rendered as Kinesis does: `shardId-000000000007`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub(crate) u32);

impl ShardId {
    pub const fn new(index: u32) -> ShardId {
        ShardId(index)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shardId-{:012}", self.0)
    }
}

impl FromStr for ShardId {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        let error = || ValueError::ShardId { text: text.to_owned() };
        let digits = text.strip_prefix("shardId-").ok_or_else(error)?;
        if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error());
        }
        digits.parse::<u32>().map(ShardId).map_err(|_| error())
    }
}

/// A point in the 128-bit hash-key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashKey(pub(crate) u128);

impl HashKey {
    pub const fn new(key: u128) -> HashKey {
        HashKey(key)
    }

    pub const fn get(self) -> u128 {
        self.0
    }

    /// The hash key Kinesis derives from a partition key: MD5 of its UTF-8 bytes read as a
    /// big-endian 128-bit integer.
    pub fn from_partition_key(partition_key: &str) -> HashKey {
        let digest = Md5::digest(partition_key.as_bytes());
        HashKey(u128::from_be_bytes(digest.into()))
    }
}

impl FromStr for HashKey {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        parse_decimal_u128(text).map(HashKey).ok_or_else(|| ValueError::HashKey { text: text.to_owned() })
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Strict decimal parse: digits only, no sign, no leading `+`, no overflow.
fn parse_decimal_u128(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u128>().ok()
}

/// An inclusive range of hash keys owned by one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    start: u128,
    end: u128,
}

impl HashKeyRange {
    pub const FULL: HashKeyRange = HashKeyRange { start: 0, end: u128::MAX };

    pub fn new(start: u128, end: u128) -> Result<HashKeyRange, ValueError> {
        if start > end {
            return Err(ValueError::HashKeyRange { start, end });
        }
        Ok(HashKeyRange { start, end })
    }

    pub fn start(&self) -> u128 {
        self.start
    }

    pub fn end(&self) -> u128 {
        self.end
    }

    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key.0 && key.0 <= self.end
    }

    /// Splits the full key space into `count` contiguous ranges as Kinesis does for
    /// CreateStream: equal widths, the last range taking the remainder.
    pub fn uniform(count: u32) -> Vec<HashKeyRange> {
        assert!(count >= 1);
        if count == 1 {
            return vec![HashKeyRange::FULL];
        }
        // floor(2^128 / count), computed without overflowing u128.
        let count_wide = u128::from(count);
        let width = u128::MAX / count_wide + (u128::MAX % count_wide + 1) / count_wide;
        (0..count)
            .map(|index| {
                let start = width * u128::from(index);
                let end = if index + 1 == count { u128::MAX } else { start + width - 1 };
                HashKeyRange { start, end }
            })
            .collect()
    }

    /// Splits at `new_start`: the left child keeps `start..new_start-1`, the right child
    /// `new_start..end`. `None` unless `start < new_start <= end`.
    pub fn split_at(&self, new_start: HashKey) -> Option<(HashKeyRange, HashKeyRange)> {
        if new_start.0 <= self.start || new_start.0 > self.end {
            return None;
        }
        let left = HashKeyRange { start: self.start, end: new_start.0 - 1 };
        let right = HashKeyRange { start: new_start.0, end: self.end };
        Some((left, right))
    }

    /// The union of two adjacent ranges, in either order; `None` if they do not touch.
    pub fn merge(&self, other: &HashKeyRange) -> Option<HashKeyRange> {
        let (low, high) = if self.start < other.start { (self, other) } else { (other, self) };
        (low.end.checked_add(1) == Some(high.start))
            .then_some(HashKeyRange { start: low.start, end: high.end })
    }
}

/// A record's position in its shard. Strictly increasing within a shard; a child shard's
/// numbers are above its parents' because the high 64 bits hold the shard's epoch, which
/// the catalog hands out in increasing order. Rendered as a decimal string, as Kinesis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber(pub(crate) u128);

impl SequenceNumber {
    /// A sequence number from its 128-bit value (the high 64 bits are the shard's epoch).
    pub const fn from_u128(value: u128) -> SequenceNumber {
        SequenceNumber(value)
    }

    pub const fn as_u128(self) -> u128 {
        self.0
    }

    pub const fn new(epoch: u64, counter: u64) -> SequenceNumber {
        SequenceNumber(((epoch as u128) << 64) | counter as u128)
    }

    pub fn epoch(&self) -> u64 {
        (self.0 >> 64) as u64
    }

    pub fn counter(&self) -> u64 {
        self.0 as u64
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SequenceNumber {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        parse_decimal_u128(text)
            .map(SequenceNumber)
            .ok_or_else(|| ValueError::SequenceNumber { text: text.to_owned() })
    }
}

/// A validated partition key (1–256 Unicode characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey(String);

impl PartitionKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for PartitionKey {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        let len_chars = text.chars().count();
        if !(1..=256).contains(&len_chars) {
            return Err(ValueError::PartitionKey { len_chars });
        }
        Ok(PartitionKey(text.to_owned()))
    }
}

/// A record as a producer hands it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition_key: PartitionKey,
    /// Overrides the MD5 of the partition key for routing, as Kinesis' ExplicitHashKey does.
    pub explicit_hash_key: Option<HashKey>,
    pub data: Vec<u8>,
}

impl Record {
    pub fn new(partition_key: PartitionKey, data: Vec<u8>) -> Record {
        Record { partition_key, explicit_hash_key: None, data }
    }

    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key.unwrap_or_else(|| HashKey::from_partition_key(self.partition_key.as_str()))
    }
}

/// A record as a reader gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub sequence: SequenceNumber,
    pub partition_key: String,
    pub data: Vec<u8>,
    /// Server time at which the record was made durable, milliseconds since the epoch.
    pub arrival_ms: i64,
    /// Whether it was stored encrypted at rest.
    pub encrypted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn md5_hash_key_matches_kinesis() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661, read big-endian.
        assert_eq!(HashKey::from_partition_key("a").0, 0x0cc175b9c0f1b6a831c399e269772661_u128);
    }

    #[test]
    fn shard_id_renders_like_kinesis() {
        assert_eq!(ShardId(7).to_string(), "shardId-000000000007");
        assert_eq!("shardId-000000000007".parse::<ShardId>(), Ok(ShardId(7)));
        assert!("shardId-".parse::<ShardId>().is_err());
        assert!("shard-1".parse::<ShardId>().is_err());
        assert!("shardId-99999999999999".parse::<ShardId>().is_err());
    }

    #[test]
    fn uniform_ranges_match_kinesis_two_shards() {
        let ranges = HashKeyRange::uniform(2);
        // Kinesis' two-shard stream: 0..170141183460469231731687303715884105727 and the rest.
        assert_eq!(ranges[0].end(), 170141183460469231731687303715884105727);
        assert_eq!(ranges[1].start(), 170141183460469231731687303715884105728);
        assert_eq!(ranges[1].end(), u128::MAX);
    }

    #[test]
    fn names_are_validated() {
        assert!("my-stream_1.x".parse::<StreamName>().is_ok());
        assert!("".parse::<StreamName>().is_err());
        assert!("bad/name".parse::<StreamName>().is_err());
        assert!("x".repeat(129).parse::<StreamName>().is_err());
        assert!("".parse::<PartitionKey>().is_err());
        assert!("é".repeat(256).parse::<PartitionKey>().is_ok());
        assert!("k".repeat(257).parse::<PartitionKey>().is_err());
        assert!("-1".parse::<SequenceNumber>().is_err());
        assert!("+1".parse::<HashKey>().is_err());
        assert!("340282366920938463463374607431768211456".parse::<HashKey>().is_err());
    }

    proptest! {
        #[test]
        fn uniform_ranges_tile_the_space(count in 1u32..200) {
            let ranges = HashKeyRange::uniform(count);
            prop_assert_eq!(ranges.len(), count as usize);
            prop_assert_eq!(ranges[0].start(), 0);
            prop_assert_eq!(ranges.last().unwrap().end(), u128::MAX);
            for pair in ranges.windows(2) {
                prop_assert_eq!(pair[0].end() + 1, pair[1].start());
            }
        }

        #[test]
        fn split_then_merge_is_identity(start in any::<u128>(), end in any::<u128>(), at in any::<u128>()) {
            let (start, end) = if start <= end { (start, end) } else { (end, start) };
            let range = HashKeyRange::new(start, end).unwrap();
            match range.split_at(HashKey(at)) {
                Some((left, right)) => {
                    prop_assert!(left.contains(HashKey(at - 1)) && right.contains(HashKey(at)));
                    prop_assert_eq!(left.merge(&right), Some(range));
                    prop_assert_eq!(right.merge(&left), Some(range));
                }
                None => prop_assert!(at <= start || at > end),
            }
        }

        #[test]
        fn sequence_numbers_round_trip_and_order(epoch in any::<u64>(), counter in any::<u64>(), other in any::<u64>()) {
            let seq = SequenceNumber::new(epoch, counter);
            prop_assert_eq!(seq.to_string().parse::<SequenceNumber>(), Ok(seq));
            prop_assert_eq!((seq.epoch(), seq.counter()), (epoch, counter));
            if epoch < u64::MAX {
                // Any number of a later epoch is above every number of this one.
                prop_assert!(SequenceNumber::new(epoch + 1, other) > seq);
            }
        }

        #[test]
        fn hash_keys_round_trip(key in any::<u128>()) {
            prop_assert_eq!(HashKey(key).to_string().parse::<HashKey>(), Ok(HashKey(key)));
        }
    }
}
