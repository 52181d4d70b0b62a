//! The HTTP front end in-process over a real engine on a real disk: HTTP/2 event streams,
//! and a property test that every rejected request leaves the stored data as it was.

use std::collections::HashMap;
use std::sync::OnceLock;

use millrace_core::runtime::{Engine, EngineConfig};
use millrace_core::shard_log::LogConfig;
use millrace_net::client::{ClientError, Credentials, HttpVersion, KinesisClient};
use millrace_net::http::{Auth, HttpConfig, HttpServer};
use millrace_net::kinesis::value::{Protocol, Request, Value};
use millrace_net::kinesis::{ApiConfig, KinesisApi};
use proptest::prelude::*;

const ACCESS_KEY: &str = "MRTESTKEY";
const SECRET: &str = "test-secret";

struct Fixture {
    endpoint: String,
    runtime: tokio::runtime::Runtime,
    _server: HttpServer,
    _engine: Engine,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("http_api");
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = EngineConfig::new(&dir);
        config.cores = 2;
        config.log = LogConfig { segment_bytes: 4 << 20, prealloc_bytes: 4 << 20 };
        let engine = Engine::start(config).expect("engine starts");
        let kinesis = KinesisApi::new(engine.clone(), ApiConfig::default(), [9; 32]);
        let auth = Auth::SigV4(HashMap::from([(ACCESS_KEY.to_owned(), SECRET.to_owned())]));
        let server =
            HttpServer::start(kinesis, HttpConfig::new("127.0.0.1:0".parse().unwrap(), auth)).unwrap();
        let endpoint = format!("http://{}", server.local_addr());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Fixture { endpoint, runtime, _server: server, _engine: engine }
    })
}

fn new_client(secret: &str) -> KinesisClient {
    let credentials = Credentials { access_key_id: ACCESS_KEY.into(), secret_access_key: secret.into() };
    KinesisClient::new(&fixture().endpoint, Some(credentials), "us-east-1").unwrap()
}

fn text(value: &Value, name: &str) -> String {
    match value.get(name) {
        Some(Value::Str(text)) => text.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

fn stream_request(name: &str) -> Value {
    Value::map().with("StreamName", name)
}

/// Every record of every shard: (shard, sequence, partition key, data).
async fn read_everything(client: &mut KinesisClient, name: &str) -> Vec<(String, String, String, Vec<u8>)> {
    let shards = client.call("ListShards", &stream_request(name)).await.unwrap();
    let Some(Value::List(shards)) = shards.get("Shards") else { panic!("no shards") };
    let mut all = Vec::new();
    for shard in shards {
        let shard_id = text(shard, "ShardId");
        let request =
            stream_request(name).with("ShardId", shard_id.as_str()).with("ShardIteratorType", "TRIM_HORIZON");
        let mut iterator =
            Some(text(&client.call("GetShardIterator", &request).await.unwrap(), "ShardIterator"));
        while let Some(current) = iterator.take() {
            let answer =
                client.call("GetRecords", &Value::map().with("ShardIterator", current)).await.unwrap();
            let Some(Value::List(records)) = answer.get("Records") else { panic!("no records") };
            for record in records {
                let data = Request::new(Protocol::Json, record).blob_req("Data").unwrap();
                all.push((
                    shard_id.clone(),
                    text(record, "SequenceNumber"),
                    text(record, "PartitionKey"),
                    data,
                ));
            }
            let caught_up = records.is_empty();
            if !caught_up {
                if let Some(Value::Str(next)) = answer.get("NextShardIterator") {
                    iterator = Some(next.clone());
                }
            }
        }
    }
    all.sort();
    all
}

#[test]
fn subscribe_to_shard_over_http2() {
    let fixture = fixture();
    fixture.runtime.block_on(async {
        let mut client = new_client(SECRET);
        client.call("CreateStream", &stream_request("h2").with("ShardCount", 1u32)).await.unwrap();
        let summary = client.call("DescribeStreamSummary", &stream_request("h2")).await.unwrap();
        let arn = text(summary.get("StreamDescriptionSummary").unwrap(), "StreamARN");
        let consumer = client
            .call(
                "RegisterStreamConsumer",
                &Value::map().with("StreamARN", arn.as_str()).with("ConsumerName", "h2c"),
            )
            .await
            .unwrap();
        let consumer_arn = text(consumer.get("Consumer").unwrap(), "ConsumerARN");
        let put = Value::map()
            .with("StreamName", "h2")
            .with("PartitionKey", "k")
            .with("Data", Value::Bytes(b"over h2".to_vec()));
        let sequence = text(&client.call("PutRecord", &put).await.unwrap(), "SequenceNumber");

        let mut h2 = new_client(SECRET).with_version(HttpVersion::Http2);
        let request = Value::map()
            .with("ConsumerARN", consumer_arn.as_str())
            .with("ShardId", "shardId-000000000000")
            .with("StartingPosition", Value::map().with("Type", "TRIM_HORIZON"));
        let mut events = h2.subscribe(&request).await.unwrap();
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(
            first.header(":event-type"),
            Some(&millrace_net::eventstream::HeaderValue::String("initial-response".into()))
        );
        let event = events.next().await.unwrap().unwrap();
        let body = millrace_net::kinesis::value::decode(Protocol::Json, &event.payload).unwrap();
        let Some(Value::List(records)) = body.get("Records") else { panic!("no records in {body:?}") };
        assert_eq!(records.len(), 1);
        assert_eq!(Request::new(Protocol::Json, &records[0]).blob_req("Data").unwrap(), b"over h2");
        assert_eq!(text(&body, "ContinuationSequenceNumber"), sequence);
    });
}

/// A request that should be stored, or one of the ways a request goes wrong.
#[derive(Debug, Clone)]
enum Op {
    Put { key: String, data: Vec<u8> },
    PutMany { keys: Vec<String> },
    BadSignature { key: String },
    WrongType,
    Oversize,
    UnknownStream,
    BadHashKey,
    OneBadEntry { keys: Vec<String> },
    TooMany,
    BadSplitKey,
    ForgedIterator,
    BadJson,
}

fn op() -> impl Strategy<Value = Op> {
    let key = "[a-z]{1,8}";
    prop_oneof![
        4 => (key, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(key, data)| Op::Put { key, data }),
        2 => proptest::collection::vec(key, 1..20).prop_map(|keys| Op::PutMany { keys }),
        1 => key.prop_map(|key| Op::BadSignature { key }),
        1 => Just(Op::WrongType),
        1 => Just(Op::Oversize),
        1 => Just(Op::UnknownStream),
        1 => Just(Op::BadHashKey),
        1 => proptest::collection::vec(key, 1..10).prop_map(|keys| Op::OneBadEntry { keys }),
        1 => Just(Op::TooMany),
        1 => Just(Op::BadSplitKey),
        1 => Just(Op::ForgedIterator),
        1 => Just(Op::BadJson),
    ]
}

fn put(stream: &str, key: &str, data: &[u8]) -> Value {
    Value::map()
        .with("StreamName", stream)
        .with("PartitionKey", key)
        .with("Data", Value::Bytes(data.to_vec()))
}

fn entry(key: &str, data: Value) -> Value {
    Value::map().with("PartitionKey", key).with("Data", data)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_rejected_request_leaves_stored_data_unchanged(ops in proptest::collection::vec(op(), 1..24)) {
        static STREAMS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!("prop-{}", STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let fixture = fixture();
        fixture.runtime.block_on(async {
            let mut good = new_client(SECRET);
            let mut forged = new_client("wrong-secret");
            good.call("CreateStream", &stream_request(&name).with("ShardCount", 3u32)).await.unwrap();
            let mut expected = Vec::new();
            for op in ops {
                let rejected: Result<Value, ClientError> = match op {
                    Op::Put { key, data } => {
                        let answer = good.call("PutRecord", &put(&name, &key, &data)).await.unwrap();
                        expected.push((text(&answer, "ShardId"), text(&answer, "SequenceNumber"), key, data));
                        continue;
                    }
                    Op::PutMany { keys } => {
                        let records: Vec<Value> =
                            keys.iter().map(|key| entry(key, Value::Bytes(key.as_bytes().to_vec()))).collect();
                        let answer = good
                            .call("PutRecords", &stream_request(&name).with("Records", Value::List(records)))
                            .await
                            .unwrap();
                        let Some(Value::List(results)) = answer.get("Records") else { panic!() };
                        for (key, result) in keys.into_iter().zip(results) {
                            let data = key.as_bytes().to_vec();
                            expected.push((text(result, "ShardId"), text(result, "SequenceNumber"), key, data));
                        }
                        continue;
                    }
                    Op::BadSignature { key } => forged.call("PutRecord", &put(&name, &key, b"forged")).await,
                    Op::WrongType => {
                        good.call("PutRecord", &stream_request(&name).with("PartitionKey", "k").with("Data", 5i64)).await
                    }
                    Op::Oversize => good.call("PutRecord", &put(&name, "k", &vec![0; (1 << 20) + 1])).await,
                    Op::UnknownStream => good.call("PutRecord", &put("no-such-stream", "k", b"x")).await,
                    Op::BadHashKey => {
                        good.call("PutRecord", &put(&name, "k", b"x").with("ExplicitHashKey", "2".repeat(40))).await
                    }
                    Op::OneBadEntry { keys } => {
                        let mut records: Vec<Value> =
                            keys.iter().map(|key| entry(key, Value::Bytes(b"x".to_vec()))).collect();
                        records.push(entry("", Value::Bytes(b"x".to_vec())));
                        good.call("PutRecords", &stream_request(&name).with("Records", Value::List(records))).await
                    }
                    Op::TooMany => {
                        let records = vec![entry("k", Value::Bytes(b"x".to_vec())); 501];
                        good.call("PutRecords", &stream_request(&name).with("Records", Value::List(records))).await
                    }
                    Op::BadSplitKey => {
                        let request = stream_request(&name)
                            .with("ShardToSplit", "shardId-000000000000")
                            .with("NewStartingHashKey", "-1");
                        good.call("SplitShard", &request).await
                    }
                    Op::ForgedIterator => {
                        good.call("GetRecords", &Value::map().with("ShardIterator", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await
                    }
                    Op::BadJson => good.call("PutRecord", &Value::Str("not a structure".into())).await,
                };
                let error = rejected.expect_err("a bad request is refused");
                assert!(matches!(error, ClientError::Api { status: 400 | 403 | 413, .. }), "{error:?}");
            }
            expected.sort();
            assert_eq!(read_everything(&mut good, &name).await, expected);
        });
    }
}
