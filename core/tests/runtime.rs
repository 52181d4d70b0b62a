//! The thread-per-core engine on a real data directory (O_DIRECT through glommio): streams,
//! appends, reads, resharding, consumers and checkpoints, retention, and restarts.

use std::path::PathBuf;
use std::time::Duration;

use futures_lite::future::block_on;
use millrace_core::catalog::{updates, StreamMode};
use millrace_core::engine::EngineError;
use millrace_core::runtime::{Engine, EngineConfig};
use millrace_core::shard_log::{LogConfig, ReadLimits, StartPosition};
use millrace_core::types::{HashKey, PartitionKey, Record, SequenceNumber, ShardId, StreamName};

fn data_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(dir: &PathBuf) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.cores = 2;
    config.log = LogConfig { segment_bytes: 256 << 10, prealloc_bytes: 256 << 10 };
    config
}

fn record(key: &str, data: Vec<u8>) -> Record {
    Record::new(key.parse::<PartitionKey>().unwrap(), data)
}

const ALL: ReadLimits = ReadLimits { max_records: 100_000, max_bytes: 1 << 30 };

/// Reads a shard from TRIM_HORIZON to its current end.
async fn read_shard(engine: &Engine, name: &StreamName, shard: ShardId) -> Vec<(SequenceNumber, Vec<u8>)> {
    let mut position = engine.resolve(name, shard, StartPosition::TrimHorizon).await.unwrap();
    let mut out = Vec::new();
    loop {
        let read = engine
            .read(name, shard, position, ReadLimits { max_records: 37, max_bytes: 1 << 20 })
            .await
            .unwrap();
        let empty = read.records.is_empty();
        out.extend(read.records.into_iter().map(|record| (record.sequence, record.data)));
        match read.next {
            Some(next) if !empty => position = next,
            _ => return out,
        }
    }
}

#[test]
fn streams_survive_restart_and_resharding() {
    let dir = data_dir("restart");
    let name: StreamName = "orders".parse().unwrap();
    let mut appended = Vec::new();
    {
        let engine = Engine::start(config(&dir)).unwrap();
        block_on(async {
            engine.create_stream(&name, 3, StreamMode::Provisioned).await.unwrap();
            assert!(matches!(
                engine.create_stream(&name, 1, StreamMode::Provisioned).await,
                Err(EngineError::StreamExists { .. })
            ));
            for round in 0..50u32 {
                let records: Vec<Record> = (0..20u32)
                    .map(|i| record(&format!("key-{}", i % 7), vec![round as u8; 100 + i as usize]))
                    .collect();
                let expected: Vec<Vec<u8>> = records.iter().map(|r| r.data.clone()).collect();
                let acks = engine.append(&name, records).await.unwrap();
                appended.extend(acks.into_iter().zip(expected));
            }
            // Routing is the Kinesis one: MD5 of the key within the shard's range.
            let meta = engine.describe(&name).unwrap();
            for (ack, _) in &appended[..20] {
                let shard = meta.shard(ack.shard).unwrap();
                assert_eq!(SequenceNumber(ack.sequence.0).epoch(), shard.epoch);
            }
            let too_big = record("k", vec![0; (1 << 20) + 1]);
            assert!(matches!(
                engine.append(&name, vec![too_big]).await,
                Err(EngineError::RecordTooLarge { .. })
            ));
            engine.update_stream(&name, updates::retention(48)).await.unwrap();
            assert!(engine.update_stream(&name, updates::retention(23)).await.is_err());
            engine.update_stream(&name, updates::register_consumer("app".into(), 1)).await.unwrap();
            engine.checkpoint(&name, "app", ShardId(1), appended[3].0.sequence).await.ok();
        });
        engine.shutdown();
    }
    let engine = Engine::start(config(&dir)).unwrap();
    block_on(async {
        let meta = engine.describe(&name).unwrap();
        assert_eq!(meta.retention_hours, 48);
        assert_eq!(meta.consumers.len(), 1);
        let mut stored = Vec::new();
        for shard in 0..3 {
            stored.extend(read_shard(&engine, &name, ShardId(shard)).await);
        }
        stored.sort();
        let mut expected: Vec<(SequenceNumber, Vec<u8>)> =
            appended.iter().map(|(ack, data)| (ack.sequence, data.clone())).collect();
        expected.sort();
        assert_eq!(stored, expected, "every acknowledged record is back after a restart");

        // Split shard 0: the parent closes, reads of it end with its children.
        let parent = meta.shard(ShardId(0)).unwrap().clone();
        let middle = parent.hash_start + (parent.hash_end - parent.hash_start) / 2;
        engine.split_shard(&name, ShardId(0), HashKey(middle)).await.unwrap();
        let before = read_shard(&engine, &name, ShardId(0)).await;
        let position = engine.resolve(&name, ShardId(0), StartPosition::TrimHorizon).await.unwrap();
        let mut read = engine.read(&name, ShardId(0), position, ALL).await.unwrap();
        if read.next.is_some() {
            read = engine.read(&name, ShardId(0), read.next.unwrap(), ALL).await.unwrap();
        }
        assert_eq!(read.next, None, "a closed, fully read shard has no next position");
        assert_eq!(read.child_shards, vec![ShardId(3), ShardId(4)]);
        let acks =
            engine.append(&name, (0..50).map(|i| record(&format!("k{i}"), vec![1])).collect()).await.unwrap();
        assert!(acks.iter().all(|ack| ack.shard != ShardId(0)), "closed shards take no writes");
        let child_acks: Vec<_> =
            acks.iter().filter(|ack| ack.shard == ShardId(3) || ack.shard == ShardId(4)).collect();
        assert!(!child_acks.is_empty());
        let parent_last = before.last().unwrap().0;
        assert!(child_acks.iter().all(|ack| ack.sequence > parent_last), "children number above parents");

        engine.merge_shards(&name, ShardId(1), ShardId(2)).await.unwrap();
        engine.update_shard_count(&name, 4).await.unwrap();
        let meta = engine.describe(&name).unwrap();
        assert_eq!(meta.open_shards().count(), 4);
        assert!(matches!(
            engine.resolve(&name, ShardId(99), StartPosition::Latest).await,
            Err(EngineError::ShardNotFound { .. })
        ));
        assert!(matches!(engine.delete_stream(&name, false).await, Err(EngineError::ResourceInUse { .. })));
        engine.delete_stream(&name, true).await.unwrap();
        assert!(engine.list_streams().is_empty());
    });
    engine.shutdown();
    let shards_left = std::fs::read_dir(dir.join("shards")).unwrap().count();
    assert_eq!(shards_left, 0, "deleting a stream removes its files");
}

#[test]
fn concurrent_producers_get_group_commits() {
    let dir = data_dir("concurrent");
    let engine = Engine::start(config(&dir)).unwrap();
    let name: StreamName = "load".parse().unwrap();
    block_on(engine.create_stream(&name, 2, StreamMode::OnDemand)).unwrap();
    let producers: Vec<_> = (0..8)
        .map(|producer| {
            let engine = engine.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                block_on(async {
                    let mut acks = Vec::new();
                    for i in 0..100u32 {
                        let key = format!("p{producer}");
                        let ack =
                            engine.append(&name, vec![record(&key, i.to_le_bytes().to_vec())]).await.unwrap();
                        acks.push(ack[0]);
                    }
                    acks
                })
            })
        })
        .collect();
    let mut all = Vec::new();
    for producer in producers {
        let acks = producer.join().unwrap();
        // One partition key: one shard, increasing sequence numbers.
        assert!(acks
            .windows(2)
            .all(|pair| pair[0].shard == pair[1].shard && pair[0].sequence < pair[1].sequence));
        all.extend(acks);
    }
    assert_eq!(all.len(), 800);
    block_on(async {
        let mut total = 0;
        for shard in 0..2 {
            total += read_shard(&engine, &name, ShardId(shard)).await.len();
        }
        assert_eq!(total, 800);
        let latest = engine.resolve(&name, ShardId(0), StartPosition::Latest).await.unwrap();
        let read = engine.read(&name, ShardId(0), latest, ALL).await.unwrap();
        assert!(read.records.is_empty() && read.next == Some(latest));
    });
    engine.shutdown();
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn a_retried_stamped_batch_is_stored_once_across_restarts() {
    use millrace_core::format::ProducerStamp;
    let dir = data_dir("idempotent");
    let name: StreamName = "once".parse().unwrap();
    let batch = |tag: u8| (0..5).map(|index| record("same-key", vec![tag, index])).collect::<Vec<_>>();
    let sequences = |answer: Vec<Result<millrace_core::runtime::Appended, EngineError>>| {
        answer.into_iter().map(|appended| appended.unwrap().sequence).collect::<Vec<_>>()
    };
    let stamp = |batch| Some(ProducerStamp { producer_id: 0xabc, batch });
    let first = {
        let engine = Engine::start(config(&dir)).unwrap();
        block_on(engine.create_stream(&name, 1, StreamMode::Provisioned)).unwrap();
        let first = sequences(block_on(engine.append_stamped(&name, batch(1), stamp(1))).unwrap());
        // The acknowledgement was lost; the producer sends the same batch again.
        let again = sequences(block_on(engine.append_stamped(&name, batch(1), stamp(1))).unwrap());
        assert_eq!(again, first, "a retry gets the sequence numbers of the stored batch");
        // Two copies of a new batch in flight at once: stored once, both answered.
        let (left, right) = block_on(futures_lite::future::zip(
            engine.append_stamped(&name, batch(2), stamp(2)),
            engine.append_stamped(&name, batch(2), stamp(2)),
        ));
        assert_eq!(sequences(left.unwrap()), sequences(right.unwrap()));
        // An older batch than the last stored is refused.
        let stale = block_on(engine.append_stamped(&name, batch(1), stamp(1))).unwrap();
        assert!(matches!(stale[0], Err(EngineError::InvalidArgument { .. })), "{stale:?}");
        engine.shutdown();
        first
    };
    let engine = Engine::start(config(&dir)).unwrap();
    // After a restart the stamps are known again: the retry of batch 2 is not stored again.
    let retried = sequences(block_on(engine.append_stamped(&name, batch(2), stamp(2))).unwrap());
    let third = sequences(block_on(engine.append_stamped(&name, batch(3), stamp(3))).unwrap());
    let stored = block_on(read_shard(&engine, &name, ShardId(0)));
    let tags: Vec<u8> = stored.iter().map(|(_, data)| data[0]).collect();
    assert_eq!(tags, [[1u8; 5], [2; 5], [3; 5]].concat(), "each batch once, in order");
    assert_eq!(stored[..5].iter().map(|(sequence, _)| *sequence).collect::<Vec<_>>(), first);
    assert_eq!(stored[5..10].iter().map(|(sequence, _)| *sequence).collect::<Vec<_>>(), retried);
    assert_eq!(stored[10..].iter().map(|(sequence, _)| *sequence).collect::<Vec<_>>(), third);
    engine.shutdown();
}
