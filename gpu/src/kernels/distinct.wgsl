// COUNT DISTINCT registers: the HyperLogLog registers of a batch of 64-bit integers, the same
// bits as `agg::distinct` computes on the CPU. Each value is hashed with MurmurHash3 x86_32
// under two seeds (`agg::hash::hash64` of its little-endian bytes), its register is the top
// PRECISION bits of the hash, its rank the position of the first 1 bit after them, and the
// register keeps the largest rank (atomicMax: the order threads run in does not matter).

const PRECISION: u32 = 12u;
const RANK_MAX: u32 = 53u; // 64 - PRECISION + 1
const SEED_HIGH: u32 = 0x9747b28cu;
const SEED_LOW: u32 = 0x5bd1e995u;

struct Batch {
    // Values in the batch (each two words: low, high).
    count: u32,
}

@group(0) @binding(0) var<storage, read> values: array<u32>;
@group(0) @binding(1) var<storage, read_write> registers: array<atomic<u32>, 4096>;
@group(0) @binding(2) var<uniform> batch: Batch;

fn rotl(x: u32, r: u32) -> u32 {
    return (x << r) | (x >> (32u - r));
}

fn mix_block(h: u32, block: u32) -> u32 {
    var k = block * 0xcc9e2d51u;
    k = rotl(k, 15u) * 0x1b873593u;
    let x = rotl(h ^ k, 13u);
    return x * 5u + 0xe6546b64u;
}

fn fmix(h0: u32) -> u32 {
    var h = h0;
    h = h ^ (h >> 16u);
    h = h * 0x85ebca6bu;
    h = h ^ (h >> 13u);
    h = h * 0xc2b2ae35u;
    return h ^ (h >> 16u);
}

// MurmurHash3 x86_32 of 8 bytes: two blocks, no tail, length 8.
fn murmur8(low: u32, high: u32, seed: u32) -> u32 {
    let h = mix_block(mix_block(seed, low), high);
    return fmix(h ^ 8u);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let stride = groups.x * 256u;
    for (var index = id.x; index < batch.count; index = index + stride) {
        let low = values[2u * index];
        let high = values[2u * index + 1u];
        let hash_high = murmur8(low, high, SEED_HIGH);
        let hash_low = murmur8(low, high, SEED_LOW);
        let slot = hash_high >> (32u - PRECISION);
        // The 64-bit hash shifted left by PRECISION, as two words.
        let rest_high = (hash_high << PRECISION) | (hash_low >> (32u - PRECISION));
        let rest_low = hash_low << PRECISION;
        var zeros = countLeadingZeros(rest_high);
        if (rest_high == 0u) {
            zeros = 32u + countLeadingZeros(rest_low);
        }
        atomicMax(&registers[slot], min(zeros + 1u, RANK_MAX));
    }
}
