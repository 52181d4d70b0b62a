//! `millrace-bench quic`: producers on the native QUIC protocol (the producer SDK), durable
//! acknowledgements, and a subscribed consumer measuring end-to-end latency (from the send
//! timestamp carried in each record to its arrival at the consumer).
//!
//! Closed loop: each producer keeps `--window` records unacknowledged and sends the next as
//! one is acknowledged; latency from the send. Open loop (`--rate`): records are due at even
//! intervals and latency counts from when each was due, so queueing is never hidden.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use millrace_net::aws::Value;
use millrace_net::client::{Credentials, KinesisClient};
use millrace_net::quic::client::{ClientConfig, QuicClient};
use millrace_net::quic::consumer::{Consumer, ConsumerConfig};
use millrace_net::quic::frame::ReadStart;
use millrace_net::quic::producer::{Producer, ProducerConfig};

use crate::fio;
use crate::report::{self, new_latency_histogram, ProducerTally, Summary};

const WARM_UP: Duration = Duration::from_secs(1);
const FIO_RUNTIME_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct QuicArgs {
    /// The server's QUIC address, e.g. 127.0.0.1:4568.
    #[arg(long)]
    pub endpoint: std::net::SocketAddr,
    /// The server's data directory (this machine): certificate, token and HTTP keys come from
    /// it, and `--vs-fio` measures its disk.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The server's HTTP API, used to create and delete the bench stream.
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    pub http_endpoint: String,
    /// Seconds to measure, after one second of warm-up.
    #[arg(long = "duration", value_name = "SECS")]
    pub duration_s: u64,
    /// Open loop: total records per second offered by all producers together.
    #[arg(long = "rate", value_name = "N")]
    pub rate_records_per_s: Option<u64>,
    /// Producer tasks (all on one connection, as one application would be).
    #[arg(long, default_value_t = 8)]
    pub producers: usize,
    /// Closed loop: records each producer keeps unacknowledged.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Records each producer hands to the SDK per call: 1 uses `Producer::queue` per record,
    /// more use `Producer::queue_many` (one future per call).
    #[arg(long, default_value_t = 64)]
    pub batch_records: usize,
    /// Payload bytes of each record (at least 8: the send timestamp).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Shards of the bench stream.
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// How long the SDK lingers to batch, in microseconds.
    #[arg(long, default_value_t = 1000)]
    pub linger_us: u64,
    /// Batches in flight per shard.
    #[arg(long, default_value_t = 4)]
    pub in_flight_per_shard: usize,
    /// Also measure the disk with fio first and report bandwidth as a ratio of fio's.
    #[arg(long)]
    pub vs_fio: bool,
    /// Write the full latency histograms (ack and end-to-end percentiles) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the latency-percentile plot as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

impl QuicArgs {
    fn validate(&self) -> Result<()> {
        ensure!(self.duration_s >= 1, "--duration must be at least 1 second");
        ensure!(self.producers >= 1, "--producers must be at least 1");
        ensure!(self.window >= 1, "--window must be at least 1");
        ensure!(self.batch_records >= 1, "--batch-records must be at least 1");
        ensure!(
            self.batch_records <= self.window,
            "--batch-records must not exceed --window (records in flight per producer)"
        );
        ensure!(self.record_bytes >= 8, "--record-bytes must be at least 8 (the send timestamp)");
        ensure!(self.shards >= 1, "--shards must be at least 1");
        ensure!(self.rate_records_per_s != Some(0), "--rate must be at least 1 record per second");
        Ok(())
    }
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_micros() as u64)
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
}

pub fn run(args: &QuicArgs) -> Result<()> {
    args.validate()?;
    let fio = if args.vs_fio {
        fio::ensure_installed()?;
        let runtime = Duration::from_secs(args.duration_s).min(FIO_RUNTIME_MAX);
        println!("fio: measuring {} for {} s per job", args.data_dir.display(), runtime.as_secs());
        Some(fio::measure(&args.data_dir, runtime)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    let (summary, e2e) = runtime.block_on(run_async(args))?;
    for line in report::human_lines(&summary, fio.as_ref()) {
        println!("{line}");
    }
    println!(
        "end-to-end (send to subscribed consumer): p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        e2e.value_at_quantile(0.5),
        e2e.value_at_quantile(0.99),
        e2e.value_at_quantile(0.999),
        e2e.max()
    );
    let fio_mb_per_s = fio.as_ref().map_or(0.0, |fio| fio.write_mb_per_s);
    let bw_ratio = if fio_mb_per_s > 0.0 { summary.mb_per_s / fio_mb_per_s } else { 0.0 };
    println!(
        "RESULT mb_per_s={:.2} records_per_s={:.2} p50_us={} p99_us={} p999_us={} e2e_p99_us={} fio_mb_per_s={:.2} \
         bw_ratio={:.2}",
        summary.mb_per_s,
        summary.records_per_s,
        summary.latency_us_p50,
        summary.latency_us_p99,
        summary.latency_us_p999,
        e2e.value_at_quantile(0.99),
        fio_mb_per_s,
        bw_ratio
    );
    Ok(())
}

async fn run_async(args: &QuicArgs) -> Result<(Summary, Histogram<u64>)> {
    let (keys, _) =
        millrace_net::secrets::credentials(&args.data_dir).context("reading the server's key pair")?;
    let credentials =
        Credentials { access_key_id: keys.access_key_id, secret_access_key: keys.secret_access_key };
    let mut admin = KinesisClient::new(&args.http_endpoint, Some(credentials), "us-east-1")?;
    let stream = format!(
        "bench-quic-{}-{}",
        std::process::id(),
        millrace_core::Clock::now_ms(&millrace_core::SystemClock)
    );
    admin
        .call(
            "CreateStream",
            &Value::map().with("StreamName", stream.as_str()).with("ShardCount", args.shards),
        )
        .await
        .context("creating the bench stream over HTTP")?;
    let measured = measure(args, &stream).await;
    admin
        .call("DeleteStream", &Value::map().with("StreamName", stream.as_str()))
        .await
        .context("deleting the stream")?;
    let (summary, ack, e2e) = measured?;
    if let Some(path) = &args.json {
        write_json(path, &summary, &ack, &e2e)?;
    }
    if let Some(path) = &args.plot {
        plot(path, &ack, &e2e)?;
    }
    Ok((summary, e2e))
}

async fn measure(args: &QuicArgs, stream: &str) -> Result<(Summary, Histogram<u64>, Histogram<u64>)> {
    let config = ClientConfig::from_data_dir(args.endpoint, &args.data_dir)
        .context("reading the certificate and token")?;
    let client = Arc::new(QuicClient::connect(&config).await?);
    let producer_config = ProducerConfig {
        linger: Duration::from_micros(args.linger_us),
        in_flight_per_shard: args.in_flight_per_shard,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.channel().await?, producer_config);
    println!(
        "quic: {} stream {stream} with {} shards, {} producers, {} records of {} bytes, {}",
        args.endpoint,
        args.shards,
        args.producers,
        if args.rate_records_per_s.is_some() {
            "open-loop".to_owned()
        } else {
            format!("window {}", args.window)
        },
        args.record_bytes,
        report::load_mode(args.rate_records_per_s)
    );
    let start = Instant::now();
    let duration = Duration::from_secs(args.duration_s);
    let window = Window { start, measure_from: start + WARM_UP, measure_until: start + WARM_UP + duration };

    // The consumer starts before the producers, from LATEST, and times every record.
    let mut consumer =
        Consumer::subscribe(client.clone(), stream, ReadStart::Latest, ConsumerConfig::default()).await?;
    let consumer_task = tokio::spawn(async move {
        let mut e2e = new_latency_histogram();
        let stop = window.measure_until + Duration::from_secs(2);
        loop {
            let next = tokio::time::timeout_at(stop.into(), consumer.next()).await;
            let Ok(Some(Ok(records))) = next else { break };
            let now = unix_us();
            let arrived = Instant::now();
            for record in records {
                let sent = u64::from_le_bytes(record.data[..8].try_into().expect("8 bytes"));
                let measured = arrived >= window.measure_from && arrived < window.measure_until;
                if measured && sent > 0 {
                    e2e.saturating_record(now.saturating_sub(sent).max(1));
                }
            }
        }
        e2e
    });

    let mut producers = Vec::new();
    for index in 0..args.producers {
        let (producer, stream, args) = (producer.clone(), stream.to_owned(), args.clone());
        producers.push(tokio::spawn(async move { produce(producer, &stream, index, &args, window).await }));
    }
    let mut tallies = Vec::new();
    for producer in producers {
        tallies.push(producer.await.context("a producer panicked")??);
    }
    let e2e = consumer_task.await.context("the consumer panicked")?;
    let mut ack = new_latency_histogram();
    for tally in &tallies {
        ack.add(&tally.latency_us)?;
    }
    client.close();
    if e2e.is_empty() {
        bail!("the consumer received no records in the window");
    }
    Ok((Summary::from_tallies(&tallies, duration)?, ack, e2e))
}

async fn produce(
    producer: Producer,
    stream: &str,
    index: usize,
    args: &QuicArgs,
    window: Window,
) -> Result<ProducerTally> {
    // (intended send time, acknowledged at, records, payload bytes)
    let (latencies, mut collected) = tokio::sync::mpsc::unbounded_channel::<(Instant, Instant, u64, usize)>();
    let batch = args.batch_records;
    let in_window = Arc::new(tokio::sync::Semaphore::new(args.window));
    let interval = args
        .rate_records_per_s
        .map(|rate| Duration::from_secs_f64((args.producers * batch) as f64 / rate as f64));
    let mut due = window.start
        + interval.map_or(Duration::ZERO, |interval| interval * index as u32 / args.producers as u32);
    let mut sequence = 0u64;
    loop {
        let permit = match interval {
            Some(interval) => {
                if due >= window.measure_until {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let at = due;
                due += interval;
                (at, None)
            }
            None => {
                let permit = in_window.clone().acquire_many_owned(batch as u32).await.expect("never closed");
                let now = Instant::now();
                if now >= window.measure_until {
                    break;
                }
                (now, Some(permit))
            }
        };
        let (sent_at, permit) = permit;
        let mut record = || {
            sequence += 1;
            let mut data = vec![0u8; args.record_bytes];
            data[..8].copy_from_slice(&unix_us().to_le_bytes());
            data[8..16.min(args.record_bytes)]
                .copy_from_slice(&sequence.to_le_bytes()[..(args.record_bytes - 8).min(8)]);
            (format!("p{index}-{sequence}"), data)
        };
        let (latencies, bytes) = (latencies.clone(), args.record_bytes);
        if batch == 1 {
            let (key, data) = record();
            let acked = producer.queue(stream, &key, data).await?;
            tokio::spawn(async move {
                if acked.await.is_ok() {
                    let _ = latencies.send((sent_at, Instant::now(), 1, bytes));
                }
                drop(permit);
            });
        } else {
            let records: Vec<(String, Vec<u8>)> = (0..batch).map(|_| record()).collect();
            let acked = producer.queue_many(stream, records).await?;
            tokio::spawn(async move {
                // One latency per call: the time until its last record was acknowledged.
                let outcomes = acked.await;
                let stored = outcomes.iter().filter(|outcome| outcome.is_ok()).count() as u64;
                if stored == outcomes.len() as u64 {
                    let _ = latencies.send((sent_at, Instant::now(), stored, bytes * stored as usize));
                }
                drop(permit);
            });
        }
    }
    drop(latencies);
    let mut tally = ProducerTally::default();
    while let Some((sent_at, acked_at, records, bytes)) = collected.recv().await {
        if sent_at >= window.measure_from && sent_at < window.measure_until {
            tally.records += records;
            tally.payload_bytes += bytes as u64;
            tally.latency_us.saturating_record(acked_at.duration_since(sent_at).as_micros().max(1) as u64);
        }
    }
    Ok(tally)
}

const QUANTILES: [f64; 12] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];

fn percentiles(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    QUANTILES.iter().map(|quantile| (quantile * 100.0, histogram.value_at_quantile(*quantile))).collect()
}

fn write_json(
    path: &std::path::Path,
    summary: &Summary,
    ack: &Histogram<u64>,
    e2e: &Histogram<u64>,
) -> Result<()> {
    let series = |histogram: &Histogram<u64>| {
        serde_json::Value::Array(
            percentiles(histogram)
                .into_iter()
                .map(|(percentile, micros)| serde_json::json!({ "percentile": percentile, "latency_us": micros }))
                .collect(),
        )
    };
    let document = serde_json::json!({
        "mb_per_s": summary.mb_per_s,
        "records_per_s": summary.records_per_s,
        "ack_latency": series(ack),
        "ack_count": ack.len(),
        "end_to_end_latency": series(e2e),
        "end_to_end_count": e2e.len(),
    });
    std::fs::write(path, serde_json::to_vec_pretty(&document)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Latency against percentile, with the percentile axis stretched towards the tail
/// (x = -log10(1 - p)), as latency plots usually are.
fn plot(path: &std::path::Path, ack: &Histogram<u64>, e2e: &Histogram<u64>) -> Result<()> {
    use plotters::prelude::*;
    let tail = |quantile: f64| -(1.0 - quantile.min(0.9999)).log10();
    let points = |histogram: &Histogram<u64>| -> Vec<(f64, f64)> {
        (0..=400)
            .map(|step| {
                let quantile = 1.0 - 10f64.powf(-(step as f64) / 100.0);
                (tail(quantile), histogram.value_at_quantile(quantile) as f64 / 1000.0)
            })
            .collect()
    };
    let (ack_points, e2e_points) = (points(ack), points(e2e));
    let top = ack_points.iter().chain(&e2e_points).map(|(_, millis)| *millis).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("millrace-bench quic: latency by percentile", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..4f64, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| format!("{:.4}", 100.0 * (1.0 - 10f64.powf(-x))))
        .draw()?;
    chart
        .draw_series(LineSeries::new(ack_points, &BLUE))?
        .label("durable ack")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(e2e_points, &RED))?
        .label("end to end")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}
