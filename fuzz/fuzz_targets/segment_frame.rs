//! Garbage fed to the segment decoders: the frame, slot and segment-header decoders, and
//! whole-segment recovery over a simulated disk holding the bytes. They must return errors
//! or a valid prefix, never panic, never read out of bounds.
#![no_main]

use futures_lite::future::block_on;
use libfuzzer_sys::fuzz_target;
use millrace_core::format::{self, BLOCK_BYTES};
use millrace_core::segment;
use millrace_core::sim::{Faults, SimDisk};
use millrace_core::storage::{Storage, StorageFile};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = format::decode_frame(data) {
        assert!(frame.len <= data.len());
        let _ = format::access_batch_body(frame.body, frame.meta.record_count);
    }
    let _ = format::decode_slot(data);
    let _ = format::decode_segment_header(data);

    // The same bytes as a segment file (segment id 1), after a valid header so that
    // recovery gets past it, and also as-is.
    for with_header in [true, false] {
        block_on(async {
            let disk = SimDisk::new(0, Faults::default());
            disk.create_dir_all("s").await.unwrap();
            let file = disk.create("s/00000000000000000001.seg", 0).await.unwrap();
            let mut bytes = if with_header { format::encode_segment_header(1, 0, 0) } else { Vec::new() };
            bytes.extend_from_slice(data);
            bytes.resize(bytes.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES, 0);
            if !bytes.is_empty() {
                file.write_at(0, &bytes).await.unwrap();
            }
            if let Ok(Some((recovered, _))) = segment::recover(&disk, "s", 1).await {
                let _ = recovered
                    .scan(0, |_, frame| {
                        let _ = format::access_batch_body(frame.body, frame.meta.record_count);
                        Ok(true)
                    })
                    .await;
            }
        });
    }
});
