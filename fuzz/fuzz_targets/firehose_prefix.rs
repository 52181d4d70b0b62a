//! Garbage fed to Firehose's prefix-expression parser: it answers a template or a typed
//! error and never panics; a template written back parses to itself, and evaluating it at
//! any instant never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::firehose::prefix::{MAX_REQUEST_CHARS, Template, Values, check_pair};

fuzz_target!(|data: &[u8]| {
    let (ms, text) = match data.split_first_chunk::<8>() {
        Some((ms, rest)) => (i64::from_le_bytes(*ms) / 1024, String::from_utf8_lossy(rest)),
        None => (0, String::from_utf8_lossy(data)),
    };
    if let Ok(template) = Template::parse(&text) {
        // The canonical text may quote more than the input did; the request limit applies
        // to what clients send, so only a canonical text within it must parse back.
        let canonical = template.to_string();
        if canonical.chars().count() <= MAX_REQUEST_CHARS {
            let again = Template::parse(&canonical).expect("the canonical text parses");
            assert_eq!(again, template, "the canonical text {canonical:?} of {text:?}");
        }
        let mut random = || "0123456789a".to_owned();
        let key = |key: &str| Some(key.to_owned());
        let _ = template.render(&mut Values {
            arrival_ms: ms,
            error_output_type: Some("processing-failed"),
            query_key: &key,
            lambda_key: &key,
            random: &mut random,
        });
    }
    let (prefix, errors) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = check_pair(Some(prefix), Some(errors));
});
