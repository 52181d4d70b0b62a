//! COUNT DISTINCT, approximate: the distinct hashes themselves up to [`EXACT_MAX`], so that
//! small counts are exact, then a HyperLogLog of 2^[`PRECISION`] registers (standard error
//! 1.04/√4096 ≈ 1.6%). Registers merge by maximum, sets by union, so the state depends only
//! on the set of values seen: order-independent, and the same whichever part densified first.

use std::collections::BTreeSet;

use super::Merge;

/// Register-index bits.
pub const PRECISION: u32 = 12;
pub const REGISTERS: usize = 1 << PRECISION;
/// Distinct values counted exactly; one more turns the state into registers. KDA documents
/// COUNT_DISTINCT_ITEMS_TUMBLING as exact up to 10,000 items.
pub const EXACT_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distinct {
    Exact(BTreeSet<u64>),
    Registers(Box<[u8; REGISTERS]>),
}

impl Default for Distinct {
    fn default() -> Distinct {
        Distinct::Exact(BTreeSet::new())
    }
}

impl Distinct {
    /// A value, by its [`hash64`](super::hash::hash64).
    pub fn add_hash(&mut self, hash: u64) {
        match self {
            Distinct::Exact(set) => {
                set.insert(hash);
                if set.len() > EXACT_MAX {
                    *self = Distinct::Registers(registers_of(set));
                }
            }
            Distinct::Registers(registers) => insert(registers, hash),
        }
    }

    /// The estimated number of distinct values (exact up to [`EXACT_MAX`]).
    pub fn estimate(&self) -> u64 {
        let registers = match self {
            Distinct::Exact(set) => return set.len() as u64,
            Distinct::Registers(registers) => registers,
        };
        let m = REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let (mut inverse_sum, mut zeros) = (0.0f64, 0u32);
        for register in registers.iter() {
            inverse_sum += 2f64.powi(-i32::from(*register));
            zeros += u32::from(*register == 0);
        }
        let raw = alpha * m * m / inverse_sum;
        // Small range: linear counting (with 64-bit hashes no large-range correction).
        let estimate = if raw <= 2.5 * m && zeros > 0 { m * (m / f64::from(zeros)).ln() } else { raw };
        estimate.round() as u64
    }
}

impl Merge for Distinct {
    fn merge(&mut self, other: &Distinct) {
        match other {
            Distinct::Exact(set) => set.iter().for_each(|hash| self.add_hash(*hash)),
            Distinct::Registers(theirs) => {
                if let Distinct::Exact(set) = self {
                    *self = Distinct::Registers(registers_of(set));
                }
                let Distinct::Registers(ours) = self else { unreachable!("made registers above") };
                for (ours, theirs) in ours.iter_mut().zip(theirs.iter()) {
                    *ours = (*ours).max(*theirs);
                }
            }
        }
    }
}

/// The registers of a batch of integers, however many are distinct: what the GPU kernel
/// (`kernels/distinct.wgsl`) computes, bit for bit.
pub fn registers_of_i64(values: &[i64]) -> Box<[u8; REGISTERS]> {
    let mut registers = Box::new([0u8; REGISTERS]);
    for value in values {
        insert(&mut registers, super::hash::hash64(&super::hash::canonical_i64(*value)));
    }
    registers
}

fn registers_of(set: &BTreeSet<u64>) -> Box<[u8; REGISTERS]> {
    let mut registers = Box::new([0u8; REGISTERS]);
    set.iter().for_each(|hash| insert(&mut registers, *hash));
    registers
}

/// The register is the hash's top bits; its rank is the position of the first 1 bit after
/// them (at most 64 - PRECISION + 1).
fn insert(registers: &mut [u8; REGISTERS], hash: u64) {
    let index = (hash >> (64 - PRECISION)) as usize;
    let rest = hash << PRECISION;
    let rank = (rest.leading_zeros() + 1).min(64 - PRECISION + 1) as u8;
    registers[index] = registers[index].max(rank);
}

#[cfg(test)]
mod tests {
    use super::super::hash::{canonical_i64, hash64};
    use super::*;
    use proptest::prelude::*;

    fn of(values: impl Iterator<Item = i64>) -> Distinct {
        let mut distinct = Distinct::default();
        values.for_each(|value| distinct.add_hash(hash64(&canonical_i64(value))));
        distinct
    }

    #[test]
    fn exact_up_to_the_threshold_then_within_the_error_bound() {
        assert_eq!(of(0..0).estimate(), 0);
        assert_eq!(of((0..1000).chain(0..1000)).estimate(), 1000);
        assert_eq!(of(0..EXACT_MAX as i64).estimate(), EXACT_MAX as u64);
        for n in [20_000u64, 100_000, 1_000_000] {
            let estimate = of(0..n as i64).estimate() as f64;
            let error = (estimate - n as f64).abs() / n as f64;
            assert!(error < 0.05, "{n} distinct estimated {estimate}");
        }
    }

    proptest! {
        #[test]
        fn the_state_depends_only_on_the_set_of_values(
            // Past EXACT_MAX distinct values in some cases, so that registers merge too.
            values in proptest::collection::vec(0i64..30_000, 0..14_000),
            cuts in proptest::collection::vec(0usize..14_000, 0..4),
        ) {
            let whole = of(values.iter().copied());
            let mut sorted_desc = values.clone();
            sorted_desc.sort_unstable_by(|a, b| b.cmp(a));
            prop_assert_eq!(&of(sorted_desc.into_iter()), &whole);
            // Parts merged in reverse order equal the whole.
            let mut bounds: Vec<usize> = cuts.into_iter().map(|cut| cut.min(values.len())).collect();
            bounds.push(0);
            bounds.push(values.len());
            bounds.sort_unstable();
            let mut merged = Distinct::default();
            for pair in bounds.windows(2).rev() {
                merged.merge(&of(values[pair[0]..pair[1]].iter().copied()));
            }
            prop_assert_eq!(merged, whole);
        }
    }
}
