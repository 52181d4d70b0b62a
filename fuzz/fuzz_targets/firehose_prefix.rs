//! Garbage fed to Firehose's prefix-expression parser: it answers a template or a typed
//! error and never panics; a template written back parses to itself, and evaluating it at
//! any instant never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace_net::firehose::prefix::{Template, Values, check_pair};

fuzz_target!(|data: &[u8]| {
    let (ms, text) = match data.split_first_chunk::<8>() {
        Some((ms, rest)) => (i64::from_le_bytes(*ms) / 1024, String::from_utf8_lossy(rest)),
        None => (0, String::from_utf8_lossy(data)),
    };
    if let Ok(template) = Template::parse(&text) {
        let again = Template::parse(&template.to_string()).expect("the canonical text parses");
        assert_eq!(again, template, "the canonical text {:?} of {text:?}", template.to_string());
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
