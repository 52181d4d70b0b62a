//! `millrace-bench nexmark`: the Nexmark benchmark's queries as Kinesis Data Analytics
//! applications, in one process (engine, analytics API and worker; no HTTP in between).
//!
//! 1. **Events.** A Nexmark generator (Person, Auction and Bid at 1:3:46, their standard
//!    fields) writes `--events` JSON records into a data stream: the backlog. Event times
//!    advance `1 / --event-rate` s apiece and end at the moment the run starts.
//! 2. **Throughput.** The query is created as an application (input schema mapping the
//!    records' nested fields) and started at TRIM_HORIZON; timed until its worker has released
//!    every record into the runner. `events_per_s` is that wall rate; `events_per_s_per_core`
//!    divides the events by the process's CPU seconds over the same interval (engine reads,
//!    JSON decoding, the SQL, the output appends: the whole pipeline).
//! 3. **Latency.** The generator then runs live for `--live-secs` at `--live-rate` events/s,
//!    event time = the clock. A window's result is late by its output record's arrival time
//!    minus (window end + the watermark delay): the earliest the window could have closed.
//!    `window_close_p99_ms` is the p99 over the results of windows that ended during the live
//!    phase.
//!
//! `--device gpu` runs the tumbling and hopping windows' aggregation on the wgpu kernels.
//!
//! Queries (Flink's Nexmark definitions, in this server's dialect): q5 hot items (HOP 10 s
//! every 2 s, counts per auction joined with each window's maximum), q7 highest bid (TUMBLE
//! 10 s, the window's maximum joined back to its bids), q8 new users (TUMBLE 10 s of persons
//! joined with the window's sellers), q11 user sessions (SESSION 10 s per bidder).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use millrace_core::{
    Engine, EngineConfig, PartitionKey, ReadLimits, Record, ResourceKey, StartPosition, StreamMode,
    StreamName,
};
use millrace_gpu::run::{open_device, DeviceChoice};
use millrace_net::analytics::{AnalyticsApi, AnalyticsConfig};
use millrace_net::aws::{document, Protocol, Value};

#[derive(Debug, Clone, clap::Args)]
pub struct NexmarkArgs {
    /// q5, q7, q8 or q11.
    #[arg(long, value_parser = ["q5", "q7", "q8", "q11"])]
    pub query: String,
    /// Directory for the engine's data; created if missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// cpu, or gpu (tumbling and hopping windows aggregate with the wgpu kernels; needs
    /// `--features gpu`).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu"])]
    pub device: String,
    /// Events in the backlog.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events per second of event time in the backlog.
    #[arg(long, default_value_t = 100_000)]
    pub event_rate: u64,
    /// Events per second in the live phase.
    #[arg(long, default_value_t = 20_000)]
    pub live_rate: u64,
    /// Seconds of the live phase (0: no latency figure).
    #[arg(long, default_value_t = 6)]
    pub live_secs: u64,
    /// Engine cores (executors) [default: the number of CPUs].
    #[arg(long = "cores", value_name = "N")]
    pub core_count: Option<usize>,
}

/// The watermark delay the queries declare on event times.
const DELAY_MS: i64 = 1_000;

pub fn run(args: &NexmarkArgs) -> Result<()> {
    let choice = if args.device == "gpu" { DeviceChoice::Gpu } else { DeviceChoice::Cpu };
    let device = open_device(choice).map_err(|why| {
        anyhow!(
            "--device {}: {why} (build with `cargo build --release -p millrace-bench --features gpu`)",
            args.device
        )
    })?;
    if let Some(device) = &device {
        println!("the GPU path: {}", device.adapter);
    }
    ensure!(args.events >= 1_000 && args.event_rate >= 1_000, "--events and --event-rate are at least 1000");
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
        .context("starting the runtime")?;
    let config = AnalyticsConfig { device, ..AnalyticsConfig::default() };
    let api = AnalyticsApi::new(engine.clone(), config, None, runtime.handle().clone());
    let tag = format!("{}-{}", std::process::id(), engine.now_ms());
    let outcome = runtime.block_on(measure(&engine, &api, &tag, args));
    let _ = runtime.block_on(call(
        &api,
        "StopApplication",
        Value::map().with("ApplicationName", format!("nexmark-{tag}")),
    ));
    drop(api);
    runtime.shutdown_timeout(Duration::from_secs(5));
    engine.shutdown();
    outcome
}

async fn call(api: &AnalyticsApi, operation: &str, request: Value) -> Result<Value> {
    let body = document::encode(Protocol::Json, &request);
    api.handle(1, operation, Protocol::Json, &body, "bench")
        .await
        .map_err(|error| anyhow!("{operation}: {}: {}", error.code.type_name(), error.message))
}

/// The process's CPU time (user + system), seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

async fn measure(engine: &Engine, api: &AnalyticsApi, tag: &str, args: &NexmarkArgs) -> Result<()> {
    let input: StreamName = format!("nexmark-in-{tag}").parse()?;
    let output: StreamName = format!("nexmark-out-{tag}").parse()?;
    engine.create_stream(&input, 1, StreamMode::Provisioned).await?;
    engine.create_stream(&output, 2, StreamMode::Provisioned).await?;
    let input_key = ResourceKey::from(&input);

    // 1. The backlog, its event times ending now.
    let start_ms = engine.now_ms();
    let spacing_us = 1_000_000 / args.event_rate;
    let base_ms = start_ms - (args.events * spacing_us / 1_000) as i64;
    let mut generator = Generator::new(base_ms);
    let ingest = Instant::now();
    let mut appended = 0u64;
    while appended < args.events {
        let batch = (args.events - appended).min(1_000);
        let records: Vec<Record> = (0..batch)
            .map(|offset| {
                let n = appended + offset;
                let at_ms = base_ms + (n * spacing_us / 1_000) as i64;
                generator.record(n, at_ms)
            })
            .collect();
        engine.append(&input_key, records).await?;
        appended += batch;
    }
    let ingest_s = ingest.elapsed().as_secs_f64();
    println!(
        "backlog: {} events appended in {ingest_s:.2} s ({:.0} events/s)",
        args.events,
        args.events as f64 / ingest_s
    );

    // 2. The application over the backlog.
    let name = format!("nexmark-{tag}");
    let (code, end_column, end_offset_ms) = query(&args.query);
    let region = "us-east-1";
    let arn = |stream: &StreamName| format!("arn:aws:kinesis:{region}:000000000000:stream/{stream}");
    let request = Value::map()
        .with("ApplicationName", name.as_str())
        .with("ApplicationCode", code)
        .with(
            "Inputs",
            Value::List(vec![Value::map()
                .with("NamePrefix", "SOURCE_SQL_STREAM")
                .with(
                    "KinesisStreamsInput",
                    Value::map().with("ResourceARN", arn(&input)).with("RoleARN", "r"),
                )
                .with("InputSchema", input_schema())]),
        )
        .with(
            "Outputs",
            Value::List(vec![Value::map()
                .with("Name", args.query.to_uppercase())
                .with(
                    "KinesisStreamsOutput",
                    Value::map().with("ResourceARN", arn(&output)).with("RoleARN", "r"),
                )
                .with("DestinationSchema", Value::map().with("RecordFormatType", "JSON"))]),
        );
    call(api, "CreateApplication", request).await?;
    let detail =
        call(api, "DescribeApplication", Value::map().with("ApplicationName", name.as_str())).await?;
    let input_id = match detail.get("ApplicationDetail").and_then(|detail| detail.get("InputDescriptions")) {
        Some(Value::List(inputs)) => match inputs.first().and_then(|input| input.get("InputId")) {
            Some(Value::Str(id)) => id.clone(),
            _ => bail!("no input id"),
        },
        _ => bail!("no inputs described"),
    };
    let cpu_before = cpu_seconds();
    let processing = Instant::now();
    let start = Value::map().with("ApplicationName", name.as_str()).with(
        "InputConfigurations",
        Value::List(vec![Value::map().with("Id", input_id).with(
            "InputStartingPositionConfiguration",
            Value::map().with("InputStartingPosition", "TRIM_HORIZON"),
        )]),
    );
    call(api, "StartApplication", start).await?;
    let state = loop {
        if let Some(state) = api.workers().state(&name) {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    while state.released.load(Ordering::Relaxed) < args.events {
        if let Some(error) = state.last_error.lock().expect("not poisoned").clone() {
            bail!("the application failed: {error}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = processing.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let events_per_s = args.events as f64 / seconds;
    let per_core = args.events as f64 / cpu.max(1e-9);
    println!(
        "{}: {} events in {seconds:.2} s ({events_per_s:.0} events/s), {cpu:.2} CPU s ({per_core:.0} events per CPU s); \
         {} rows out, {} late, {} errors",
        args.query,
        args.events,
        state.rows_out.load(Ordering::Relaxed),
        state.late.load(Ordering::Relaxed),
        state.errors.load(Ordering::Relaxed),
    );

    // 3. Live, paced; latency after window close.
    let mut latencies = Histogram::<u64>::new(3)?;
    if args.live_secs > 0 {
        let live_start = engine.now_ms();
        let mut n = args.events;
        let per_tick = (args.live_rate / 100).max(1);
        let deadline = Instant::now() + Duration::from_secs(args.live_secs);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while Instant::now() < deadline {
            tick.tick().await;
            let now = engine.now_ms();
            let records: Vec<Record> =
                (0..per_tick).map(|offset| generator.record(n + offset, now)).collect();
            n += per_tick;
            engine.append(&input_key, records).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let output_key = ResourceKey::from(&output);
        let meta = engine.describe(&output_key)?;
        for shard in meta.shards() {
            let mut from = engine.resolve(&output_key, shard.shard_id(), StartPosition::TrimHorizon).await?;
            loop {
                let read = engine
                    .read(
                        &output_key,
                        shard.shard_id(),
                        from,
                        ReadLimits { max_records: 10_000, max_bytes: 8 << 20 },
                    )
                    .await?;
                if read.records.is_empty() {
                    break;
                }
                for record in &read.records {
                    let row: serde_json::Value = serde_json::from_slice(&record.data)?;
                    let Some(end) = row.get(end_column).and_then(|end| end.as_str()).and_then(parse_ms)
                    else {
                        continue;
                    };
                    let closes = end + end_offset_ms + DELAY_MS;
                    if end + end_offset_ms > live_start + DELAY_MS {
                        latencies.record((record.arrival_ms - closes).max(0) as u64)?;
                    }
                }
                match read.next {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
        println!(
            "live: {} results of windows closed while live; latency after close p50 {} ms, p99 {} ms, max {} ms",
            latencies.len(),
            latencies.value_at_quantile(0.5),
            latencies.value_at_quantile(0.99),
            latencies.max()
        );
    }
    let p99 = if latencies.is_empty() { f64::NAN } else { latencies.value_at_quantile(0.99) as f64 };
    println!(
        "RESULT query={} device={} events={} events_per_s={events_per_s:.1} events_per_s_per_core={per_core:.1} \
         window_close_p99_ms={p99:.1}",
        args.query, args.device, args.events
    );
    Ok(())
}

/// `yyyy-MM-dd HH:mm:ss.SSS` (UTC) as ms since the epoch.
fn parse_ms(text: &str) -> Option<i64> {
    millrace_gpu::run::value::parse_timestamp(text).ok()
}

/// The input schema: the union of the three event kinds' fields, by JSONPath.
fn input_schema() -> Value {
    let columns = [
        ("EVENT_TYPE", "$.event_type", "INTEGER"),
        ("P_ID", "$.person.id", "BIGINT"),
        ("P_NAME", "$.person.name", "VARCHAR(32)"),
        ("P_CITY", "$.person.city", "VARCHAR(16)"),
        ("P_STATE", "$.person.state", "VARCHAR(2)"),
        ("P_DATETIME", "$.person.dateTime", "TIMESTAMP"),
        ("A_ID", "$.auction.id", "BIGINT"),
        ("A_SELLER", "$.auction.seller", "BIGINT"),
        ("A_CATEGORY", "$.auction.category", "BIGINT"),
        ("A_RESERVE", "$.auction.reserve", "BIGINT"),
        ("A_DATETIME", "$.auction.dateTime", "TIMESTAMP"),
        ("B_AUCTION", "$.bid.auction", "BIGINT"),
        ("B_BIDDER", "$.bid.bidder", "BIGINT"),
        ("B_PRICE", "$.bid.price", "BIGINT"),
        ("B_CHANNEL", "$.bid.channel", "VARCHAR(16)"),
        ("B_DATETIME", "$.bid.dateTime", "TIMESTAMP"),
    ];
    let columns = columns
        .iter()
        .map(|(name, mapping, sql_type)| {
            Value::map().with("Name", *name).with("Mapping", *mapping).with("SqlType", *sql_type)
        })
        .collect();
    Value::map()
        .with(
            "RecordFormat",
            Value::map().with("RecordFormatType", "JSON").with(
                "MappingParameters",
                Value::map().with("JSONMappingParameters", Value::map().with("RecordRowPath", "$")),
            ),
        )
        .with("RecordEncoding", "UTF-8")
        .with("RecordColumns", Value::List(columns))
}

const STREAMS: &str = r#"
CREATE OR REPLACE STREAM BID (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
    WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND);
CREATE OR REPLACE PUMP BIDS AS INSERT INTO BID
    SELECT STREAM B_AUCTION, B_BIDDER, B_PRICE, B_DATETIME FROM "SOURCE_SQL_STREAM_001" WHERE EVENT_TYPE = 2;
"#;

/// The query's code, the output column holding a window's end (or start), and what to add to
/// it to get the end.
fn query(name: &str) -> (String, &'static str, i64) {
    match name {
        "q5" => (
            format!(
                r#"{STREAMS}
CREATE OR REPLACE STREAM AB (auction BIGINT, num BIGINT, starttime TIMESTAMP, endtime TIMESTAMP);
INSERT INTO AB SELECT auction, COUNT(*), window_start, window_end
    FROM TABLE(HOP(TABLE BID, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
    GROUP BY auction, window_start, window_end;
-- Each window's maximum: the rows of one HOP window come out together, at one ROWTIME.
CREATE OR REPLACE STREAM MB (maxn BIGINT, starttime TIMESTAMP, endtime TIMESTAMP);
INSERT INTO MB SELECT MAX(num), starttime, endtime
    FROM TABLE(TUMBLE(TABLE AB, DESCRIPTOR(ROWTIME), INTERVAL '0.001' SECOND))
    GROUP BY starttime, endtime, window_start, window_end;
CREATE OR REPLACE STREAM Q5 (auction BIGINT, num BIGINT, endtime TIMESTAMP);
INSERT INTO Q5 SELECT ab.auction, ab.num, ab.endtime
    FROM AB AS ab JOIN MB OVER (RANGE INTERVAL '1' MINUTE PRECEDING) AS mb
    ON ab.starttime = mb.starttime AND ab.endtime = mb.endtime AND ab.num >= mb.maxn;"#
            ),
            "ENDTIME",
            0,
        ),
        "q7" => (
            format!(
                r#"{STREAMS}
CREATE OR REPLACE STREAM MAXP (maxprice BIGINT, wend TIMESTAMP);
INSERT INTO MAXP SELECT MAX(price), window_end
    FROM TABLE(TUMBLE(TABLE BID, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
    GROUP BY window_start, window_end;
CREATE OR REPLACE STREAM Q7 (auction BIGINT, price BIGINT, bidder BIGINT, date_time TIMESTAMP, wend TIMESTAMP);
INSERT INTO Q7 SELECT b.auction, b.price, b.bidder, b.date_time, m.wend
    FROM BID AS b JOIN MAXP OVER (RANGE INTERVAL '15' SECOND PRECEDING) AS m
    ON b.price = m.maxprice AND b.date_time >= m.wend - INTERVAL '10' SECOND AND b.date_time < m.wend;"#
            ),
            "WEND",
            0,
        ),
        "q8" => (
            r#"
CREATE OR REPLACE STREAM PERSON (id BIGINT, name VARCHAR(32), date_time TIMESTAMP,
    WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND);
CREATE OR REPLACE PUMP PERSONS AS INSERT INTO PERSON
    SELECT STREAM P_ID, P_NAME, P_DATETIME FROM "SOURCE_SQL_STREAM_001" WHERE EVENT_TYPE = 0;
CREATE OR REPLACE STREAM AUCTION (id BIGINT, seller BIGINT, date_time TIMESTAMP,
    WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND);
CREATE OR REPLACE PUMP AUCTIONS AS INSERT INTO AUCTION
    SELECT STREAM A_ID, A_SELLER, A_DATETIME FROM "SOURCE_SQL_STREAM_001" WHERE EVENT_TYPE = 1;
CREATE OR REPLACE STREAM PW (id BIGINT, name VARCHAR(32), starttime TIMESTAMP, endtime TIMESTAMP);
INSERT INTO PW SELECT id, name, window_start, window_end
    FROM TABLE(TUMBLE(TABLE PERSON, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
    GROUP BY id, name, window_start, window_end;
CREATE OR REPLACE STREAM AW (seller BIGINT, starttime TIMESTAMP, endtime TIMESTAMP);
INSERT INTO AW SELECT seller, window_start, window_end
    FROM TABLE(TUMBLE(TABLE AUCTION, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
    GROUP BY seller, window_start, window_end;
CREATE OR REPLACE STREAM Q8 (id BIGINT, name VARCHAR(32), starttime TIMESTAMP);
INSERT INTO Q8 SELECT p.id, p.name, p.starttime
    FROM PW AS p JOIN AW OVER (RANGE INTERVAL '1' MINUTE PRECEDING) AS a
    ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime;"#
                .to_owned(),
            "STARTTIME",
            10_000,
        ),
        _ => (
            format!(
                r#"{STREAMS}
CREATE OR REPLACE STREAM Q11 (bidder BIGINT, bid_count BIGINT, starttime TIMESTAMP, endtime TIMESTAMP);
INSERT INTO Q11 SELECT bidder, COUNT(*), window_start, window_end
    FROM TABLE(SESSION(TABLE BID PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
    GROUP BY bidder, window_start, window_end;"#
            ),
            "ENDTIME",
            0,
        ),
    }
}

/// Nexmark's generator, simplified: per 50 events, 1 person, 3 auctions and 46 bids; bids go
/// to "hot" auctions and bidders most of the time (Nexmark's hot ratios), prices spread.
struct Generator {
    state: u64,
    base_ms: i64,
}

const FIRST_NAMES: [&str; 8] = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie"];
const LAST_NAMES: [&str; 8] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones"];
const CITIES: [&str; 6] = ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend"];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const FIRST_ID: u64 = 1_000;

impl Generator {
    fn new(base_ms: i64) -> Generator {
        Generator { state: 0x2545_f491_4f6c_dd1d, base_ms }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn record(&mut self, n: u64, at_ms: i64) -> Record {
        let epoch = n / 50;
        let offset = n % 50;
        let time = millrace_gpu::run::value::timestamp_text(at_ms.max(self.base_ms));
        let json = if offset == 0 {
            let id = FIRST_ID + epoch;
            let first = FIRST_NAMES[(self.next() % 8) as usize];
            let last = LAST_NAMES[(self.next() % 8) as usize];
            let place = (self.next() % 6) as usize;
            format!(
                r#"{{"event_type":0,"person":{{"id":{id},"name":"{first} {last}","emailAddress":"{first}@{last}.com","creditCard":"{:04} {:04} {:04} {:04}","city":"{}","state":"{}","dateTime":"{time}","extra":""}}}}"#,
                self.next() % 10_000,
                self.next() % 10_000,
                self.next() % 10_000,
                self.next() % 10_000,
                CITIES[place],
                STATES[place]
            )
        } else if offset <= 3 {
            let id = FIRST_ID + epoch * 3 + offset - 1;
            // Sellers are recent persons.
            let seller = FIRST_ID + epoch.saturating_sub(self.next() % 10);
            let initial = 100 + self.next() % 1_000;
            format!(
                r#"{{"event_type":1,"auction":{{"id":{id},"itemName":"item-{id}","description":"","initialBid":{initial},"reserve":{},"dateTime":"{time}","expires":"{}","seller":{seller},"category":{},"extra":""}}}}"#,
                initial + self.next() % 1_000,
                millrace_gpu::run::value::timestamp_text(at_ms + 10_000 + (self.next() % 10_000) as i64),
                10 + self.next() % 5
            )
        } else {
            let last_auction = FIRST_ID + epoch * 3 + 2;
            // Nexmark's hot ratios: most bids go to the latest auctions and bidders.
            let auction = if !self.next().is_multiple_of(100) {
                last_auction - last_auction % 100 + self.next() % 3
            } else {
                FIRST_ID + self.next() % (last_auction - FIRST_ID + 1)
            };
            let last_person = FIRST_ID + epoch;
            let bidder = if !self.next().is_multiple_of(100) {
                last_person - last_person % 100 + self.next() % 3
            } else {
                FIRST_ID + self.next() % (last_person - FIRST_ID + 1)
            };
            let price = 100 + self.next() % 10_000;
            let channel = CHANNELS[(self.next() % 4) as usize];
            format!(
                r#"{{"event_type":2,"bid":{{"auction":{auction},"bidder":{bidder},"price":{price},"channel":"{channel}","url":"https://www.nexmark.com/{channel}/item.htm?query=1","dateTime":"{time}","extra":""}}}}"#
            )
        };
        Record::new(
            format!("{}", n % 64).parse::<PartitionKey>().expect("a partition key"),
            json.into_bytes(),
        )
    }
}
