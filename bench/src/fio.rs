//! The disk baseline: what `fio` gets from the same directory the engine writes to, so that
//! engine numbers can be read as a fraction of what the device allows. Three jobs:
//! sequential 1 MiB direct writes (the bandwidth ceiling the RESULT line's `bw_ratio` uses),
//! 4 KiB direct writes each followed by fdatasync (the floor under any durable
//! acknowledgement's latency), and 1 MiB direct writes each followed by fdatasync into fresh
//! space (the ceiling of durable appends, which is what a log that acknowledges only durable
//! bytes can reach; on a disk with a volatile write cache it is well below the first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// What fio measured on the data directory's device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FioBaseline {
    pub write_mb_per_s: f64,
    pub fsync_latency_us_p99: u64,
    /// 1 MiB write + fdatasync, one at a time, into a fresh file.
    pub durable_mb_per_s: f64,
}

/// Fails with an installation hint unless `fio` can be run.
pub fn ensure_installed() -> Result<()> {
    match Command::new("fio").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => bail!(
            "`fio --version` failed ({}): {}; reinstall it with `apt-get install fio`",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => {
            bail!("--vs-fio needs fio, which is not on PATH ({error}): install it with `apt-get install fio`")
        }
    }
}

/// Removes fio's scratch file however the measurement ends, so that a failed run does not
/// leave a gigabyte behind in the data directory.
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs both fio jobs in `dir`, each for `runtime`. Short runs use smaller files: with
/// `--time_based` fio wraps around the file, so size only bounds the disk space used and the
/// time spent allocating it.
pub fn measure(dir: &Path, runtime: Duration) -> Result<FioBaseline> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = ScratchFile(dir.join(format!("millrace-bench-fio-{}.tmp", std::process::id())));
    let short = runtime < Duration::from_secs(5);
    let runtime_s = runtime.as_secs().max(1);

    let seq_size = if short { "256M" } else { "1G" };
    let seq = run_job(
        &scratch.0,
        runtime_s,
        &[
            "--name=seqwrite",
            "--rw=write",
            "--bs=1M",
            "--direct=1",
            "--ioengine=io_uring",
            "--iodepth=8",
            &format!("--size={seq_size}"),
        ],
    )?;
    let write_bytes_per_s = write_bandwidth_bytes_per_s(&seq)?;
    // A fresh file for the latency job, so that its writes are not overwrites of blocks the
    // first job already allocated (the engine's segments are new files too).
    let _ = std::fs::remove_file(&scratch.0);

    let fsync_size = if short { "64M" } else { "256M" };
    let fsync = run_job(
        &scratch.0,
        runtime_s,
        &[
            "--name=fsync",
            "--rw=write",
            "--bs=4k",
            "--direct=1",
            "--ioengine=sync",
            "--fdatasync=1",
            &format!("--size={fsync_size}"),
        ],
    )?;
    let fsync_latency_ns_p99 = sync_latency_ns_p99(&fsync)?;
    let _ = std::fs::remove_file(&scratch.0);

    // Nominally larger than any run writes, so that fio never wraps around to overwrite what
    // it wrote (overwrites need no allocation and sync faster: a run that wrapped measured
    // 762 MB/s here against 355-381 MB/s for fresh space); without fallocate only what is
    // written takes space. Every write lands on fresh space, as the engine's appends do.
    let durable_size = "16G";
    let durable = run_job(
        &scratch.0,
        runtime_s,
        &[
            "--name=durable",
            "--rw=write",
            "--bs=1M",
            "--direct=1",
            "--ioengine=psync",
            "--fdatasync=1",
            "--fallocate=none",
            &format!("--size={durable_size}"),
        ],
    )?;
    let durable_bytes_per_s = write_bandwidth_bytes_per_s(&durable)?;

    Ok(FioBaseline {
        write_mb_per_s: write_bytes_per_s / 1e6,
        fsync_latency_us_p99: fsync_latency_ns_p99.div_ceil(1000),
        durable_mb_per_s: durable_bytes_per_s / 1e6,
    })
}

fn run_job(file: &Path, runtime_s: u64, job_args: &[&str]) -> Result<Value> {
    let output = Command::new("fio")
        .args(job_args)
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--runtime={runtime_s}"))
        .arg("--time_based")
        .arg("--output-format=json")
        .output()
        .context("running fio")?;
    if !output.status.success() {
        bail!(
            "fio {} failed ({}): {}",
            job_args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_output(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("reading the output of fio {}", job_args.join(" ")))
}

/// Parses fio's `--output-format=json` output. fio may print warnings ("fio: ...") on stdout
/// before the JSON document, so parsing starts at the first `{`.
pub fn parse_output(stdout: &str) -> Result<Value> {
    let start = stdout.find('{').context("fio printed no JSON")?;
    let json: Value = serde_json::from_str(&stdout[start..]).context("fio's JSON does not parse")?;
    let job = first_job(&json)?;
    if let Some(code) = job.get("error").and_then(Value::as_i64).filter(|&code| code != 0) {
        bail!("fio job reports error {code}");
    }
    Ok(json)
}

fn first_job(json: &Value) -> Result<&Value> {
    json.pointer("/jobs/0").context("fio's JSON has no jobs[0]")
}

/// `jobs[0].write.bw_bytes`: the job's write bandwidth in bytes per second.
pub fn write_bandwidth_bytes_per_s(json: &Value) -> Result<f64> {
    let bandwidth = first_job(json)?
        .pointer("/write/bw_bytes")
        .and_then(Value::as_f64)
        .context("fio's JSON has no jobs[0].write.bw_bytes")?;
    if bandwidth <= 0.0 {
        bail!("fio measured no write bandwidth");
    }
    Ok(bandwidth)
}

/// The 99th percentile of fdatasync latency in nanoseconds. fio reports it under
/// `jobs[0].sync.lat_ns.percentile`; builds or job types without it (the percentile map is
/// absent when no syncs ran) fall back to the write completion latency, which is what a
/// synchronous write costs when the device acknowledges writes durably.
pub fn sync_latency_ns_p99(json: &Value) -> Result<u64> {
    let job = first_job(json)?;
    ["/sync/lat_ns/percentile/99.000000", "/write/clat_ns/percentile/99.000000"]
        .iter()
        .find_map(|pointer| job.pointer(pointer).and_then(Value::as_u64))
        .context("fio's JSON has neither jobs[0].sync.lat_ns nor jobs[0].write.clat_ns percentile 99")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from real fio 3.33 output on the development machine: one document per job.
    const SAMPLE: &str = include_str!("../tests/data/fio-sample.json");

    fn sample_job(name: &str) -> String {
        let all: Value = serde_json::from_str(SAMPLE).unwrap();
        all[name].to_string()
    }

    #[test]
    fn reads_sequential_write_bandwidth() {
        let json = parse_output(&sample_job("seqwrite")).unwrap();
        assert_eq!(write_bandwidth_bytes_per_s(&json).unwrap(), 1_664_647_086.0);
    }

    #[test]
    fn reads_fdatasync_p99_from_sync_section() {
        let json = parse_output(&sample_job("fsync")).unwrap();
        assert_eq!(sync_latency_ns_p99(&json).unwrap(), 166_912);
    }

    #[test]
    fn falls_back_to_write_completion_latency_without_sync_percentiles() {
        // The sequential job ran no syncs: its `sync.lat_ns` has no percentile map.
        let json = parse_output(&sample_job("seqwrite")).unwrap();
        assert_eq!(sync_latency_ns_p99(&json).unwrap(), 7_831_552);
    }

    #[test]
    fn skips_warnings_before_the_document_and_rejects_job_errors() {
        let noisy = format!("fio: some warning\n{}", sample_job("fsync"));
        assert!(parse_output(&noisy).is_ok());
        let failed = r#"{"jobs": [{"jobname": "x", "error": 5}]}"#;
        assert!(parse_output(failed).is_err());
        assert!(parse_output("no json here").is_err());
    }
}
