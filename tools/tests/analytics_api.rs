//! Kinesis Data Analytics against real clients: runs `tools/tests/analytics/test_analytics.py`
//! (boto3's `kinesisanalytics` and `kinesisanalyticsv2` clients) against the real `millrace
//! serve` binary: AWS's documented applications fed through data streams, their outputs checked
//! against answers computed from the input, restarts with LAST_STOPPED_POINT and a kill -9.
//!
//! Needs the Python venv that `tools/test.sh` sets up in `.venv` (boto3 and awscli, pinned in
//! `tools/tests/kinesis/requirements.txt`); `MILLRACE_PYTHON` points at another interpreter.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn boto3_kinesisanalytics_v1_and_v2_against_the_real_server() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("MILLRACE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    assert!(
        python.exists(),
        "no Python with boto3 at {}: run tools/test.sh (it creates .venv with boto3 and the AWS CLI), or set \
         MILLRACE_PYTHON",
        python.display()
    );
    let status = Command::new(&python)
        .args(["-m", "unittest", "-v", "tools/tests/analytics/test_analytics.py"])
        .current_dir(&root)
        .env("MILLRACE_BIN", env!("CARGO_BIN_EXE_millrace"))
        .env("TMPDIR", env!("CARGO_TARGET_TMPDIR"))
        .status()
        .expect("python runs");
    assert!(status.success(), "the analytics suite failed (its output is above)");
}
