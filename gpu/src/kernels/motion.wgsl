// Motion between two frames of the same size: the sum of absolute luma differences (SAD) and
// the number of pixels that changed by more than a threshold, the integer arithmetic of
// `frame::motion`. The SAD can pass 2^32 (an 8K frame reaches 8.5e9), so it is kept in two
// words: atomicAdd returns the old low word, and a sum that wrapped it carries one into the
// high word, exactly, in any order. A thread's own partial sum stays far below 2^32 (it sees
// at most words / (groups · 256) words of 4 pixels of at most 255).

struct Batch {
    count: u32,
}

@group(0) @binding(0) var<storage, read> previous: array<u32>;
@group(0) @binding(1) var<storage, read> next: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
// sad low, sad high, changed pixels, unused.
@group(0) @binding(3) var<storage, read_write> totals: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> batch: Batch;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let threshold = params[0];
    let words = (batch.count + 3u) / 4u;
    let stride = groups.x * 256u;
    var sad = 0u;
    var changed = 0u;
    for (var word = id.x; word < words; word = word + stride) {
        let a = previous[word];
        let b = next[word];
        for (var byte = 0u; byte < 4u; byte = byte + 1u) {
            if (word * 4u + byte < batch.count) {
                let x = (a >> (8u * byte)) & 0xffu;
                let y = (b >> (8u * byte)) & 0xffu;
                let difference = max(x, y) - min(x, y);
                sad = sad + difference;
                if (difference > threshold) {
                    changed = changed + 1u;
                }
            }
        }
    }
    if (sad > 0u) {
        let old = atomicAdd(&totals[0], sad);
        if (old > 0xffffffffu - sad) {
            atomicAdd(&totals[1], 1u);
        }
    }
    if (changed > 0u) {
        atomicAdd(&totals[2], changed);
    }
}
