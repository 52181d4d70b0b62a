//! An analytics application's snapshot records (what a restart reads back from its log),
//! damaged or garbage: the input is cut into records at the lengths its first bytes give.
//! A checkpoint or an error, never a panic; a checkpoint it accepts encodes back to records
//! that decode to the same checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::analytics::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let (cuts, mut rest) = data.split_at(data.len().min(4));
    let mut records = Vec::new();
    for cut in cuts {
        let at = (*cut as usize * 7).min(rest.len());
        records.push(rest[..at].to_vec());
        rest = &rest[at..];
    }
    records.push(rest.to_vec());
    let _ = Checkpoint::chunks(&records[0]);
    for count in 1..=records.len() {
        if let Ok(checkpoint) = Checkpoint::decode(&records[..count]) {
            let again = Checkpoint::decode(&checkpoint.encode()).expect("its own encoding decodes");
            assert_eq!(again, checkpoint);
        }
    }
});
