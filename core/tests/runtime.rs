//! The thread-per-core engine on a real data directory (O_DIRECT through glommio): streams,
//! appends, reads, resharding, consumers and checkpoints, retention, idempotent producers
//! through reshards and restarts, and resources of other kinds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_lite::future::block_on;
use millrace_core::{
    Appended, CatalogError, Engine, EngineConfig, EngineError, HashKey, LogConfig, ManualClock, NewResource,
    PartitionKey, ReadLimits, Record, ResourceKey, ResourceKind, ResourceUpdate, SequenceNumber, ShardId,
    Stamp, StartPosition, StreamMode, StreamName,
};

fn data_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.cores = 2;
    config.log = LogConfig { segment_bytes: 256 << 10, prealloc_bytes: 256 << 10 };
    config
}

fn record(key: &str, data: Vec<u8>) -> Record {
    Record::new(key.parse::<PartitionKey>().unwrap(), data)
}

fn stream(name: &str) -> (StreamName, ResourceKey) {
    let name: StreamName = name.parse().unwrap();
    let key = ResourceKey::from(&name);
    (name, key)
}

const ALL: ReadLimits = ReadLimits { max_records: 100_000, max_bytes: 1 << 30 };

/// Reads a shard from TRIM_HORIZON to its current end.
async fn read_shard(engine: &Engine, key: &ResourceKey, shard: ShardId) -> Vec<(SequenceNumber, Vec<u8>)> {
    let mut position = engine.resolve(key, shard, StartPosition::TrimHorizon).await.unwrap();
    let mut out = Vec::new();
    loop {
        let read = engine
            .read(key, shard, position, ReadLimits { max_records: 37, max_bytes: 1 << 20 })
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

/// Every record of a stream, from every shard.
async fn read_all(engine: &Engine, key: &ResourceKey) -> Vec<(ShardId, SequenceNumber, Vec<u8>)> {
    let meta = engine.describe(key).unwrap();
    let mut all = Vec::new();
    for shard in meta.shards() {
        for (sequence, data) in read_shard(engine, key, shard.shard_id()).await {
            all.push((shard.shard_id(), sequence, data));
        }
    }
    all
}

#[test]
fn streams_survive_restart_and_resharding() {
    let dir = data_dir("restart");
    let (name, key) = stream("orders");
    let mut appended = Vec::new();
    {
        let engine = Engine::start(config(&dir)).unwrap();
        block_on(async {
            engine.create_stream(&name, 3, StreamMode::Provisioned).await.unwrap();
            assert!(matches!(
                engine.create_stream(&name, 1, StreamMode::Provisioned).await,
                Err(EngineError::Catalog(CatalogError::Exists { kind: ResourceKind::DataStream, .. }))
            ));
            for round in 0..50u32 {
                let records: Vec<Record> = (0..20u32)
                    .map(|i| record(&format!("key-{}", i % 7), vec![round as u8; 100 + i as usize]))
                    .collect();
                let expected: Vec<Vec<u8>> = records.iter().map(|r| r.data.clone()).collect();
                let acks = engine.append(&key, records).await.unwrap();
                appended.extend(acks.into_iter().zip(expected));
            }
            // Routing is the Kinesis one: MD5 of the key within the shard's range.
            let meta = engine.describe(&key).unwrap();
            for (ack, _) in &appended[..20] {
                let shard = meta.shard(ack.shard).unwrap();
                assert!(shard.owns(ack.sequence));
            }
            let too_big = record("k", vec![0; (1 << 20) + 1]);
            assert!(matches!(
                engine.append(&key, vec![too_big]).await,
                Err(EngineError::RecordTooLarge { .. })
            ));
            engine.update(&key, ResourceUpdate::Retention { hours: 48 }).await.unwrap();
            assert!(matches!(
                engine.update(&key, ResourceUpdate::Retention { hours: 23 }).await,
                Err(EngineError::Catalog(CatalogError::Invalid(_)))
            ));
            let consumer = ResourceUpdate::RegisterConsumer { name: "app".into(), created_ms: 1 };
            engine.update(&key, consumer).await.unwrap();
            engine.checkpoint(&key, "app", ShardId::new(1), appended[3].0.sequence).await.unwrap();
            // A sequence number of another shard is refused, with where it came from.
            let foreign = SequenceNumber::new(99, 1);
            assert!(matches!(
                engine.checkpoint(&key, "app", ShardId::new(1), foreign).await,
                Err(EngineError::ForeignSequence { .. })
            ));
        });
        engine.shutdown();
    }
    let engine = Engine::start(config(&dir)).unwrap();
    block_on(async {
        let meta = engine.describe(&key).unwrap();
        assert_eq!(meta.retention_hours(), 48);
        assert_eq!(meta.consumers().len(), 1);
        assert!(meta.version() >= 3, "each change bumps the version");
        assert_eq!(
            engine.get_checkpoint(&key, "app", ShardId::new(1)).await.unwrap(),
            Some(appended[3].0.sequence),
            "the checkpoint survives the restart"
        );
        assert_eq!(engine.get_checkpoint(&key, "other", ShardId::new(1)).await.unwrap(), None);
        let mut stored: Vec<(SequenceNumber, Vec<u8>)> =
            read_all(&engine, &key).await.into_iter().map(|(_, sequence, data)| (sequence, data)).collect();
        stored.sort();
        let mut expected: Vec<(SequenceNumber, Vec<u8>)> =
            appended.iter().map(|(ack, data)| (ack.sequence, data.clone())).collect();
        expected.sort();
        assert_eq!(stored, expected, "every acknowledged record is back after a restart");

        // Split shard 0: the parent closes, reads of it end with its children.
        let parent = meta.shard(ShardId::new(0)).unwrap().clone();
        let range = parent.range();
        let middle = range.start() + (range.end() - range.start()) / 2;
        engine.split_shard(&key, ShardId::new(0), HashKey::new(middle)).await.unwrap();
        let before = read_shard(&engine, &key, ShardId::new(0)).await;
        let position = engine.resolve(&key, ShardId::new(0), StartPosition::TrimHorizon).await.unwrap();
        let mut read = engine.read(&key, ShardId::new(0), position, ALL).await.unwrap();
        if let Some(next) = read.next {
            read = engine.read(&key, ShardId::new(0), next, ALL).await.unwrap();
        }
        assert_eq!(read.next, None, "a closed, fully read shard has no next position");
        assert_eq!(read.child_shards, vec![ShardId::new(3), ShardId::new(4)]);
        let acks =
            engine.append(&key, (0..50).map(|i| record(&format!("k{i}"), vec![1])).collect()).await.unwrap();
        assert!(acks.iter().all(|ack| ack.shard != ShardId::new(0)), "closed shards take no writes");
        let child_acks: Vec<_> =
            acks.iter().filter(|ack| ack.shard == ShardId::new(3) || ack.shard == ShardId::new(4)).collect();
        assert!(!child_acks.is_empty());
        let parent_last = before.last().unwrap().0;
        assert!(child_acks.iter().all(|ack| ack.sequence > parent_last), "children number above parents");

        engine.merge_shards(&key, ShardId::new(1), ShardId::new(2)).await.unwrap();
        engine.update_shard_count(&key, 4).await.unwrap();
        let meta = engine.describe(&key).unwrap();
        assert_eq!(meta.open_shards().count(), 4);
        assert!(matches!(
            engine.resolve(&key, ShardId::new(99), StartPosition::Latest).await,
            Err(EngineError::Catalog(CatalogError::ShardNotFound { .. }))
        ));
        assert!(matches!(
            engine.delete_stream(&name, false).await,
            Err(EngineError::Catalog(CatalogError::HasConsumers { .. }))
        ));
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
    let (name, key) = stream("load");
    block_on(engine.create_stream(&name, 2, StreamMode::OnDemand)).unwrap();
    let before = engine.commit_stats();
    let producers: Vec<_> = (0..8)
        .map(|producer| {
            let (engine, key) = (engine.clone(), key.clone());
            std::thread::spawn(move || {
                block_on(async {
                    let mut acks = Vec::new();
                    for i in 0..100u32 {
                        let data = i.to_le_bytes().to_vec();
                        let ack =
                            engine.append(&key, vec![record(&format!("p{producer}"), data)]).await.unwrap();
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
    let stats = engine.commit_stats();
    let (groups, batches) = (stats.groups - before.groups, stats.batches - before.batches);
    assert_eq!(batches, 800, "every append was one batch");
    // Eight producers waiting on two shards: appends that queue during an fdatasync share
    // the next one.
    assert!(groups < batches, "{batches} appends took {groups} commits: none was grouped");
    block_on(async {
        assert_eq!(read_all(&engine, &key).await.len(), 800);
        let latest = engine.resolve(&key, ShardId::new(0), StartPosition::Latest).await.unwrap();
        let read = engine.read(&key, ShardId::new(0), latest, ALL).await.unwrap();
        assert!(read.records.is_empty() && read.next == Some(latest));
    });
    engine.shutdown();
}

fn sequences(answer: Vec<Result<Appended, EngineError>>) -> Vec<(ShardId, SequenceNumber)> {
    answer.into_iter().map(|appended| appended.map(|done| (done.shard, done.sequence)).unwrap()).collect()
}

fn stamp(producer_id: u64, batch: u32, resent: bool) -> Option<Stamp> {
    Some(Stamp { producer_id, batch, resent })
}

#[test]
fn a_retried_stamped_batch_is_stored_once_across_restarts() {
    let dir = data_dir("idempotent");
    let (name, key) = stream("once");
    let batch = |tag: u8| (0..5).map(|index| record("same-key", vec![tag, index])).collect::<Vec<_>>();
    let first = {
        let engine = Engine::start(config(&dir)).unwrap();
        block_on(engine.create_stream(&name, 1, StreamMode::Provisioned)).unwrap();
        let first =
            sequences(block_on(engine.append_stamped(&key, batch(1), stamp(0xabc, 1, false))).unwrap());
        // The acknowledgement was lost; the producer sends the same batch again.
        let again =
            sequences(block_on(engine.append_stamped(&key, batch(1), stamp(0xabc, 1, true))).unwrap());
        assert_eq!(again, first, "a retry gets the sequence numbers of the stored batch");
        // Two copies of a new batch in flight at once: stored once, both answered.
        let (left, right) = block_on(futures_lite::future::zip(
            engine.append_stamped(&key, batch(2), stamp(0xabc, 2, false)),
            engine.append_stamped(&key, batch(2), stamp(0xabc, 2, true)),
        ));
        assert_eq!(sequences(left.unwrap()), sequences(right.unwrap()));
        // An older batch than the last stored is refused.
        let stale = block_on(engine.append_stamped(&key, batch(1), stamp(0xabc, 1, true))).unwrap();
        assert!(matches!(stale[0], Err(EngineError::StaleBatch { last_batch: 2, .. })), "{stale:?}");
        engine.shutdown();
        first
    };
    let engine = Engine::start(config(&dir)).unwrap();
    // After a restart the stamps are known again: the retry of batch 2 is not stored again.
    let retried = sequences(block_on(engine.append_stamped(&key, batch(2), stamp(0xabc, 2, true))).unwrap());
    let third = sequences(block_on(engine.append_stamped(&key, batch(3), stamp(0xabc, 3, false))).unwrap());
    let stored = block_on(read_shard(&engine, &key, ShardId::new(0)));
    let tags: Vec<u8> = stored.iter().map(|(_, data)| data[0]).collect();
    assert_eq!(tags, [[1u8; 5], [2; 5], [3; 5]].concat(), "each batch once, in order");
    let at = |range: std::ops::Range<usize>| {
        stored[range].iter().map(|(sequence, _)| *sequence).collect::<Vec<_>>()
    };
    assert_eq!(at(0..5), first.iter().map(|(_, sequence)| *sequence).collect::<Vec<_>>());
    assert_eq!(at(5..10), retried.iter().map(|(_, sequence)| *sequence).collect::<Vec<_>>());
    assert_eq!(at(10..15), third.iter().map(|(_, sequence)| *sequence).collect::<Vec<_>>());
    engine.shutdown();
}

/// The hole a review found: a stamped batch lands in a parent, its acknowledgement is lost,
/// the parent splits, and the retry routes to the children, which must know the parent's
/// stamps, also after a restart and a further merge.
#[test]
fn a_retry_after_a_reshard_is_answered_from_the_parent() {
    let dir = data_dir("idempotent-reshard");
    let (name, key) = stream("resharded");
    // Keys on both sides of the split point.
    let batch: Vec<Record> = (0..40).map(|index| record(&format!("key-{index}"), vec![7, index])).collect();
    let engine = Engine::start(config(&dir)).unwrap();
    block_on(engine.create_stream(&name, 1, StreamMode::Provisioned)).unwrap();
    let first =
        sequences(block_on(engine.append_stamped(&key, batch.clone(), stamp(0xfeed, 1, false))).unwrap());
    assert!(first.iter().all(|(shard, _)| *shard == ShardId::new(0)));
    block_on(engine.split_shard(&key, ShardId::new(0), HashKey::new(u128::MAX / 2))).unwrap();
    // The retry routes to both children: each answers from the parent's frame.
    let retried =
        sequences(block_on(engine.append_stamped(&key, batch.clone(), stamp(0xfeed, 1, true))).unwrap());
    assert_eq!(retried, first, "the retry gets the parent's sequence numbers");
    engine.shutdown();

    let engine = Engine::start(config(&dir)).unwrap();
    let again =
        sequences(block_on(engine.append_stamped(&key, batch.clone(), stamp(0xfeed, 1, true))).unwrap());
    assert_eq!(again, first, "and after a restart");
    block_on(engine.merge_shards(&key, ShardId::new(1), ShardId::new(2))).unwrap();
    let merged =
        sequences(block_on(engine.append_stamped(&key, batch.clone(), stamp(0xfeed, 1, true))).unwrap());
    assert_eq!(merged, first, "and after the children merge");
    // The next batch is stored, in the merged child.
    let next = batch.iter().map(|r| record(r.partition_key.as_str(), vec![8])).collect();
    let stored = sequences(block_on(engine.append_stamped(&key, next, stamp(0xfeed, 2, false))).unwrap());
    assert!(stored.iter().all(|(shard, _)| *shard == ShardId::new(3)));
    let all = block_on(read_all(&engine, &key));
    assert_eq!(all.len(), 80, "the first batch once, the second once");
    engine.shutdown();
}

/// Checkpoints are group-committed to their own journal: many of them cost no catalog
/// write, and they survive a restart.
#[test]
fn checkpoints_do_not_touch_the_catalog() {
    let dir = data_dir("checkpoints");
    let (name, key) = stream("checked");
    let engine = Engine::start(config(&dir)).unwrap();
    block_on(engine.create_stream(&name, 2, StreamMode::Provisioned)).unwrap();
    let acks =
        block_on(engine.append(&key, (0..20).map(|i| record(&format!("k{i}"), vec![i])).collect())).unwrap();
    let catalog_bytes = || -> u64 {
        std::fs::read_dir(dir.join("catalog"))
            .unwrap()
            .map(|entry| entry.unwrap().metadata().unwrap().len())
            .sum()
    };
    let before = catalog_bytes();
    // Many consumers at once, from many threads.
    let threads: Vec<_> = (0..8)
        .map(|owner| {
            let (engine, key, acks) = (engine.clone(), key.clone(), acks.clone());
            std::thread::spawn(move || {
                for ack in &acks {
                    block_on(engine.checkpoint(&key, &format!("app-{owner}"), ack.shard, ack.sequence))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(catalog_bytes(), before, "160 checkpoints wrote nothing to the catalog");
    engine.shutdown();
    let engine = Engine::start(config(&dir)).unwrap();
    for owner in 0..8 {
        for shard in [ShardId::new(0), ShardId::new(1)] {
            let last = acks.iter().filter(|ack| ack.shard == shard).map(|ack| ack.sequence).next_back();
            let stored = block_on(engine.get_checkpoint(&key, &format!("app-{owner}"), shard)).unwrap();
            assert_eq!(stored, last, "app-{owner}'s checkpoint of {shard}");
        }
    }
    engine.shutdown();
}

/// Time comes from the engine's clock: a test moves it instead of waiting a day.
#[test]
fn retention_follows_the_clock() {
    let dir = data_dir("retention");
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = config(&dir);
    config.log = LogConfig { segment_bytes: 16 << 10, prealloc_bytes: 0 };
    config.clock = clock.clone();
    let engine = Engine::start(config).unwrap();
    let (name, key) = stream("aging");
    block_on(engine.create_stream(&name, 1, StreamMode::Provisioned)).unwrap();
    let old: Vec<Appended> =
        block_on(engine.append(&key, (0..200).map(|i| record("k", vec![i as u8; 500])).collect())).unwrap();
    clock.advance_ms(25 * 3_600_000);
    let new = block_on(engine.append(&key, vec![record("k", b"fresh".to_vec())])).unwrap();
    block_on(engine.run_retention()).unwrap();
    let left = block_on(read_shard(&engine, &key, ShardId::new(0)));
    assert!(
        left.len() < old.len(),
        "records older than 24 h went ({} of {} left)",
        left.len(),
        old.len() + 1
    );
    assert_eq!(left.last().map(|(sequence, _)| *sequence), Some(new[0].sequence), "the new record stays");
    let horizon = block_on(engine.resolve(&key, ShardId::new(0), StartPosition::TrimHorizon)).unwrap();
    assert!(horizon > old[0].sequence);
    engine.shutdown();
}

/// Every kind has its own names: a delivery stream and a data stream can share one, each
/// with its own logs, settings and version.
#[test]
fn resources_of_other_kinds_live_beside_streams() {
    let dir = data_dir("kinds");
    let engine = Engine::start(config(&dir)).unwrap();
    let (name, stream_key) = stream("orders");
    let delivery = ResourceKey::new(ResourceKind::DeliveryStream, "orders");
    let table = ResourceKey::new(ResourceKind::GlueTable, "db.orders");
    block_on(async {
        engine.create_stream(&name, 1, StreamMode::Provisioned).await.unwrap();
        let new = NewResource {
            key: delivery.clone(),
            shards: 1,
            mode: StreamMode::Provisioned,
            spec: br#"{"DeliveryStreamType":"DirectPut"}"#.to_vec(),
            tags: vec![("team".into(), "data".into())],
            retention_hours: 24,
            max_record_bytes: 1_024_000,
            encryption_key_id: None,
        };
        engine.create(new.clone()).await.unwrap();
        engine
            .create(NewResource { key: table.clone(), shards: 0, spec: b"{}".to_vec(), ..new })
            .await
            .unwrap();
        let appended = engine.append(&delivery, vec![record("k", b"buffered".to_vec())]).await.unwrap();
        assert_eq!(appended[0].shard, ShardId::new(0));
        let stale = ResourceUpdate::Spec(b"{}".to_vec());
        assert!(matches!(
            engine.update_at(&delivery, Some(9), stale).await,
            Err(EngineError::Catalog(CatalogError::Invalid(millrace_core::Invalid::Version {
                given: 9,
                current: 1
            })))
        ));
        let update = ResourceUpdate::Spec(br#"{"v":2}"#.to_vec());
        engine.update_at(&delivery, Some(1), update).await.unwrap();
    });
    engine.shutdown();
    let engine = Engine::start(config(&dir)).unwrap();
    let meta = engine.describe(&delivery).unwrap();
    assert_eq!((meta.version(), meta.spec()), (2, &br#"{"v":2}"#[..]));
    assert_eq!(meta.tags(), &[("team".to_owned(), "data".to_owned())]);
    assert_ne!(meta.uid(), engine.describe(&stream_key).unwrap().uid());
    assert_eq!(engine.list(ResourceKind::DeliveryStream).len(), 1);
    assert_eq!(engine.list(ResourceKind::GlueTable)[0].name(), "db.orders");
    assert!(engine.describe(&table).unwrap().shards().is_empty());
    let stored = block_on(read_shard(&engine, &delivery, ShardId::new(0)));
    assert_eq!(stored[0].1, b"buffered");
    block_on(engine.delete(&delivery, false)).unwrap();
    assert!(engine.describe(&stream_key).is_ok(), "the data stream of the same name stays");
    engine.shutdown();
}
