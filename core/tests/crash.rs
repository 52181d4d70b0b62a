//! A real crash test: a child process (this test binary, re-executed) appends under load to
//! a real data directory and prints every acknowledgement; the parent kills it with SIGKILL
//! at a random moment, restarts the engine on the same directory, and checks that every
//! acknowledged record is there, intact, with its sequence number, in order. Several rounds
//! on one directory. (SIGKILL keeps the page cache: the simulation proves the sync order.)
//!
//! Each round kills only once the child has acknowledged records (so that every round checks
//! something), after a random further delay. The seed of the delays is printed;
//! `MILLRACE_CRASH_SEED=N` replays one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use millrace_core::{
    CatalogError, Engine, EngineConfig, EngineError, LogConfig, PartitionKey, ReadLimits, Record,
    ResourceKey, StartPosition, StreamMode, StreamName,
};

/// The test's own random numbers (xorshift64*), seeded and printed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// Acknowledgements a round waits for before it starts its kill timer.
const ACKS_BEFORE_KILL: usize = 200;

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
        Ok(()) | Err(EngineError::Catalog(CatalogError::Exists { .. })) => {}
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
                    let acks = block_on(engine.append(&ResourceKey::from(&stream()), records)).unwrap();
                    let mut out = std::io::stdout().lock();
                    for (id, ack) in ids.iter().zip(acks) {
                        writeln!(out, "ACK {id} {} {}", ack.shard.get(), ack.sequence).unwrap();
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
    let seed = std::env::var("MILLRACE_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) | 1);
    eprintln!("crash test seed {seed} (replay with MILLRACE_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
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
        let (first_acks, acks_seen) = std::sync::mpsc::channel();
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
                    if lines.len() == ACKS_BEFORE_KILL {
                        let _ = first_acks.send(());
                    }
                }
            }
            lines
        });
        // Kill at a random moment once the child is acknowledging under load.
        let started = Instant::now();
        let ready = acks_seen.recv_timeout(Duration::from_secs(60));
        assert!(
            ready.is_ok(),
            "round {round} (seed {seed}): the child acknowledged nothing in {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(rng.below(700)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        assert!(
            lines.len() >= ACKS_BEFORE_KILL,
            "round {round} (seed {seed}): {} acknowledgements",
            lines.len()
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
    let name = ResourceKey::from(&stream());
    block_on(async {
        let meta = engine.describe(&name).unwrap();
        let mut stored: BTreeMap<u128, (u32, Vec<u8>)> = BTreeMap::new();
        for shard in meta.shards() {
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
                        shard.shard_id()
                    );
                    previous = Some(record.sequence);
                    stored.insert(record.sequence.as_u128(), (shard.shard_id().get(), record.data));
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
