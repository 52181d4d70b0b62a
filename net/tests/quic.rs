//! The native QUIC protocol in-process over a real engine on a real disk: the producer SDK
//! across shards with per-key order, reads, resharding, and bad frames answered with typed
//! errors while the connection and the stored data stay as they were.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use millrace_core::{
    Engine, EngineConfig, HashKey, LogConfig, ResourceKey, SequenceNumber, ShardId, StreamMode, StreamName,
};
use millrace_net::quic::client::{ClientConfig, QuicClient, QuicError};
use millrace_net::quic::frame::{self, kind, ErrorCode, Message, ReadStart};
use millrace_net::quic::producer::{Producer, ProducerConfig};
use millrace_net::quic::server::{QuicConfig, QuicServer};

/// A call's outcomes as one boxed future, so that `queue` and `queue_many` calls line up.
type Outcomes = Pin<Box<dyn Future<Output = Vec<Result<SequenceNumber, QuicError>>>>>;

trait BoxedOutcomes {
    fn boxed(self) -> Outcomes;
}

impl<F> BoxedOutcomes for F
where
    F: Future<Output = Vec<Result<SequenceNumber, QuicError>>> + 'static,
{
    fn boxed(self) -> Outcomes {
        Box::pin(self)
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    client: ClientConfig,
    _server: QuicServer,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quic");
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = EngineConfig::new(&dir);
        config.cores = 2;
        config.log = LogConfig { segment_bytes: 4 << 20, prealloc_bytes: 4 << 20 };
        let engine = Engine::start(config).expect("engine starts");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (cert_chain, key, _) = millrace_net::quic::identity(&dir).unwrap();
        let (token, _) = millrace_net::quic::token(&dir).unwrap();
        let server = {
            let _entered = runtime.enter();
            let config = QuicConfig { listen: "127.0.0.1:0".parse().unwrap(), cert_chain, key, token };
            QuicServer::start(engine.clone(), config).unwrap()
        };
        let client = ClientConfig::from_data_dir(server.local_addr().unwrap(), &dir).unwrap();
        Fixture { runtime, engine, client, _server: server }
    })
}

fn create(name: &str, shards: u32) -> StreamName {
    let fixture = fixture();
    let name: StreamName = name.parse().unwrap();
    fixture.runtime.block_on(fixture.engine.create_stream(&name, shards, StreamMode::Provisioned)).unwrap();
    name
}

/// Every record of every shard: shard → [(sequence, key, data)].
type Stored = BTreeMap<u32, Vec<(u128, String, Vec<u8>)>>;

/// Every record of every shard through READ requests.
async fn read_all(client: &QuicClient, stream: &str) -> Stored {
    let channel = client.channel().await.unwrap();
    let Message::Description { shards } =
        channel.request(&Message::Describe { stream: stream.into() }).await.unwrap()
    else {
        panic!("no description")
    };
    let mut all = BTreeMap::new();
    for shard in shards {
        let mut start = ReadStart::TrimHorizon;
        let mut records = Vec::new();
        loop {
            let request = Message::Read { stream: stream.into(), shard: shard.id, start, max_records: 500 };
            let Message::Records { next, ended, records: batch, .. } =
                channel.request(&request).await.unwrap()
            else {
                panic!("no records")
            };
            let empty = batch.is_empty();
            records
                .extend(batch.into_iter().map(|record| (record.sequence, record.partition_key, record.data)));
            start = ReadStart::At(next);
            if ended || empty {
                break;
            }
        }
        all.insert(shard.id, records);
    }
    all
}

/// Within each shard, the records of a key are stored in the order they were sent: the
/// send index that `index_of` reads from a record's data increases per key.
fn assert_per_key_order(stored: &Stored, index_of: impl Fn(&str) -> u32) {
    let mut last_per_key: BTreeMap<&str, u32> = BTreeMap::new();
    for records in stored.values() {
        for (_, key, data) in records {
            let index = index_of(&String::from_utf8_lossy(data));
            if let Some(last) = last_per_key.insert(key, index) {
                assert!(last < index, "key {key}: {index} stored after {last}");
            }
        }
    }
}

/// `queue_many` (the SDK's PutRecords) mixed with single `queue` calls: every record is
/// answered with the sequence number it is stored under, in the order given, per-key order
/// holds across both calls, a call larger than the whole buffer still goes through, and an
/// empty call answers at once.
#[test]
fn queue_many_answers_each_record_where_it_is_stored() {
    let fixture = fixture();
    create("many", 4);
    fixture.runtime.block_on(async {
        let client = QuicClient::connect(&fixture.client).await.unwrap();
        // A buffer smaller than one call: the call takes all of it and waits for nothing else.
        let config = ProducerConfig { buffer_bytes_max: 4096, ..ProducerConfig::default() };
        let producer = Producer::new(client.channel().await.unwrap(), config);
        assert!(producer.queue_many("many", Vec::new()).await.unwrap().await.is_empty());
        let mut calls = Vec::new();
        let mut index = 0u32;
        for call in 0..30 {
            let mut records = Vec::new();
            for _ in 0..50 {
                let key = format!("key-{}", index % 17);
                records.push((key.clone(), format!("{key}:{index}:{}", "x".repeat(60)).into_bytes()));
                index += 1;
            }
            let first = index - 50;
            calls.push((first, producer.queue_many("many", records).await.unwrap().boxed()));
            if call % 3 == 0 {
                let key = format!("key-{}", index % 17);
                let data = format!("{key}:{index}:").into_bytes();
                let single = producer.queue("many", &key, data).await.unwrap();
                calls.push((index, async move { vec![single.await] }.boxed()));
                index += 1;
            }
        }
        let mut acknowledged: BTreeMap<u32, u128> = BTreeMap::new();
        for (first, call) in calls {
            for (offset, outcome) in call.await.into_iter().enumerate() {
                acknowledged.insert(first + offset as u32, outcome.unwrap().as_u128());
            }
        }
        assert_eq!(acknowledged.len() as u32, index);
        let stored = read_all(&client, "many").await;
        let by_sequence: BTreeMap<u128, (String, Vec<u8>)> = stored
            .values()
            .flatten()
            .map(|(sequence, key, data)| (*sequence, (key.clone(), data.clone())))
            .collect();
        assert_eq!(by_sequence.len() as u32, index, "each record stored once");
        for (index, sequence) in &acknowledged {
            let (_, data) = &by_sequence[sequence];
            let stored_index: u32 = String::from_utf8_lossy(data).split(':').nth(1).unwrap().parse().unwrap();
            assert_eq!(
                stored_index, *index,
                "record {index} is answered with the sequence it is stored under"
            );
        }
        assert_per_key_order(&stored, |data| data.split(':').nth(1).unwrap().parse().unwrap());
    });
}

#[test]
fn producer_keeps_per_key_order_across_shards() {
    let fixture = fixture();
    create("ordered", 4);
    fixture.runtime.block_on(async {
        let client = QuicClient::connect(&fixture.client).await.unwrap();
        let producer = Producer::new(client.channel().await.unwrap(), ProducerConfig::default());
        let mut waits = Vec::new();
        for index in 0..2000u32 {
            let key = format!("key-{}", index % 23);
            let data = format!("{key}:{index}").into_bytes();
            // Queued in order; each completes whenever its batch is durable.
            waits.push(producer.queue("ordered", &key, data).await.unwrap());
        }
        let mut sequences = Vec::new();
        for wait in waits {
            sequences.push(wait.await.unwrap());
        }
        let stored = read_all(&client, "ordered").await;
        let total: usize = stored.values().map(Vec::len).sum();
        assert_eq!(total, 2000);
        assert_per_key_order(&stored, |data| data.rsplit(':').next().unwrap().parse().unwrap());
        // Each acknowledged sequence number is where the record is.
        let by_sequence: BTreeMap<u128, Vec<u8>> =
            stored.values().flatten().map(|(sequence, _, data)| (*sequence, data.clone())).collect();
        for (index, sequence) in sequences.iter().enumerate() {
            let data = &by_sequence[&sequence.as_u128()];
            assert!(String::from_utf8_lossy(data).ends_with(&format!(":{index}")));
        }
        // Routing: each record sits in the shard that owns MD5(key).
        let meta = fixture.engine.describe_stream(&"ordered".parse().unwrap()).unwrap();
        for (shard, records) in &stored {
            for (_, key, _) in records {
                let owner = meta
                    .open_shards()
                    .find(|s| s.range().contains(HashKey::from_partition_key(key)))
                    .unwrap();
                assert_eq!(owner.shard_id().get(), *shard);
            }
        }
    });
}

#[test]
fn producer_follows_a_split() {
    let fixture = fixture();
    let name = create("splitting", 1);
    fixture.runtime.block_on(async {
        let client = QuicClient::connect(&fixture.client).await.unwrap();
        let producer = Producer::new(client.channel().await.unwrap(), ProducerConfig::default());
        for index in 0..50 {
            producer.send("splitting", &format!("k{index}"), vec![1]).await.unwrap();
        }
        fixture
            .engine
            .split_shard(&ResourceKey::from(&name), ShardId::new(0), HashKey::new(1 << 127))
            .await
            .unwrap();
        // The producer's shard map is stale: the server routes by hash key all the same.
        for index in 0..50 {
            producer.send("splitting", &format!("k{index}"), vec![2]).await.unwrap();
        }
        let stored = read_all(&client, "splitting").await;
        assert_eq!(stored[&0].len(), 50);
        assert!(stored[&0].iter().all(|(_, _, data)| data == &[1]));
        assert_eq!(stored[&1].len() + stored[&2].len(), 50);
    });
}

#[test]
fn bad_frames_get_typed_errors_and_change_nothing() {
    let fixture = fixture();
    create("guarded", 2);
    fixture.runtime.block_on(async {
        let client = QuicClient::connect(&fixture.client).await.unwrap();
        let put = Message::Put {
            stream: "guarded".into(),
            records: vec![frame::PutRecord {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: b"ok".to_vec(),
            }],
        };
        client.channel().await.unwrap().request(&put).await.unwrap();
        let before = read_all(&client, "guarded").await;

        let good = put.to_frame(9).unwrap();
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        let mut wrong_version = good.clone();
        wrong_version[4] = 9;
        let mut oversize = good.clone();
        oversize[8..12].copy_from_slice(&(frame::PAYLOAD_BYTES_MAX + 1).to_le_bytes());
        let mut unknown_kind = Vec::new();
        frame::encode_frame(&mut unknown_kind, 77, 9, b"");
        let mut bad_payload = Vec::new();
        frame::encode_frame(&mut bad_payload, kind::PUT, 9, &[7, b'g']);
        let cases: [(&[u8], ErrorCode, u64); 5] = [
            (&bad_crc, ErrorCode::BadFrame, 0),
            (&wrong_version, ErrorCode::UnsupportedVersion, 0),
            (&oversize, ErrorCode::FrameTooLarge, 0),
            (&unknown_kind, ErrorCode::UnknownKind, 0),
            (&bad_payload, ErrorCode::BadFrame, 0),
        ];
        for (bytes, expected, id) in cases {
            // Each on a stream of its own: a bad frame ends its stream, not the connection.
            let channel = client.channel().await.unwrap();
            match channel.request_raw(id, bytes, false).await {
                Err(QuicError::Server { code, .. }) => assert_eq!(code, Some(expected)),
                other => panic!("expected {expected:?}, got {other:?}"),
            }
        }
        // A truncated frame: the stream ends inside it.
        let channel = client.channel().await.unwrap();
        match channel.request_raw(0, &good[..good.len() - 3], true).await {
            Err(QuicError::Server { code: Some(ErrorCode::BadFrame), .. }) | Err(QuicError::Lost { .. }) => {}
            other => panic!("truncated frame: {other:?}"),
        }
        // Semantic errors are typed too, and the stream stays usable.
        let channel = client.channel().await.unwrap();
        let record = frame::PutRecord { partition_key: "k".into(), explicit_hash_key: None, data: vec![] };
        let unknown = Message::Put { stream: "no-such-stream".into(), records: vec![record] };
        let error = channel.request(&unknown).await.unwrap_err();
        assert!(
            matches!(error, QuicError::Server { code: Some(ErrorCode::StreamNotFound), .. }),
            "{error:?}"
        );
        let long_key = Message::Put {
            stream: "guarded".into(),
            records: vec![frame::PutRecord {
                partition_key: "k".repeat(300),
                explicit_hash_key: None,
                data: vec![],
            }],
        };
        let error = channel.request(&long_key).await.unwrap_err();
        assert!(
            matches!(error, QuicError::Server { code: Some(ErrorCode::InvalidArgument), .. }),
            "{error:?}"
        );
        channel.request(&Message::Describe { stream: "guarded".into() }).await.unwrap();
        assert_eq!(read_all(&client, "guarded").await, before, "stored data changed");
    });
}

#[test]
fn a_wrong_token_or_version_is_refused() {
    let fixture = fixture();
    fixture.runtime.block_on(async {
        let mut wrong = fixture.client.clone();
        wrong.token = b"not the token".to_vec();
        match QuicClient::connect(&wrong).await {
            Err(QuicError::Refused { code, .. }) => assert_eq!(code, Some(ErrorCode::Unauthenticated)),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("a wrong token was accepted"),
        }
        let mut untrusted = fixture.client.clone();
        let other_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quic-other-cert");
        let _ = std::fs::remove_dir_all(&other_dir);
        std::fs::create_dir_all(&other_dir).unwrap();
        untrusted.trusted_cert = millrace_net::quic::identity(&other_dir).unwrap().0.remove(0);
        assert!(matches!(QuicClient::connect(&untrusted).await, Err(QuicError::Connect { .. })));
    });
}

#[test]
fn consumer_gets_pushed_records_in_order_and_follows_a_split() {
    use millrace_net::quic::consumer::{Consumer, ConsumerConfig};
    let fixture = fixture();
    let name = create("pushed", 1);
    fixture.runtime.block_on(async {
        let client = std::sync::Arc::new(QuicClient::connect(&fixture.client).await.unwrap());
        let producer = Producer::new(client.channel().await.unwrap(), ProducerConfig::default());
        for index in 0..100u32 {
            producer.send("pushed", &format!("k{}", index % 7), index.to_le_bytes().to_vec()).await.unwrap();
        }
        // A small window, so that flow control has to top it up many times.
        let config = ConsumerConfig { credits_per_shard: 16 };
        let mut consumer =
            Consumer::subscribe(client.clone(), "pushed", ReadStart::TrimHorizon, config).await.unwrap();
        let mut seen: Vec<(u32, u128, u32)> = Vec::new();
        while seen.len() < 100 {
            for record in consumer.next().await.unwrap().unwrap() {
                seen.push((
                    record.shard,
                    record.sequence,
                    u32::from_le_bytes(record.data[..4].try_into().unwrap()),
                ));
            }
        }
        assert_eq!(seen.iter().map(|(_, _, index)| *index).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
        // Records stored while subscribed are pushed; after a split the children follow.
        fixture
            .engine
            .split_shard(&ResourceKey::from(&name), ShardId::new(0), HashKey::new(1 << 127))
            .await
            .unwrap();
        for index in 100..300u32 {
            producer.send("pushed", &format!("k{}", index % 7), index.to_le_bytes().to_vec()).await.unwrap();
        }
        while seen.len() < 300 {
            for record in consumer.next().await.unwrap().unwrap() {
                seen.push((
                    record.shard,
                    record.sequence,
                    u32::from_le_bytes(record.data[..4].try_into().unwrap()),
                ));
            }
        }
        let mut indices: Vec<u32> = seen.iter().map(|(_, _, index)| *index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..300).collect::<Vec<_>>(), "every record once");
        for shard in [1, 2] {
            let sequences: Vec<u128> =
                seen.iter().filter(|(s, _, _)| *s == shard).map(|(_, sequence, _)| *sequence).collect();
            assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]), "shard {shard} in order");
            assert!(!sequences.is_empty());
        }
        // Checkpoints are stored on the server.
        let last = seen.iter().filter(|(s, _, _)| *s == 1).map(|(_, sequence, _)| *sequence).max().unwrap();
        consumer.checkpoint("worker-a", 1, last).await.unwrap();
        let stored = fixture
            .engine
            .get_checkpoint(&ResourceKey::from(&name), "worker-a", ShardId::new(1))
            .await
            .unwrap();
        assert_eq!(stored.map(|sequence| sequence.as_u128()), Some(last));
    });
}

#[test]
fn an_idempotent_producer_survives_a_server_restart_without_loss_or_duplicates() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quic-restart");
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let start = |dir: &std::path::Path, listen: std::net::SocketAddr| {
        let mut config = EngineConfig::new(dir);
        config.cores = 2;
        config.log = LogConfig { segment_bytes: 4 << 20, prealloc_bytes: 4 << 20 };
        let engine = Engine::start(config).unwrap();
        let (cert_chain, key, _) = millrace_net::quic::identity(dir).unwrap();
        let (token, _) = millrace_net::quic::token(dir).unwrap();
        let _entered = runtime.enter();
        // The old endpoint may hold the port for a moment after it closed.
        for _ in 0..50 {
            let config = QuicConfig {
                listen,
                cert_chain: cert_chain.clone(),
                key: key.clone_key(),
                token: token.clone(),
            };
            if let Ok(server) = QuicServer::start(engine.clone(), config) {
                return (engine, server);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("cannot listen on {listen} again");
    };
    let (engine, server) = start(&dir, "127.0.0.1:0".parse().unwrap());
    let address = server.local_addr().unwrap();
    let name: StreamName = "restarted".parse().unwrap();
    runtime.block_on(engine.create_stream(&name, 2, StreamMode::Provisioned)).unwrap();
    let client = ClientConfig::from_data_dir(address, &dir).unwrap();
    let config = ProducerConfig { idempotent: true, ..ProducerConfig::default() };
    let producer = runtime.block_on(Producer::connect(client.clone(), config)).unwrap();
    let sending = runtime.spawn(async move {
        let mut acks = Vec::new();
        for index in 0..3000u32 {
            acks.push(
                producer
                    .queue("restarted", &format!("k{}", index % 10), index.to_le_bytes().to_vec())
                    .await
                    .unwrap(),
            );
            if index % 100 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        let mut sequences = Vec::new();
        for ack in acks {
            sequences.push(ack.await);
        }
        sequences
    });
    // Restart the server in the middle of the stream of records.
    std::thread::sleep(std::time::Duration::from_millis(60));
    server.shutdown();
    drop(server);
    engine.shutdown();
    let (engine, _server) = start(&dir, address);
    let sequences: Vec<u128> = runtime
        .block_on(sending)
        .unwrap()
        .into_iter()
        .map(|ack| ack.expect("every record is acknowledged in the end").as_u128())
        .collect();
    // Every acknowledged record is stored once, under its acknowledged sequence number.
    let stored = runtime.block_on(async {
        let client = QuicClient::connect(&client).await.unwrap();
        read_all(&client, "restarted").await
    });
    let by_sequence: BTreeMap<u128, u32> = stored
        .values()
        .flatten()
        .map(|(sequence, _, data)| (*sequence, u32::from_le_bytes(data[..4].try_into().unwrap())))
        .collect();
    assert_eq!(by_sequence.len(), 3000, "no duplicates, no losses");
    for (index, sequence) in sequences.iter().enumerate() {
        assert_eq!(by_sequence.get(sequence), Some(&(index as u32)), "record {index}");
    }
    engine.shutdown();
}

/// Before HELLO a frame may be no larger than a HELLO can be: a first frame that claims a
/// megabyte is refused from its header, before the server reads or allocates its payload.
#[test]
fn before_hello_a_frame_may_not_claim_much() {
    let fixture = fixture();
    fixture.runtime.block_on(async {
        let mut claim = Vec::new();
        frame::encode_frame(&mut claim, kind::HELLO, 0, &[]);
        claim[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
        let started = std::time::Instant::now();
        match QuicClient::connect_opening_with(&fixture.client, &claim).await {
            Err(QuicError::Refused { code, message }) => {
                assert_eq!(code, Some(ErrorCode::FrameTooLarge), "{message}");
                assert!(message.contains("before HELLO"), "{message}");
            }
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => panic!("a huge first frame was taken"),
        }
        // Answered at once: the server did not wait for a megabyte that never comes.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    });
}

/// A connection holds a bounded number of subscriptions; credits, however many CREDIT
/// frames bring them, add up in a counter.
#[test]
fn subscriptions_per_connection_are_bounded() {
    let fixture = fixture();
    let _ = create("bounded-subs", 1);
    fixture.runtime.block_on(async {
        let client = QuicClient::connect(&fixture.client).await.unwrap();
        let channel = client.channel().await.unwrap();
        let limit = millrace_net::quic::server::SUBSCRIPTIONS_PER_CONNECTION;
        let subscribe = Message::Subscribe {
            stream: "bounded-subs".into(),
            shard: 0,
            start: ReadStart::Latest,
            credits: 0,
        };
        let mut subscriptions = Vec::new();
        for _ in 0..limit {
            subscriptions.push(channel.request_stream(&subscribe).await.unwrap());
        }
        let (_, mut refused) = channel.request_stream(&subscribe).await.unwrap();
        match refused.recv().await {
            Some(Err(QuicError::Server { code, .. })) => assert_eq!(code, Some(ErrorCode::LimitExceeded)),
            other => panic!("the subscription past the bound got {other:?}"),
        }
        // Thousands of CREDIT frames for one subscription: one counter, and the records come.
        let (id, mut records) = subscriptions.pop().unwrap();
        for _ in 0..5_000 {
            let credit = Message::Credit { credits: 1 }.to_frame(id).unwrap();
            channel.send_frame(&credit).await.unwrap();
        }
        let producer = Producer::new(client.channel().await.unwrap(), ProducerConfig::default());
        producer.send("bounded-subs", "k", b"pushed".to_vec()).await.unwrap();
        match tokio::time::timeout(std::time::Duration::from_secs(10), records.recv()).await {
            Ok(Some(Ok(Message::Records { records, .. }))) => assert_eq!(records[0].data, b"pushed"),
            other => panic!("no records: {other:?}"),
        }
    });
}

/// A field longer than the protocol's length prefix is an error to the sender, never a
/// string cut short.
#[test]
fn an_overlong_field_is_an_error_not_a_cut() {
    let fixture = fixture();
    let _ = create("overlong", 1);
    fixture.runtime.block_on(async {
        let client = QuicClient::connect(&fixture.client).await.unwrap();
        let channel = client.channel().await.unwrap();
        let describe = Message::Describe { stream: "ß".repeat(200) };
        match channel.request(&describe).await {
            Err(QuicError::Encode(error)) => assert_eq!((error.len, error.max), (400, 255)),
            other => panic!("expected an encoding error, got {other:?}"),
        }
        // The channel is unharmed.
        assert!(channel.request(&Message::Describe { stream: "overlong".into() }).await.is_ok());
    });
}

/// The reshard hole over the wire: a stamped batch stored in a parent, its acknowledgement
/// lost; after a split the resend (flagged RESENT) is answered with the parent's numbers.
#[test]
fn a_resent_stamped_put_after_a_split_is_answered_from_the_parent() {
    let fixture = fixture();
    let name = create("resent-split", 1);
    fixture.runtime.block_on(async {
        let client = QuicClient::connect(&fixture.client).await.unwrap();
        let channel = client.channel().await.unwrap();
        let records: Vec<frame::PutRecord> = (0..30)
            .map(|index| frame::PutRecord {
                partition_key: format!("key-{index}"),
                explicit_hash_key: None,
                data: vec![index],
            })
            .collect();
        let put = Message::PutStamped {
            producer_id: 77,
            batch: 1,
            resent: false,
            stream: "resent-split".into(),
            records,
        };
        let Message::PutAck { acks: first } = channel.request(&put).await.unwrap() else { panic!() };
        fixture
            .engine
            .split_shard(&ResourceKey::from(&name), ShardId::new(0), HashKey::new(1 << 127))
            .await
            .unwrap();
        let Message::PutAck { acks: again } = channel.request(&put.as_resent()).await.unwrap() else {
            panic!()
        };
        assert_eq!(again, first, "answered from the parent, not stored again");
        assert_eq!(read_all(&client, "resent-split").await.values().map(Vec::len).sum::<usize>(), 30);
    });
}
