//! Aggregate state, the CPU reference of the kernels.
//!
//! The rule every state here keeps: it is integer, and folding values in any order, or
//! folding parts and merging them in any order, gives the same state bit for bit (`==`). That
//! is what lets a window be combined from its panes, and a GPU that adds in whatever order
//! its threads run agree with this code exactly. Floating point enters only when a result is
//! finished (an average, an estimate), from integer state, on the CPU.
//!
//! - COUNT: [`Count`].
//! - SUM and AVG: [`Sum`], in fixed point: integers and decimals (their unscaled value) are
//!   exact; a DOUBLE is rounded to a multiple of 2^-32 first, then summed exactly, so that
//!   the sum does not depend on the order (floating-point addition would). Magnitudes of
//!   2^63 and more, infinities and NaN are counted aside and give IEEE's answer.
//! - MIN and MAX: [`MinMax`], over order-preserving integer keys of the values.
//! - COUNT DISTINCT (approximate): [`Distinct`], exact up to [`distinct::EXACT_MAX`] values,
//!   then HyperLogLog.
//! - Percentiles (approximate): [`Histogram`], log buckets indexed by the value's bits.
//! - TOP-K: [`TopK`], exact counts per item, ranked when finished.

pub mod distinct;
pub mod hash;
pub mod histogram;
pub mod topk;

pub use distinct::Distinct;
pub use histogram::Histogram;
pub use topk::TopK;

/// State that combines with another of its kind, as if it had seen both inputs.
pub trait Merge {
    fn merge(&mut self, other: &Self);
}

/// COUNT: values (or rows) seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count(pub u64);

impl Count {
    pub fn add(&mut self) {
        self.0 += 1;
    }
}

impl Merge for Count {
    fn merge(&mut self, other: &Count) {
        self.0 += other.0;
    }
}

/// Fraction bits of the fixed point a DOUBLE is summed in.
pub const FRACTION_BITS: u32 = 32;

/// A 192-bit two's-complement accumulator: the sum of up to 2^64 fixed-point values below
/// 2^95 in magnitude never wraps, and addition modulo 2^192 is order-independent anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wide {
    low: u128,
    high: i64,
}

impl Wide {
    pub fn add(&mut self, value: i128) {
        let (low, carry) = self.low.overflowing_add(value as u128);
        let extension = if value < 0 { -1i64 } else { 0 };
        self.low = low;
        self.high = self.high.wrapping_add(extension).wrapping_add(i64::from(carry));
    }

    fn merge(&mut self, other: &Wide) {
        let (low, carry) = self.low.overflowing_add(other.low);
        self.low = low;
        self.high = self.high.wrapping_add(other.high).wrapping_add(i64::from(carry));
    }

    /// The value, where it fits in an `i128`.
    pub fn to_i128(self) -> Option<i128> {
        let low = self.low as i128;
        let fits = (self.high == 0 && low >= 0) || (self.high == -1 && low < 0);
        fits.then_some(low)
    }

    /// The value as a double: the nearest one where it fits in an `i128`, else its magnitude's
    /// halves rounded once each (the same on every machine). The sign is taken off first:
    /// adding a negative high half to a low half near 2^128 would cancel to 0.
    pub fn to_f64(self) -> f64 {
        if let Some(value) = self.to_i128() {
            return value as f64;
        }
        let negative = self.high < 0;
        let (low, high) = if negative {
            let low = (!self.low).wrapping_add(1);
            let high = (!self.high).wrapping_add(i64::from(low == 0));
            (low, high as u64)
        } else {
            (self.low, self.high as u64)
        };
        let magnitude = (high as f64) * 2f64.powi(128) + (low as f64);
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }
}

/// Values a fixed-point sum cannot hold, counted aside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Specials {
    nan: u64,
    positive: u64,
    negative: u64,
}

/// SUM (and AVG, with its count) of integers, decimals or doubles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum {
    total: Wide,
    count: u64,
    specials: Specials,
}

impl Sum {
    /// An integer, or a decimal's unscaled value (the scale is the column's).
    pub fn add_i64(&mut self, value: i64) {
        self.total.add(i128::from(value));
        self.count += 1;
    }

    pub fn add_f64(&mut self, value: f64) {
        self.count += 1;
        match fixed_of_f64(value) {
            Some(fixed) => self.total.add(fixed),
            None if value.is_nan() => self.specials.nan += 1,
            None if value > 0.0 => self.specials.positive += 1,
            None => self.specials.negative += 1,
        }
    }

    /// Adds an exact partial sum of `count` integers (from a kernel).
    pub fn add_partial(&mut self, total: i128, count: u64) {
        self.total.add(total);
        self.count += count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of integers (or unscaled decimals); `None` past `i128`.
    pub fn total_i128(&self) -> Option<i128> {
        self.total.to_i128()
    }

    /// The sum of doubles.
    pub fn total_f64(&self) -> f64 {
        let Specials { nan, positive, negative } = self.specials;
        if nan > 0 || (positive > 0 && negative > 0) {
            return f64::NAN;
        }
        if positive > 0 {
            return f64::INFINITY;
        }
        if negative > 0 {
            return f64::NEG_INFINITY;
        }
        self.total.to_f64() / 2f64.powi(FRACTION_BITS as i32)
    }

    /// AVG of doubles; `None` for no values (SQL's NULL).
    pub fn mean_f64(&self) -> Option<f64> {
        (self.count > 0).then(|| self.total_f64() / self.count as f64)
    }
}

/// A [`Sum`]'s state, field by field, to store it and rebuild it exactly (a checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SumParts {
    pub total_low: u128,
    pub total_high: i64,
    pub count: u64,
    pub nan: u64,
    pub positive: u64,
    pub negative: u64,
}

impl Sum {
    pub fn to_parts(&self) -> SumParts {
        SumParts {
            total_low: self.total.low,
            total_high: self.total.high,
            count: self.count,
            nan: self.specials.nan,
            positive: self.specials.positive,
            negative: self.specials.negative,
        }
    }

    pub fn from_parts(parts: SumParts) -> Sum {
        Sum {
            total: Wide { low: parts.total_low, high: parts.total_high },
            count: parts.count,
            specials: Specials { nan: parts.nan, positive: parts.positive, negative: parts.negative },
        }
    }
}

impl Merge for Sum {
    fn merge(&mut self, other: &Sum) {
        self.total.merge(&other.total);
        self.count += other.count;
        self.specials.nan += other.specials.nan;
        self.specials.positive += other.specials.positive;
        self.specials.negative += other.specials.negative;
    }
}

/// `value` × 2^[`FRACTION_BITS`], rounded to the nearest integer (ties away from zero);
/// `None` for NaN, the infinities and magnitudes of 2^63 or more.
pub fn fixed_of_f64(value: f64) -> Option<i128> {
    if !value.is_finite() || value.abs() >= 2f64.powi(63) {
        return None;
    }
    // Exact: scaling by a power of two only moves the exponent.
    let scaled = value * 2f64.powi(FRACTION_BITS as i32);
    Some(scaled.round() as i128)
}

/// MIN and MAX over order keys: integers that sort as the values do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinMax {
    min: u64,
    max: u64,
    count: u64,
}

impl Default for MinMax {
    fn default() -> MinMax {
        MinMax { min: u64::MAX, max: 0, count: 0 }
    }
}

impl MinMax {
    pub fn add_key(&mut self, key: u64) {
        self.min = self.min.min(key);
        self.max = self.max.max(key);
        self.count += 1;
    }

    pub fn add_i64(&mut self, value: i64) {
        self.add_key(key_of_i64(value));
    }

    pub fn add_f64(&mut self, value: f64) {
        self.add_key(key_of_f64(value));
    }

    /// Adds the extremes of `count` values found elsewhere (a kernel); nothing for 0 values.
    pub fn add_partial(&mut self, min_key: u64, max_key: u64, count: u64) {
        if count > 0 {
            self.merge(&MinMax { min: min_key, max: max_key, count });
        }
    }

    /// The smallest and largest keys; `None` for no values.
    pub fn keys(&self) -> Option<(u64, u64)> {
        (self.count > 0).then_some((self.min, self.max))
    }
}

impl Merge for MinMax {
    fn merge(&mut self, other: &MinMax) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
    }
}

/// The order key of an integer.
pub fn key_of_i64(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

pub fn i64_of_key(key: u64) -> i64 {
    (key ^ (1 << 63)) as i64
}

/// The order key of a double: IEEE's total order (-NaN < -inf < … < -0 < +0 < … < +inf < NaN),
/// with one NaN.
pub fn key_of_f64(value: f64) -> u64 {
    let bits = if value.is_nan() { 0x7ff8_0000_0000_0000 } else { value.to_bits() };
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

pub fn f64_of_key(key: u64) -> f64 {
    let bits = if key >> 63 == 1 { key & !(1 << 63) } else { !key };
    f64::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negative_and_wide_totals_read_back_as_doubles() {
        // A negative total's high half is -1 and its low half near 2^128: adding them as
        // doubles would cancel to 0.
        assert_eq!(fold_sum(&[-1.0, -2.0]).total_f64(), -3.0);
        assert_eq!(fold_sum(&[-0.25, 0.125]).total_f64(), -0.125);
        assert_eq!(fold_sum(&[1e15, 1e15, -1e15]).total_f64(), 1e15);
        assert_eq!(fold_sum(&[-1e15; 4]).total_f64(), -4e15);
        let mut wide = Wide::default();
        for _ in 0..4 {
            wide.add(i128::MIN);
        }
        assert_eq!(wide.to_f64(), -(2f64.powi(129)));
        assert_eq!(fold_sum(&[-5e12, 2.5]).mean_f64(), Some((-5e12 + 2.5) / 2.0));
    }

    fn fold_sum(values: &[f64]) -> Sum {
        let mut sum = Sum::default();
        values.iter().for_each(|value| sum.add_f64(*value));
        sum
    }

    proptest! {
        #[test]
        fn sums_and_extremes_do_not_depend_on_order_or_on_how_they_are_split(
            values in proptest::collection::vec(prop_oneof![
                any::<f64>(),
                -1e6f64..1e6,
                (-1_000_000i64..1_000_000).prop_map(|v| v as f64 / 100.0),
            ], 0..200),
            cut in 0usize..200,
            seed in any::<u64>(),
        ) {
            let whole = fold_sum(&values);
            let mut shuffled = values.clone();
            let mut state = seed;
            for index in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(index, (state >> 33) as usize % (index + 1));
            }
            prop_assert_eq!(fold_sum(&shuffled), whole);
            let cut = cut.min(values.len());
            let mut left = fold_sum(&shuffled[..cut]);
            left.merge(&fold_sum(&shuffled[cut..]));
            prop_assert_eq!(left, whole);

            let (mut a, mut b) = (MinMax::default(), MinMax::default());
            values.iter().for_each(|value| a.add_f64(*value));
            shuffled.iter().rev().for_each(|value| b.add_f64(*value));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn integer_sums_are_exact(values in proptest::collection::vec(any::<i64>(), 0..100)) {
            let mut sum = Sum::default();
            values.iter().for_each(|value| sum.add_i64(*value));
            let exact: i128 = values.iter().map(|value| i128::from(*value)).sum();
            prop_assert_eq!(sum.total_i128(), Some(exact));
        }

        #[test]
        fn order_keys_sort_as_the_values_do(a in any::<f64>(), b in any::<f64>(), x in any::<i64>(), y in any::<i64>()) {
            prop_assert_eq!(key_of_i64(x).cmp(&key_of_i64(y)), x.cmp(&y));
            prop_assert_eq!(i64_of_key(key_of_i64(x)), x);
            if !a.is_nan() && !b.is_nan() {
                prop_assert_eq!(key_of_f64(a).cmp(&key_of_f64(b)), a.total_cmp(&b));
                prop_assert_eq!(f64_of_key(key_of_f64(a)).to_bits(), a.to_bits());
            }
        }
    }

    #[test]
    fn double_sums_are_exact_at_the_fixed_point_and_ieee_at_the_edges() {
        let sum = fold_sum(&[0.1, 0.2, 0.3]);
        assert!((sum.total_f64() - 0.6).abs() < 1e-9);
        assert_eq!(sum.mean_f64(), Some(sum.total_f64() / 3.0));
        assert_eq!(fold_sum(&[1.0, f64::INFINITY]).total_f64(), f64::INFINITY);
        assert!(fold_sum(&[f64::INFINITY, f64::NEG_INFINITY]).total_f64().is_nan());
        assert!(fold_sum(&[1.0, f64::NAN]).total_f64().is_nan());
        assert_eq!(fold_sum(&[1e300]).total_f64(), f64::INFINITY);
        assert_eq!(Sum::default().mean_f64(), None);
        // Large sums carry into the high word and come back.
        let mut wide = Wide::default();
        for _ in 0..4 {
            wide.add(i128::MAX);
        }
        wide.add(-i128::MAX);
        assert_eq!(wide.to_i128(), None);
        assert_eq!(wide.to_f64(), 3.0 * i128::MAX as f64);
    }
}
