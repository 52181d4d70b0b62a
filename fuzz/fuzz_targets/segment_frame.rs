//! Garbage fed to the segment decoders: the frame, slot and segment-header decoders, and
//! whole-segment recovery over a simulated disk holding the bytes. They must return errors
//! or a valid prefix, never panic, never read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| millrace_core::fuzzing::segment_frame(data));
