//! `millrace-bench engine`: appends to a fresh stream of an in-process engine from many
//! producer threads and measures durable-append throughput and latency, optionally next to
//! fio's numbers for the same directory.
//!
//! Closed loop (no `--rate`): each producer sends its next batch as soon as the previous one
//! is acknowledged, which finds the throughput ceiling. Open loop (`--rate`): producers send
//! on a fixed schedule and latency counts from the *intended* send time, so a stall shows up
//! in every batch it delayed rather than in just one (no coordinated omission).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, ensure, Context, Result};
use futures_lite::future::block_on;
use millrace_core::{Engine, EngineConfig, PartitionKey, Record, ResourceKey, StreamMode, StreamName};

use crate::fio;
use crate::report::{self, ProducerTally, Summary};

/// Appends before this are not measured: the first segments are being created and the
/// producers are still starting.
const WARM_UP: Duration = Duration::from_secs(1);

/// An acknowledgement this late after the window closed means a stall, not slowness: even a
/// 64 MiB group commit on a slow disk takes well under this.
const STALL_WARNING_AFTER: Duration = Duration::from_secs(5);

/// fio runs no longer than this per job, however long the engine run is: the device's
/// ceiling is stable after a few seconds.
const FIO_RUNTIME_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Directory for the engine's data (and fio's scratch file); created if missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Seconds to measure, after one second of warm-up.
    #[arg(long = "duration", value_name = "SECS")]
    pub duration_s: u64,
    /// Open loop: total records per second offered by all producers together.
    /// Without it, closed loop: each producer sends as fast as acknowledgements come back.
    #[arg(long = "rate", value_name = "N")]
    pub rate_records_per_s: Option<u64>,
    /// First measure the disk with fio in the same directory, and report the engine's
    /// bandwidth and p99 latency as ratios of fio's.
    #[arg(long)]
    pub vs_fio: bool,
    /// Producer threads.
    #[arg(long, default_value_t = 32)]
    pub producers: usize,
    /// Payload bytes of each record.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per append call.
    #[arg(long, default_value_t = 64)]
    pub batch_records: usize,
    /// Shards of the bench stream [default: the number of engine cores].
    #[arg(long = "shards", value_name = "N")]
    pub shard_count: Option<u32>,
    /// Engine cores (executors) [default: the number of CPUs].
    #[arg(long = "cores", value_name = "N")]
    pub core_count: Option<usize>,
    /// Nice value of the engine's executor threads (0: leave them as they are); see
    /// `EngineConfig::executor_nice`.
    #[arg(long, value_name = "N", default_value_t = -10, allow_hyphen_values = true)]
    pub executor_nice: i32,
    /// After the appends, read every shard back from its start with the limits a Firehose
    /// worker reads with (10,000 records or 4 MiB per read, one reader per shard), and report
    /// the engine's read rate (`read_mb_per_s`, `read_records_per_s`).
    #[arg(long)]
    pub read_back: bool,
}

impl EngineArgs {
    fn validate(&self) -> Result<()> {
        ensure!(self.duration_s >= 1, "--duration must be at least 1 second");
        ensure!(self.producers >= 1, "--producers must be at least 1");
        ensure!(self.record_bytes >= 1, "--record-bytes must be at least 1");
        ensure!(self.batch_records >= 1, "--batch-records must be at least 1");
        ensure!(self.shard_count != Some(0), "--shards must be at least 1");
        ensure!(self.core_count != Some(0), "--cores must be at least 1");
        ensure!(self.rate_records_per_s != Some(0), "--rate must be at least 1 record per second");
        Ok(())
    }
}

/// The run's fixed points in time, shared by every producer.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
}

/// What a producer hands back: its tally, plus how many scheduled batches it never got to
/// send (open loop only) because the engine was behind when the window closed.
struct ProducerOutcome {
    tally: ProducerTally,
    unsent_batches: u64,
}

pub fn run(args: &EngineArgs) -> Result<()> {
    args.validate()?;
    let duration = Duration::from_secs(args.duration_s);
    // Before the engine starts, so that fio has the disk to itself.
    let fio = if args.vs_fio {
        fio::ensure_installed()?;
        let runtime = duration.min(FIO_RUNTIME_MAX);
        println!("fio: measuring {} for {} s per job", args.data_dir.display(), runtime.as_secs());
        Some(fio::measure(&args.data_dir, runtime)?)
    } else {
        None
    };

    let mut config = EngineConfig::new(&args.data_dir);
    if let Some(core_count) = args.core_count {
        config.cores = core_count;
    }
    config.executor_nice = args.executor_nice;
    let core_count = config.cores;
    let shard_count = match args.shard_count {
        Some(shard_count) => shard_count,
        None => u32::try_from(core_count).context("more cores than shards can count")?,
    };
    let engine = Engine::start(config).context("starting the engine")?;
    let unix_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let name: StreamName = format!("bench-{}-{unix_s}", std::process::id()).parse()?;
    println!(
        "engine: {core_count} cores, stream {name} with {shard_count} shards, {} producers, \
         {} records of {} bytes per append, {}",
        args.producers,
        args.batch_records,
        args.record_bytes,
        report::load_mode(args.rate_records_per_s)
    );

    let measured = measure(&engine, &name, shard_count, args, duration);
    let read_back = match (&measured, args.read_back) {
        (Ok(_), true) => Some(read_back(&engine, &name, shard_count)),
        _ => None,
    };
    // Clean up whatever happened, so that repeated runs do not fill the disk; but only
    // delete a stream this run created.
    let deleted = if engine.describe_stream(&name).is_ok() {
        block_on(engine.delete_stream(&name, true))
    } else {
        Ok(())
    };
    engine.shutdown();
    let summary = measured?;
    deleted.context("deleting the bench stream")?;

    for line in report::human_lines(&summary, fio.as_ref()) {
        println!("{line}");
    }
    let mut result = report::result_line(&summary, fio.as_ref());
    if let Some(read_back) = read_back {
        let ReadBack { records, bytes, elapsed } = read_back?;
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let (mb_per_s, records_per_s) = (bytes as f64 / 1e6 / seconds, records as f64 / seconds);
        println!(
            "read back: {records} records ({:.1} MB) in {:.2} s: {mb_per_s:.2} MB/s, {records_per_s:.0} records/s",
            bytes as f64 / 1e6,
            seconds
        );
        result.push_str(&format!(" read_mb_per_s={mb_per_s:.2} read_records_per_s={records_per_s:.0}"));
    }
    println!("{result}");
    Ok(())
}

/// What reading the stream back found.
struct ReadBack {
    records: u64,
    /// Payload bytes (data and partition keys), as the append side counts them.
    bytes: u64,
    elapsed: Duration,
}

/// Reads every shard from its start to its end, one thread per shard, as a Firehose worker
/// reads its buffer.
fn read_back(engine: &Engine, name: &StreamName, shard_count: u32) -> Result<ReadBack> {
    let key = ResourceKey::new(millrace_core::ResourceKind::DataStream, name.to_string());
    let limits = millrace_core::ReadLimits { max_records: 10_000, max_bytes: 4 << 20 };
    let start = Instant::now();
    let tallies: Vec<Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shard_count)
            .map(|shard| {
                let key = &key;
                scope.spawn(move || {
                    block_on(async {
                        let shard = millrace_core::ShardId::new(shard);
                        let mut from = engine
                            .resolve(key, shard, millrace_core::StartPosition::TrimHorizon)
                            .await
                            .context("resolving TRIM_HORIZON")?;
                        let (mut records, mut bytes) = (0u64, 0u64);
                        loop {
                            let read = engine.read(key, shard, from, limits).await.context("reading back")?;
                            if read.records.is_empty() {
                                return Ok((records, bytes));
                            }
                            records += read.records.len() as u64;
                            bytes += read
                                .records
                                .iter()
                                .map(|record| (record.data.len() + record.partition_key.len()) as u64)
                                .sum::<u64>();
                            match read.next {
                                Some(next) => from = next,
                                None => return Ok((records, bytes)),
                            }
                        }
                    })
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().map_err(|_| anyhow!("a reader panicked"))?).collect()
    });
    let elapsed = start.elapsed();
    let (mut records, mut bytes) = (0, 0);
    for tally in tallies {
        let (shard_records, shard_bytes) = tally?;
        records += shard_records;
        bytes += shard_bytes;
    }
    Ok(ReadBack { records, bytes, elapsed })
}

fn measure(
    engine: &Engine,
    name: &StreamName,
    shard_count: u32,
    args: &EngineArgs,
    duration: Duration,
) -> Result<Summary> {
    block_on(engine.create_stream(name, shard_count, StreamMode::Provisioned))
        .context("creating the bench stream")?;
    let start = Instant::now();
    let window = Window { start, measure_from: start + WARM_UP, measure_until: start + WARM_UP + duration };

    let commits_before = millrace_core::metrics::COMMITS.snapshot();
    let producers_running = AtomicUsize::new(args.producers);
    let outcomes: Vec<Result<ProducerOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.producers)
            .map(|producer| {
                let producers_running = &producers_running;
                std::thread::Builder::new()
                    .name(format!("producer-{producer}"))
                    .spawn_scoped(scope, move || {
                        let outcome = produce(engine, name, producer, args, window);
                        producers_running.fetch_sub(1, Ordering::Release);
                        outcome
                    })
                    .context("spawning a producer thread")
            })
            .collect();
        // Threads that never started will not count themselves out.
        let unstarted = handles.iter().filter(|handle| handle.is_err()).count();
        producers_running.fetch_sub(unstarted, Ordering::Release);
        watch_for_stall(&producers_running, window);
        handles
            .into_iter()
            .map(|handle| handle?.join().map_err(|_| anyhow!("a producer thread panicked"))?)
            .collect()
    });

    let commits = millrace_core::metrics::COMMITS.snapshot() - commits_before;
    println!("engine: {commits} (whole run, warm-up included)");
    let mut tallies = Vec::with_capacity(outcomes.len());
    let mut unsent_batches = 0;
    for outcome in outcomes {
        let outcome = outcome?;
        tallies.push(outcome.tally);
        unsent_batches += outcome.unsent_batches;
    }
    let overrun = window.measure_until.elapsed();
    if overrun > STALL_WARNING_AFTER {
        eprintln!(
            "warning: the last acknowledgement came {:.1} s after the window closed",
            overrun.as_secs_f64()
        );
    }
    let summary = Summary::from_tallies(&tallies, duration)?;
    if summary.records_per_s == 0.0 {
        eprintln!("warning: no append was acknowledged within the measurement window");
    }
    if unsent_batches > 0 {
        // Their latency is unknown but at least as large as the backlog they were in, so the
        // percentiles below understate the tail.
        eprintln!(
            "warning: {unsent_batches} scheduled batches ({} records) were never sent: the engine did \
             not keep up with the offered rate",
            unsent_batches * args.batch_records as u64
        );
    }
    Ok(summary)
}

/// Waits for the producers; says so once if they are still waiting for acknowledgements
/// well after the window closed, because then the engine is stalled rather than slow and the
/// run would otherwise look hung without explanation.
fn watch_for_stall(producers_running: &AtomicUsize, window: Window) {
    let deadline = window.measure_until + STALL_WARNING_AFTER;
    while producers_running.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            eprintln!(
                "warning: {} producers still waiting for acknowledgements {} s after the window closed; \
                 the engine looks stalled",
                producers_running.load(Ordering::Acquire),
                STALL_WARNING_AFTER.as_secs()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One producer thread: appends batches until the window closes and tallies those of the
/// measurement window.
fn produce(
    engine: &Engine,
    name: &StreamName,
    producer: usize,
    args: &EngineArgs,
    window: Window,
) -> Result<ProducerOutcome> {
    // Built once: every record carries a copy of the same bytes. Varied per producer only so
    // that a dump of the log shows who wrote what.
    let payload: Vec<u8> = (0..args.record_bytes).map(|offset| (offset + producer) as u8).collect();
    let batch_payload_bytes = (args.batch_records * args.record_bytes) as u64;
    // Open loop: every producer offers an equal share of the rate. Their schedules are offset
    // by a fraction of the interval so that the producers together send evenly, not in bursts
    // of one batch each at the same instant.
    let schedule = args.rate_records_per_s.map(|rate| {
        let interval =
            Duration::from_secs_f64(args.batch_records as f64 * args.producers as f64 / rate as f64);
        let first = window.start + interval.mul_f64(producer as f64 / args.producers as f64);
        (first, interval)
    });

    let mut tally = ProducerTally::default();
    let mut key_counter: u64 = 0;
    let mut batch_index: u32 = 0;
    loop {
        let intended = schedule.map(|(first, interval)| first + interval * batch_index);
        if intended.is_some_and(|intended| intended >= window.measure_until) {
            return Ok(ProducerOutcome { tally, unsent_batches: 0 });
        }
        if Instant::now() >= window.measure_until {
            let unsent_batches = match schedule {
                Some((first, interval)) => {
                    let due = window.measure_until.saturating_duration_since(first);
                    (due.as_nanos().div_ceil(interval.as_nanos()) as u64).saturating_sub(batch_index.into())
                }
                None => 0,
            };
            return Ok(ProducerOutcome { tally, unsent_batches });
        }

        let mut records = Vec::with_capacity(args.batch_records);
        for _ in 0..args.batch_records {
            // Distinct keys hash uniformly over the key space, hence over the shards.
            let partition_key: PartitionKey = format!("k{producer}-{key_counter}").parse()?;
            key_counter += 1;
            records.push(Record::new(partition_key, payload.clone()));
        }

        // Behind schedule: send at once, without skipping, and let the latency show it.
        let sent = match intended {
            Some(intended) => {
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                intended
            }
            None => Instant::now(),
        };
        block_on(engine.append(&ResourceKey::from(name), records))
            .with_context(|| format!("producer {producer}: append"))?;
        let acked = Instant::now();
        batch_index += 1;

        // Latency by send time, whenever the ack comes: a batch caught in a stall at the end
        // of the window still counts, with its full wait. Throughput by ack time, so that it
        // is bytes made durable within the window.
        if sent >= window.measure_from {
            let latency_us = u64::try_from(acked.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
            tally.latency_us.saturating_record(latency_us);
        }
        if acked >= window.measure_from && acked <= window.measure_until {
            tally.payload_bytes += batch_payload_bytes;
            tally.records += args.batch_records as u64;
        }
    }
}
