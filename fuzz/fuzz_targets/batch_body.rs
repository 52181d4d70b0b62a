//! Garbage fed to the rkyv batch-body validation: it must reject or accept, never panic or
//! read out of bounds (bytecheck validates every relative pointer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_core::format;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let count = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) % 64;
    if let Ok(view) = format::access_batch_body(&data[4..], count) {
        for record in view.batch().records.iter() {
            let _ = (record.partition_key.len(), record.data.len());
        }
    }
});
