//! The `millrace` command. `millrace serve` runs the appliance on a data directory (created
//! if missing, no config file needed), serving the Kinesis HTTP API, until SIGINT or
//! SIGTERM, then stops after the in-flight commits are durable. QUIC ingest and the
//! stream/video/admin commands join here as they are built.
#![forbid(unsafe_code)]

mod cli;

/// mimalloc instead of glibc's malloc: the HTTP path allocates per record (request values,
/// decoded data, answers) and glibc's malloc/free took ~17% of the server's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use millrace_core::{Engine, EngineConfig, Keyring, LogConfig};
use millrace_gpu::run::DeviceChoice;
use millrace_net::analytics::{AnalyticsApi, AnalyticsConfig, AnalyticsV2};
use millrace_net::aws::Router;
use millrace_net::firehose::{self, sink::Sink, FirehoseApi, FirehoseConfig};
use millrace_net::front::{Auth, FrontEnd, HttpConfig};
use millrace_net::kinesis::{ApiConfig, KinesisApi};
use millrace_net::quic::{self, server::QuicConfig};
use millrace_net::secrets;

#[derive(Parser)]
#[command(name = "millrace", version, about = "Millrace: the Kinesis family on one box")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance.
    Serve(ServeArgs),
    /// Create, list, describe and delete streams.
    Stream {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::StreamCommand,
    },
    /// Put records: the arguments, or each line of standard input.
    Put {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(flatten)]
        args: cli::PutArgs,
    },
    /// Create, list, describe and delete Firehose delivery streams, and put records.
    Firehose {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::FirehoseCommand,
    },
    /// Kinesis Data Analytics for SQL: create, start, stop, describe, list and delete
    /// applications.
    Analytics {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::AnalyticsCommand,
    },
    /// Follow a stream like `tail -f`: every shard, from a chosen position.
    Tail {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(flatten)]
        args: cli::TailArgs,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where streams, segments and the catalog live.
    #[arg(long, default_value = "./millrace-data")]
    data_dir: PathBuf,
    /// Shard cores (one glommio executor each); defaults to every CPU.
    #[arg(long)]
    cores: Option<usize>,
    /// Size at which a shard's segment file is sealed and a new one started.
    #[arg(long, default_value_t = 128)]
    segment_mib: u64,
    /// How often retention trims expired segments, in seconds.
    #[arg(long, default_value_t = 60)]
    retention_interval_secs: u64,
    /// Address of the AWS-compatible HTTP API (Kinesis Data Streams).
    #[arg(long, default_value = "127.0.0.1:4567")]
    http_listen: std::net::SocketAddr,
    /// `sigv4` checks every request's signature against MILLRACE_ACCESS_KEY_ID /
    /// MILLRACE_SECRET_ACCESS_KEY, or the key pair generated into the data directory;
    /// `none` turns checking off (local development only).
    #[arg(long, value_enum, default_value_t = AuthMode::Sigv4)]
    auth: AuthMode,
    /// Enforce AWS's per-shard throughput limits (ProvisionedThroughputExceededException).
    #[arg(long)]
    emulate_limits: bool,
    /// Region named in ARNs.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// How long shard iterators stay valid, in seconds (AWS: 300). For tests.
    #[arg(long, default_value_t = 300, hide = true)]
    iterator_ttl_secs: u64,
    /// Address of the native QUIC protocol (producer/consumer SDK).
    #[arg(long, default_value = "127.0.0.1:4568")]
    quic_listen: std::net::SocketAddr,
    /// Certificate chain (PEM) for QUIC; without it a self-signed one is generated into the
    /// data directory.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Master key for encryption at rest (32 bytes, raw or as 64 hex digits); without it,
    /// one is generated into the data directory on first start.
    #[arg(long, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
    /// How long one SubscribeToShard session lasts, in seconds (AWS: 300). For tests.
    #[arg(long, default_value_t = 300, hide = true)]
    subscription_secs: u64,
    /// Threads serving HTTP.
    #[arg(long, default_value_t = 2)]
    http_threads: usize,
    /// Nice value of the engine's executor threads (0 leaves them as they are). Below 0, an
    /// executor runs as soon as its fdatasync completes even when the network threads keep
    /// every core busy; needs root or CAP_SYS_NICE, and without them the engine runs on at
    /// the normal priority.
    #[arg(long, value_name = "N", default_value_t = -10, allow_hyphen_values = true)]
    executor_nice: i32,
    /// S3-compatible endpoint Firehose delivers to (path-style; credentials from
    /// MILLRACE_S3_ACCESS_KEY_ID / MILLRACE_S3_SECRET_ACCESS_KEY or the AWS variables).
    /// Without it, each bucket is a folder under `<data-dir>/s3`.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Where Kinesis Data Analytics aggregates event-time windows: auto (a GPU when wgpu finds
    /// one that is not a CPU rasterizer), cpu, or gpu (any adapter, lavapipe included; an error
    /// without one).
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    analytics_device: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    Sigv4,
    None,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Stream { connection, command } => cli::stream(&connection, command),
        Command::Put { connection, args } => cli::put(&connection, args),
        Command::Tail { connection, args } => cli::tail(&connection, args),
        Command::Firehose { connection, command } => cli::firehose(&connection, command),
        Command::Analytics { connection, command } => cli::analytics(&connection, command),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = EngineConfig::new(&args.data_dir);
    config.executor_nice = args.executor_nice;
    if let Some(cores) = args.cores {
        anyhow::ensure!(cores >= 1, "--cores must be at least 1");
        config.cores = cores;
    }
    anyhow::ensure!(args.segment_mib >= 1, "--segment-mib must be at least 1");
    config.log = LogConfig { segment_bytes: args.segment_mib << 20, prealloc_bytes: args.segment_mib << 20 };
    config.retention_interval = std::time::Duration::from_secs(args.retention_interval_secs.max(1));
    // Register the handlers before starting, so that a signal during recovery is not lost.
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
            .context("installing SIGINT/SIGTERM handlers")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    config.keyring = Some(std::sync::Arc::new(keyring(&args)?));
    let started = std::time::Instant::now();
    let engine = Engine::start(config.clone())
        .with_context(|| format!("starting the engine on {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir).unwrap_or(args.data_dir.clone());
    let streams = engine.list_streams();
    eprintln!(
        "millrace: storage engine ready in {} ms: data in {}, {} shard cores, {} streams recovered",
        started.elapsed().as_millis(),
        data_dir.display(),
        config.cores,
        streams.len()
    );
    let front = match start_front(&args, &engine, &data_dir) {
        Ok(front) => front,
        Err(error) => {
            engine.shutdown();
            return Err(error);
        }
    };
    eprintln!("millrace: stop with Ctrl-C or SIGTERM");
    if let Some(signal) = signals.forever().next() {
        eprintln!("millrace: signal {signal}: finishing in-flight commits and stopping");
    }
    front.shutdown();
    engine.shutdown();
    eprintln!("millrace: stopped cleanly");
    Ok(())
}

/// The front end: its runtime, the HTTP port with every AWS-compatible service, the QUIC
/// endpoint.
fn start_front(args: &ServeArgs, engine: &Engine, data_dir: &std::path::Path) -> anyhow::Result<FrontEnd> {
    let mut front = FrontEnd::start(args.http_threads.max(1)).context("starting the front end's runtime")?;
    let started = start_http(args, engine, data_dir, &mut front)
        .and_then(|()| start_quic(args, engine, &mut front, data_dir));
    match started {
        Ok(()) => Ok(front),
        Err(error) => {
            front.shutdown();
            Err(error)
        }
    }
}

fn start_http(
    args: &ServeArgs,
    engine: &Engine,
    data_dir: &std::path::Path,
    front: &mut FrontEnd,
) -> anyhow::Result<()> {
    let auth = match args.auth {
        AuthMode::None => {
            eprintln!("millrace: --auth none: requests are NOT authenticated");
            Auth::None
        }
        AuthMode::Sigv4 => {
            let from_env =
                (std::env::var("MILLRACE_ACCESS_KEY_ID"), std::env::var("MILLRACE_SECRET_ACCESS_KEY"));
            let (id, secret) = match from_env {
                (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => {
                    eprintln!("millrace: SigV4 with access key {id} from MILLRACE_ACCESS_KEY_ID");
                    (id, secret)
                }
                _ => {
                    let (credentials, created) =
                        secrets::credentials(data_dir).context("reading or creating the credentials file")?;
                    if created {
                        eprintln!(
                            "millrace: generated a key pair (shown once; kept in {}):\n  \
                             AWS_ACCESS_KEY_ID={}\n  AWS_SECRET_ACCESS_KEY={}",
                            data_dir.join("credentials").display(),
                            credentials.access_key_id,
                            credentials.secret_access_key
                        );
                    } else {
                        eprintln!(
                            "millrace: SigV4 with access key {} (secret in {})",
                            credentials.access_key_id,
                            data_dir.join("credentials").display()
                        );
                    }
                    (credentials.access_key_id, credentials.secret_access_key)
                }
            };
            Auth::SigV4(std::collections::HashMap::from([(id, secret)]))
        }
    };
    let iterator_key = secrets::iterator_key(data_dir).context("reading or creating iterator.key")?;
    let api_config = ApiConfig {
        region: args.region.clone(),
        iterator_ttl_ms: (args.iterator_ttl_secs.max(1) * 1000) as i64,
        emulate_limits: args.emulate_limits,
        subscription_ms: (args.subscription_secs.max(1) * 1000) as i64,
        encryption_at_rest: true,
    };
    let kinesis = KinesisApi::new(engine.clone(), api_config, iterator_key);
    let sink = match &args.s3_endpoint {
        Some(url) => {
            Sink::S3(firehose::sink::S3Endpoint::from_env(url, &args.region).map_err(anyhow::Error::msg)?)
        }
        None => Sink::Local { root: data_dir.join("s3") },
    };
    eprintln!("millrace: Firehose delivers to {}", sink.describe());
    let firehose_config = FirehoseConfig { region: args.region.clone(), encryption_at_rest: true };
    let lambda = firehose::invoke::LambdaEndpoint::from_env().map_err(anyhow::Error::msg)?;
    if let Some(lambda) = &lambda {
        eprintln!("millrace: Firehose invokes Lambda transformations at {}", lambda.url());
    }
    let choice = match args.analytics_device.as_str() {
        "cpu" => DeviceChoice::Cpu,
        "gpu" => DeviceChoice::Gpu,
        _ => DeviceChoice::Auto,
    };
    let device = millrace_gpu::run::open_device(choice)
        .map_err(|why| anyhow::anyhow!("--analytics-device {}: {why}", args.analytics_device))?;
    match &device {
        Some(device) => {
            eprintln!("millrace: analytics aggregates event-time windows on the GPU: {}", device.adapter)
        }
        None if choice == DeviceChoice::Auto => {
            eprintln!("millrace: analytics runs on the CPU (--analytics-device auto: no GPU other than a CPU rasterizer)")
        }
        None => eprintln!("millrace: analytics runs on the CPU (--analytics-device cpu)"),
    }
    let analytics_config =
        AnalyticsConfig { region: args.region.clone(), device, ..AnalyticsConfig::default() };
    let analytics = AnalyticsApi::new(engine.clone(), analytics_config, Some(sink.clone()), front.handle());
    let firehose = FirehoseApi::new(engine.clone(), firehose_config, sink, lambda, front.handle());
    let glue = millrace_net::glue::GlueApi::new(engine.clone(), &args.region);
    let router = Router::new()
        .with(kinesis)
        .with(firehose)
        .with(glue)
        .with(Arc::new(AnalyticsV2(analytics.clone())))
        .with(analytics);
    let mut config = HttpConfig::new(args.http_listen, auth);
    config.clock = engine.clock();
    let address = front
        .serve_http(router, config)
        .with_context(|| format!("listening for HTTP on {}", args.http_listen))?;
    eprintln!(
        "millrace: Kinesis API listening on http://{address} (aws --endpoint-url http://{address} kinesis ...){}",
        if args.emulate_limits { "; per-shard limits emulated" } else { "" }
    );
    Ok(())
}

/// The master key for encryption at rest: from --encryption-key-file, or the data
/// directory's `encryption.key` (generated on first start); nonces get a fresh random key.
fn keyring(args: &ServeArgs) -> anyhow::Result<Keyring> {
    let master: Vec<u8> = match &args.encryption_key_file {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let text = String::from_utf8_lossy(&bytes);
            let hex = text.trim();
            if bytes.len() == 32 {
                bytes
            } else if hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                (0..32)
                    .map(|index| u8::from_str_radix(&hex[2 * index..2 * index + 2], 16).expect("hex"))
                    .collect()
            } else {
                anyhow::bail!("{} must hold 32 bytes, raw or as 64 hex digits", path.display());
            }
        }
        None => {
            let path = args.data_dir.join("encryption.key");
            let (bytes, _) = secrets::load_or_create(&path, || secrets::random_bytes(32))
                .with_context(|| format!("reading or creating {}", path.display()))?;
            anyhow::ensure!(bytes.len() == 32, "{} must hold 32 bytes", path.display());
            bytes
        }
    };
    let nonce_key = secrets::random_bytes(32).context("reading /dev/urandom")?;
    Ok(Keyring::new(
        master.try_into().expect("32 bytes checked"),
        nonce_key.try_into().expect("32 bytes read"),
    ))
}

fn start_quic(
    args: &ServeArgs,
    engine: &Engine,
    front: &mut FrontEnd,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let (cert_chain, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => quic::identity_from_files(cert, key)
            .with_context(|| format!("reading {} and {}", cert.display(), key.display()))?,
        _ => {
            let (chain, key, generated) = quic::identity(data_dir).context("the QUIC certificate")?;
            if generated {
                eprintln!(
                    "millrace: generated a self-signed QUIC certificate for localhost: {}",
                    data_dir.join(quic::CERT_FILE).display()
                );
            }
            (chain, key)
        }
    };
    let (token, _) = quic::token(data_dir).context("the QUIC client token")?;
    let config = QuicConfig { listen: args.quic_listen, cert_chain, key, token };
    let address = front
        .serve_quic(engine.clone(), config)
        .with_context(|| format!("listening for QUIC on {}", args.quic_listen))?;
    eprintln!(
        "millrace: QUIC listening on {address}; clients on this machine use --data-dir {}, others copy {} and {} \
         from it and use --cert FILE --token FILE",
        data_dir.display(),
        quic::CERT_FILE,
        quic::TOKEN_FILE
    );
    Ok(())
}
