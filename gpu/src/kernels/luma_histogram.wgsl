// The luma histogram of one frame: 256 bins of pixel counts, the integer arithmetic of
// `frame::luma_histogram`, so the GPU and the CPU agree exactly whatever the order.
// Pixels arrive packed four to a word (little-endian: pixel 4i is the low byte of word i);
// `batch.count` is the number of pixels, so the padding of the last word is never counted.
// Each workgroup counts into its own bins in workgroup memory, then adds them to the output
// once: 256 global atomics per workgroup instead of one per pixel.

struct Batch {
    count: u32,
}

@group(0) @binding(0) var<storage, read> pixels: array<u32>;
@group(0) @binding(1) var<storage, read_write> bins: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> batch: Batch;

var<workgroup> local_bins: array<atomic<u32>, 256>;

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    atomicStore(&local_bins[lane], 0u);
    workgroupBarrier();
    let words = (batch.count + 3u) / 4u;
    let stride = groups.x * 256u;
    for (var word = id.x; word < words; word = word + stride) {
        let packed = pixels[word];
        for (var byte = 0u; byte < 4u; byte = byte + 1u) {
            if (word * 4u + byte < batch.count) {
                atomicAdd(&local_bins[(packed >> (8u * byte)) & 0xffu], 1u);
            }
        }
    }
    workgroupBarrier();
    let count = atomicLoad(&local_bins[lane]);
    if (count > 0u) {
        atomicAdd(&bins[lane], count);
    }
}
