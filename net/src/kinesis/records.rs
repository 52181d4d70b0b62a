//! Writing and reading records: PutRecord, PutRecords, GetShardIterator, GetRecords.

use millrace_core::{
    Appended, CatalogError, EngineError, HashKey, PartitionKey, ReadLimits, Record, ResourceKind,
    ResourceMeta, SequenceNumber, ShardId, StartPosition, StoredRecord, StreamName,
};

use super::error::{self, codes};
use super::iterator::{IteratorError, ShardIterator};
use super::streams::parse_shard;
use super::{bounded_int, KinesisApi, GET_RECORDS_BYTES_MAX};
use crate::aws::{ApiError, ACCOUNT_ID};
use crate::aws::{Request, Value};

/// Most records in one PutRecords (AWS: 500).
pub const PUT_RECORDS_MAX: usize = 500;
/// Most bytes of data and partition keys in one PutRecords (AWS: 5 MiB, or the stream's
/// record size limit when that is larger).
pub const PUT_RECORDS_BYTES_MAX: usize = 5 << 20;

fn throttled(stream: &StreamName, shard: ShardId) -> ApiError {
    ApiError::new(
        codes::PROVISIONED_THROUGHPUT_EXCEEDED,
        format!("Rate exceeded for shard {shard} in stream {stream} under account {ACCOUNT_ID}."),
    )
}

/// The open shard that owns a hash key.
fn owning_shard(stream: &ResourceMeta, key: HashKey) -> Option<ShardId> {
    stream.open_shards().find(|shard| shard.range().contains(key)).map(|shard| shard.shard_id())
}

/// One entry of a put, validated.
fn parse_record(entry: Request<'_>, index: Option<usize>) -> Result<Record, ApiError> {
    let at = |member: &str| match index {
        Some(index) => format!("records.{}.member.{member}", index + 1),
        None => member.to_owned(),
    };
    let key_text = entry.str_req("PartitionKey")?;
    let partition_key: PartitionKey = key_text.parse().map_err(|_| {
        ApiError::validation(&at("PartitionKey"), key_text, "Member must have length between 1 and 256")
    })?;
    let data = entry.blob_req("Data")?;
    let explicit_hash_key = match entry.str_opt("ExplicitHashKey")? {
        Some(text) => Some(text.parse::<HashKey>().map_err(|_| {
            ApiError::validation(
                &at("ExplicitHashKey"),
                text,
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
            )
        })?),
        None => None,
    };
    Ok(Record { partition_key, explicit_hash_key, data })
}

fn check_sequence_for_ordering(request: Request<'_>) -> Result<(), ApiError> {
    // Records of one shard are already stored in arrival order, which is what this asks
    // for; the value is only checked.
    if let Some(text) = request.str_opt("SequenceNumberForOrdering")? {
        text.parse::<SequenceNumber>().map_err(|_| {
            ApiError::validation(
                "SequenceNumberForOrdering",
                text,
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
            )
        })?;
    }
    Ok(())
}

pub(super) fn parse_sequence(member: &str, text: &str) -> Result<SequenceNumber, ApiError> {
    text.parse().map_err(|_| {
        ApiError::validation(
            member,
            text,
            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
        )
    })
}

impl KinesisApi {
    fn encryption_type(stream: &ResourceMeta) -> &'static str {
        if stream.encryption_key_id().is_some() {
            "KMS"
        } else {
            "NONE"
        }
    }

    pub(super) async fn put_record(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let record = parse_record(request, None)?;
        check_sequence_for_ordering(request)?;
        let stream = self.describe(&name)?;
        if self.config.emulate_limits {
            let hash_key = record.hash_key();
            // Open shards tile the key space: a gap is a broken shard map, an internal fault.
            let shard = owning_shard(&stream, hash_key)
                .ok_or_else(|| EngineError::NoOwningShard { name: name.to_string(), hash_key })?;
            let bytes = record.data.len() + record.partition_key.as_str().len();
            if !self.limits.admit_write(stream.uid(), shard.get(), bytes, self.now_ms()) {
                return Err(throttled(&name, shard));
            }
        }
        let appended = self.engine.append(&super::key(&name), vec![record]).await?;
        let Appended { shard, sequence } = appended[0];
        Ok(Value::map()
            .with("ShardId", shard.to_string())
            .with("SequenceNumber", sequence.to_string())
            .with("EncryptionType", Self::encryption_type(&stream)))
    }

    pub(super) async fn put_records(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let entries = request.list_req("Records")?;
        if entries.is_empty() || entries.len() > PUT_RECORDS_MAX {
            return Err(ApiError::validation(
                "Records",
                &format!("{} records", entries.len()),
                &format!("Member must have length between 1 and {PUT_RECORDS_MAX}"),
            ));
        }
        let mut records = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let Value::Map(_) = entry else {
                return Err(ApiError::new(codes::SERIALIZATION, "Records must be a list of structures"));
            };
            records.push(parse_record(Request::new(request.protocol, entry), Some(index))?);
        }
        let stream = self.describe(&name)?;
        let total_bytes: usize =
            records.iter().map(|record| record.data.len() + record.partition_key.as_str().len()).sum();
        let request_max = PUT_RECORDS_BYTES_MAX.max(stream.max_record_bytes() as usize);
        if total_bytes > request_max {
            return Err(error::invalid(format!(
                "Records size exceeds {request_max} bytes: the request carries {total_bytes} bytes of data and \
                 partition keys"
            )));
        }
        // With emulated limits, records over their shard's budget fail on their own, as
        // AWS fails them; the rest are stored.
        let mut outcomes: Vec<Option<Result<Appended, ApiError>>> = vec![None; records.len()];
        let mut admitted = Vec::with_capacity(records.len());
        let mut admitted_at = Vec::with_capacity(records.len());
        for (index, record) in records.into_iter().enumerate() {
            if self.config.emulate_limits {
                if let Some(shard) = owning_shard(&stream, record.hash_key()) {
                    let bytes = record.data.len() + record.partition_key.as_str().len();
                    if !self.limits.admit_write(stream.uid(), shard.get(), bytes, self.now_ms()) {
                        outcomes[index] = Some(Err(throttled(&name, shard)));
                        continue;
                    }
                }
            }
            admitted.push(record);
            admitted_at.push(index);
        }
        if !admitted.is_empty() {
            let results = self.engine.append_each(&super::key(&name), admitted).await?;
            for (index, result) in admitted_at.into_iter().zip(results) {
                outcomes[index] = Some(result.map_err(ApiError::from));
            }
        }
        let failed = outcomes.iter().filter(|outcome| matches!(outcome, Some(Err(_)))).count();
        let entries: Vec<Value> = outcomes
            .into_iter()
            .map(|outcome| match outcome.expect("every record answered") {
                Ok(Appended { shard, sequence }) => Value::map()
                    .with("SequenceNumber", sequence.to_string())
                    .with("ShardId", shard.to_string()),
                Err(error) => {
                    // Per-entry codes are the exception names AWS uses there.
                    let code = match error.code {
                        codes::PROVISIONED_THROUGHPUT_EXCEEDED => "ProvisionedThroughputExceededException",
                        _ => "InternalFailure",
                    };
                    Value::map().with("ErrorCode", code).with("ErrorMessage", error.message)
                }
            })
            .collect();
        Ok(Value::map()
            .with("FailedRecordCount", failed)
            .with("Records", Value::List(entries))
            .with("EncryptionType", Self::encryption_type(&stream)))
    }

    pub(super) async fn get_shard_iterator(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let shard = parse_shard(&name, "ShardId", request.str_req("ShardId")?)?;
        let kind = request.str_req("ShardIteratorType")?;
        let sequence = || -> Result<SequenceNumber, ApiError> {
            let text = request.str_opt("StartingSequenceNumber")?.ok_or_else(|| {
                error::invalid(format!("StartingSequenceNumber is required for ShardIteratorType {kind}"))
            })?;
            parse_sequence("StartingSequenceNumber", text)
        };
        let start = match kind {
            "TRIM_HORIZON" => StartPosition::TrimHorizon,
            "LATEST" => StartPosition::Latest,
            "AT_SEQUENCE_NUMBER" => StartPosition::AtSequence(sequence()?),
            "AFTER_SEQUENCE_NUMBER" => StartPosition::AfterSequence(sequence()?),
            "AT_TIMESTAMP" => {
                let arrival_ms = request.timestamp_opt("Timestamp")?.ok_or_else(|| {
                    error::invalid("Timestamp is required for ShardIteratorType AT_TIMESTAMP")
                })?;
                StartPosition::AtTimestamp { arrival_ms }
            }
            other => {
                return Err(ApiError::validation(
                    "ShardIteratorType",
                    other,
                    "Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER, \
                     AT_TIMESTAMP, TRIM_HORIZON, LATEST]",
                ))
            }
        };
        let stream = self.describe(&name)?;
        let position = self.engine.resolve(&super::key(&name), shard, start).await?;
        let iterator = ShardIterator {
            stream_uid: stream.uid(),
            stream_name: name.to_string(),
            shard: shard.get(),
            position: position.as_u128(),
            issued_ms: self.now_ms(),
        };
        Ok(Value::map().with("ShardIterator", iterator.encode(&self.iterator_key)))
    }

    pub(super) async fn get_records(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let token = request.str_req("ShardIterator")?;
        if token.is_empty() || token.len() > 512 {
            return Err(ApiError::validation(
                "ShardIterator",
                token,
                "Member must have length between 1 and 512",
            ));
        }
        let limit = bounded_int(request, "Limit", 1, 10_000)?.unwrap_or(10_000) as usize;
        let now = self.now_ms();
        let iterator = ShardIterator::decode(token, &self.iterator_key, now, self.config.iterator_ttl_ms)
            .map_err(|error| match error {
                IteratorError::Invalid => error::invalid(error.to_string()),
                IteratorError::Expired { .. } => ApiError::new(codes::EXPIRED_ITERATOR, error.to_string()),
            })?;
        let name = super::parse_stream_name("StreamName", &iterator.stream_name)?;
        if request.has("StreamARN") {
            let named = self.stream_of(request)?;
            if named != name {
                return Err(error::invalid(format!("ShardIterator belongs to stream {name}, not {named}")));
            }
        }
        let stream = self.describe(&name)?;
        if stream.uid() != iterator.stream_uid {
            // The stream was deleted and a new one made under its name.
            let error = CatalogError::NotFound { kind: ResourceKind::DataStream, name: name.to_string() };
            return Err(EngineError::Catalog(error).into());
        }
        let shard = ShardId::new(iterator.shard);
        if self.config.emulate_limits && !self.limits.admit_read(stream.uid(), shard.get(), now) {
            return Err(throttled(&name, shard));
        }
        let read = self
            .engine
            .read(
                &super::key(&name),
                shard,
                SequenceNumber::from_u128(iterator.position),
                ReadLimits { max_records: limit, max_bytes: GET_RECORDS_BYTES_MAX },
            )
            .await?;
        let bytes: usize = read.records.iter().map(|record| record.data.len()).sum();
        let records: Vec<Value> = read.records.into_iter().map(record_value).collect();
        if self.config.emulate_limits {
            self.limits.charge_read(stream.uid(), shard.get(), bytes, now);
        }
        let next = read.next.map(|position| {
            ShardIterator { position: position.as_u128(), issued_ms: now, ..iterator.clone() }
                .encode(&self.iterator_key)
        });
        let mut answer = Value::map()
            .with("Records", Value::List(records))
            .with_opt("NextShardIterator", next)
            .with("MillisBehindLatest", read.millis_behind_latest);
        if !read.child_shards.is_empty() {
            answer = answer.with("ChildShards", child_shards_value(&stream, &read.child_shards));
        }
        Ok(answer)
    }
}

/// A record as GetRecords and SubscribeToShard show it.
pub(super) fn record_value(record: StoredRecord) -> Value {
    let value = Value::map()
        .with("SequenceNumber", record.sequence.to_string())
        .with("ApproximateArrivalTimestamp", Value::Timestamp(record.arrival_ms))
        .with("Data", Value::Bytes(record.data))
        .with("PartitionKey", record.partition_key);
    if record.encrypted {
        value.with("EncryptionType", "KMS")
    } else {
        value
    }
}

/// The shards that continue a closed one, as `ChildShards`.
pub(super) fn child_shards_value(stream: &ResourceMeta, children: &[ShardId]) -> Value {
    Value::List(
        children
            .iter()
            .filter_map(|id| stream.shard(*id))
            .map(|child| {
                let parents: Vec<Value> =
                    child.parents().map(|parent| Value::Str(parent.to_string())).collect();
                Value::map()
                    .with("ShardId", child.shard_id().to_string())
                    .with("ParentShards", Value::List(parents))
                    .with(
                        "HashKeyRange",
                        Value::map()
                            .with("StartingHashKey", child.range().start().to_string())
                            .with("EndingHashKey", child.range().end().to_string()),
                    )
            })
            .collect(),
    )
}
