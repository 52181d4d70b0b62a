//! The hash that approximate aggregates (COUNT DISTINCT, TOP-K) key on, made of 32-bit
//! operations only: WGSL has no 64-bit integers, and the kernels must compute the same bits.
//! MurmurHash3 x86_32 (Austin Appleby, public domain) under two seeds gives the two halves.

const SEED_HIGH: u32 = 0x9747_b28c;
const SEED_LOW: u32 = 0x5bd1_e995;

/// MurmurHash3 x86_32 of `bytes`.
pub fn murmur3_32(bytes: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = bytes.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes(block.try_into().expect("4 bytes"));
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (index, byte) in tail.iter().enumerate() {
            k |= u32::from(*byte) << (8 * index);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= bytes.len() as u32;
    fmix32(h)
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The 64-bit hash of a value's canonical bytes (see [`canonical_i64`], [`canonical_f64`];
/// strings hash their UTF-8 bytes).
pub fn hash64(bytes: &[u8]) -> u64 {
    (u64::from(murmur3_32(bytes, SEED_HIGH)) << 32) | u64::from(murmur3_32(bytes, SEED_LOW))
}

/// The bytes an integer hashes as.
pub fn canonical_i64(value: i64) -> [u8; 8] {
    value.to_le_bytes()
}

/// The bytes a double hashes as: one zero and one NaN, so that values SQL calls equal hash
/// equal.
pub fn canonical_f64(value: f64) -> [u8; 8] {
    let bits = if value == 0.0 {
        0
    } else if value.is_nan() {
        0x7ff8_0000_0000_0000
    } else {
        value.to_bits()
    };
    bits.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_the_reference_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2e4f_f723);
    }

    #[test]
    fn equal_values_hash_equal() {
        assert_eq!(hash64(&canonical_f64(0.0)), hash64(&canonical_f64(-0.0)));
        assert_eq!(hash64(&canonical_f64(f64::NAN)), hash64(&canonical_f64(-f64::NAN)));
        assert_ne!(hash64(&canonical_i64(1)), hash64(&canonical_i64(2)));
    }
}
