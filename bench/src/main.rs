//! Millrace benchmarks. `millrace-bench engine` drives the storage engine in-process (no
//! network, no HTTP front end) with producer threads, measures durable-append throughput and
//! latency, and can put them next to what fio measures on the same disk. `millrace-bench
//! kinesis` drives any Kinesis HTTP endpoint with PutRecords/GetRecords. Output ends with one
//! `RESULT key=value ...` line for scripts.
//!
//! What it does not do: it does not read back or verify what it wrote (the core's tests do
//! that), does not exercise resharding or consumers, and keeps nothing: the bench stream is
//! deleted at the end.

/// The allocator `millrace serve` runs with (mimalloc): the in-process benches measure what
/// the server does, and glibc's malloc, freeing records across threads, costs a tenth more.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod delivery_bench;
mod engine_bench;
mod fio;
mod firehose_bench;
mod kinesis_bench;
mod nexmark_bench;
mod quic_bench;
mod report;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "millrace-bench", version, about = "Millrace benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Append throughput and latency of the in-process engine, optionally against fio.
    Engine(engine_bench::EngineArgs),
    /// PutRecords/GetRecords throughput and latency of any Kinesis HTTP endpoint.
    Kinesis(kinesis_bench::KinesisArgs),
    /// Producer throughput, ack latency and end-to-end latency over the native QUIC protocol.
    Quic(quic_bench::QuicArgs),
    /// Firehose: PutRecordBatch load, delivered MB/s and put-to-object latency (DataFreshness).
    Firehose(firehose_bench::FirehoseArgs),
    /// Firehose delivery from the log against the engine's ingest, in process, in one run.
    Delivery(delivery_bench::DeliveryArgs),
    /// Nexmark q5, q7, q8 and q11 as Kinesis Data Analytics applications, in process.
    Nexmark(nexmark_bench::NexmarkArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        BenchCommand::Engine(args) => engine_bench::run(&args),
        BenchCommand::Kinesis(args) => kinesis_bench::run(&args),
        BenchCommand::Quic(args) => quic_bench::run(&args),
        BenchCommand::Firehose(args) => firehose_bench::run(&args),
        BenchCommand::Delivery(args) => delivery_bench::run(&args),
        BenchCommand::Nexmark(args) => nexmark_bench::run(&args),
    }
}
