//! Garbage fed to SigV4 verification: an Authorization header, X-Amz-Date and body from the
//! fuzzer. Verification answers with an AWS error or (never, in practice) success; it never
//! panics. Also feeds the shard-iterator token decoder.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use millrace_net::kinesis::iterator::ShardIterator;
use millrace_net::sigv4::{self, SignedRequest};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let authorization = parts.next().unwrap_or("").to_owned();
    let date = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let body = parts.next().unwrap_or("").as_bytes().to_vec();
    let _ = authorization.parse::<sigv4::Authorization>();
    let headers = vec![
        ("host".to_owned(), "localhost".to_owned()),
        ("x-amz-date".to_owned(), date),
        ("authorization".to_owned(), authorization.clone()),
    ];
    let secrets = HashMap::from([("AKID".to_owned(), "secret".to_owned())]);
    let (path, query) = path.split_once('?').unwrap_or((&path, ""));
    let request = SignedRequest { method: "POST", path, query, headers: &headers, body: &body };
    let _ = sigv4::verify(&request, &secrets, 1_795_000_000_000);
    let _ = ShardIterator::decode(&authorization, &[3; 32], 0, 300_000);
});
