// MIN and MAX of 64-bit integers per pane, over their order keys (the value with its high bit
// flipped, `agg::key_of_i64`), the same integers `agg::MinMax` keeps. WGSL has 32-bit atomics
// only, so it takes two passes over the batch: `high` finds each pane's extreme high words
// (and counts), then `low`, for the events whose high word is the extreme one, the extreme
// low words. Per pane: count, min high, min low, max high, max low; the host starts the mins
// at all ones and the maxes at zero.

struct Batch {
    count: u32,
}

@group(0) @binding(0) var<storage, read> panes: array<u32>;
@group(0) @binding(1) var<storage, read> values: array<u32>;
@group(0) @binding(2) var<storage, read_write> extremes: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> batch: Batch;

@compute @workgroup_size(256)
fn high(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let stride = groups.x * 256u;
    for (var index = id.x; index < batch.count; index = index + stride) {
        let key_high = values[2u * index + 1u] ^ 0x80000000u;
        let at = panes[index] * 5u;
        atomicAdd(&extremes[at], 1u);
        atomicMin(&extremes[at + 1u], key_high);
        atomicMax(&extremes[at + 3u], key_high);
    }
}

@compute @workgroup_size(256)
fn low(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let stride = groups.x * 256u;
    for (var index = id.x; index < batch.count; index = index + stride) {
        let key_low = values[2u * index];
        let key_high = values[2u * index + 1u] ^ 0x80000000u;
        let at = panes[index] * 5u;
        if (key_high == atomicLoad(&extremes[at + 1u])) {
            atomicMin(&extremes[at + 2u], key_low);
        }
        if (key_high == atomicLoad(&extremes[at + 3u])) {
            atomicMax(&extremes[at + 4u], key_low);
        }
    }
}
