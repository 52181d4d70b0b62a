//! `millrace-bench firehose`: PutRecordBatch load from concurrent producers into a
//! delivery stream of a Millrace server whose S3 destination is its local-folder default,
//! while a poller watches the bucket's folder. Every record carries its producer, number and
//! send time, so each object that appears is checked (every acknowledged record delivered,
//! duplicates counted) and timed: put-to-object latency (CloudWatch's DataFreshness, seen
//! from outside) per record, with hdrhistogram percentiles.
//!
//! Delivered MB/s is the payload of the records delivered divided by the time from the first
//! put to the last object; the engine's own ingest figure is `millrace-bench engine` on the
//! same disk, run in the same sitting (`bench/RESULTS.md`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use millrace_net::aws::Value;
use millrace_net::client::{ClientError, Credentials, KinesisClient};
use millrace_net::firehose::compress;
use millrace_net::firehose::key::Compression;

/// producer (u16), number (u64), send time in µs since the run's start (u64).
const HEADER_BYTES: usize = 18;
const BUCKET: &str = "millrace-bench";

#[derive(Debug, Clone, clap::Args)]
pub struct FirehoseArgs {
    /// The server's HTTP endpoint.
    #[arg(long)]
    pub endpoint: String,
    /// The server's data directory: its key pair, and the folder its default S3 destination
    /// writes to (`DIR/s3/millrace-bench/`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Seconds of load.
    #[arg(long = "duration", value_name = "SECS")]
    pub duration_s: u64,
    /// Concurrent producers, one connection each.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Payload bytes of each record (at least 18).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per PutRecordBatch (at most 500).
    #[arg(long, default_value_t = 500)]
    pub batch_records: usize,
    /// The delivery stream's BufferingHints.SizeInMBs.
    #[arg(long, default_value_t = 5)]
    pub size_mib: u32,
    /// The delivery stream's BufferingHints.IntervalInSeconds.
    #[arg(long, default_value_t = 1)]
    pub interval_secs: u32,
    /// UNCOMPRESSED, GZIP, ZIP, Snappy or HADOOP_SNAPPY.
    #[arg(long, default_value = "UNCOMPRESSED")]
    pub compression: String,
    /// Delivery alone: put this many MiB (at most 120) while the stream holds everything
    /// (hints 128 MiB / 900 s), then set the hints to --size-mib and 0 s (so that the last,
    /// partial object is not held for the interval) and time how fast the backlog is
    /// delivered, with nothing else running (`drain_mb_per_s`).
    #[arg(long, value_name = "MIB")]
    pub drain_mib: Option<u64>,
    /// Region for signing.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

impl FirehoseArgs {
    fn validate(&self) -> Result<Compression> {
        ensure!(self.duration_s >= 1, "--duration must be at least 1 second");
        ensure!(self.producers >= 1, "--producers must be at least 1");
        ensure!((1..=500).contains(&self.batch_records), "--batch-records must be 1..=500");
        ensure!(self.record_bytes >= HEADER_BYTES, "--record-bytes must be at least {HEADER_BYTES}");
        ensure!(self.record_bytes * self.batch_records <= 4 << 20, "a batch must stay within 4 MiB");
        ensure!(self.drain_mib.is_none_or(|mib| (1..=120).contains(&mib)), "--drain-mib must be 1..=120");
        Compression::parse(&self.compression, "--compression").map_err(anyhow::Error::msg)
    }

    fn client(&self) -> Result<KinesisClient> {
        let (found, _) = millrace_net::secrets::credentials(&self.data_dir)
            .with_context(|| format!("reading the key pair in {}", self.data_dir.display()))?;
        let credentials =
            Credentials { access_key_id: found.access_key_id, secret_access_key: found.secret_access_key };
        Ok(KinesisClient::new(&self.endpoint, Some(credentials), &self.region)?
            .for_service("Firehose_20150804", "firehose"))
    }
}

/// What the poller found.
struct Seen {
    records: HashSet<(u16, u64)>,
    duplicates: u64,
    objects: u64,
    payload_bytes: u64,
    freshness_us: Histogram<u64>,
    last_object: Option<Instant>,
}

pub fn run(args: &FirehoseArgs) -> Result<()> {
    let compression = args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    runtime.block_on(run_async(args, compression))
}

async fn run_async(args: &FirehoseArgs, compression: Compression) -> Result<()> {
    let mut admin = args.client()?;
    let name =
        format!("bench-{}-{}", std::process::id(), millrace_core::Clock::now_ms(&millrace_core::SystemClock));
    let destination = Value::map()
        .with("RoleARN", "arn:aws:iam::000000000000:role/millrace-bench")
        .with("BucketARN", format!("arn:aws:s3:::{BUCKET}"))
        .with("Prefix", format!("{name}/"))
        .with("ErrorOutputPrefix", format!("{name}-errors/"))
        .with("BufferingHints", {
            let (size, interval) =
                if args.drain_mib.is_some() { (128, 900) } else { (args.size_mib, args.interval_secs) };
            Value::map().with("SizeInMBs", size).with("IntervalInSeconds", interval)
        })
        .with("CompressionFormat", compression.as_str());
    let request = Value::map()
        .with("DeliveryStreamName", name.as_str())
        .with("ExtendedS3DestinationConfiguration", destination);
    admin.call("CreateDeliveryStream", &request).await.context("creating the bench delivery stream")?;
    let folder = args.data_dir.join("s3").join(BUCKET).join(&name);
    let outcome = measure(args, &name, &folder, compression).await;
    admin
        .call("DeleteDeliveryStream", &Value::map().with("DeliveryStreamName", name.as_str()))
        .await
        .context("deleting the bench delivery stream")?;
    let _ = std::fs::remove_dir_all(&folder);
    outcome
}

async fn measure(args: &FirehoseArgs, name: &str, folder: &Path, compression: Compression) -> Result<()> {
    println!(
        "firehose: {} delivery stream {name}, {} producers, {} records of {} bytes per PutRecordBatch, \
         hints {} MiB / {} s, {}, objects under {}",
        args.endpoint,
        args.producers,
        args.batch_records,
        args.record_bytes,
        args.size_mib,
        args.interval_secs,
        compression.as_str(),
        folder.display()
    );
    let start = Instant::now();
    let until = start + Duration::from_secs(args.duration_s);
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Seen {
        records: HashSet::new(),
        duplicates: 0,
        objects: 0,
        payload_bytes: 0,
        freshness_us: crate::report::new_latency_histogram(),
        last_object: None,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (folder, seen, stop, record_bytes) =
            (folder.to_owned(), seen.clone(), stop.clone(), args.record_bytes);
        tokio::task::spawn_blocking(move || poll(&folder, compression, record_bytes, start, &seen, &stop))
    };
    let mut producers = Vec::new();
    for producer in 0..args.producers {
        let client = args.client()?;
        let (args, name, acked, failed) = (args.clone(), name.to_owned(), acked.clone(), failed.clone());
        producers.push(tokio::spawn(async move {
            produce(client, &args, &name, producer as u16, (start, until), &acked, &failed).await
        }));
    }
    for producer in producers {
        producer.await.context("a producer panicked")??;
    }
    let put_s = start.elapsed().as_secs_f64();
    // Delivery alone: the backlog is complete; let the worker deliver it.
    let drain_from = match args.drain_mib {
        Some(_) => {
            let buffered = seen.lock().expect("not poisoned").records.len();
            ensure!(buffered == 0, "{buffered} records were delivered before the drain started: put less");
            let update = Value::map()
                .with("DeliveryStreamName", name)
                .with("CurrentDeliveryStreamVersionId", "1")
                .with("DestinationId", "destinationId-000000000001")
                .with(
                    "ExtendedS3DestinationUpdate",
                    Value::map().with(
                        "BufferingHints",
                        Value::map().with("SizeInMBs", args.size_mib).with("IntervalInSeconds", 0u32),
                    ),
                );
            let mut admin = args.client()?;
            let from = Instant::now();
            admin.call("UpdateDestination", &update).await.context("setting the drain's hints")?;
            Some(from)
        }
        None => None,
    };
    // Everything acknowledged must arrive: within the interval plus a margin.
    let acked = acked.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(u64::from(args.interval_secs) + 60);
    while seen.lock().expect("not poisoned").records.len() < acked as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    poller.await.context("the poller panicked")??;
    let seen = seen.lock().expect("not poisoned");
    let delivered = seen.records.len() as u64;
    let missing = acked.saturating_sub(delivered);
    let span_s = seen.last_object.map_or(put_s, |last| last.duration_since(start).as_secs_f64()).max(1e-9);
    let mb_per_s = seen.payload_bytes as f64 / 1e6 / span_s;
    let put_mb_per_s = acked as f64 * args.record_bytes as f64 / 1e6 / put_s;
    let p = |q: f64| seen.freshness_us.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "put: {acked} records acknowledged ({put_mb_per_s:.2} MB/s), {} refused",
        failed.load(Ordering::Relaxed)
    );
    println!(
        "delivered: {delivered} records in {} objects ({mb_per_s:.2} MB/s), {} duplicates, {missing} missing",
        seen.objects, seen.duplicates
    );
    println!(
        "put-to-object latency (DataFreshness): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p(0.5),
        p(0.99),
        seen.freshness_us.max() as f64 / 1000.0
    );
    if missing > 0 {
        bail!("{missing} acknowledged records were not delivered within the interval plus 60 s");
    }
    let drain = match (drain_from, seen.last_object) {
        (Some(from), Some(last)) => {
            let rate = seen.payload_bytes as f64 / 1e6 / last.duration_since(from).as_secs_f64().max(1e-9);
            println!(
                "drain: the backlog of {acked} records delivered at {rate:.2} MB/s with nothing else running"
            );
            format!(" drain_mb_per_s={rate:.2}")
        }
        _ => String::new(),
    };
    println!(
        "RESULT mb_per_s={mb_per_s:.2} put_mb_per_s={put_mb_per_s:.2} records_per_s={:.0} freshness_p50_ms={:.1} \
         freshness_p99_ms={:.1} freshness_max_ms={:.1} objects={} duplicates={} missing={missing}{drain}",
        delivered as f64 / span_s,
        p(0.5),
        p(0.99),
        seen.freshness_us.max() as f64 / 1000.0,
        seen.objects,
        seen.duplicates
    );
    Ok(())
}

async fn produce(
    mut client: KinesisClient,
    args: &FirehoseArgs,
    name: &str,
    producer: u16,
    (start, until): (Instant, Instant),
    acked: &AtomicU64,
    failed: &AtomicU64,
) -> Result<()> {
    let mut number = 0u64;
    let padding: Vec<u8> = (0..args.record_bytes - HEADER_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    let limit = args.drain_mib.map_or(u64::MAX, |mib| (mib << 20) / args.record_bytes as u64);
    while Instant::now() < until && acked.load(Ordering::Relaxed) < limit {
        let sent_us = start.elapsed().as_micros() as u64;
        let records: Vec<Value> = (0..args.batch_records)
            .map(|_| {
                let mut data = Vec::with_capacity(args.record_bytes);
                data.extend_from_slice(&producer.to_le_bytes());
                data.extend_from_slice(&number.to_le_bytes());
                data.extend_from_slice(&sent_us.to_le_bytes());
                data.extend_from_slice(&padding);
                number += 1;
                Value::map().with("Data", Value::Bytes(data))
            })
            .collect();
        let request = Value::map().with("DeliveryStreamName", name).with("Records", Value::List(records));
        let answer = match client.call("PutRecordBatch", &request).await {
            Ok(answer) => answer,
            Err(ClientError::Api { code, .. }) if code.contains("ServiceUnavailable") => {
                failed.fetch_add(args.batch_records as u64, Ordering::Relaxed);
                continue;
            }
            Err(error) => return Err(error).context("PutRecordBatch"),
        };
        let failed_here = match answer.get("FailedPutCount") {
            Some(Value::Int(count)) => *count as u64,
            _ => 0,
        };
        if failed_here > 0 {
            // Only whole batches are counted: a partly failed one is not resent here.
            bail!("PutRecordBatch failed {failed_here} records; the bench does not resend them");
        }
        acked.fetch_add(args.batch_records as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Watches the folder until told to stop, reading each new object once.
fn poll(
    folder: &Path,
    compression: Compression,
    record_bytes: usize,
    start: Instant,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut read: HashSet<PathBuf> = HashSet::new();
    loop {
        let last_round = stop.load(Ordering::SeqCst);
        let mut found = Vec::new();
        collect(folder, &mut found);
        for path in found {
            if read.contains(&path) {
                continue;
            }
            let now = Instant::now();
            let object = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            read.insert(path.clone());
            let payload = compress::decompress(compression, &object)
                .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
            ensure!(payload.len() % record_bytes == 0, "{}: not whole records", path.display());
            let at_us = now.duration_since(start).as_micros() as u64;
            let mut seen = seen.lock().expect("not poisoned");
            seen.objects += 1;
            seen.last_object = Some(now);
            for record in payload.chunks(record_bytes) {
                let producer = u16::from_le_bytes([record[0], record[1]]);
                let number = u64::from_le_bytes(record[2..10].try_into().expect("8 bytes"));
                let sent_us = u64::from_le_bytes(record[10..18].try_into().expect("8 bytes"));
                if seen.records.insert((producer, number)) {
                    seen.payload_bytes += record_bytes as u64;
                    seen.freshness_us.saturating_record(at_us.saturating_sub(sent_us).max(1));
                } else {
                    seen.duplicates += 1;
                }
            }
        }
        if last_round {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn collect(folder: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(folder) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => collect(&path, out),
            Ok(_) if !hidden => out.push(path),
            _ => {}
        }
    }
}
