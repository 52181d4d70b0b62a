//! Garbage fed to SigV4 verification: an Authorization header, X-Amz-Date, a payload claim,
//! the path and the body from the fuzzer. Verification answers with an AWS error or (never,
//! in practice) success; it never panics. Also feeds the shard-iterator token decoder.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use millrace_net::aws::sigv4::{self, Payload, SignedRequest};
use millrace_net::kinesis::iterator::ShardIterator;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(5, '\n');
    let authorization = parts.next().unwrap_or("").to_owned();
    let date = parts.next().unwrap_or("").to_owned();
    let claim = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let body = parts.next().unwrap_or("").as_bytes().to_vec();
    let _ = authorization.parse::<sigv4::Authorization>();
    let mut headers = vec![
        (":authority".to_owned(), "localhost".to_owned()),
        ("host".to_owned(), "localhost".to_owned()),
        ("x-amz-date".to_owned(), date),
        ("authorization".to_owned(), authorization.clone()),
    ];
    if !claim.is_empty() {
        headers.push(("x-amz-content-sha256".to_owned(), claim));
    }
    let secrets = HashMap::from([("AKID".to_owned(), "secret".to_owned())]);
    let (path, query) = path.split_once('?').unwrap_or((&path, ""));
    for payload in [Payload::Body(&body), Payload::Unread] {
        let request = SignedRequest { method: "POST", path, query, headers: &headers, payload };
        let _ = sigv4::verify(&request, &secrets, "kinesis", 1_795_000_000_000);
    }
    let _ = ShardIterator::decode(&authorization, &[3; 32], 0, 300_000);
});
