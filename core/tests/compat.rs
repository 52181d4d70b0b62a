//! A data directory written by an earlier release opens with everything intact: a copy of
//! `fixtures/release-0.1.0` (see `fixtures/README.md`) is started with the current engine and
//! compared line by line with the `MANIFEST` that release wrote, then restarted (the first start
//! migrates the catalog to the current schema) and compared again, then written to.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_lite::future::block_on;
use millrace_core::crypto::Keyring;
use millrace_core::runtime::{Engine, EngineConfig};
use millrace_core::shard_log::{LogConfig, ReadLimits, StartPosition};
use millrace_core::types::{PartitionKey, Record, StreamName};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/release-0.1.0");

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn start(dir: &Path) -> Engine {
    let master: [u8; 32] = std::fs::read(dir.join("master.key")).unwrap().try_into().unwrap();
    let mut config = EngineConfig::new(dir);
    config.cores = 2;
    config.log = LogConfig { segment_bytes: 16 << 10, prealloc_bytes: 0 };
    config.keyring = Some(Arc::new(Keyring::new(master, [1; 32])));
    Engine::start(config).unwrap()
}

/// What the engine holds, in the manifest's own format.
fn manifest_of(engine: &Engine) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    block_on(async {
        for name in engine.list_streams() {
            let stream: StreamName = name.parse().unwrap();
            let meta = engine.describe(&stream).unwrap();
            let mut line = String::new();
            write!(
                line,
                "stream {name} {:?} {} {} {:?} next_shard={} next_epoch={}",
                meta.mode,
                meta.retention_hours,
                meta.max_record_bytes,
                meta.encryption_key_id,
                meta.next_shard_id,
                meta.next_epoch
            )
            .unwrap();
            lines.insert(line);
            for (key, value) in &meta.tags {
                lines.insert(format!("tag {name} {key} {value}"));
            }
            for consumer in &meta.consumers {
                lines.insert(format!("consumer {name} {} {}", consumer.name, consumer.created_ms));
            }
            for shard in &meta.shards {
                lines.insert(format!(
                    "shard {name} {} {} {} parents={:?} epoch={} ending={:?}",
                    shard.id,
                    shard.hash_start,
                    shard.hash_end,
                    shard.parents,
                    shard.epoch,
                    shard.ending_sequence
                ));
                for owner in ["app-1", "app-2"] {
                    if let Some(sequence) =
                        engine.get_checkpoint(&stream, owner, shard.shard_id()).await.unwrap()
                    {
                        lines.insert(format!("checkpoint {name} {owner} {} {sequence}", shard.id));
                    }
                }
                let mut position =
                    engine.resolve(&stream, shard.shard_id(), StartPosition::TrimHorizon).await.unwrap();
                loop {
                    let limits = ReadLimits { max_records: 100, max_bytes: 1 << 20 };
                    let read = engine.read(&stream, shard.shard_id(), position, limits).await.unwrap();
                    if read.records.is_empty() {
                        break;
                    }
                    for record in &read.records {
                        lines.insert(format!(
                            "record {name} {} {} {} {} {}",
                            shard.id,
                            record.sequence,
                            record.partition_key,
                            record.encrypted,
                            String::from_utf8(record.data.clone()).unwrap()
                        ));
                    }
                    match read.next {
                        Some(next) => position = next,
                        None => break,
                    }
                }
            }
        }
    });
    lines
}

fn expected() -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("MANIFEST")).unwrap();
    text.lines().map(str::to_owned).collect()
}

fn assert_same(got: &BTreeSet<String>, want: &BTreeSet<String>, when: &str) {
    let missing: Vec<&String> = want.difference(got).collect();
    let extra: Vec<&String> = got.difference(want).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{when}: missing {missing:#?}\nunexpected {extra:#?}");
}

#[test]
fn a_release_0_1_0_data_directory_opens_intact() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compat-0.1.0");
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(Path::new(FIXTURE), &dir);
    let want = expected();
    assert!(want.len() > 600, "the manifest lists the fixture ({} lines)", want.len());

    let engine = start(&dir);
    assert_same(&manifest_of(&engine), &want, "first start");
    engine.shutdown();

    // The first start rewrote the catalog in the current schema: it still holds everything.
    let engine = start(&dir);
    assert_same(&manifest_of(&engine), &want, "second start");
    // And the old streams take new records.
    let orders: StreamName = "orders".parse().unwrap();
    let record = Record::new("key-1".parse::<PartitionKey>().unwrap(), b"written after the upgrade".to_vec());
    let appended = block_on(engine.append(&orders, vec![record])).unwrap();
    let meta = engine.describe(&orders).unwrap();
    let shard = meta.shard(appended[0].shard).unwrap();
    assert!(shard.is_open() && appended[0].sequence.epoch() == shard.epoch);
    engine.shutdown();
}
