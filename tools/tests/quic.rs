//! The native QUIC path against the real `millrace serve` binary: an idempotent producer
//! keeps producing through a server restart (SIGTERM, start again on the same ports), then a
//! consumer reads everything from the start across a split; every acknowledged record is
//! there exactly once, in order per partition key.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use millrace_net::aws::Value;
use millrace_net::client::{Credentials, KinesisClient};
use millrace_net::quic::client::{ClientConfig, QuicClient};
use millrace_net::quic::consumer::{Consumer, ConsumerConfig};
use millrace_net::quic::frame::ReadStart;
use millrace_net::quic::producer::{Producer, ProducerConfig};

/// Starts the server; returns it with its QUIC and HTTP addresses once it is ready.
fn serve(dir: &Path, quic: &str, http: &str) -> (Child, SocketAddr, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["serve", "--cores", "2", "--segment-mib", "8", "--quic-listen", quic, "--http-listen", http])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MILLRACE_ACCESS_KEY_ID")
        .env_remove("MILLRACE_SECRET_ACCESS_KEY")
        .stderr(Stdio::piped())
        .spawn()
        .expect("millrace starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut quic_address, mut http_address) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("QUIC listening on ").nth(1) {
            quic_address = rest.split(';').next().map(|address| address.parse::<SocketAddr>().unwrap());
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            http_address = rest.split(' ').next().map(str::to_owned);
        }
        if line.contains("stop with Ctrl-C") {
            break;
        }
    }
    // Keep draining the log so that the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (child, quic_address.expect("QUIC address in the log"), http_address.expect("HTTP address in the log"))
}

fn stop(mut child: Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "clean exit after SIGTERM");
}

async fn http(dir: &Path, endpoint: &str, operation: &str, body: Value) -> Value {
    let (keys, _) = millrace_net::secrets::credentials(dir).unwrap();
    let credentials =
        Credentials { access_key_id: keys.access_key_id, secret_access_key: keys.secret_access_key };
    let mut client =
        KinesisClient::new(&format!("http://{endpoint}"), Some(credentials), "us-east-1").unwrap();
    client.call(operation, &body).await.unwrap()
}

#[test]
fn idempotent_producer_through_a_restart_then_a_consumer_across_a_split() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quic-binary");
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, quic, http_address) = serve(&dir, "127.0.0.1:0", "127.0.0.1:0");
    let stream = Value::map().with("StreamName", "binary");
    runtime.block_on(http(&dir, &http_address, "CreateStream", stream.clone().with("ShardCount", 3u32)));
    let client = ClientConfig::from_data_dir(quic, &dir).unwrap();
    let config = ProducerConfig { idempotent: true, ..ProducerConfig::default() };
    let producer = runtime.block_on(Producer::connect(client.clone(), config)).unwrap();
    let record = |index: u32| (format!("key-{}", index % 17), index.to_le_bytes().to_vec());
    let sending = {
        let producer = producer.clone();
        runtime.spawn(async move {
            let mut acks = Vec::new();
            for index in 0..3000u32 {
                let (key, data) = record(index);
                acks.push(producer.queue("binary", &key, data).await.unwrap());
                if index % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let mut sequences = Vec::new();
            for ack in acks {
                sequences.push(ack.await.expect("acknowledged in the end").as_u128());
            }
            sequences
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    stop(server);
    let (server, _, _) = serve(&dir, &quic.to_string(), &http_address);
    let mut sequences = runtime.block_on(sending).unwrap();
    // Split a shard, and produce more: the consumer reads the parent, then its children.
    let split = stream
        .clone()
        .with("ShardToSplit", "shardId-000000000000")
        .with("NewStartingHashKey", (1u128 << 126).to_string());
    runtime.block_on(http(&dir, &http_address, "SplitShard", split));
    runtime.block_on(async {
        for index in 3000..3300u32 {
            let (key, data) = record(index);
            sequences.push(producer.send("binary", &key, data).await.unwrap().as_u128());
        }
    });
    let consumed = runtime.block_on(async {
        let client = Arc::new(QuicClient::connect(&client).await.unwrap());
        let mut consumer =
            Consumer::subscribe(client, "binary", ReadStart::TrimHorizon, ConsumerConfig::default())
                .await
                .unwrap();
        let mut consumed = Vec::new();
        while consumed.len() < 3300 {
            let batch = tokio::time::timeout(Duration::from_secs(20), consumer.next()).await;
            let Ok(Some(batch)) = batch else { break };
            consumed.extend(batch.unwrap());
        }
        consumed
    });
    stop(server);
    let by_sequence: BTreeMap<u128, u32> = consumed
        .iter()
        .map(|record| (record.sequence, u32::from_le_bytes(record.data[..4].try_into().unwrap())))
        .collect();
    assert_eq!(consumed.len(), 3300, "every record delivered once");
    assert_eq!(by_sequence.len(), 3300, "no duplicates");
    for (index, sequence) in sequences.iter().enumerate() {
        assert_eq!(
            by_sequence.get(sequence),
            Some(&(index as u32)),
            "record {index} under its acknowledged number"
        );
    }
    let mut last_per_key: BTreeMap<String, u32> = BTreeMap::new();
    for record in &consumed {
        let index = u32::from_le_bytes(record.data[..4].try_into().unwrap());
        if let Some(last) = last_per_key.insert(record.partition_key.clone(), index) {
            assert!(last < index, "key {}: {index} after {last}", record.partition_key);
        }
    }
}

#[test]
fn the_binary_answers_bad_frames_with_typed_errors_and_refuses_a_wrong_token() {
    use millrace_net::quic::client::QuicError;
    use millrace_net::quic::frame::{self, ErrorCode, Message};
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quic-binary-bad");
    let _ = std::fs::remove_dir_all(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, quic, http_address) = serve(&dir, "127.0.0.1:0", "127.0.0.1:0");
    let stream = Value::map().with("StreamName", "guarded");
    runtime.block_on(http(&dir, &http_address, "CreateStream", stream.with("ShardCount", 1u32)));
    let config = ClientConfig::from_data_dir(quic, &dir).unwrap();
    runtime.block_on(async {
        let mut wrong = config.clone();
        wrong.token = b"guess".to_vec();
        assert!(matches!(
            QuicClient::connect(&wrong).await,
            Err(QuicError::Refused { code: Some(ErrorCode::Unauthenticated), .. })
        ));
        let client = QuicClient::connect(&config).await.unwrap();
        let put = Message::Put {
            stream: "guarded".into(),
            records: vec![frame::PutRecord {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: b"kept".to_vec(),
            }],
        };
        client.channel().await.unwrap().request(&put).await.unwrap();
        let good = put.to_frame(3).unwrap();
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 0x40;
        let mut wrong_version = good.clone();
        wrong_version[4] = 7;
        let mut oversize = good.clone();
        oversize[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut unknown_kind = Vec::new();
        frame::encode_frame(&mut unknown_kind, 99, 3, b"");
        for (bytes, expected) in [
            (&bad_crc, ErrorCode::BadFrame),
            (&wrong_version, ErrorCode::UnsupportedVersion),
            (&oversize, ErrorCode::FrameTooLarge),
            (&unknown_kind, ErrorCode::UnknownKind),
        ] {
            let channel = client.channel().await.unwrap();
            match channel.request_raw(0, bytes, false).await {
                Err(QuicError::Server { code, .. }) => assert_eq!(code, Some(expected)),
                other => panic!("expected {expected:?}, got {other:?}"),
            }
        }
        let truncated = client.channel().await.unwrap();
        assert!(truncated.request_raw(0, &good[..good.len() - 5], true).await.is_err());
        // The connection is still good, and only the one good record is stored.
        let channel = client.channel().await.unwrap();
        let read = Message::Read {
            stream: "guarded".into(),
            shard: 0,
            start: frame::ReadStart::TrimHorizon,
            max_records: 100,
        };
        match channel.request(&read).await.unwrap() {
            Message::Records { records, .. } => {
                assert_eq!(
                    records.iter().map(|record| record.data.clone()).collect::<Vec<_>>(),
                    vec![b"kept".to_vec()]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    });
    stop(server);
}
