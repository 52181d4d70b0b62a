//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): each feeds bytes from
//! the fuzzer to a decoder of the engine's on-disk formats and checks what must hold. Not
//! part of the engine's API.
#![forbid(unsafe_code)]

use futures_lite::future::block_on;

use crate::format::{self, BLOCK_BYTES};
use crate::segment;
use crate::sim::{Faults, SimDisk};
use crate::storage::{Storage, StorageFile};

/// The frame, slot and segment-header decoders, and whole-segment recovery over a simulated
/// disk holding the bytes (after a valid header, and as they are): errors or a valid prefix,
/// never a panic, never a read out of bounds.
pub fn segment_frame(data: &[u8]) {
    if let Ok(frame) = format::decode_frame(data) {
        assert!(frame.len <= data.len());
        let _ = format::access_batch_body(frame.body, frame.meta.record_count);
    }
    let _ = format::decode_slot(data);
    let _ = format::decode_segment_header(data);
    for with_header in [true, false] {
        block_on(async {
            let disk = SimDisk::new(0, Faults::default());
            disk.create_dir_all("s").await.expect("in memory");
            let file = disk.create("s/00000000000000000001.seg", 0).await.expect("in memory");
            let mut bytes = if with_header { format::encode_segment_header(1, 0, 0, 0) } else { Vec::new() };
            bytes.extend_from_slice(data);
            bytes.resize(bytes.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES, 0);
            if !bytes.is_empty() {
                file.write_at(0, &bytes).await.expect("in memory");
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
}

/// The rkyv batch-body validation (the first four bytes pick the record count): it rejects
/// or accepts, and what it accepts can be walked.
pub fn batch_body(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let count = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) % 64;
    if let Ok(view) = format::access_batch_body(&data[4..], count) {
        for record in view.batch().records.iter() {
            let _ = (record.partition_key.len(), record.data.len());
        }
    }
}

/// A catalog or positions body in any schema: an error or a value, never a panic.
pub fn catalog_record(data: &[u8]) {
    let Some((&schema, body)) = data.split_first() else { return };
    let _ = crate::catalog::schema::decode(u32::from(schema % 4), body);
    let _ = <crate::positions::Positions as crate::journal::JournalState>::replay(None, 1, body);
}
