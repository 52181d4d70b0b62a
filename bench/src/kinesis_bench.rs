//! `millrace-bench kinesis`: drives any Kinesis-compatible HTTP endpoint (Millrace, an
//! emulator such as kinesalite, or anything speaking `Kinesis_20131202` over plain HTTP)
//! with PutRecords from concurrent producers, each on its own connection, and optionally
//! reads everything back with GetRecords. Reports throughput and PutRecords latency
//! percentiles with the same `RESULT` line as the engine benchmark (fio fields zero).
//!
//! Latency is per PutRecords call, from the moment it was due (open loop: its scheduled
//! time, so a slow server cannot hide queueing; closed loop: when it was sent) to the answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use millrace_net::aws::Value;
use millrace_net::client::{ClientError, Credentials, KinesisClient};

use crate::report::{self, ProducerTally, Summary};

const WARM_UP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, clap::Args)]
pub struct KinesisArgs {
    /// The endpoint: http://127.0.0.1:4567 for a local Millrace or emulator,
    /// https://kinesis.<region>.amazonaws.com for AWS.
    #[arg(long)]
    pub endpoint: String,
    /// Use this existing stream (kept afterwards) instead of creating and deleting one.
    #[arg(long)]
    pub stream: Option<String>,
    /// Seconds to measure, after one second of warm-up.
    #[arg(long = "duration", value_name = "SECS")]
    pub duration_s: u64,
    /// Open loop: total records per second offered by all producers together.
    #[arg(long = "rate", value_name = "N")]
    pub rate_records_per_s: Option<u64>,
    /// Concurrent producers, one connection each.
    #[arg(long, default_value_t = 16)]
    pub producers: usize,
    /// Payload bytes of each record.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per PutRecords call (at most 500).
    #[arg(long, default_value_t = 100)]
    pub batch_records: usize,
    /// Shards of the bench stream.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Also read every shard with GetRecords while producing, and report the read rate.
    #[arg(long)]
    pub readers: bool,
    /// A local Millrace data directory to take the key pair from; otherwise the keys come
    /// from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (emulators accept any).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Region for signing.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

impl KinesisArgs {
    fn validate(&self) -> Result<()> {
        ensure!(self.duration_s >= 1, "--duration must be at least 1 second");
        ensure!(self.producers >= 1, "--producers must be at least 1");
        ensure!((1..=500).contains(&self.batch_records), "--batch-records must be 1..=500");
        ensure!(self.record_bytes >= 1, "--record-bytes must be at least 1");
        ensure!(self.shards >= 1, "--shards must be at least 1");
        ensure!(self.rate_records_per_s != Some(0), "--rate must be at least 1 record per second");
        Ok(())
    }

    fn credentials(&self) -> Result<Credentials> {
        if let Some(dir) = &self.data_dir {
            let (found, _) = millrace_net::secrets::credentials(dir)
                .with_context(|| format!("reading the key pair in {}", dir.display()))?;
            return Ok(Credentials {
                access_key_id: found.access_key_id,
                secret_access_key: found.secret_access_key,
            });
        }
        Ok(Credentials {
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "AKIDBENCH".into()),
            secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY")
                .unwrap_or_else(|_| "bench-secret".into()),
        })
    }

    fn client(&self) -> Result<KinesisClient> {
        Ok(KinesisClient::new(&self.endpoint, Some(self.credentials()?), &self.region)?)
    }
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
}

pub fn run(args: &KinesisArgs) -> Result<()> {
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &KinesisArgs) -> Result<()> {
    let mut admin = args.client()?;
    let (stream, owned) = match &args.stream {
        Some(stream) => (stream.clone(), false),
        None => {
            let stream = format!(
                "bench-{}-{}",
                std::process::id(),
                millrace_core::Clock::now_ms(&millrace_core::SystemClock)
            );
            let request = Value::map().with("StreamName", stream.as_str()).with("ShardCount", args.shards);
            admin.call("CreateStream", &request).await.context("creating the bench stream")?;
            (stream, true)
        }
    };
    let outcome = measure(args, &stream, &mut admin).await;
    if owned {
        admin
            .call("DeleteStream", &Value::map().with("StreamName", stream.as_str()))
            .await
            .context("deleting the bench stream")?;
    }
    let (summary, failed, read) = outcome?;
    let duration = Duration::from_secs(args.duration_s);
    for line in report::human_lines(&summary, None) {
        println!("{line}");
    }
    if failed > 0 {
        println!("failed records (retried by no one): {failed}");
    }
    if args.readers {
        println!("read back: {:.2} records/s with GetRecords", read as f64 / duration.as_secs_f64());
    }
    println!("{}", report::result_line(&summary, None));
    Ok(())
}

/// Waits until the stream is ACTIVE (emulators create streams asynchronously).
async fn wait_active(client: &mut KinesisClient, stream: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client.call("DescribeStreamSummary", &Value::map().with("StreamName", stream)).await?;
        let status = answer.get("StreamDescriptionSummary").and_then(|summary| summary.get("StreamStatus"));
        if status == Some(&Value::Str("ACTIVE".into())) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("stream {stream} is not ACTIVE after 60 s: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn measure(args: &KinesisArgs, stream: &str, admin: &mut KinesisClient) -> Result<(Summary, u64, u64)> {
    wait_active(admin, stream).await?;
    let duration = Duration::from_secs(args.duration_s);
    println!(
        "kinesis: {} stream {stream} with {} shards, {} producers, {} records of {} bytes per PutRecords, {}",
        args.endpoint,
        args.shards,
        args.producers,
        args.batch_records,
        args.record_bytes,
        report::load_mode(args.rate_records_per_s)
    );
    let start = Instant::now();
    let window = Window { start, measure_from: start + WARM_UP, measure_until: start + WARM_UP + duration };
    let failed = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    if args.readers {
        let shards = admin.call("ListShards", &Value::map().with("StreamName", stream)).await?;
        let open: Vec<String> = match shards.get("Shards") {
            Some(Value::List(shards)) => shards
                .iter()
                .filter(|shard| {
                    shard
                        .get("SequenceNumberRange")
                        .and_then(|range| range.get("EndingSequenceNumber"))
                        .is_none()
                })
                .filter_map(|shard| match shard.get("ShardId") {
                    Some(Value::Str(id)) => Some(id.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for shard in open {
            let client = args.client()?;
            let (stream, read) = (stream.to_owned(), read.clone());
            readers.push(tokio::spawn(async move { consume(client, stream, shard, window, read).await }));
        }
    }
    let mut producers = Vec::new();
    for producer in 0..args.producers {
        let client = args.client()?;
        let (stream, args, failed) = (stream.to_owned(), args.clone(), failed.clone());
        producers.push(tokio::spawn(async move {
            produce(client, &stream, producer, &args, window, &failed).await
        }));
    }
    let mut tallies = Vec::new();
    for producer in producers {
        tallies.push(producer.await.context("a producer panicked")??);
    }
    for reader in readers {
        reader.await.context("a reader panicked")??;
    }
    let summary = Summary::from_tallies(&tallies, duration)?;
    Ok((summary, failed.load(Ordering::Relaxed), read.load(Ordering::Relaxed)))
}

async fn produce(
    mut client: KinesisClient,
    stream: &str,
    producer: usize,
    args: &KinesisArgs,
    window: Window,
    failed: &AtomicU64,
) -> Result<ProducerTally> {
    let mut tally = ProducerTally::default();
    let data: Vec<u8> = (0..args.record_bytes).map(|index| (index * 31 + producer * 7) as u8).collect();
    // Open loop: this producer's share of the rate, as evenly spaced PutRecords calls,
    // offset so that producers do not all fire at once.
    let interval = args
        .rate_records_per_s
        .map(|rate| Duration::from_secs_f64(args.batch_records as f64 * args.producers as f64 / rate as f64));
    let mut sequence: u64 = 0;
    let mut due = window.start
        + interval.map_or(Duration::ZERO, |interval| interval * producer as u32 / args.producers as u32);
    loop {
        if interval.is_some() {
            if due >= window.measure_until {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        } else {
            due = Instant::now();
            if due >= window.measure_until {
                break;
            }
        }
        let records: Vec<Value> = (0..args.batch_records)
            .map(|_| {
                sequence += 1;
                Value::map()
                    .with("PartitionKey", format!("p{producer}-{sequence}"))
                    .with("Data", Value::Bytes(data.clone()))
            })
            .collect();
        let request = Value::map().with("StreamName", stream).with("Records", Value::List(records));
        let answer = match client.call("PutRecords", &request).await {
            Ok(answer) => answer,
            // Throttled or overloaded: the whole call failed; count it and go on.
            Err(ClientError::Api { code, .. })
                if code.contains("Throughput")
                    || code.contains("Limit")
                    || code.contains("ServiceUnavailable") =>
            {
                failed.fetch_add(args.batch_records as u64, Ordering::Relaxed);
                if let Some(interval) = interval {
                    due += interval;
                }
                continue;
            }
            Err(error) => return Err(error).context("PutRecords"),
        };
        let latency = due.elapsed();
        let failed_here = match answer.get("FailedRecordCount") {
            Some(Value::Int(count)) => *count as u64,
            _ => 0,
        };
        failed.fetch_add(failed_here, Ordering::Relaxed);
        if due >= window.measure_from {
            let stored = args.batch_records as u64 - failed_here;
            tally.records += stored;
            tally.payload_bytes += stored * args.record_bytes as u64;
            tally.latency_us.saturating_record(latency.as_micros().max(1) as u64);
        }
        if let Some(interval) = interval {
            due += interval;
        }
    }
    Ok(tally)
}

/// Reads one shard from LATEST until the window closes; counts records.
async fn consume(
    mut client: KinesisClient,
    stream: String,
    shard: String,
    window: Window,
    read: Arc<AtomicU64>,
) -> Result<()> {
    let request = Value::map()
        .with("StreamName", stream.as_str())
        .with("ShardId", shard)
        .with("ShardIteratorType", "LATEST");
    let answer = client.call("GetShardIterator", &request).await.context("GetShardIterator")?;
    let mut iterator = match answer.get("ShardIterator") {
        Some(Value::Str(iterator)) => iterator.clone(),
        _ => bail!("GetShardIterator answered without an iterator"),
    };
    while Instant::now() < window.measure_until {
        let answer =
            client.call("GetRecords", &Value::map().with("ShardIterator", iterator.as_str())).await?;
        let count = match answer.get("Records") {
            Some(Value::List(records)) => records.len(),
            _ => 0,
        };
        if Instant::now() >= window.measure_from {
            read.fetch_add(count as u64, Ordering::Relaxed);
        }
        match answer.get("NextShardIterator") {
            Some(Value::Str(next)) => iterator = next.clone(),
            _ => return Ok(()),
        }
        if count == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
