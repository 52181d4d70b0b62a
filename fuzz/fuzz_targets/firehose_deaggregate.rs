//! Garbage fed to the splitters of records that hold several: KPL aggregates (with and
//! without a valid checksum), JSON sub-records and delimited ones. None panics; a KPL
//! aggregate rebuilt from what was found splits back to the same records; JSON values are
//! non-overlapping slices of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::firehose::deaggregate::{delimited, json_values, kpl, kpl_aggregate, KPL_MAGIC};

fuzz_target!(|data: &[u8]| {
    let mut record = KPL_MAGIC.to_vec();
    record.extend_from_slice(data);
    let _ = kpl(data);
    if let Some(parts) = kpl(&record) {
        let rebuilt = kpl_aggregate("k", &parts);
        assert_eq!(kpl(&rebuilt).expect("a rebuilt aggregate"), parts);
    }
    if let Ok(values) = json_values(data) {
        let total: usize = values.iter().map(|value| value.len()).sum();
        assert!(total <= data.len());
    }
    let pieces = delimited(data, b"\n");
    assert!(pieces.iter().all(|piece| !piece.is_empty() && !piece.contains(&b'\n')));
});
