//! `millrace serve` as a user runs it: starts on a fresh data directory with no config,
//! says where it stores, and stops cleanly on SIGTERM; starts again on the same directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn serve_until_ready_then_term(dir: &std::path::Path) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "serve",
            "--cores",
            "2",
            "--http-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("MILLRACE_ACCESS_KEY_ID")
        .env_remove("MILLRACE_SECRET_ACCESS_KEY")
        .stderr(Stdio::piped())
        .spawn()
        .expect("millrace starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.contains("stop with Ctrl-C");
        seen.push(line);
        if ready {
            break;
        }
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    seen.extend(lines.map(|line| line.unwrap()));
    assert!(child.wait().unwrap().success(), "exit status after SIGTERM: {seen:?}");
    seen
}

#[test]
fn serve_starts_logs_and_stops_on_sigterm() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve");
    let _ = std::fs::remove_dir_all(&dir);
    let first = serve_until_ready_then_term(&dir);
    // It says where it stores: the data directory it was given, as an absolute path.
    let canonical = std::fs::canonicalize(&dir).unwrap();
    let stores_there = format!("data in {},", canonical.display());
    assert!(
        first.iter().any(|line| line.contains("storage engine ready") && line.contains(&stores_there)),
        "{first:?}"
    );
    assert!(first.iter().any(|line| line.contains("0 streams recovered")), "a fresh directory: {first:?}");
    assert!(first.iter().any(|line| line.contains("stopped cleanly")), "{first:?}");
    assert!(
        first.iter().any(|line| line.contains("Kinesis API listening on http://127.0.0.1:")),
        "{first:?}"
    );
    assert!(dir.join("catalog").is_dir(), "the data directory was created");
    assert!(dir.join("positions").is_dir(), "with its positions journal");
    // The key pair is generated and shown on the first start only.
    assert!(first.iter().any(|line| line.contains("generated a key pair")), "{first:?}");
    assert!(first.iter().any(|line| line.contains("AWS_SECRET_ACCESS_KEY=")), "{first:?}");
    let second = serve_until_ready_then_term(&dir);
    assert!(second.iter().any(|line| line.contains("0 streams recovered")), "{second:?}");
    assert!(!second.iter().any(|line| line.contains("AWS_SECRET_ACCESS_KEY=")), "{second:?}");
}
