//! The `millrace` command. `millrace serve` runs the appliance on a data directory (created
//! if missing, no config file needed) until SIGINT or SIGTERM, then stops after the
//! in-flight commits are durable. The network front ends (HTTP Kinesis API, QUIC) and the
//! stream/video/admin commands join here as they are built.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use millrace_core::runtime::{Engine, EngineConfig};
use millrace_core::shard_log::LogConfig;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = EngineConfig::new(&args.data_dir);
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
    eprintln!(
        "millrace: no network listeners yet (the HTTP Kinesis API and QUIC ingest are issues #3 and #4)"
    );
    eprintln!("millrace: stop with Ctrl-C or SIGTERM");
    if let Some(signal) = signals.forever().next() {
        eprintln!("millrace: signal {signal}: finishing in-flight commits and stopping");
    }
    engine.shutdown();
    eprintln!("millrace: stopped cleanly");
    Ok(())
}
