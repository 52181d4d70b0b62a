//! Stream and shard management: create, delete, describe, list, retention, resharding,
//! stream mode, record size, tags, limits.

use base64::Engine as _;
use millrace_core::{
    CatalogError, EngineError, HashKey, Invalid, NewResource, ResourceKind, ResourceMeta, ResourceUpdate,
    ShardId, StreamMode, StreamName, ON_DEMAND_SHARDS, SHARDS_PER_STREAM_MAX, TAGS_PER_RESOURCE_MAX,
};

use super::error::{self, codes};
use super::{bounded_int, key, mode_name, parse_mode, parse_stream_name, shard_value, KinesisApi};
use crate::aws::{document as value, Protocol, Request, Value};
use crate::aws::{ApiError, ACCOUNT_ID};

const HOUR_MS: i64 = 3_600_000;

/// A shard id as a client sent it. Kinesis' pattern admits any `[a-zA-Z0-9_.-]+`, so an id
/// that is not ours is "not found" rather than malformed.
pub(super) fn parse_shard(stream: &StreamName, member: &str, text: &str) -> Result<ShardId, ApiError> {
    if text.is_empty() || text.len() > 128 {
        return Err(ApiError::validation(member, text, "Member must have length between 1 and 128"));
    }
    text.parse().map_err(|_| {
        ApiError::new(
            codes::RESOURCE_NOT_FOUND,
            format!("Shard {text} in stream {stream} under account {ACCOUNT_ID} does not exist"),
        )
    })
}

fn validate_tags(tags: &[(String, String)]) -> Result<(), ApiError> {
    if tags.len() > TAGS_PER_RESOURCE_MAX {
        return Err(ApiError::validation(
            "Tags",
            &format!("{} tags", tags.len()),
            &format!("Member must have length less than or equal to {}", TAGS_PER_RESOURCE_MAX),
        ));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(error::invalid(format!("Tag key {key:?} must be 1 to 128 characters")));
        }
        if value.chars().count() > 256 {
            return Err(error::invalid(format!("Tag value of {key:?} must be at most 256 characters")));
        }
    }
    Ok(())
}

/// When a closed shard stopped taking records: when its first child was made.
fn closed_ms(stream: &ResourceMeta, id: ShardId) -> Option<i64> {
    let shard = stream.shard(id)?;
    if shard.is_open() {
        return None;
    }
    stream
        .children(id)
        .iter()
        .filter_map(|child| stream.shard(*child))
        .map(|child| child.created_ms())
        .min()
        .or(Some(shard.created_ms()))
}

/// ListShards' ShardFilter.
#[derive(Debug, Clone, PartialEq)]
enum ShardFilter {
    AfterShardId(u32),
    AtTrimHorizon,
    FromTrimHorizon,
    AtLatest,
    AtTimestamp(i64),
    FromTimestamp(i64),
}

impl ShardFilter {
    fn parse(stream: &StreamName, filter: Request<'_>) -> Result<ShardFilter, ApiError> {
        let kind = filter.str_req("Type")?;
        let timestamp = || {
            filter
                .timestamp_opt("Timestamp")?
                .ok_or_else(|| error::invalid(format!("ShardFilter of type {kind} requires a Timestamp")))
        };
        Ok(match kind {
            "AFTER_SHARD_ID" => {
                let id = filter
                    .str_opt("ShardId")?
                    .ok_or_else(|| error::invalid("ShardFilter of type AFTER_SHARD_ID requires a ShardId"))?;
                ShardFilter::AfterShardId(parse_shard(stream, "ShardFilter.ShardId", id)?.get())
            }
            "AT_TRIM_HORIZON" => ShardFilter::AtTrimHorizon,
            "FROM_TRIM_HORIZON" => ShardFilter::FromTrimHorizon,
            "AT_LATEST" => ShardFilter::AtLatest,
            "AT_TIMESTAMP" => ShardFilter::AtTimestamp(timestamp()?),
            "FROM_TIMESTAMP" => ShardFilter::FromTimestamp(timestamp()?),
            other => return Err(ApiError::validation(
                "ShardFilter.Type",
                other,
                "Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, \
                     AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]",
            )),
        })
    }

    fn to_value(&self) -> Value {
        let (kind, extra) = match self {
            ShardFilter::AfterShardId(id) => ("AFTER_SHARD_ID", Some(Value::Int((*id).into()))),
            ShardFilter::AtTrimHorizon => ("AT_TRIM_HORIZON", None),
            ShardFilter::FromTrimHorizon => ("FROM_TRIM_HORIZON", None),
            ShardFilter::AtLatest => ("AT_LATEST", None),
            ShardFilter::AtTimestamp(ms) => ("AT_TIMESTAMP", Some(Value::Int(*ms))),
            ShardFilter::FromTimestamp(ms) => ("FROM_TIMESTAMP", Some(Value::Int(*ms))),
        };
        Value::map().with("k", kind).with_opt("x", extra)
    }

    fn from_value(value: &Value) -> Option<ShardFilter> {
        let extra = match value.get("x") {
            Some(Value::Int(extra)) => Some(*extra),
            _ => None,
        };
        Some(match value.get("k")? {
            Value::Str(kind) => match kind.as_str() {
                "AFTER_SHARD_ID" => ShardFilter::AfterShardId(u32::try_from(extra?).ok()?),
                "AT_TRIM_HORIZON" => ShardFilter::AtTrimHorizon,
                "FROM_TRIM_HORIZON" => ShardFilter::FromTrimHorizon,
                "AT_LATEST" => ShardFilter::AtLatest,
                "AT_TIMESTAMP" => ShardFilter::AtTimestamp(extra?),
                "FROM_TIMESTAMP" => ShardFilter::FromTimestamp(extra?),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Whether a shard passes the filter.
    fn admits(&self, stream: &ResourceMeta, id: ShardId, now_ms: i64) -> bool {
        let Some(shard) = stream.shard(id) else { return false };
        let closed = closed_ms(stream, id);
        let trim_ms = now_ms - i64::from(stream.retention_hours()) * HOUR_MS;
        // Open at `at`: made by then and not yet closed.
        let open_at = |at: i64| {
            let at = at.max(stream.created_ms());
            shard.created_ms() <= at && closed.is_none_or(|closed| closed > at)
        };
        let open_since = |at: i64| closed.is_none_or(|closed| closed > at);
        match self {
            ShardFilter::AfterShardId(after) => id.get() > *after,
            ShardFilter::AtTrimHorizon => open_at(trim_ms),
            ShardFilter::FromTrimHorizon => open_since(trim_ms),
            ShardFilter::AtLatest => shard.is_open(),
            ShardFilter::AtTimestamp(at) => open_at(*at),
            ShardFilter::FromTimestamp(at) => open_since(*at),
        }
    }
}

/// Where a ListShards or ListStreams page stopped. Opaque to the client.
fn encode_token(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value::encode(Protocol::Json, value))
}

fn decode_token(token: &str) -> Result<Value, ApiError> {
    let bad = || error::invalid(format!("NextToken {token} is invalid"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    value::decode(Protocol::Json, &bytes).map_err(|_| bad())
}

impl KinesisApi {
    fn description_common(&self, stream: &ResourceMeta) -> Value {
        let mut value = Value::map()
            .with("StreamName", stream.name())
            .with("StreamARN", self.stream_arn(stream.name()))
            .with("StreamStatus", "ACTIVE")
            .with("StreamModeDetails", Value::map().with("StreamMode", mode_name(stream.mode())))
            .with("RetentionPeriodHours", stream.retention_hours())
            .with("StreamCreationTimestamp", Value::Timestamp(stream.created_ms()))
            .with(
                "EnhancedMonitoring",
                Value::List(vec![Value::map().with("ShardLevelMetrics", Value::List(Vec::new()))]),
            );
        value = match &stream.encryption_key_id() {
            Some(key) => value.with("EncryptionType", "KMS").with("KeyId", *key),
            None => value.with("EncryptionType", "NONE"),
        };
        value.with("MaxRecordSizeInKiB", stream.max_record_bytes() >> 10)
    }

    pub(super) async fn create_stream(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = parse_stream_name("StreamName", request.str_req("StreamName")?)?;
        let mode =
            parse_mode(request.structure_opt("StreamModeDetails")?)?.unwrap_or(StreamMode::Provisioned);
        let shard_count = bounded_int(request, "ShardCount", 1, SHARDS_PER_STREAM_MAX.into())?;
        let shard_count = match (mode, shard_count) {
            (StreamMode::Provisioned, Some(count)) => count as u32,
            (StreamMode::Provisioned, None) => {
                return Err(error::invalid("ShardCount is required for a PROVISIONED stream"))
            }
            (StreamMode::OnDemand, _) => ON_DEMAND_SHARDS,
        };
        let tags = request.string_map_opt("Tags")?.unwrap_or_default();
        validate_tags(&tags)?;
        let mut new = NewResource::data_stream(&name, shard_count, mode);
        new.tags = tags;
        self.engine.create(new).await?;
        Ok(Value::map())
    }

    pub(super) async fn delete_stream(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let enforce = request.bool_opt("EnforceConsumerDeletion")?.unwrap_or(false);
        self.engine.delete_stream(&name, enforce).await?;
        Ok(Value::map())
    }

    pub(super) fn describe_stream(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let limit = bounded_int(request, "Limit", 1, 10_000)?.unwrap_or(100) as usize;
        let stream = self.describe(&name)?;
        let after = match request.str_opt("ExclusiveStartShardId")? {
            Some(text) => Some(parse_shard(&name, "ExclusiveStartShardId", text)?.get()),
            None => None,
        };
        let mut shards: Vec<_> = stream
            .shards()
            .iter()
            .filter(|shard| after.is_none_or(|after| shard.shard_id().get() > after))
            .collect();
        shards.sort_by_key(|shard| shard.shard_id().get());
        let has_more = shards.len() > limit;
        let shards: Vec<Value> = shards.into_iter().take(limit).map(shard_value).collect();
        let description = self
            .description_common(&stream)
            .with("Shards", Value::List(shards))
            .with("HasMoreShards", has_more);
        Ok(Value::map().with("StreamDescription", description))
    }

    pub(super) fn describe_stream_summary(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let stream = self.describe(&name)?;
        let summary = self
            .description_common(&stream)
            .with("OpenShardCount", stream.open_shards().count())
            .with("ConsumerCount", stream.consumers().len());
        Ok(Value::map().with("StreamDescriptionSummary", summary))
    }

    pub(super) fn list_streams(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let limit = bounded_int(request, "Limit", 1, 10_000)?.unwrap_or(100) as usize;
        let mut after = request.str_opt("ExclusiveStartStreamName")?.map(str::to_owned);
        if let Some(token) = request.str_opt("NextToken")? {
            match decode_token(token)?.get("after") {
                Some(Value::Str(name)) => after = Some(name.clone()),
                _ => return Err(error::invalid(format!("NextToken {token} is invalid"))),
            }
        }
        let names: Vec<String> = self
            .engine
            .list_streams()
            .into_iter()
            .filter(|name| after.as_ref().is_none_or(|after| name > after))
            .collect();
        let has_more = names.len() > limit;
        let page: Vec<String> = names.into_iter().take(limit).collect();
        let mut summaries = Vec::with_capacity(page.len());
        for name in &page {
            let Ok(stream) = self.engine.describe_stream(&parse_stream_name("StreamName", name)?) else {
                continue;
            };
            summaries.push(
                Value::map()
                    .with("StreamName", name.as_str())
                    .with("StreamARN", self.stream_arn(name))
                    .with("StreamStatus", "ACTIVE")
                    .with("StreamModeDetails", Value::map().with("StreamMode", mode_name(stream.mode())))
                    .with("StreamCreationTimestamp", Value::Timestamp(stream.created_ms())),
            );
        }
        let next_token = match (has_more, page.last()) {
            (true, Some(last)) => Some(encode_token(&Value::map().with("after", last.as_str()))),
            _ => None,
        };
        Ok(Value::map()
            .with("StreamNames", Value::List(page.into_iter().map(Value::Str).collect()))
            .with("HasMoreStreams", has_more)
            .with("StreamSummaries", Value::List(summaries))
            .with_opt("NextToken", next_token))
    }

    pub(super) fn list_shards(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let limit = bounded_int(request, "MaxResults", 1, 10_000)?.unwrap_or(1000) as usize;
        let (name, after, filter) = match request.str_opt("NextToken")? {
            Some(token) => {
                if request.has("StreamName")
                    || request.has("ExclusiveStartShardId")
                    || request.has("ShardFilter")
                {
                    return Err(error::invalid(
                        "NextToken cannot be combined with StreamName, ExclusiveStartShardId or ShardFilter",
                    ));
                }
                let state = decode_token(token)?;
                let bad = || error::invalid(format!("NextToken {token} is invalid"));
                let Some(Value::Str(name)) = state.get("s") else { return Err(bad()) };
                let Some(Value::Int(after)) = state.get("a") else { return Err(bad()) };
                let filter = match state.get("f") {
                    Some(filter) => Some(ShardFilter::from_value(filter).ok_or_else(bad)?),
                    None => None,
                };
                let after = u32::try_from(*after).map_err(|_| bad())?;
                (parse_stream_name("StreamName", name)?, Some(after), filter)
            }
            None => {
                let name = self.stream_of(request)?;
                let after = match request.str_opt("ExclusiveStartShardId")? {
                    Some(text) => Some(parse_shard(&name, "ExclusiveStartShardId", text)?.get()),
                    None => None,
                };
                let filter = match request.structure_opt("ShardFilter")? {
                    Some(filter) => Some(ShardFilter::parse(&name, filter)?),
                    None => None,
                };
                (name, after, filter)
            }
        };
        let stream = self.describe(&name)?;
        let now = self.now_ms();
        let mut shards: Vec<_> = stream
            .shards()
            .iter()
            .filter(|shard| after.is_none_or(|after| shard.shard_id().get() > after))
            .filter(|shard| {
                filter.as_ref().is_none_or(|filter| filter.admits(&stream, shard.shard_id(), now))
            })
            .collect();
        shards.sort_by_key(|shard| shard.shard_id().get());
        let has_more = shards.len() > limit;
        shards.truncate(limit);
        let next_token = match (has_more, shards.last()) {
            (true, Some(last)) => {
                let state = Value::map()
                    .with("s", stream.name())
                    .with("a", last.shard_id().get())
                    .with_opt("f", filter.as_ref().map(ShardFilter::to_value));
                Some(encode_token(&state))
            }
            _ => None,
        };
        Ok(Value::map()
            .with("Shards", Value::List(shards.into_iter().map(shard_value).collect()))
            .with_opt("NextToken", next_token))
    }

    pub(super) async fn change_retention(
        &self,
        request: Request<'_>,
        increase: bool,
    ) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let hours = request.int_req("RetentionPeriodHours")?;
        let hours =
            u32::try_from(hours).ok().filter(|hours| (24..=8760).contains(hours)).ok_or_else(|| {
                error::invalid(format!(
                "Minimum allowed retention period is 24 hours and maximum is 8760 hours. Requested retention \
                 period ({hours} hours) is out of range."
            ))
            })?;
        // Checked against what the stream has, and applied only if nothing changed meanwhile.
        for _ in 0..8 {
            let stream = self.describe(&name)?;
            let current = stream.retention_hours();
            if increase && hours < current {
                return Err(error::invalid(format!(
                    "Requested retention period ({hours} hours) for stream {name} can not be shorter than \
                     existing retention period ({current} hours). Use DecreaseRetentionPeriod API."
                )));
            }
            if !increase && hours > current {
                return Err(error::invalid(format!(
                    "Requested retention period ({hours} hours) for stream {name} can not be longer than \
                     existing retention period ({current} hours). Use IncreaseRetentionPeriod API."
                )));
            }
            match self
                .engine
                .update_at(&key(&name), Some(stream.version()), ResourceUpdate::Retention { hours })
                .await
            {
                Err(EngineError::Catalog(CatalogError::Invalid(Invalid::Version { .. }))) => continue,
                outcome => {
                    outcome?;
                    return Ok(Value::map());
                }
            }
        }
        Err(EngineError::Resharding { name: name.to_string() }.into())
    }

    pub(super) async fn split_shard(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let shard = parse_shard(&name, "ShardToSplit", request.str_req("ShardToSplit")?)?;
        let key_text = request.str_req("NewStartingHashKey")?;
        let split_at: HashKey = key_text.parse().map_err(|_| {
            ApiError::validation(
                "NewStartingHashKey",
                key_text,
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
            )
        })?;
        self.engine.split_shard(&key(&name), shard, split_at).await?;
        Ok(Value::map())
    }

    pub(super) async fn merge_shards(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let shard = parse_shard(&name, "ShardToMerge", request.str_req("ShardToMerge")?)?;
        let adjacent = parse_shard(&name, "AdjacentShardToMerge", request.str_req("AdjacentShardToMerge")?)?;
        self.engine.merge_shards(&key(&name), shard, adjacent).await?;
        Ok(Value::map())
    }

    pub(super) async fn update_shard_count(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let target = request.int_req("TargetShardCount")?;
        let target = bounded_int(request, "TargetShardCount", 1, SHARDS_PER_STREAM_MAX.into())?
            .unwrap_or(target) as u32;
        match request.str_req("ScalingType")? {
            "UNIFORM_SCALING" => {}
            other => {
                return Err(ApiError::validation(
                    "ScalingType",
                    other,
                    "Member must satisfy enum value set: [UNIFORM_SCALING]",
                ))
            }
        }
        let current = self.describe(&name)?.open_shards().count() as u32;
        // AWS's rule: one call at most doubles or halves the shard count.
        if target > current * 2 || target * 2 < current {
            return Err(ApiError::new(
                codes::LIMIT_EXCEEDED,
                format!(
                    "UpdateShardCount to {target} shards from {current}: a single call may at most double or halve \
                     the number of open shards of stream {name}"
                ),
            ));
        }
        self.engine.update_shard_count(&key(&name), target).await?;
        Ok(Value::map()
            .with("StreamName", name.as_str())
            .with("StreamARN", self.stream_arn(name.as_str()))
            .with("CurrentShardCount", current)
            .with("TargetShardCount", target))
    }

    pub(super) async fn update_stream_mode(&self, request: Request<'_>) -> Result<Value, ApiError> {
        request.str_req("StreamARN")?;
        let name = self.stream_of(request)?;
        let mode = parse_mode(Some(
            request.structure_opt("StreamModeDetails")?.ok_or_else(|| value::missing("StreamModeDetails"))?,
        ))?
        .expect("details were given");
        self.engine.update_stream(&name, ResourceUpdate::Mode(mode)).await?;
        Ok(Value::map())
    }

    pub(super) async fn update_max_record_size(&self, request: Request<'_>) -> Result<Value, ApiError> {
        request.str_req("StreamARN")?;
        let name = self.stream_of(request)?;
        request.int_req("MaxRecordSizeInKiB")?;
        let kib = bounded_int(request, "MaxRecordSizeInKiB", 1024, 10_240)?.expect("present") as u32;
        self.engine.update_stream(&name, ResourceUpdate::MaxRecordBytes { bytes: kib << 10 }).await?;
        Ok(Value::map())
    }

    /// The stream named by a `ResourceARN` (tags work on streams).
    fn stream_of_resource(&self, request: Request<'_>) -> Result<StreamName, ApiError> {
        let arn = request.str_req("ResourceARN")?;
        if arn.contains("/consumer/") {
            return Err(error::invalid(format!(
                "ResourceARN {arn}: tags are kept on streams, not consumers"
            )));
        }
        let name = super::stream_name_from_arn(arn)?;
        parse_stream_name("ResourceARN", name)
    }

    pub(super) async fn add_tags(&self, request: Request<'_>, by_resource: bool) -> Result<Value, ApiError> {
        let name = if by_resource { self.stream_of_resource(request)? } else { self.stream_of(request)? };
        let tags = request.string_map_opt("Tags")?.ok_or_else(|| value::missing("Tags"))?;
        if tags.is_empty() {
            return Err(ApiError::validation(
                "Tags",
                "{}",
                "Member must have length greater than or equal to 1",
            ));
        }
        validate_tags(&tags)?;
        self.engine.update_stream(&name, ResourceUpdate::AddTags(tags)).await?;
        Ok(Value::map())
    }

    pub(super) async fn remove_tags(
        &self,
        request: Request<'_>,
        by_resource: bool,
    ) -> Result<Value, ApiError> {
        let name = if by_resource { self.stream_of_resource(request)? } else { self.stream_of(request)? };
        let keys = request
            .list_req("TagKeys")?
            .iter()
            .map(|key| match key {
                Value::Str(key) => Ok(key.clone()),
                _ => Err(ApiError::new(codes::SERIALIZATION, "TagKeys must be a list of strings")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() || keys.len() > TAGS_PER_RESOURCE_MAX {
            return Err(ApiError::validation("TagKeys", "[]", "Member must have length between 1 and 50"));
        }
        self.engine.update_stream(&name, ResourceUpdate::RemoveTags(keys)).await?;
        Ok(Value::map())
    }

    fn tag_values<'a>(tags: impl Iterator<Item = &'a (String, String)>) -> Vec<Value> {
        tags.map(|(key, value)| Value::map().with("Key", key.as_str()).with("Value", value.as_str()))
            .collect()
    }

    pub(super) fn list_tags_for_stream(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        let limit = bounded_int(request, "Limit", 1, 50)?.unwrap_or(50) as usize;
        let after = request.str_opt("ExclusiveStartTagKey")?;
        let stream = self.describe(&name)?;
        let tags: Vec<_> =
            stream.tags().iter().filter(|(key, _)| after.is_none_or(|after| key.as_str() > after)).collect();
        let has_more = tags.len() > limit;
        Ok(Value::map()
            .with("Tags", Value::List(Self::tag_values(tags.into_iter().take(limit))))
            .with("HasMoreTags", has_more))
    }

    pub(super) fn list_tags_for_resource(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = self.stream_of_resource(request)?;
        let stream = self.describe(&name)?;
        Ok(Value::map().with("Tags", Value::List(Self::tag_values(stream.tags().iter()))))
    }

    /// Start/StopStreamEncryption: new records are sealed with AES-256-GCM under a key
    /// derived from the server's master key and the `KeyId` (any KMS-style id or alias
    /// names a key of its own); records already stored keep the form they were written in.
    pub(super) async fn change_encryption(
        &self,
        request: Request<'_>,
        start: bool,
    ) -> Result<Value, ApiError> {
        let name = self.stream_of(request)?;
        match request.str_req("EncryptionType")? {
            "KMS" => {}
            "NONE" => return Err(error::invalid("EncryptionType must be KMS")),
            other => {
                return Err(ApiError::validation(
                    "EncryptionType",
                    other,
                    "Member must satisfy enum value set: [KMS, NONE]",
                ))
            }
        }
        let key_id = request.str_req("KeyId")?;
        if key_id.is_empty() || key_id.len() > millrace_core::KEY_ID_BYTES_MAX {
            return Err(ApiError::validation("KeyId", key_id, "Member must have length between 1 and 2048"));
        }
        if start && !self.config.encryption_at_rest {
            return Err(error::invalid("this server has no encryption key configured"));
        }
        let key_id = key_id.to_owned();
        for _ in 0..8 {
            let stream = self.describe(&name)?;
            if !start && stream.encryption_key_id() != Some(key_id.as_str()) {
                return Err(error::invalid(format!("stream {name} is not encrypted with KeyId {key_id}")));
            }
            let update = ResourceUpdate::Encryption { key_id: start.then(|| key_id.clone()) };
            match self.engine.update_at(&key(&name), Some(stream.version()), update).await {
                Err(EngineError::Catalog(CatalogError::Invalid(Invalid::Version { .. }))) => continue,
                outcome => {
                    outcome?;
                    return Ok(Value::map());
                }
            }
        }
        Err(EngineError::Resharding { name: name.to_string() }.into())
    }

    pub(super) fn describe_limits(&self) -> Value {
        let mut open_shards = 0usize;
        let mut on_demand = 0usize;
        for stream in self.engine.list(ResourceKind::DataStream) {
            open_shards += stream.open_shards().count();
            on_demand += usize::from(stream.mode() == StreamMode::OnDemand);
        }
        Value::map()
            .with("ShardLimit", SHARDS_PER_STREAM_MAX)
            .with("OpenShardCount", open_shards)
            .with("OnDemandStreamCount", on_demand)
            .with("OnDemandStreamCountLimit", 50u32)
    }
}
