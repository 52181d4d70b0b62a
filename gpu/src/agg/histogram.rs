//! Approximate percentiles: a histogram of log buckets whose index is the top bits of the
//! value's order key (sign, exponent and the first [`SUB_BITS`] bits of the mantissa), so a
//! kernel finds a value's bucket with a shift and no floating point. Each bucket spans a
//! relative width of 2^-SUB_BITS; its midpoint answers, within half of that of the true value.
//! Counts add, so the histogram is order-independent and merges exactly.

use std::collections::BTreeMap;

use super::{f64_of_key, key_of_f64, Merge};

/// Mantissa bits kept in a bucket index.
pub const SUB_BITS: u32 = 7;
const SHIFT: u32 = 52 - SUB_BITS;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: BTreeMap<u32, u64>,
    total: u64,
}

/// The bucket of a value.
pub fn bucket_of(value: f64) -> u32 {
    (key_of_f64(value) >> SHIFT) as u32
}

/// The value a bucket answers with: the midpoint of the values it holds.
pub fn value_of(bucket: u32) -> f64 {
    let low = f64_of_key(u64::from(bucket) << SHIFT);
    let high = f64_of_key(((u64::from(bucket) + 1) << SHIFT) - 1);
    if low.is_finite() && high.is_finite() {
        low / 2.0 + high / 2.0
    } else {
        low
    }
}

impl Histogram {
    pub fn add_f64(&mut self, value: f64) {
        self.add_bucket(bucket_of(value), 1);
    }

    pub fn add_bucket(&mut self, bucket: u32, count: u64) {
        *self.counts.entry(bucket).or_default() += count;
        self.total += count;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The buckets with values, in order, and their counts.
    pub fn buckets(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.counts.iter().map(|(bucket, count)| (*bucket, *count))
    }

    /// The nearest-rank percentile `q` in [0, 1]: the value at rank ⌈q·n⌉ (at least 1);
    /// `None` for no values.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (bucket, count) in &self.counts {
            seen += count;
            if seen >= rank {
                return Some(value_of(*bucket));
            }
        }
        self.counts.keys().next_back().map(|bucket| value_of(*bucket))
    }
}

impl Merge for Histogram {
    fn merge(&mut self, other: &Histogram) {
        for (bucket, count) in &other.counts {
            self.add_bucket(*bucket, *count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn percentiles_are_within_half_a_bucket_of_the_exact_nearest_rank(
            mut values in proptest::collection::vec(prop_oneof![-1e9f64..1e9, 1e-6f64..1e-3], 1..300),
            q in 0.0f64..=1.0,
        ) {
            let mut histogram = Histogram::default();
            values.iter().for_each(|value| histogram.add_f64(*value));
            values.sort_by(f64::total_cmp);
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1];
            let answer = histogram.percentile(q).unwrap();
            let bound = exact.abs() * 2f64.powi(-(SUB_BITS as i32) - 1) * 1.0001;
            prop_assert!((answer - exact).abs() <= bound, "q {} exact {} answer {}", q, exact, answer);
        }

        #[test]
        fn histograms_merge_exactly(values in proptest::collection::vec(any::<f64>(), 0..200), cut in 0usize..200) {
            let cut = cut.min(values.len());
            let (mut whole, mut left, mut right) = (Histogram::default(), Histogram::default(), Histogram::default());
            values.iter().for_each(|value| whole.add_f64(*value));
            values[..cut].iter().for_each(|value| left.add_f64(*value));
            values[cut..].iter().rev().for_each(|value| right.add_f64(*value));
            right.merge(&left);
            prop_assert_eq!(right, whole);
        }
    }

    #[test]
    fn no_values_no_percentile() {
        assert_eq!(Histogram::default().percentile(0.5), None);
    }
}
