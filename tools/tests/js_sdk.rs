//! The AWS SDK for JavaScript v3 against the real `millrace serve`: the stock
//! `@aws-sdk/client-kinesis` (pinned in `tools/tests/js/package.json`) with its default
//! HTTP/2 handler and SigV4 drives create, put, get, a split read through to the children,
//! and an HTTP/2 SubscribeToShard session resumed from its ContinuationSequenceNumber
//! (`tools/tests/js/kinesis.mjs`).
//!
//! Needs Node.js and `tools/tests/js/node_modules`, which `tools/test.sh` installs
//! (`npm ci`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[test]
fn the_javascript_sdk_v3_over_http2_against_the_real_server() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let js = root.join("tools/tests/js");
    assert!(
        js.join("node_modules/@aws-sdk/client-kinesis").is_dir(),
        "no @aws-sdk/client-kinesis in {}: run tools/test.sh (it runs npm ci there)",
        js.display()
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("js-sdk");
    let _ = std::fs::remove_dir_all(&dir);
    let (access_key, secret) = ("AKIDJSSDKTEST", "js/sdk+secret/for/the/suite");
    let mut server = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "serve",
            "--cores",
            "2",
            "--segment-mib",
            "4",
            "--http-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env("MILLRACE_ACCESS_KEY_ID", access_key)
        .env("MILLRACE_SECRET_ACCESS_KEY", secret)
        .stderr(Stdio::piped())
        .spawn()
        .expect("millrace starts");
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut endpoint = None;
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find("listening on http://") {
            let rest = &line[at + "listening on ".len()..];
            endpoint = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
        let ready = line.contains("stop with Ctrl-C");
        log.push(line);
        if ready {
            break;
        }
    }
    // Keep draining the server's log so that it never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let endpoint = endpoint.unwrap_or_else(|| panic!("millrace did not start: {log:#?}"));
    let status = Command::new("node")
        .arg("kinesis.mjs")
        .current_dir(&js)
        .env("MILLRACE_ENDPOINT", &endpoint)
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("NODE_NO_WARNINGS", "1")
        .status()
        .expect("node runs");
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let exited = server.wait().unwrap();
    let rest = drain.join().unwrap();
    assert!(
        status.success(),
        "the JavaScript SDK test failed (its output is above); server log: {log:#?} {rest:#?}"
    );
    assert!(exited.success(), "the server did not stop cleanly: {rest:#?}");
}
