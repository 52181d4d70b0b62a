//! The Kinesis Data Streams API (`Kinesis_20131202`): operations decoded from JSON or CBOR,
//! validated as AWS validates them, run on the engine, and answered in AWS's shapes.
//!
//! It is one [`Service`] of the front end: routed by `X-Amz-Target: Kinesis_20131202.*`,
//! signed for `kinesis`. Codecs, SigV4, error shapes and the event stream come from
//! [`crate::aws`]; this module holds only Kinesis. [`KinesisApi::handle`] runs an operation
//! on a body without any transport (tests, fuzzing).

pub mod error;
pub mod iterator;
pub mod limits;

mod consumers;
mod records;
mod streams;
mod subscribe;

use std::sync::Arc;

use millrace_core::{Engine, ResourceKey, ResourceMeta, ShardMeta, StreamMode, StreamName};

use self::error::codes;
use crate::aws::service::{Call, Reply, ReplyBody, ReplyFuture, Routing, Service};
use crate::aws::{document as value, ApiError, ErrorStyle, Protocol, Request, Value, ACCOUNT_ID};

/// Settings of the API front end.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The region named in ARNs.
    pub region: String,
    /// How long a shard iterator stays valid (AWS: 5 minutes).
    pub iterator_ttl_ms: i64,
    /// Enforce AWS's per-shard throughput limits, so that clients can test their retries.
    pub emulate_limits: bool,
    /// How long one SubscribeToShard session lasts (AWS: 5 minutes).
    pub subscription_ms: i64,
    /// Whether the engine has a keyring, so that StartStreamEncryption can be honoured.
    pub encryption_at_rest: bool,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            region: "us-east-1".to_owned(),
            iterator_ttl_ms: 300_000,
            emulate_limits: false,
            subscription_ms: 300_000,
            encryption_at_rest: false,
        }
    }
}

/// The Kinesis API over one engine. Cheap to share between connections.
pub struct KinesisApi {
    engine: Engine,
    config: ApiConfig,
    /// Key of the shard iterators' MAC; kept in the data directory.
    iterator_key: [u8; 32],
    limits: limits::ShardLimits,
    sessions: subscribe::Sessions,
}

/// The target prefix of the Kinesis API.
pub const TARGET_PREFIX: &str = "Kinesis_20131202";

/// Bytes one GetRecords returns at most (AWS: 10 MiB).
pub const GET_RECORDS_BYTES_MAX: usize = 10 << 20;

impl KinesisApi {
    pub fn new(engine: Engine, config: ApiConfig, iterator_key: [u8; 32]) -> Arc<KinesisApi> {
        Arc::new(KinesisApi {
            engine,
            config,
            iterator_key,
            limits: limits::ShardLimits::default(),
            sessions: subscribe::Sessions::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs one operation on a body: the answer's value, or the error as the client gets it
    /// (internal failures scrubbed of detail, which goes to the server's log).
    pub async fn handle(
        &self,
        operation: &str,
        protocol: Protocol,
        body: &[u8],
        request_id: &str,
    ) -> Result<Value, ApiError> {
        let outcome = match value::decode(protocol, body) {
            Ok(value) => self.dispatch(operation, Request::new(protocol, &value)).await,
            Err(error) => Err(error),
        };
        outcome.map_err(|error| crate::aws::error::scrub(error, "kinesis", request_id))
    }

    async fn dispatch(&self, operation: &str, request: Request<'_>) -> Result<Value, ApiError> {
        match operation {
            "CreateStream" => self.create_stream(request).await,
            "DeleteStream" => self.delete_stream(request).await,
            "DescribeStream" => self.describe_stream(request),
            "DescribeStreamSummary" => self.describe_stream_summary(request),
            "ListStreams" => self.list_streams(request),
            "ListShards" => self.list_shards(request),
            "IncreaseStreamRetentionPeriod" => self.change_retention(request, true).await,
            "DecreaseStreamRetentionPeriod" => self.change_retention(request, false).await,
            "SplitShard" => self.split_shard(request).await,
            "MergeShards" => self.merge_shards(request).await,
            "UpdateShardCount" => self.update_shard_count(request).await,
            "UpdateStreamMode" => self.update_stream_mode(request).await,
            "UpdateMaxRecordSize" => self.update_max_record_size(request).await,
            "AddTagsToStream" => self.add_tags(request, false).await,
            "TagResource" => self.add_tags(request, true).await,
            "RemoveTagsFromStream" => self.remove_tags(request, false).await,
            "UntagResource" => self.remove_tags(request, true).await,
            "ListTagsForStream" => self.list_tags_for_stream(request),
            "ListTagsForResource" => self.list_tags_for_resource(request),
            "DescribeLimits" => Ok(self.describe_limits()),
            "StartStreamEncryption" => self.change_encryption(request, true).await,
            "StopStreamEncryption" => self.change_encryption(request, false).await,
            "PutRecord" => self.put_record(request).await,
            "PutRecords" => self.put_records(request).await,
            "GetShardIterator" => self.get_shard_iterator(request).await,
            "GetRecords" => self.get_records(request).await,
            "RegisterStreamConsumer" => self.register_consumer(request).await,
            "DeregisterStreamConsumer" => self.deregister_consumer(request).await,
            "DescribeStreamConsumer" => self.describe_consumer(request),
            "ListStreamConsumers" => self.list_consumers(request),
            _ => Err(ApiError::new(
                codes::UNKNOWN_OPERATION,
                format!("Operation {operation} is not supported by this endpoint"),
            )),
        }
    }

    fn stream_arn(&self, name: &str) -> String {
        format!("arn:aws:kinesis:{}:{ACCOUNT_ID}:stream/{name}", self.config.region)
    }

    /// The stream a request names, by `StreamName` or `StreamARN` (AWS accepts either; when
    /// both are given they must agree).
    fn stream_of(&self, request: Request<'_>) -> Result<StreamName, ApiError> {
        let by_name = request.str_opt("StreamName")?;
        let by_arn = request.str_opt("StreamARN")?.map(stream_name_from_arn).transpose()?;
        let name = match (by_name, by_arn) {
            (Some(name), Some(from_arn)) if name != from_arn => {
                return Err(error::invalid(format!(
                    "StreamName {name} and StreamARN (stream {from_arn}) name different streams"
                )))
            }
            (Some(name), _) => name,
            (None, Some(from_arn)) => from_arn,
            (None, None) => {
                return Err(ApiError::new(
                    codes::VALIDATION,
                    "Either StreamName or StreamARN should be provided.",
                ))
            }
        };
        parse_stream_name("StreamName", name)
    }

    fn describe(&self, name: &StreamName) -> Result<Arc<ResourceMeta>, ApiError> {
        Ok(self.engine.describe_stream(name)?)
    }

    fn now_ms(&self) -> i64 {
        self.engine.now_ms()
    }
}

/// The engine's key of a data stream.
pub(crate) fn key(name: &StreamName) -> ResourceKey {
    ResourceKey::from(name)
}

impl Service for KinesisApi {
    fn name(&self) -> &'static str {
        "kinesis"
    }

    fn signing_name(&self) -> &'static str {
        "kinesis"
    }

    fn routing(&self) -> Routing {
        Routing::Target { prefix: TARGET_PREFIX }
    }

    fn call(self: Arc<Self>, call: Call) -> ReplyFuture {
        Box::pin(async move {
            let protocol = call.head.protocol;
            let operation = call.head.operation.clone().unwrap_or_default();
            let request_id = call.head.request_id.clone();
            let failed = |error: ApiError| {
                let error = crate::aws::error::scrub(error, "kinesis", &request_id);
                Reply::error(ErrorStyle::Json, protocol, error.code.status(), &error)
            };
            if operation == "SubscribeToShard" {
                return match self.subscribe(protocol, call.body.bytes(), &request_id).await {
                    Ok(events) => Reply {
                        status: 200,
                        headers: vec![("content-type", "application/vnd.amazon.eventstream".to_owned())],
                        body: ReplyBody::Stream(events),
                    },
                    Err(error) => failed(error),
                };
            }
            match self.handle(&operation, protocol, call.body.bytes(), &request_id).await {
                Ok(value) => Reply::encoded(200, protocol, value::encode(protocol, &value)),
                Err(error) => failed(error),
            }
        })
    }
}

pub fn parse_stream_name(member: &str, name: &str) -> Result<StreamName, ApiError> {
    name.parse().map_err(|_| {
        ApiError::validation(
            member,
            name,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length 1..=128",
        )
    })
}

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` (any region, any partition) to `NAME`.
fn stream_name_from_arn(arn: &str) -> Result<&str, ApiError> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("kinesis"), Some(_region), Some(_account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::validation(
            "StreamARN",
            arn,
            "Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+",
        ));
    };
    resource
        .strip_prefix("stream/")
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| error::invalid(format!("StreamARN {arn} does not name a stream")))
}

fn mode_name(mode: StreamMode) -> &'static str {
    match mode {
        StreamMode::Provisioned => "PROVISIONED",
        StreamMode::OnDemand => "ON_DEMAND",
    }
}

fn parse_mode(details: Option<Request<'_>>) -> Result<Option<StreamMode>, ApiError> {
    let Some(details) = details else { return Ok(None) };
    match details.str_req("StreamMode")? {
        "PROVISIONED" => Ok(Some(StreamMode::Provisioned)),
        "ON_DEMAND" => Ok(Some(StreamMode::OnDemand)),
        other => Err(ApiError::validation(
            "StreamModeDetails.StreamMode",
            other,
            "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]",
        )),
    }
}

/// A shard as DescribeStream and ListShards show it.
fn shard_value(shard: &ShardMeta) -> Value {
    let range = Value::map()
        .with("StartingHashKey", shard.range().start().to_string())
        .with("EndingHashKey", shard.range().end().to_string());
    let sequences = Value::map()
        .with("StartingSequenceNumber", shard.starting_sequence().to_string())
        .with_opt("EndingSequenceNumber", shard.ending_sequence().map(|sequence| sequence.to_string()));
    let parents: Vec<_> = shard.parents().collect();
    Value::map()
        .with("ShardId", shard.shard_id().to_string())
        .with_opt("ParentShardId", parents.first().map(ToString::to_string))
        .with_opt("AdjacentParentShardId", parents.get(1).map(ToString::to_string))
        .with("HashKeyRange", range)
        .with("SequenceNumberRange", sequences)
}

/// Reads an optional integer member and checks its range, with AWS's message.
fn bounded_int(request: Request<'_>, member: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(value) = request.int_opt(member)? else { return Ok(None) };
    if value < min {
        return Err(ApiError::validation(
            member,
            &value.to_string(),
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(ApiError::validation(
            member,
            &value.to_string(),
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    Ok(Some(value))
}
