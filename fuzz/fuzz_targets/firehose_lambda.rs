//! Garbage fed to the decoder of a Lambda transformation's answer, as if for three records
//! sent: it answers one outcome per record sent, in order, or a batch failure with one of
//! AWS's codes, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::firehose::lambda::decode_response;

fuzz_target!(|data: &[u8]| {
    let sent = ["a", "b", "c"];
    match decode_response(data, &sent) {
        Ok(outcomes) => assert_eq!(outcomes.len(), sent.len()),
        Err(failure) => assert!(
            matches!(
                failure.code,
                "Lambda.JsonProcessingException" | "Lambda.MissingRecordId" | "Lambda.DuplicatedRecordId"
            ),
            "{failure}"
        ),
    }
});
