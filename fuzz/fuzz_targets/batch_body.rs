//! Garbage fed to the rkyv batch-body validation: it must reject or accept, never panic or
//! read out of bounds (bytecheck validates every relative pointer).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| millrace_core::fuzzing::batch_body(data));
