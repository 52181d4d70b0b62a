//! Client commands: `millrace stream create|list|describe|delete`, `millrace put` and
//! `millrace tail`, over the HTTP Kinesis API (so they work against any Kinesis endpoint).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use millrace_net::aws::{Protocol, Request, Value};
use millrace_net::client::{Credentials, KinesisClient};
use millrace_net::quic::client::{ClientConfig, QuicClient};
use millrace_net::quic::consumer::{Consumer, ConsumerConfig};
use millrace_net::quic::frame::ReadStart;
use millrace_net::quic::producer::{Producer, ProducerConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The Kinesis endpoint.
    #[arg(long, env = "MILLRACE_ENDPOINT", default_value = "http://127.0.0.1:4567", global = true)]
    endpoint: String,
    /// A local server's data directory, to read its generated key pair from.
    #[arg(long, default_value = "./millrace-data", global = true)]
    data_dir: PathBuf,
    /// Region for signing.
    #[arg(long, default_value = "us-east-1", global = true)]
    region: String,
    /// Send unsigned requests (for a server run with --auth none).
    #[arg(long, global = true)]
    no_sign: bool,
    /// Use the native QUIC protocol instead of the HTTP API (put and tail).
    #[arg(long, global = true)]
    quic: bool,
    /// The server's QUIC address.
    #[arg(long, default_value = "127.0.0.1:4568", global = true)]
    quic_endpoint: std::net::SocketAddr,
    /// The server's QUIC certificate (DER), for a server on another machine; by default it is
    /// read from --data-dir.
    #[arg(long, value_name = "FILE", requires = "token", global = true)]
    cert: Option<PathBuf>,
    /// The QUIC client token file, with --cert.
    #[arg(long, value_name = "FILE", requires = "cert", global = true)]
    token: Option<PathBuf>,
}

impl Connection {
    /// Keys from MILLRACE_ACCESS_KEY_ID/MILLRACE_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID/
    /// AWS_SECRET_ACCESS_KEY, or the data directory's `credentials` file, in that order.
    fn credentials(&self) -> Result<Option<Credentials>> {
        if self.no_sign {
            return Ok(None);
        }
        for (id, secret) in [
            ("MILLRACE_ACCESS_KEY_ID", "MILLRACE_SECRET_ACCESS_KEY"),
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ] {
            if let (Ok(id), Ok(secret)) = (std::env::var(id), std::env::var(secret)) {
                return Ok(Some(Credentials { access_key_id: id, secret_access_key: secret }));
            }
        }
        let path = self.data_dir.join("credentials");
        if path.exists() {
            let (found, _) = millrace_net::secrets::credentials(&self.data_dir)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(Some(Credentials {
                access_key_id: found.access_key_id,
                secret_access_key: found.secret_access_key,
            }));
        }
        bail!(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, point --data-dir at the server's data \
             directory, or pass --no-sign for a server run with --auth none"
        )
    }

    fn quic_config(&self) -> Result<ClientConfig> {
        match (&self.cert, &self.token) {
            (Some(cert), Some(token)) => Ok(ClientConfig {
                server: self.quic_endpoint,
                server_name: "localhost".into(),
                trusted_cert: std::fs::read(cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .into(),
                token: std::fs::read(token).with_context(|| format!("reading {}", token.display()))?,
            }),
            _ => ClientConfig::from_data_dir(self.quic_endpoint, &self.data_dir).with_context(|| {
                format!(
                    "reading the QUIC certificate and token from {} (or pass --cert FILE --token FILE)",
                    self.data_dir.display()
                )
            }),
        }
    }

    fn client(&self) -> Result<KinesisClient> {
        Ok(KinesisClient::new(&self.endpoint, self.credentials()?, &self.region)?)
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum StreamCommand {
    /// Create a stream.
    Create {
        name: String,
        /// Shards of a provisioned stream.
        #[arg(long, default_value_t = 1)]
        shards: u32,
        /// On-demand mode (starts with 4 shards).
        #[arg(long)]
        on_demand: bool,
    },
    /// List streams.
    List,
    /// Show a stream and its shards.
    Describe { name: String },
    /// Delete a stream (with --force, also its registered consumers).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    stream: String,
    /// Records to put; without any, each line of standard input is one record.
    data: Vec<String>,
    /// Partition key of every record [default: a different key per record].
    #[arg(long)]
    partition_key: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    stream: String,
    /// Where to start: `latest` (only new records), `trim-horizon` (everything kept),
    /// or a time as seconds since the epoch.
    #[arg(long, default_value = "latest")]
    from: String,
    /// Stop once caught up instead of following.
    #[arg(long)]
    no_follow: bool,
    /// Show shard, sequence number and partition key before each record.
    #[arg(long)]
    verbose: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn text(value: &Value, name: &str) -> String {
    match value.get(name) {
        Some(Value::Str(text)) => text.clone(),
        Some(Value::Int(number)) => number.to_string(),
        _ => String::new(),
    }
}

fn list<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    match value.get(name) {
        Some(Value::List(items)) => items,
        _ => &[],
    }
}

pub fn stream(connection: &Connection, command: StreamCommand) -> Result<()> {
    let mut client = connection.client()?;
    runtime()?.block_on(async {
        match command {
            StreamCommand::Create { name, shards, on_demand } => {
                let mut request = Value::map().with("StreamName", name.as_str());
                request = if on_demand {
                    request.with("StreamModeDetails", Value::map().with("StreamMode", "ON_DEMAND"))
                } else {
                    request.with("ShardCount", shards)
                };
                client.call("CreateStream", &request).await?;
                println!("created {name}");
            }
            StreamCommand::List => {
                let mut request = Value::map();
                loop {
                    let answer = client.call("ListStreams", &request).await?;
                    for name in list(&answer, "StreamNames") {
                        if let Value::Str(name) = name {
                            println!("{name}");
                        }
                    }
                    match answer.get("NextToken") {
                        Some(Value::Str(token)) => request = Value::map().with("NextToken", token.as_str()),
                        _ => break,
                    }
                }
            }
            StreamCommand::Describe { name } => {
                let summary = client
                    .call("DescribeStreamSummary", &Value::map().with("StreamName", name.as_str()))
                    .await?;
                let summary = summary.get("StreamDescriptionSummary").cloned().unwrap_or(Value::map());
                let mode =
                    summary.get("StreamModeDetails").map(|mode| text(mode, "StreamMode")).unwrap_or_default();
                println!("stream     {}", text(&summary, "StreamName"));
                println!("arn        {}", text(&summary, "StreamARN"));
                println!("status     {}  mode {mode}", text(&summary, "StreamStatus"));
                println!("retention  {} h", text(&summary, "RetentionPeriodHours"));
                println!(
                    "open shards {}  consumers {}",
                    text(&summary, "OpenShardCount"),
                    text(&summary, "ConsumerCount")
                );
                let shards =
                    client.call("ListShards", &Value::map().with("StreamName", name.as_str())).await?;
                println!(
                    "{:<22} {:<8} {:<41} {:<41} parents",
                    "shard", "state", "hash key start", "hash key end"
                );
                for shard in list(&shards, "Shards") {
                    let range = shard.get("HashKeyRange").cloned().unwrap_or(Value::map());
                    let sequences = shard.get("SequenceNumberRange").cloned().unwrap_or(Value::map());
                    let state =
                        if sequences.get("EndingSequenceNumber").is_some() { "closed" } else { "open" };
                    let parents: Vec<String> = ["ParentShardId", "AdjacentParentShardId"]
                        .iter()
                        .map(|member| text(shard, member))
                        .filter(|parent| !parent.is_empty())
                        .collect();
                    println!(
                        "{:<22} {:<8} {:<41} {:<41} {}",
                        text(shard, "ShardId"),
                        state,
                        text(&range, "StartingHashKey"),
                        text(&range, "EndingHashKey"),
                        parents.join(",")
                    );
                }
            }
            StreamCommand::Delete { name, force } => {
                let request =
                    Value::map().with("StreamName", name.as_str()).with("EnforceConsumerDeletion", force);
                client.call("DeleteStream", &request).await?;
                println!("deleted {name}");
            }
        }
        Ok(())
    })
}

fn read_records(data: Vec<String>) -> Box<dyn Iterator<Item = Result<Vec<u8>>>> {
    if data.is_empty() {
        Box::new(std::io::stdin().lock().lines().map(|line| Ok(line?.into_bytes())))
    } else {
        Box::new(data.into_iter().map(|data| Ok(data.into_bytes())))
    }
}

/// `put --quic`: through the producer SDK, every record queued in order, then all awaited.
fn put_quic(connection: &Connection, args: PutArgs) -> Result<()> {
    let config = connection.quic_config()?;
    let seed = millrace_core::Clock::now_ms(&millrace_core::SystemClock);
    runtime()?.block_on(async {
        let client = QuicClient::connect(&config).await?;
        let producer = Producer::new(client.channel().await?, ProducerConfig::default());
        let mut acks = Vec::new();
        for (index, data) in read_records(args.data).enumerate() {
            let key = args.partition_key.clone().unwrap_or_else(|| format!("millrace-put-{seed}-{index}"));
            acks.push(producer.queue(&args.stream, &key, data?).await?);
        }
        for ack in acks {
            println!("{}", ack.await?);
        }
        client.close();
        Ok(())
    })
}

/// `tail --quic`: a push subscription to every shard; with --no-follow it stops once no
/// record has come for half a second.
fn tail_quic(connection: &Connection, args: TailArgs, start: ReadStart) -> Result<()> {
    let config = connection.quic_config()?;
    runtime()?.block_on(async {
        let client = std::sync::Arc::new(QuicClient::connect(&config).await?);
        let mut consumer =
            Consumer::subscribe(client, &args.stream, start, ConsumerConfig::default()).await?;
        let stdout = std::io::stdout();
        loop {
            let next = if args.no_follow {
                match tokio::time::timeout(Duration::from_millis(500), consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(()),
                }
            } else {
                consumer.next().await
            };
            let Some(records) = next else { return Ok(()) };
            let mut out = stdout.lock();
            for record in records? {
                if args.verbose {
                    write!(
                        out,
                        "shardId-{:012} {} {}: ",
                        record.shard, record.sequence, record.partition_key
                    )?;
                }
                out.write_all(&record.data)?;
                if !record.data.ends_with(b"\n") {
                    out.write_all(b"\n")?;
                }
            }
            out.flush()?;
        }
    })
}

pub fn put(connection: &Connection, args: PutArgs) -> Result<()> {
    if connection.quic {
        return put_quic(connection, args);
    }
    let mut client = connection.client()?;
    let records: Box<dyn Iterator<Item = Result<Vec<u8>>>> = if args.data.is_empty() {
        Box::new(std::io::stdin().lock().lines().map(|line| Ok(line?.into_bytes())))
    } else {
        Box::new(args.data.into_iter().map(|data| Ok(data.into_bytes())))
    };
    let seed = millrace_core::Clock::now_ms(&millrace_core::SystemClock);
    runtime()?.block_on(async {
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let mut total = 0usize;
        let mut records = records.peekable();
        while let Some(data) = records.next() {
            let data = data?;
            let key = args.partition_key.clone().unwrap_or_else(|| format!("millrace-put-{seed}-{total}"));
            batch_bytes += data.len() + key.len();
            batch.push(Value::map().with("PartitionKey", key).with("Data", Value::Bytes(data)));
            total += 1;
            if batch.len() == 500 || batch_bytes > 4 << 20 || records.peek().is_none() {
                let request = Value::map()
                    .with("StreamName", args.stream.as_str())
                    .with("Records", Value::List(std::mem::take(&mut batch)));
                let answer = client.call("PutRecords", &request).await?;
                for result in list(&answer, "Records") {
                    match result.get("ErrorCode") {
                        Some(_) => eprintln!(
                            "failed: {} {}",
                            text(result, "ErrorCode"),
                            text(result, "ErrorMessage")
                        ),
                        None => println!("{} {}", text(result, "ShardId"), text(result, "SequenceNumber")),
                    }
                }
                if text(&answer, "FailedRecordCount") != "0" {
                    bail!("{} records failed", text(&answer, "FailedRecordCount"));
                }
                batch_bytes = 0;
            }
        }
        Ok(())
    })
}

/// One shard being followed.
struct Reader {
    iterator: String,
}

pub fn tail(connection: &Connection, args: TailArgs) -> Result<()> {
    if connection.quic {
        let start = match args.from.as_str() {
            "latest" => ReadStart::Latest,
            "trim-horizon" => ReadStart::TrimHorizon,
            seconds => ReadStart::AtTimestamp(
                (seconds.parse::<f64>().with_context(|| {
                    format!("--from {seconds}: expected latest, trim-horizon or seconds since the epoch")
                })? * 1000.0) as i64,
            ),
        };
        return tail_quic(connection, args, start);
    }
    let mut client = connection.client()?;
    let (iterator_type, timestamp) = match args.from.as_str() {
        "latest" => ("LATEST", None),
        "trim-horizon" => ("TRIM_HORIZON", None),
        seconds => (
            "AT_TIMESTAMP",
            Some(seconds.parse::<f64>().with_context(|| {
                format!("--from {seconds}: expected latest, trim-horizon or seconds since the epoch")
            })?),
        ),
    };
    let stream = args.stream.clone();
    runtime()?.block_on(async move {
        let shards = client.call("ListShards", &Value::map().with("StreamName", stream.as_str())).await?;
        let shards = list(&shards, "Shards").to_vec();
        let ids: HashSet<String> = shards.iter().map(|shard| text(shard, "ShardId")).collect();
        let parents_of = |shard: &Value| -> Vec<String> {
            ["ParentShardId", "AdjacentParentShardId"]
                .iter()
                .map(|member| text(shard, member))
                .filter(|parent| ids.contains(parent))
                .collect()
        };
        let parents: BTreeMap<String, Vec<String>> =
            shards.iter().map(|shard| (text(shard, "ShardId"), parents_of(shard))).collect();
        // Latest: the open shards. Otherwise the roots, then children as parents finish.
        let starts: Vec<String> = shards
            .iter()
            .filter(|shard| {
                let open = shard
                    .get("SequenceNumberRange")
                    .and_then(|range| range.get("EndingSequenceNumber"))
                    .is_none();
                if iterator_type == "LATEST" {
                    open
                } else {
                    parents[&text(shard, "ShardId")].is_empty()
                }
            })
            .map(|shard| text(shard, "ShardId"))
            .collect();
        let mut readers: BTreeMap<String, Reader> = BTreeMap::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut started: HashSet<String> = HashSet::new();
        let mut queue: Vec<(String, &str)> = starts.into_iter().map(|id| (id, iterator_type)).collect();
        let stdout = std::io::stdout();
        loop {
            for (shard, kind) in queue.drain(..) {
                if !started.insert(shard.clone()) {
                    continue;
                }
                let mut request = Value::map()
                    .with("StreamName", stream.as_str())
                    .with("ShardId", shard.as_str())
                    .with("ShardIteratorType", kind);
                if let (Some(seconds), "AT_TIMESTAMP") = (timestamp, kind) {
                    request = request.with("Timestamp", Value::Float(seconds));
                }
                let answer = client.call("GetShardIterator", &request).await?;
                readers.insert(shard, Reader { iterator: text(&answer, "ShardIterator") });
            }
            let mut any = false;
            let mut caught_up = true;
            let shard_ids: Vec<String> = readers.keys().cloned().collect();
            for shard in shard_ids {
                let iterator = readers[&shard].iterator.clone();
                let answer = client.call("GetRecords", &Value::map().with("ShardIterator", iterator)).await?;
                let records = list(&answer, "Records");
                any |= !records.is_empty();
                let mut out = stdout.lock();
                for record in records {
                    let data = Request::new(Protocol::Json, record).blob_req("Data").unwrap_or_default();
                    if args.verbose {
                        write!(
                            out,
                            "{} {} {}: ",
                            shard,
                            text(record, "SequenceNumber"),
                            text(record, "PartitionKey")
                        )?;
                    }
                    out.write_all(&data)?;
                    if !data.ends_with(b"\n") {
                        out.write_all(b"\n")?;
                    }
                }
                out.flush()?;
                if !matches!(answer.get("MillisBehindLatest"), Some(Value::Int(0))) {
                    caught_up = false;
                }
                match answer.get("NextShardIterator") {
                    Some(Value::Str(next)) => {
                        readers.get_mut(&shard).expect("reading it").iterator = next.clone()
                    }
                    _ => {
                        readers.remove(&shard);
                        finished.insert(shard.clone());
                        // A child starts once every parent it has in this stream is read.
                        for (child, its_parents) in &parents {
                            if its_parents.contains(&shard)
                                && its_parents.iter().all(|parent| finished.contains(parent))
                            {
                                queue.push((child.clone(), "TRIM_HORIZON"));
                            }
                        }
                    }
                }
            }
            if !any && queue.is_empty() {
                if args.no_follow && caught_up {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
}

#[derive(clap::Subcommand, Debug)]
pub enum FirehoseCommand {
    /// Create a DirectPut delivery stream to an S3 bucket (a folder under the server's data
    /// directory when it runs without --s3-endpoint).
    Create {
        name: String,
        /// The bucket objects are delivered to.
        #[arg(long)]
        bucket: String,
        /// Object key prefix (AWS's expressions allowed; default `YYYY/MM/DD/HH/`).
        #[arg(long)]
        prefix: Option<String>,
        /// Prefix for failed records (needed when --prefix has expressions).
        #[arg(long)]
        error_prefix: Option<String>,
        /// UNCOMPRESSED, GZIP, ZIP, Snappy or HADOOP_SNAPPY.
        #[arg(long, default_value = "UNCOMPRESSED")]
        compression: String,
        /// Buffer size hint, MiB (1–128).
        #[arg(long, default_value_t = 5)]
        size_mib: u32,
        /// Buffer interval hint, seconds (0–900).
        #[arg(long, default_value_t = 300)]
        interval_secs: u32,
        /// Append a newline to each record.
        #[arg(long)]
        newline: bool,
    },
    /// List delivery streams.
    List,
    /// Show a delivery stream's description (JSON).
    Describe { name: String },
    /// Delete a delivery stream.
    Delete { name: String },
    /// Put records: the arguments, or each line of standard input.
    Put {
        name: String,
        /// Records; with none, each line of standard input is one.
        data: Vec<String>,
        /// Append a newline to each record (lines of standard input lose theirs).
        #[arg(long)]
        newline: bool,
    },
}

pub fn firehose(connection: &Connection, command: FirehoseCommand) -> Result<()> {
    let mut client = connection.client()?.for_service("Firehose_20150804", "firehose");
    runtime()?.block_on(async {
        match command {
            FirehoseCommand::Create {
                name,
                bucket,
                prefix,
                error_prefix,
                compression,
                size_mib,
                interval_secs,
                newline,
            } => {
                let mut destination = Value::map()
                    .with("RoleARN", "arn:aws:iam::000000000000:role/millrace")
                    .with("BucketARN", format!("arn:aws:s3:::{bucket}"))
                    .with_opt("Prefix", prefix)
                    .with_opt("ErrorOutputPrefix", error_prefix)
                    .with(
                        "BufferingHints",
                        Value::map().with("SizeInMBs", size_mib).with("IntervalInSeconds", interval_secs),
                    )
                    .with("CompressionFormat", compression);
                if newline {
                    let processor = Value::map()
                        .with("Type", "AppendDelimiterToRecord")
                        .with("Parameters", Value::List(Vec::new()));
                    destination = destination.with(
                        "ProcessingConfiguration",
                        Value::map().with("Enabled", true).with("Processors", Value::List(vec![processor])),
                    );
                }
                let request = Value::map()
                    .with("DeliveryStreamName", name.as_str())
                    .with("DeliveryStreamType", "DirectPut")
                    .with("ExtendedS3DestinationConfiguration", destination);
                let answer = client.call("CreateDeliveryStream", &request).await?;
                println!("created {}", text(&answer, "DeliveryStreamARN"));
            }
            FirehoseCommand::List => {
                let mut request = Value::map().with("Limit", 10_000u32);
                loop {
                    let answer = client.call("ListDeliveryStreams", &request).await?;
                    let names = list(&answer, "DeliveryStreamNames");
                    let mut last = None;
                    for name in names {
                        if let Value::Str(name) = name {
                            println!("{name}");
                            last = Some(name.clone());
                        }
                    }
                    match (answer.get("HasMoreDeliveryStreams"), last) {
                        (Some(Value::Bool(true)), Some(last)) => {
                            request = Value::map()
                                .with("Limit", 10_000u32)
                                .with("ExclusiveStartDeliveryStreamName", last)
                        }
                        _ => break,
                    }
                }
            }
            FirehoseCommand::Describe { name } => {
                let request = Value::map().with("DeliveryStreamName", name.as_str());
                let answer = client.call("DescribeDeliveryStream", &request).await?;
                let json = millrace_net::aws::document::encode(Protocol::Json, &answer);
                println!("{}", String::from_utf8_lossy(&json));
            }
            FirehoseCommand::Delete { name } => {
                client
                    .call("DeleteDeliveryStream", &Value::map().with("DeliveryStreamName", name.as_str()))
                    .await?;
                println!("deleted {name}");
            }
            FirehoseCommand::Put { name, data, newline } => {
                let records: Box<dyn Iterator<Item = Result<Vec<u8>>>> = if data.is_empty() {
                    Box::new(std::io::stdin().lock().lines().map(|line| Ok(line?.into_bytes())))
                } else {
                    Box::new(data.into_iter().map(|data| Ok(data.into_bytes())))
                };
                let mut records = records.peekable();
                let (mut batch, mut batch_bytes, mut total) = (Vec::new(), 0usize, 0usize);
                while let Some(record) = records.next() {
                    let mut record = record?;
                    if newline {
                        record.push(b'\n');
                    }
                    batch_bytes += record.len();
                    batch.push(Value::map().with("Data", Value::Bytes(record)));
                    let full = batch.len() == 500 || batch_bytes > 3 << 20;
                    if full || records.peek().is_none() {
                        let request = Value::map()
                            .with("DeliveryStreamName", name.as_str())
                            .with("Records", Value::List(std::mem::take(&mut batch)));
                        let answer = client.call("PutRecordBatch", &request).await?;
                        for result in list(&answer, "RequestResponses") {
                            match result.get("ErrorCode") {
                                Some(_) => eprintln!(
                                    "failed: {} {}",
                                    text(result, "ErrorCode"),
                                    text(result, "ErrorMessage")
                                ),
                                None => total += 1,
                            }
                        }
                        if text(&answer, "FailedPutCount") != "0" {
                            bail!("{} records failed", text(&answer, "FailedPutCount"));
                        }
                        batch_bytes = 0;
                    }
                }
                println!("put {total} records into {name}");
            }
        }
        Ok(())
    })
}

#[derive(clap::Subcommand, Debug)]
pub enum AnalyticsCommand {
    /// Create a KDA SQL application reading one data stream and writing one.
    Create {
        name: String,
        /// The application code (KDA SQL, or the Flink-style window table functions).
        #[arg(long, value_name = "FILE")]
        sql: PathBuf,
        /// The data stream it reads (its in-application stream is SOURCE_SQL_STREAM_001).
        #[arg(long)]
        input: String,
        /// The data stream it writes DESTINATION_SQL_STREAM to.
        #[arg(long)]
        output: String,
        /// The input's schema (an InputSchema JSON document); by default DiscoverInputSchema
        /// infers it from the input's records.
        #[arg(long, value_name = "FILE")]
        schema: Option<PathBuf>,
        /// The in-application stream written to --output.
        #[arg(long, default_value = "DESTINATION_SQL_STREAM")]
        output_name: String,
        /// How output rows are written: JSON or CSV.
        #[arg(long, default_value = "JSON")]
        format: String,
    },
    /// Start an application.
    Start {
        name: String,
        /// NOW, TRIM_HORIZON or LAST_STOPPED_POINT.
        #[arg(long, default_value = "NOW")]
        from: String,
    },
    /// Stop an application (it keeps its state for LAST_STOPPED_POINT).
    Stop { name: String },
    /// Show an application's description (JSON).
    Describe { name: String },
    /// List applications and their status.
    List,
    /// Delete an application.
    Delete { name: String },
}

pub fn analytics(connection: &Connection, command: AnalyticsCommand) -> Result<()> {
    let mut client = connection.client()?.for_service("KinesisAnalytics_20150814", "kinesisanalytics");
    let region = connection.region.clone();
    let arn = move |stream: &str| format!("arn:aws:kinesis:{region}:000000000000:stream/{stream}");
    let role = "arn:aws:iam::000000000000:role/millrace";
    runtime()?.block_on(async {
        match command {
            AnalyticsCommand::Create { name, sql, input, output, schema, output_name, format } => {
                let code =
                    std::fs::read_to_string(&sql).with_context(|| format!("reading {}", sql.display()))?;
                let schema = match schema {
                    Some(path) => {
                        let text =
                            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                        millrace_net::aws::document::decode(Protocol::Json, &text)
                            .map_err(|error| anyhow::anyhow!("{}: {}", path.display(), error.message))?
                    }
                    None => {
                        let request =
                            Value::map().with("ResourceARN", arn(&input)).with("RoleARN", role).with(
                                "InputStartingPositionConfiguration",
                                Value::map().with("InputStartingPosition", "TRIM_HORIZON"),
                            );
                        let answer = client.call("DiscoverInputSchema", &request).await.context(
                            "discovering the input's schema (put some records first, or pass --schema FILE)",
                        )?;
                        answer
                            .get("InputSchema")
                            .cloned()
                            .context("DiscoverInputSchema answered no schema")?
                    }
                };
                let input = Value::map()
                    .with("NamePrefix", "SOURCE_SQL_STREAM")
                    .with(
                        "KinesisStreamsInput",
                        Value::map().with("ResourceARN", arn(&input)).with("RoleARN", role),
                    )
                    .with("InputSchema", schema);
                let output = Value::map()
                    .with("Name", output_name)
                    .with(
                        "KinesisStreamsOutput",
                        Value::map().with("ResourceARN", arn(&output)).with("RoleARN", role),
                    )
                    .with("DestinationSchema", Value::map().with("RecordFormatType", format));
                let request = Value::map()
                    .with("ApplicationName", name.as_str())
                    .with("ApplicationCode", code)
                    .with("Inputs", Value::List(vec![input]))
                    .with("Outputs", Value::List(vec![output]));
                let answer = client.call("CreateApplication", &request).await?;
                let summary = answer.get("ApplicationSummary").cloned().unwrap_or(Value::map());
                println!("created {}", text(&summary, "ApplicationARN"));
            }
            AnalyticsCommand::Start { name, from } => {
                let detail = describe_application(&mut client, &name).await?;
                let inputs = list(&detail, "InputDescriptions");
                let configurations: Vec<Value> = inputs
                    .iter()
                    .map(|input| {
                        Value::map().with("Id", text(input, "InputId")).with(
                            "InputStartingPositionConfiguration",
                            Value::map().with("InputStartingPosition", from.as_str()),
                        )
                    })
                    .collect();
                let request = Value::map()
                    .with("ApplicationName", name.as_str())
                    .with("InputConfigurations", Value::List(configurations));
                client.call("StartApplication", &request).await?;
                println!("starting {name} from {from}");
            }
            AnalyticsCommand::Stop { name } => {
                client.call("StopApplication", &Value::map().with("ApplicationName", name.as_str())).await?;
                println!("stopping {name}");
            }
            AnalyticsCommand::Describe { name } => {
                let detail = describe_application(&mut client, &name).await?;
                let json = millrace_net::aws::document::encode(Protocol::Json, &detail);
                println!("{}", String::from_utf8_lossy(&json));
            }
            AnalyticsCommand::List => {
                let mut request = Value::map().with("Limit", 50u32);
                loop {
                    let answer = client.call("ListApplications", &request).await?;
                    let mut last = None;
                    for summary in list(&answer, "ApplicationSummaries") {
                        println!(
                            "{}\t{}",
                            text(summary, "ApplicationName"),
                            text(summary, "ApplicationStatus")
                        );
                        last = Some(text(summary, "ApplicationName"));
                    }
                    match (answer.get("HasMoreApplications"), last) {
                        (Some(Value::Bool(true)), Some(last)) => {
                            request =
                                Value::map().with("Limit", 50u32).with("ExclusiveStartApplicationName", last)
                        }
                        _ => break,
                    }
                }
            }
            AnalyticsCommand::Delete { name } => {
                let detail = describe_application(&mut client, &name).await?;
                let created = detail.get("CreateTimestamp").cloned().context("no CreateTimestamp")?;
                let request =
                    Value::map().with("ApplicationName", name.as_str()).with("CreateTimestamp", created);
                client.call("DeleteApplication", &request).await?;
                println!("deleted {name}");
            }
        }
        Ok(())
    })
}

async fn describe_application(client: &mut KinesisClient, name: &str) -> Result<Value> {
    let answer = client.call("DescribeApplication", &Value::map().with("ApplicationName", name)).await?;
    answer.get("ApplicationDetail").cloned().context("DescribeApplication answered no ApplicationDetail")
}
