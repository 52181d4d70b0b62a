//! The front end in-process over a real engine on a real disk: HTTP/2 event streams, a
//! property test that every rejected request leaves the stored data as it was, streamed
//! request bodies answered while they upload, aws-chunked payloads, signing names, and time
//! that a test moves instead of sleeping.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use millrace_core::{Engine, EngineConfig, LogConfig, ManualClock};
use millrace_net::aws::{Protocol, Request, Router, Value};
use millrace_net::client::{ClientError, Credentials, HttpVersion, KinesisClient};
use millrace_net::front::{Auth, FrontEnd, HttpConfig};
use millrace_net::kinesis::{ApiConfig, KinesisApi};
use proptest::prelude::*;

const ACCESS_KEY: &str = "MRTESTKEY";
const SECRET: &str = "test-secret";

struct Fixture {
    endpoint: String,
    runtime: tokio::runtime::Runtime,
    _front: FrontEnd,
    _engine: Engine,
}

fn secrets() -> HashMap<String, String> {
    HashMap::from([(ACCESS_KEY.to_owned(), SECRET.to_owned())])
}

/// An engine and a front end serving Kinesis (and whatever else `router` adds) on a port.
fn start(test: &str, clock: Option<Arc<ManualClock>>, extra: impl FnOnce(Router) -> Router) -> Fixture {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = EngineConfig::new(&dir);
    config.cores = 2;
    config.log = LogConfig { segment_bytes: 4 << 20, prealloc_bytes: 4 << 20 };
    if let Some(clock) = clock {
        config.clock = clock;
    }
    let engine = Engine::start(config).expect("engine starts");
    let kinesis = KinesisApi::new(engine.clone(), ApiConfig::default(), [9; 32]);
    let mut front = FrontEnd::start(2).unwrap();
    let mut http = HttpConfig::new("127.0.0.1:0".parse().unwrap(), Auth::SigV4(secrets()));
    http.clock = engine.clock();
    let address = front.serve_http(extra(Router::new().with(kinesis)), http).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    Fixture { endpoint: format!("http://{address}"), runtime, _front: front, _engine: engine }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| start("http_api", None, |router| router))
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
            Some(&millrace_net::aws::eventstream::HeaderValue::String("initial-response".into()))
        );
        let event = events.next().await.unwrap().unwrap();
        let body = millrace_net::aws::document::decode(Protocol::Json, &event.payload).unwrap();
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

// ---------------------------------------------------------------------------------------
// Streamed request bodies, aws-chunked payloads, signing names, the clock.

use bytes::Bytes;
use millrace_net::aws::chunked::chunk_signature;
use millrace_net::aws::service::{Call, Reply, ReplyBody, ReplyFuture, RequestBody, Routing, Service};
use millrace_net::aws::sigv4::{self, Payload, SignedRequest};

/// A service that streams: for every piece of its upload it answers a line at once, while
/// the upload goes on (as PutMedia acknowledges each fragment).
struct Echo;

impl Service for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn signing_name(&self) -> &'static str {
        "echo"
    }
    fn routing(&self) -> Routing {
        Routing::Paths { prefixes: &["/test/echo"] }
    }
    fn streams_body(&self, _head: &millrace_net::aws::Head) -> bool {
        true
    }
    fn call(self: Arc<Self>, call: Call) -> ReplyFuture {
        Box::pin(async move {
            let RequestBody::Stream(mut upload) = call.body else { panic!("a streamed body") };
            let (answers, body) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                while let Some(piece) = upload.next().await {
                    let line = match piece {
                        Ok(bytes) => format!("ack {}\n", String::from_utf8_lossy(&bytes)),
                        Err(error) => {
                            let _ = answers.send(Bytes::from(format!("error {error}\n"))).await;
                            return;
                        }
                    };
                    if answers.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
                let _ = answers.send(Bytes::from_static(b"end\n")).await;
            });
            Reply {
                status: 200,
                headers: vec![("content-type", "text/plain".into())],
                body: ReplyBody::Stream(body),
            }
        })
    }
}

fn echo_fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| start("http_api_echo", None, |router| router.with(Arc::new(Echo))))
}

/// Signed headers for a request to `path`, with `claim` as `x-amz-content-sha256`.
fn signed_headers(
    host: &str,
    path: &str,
    service: &str,
    claim: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let amz_date = sigv4::format_amz_date(millrace_core::Clock::now_ms(&millrace_core::SystemClock));
    let mut headers = vec![
        ("host".to_owned(), host.to_owned()),
        ("x-amz-content-sha256".to_owned(), claim.to_owned()),
        ("x-amz-date".to_owned(), amz_date.clone()),
    ];
    headers.extend(extra.iter().map(|(name, value)| (name.to_string(), value.to_string())));
    let request =
        SignedRequest { method: "POST", path, query: "", headers: &headers, payload: Payload::Unread };
    let authorization = sigv4::sign(&request, ACCESS_KEY, SECRET, "us-east-1", service, &amz_date);
    headers.push(("authorization".to_owned(), authorization));
    headers
}

/// Opens an HTTP/1.1 request with a body fed piece by piece; returns the body's sender and
/// the response, once it comes.
async fn open_upload(
    endpoint: &str,
    path: &str,
    headers: Vec<(String, String)>,
) -> (tokio::sync::mpsc::Sender<Bytes>, tokio::task::JoinHandle<hyper::Response<hyper::body::Incoming>>) {
    let authority = endpoint.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let (pieces, body) = tokio::sync::mpsc::channel(4);
    let mut builder = hyper::Request::builder().method("POST").uri(path);
    for (name, value) in &headers {
        builder = builder.header(name, value);
    }
    let request = builder.body(millrace_net::front::http::Body::Stream(body)).unwrap();
    let response = tokio::spawn(async move { sender.send_request(request).await.unwrap() });
    (pieces, response)
}

/// The next line of a streamed answer.
async fn next_line(body: &mut hyper::body::Incoming, buffered: &mut Vec<u8>) -> String {
    use http_body_util::BodyExt;
    loop {
        if let Some(end) = buffered.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = buffered.drain(..=end).collect();
            return String::from_utf8(line[..line.len() - 1].to_vec()).unwrap();
        }
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("an answer within 10 s")
            .expect("the answer goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffered.extend_from_slice(&data);
        }
    }
}

/// The front end hands a long upload to its service as it arrives, and the service's
/// answer streams back while the upload continues: each piece is acknowledged before the
/// next is sent.
#[test]
fn a_streamed_upload_is_answered_while_it_continues() {
    let fixture = echo_fixture();
    fixture.runtime.block_on(async {
        let host = fixture.endpoint.trim_start_matches("http://").to_owned();
        let headers = signed_headers(&host, "/test/echo", "echo", sigv4::UNSIGNED_PAYLOAD, &[]);
        let (pieces, response) = open_upload(&fixture.endpoint, "/test/echo", headers).await;
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut buffered = Vec::new();
        for piece in ["one", "two", "three"] {
            pieces.send(Bytes::from(piece)).await.unwrap();
            assert_eq!(next_line(&mut body, &mut buffered).await, format!("ack {piece}"));
        }
        drop(pieces);
        assert_eq!(next_line(&mut body, &mut buffered).await, "end");
    });
}

/// An aws-chunked upload (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`): each chunk is handed on
/// once its signature checks, and a forged chunk ends the upload with an error.
#[test]
fn signed_chunks_are_verified_as_they_stream() {
    let fixture = echo_fixture();
    fixture.runtime.block_on(async {
        let host = fixture.endpoint.trim_start_matches("http://").to_owned();
        let headers = signed_headers(
            &host,
            "/test/echo",
            "echo",
            sigv4::STREAMING_SIGNED,
            &[("content-encoding", "aws-chunked")],
        );
        let authorization = headers.last().unwrap().1.clone();
        let amz_date = headers[2].1.clone();
        let seed = authorization.rsplit("Signature=").next().unwrap().to_owned();
        let scope = format!("{}/us-east-1/echo/aws4_request", &amz_date[..8]);
        let key = sigv4::signing_key(SECRET, &amz_date[..8], "us-east-1", "echo");
        let (pieces, response) = open_upload(&fixture.endpoint, "/test/echo", headers).await;
        let mut body = response.await.unwrap().into_body();
        let mut buffered = Vec::new();
        let mut previous = seed;
        for piece in ["alpha", "beta"] {
            let signature = chunk_signature(&key, &amz_date, &scope, &previous, piece.as_bytes());
            let chunk = format!("{:x};chunk-signature={signature}\r\n{piece}\r\n", piece.len());
            pieces.send(Bytes::from(chunk)).await.unwrap();
            assert_eq!(next_line(&mut body, &mut buffered).await, format!("ack {piece}"));
            previous = signature;
        }
        // Signed with another chain: refused, and the upload ends.
        let forged = chunk_signature(&key, &amz_date, &scope, "0".repeat(64).as_str(), b"gamma");
        pieces.send(Bytes::from(format!("5;chunk-signature={forged}\r\ngamma\r\n"))).await.unwrap();
        let line = next_line(&mut body, &mut buffered).await;
        assert!(line.starts_with("error") && line.contains("signature"), "{line}");
    });
}

/// A JSON request sent aws-chunked, as some SDKs send bodies, reaches Kinesis decoded; a
/// request signed for another service is refused as AWS refuses it.
#[test]
fn aws_chunked_bodies_and_signing_names() {
    let fixture = fixture();
    fixture.runtime.block_on(async {
        let mut client = new_client(SECRET);
        client.call("CreateStream", &stream_request("chunked").with("ShardCount", 1u32)).await.unwrap();
        let host = fixture.endpoint.trim_start_matches("http://").to_owned();
        let target = [
            ("content-type", "application/x-amz-json-1.1"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-target", "Kinesis_20131202.PutRecord"),
        ];
        let headers = signed_headers(&host, "/", "kinesis", sigv4::STREAMING_SIGNED, &target);
        let amz_date = headers[2].1.clone();
        let seed = headers.last().unwrap().1.rsplit("Signature=").next().unwrap().to_owned();
        let scope = format!("{}/us-east-1/kinesis/aws4_request", &amz_date[..8]);
        let key = sigv4::signing_key(SECRET, &amz_date[..8], "us-east-1", "kinesis");
        let json = br#"{"StreamName":"chunked","PartitionKey":"k","Data":"Y2h1bmtlZA=="}"#;
        let body = millrace_net::aws::chunked::encode_signed(
            &key,
            &amz_date,
            &scope,
            &seed,
            &[&json[..20], &json[20..]],
        );
        let (pieces, response) = open_upload(&fixture.endpoint, "/", headers).await;
        pieces.send(Bytes::from(body)).await.unwrap();
        drop(pieces);
        assert_eq!(response.await.unwrap().status(), 200, "a chunked PutRecord is taken");
        let stored = read_everything(&mut client, "chunked").await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].3, b"chunked");

        // Signed for Firehose, sent to Kinesis.
        let headers = signed_headers(&host, "/", "firehose", sigv4::UNSIGNED_PAYLOAD, &target[..1]);
        let mut headers = headers;
        headers.push(("x-amz-target".into(), "Kinesis_20131202.ListStreams".into()));
        let (pieces, response) = open_upload(&fixture.endpoint, "/", headers).await;
        drop(pieces);
        let response = response.await.unwrap();
        assert_eq!(response.status(), 400);
        let error_type = response.headers().get("x-amzn-errortype").unwrap().to_str().unwrap().to_owned();
        assert_eq!(error_type, "InvalidSignatureException");
    });
}

/// Iterators expire after five minutes of the engine's clock: the test moves the clock.
#[test]
fn iterators_expire_when_the_clock_says_so() {
    let clock = Arc::new(ManualClock::starting_now());
    let fixture = start("http_api_clock", Some(clock.clone()), |router| router);
    fixture.runtime.block_on(async {
        let credentials = Credentials { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET.into() };
        let mut client = KinesisClient::new(&fixture.endpoint, Some(credentials), "us-east-1").unwrap();
        client.call("CreateStream", &stream_request("aging").with("ShardCount", 1u32)).await.unwrap();
        client.call("PutRecord", &put("aging", "k", b"x")).await.unwrap();
        let request = stream_request("aging")
            .with("ShardId", "shardId-000000000000")
            .with("ShardIteratorType", "TRIM_HORIZON");
        let iterator = text(&client.call("GetShardIterator", &request).await.unwrap(), "ShardIterator");
        let get = Value::map().with("ShardIterator", iterator.as_str());
        clock.advance_ms(299_000);
        assert!(client.call("GetRecords", &get).await.is_ok(), "fresh at 4 min 59 s");
        clock.advance_ms(2_000);
        let error = client.call("GetRecords", &get).await.unwrap_err();
        assert_eq!(error.code(), Some("ExpiredIteratorException"), "{error:?}");
    });
}

/// A path-routed (rest-json) service's errors: the name in `x-amzn-ErrorType`, the message
/// in a JSON body, the status its own; and a path no service serves is a 404.
#[test]
fn rest_json_errors_have_their_own_shape() {
    let fixture = echo_fixture();
    fixture.runtime.block_on(async {
        let host = fixture.endpoint.trim_start_matches("http://").to_owned();
        let (pieces, response) =
            open_upload(&fixture.endpoint, "/test/echo", vec![("host".into(), host.clone())]).await;
        drop(pieces);
        let response = response.await.unwrap();
        assert_eq!(response.status(), 403);
        let error_type = response.headers().get("x-amzn-errortype").unwrap().to_str().unwrap().to_owned();
        assert_eq!(error_type, "MissingAuthenticationTokenException");
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value = millrace_net::aws::document::decode(Protocol::Json, &body).unwrap();
        assert!(value.get("message").is_some() && value.get("__type").is_none(), "{value:?}");
        let (pieces, response) =
            open_upload(&fixture.endpoint, "/nowhere", vec![("host".into(), host)]).await;
        drop(pieces);
        assert_eq!(response.await.unwrap().status(), 404);
    });
}
