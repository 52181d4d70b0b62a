//! Garbage fed to the native protocol's frame decoder: an error, or a message that encodes
//! back to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::quic::frame;

fuzz_target!(|data: &[u8]| {
    if let Ok((request_id, message, used)) = frame::decode_frame(data) {
        assert_eq!(message.to_frame(request_id), &data[..used]);
    }
    if let Some((&kind, payload)) = data.split_first() {
        let _ = frame::Message::decode(kind % 12, payload);
    }
});
