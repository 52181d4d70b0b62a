//! Garbage fed to the native protocol's frame decoder: an error, or a message that encodes
//! back to exactly the bytes it came from. The payload decoder is also fed directly, with
//! every kind (1..=14, and unknown ones) and both flag values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::quic::frame;

fuzz_target!(|data: &[u8]| {
    if let Ok((request_id, message, used)) = frame::decode_frame(data) {
        assert_eq!(message.to_frame(request_id).expect("a decoded message encodes"), &data[..used]);
    }
    if let Some((&selector, payload)) = data.split_first() {
        let kind = selector & 0x0f;
        let flags = u16::from(selector >> 7);
        if let Ok(message) = frame::Message::decode_with_flags(kind, flags, payload) {
            assert_eq!(message.encode_payload().expect("a decoded payload encodes"), payload);
        }
    }
});
