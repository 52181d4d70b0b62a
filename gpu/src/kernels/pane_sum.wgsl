// COUNT and SUM of 64-bit integers per pane: each event adds its value into its pane, the
// integer arithmetic of `agg::Sum`, so the GPU and the CPU agree exactly whatever the order.
// WGSL has 32-bit atomics only, so a value is offset to unsigned (v + 2^63, its order key:
// the high bit flipped) and added as four 16-bit limbs into four 32-bit counters; the host
// recombines sum = Σ limb_i · 2^(16 i) − count · 2^63. A limb counter cannot wrap while a
// dispatch holds at most 65,535 events (the host splits larger batches).

struct Batch {
    count: u32,
}

@group(0) @binding(0) var<storage, read> panes: array<u32>;
@group(0) @binding(1) var<storage, read> values: array<u32>;
// Per pane: count, then limbs 0 (lowest) to 3.
@group(0) @binding(2) var<storage, read_write> sums: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> batch: Batch;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let stride = groups.x * 256u;
    for (var index = id.x; index < batch.count; index = index + stride) {
        let low = values[2u * index];
        let high = values[2u * index + 1u] ^ 0x80000000u;
        let at = panes[index] * 5u;
        atomicAdd(&sums[at], 1u);
        atomicAdd(&sums[at + 1u], low & 0xffffu);
        atomicAdd(&sums[at + 2u], low >> 16u);
        atomicAdd(&sums[at + 3u], high & 0xffffu);
        atomicAdd(&sums[at + 4u], high >> 16u);
    }
}
