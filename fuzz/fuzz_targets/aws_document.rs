//! Garbage fed to the AWS document decoders (JSON 1.1 and CBOR, picked by the first byte):
//! they return a value or a SerializationException, never panic, and whatever decodes
//! encodes back to something that decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::aws::document::{self, Protocol, Request};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let protocol = if selector & 1 == 0 { Protocol::Json } else { Protocol::Cbor };
    if let Ok(decoded) = document::decode(protocol, body) {
        let again = document::encode(protocol, &decoded);
        document::decode(protocol, &again).expect("an encoded request decodes");
        // The accessors the operations use never panic on what decoded.
        let request = Request::new(protocol, &decoded);
        for member in ["StreamName", "Data", "Timestamp", "Records", "Limit", "Tags", "ShardFilter"] {
            let _ = request.str_opt(member);
            let _ = request.blob_opt(member);
            let _ = request.timestamp_opt(member);
            let _ = request.int_opt(member);
            let _ = request.list_opt(member);
            let _ = request.string_map_opt(member);
            let _ = request.structure_opt(member);
        }
    }
});
