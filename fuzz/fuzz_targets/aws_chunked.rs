//! Garbage fed to the aws-chunked decoder, signed and unsigned, in pieces of any size: it
//! hands out data or an error, never panics, and never hands out data of a chunk whose
//! signature did not check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::aws::chunked::ChunkedDecoder;
use millrace_net::aws::sigv4::{signing_key, Verified, STREAMING_SIGNED};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let verified = Verified {
        access_key: "AKID".into(),
        scope: "20260101/us-east-1/kinesis/aws4_request".into(),
        amz_date: "20260101T000000Z".into(),
        signature: "0".repeat(64),
        signing_key: signing_key("secret", "20260101", "us-east-1", "kinesis"),
        content_sha256: Some(STREAMING_SIGNED.into()),
    };
    let mut signed = ChunkedDecoder::new(&verified);
    let mut out = Vec::new();
    for bytes in body.chunks(piece) {
        if signed.push(bytes, &mut out).is_err() {
            break;
        }
    }
    // Without the secret nothing can be signed right: nothing comes out.
    assert!(out.is_empty(), "forged chunks were handed out");
    let mut unsigned = ChunkedDecoder::unsigned();
    for bytes in body.chunks(piece) {
        if unsigned.push(bytes, &mut out).is_err() {
            break;
        }
    }
    let _ = unsigned.finish();
});
