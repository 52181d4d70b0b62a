//! Garbage fed to the catalog's schema decoders (every schema version, the first byte picks
//! one) and to the positions journal's: a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| millrace_core::fuzzing::catalog_record(data));
