//! `millrace-bench delivery`: Firehose delivery from the log against the engine's ingest, in
//! one process and one run, with no HTTP in between.
//!
//! 1. A DirectPut delivery stream is created through the Firehose API (in process) with a
//!    local-folder S3 destination, and its worker is stopped.
//! 2. Producer threads append the backlog to the stream's buffer with the engine's
//!    `append_each` (what PutRecordBatch calls): the engine's ingest into that buffer, timed.
//! 3. The worker is started again. It resumes at its cursor, so it reads the whole backlog
//!    from the log (off the disk: segments are read with direct I/O), cuts objects by the
//!    hints, stores each durably and moves its cursor. Timed until the cursor is past the
//!    last record: delivery from the log, alone.
//!
//! The backlog is a whole number of objects (records of 1 KiB, 5 MiB objects), so no object
//! waits for the buffering interval and the figure is the worker's rate, not a timer's.
//! Every object is read back at the end: the records delivered must be exactly those
//! appended, none missing and none twice.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use millrace_core::{
    Engine, EngineConfig, PartitionKey, Record, ResourceKey, ResourceKind, SequenceNumber, ShardId,
};
use millrace_net::aws::{document, Protocol, Value};
use millrace_net::firehose::{delivery, sink::Sink, FirehoseApi, FirehoseConfig};

const BUCKET: &str = "millrace-bench";
/// Records per append: 5,120 records of 1 KiB make one 5 MiB object.
const BATCH_RECORDS: u64 = 512;
const RECORD_BYTES: usize = 1024;
const OBJECT_MIB: u64 = 5;

#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// Directory for the engine's data and the local S3 folder; created if missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// MiB of backlog (a multiple of 5: whole 5 MiB objects).
    #[arg(long, value_name = "MIB", default_value_t = 500)]
    pub mib: u64,
    /// Producer threads appending the backlog.
    #[arg(long, default_value_t = 8)]
    pub producers: usize,
    /// Engine cores (executors) [default: the number of CPUs].
    #[arg(long = "cores", value_name = "N")]
    pub core_count: Option<usize>,
}

pub fn run(args: &DeliveryArgs) -> Result<()> {
    ensure!(
        args.mib >= OBJECT_MIB && args.mib.is_multiple_of(OBJECT_MIB),
        "--mib must be a multiple of {OBJECT_MIB}"
    );
    ensure!(args.producers >= 1, "--producers must be at least 1");
    let mut config = EngineConfig::new(&args.data_dir);
    if let Some(cores) = args.core_count {
        config.cores = cores;
    }
    let engine = Engine::start(config).context("starting the engine")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("millrace-front")
        .enable_all()
        .build()
        .context("starting the delivery runtime")?;
    let root = args.data_dir.join("s3");
    let api = FirehoseApi::new(
        engine.clone(),
        FirehoseConfig::default(),
        Sink::Local { root: root.clone() },
        None,
        runtime.handle().clone(),
    );
    let name = format!("drain-{}-{}", std::process::id(), engine.now_ms());
    let folder = root.join(BUCKET).join(&name);
    let outcome = runtime.block_on(measure(&engine, &api, &name, &folder, args));
    let _ =
        runtime.block_on(call(&api, "DeleteDeliveryStream", Value::map().with("DeliveryStreamName", name)));
    let _ = std::fs::remove_dir_all(&folder);
    drop(api);
    runtime.shutdown_timeout(Duration::from_secs(5));
    engine.shutdown();
    outcome
}

async fn call(api: &FirehoseApi, operation: &str, request: Value) -> Result<Value> {
    let body = document::encode(Protocol::Json, &request);
    api.handle(operation, Protocol::Json, &body, "bench")
        .await
        .map_err(|error| anyhow!("{operation}: {}: {}", error.code.type_name(), error.message))
}

async fn measure(
    engine: &Engine,
    api: &FirehoseApi,
    name: &str,
    folder: &Path,
    args: &DeliveryArgs,
) -> Result<()> {
    let destination = Value::map()
        .with("RoleARN", "arn:aws:iam::000000000000:role/millrace-bench")
        .with("BucketARN", format!("arn:aws:s3:::{BUCKET}"))
        .with("Prefix", format!("{name}/"))
        .with("ErrorOutputPrefix", format!("{name}-errors/"))
        // Objects are cut by size only: the interval never elapses during the run.
        .with(
            "BufferingHints",
            Value::map().with("SizeInMBs", OBJECT_MIB as u32).with("IntervalInSeconds", 900u32),
        )
        .with("CompressionFormat", "UNCOMPRESSED");
    let request =
        Value::map().with("DeliveryStreamName", name).with("ExtendedS3DestinationConfiguration", destination);
    call(api, "CreateDeliveryStream", request).await?;
    api.deliveries().stop(name).await;

    let key = ResourceKey::new(ResourceKind::DeliveryStream, name);
    let total = args.mib * 1024 * 1024 / RECORD_BYTES as u64;
    println!(
        "delivery: stream {name}, backlog {} MiB ({total} records of {RECORD_BYTES} bytes) appended by {} \
         producers, 5 MiB objects to {}",
        args.mib,
        args.producers,
        folder.display()
    );
    let ingest = ingest(engine, &key, total, args.producers)?;
    let ingest_mb_per_s = (total as usize * RECORD_BYTES) as f64 / 1e6 / ingest.elapsed.as_secs_f64();
    println!(
        "ingest: {total} records appended in {:.2} s: {ingest_mb_per_s:.2} MB/s",
        ingest.elapsed.as_secs_f64()
    );

    let shard = ShardId::new(0);
    let last = ingest.last;
    let start = Instant::now();
    api.deliveries().start(name);
    let deadline = start + Duration::from_secs(600);
    loop {
        let cursor = engine.get_checkpoint(&key, delivery::OWNER, shard).await.context("the cursor")?;
        if cursor.is_some_and(|cursor| cursor >= last) {
            break;
        }
        ensure!(Instant::now() < deadline, "the backlog was not delivered within 600 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain = start.elapsed();
    let drain_mb_per_s = (total as usize * RECORD_BYTES) as f64 / 1e6 / drain.as_secs_f64();
    println!(
        "drain: the backlog delivered from the log in {:.2} s: {drain_mb_per_s:.2} MB/s",
        drain.as_secs_f64()
    );

    let (objects, delivered, duplicates) = check(folder, total)?;
    println!("check: {objects} objects, {delivered} distinct records, {duplicates} duplicates, 0 missing");
    println!(
        "RESULT ingest_mb_per_s={ingest_mb_per_s:.2} drain_mb_per_s={drain_mb_per_s:.2} drain_ratio={:.2} \
         objects={objects} duplicates={duplicates} missing=0",
        drain_mb_per_s / ingest_mb_per_s
    );
    Ok(())
}

struct Ingest {
    elapsed: Duration,
    /// The sequence number of the last record appended.
    last: SequenceNumber,
}

/// Appends `total` numbered records, `BATCH_RECORDS` per call, from `producers` threads.
fn ingest(engine: &Engine, key: &ResourceKey, total: u64, producers: usize) -> Result<Ingest> {
    let next = AtomicU64::new(0);
    let partition_key: PartitionKey = "firehose".parse().expect("a valid partition key");
    let start = Instant::now();
    let outcomes: Vec<Result<Option<SequenceNumber>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..producers)
            .map(|_| {
                let (next, partition_key) = (&next, &partition_key);
                scope.spawn(move || -> Result<Option<SequenceNumber>> {
                    let mut last = None;
                    loop {
                        let first = next.fetch_add(BATCH_RECORDS, Ordering::Relaxed);
                        if first >= total {
                            return Ok(last);
                        }
                        let records = (first..first + BATCH_RECORDS)
                            .map(|number| Record::new(partition_key.clone(), record(number)))
                            .collect();
                        let outcomes = futures_lite::future::block_on(engine.append_each(key, records))
                            .context("appending")?;
                        for outcome in outcomes {
                            let sequence = outcome.context("appending a record")?.sequence;
                            last = last.max(Some(sequence));
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().map_err(|_| anyhow!("a producer panicked"))?).collect()
    });
    let elapsed = start.elapsed();
    let mut last = None;
    for outcome in outcomes {
        last = last.max(outcome?);
    }
    Ok(Ingest { elapsed, last: last.context("nothing appended")? })
}

/// Record `number`: its number, then filler.
fn record(number: u64) -> Vec<u8> {
    let mut data = vec![b'x'; RECORD_BYTES];
    data[..8].copy_from_slice(&number.to_le_bytes());
    data
}

/// Reads every object back: (objects, distinct records, duplicates); fails if any is missing.
fn check(folder: &Path, total: u64) -> Result<(u64, u64, u64)> {
    let mut files = Vec::new();
    collect(folder, &mut files)?;
    let (mut seen, mut duplicates) = (HashSet::new(), 0u64);
    for path in &files {
        let object = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        ensure!(object.len() % RECORD_BYTES == 0, "{}: not whole records", path.display());
        for data in object.chunks(RECORD_BYTES) {
            let number = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
            if !seen.insert(number) {
                duplicates += 1;
            }
        }
    }
    let missing = (0..total).filter(|number| !seen.contains(number)).count();
    ensure!(missing == 0, "{missing} appended records are in no object");
    Ok((files.len() as u64, seen.len() as u64, duplicates))
}

fn collect(folder: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(folder).with_context(|| format!("listing {}", folder.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(&path, out)?;
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(path);
        }
    }
    Ok(())
}
