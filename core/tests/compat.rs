//! A data directory written by an earlier release opens with everything intact: a copy of
//! `fixtures/release-0.1.0` (see `fixtures/README.md`) is started with the current engine and
//! compared line by line with the `MANIFEST` that release wrote, then restarted (the first start
//! migrates the catalog to the current schema) and compared again, then written to.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_lite::future::block_on;
use millrace_core::{
    Engine, EngineConfig, Keyring, LogConfig, PartitionKey, ReadLimits, Record, ResourceKey, StartPosition,
};

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
            let stream = ResourceKey::new(millrace_core::ResourceKind::DataStream, name.as_str());
            let meta = engine.describe(&stream).unwrap();
            let line = format!(
                "stream {name} {:?} {} {} {:?} next_shard={} next_epoch={}",
                meta.mode(),
                meta.retention_hours(),
                meta.max_record_bytes(),
                meta.encryption_key_id(),
                meta.shards().len(),
                1 + meta.shards().iter().map(|shard| shard.epoch()).max().unwrap_or(0)
            );
            lines.insert(line);
            for (key, value) in meta.tags() {
                lines.insert(format!("tag {name} {key} {value}"));
            }
            for consumer in meta.consumers() {
                lines.insert(format!("consumer {name} {} {}", consumer.name(), consumer.created_ms()));
            }
            for shard in meta.shards() {
                let range = shard.range();
                let parents: Vec<u32> = shard.parents().map(|parent| parent.get()).collect();
                let ending = shard.ending_sequence().map(|sequence| sequence.as_u128());
                lines.insert(format!(
                    "shard {name} {} {} {} parents={parents:?} epoch={} ending={ending:?}",
                    shard.shard_id().get(),
                    range.start(),
                    range.end(),
                    shard.epoch()
                ));
                for owner in ["app-1", "app-2"] {
                    if let Some(sequence) =
                        engine.get_checkpoint(&stream, owner, shard.shard_id()).await.unwrap()
                    {
                        lines.insert(format!(
                            "checkpoint {name} {owner} {} {sequence}",
                            shard.shard_id().get()
                        ));
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
                            shard.shard_id().get(),
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
    // And the old streams take new records; the idempotent producer of 0.1.0 is known.
    let orders = ResourceKey::new(millrace_core::ResourceKind::DataStream, "orders");
    let record = Record::new("key-1".parse::<PartitionKey>().unwrap(), b"written after the upgrade".to_vec());
    let appended = block_on(engine.append(&orders, vec![record])).unwrap();
    let meta = engine.describe(&orders).unwrap();
    let shard = meta.shard(appended[0].shard).unwrap();
    assert!(shard.is_open() && shard.owns(appended[0].sequence));
    let stamped: Vec<Record> = (0..4)
        .map(|i| {
            Record::new("stamped".parse::<PartitionKey>().unwrap(), format!("stamped-3-{i}").into_bytes())
        })
        .collect();
    let stamp = Some(millrace_core::Stamp { producer_id: 0xfeed, batch: 3, resent: true });
    let answered = block_on(engine.append_stamped(&orders, stamped, stamp)).unwrap();
    let want: Vec<String> = want
        .iter()
        .filter(|line| line.starts_with("record orders") && line.contains(" stamped-3-"))
        .map(|line| line.split(' ').nth(3).unwrap().to_owned())
        .collect();
    let got: Vec<String> = answered.into_iter().map(|done| done.unwrap().sequence.to_string()).collect();
    assert_eq!(got, want, "a retry of 0.1.0's last stamped batch is answered with its sequence numbers");
    engine.shutdown();
}
