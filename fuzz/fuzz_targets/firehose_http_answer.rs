//! Garbage fed to the judge of an HTTP endpoint's answer: any status, content type and body
//! give a verdict (delivered, retry or permanent) and never a panic; only a 200 with a
//! conforming body delivers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::firehose::http_endpoint::{Answer, judge, parse_body};

fuzz_target!(|data: &[u8]| {
    let Some((&[high, low, kind], body)) = data.split_first_chunk::<3>() else { return };
    let status = u16::from_be_bytes([high, low]) % 700;
    let content_type = match kind % 3 {
        0 => None,
        1 => Some("application/json"),
        _ => Some("text/plain"),
    };
    let answer = judge(status, content_type, None, body, "request-1");
    if answer == Answer::Delivered {
        assert_eq!(status, 200);
        assert!(parse_body(content_type, None, body, "request-1").is_ok());
    }
});
