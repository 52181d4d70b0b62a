//! A real crash test: a child process (this test binary, re-executed) appends under load to
//! a real data directory and prints every acknowledgement; the parent kills it with SIGKILL
//! at a random moment, restarts the engine on the same directory, and checks that every
//! acknowledged record is there, intact, with its sequence number, in order. Several rounds
//! on one directory. (SIGKILL keeps the page cache: the simulation proves the sync order.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use millrace_core::catalog::StreamMode;
use millrace_core::engine::EngineError;
use millrace_core::runtime::{Engine, EngineConfig};
use millrace_core::shard_log::{LogConfig, ReadLimits, StartPosition};
use millrace_core::sim::SimRng;
use millrace_core::types::{PartitionKey, Record, StreamName};

const CHILD_ENV: &str = "MILLRACE_CRASH_CHILD_DIR";
const SHARDS: u32 = 3;

fn config(dir: &PathBuf) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.cores = 2;
    config.log = LogConfig { segment_bytes: 512 << 10, prealloc_bytes: 512 << 10 };
    config
}

fn stream() -> StreamName {
    "crash".parse().unwrap()
}

/// The bytes of record `id`: derived from the id so the parent can check them.
fn payload(id: u64) -> Vec<u8> {
    let len = 16 + (id * 7919 % 3000) as usize;
    let mut data: Vec<u8> = (0..len).map(|index| (id as usize + index) as u8).collect();
    data[..8].copy_from_slice(&id.to_le_bytes());
    data
}

/// The child: append forever from several threads, print `ACK id shard sequence` lines.
#[test]
#[ignore = "run by crash_test_kills_and_recovers as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let first_id: u64 = std::env::var("MILLRACE_CRASH_FIRST_ID").unwrap().parse().unwrap();
    let engine = Engine::start(config(&PathBuf::from(dir))).unwrap();
    match block_on(engine.create_stream(&stream(), SHARDS, StreamMode::Provisioned)) {
        Ok(()) | Err(EngineError::StreamExists { .. }) => {}
        Err(error) => panic!("create: {error}"),
    }
    let threads: Vec<_> = (0..6u64)
        .map(|thread| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut id = first_id + thread * 1_000_000;
                loop {
                    let count = 1 + (id % 8);
                    let ids: Vec<u64> = (id..id + count).collect();
                    id += count;
                    let records = ids
                        .iter()
                        .map(|&id| {
                            Record::new(
                                format!("key-{}", id % 13).parse::<PartitionKey>().unwrap(),
                                payload(id),
                            )
                        })
                        .collect();
                    let acks = block_on(engine.append(&stream(), records)).unwrap();
                    let mut out = std::io::stdout().lock();
                    for (id, ack) in ids.iter().zip(acks) {
                        writeln!(out, "ACK {id} {} {}", ack.shard.0, ack.sequence).unwrap();
                    }
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn crash_test_kills_and_recovers() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("crash");
    let _ = std::fs::remove_dir_all(&dir);
    let mut rng = SimRng::new(std::process::id() as u64);
    // id → (shard, sequence), over every round.
    let mut acked: BTreeMap<u64, (u32, u128)> = BTreeMap::new();
    let rounds = 5;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir)
            .env("MILLRACE_CRASH_FIRST_ID", (round as u64 * 100_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let kill_after = Duration::from_millis(300 + rng.below(900));
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let parts: Vec<&str> = rest.split(' ').collect();
                    lines.push((
                        parts[0].parse::<u64>().unwrap(),
                        parts[1].parse::<u32>().unwrap(),
                        parts[2].parse::<u128>().unwrap(),
                    ));
                }
            }
            lines
        });
        // Kill at a random moment once the child is appending.
        let started = Instant::now();
        std::thread::sleep(kill_after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        assert!(
            !lines.is_empty() || started.elapsed() < Duration::from_secs(1),
            "child acknowledged nothing"
        );
        for (id, shard, sequence) in lines {
            acked.insert(id, (shard, sequence));
        }
        verify(&dir, &acked, round);
    }
    assert!(acked.len() > 100, "the child appended under load ({} records)", acked.len());
}

/// Restarts the engine on `dir` and checks every acknowledged record.
fn verify(dir: &PathBuf, acked: &BTreeMap<u64, (u32, u128)>, round: usize) {
    let engine = Engine::start(config(dir)).unwrap();
    let name = stream();
    block_on(async {
        let meta = engine.describe(&name).unwrap();
        let mut stored: BTreeMap<u128, (u32, Vec<u8>)> = BTreeMap::new();
        for shard in &meta.shards {
            let mut position =
                engine.resolve(&name, shard.shard_id(), StartPosition::TrimHorizon).await.unwrap();
            let mut previous = None;
            loop {
                let limits = ReadLimits { max_records: 1000, max_bytes: 4 << 20 };
                let read = engine.read(&name, shard.shard_id(), position, limits).await.unwrap();
                if read.records.is_empty() {
                    break;
                }
                for record in read.records {
                    assert!(
                        previous < Some(record.sequence),
                        "round {round}: order within shard {}",
                        shard.id
                    );
                    previous = Some(record.sequence);
                    stored.insert(record.sequence.0, (shard.id, record.data));
                }
                position = read.next.unwrap();
            }
        }
        for (id, (shard, sequence)) in acked {
            let (stored_shard, data) = stored
                .get(sequence)
                .unwrap_or_else(|| panic!("round {round}: acknowledged record {id} (seq {sequence}) lost"));
            assert_eq!(stored_shard, shard, "round {round}: record {id} changed shard");
            assert_eq!(data, &payload(*id), "round {round}: record {id} damaged");
        }
        // Everything stored is a record the child built (whole, never half-visible).
        for (sequence, (_, data)) in &stored {
            let id = u64::from_le_bytes(data[..8].try_into().unwrap());
            assert_eq!(data, &payload(id), "round {round}: stored record {sequence} is not whole");
        }
    });
    engine.shutdown();
}
