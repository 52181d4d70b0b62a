//! Garbage fed to the event-stream message decoder: it returns an error or a message that
//! encodes back to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::aws::eventstream::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok((message, used)) = Message::decode(data) {
        assert_eq!(message.encode(), &data[..used]);
    }
});
