//! The Firehose API (`Firehose_20150804`, JSON 1.1, SigV4 service `firehose`): the twelve
//! operations on delivery streams, kept in the catalog as resources of kind
//! `DeliveryStream`, whose one shard log is the durable delivery buffer.

use std::sync::Arc;

use millrace_core::{
    Engine, NewResource, PartitionKey, Record, ResourceKey, ResourceKind, ResourceMeta, ResourceUpdate,
    StreamMode,
};

use super::config::{self, DESTINATION_ID};
use super::delivery::{Deliveries, Status};
use super::error::{self, codes, invalid, not_found};
use super::invoke::LambdaEndpoint;
use super::sink::Sink;
use super::spec::{KinesisSource, Spec};
use crate::aws::service::{Call, Reply, ReplyFuture, Routing, Service};
use crate::aws::{document as value, ApiError, Protocol, Request, Value, ACCOUNT_ID};

/// The target prefix of the Firehose API.
pub const TARGET_PREFIX: &str = "Firehose_20150804";
/// `Record.Data` at most (1,000 KiB).
pub const RECORD_BYTES_MAX: usize = 1_024_000;
/// PutRecordBatch: at most this many records and bytes.
pub const BATCH_RECORDS_MAX: usize = 500;
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Tags per delivery stream, and per request.
pub const TAGS_MAX: usize = 50;
/// The key id the engine encrypts with under `AWS_OWNED_CMK`.
const AWS_OWNED_KEY: &str = "aws/firehose";

#[derive(Debug, Clone)]
pub struct FirehoseConfig {
    pub region: String,
    /// Whether the engine has a keyring (StartDeliveryStreamEncryption needs it).
    pub encryption_at_rest: bool,
}

impl Default for FirehoseConfig {
    fn default() -> FirehoseConfig {
        FirehoseConfig { region: "us-east-1".into(), encryption_at_rest: false }
    }
}

pub struct FirehoseApi {
    engine: Engine,
    config: FirehoseConfig,
    deliveries: Deliveries,
    /// Create, delete and update one at a time (each checks, then changes the catalog).
    control: tokio::sync::Mutex<()>,
}

fn key(name: &str) -> ResourceKey {
    ResourceKey::new(ResourceKind::DeliveryStream, name)
}

impl FirehoseApi {
    /// The API over `engine`, delivering to `sink`; the workers of the delivery streams that
    /// exist already start on `runtime` and resume at their cursors.
    pub fn new(
        engine: Engine,
        config: FirehoseConfig,
        sink: Sink,
        lambda: Option<LambdaEndpoint>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<FirehoseApi> {
        let deliveries =
            Deliveries::new(engine.clone(), Arc::new(sink), runtime, config.region.clone(), lambda);
        for stream in engine.list(ResourceKind::DeliveryStream) {
            deliveries.start(stream.name());
        }
        Arc::new(FirehoseApi { engine, config, deliveries, control: tokio::sync::Mutex::new(()) })
    }

    pub fn deliveries(&self) -> &Deliveries {
        &self.deliveries
    }

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
        outcome.map_err(|error| crate::aws::error::scrub(error, "firehose", request_id))
    }

    async fn dispatch(&self, operation: &str, request: Request<'_>) -> Result<Value, ApiError> {
        match operation {
            "CreateDeliveryStream" => self.create(request).await,
            "DeleteDeliveryStream" => self.delete(request).await,
            "DescribeDeliveryStream" => self.describe(request),
            "ListDeliveryStreams" => self.list(request),
            "PutRecord" => self.put_record(request).await,
            "PutRecordBatch" => self.put_record_batch(request).await,
            "UpdateDestination" => self.update_destination(request).await,
            "StartDeliveryStreamEncryption" => self.encryption(request, true).await,
            "StopDeliveryStreamEncryption" => self.encryption(request, false).await,
            "TagDeliveryStream" => self.tag(request).await,
            "UntagDeliveryStream" => self.untag(request).await,
            "ListTagsForDeliveryStream" => self.list_tags(request),
            _ => Err(ApiError::new(
                codes::UNKNOWN_OPERATION,
                format!("Operation {operation} is not supported by this endpoint"),
            )),
        }
    }

    fn arn(&self, name: &str) -> String {
        format!("arn:aws:firehose:{}:{ACCOUNT_ID}:deliverystream/{name}", self.config.region)
    }

    fn meta(&self, name: &str) -> Result<(Arc<ResourceMeta>, Spec), ApiError> {
        let meta = self.engine.describe(&key(name)).map_err(error::engine)?;
        let spec = Spec::decode(meta.spec())?;
        Ok((meta, spec))
    }

    // -------------------------------------------------------------------------------------
    // Delivery streams

    async fn create(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let delivery_type = request.str_opt("DeliveryStreamType")?.unwrap_or("DirectPut");
        match delivery_type {
            "DirectPut" | "KinesisStreamAsSource" => {}
            "MSKAsSource" | "DatabaseAsSource" => {
                return Err(invalid(format!(
                    "DeliveryStreamType {delivery_type} is not supported by this server; use DirectPut or \
                     KinesisStreamAsSource"
                )))
            }
            other => {
                return Err(ApiError::validation(
                    "DeliveryStreamType",
                    other,
                    "Member must satisfy enum value set: [DatabaseAsSource, DirectPut, KinesisStreamAsSource, MSKAsSource]",
                ))
            }
        }
        let destination = config::destination_of_create(request)?;
        self.check_lambda(&destination)?;
        let tags = parse_tags(request, "Tags")?.unwrap_or_default();
        let _guard = self.control.lock().await;
        let now = self.engine.now_ms();
        let kinesis_source = match (delivery_type, request.structure_opt("KinesisStreamSourceConfiguration")?) {
            ("KinesisStreamAsSource", Some(source)) => {
                let stream_arn = source.str_req("KinesisStreamARN")?;
                let role_arn = source.str_req("RoleARN")?;
                let stream = kinesis_stream_of_arn(stream_arn)?;
                self.engine
                    .describe(&ResourceKey::new(ResourceKind::DataStream, stream.clone()))
                    .map_err(error::engine)?;
                Some(KinesisSource {
                    stream,
                    stream_arn: stream_arn.to_owned(),
                    role_arn: role_arn.to_owned(),
                    start_ms: now,
                })
            }
            ("KinesisStreamAsSource", None) => {
                return Err(invalid(
                    "KinesisStreamSourceConfiguration is required for a KinesisStreamAsSource delivery stream",
                ))
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "KinesisStreamSourceConfiguration is only allowed for a KinesisStreamAsSource delivery stream",
                ))
            }
            (_, None) => None,
        };
        let encryption = match request.structure_opt("DeliveryStreamEncryptionConfigurationInput")? {
            Some(input) => {
                if kinesis_source.is_some() {
                    return Err(invalid(
                        "Server-side encryption is not allowed for a KinesisStreamAsSource delivery stream; \
                         the source stream's encryption applies",
                    ));
                }
                Some(self.encryption_input(input)?)
            }
            None => None,
        };
        let spec = Spec {
            delivery_type: delivery_type.to_owned(),
            version_id: 1,
            destination,
            kinesis_source,
            encryption: encryption.clone(),
        };
        let new = NewResource {
            key: key(name),
            // A Kinesis-sourced stream buffers in its source stream's log.
            shards: if spec.kinesis_source.is_some() { 0 } else { 1 },
            mode: StreamMode::Provisioned,
            spec: spec.encode(),
            tags,
            // Undelivered records are kept until delivered (the delivery cursor, not age,
            // decides what is done with).
            retention_hours: millrace_core::RETENTION_HOURS_MAX,
            max_record_bytes: millrace_core::DEFAULT_MAX_RECORD_BYTES,
            encryption_key_id: encryption.as_ref().map(|(kind, arn)| engine_key_id(kind, arn.as_deref())),
        };
        self.engine.create(new).await.map_err(error::engine)?;
        self.deliveries.start(name);
        Ok(Value::map().with("DeliveryStreamARN", self.arn(name)))
    }

    /// A Lambda processor needs the Invoke API's endpoint.
    fn check_lambda(&self, destination: &config::Destination) -> Result<(), ApiError> {
        let plan = config::plan(destination)?;
        if plan.processors().lambda.is_some() && self.deliveries.lambda().is_none() {
            return Err(invalid(
                "This server has no Lambda endpoint for the Lambda processor: start millrace serve with \
                 MILLRACE_LAMBDA_ENDPOINT=URL (the Lambda Invoke API: AWS's runtime interface emulator, \
                 sam local start-lambda, or Lambda itself)",
            ));
        }
        Ok(())
    }

    fn encryption_input(&self, input: Request<'_>) -> Result<(String, Option<String>), ApiError> {
        let key_type = input.str_req("KeyType")?;
        let key_arn = input.str_opt("KeyARN")?;
        match (key_type, key_arn) {
            ("AWS_OWNED_CMK", None) => {}
            ("AWS_OWNED_CMK", Some(_)) => {
                return Err(invalid("KeyARN must not be given when KeyType is AWS_OWNED_CMK"));
            }
            ("CUSTOMER_MANAGED_CMK", Some(arn)) if arn.starts_with("arn:") && arn.contains(":kms:") => {}
            ("CUSTOMER_MANAGED_CMK", _) => {
                return Err(invalid(
                    "KeyARN, a KMS key ARN, is required when KeyType is CUSTOMER_MANAGED_CMK",
                ));
            }
            (other, _) => {
                return Err(ApiError::validation(
                    "DeliveryStreamEncryptionConfigurationInput.KeyType",
                    other,
                    "Member must satisfy enum value set: [AWS_OWNED_CMK, CUSTOMER_MANAGED_CMK]",
                ))
            }
        }
        if !self.config.encryption_at_rest {
            return Err(ApiError::new(
                codes::INVALID_KMS_RESOURCE,
                "This server has no encryption key; start it with one to encrypt delivery streams at rest",
            ));
        }
        Ok((key_type.to_owned(), key_arn.map(str::to_owned)))
    }

    async fn delete(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let _ = request.bool_opt("AllowForceDelete")?;
        let _guard = self.control.lock().await;
        self.meta(name)?;
        // A stream is CREATING until its worker has opened its cursor: moments, so wait a
        // little before refusing as AWS refuses.
        for _ in 0..50 {
            if !self.deliveries.state(name).is_some_and(|state| state.status() == Status::Creating) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if self.deliveries.state(name).is_some_and(|state| state.status() == Status::Creating) {
            return Err(ApiError::new(
                codes::RESOURCE_IN_USE,
                format!(
                    "Firehose {name} under account {ACCOUNT_ID} is in CREATING state; delete it once ACTIVE"
                ),
            ));
        }
        self.deliveries.mark_deleting(name);
        self.deliveries.stop(name).await;
        self.engine.delete(&key(name), false).await.map_err(error::engine)?;
        Ok(Value::map())
    }

    fn describe(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        bounded(request, "Limit", 1, 10_000)?;
        if let Some(start) = request.str_opt("ExclusiveStartDestinationId")? {
            check_destination_id(start, "ExclusiveStartDestinationId")?;
        }
        let (meta, spec) = self.meta(name)?;
        let status = self.deliveries.state(name).map_or(Status::Active, |state| state.status());
        let encryption = match &spec.encryption {
            None => Value::map().with("Status", "DISABLED"),
            Some((key_type, key_arn)) => Value::map()
                .with_opt("KeyARN", key_arn.clone())
                .with("KeyType", key_type.as_str())
                .with("Status", "ENABLED"),
        };
        let destinations = if request.str_opt("ExclusiveStartDestinationId")?.is_some() {
            Vec::new()
        } else {
            vec![spec.destination.describe()]
        };
        let mut description = Value::map()
            .with("DeliveryStreamName", name)
            .with("DeliveryStreamARN", self.arn(name))
            .with("DeliveryStreamStatus", status.as_str())
            .with("DeliveryStreamEncryptionConfiguration", encryption)
            .with("DeliveryStreamType", spec.delivery_type.as_str())
            .with("VersionId", spec.version_id.to_string())
            .with("CreateTimestamp", Value::Timestamp(meta.created_ms()));
        if let Some(source) = &spec.kinesis_source {
            description = description.with(
                "Source",
                Value::map().with(
                    "KinesisStreamSourceDescription",
                    Value::map()
                        .with("KinesisStreamARN", source.stream_arn.as_str())
                        .with("RoleARN", source.role_arn.as_str())
                        .with("DeliveryStartTimestamp", Value::Timestamp(source.start_ms)),
                ),
            );
        }
        description =
            description.with("Destinations", Value::List(destinations)).with("HasMoreDestinations", false);
        Ok(Value::map().with("DeliveryStreamDescription", description))
    }

    fn list(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let limit = bounded(request, "Limit", 1, 10_000)?.unwrap_or(10) as usize;
        let wanted = request.str_opt("DeliveryStreamType")?;
        if let Some(kind) = wanted {
            if !["DirectPut", "KinesisStreamAsSource", "MSKAsSource", "DatabaseAsSource"].contains(&kind) {
                return Err(ApiError::validation(
                    "DeliveryStreamType",
                    kind,
                    "Member must satisfy enum value set: [DatabaseAsSource, DirectPut, KinesisStreamAsSource, MSKAsSource]",
                ));
            }
        }
        let after = request.str_opt("ExclusiveStartDeliveryStreamName")?;
        let mut names: Vec<String> = self
            .engine
            .list(ResourceKind::DeliveryStream)
            .into_iter()
            .filter(|meta| after.is_none_or(|after| meta.name() > after))
            .filter(|meta| {
                wanted.is_none_or(|wanted| {
                    Spec::decode(meta.spec()).is_ok_and(|spec| spec.delivery_type == wanted)
                })
            })
            .map(|meta| meta.name().to_owned())
            .collect();
        names.sort();
        let more = names.len() > limit;
        names.truncate(limit);
        Ok(Value::map()
            .with("DeliveryStreamNames", Value::List(names.into_iter().map(Value::from).collect()))
            .with("HasMoreDeliveryStreams", more))
    }

    async fn update_destination(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let given = request.str_req("CurrentDeliveryStreamVersionId")?;
        let destination_id = request.str_req("DestinationId")?;
        let _guard = self.control.lock().await;
        let (meta, mut spec) = self.meta(name)?;
        if given.parse::<u64>().ok() != Some(spec.version_id) {
            if given.is_empty() || given.len() > 50 || !given.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::validation(
                    "CurrentDeliveryStreamVersionId",
                    given,
                    "Member must satisfy regular expression pattern: [0-9]+",
                ));
            }
            return Err(ApiError::new(
                codes::CONCURRENT_MODIFICATION,
                format!(
                    "Cannot update firehose: {name} since the current version id: {} and specified version id: \
                     {given} do not match",
                    spec.version_id
                ),
            ));
        }
        check_destination_id(destination_id, "DestinationId")?;
        if destination_id != DESTINATION_ID {
            return Err(invalid(format!("Destination {destination_id} not found in Firehose {name}.")));
        }
        spec.destination = config::destination_of_update(&spec.destination, request)?;
        self.check_lambda(&spec.destination)?;
        spec.version_id += 1;
        self.engine
            .update_at(&key(name), Some(meta.version()), ResourceUpdate::Spec(spec.encode()))
            .await
            .map_err(error::engine)?;
        self.deliveries.reload(name);
        Ok(Value::map())
    }

    async fn encryption(&self, request: Request<'_>, start: bool) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let _guard = self.control.lock().await;
        let (meta, mut spec) = self.meta(name)?;
        if spec.kinesis_source.is_some() {
            return Err(invalid(format!(
                "Firehose {name} under account {ACCOUNT_ID} has a KinesisStreamAsSource source; its encryption \
                 is the source stream's"
            )));
        }
        let input = request.structure_opt("DeliveryStreamEncryptionConfigurationInput")?;
        spec.encryption = if start {
            Some(match input {
                Some(input) => self.encryption_input(input)?,
                None => {
                    if !self.config.encryption_at_rest {
                        return Err(ApiError::new(
                            codes::INVALID_KMS_RESOURCE,
                            "This server has no encryption key",
                        ));
                    }
                    ("AWS_OWNED_CMK".to_owned(), None)
                }
            })
        } else {
            None
        };
        let key_id = spec.encryption.as_ref().map(|(kind, arn)| engine_key_id(kind, arn.as_deref()));
        let resource = key(name);
        self.engine
            .update_at(&resource, Some(meta.version()), ResourceUpdate::Spec(spec.encode()))
            .await
            .map_err(error::engine)?;
        self.engine.update(&resource, ResourceUpdate::Encryption { key_id }).await.map_err(error::engine)?;
        Ok(Value::map())
    }

    // -------------------------------------------------------------------------------------
    // Records

    fn writable(&self, name: &str) -> Result<(), ApiError> {
        let (_, spec) = self.meta(name)?;
        if spec.kinesis_source.is_some() {
            return Err(invalid(
                "This operation is not permitted on KinesisStreamAsSource delivery stream type.",
            ));
        }
        match self.deliveries.state(name).map(|state| state.status()) {
            Some(Status::Deleting) => Err(not_found(name)),
            _ => Ok(()),
        }
    }

    fn encrypted(&self, name: &str) -> bool {
        self.meta(name).is_ok_and(|(_, spec)| spec.encryption.is_some())
    }

    fn count_incoming(&self, name: &str, records: u64, bytes: u64) {
        if let Some(state) = self.deliveries.state(name) {
            state.metrics.incoming_records.fetch_add(records, std::sync::atomic::Ordering::Relaxed);
            state.metrics.incoming_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    async fn put_record(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let record = request.structure_opt("Record")?.ok_or_else(|| value::missing("Record"))?;
        let data = record.blob_req("Data")?;
        if data.len() > RECORD_BYTES_MAX {
            return Err(too_large("record.data", data.len(), 1));
        }
        self.writable(name)?;
        let bytes = data.len() as u64;
        let appended =
            self.engine.append(&key(name), vec![buffer_record(data)]).await.map_err(error::engine)?;
        self.count_incoming(name, 1, bytes);
        let appended = appended.into_iter().next().ok_or_else(|| invalid("nothing was stored"))?;
        Ok(Value::map()
            .with("RecordId", record_id(appended.sequence))
            .with("Encrypted", self.encrypted(name)))
    }

    async fn put_record_batch(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let entries = request.list_req("Records")?;
        if entries.is_empty() || entries.len() > BATCH_RECORDS_MAX {
            return Err(ApiError::validation(
                "Records",
                &format!("{} records", entries.len()),
                "Member must have length less than or equal to 500 and greater than or equal to 1",
            ));
        }
        let mut records = Vec::with_capacity(entries.len());
        let mut total = 0usize;
        let mut oversized = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let data = Request::new(request.protocol, entry).blob_req("Data")?;
            if data.len() > RECORD_BYTES_MAX {
                oversized.push((index, data.len()));
            }
            total += data.len();
            records.push(buffer_record(data));
        }
        if let Some(&(index, size)) = oversized.first() {
            return Err(too_large(&format!("records.{}.member.data", index + 1), size, oversized.len()));
        }
        if total > BATCH_BYTES_MAX {
            return Err(invalid("Records size exceeds 4 MB limit"));
        }
        self.writable(name)?;
        let count = records.len() as u64;
        let outcomes = self.engine.append_each(&key(name), records).await.map_err(error::engine)?;
        self.count_incoming(name, count, total as u64);
        let mut failed = 0usize;
        let responses: Vec<Value> = outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(appended) => Value::map().with("RecordId", record_id(appended.sequence)),
                Err(error) => {
                    failed += 1;
                    // The shard's commit failed: the record is not stored and may be sent again.
                    let (code, message) = match error::engine(error).code {
                        codes::FIREHOSE_UNAVAILABLE => ("ServiceUnavailableException", "Slow down."),
                        _ => ("InternalFailure", "Internal service failure."),
                    };
                    Value::map().with("ErrorCode", code).with("ErrorMessage", message)
                }
            })
            .collect();
        Ok(Value::map()
            .with("FailedPutCount", failed)
            .with("Encrypted", self.encrypted(name))
            .with("RequestResponses", Value::List(responses)))
    }

    // -------------------------------------------------------------------------------------
    // Tags

    async fn tag(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let tags = parse_tags(request, "Tags")?.ok_or_else(|| value::missing("Tags"))?;
        let _guard = self.control.lock().await;
        let (meta, _) = self.meta(name)?;
        let mut keys: Vec<&str> = meta.tags().iter().map(|(key, _)| key.as_str()).collect();
        keys.extend(tags.iter().map(|(key, _)| key.as_str()));
        keys.sort_unstable();
        keys.dedup();
        if keys.len() > TAGS_MAX {
            return Err(ApiError::new(
                codes::LIMIT_EXCEEDED,
                format!(
                    "A delivery stream can have at most {TAGS_MAX} tags; this request would give it {}.",
                    keys.len()
                ),
            ));
        }
        self.engine.update(&key(name), ResourceUpdate::AddTags(tags)).await.map_err(error::engine)?;
        Ok(Value::map())
    }

    async fn untag(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let keys = request.list_req("TagKeys")?;
        if keys.is_empty() || keys.len() > TAGS_MAX {
            return Err(ApiError::validation(
                "TagKeys",
                &format!("{} keys", keys.len()),
                "Member must have length less than or equal to 50 and greater than or equal to 1",
            ));
        }
        let keys = keys
            .iter()
            .map(|key| match key {
                Value::Str(key) => Ok(key.clone()),
                other => Err(value::serialization(format!(
                    "TagKeys members must be strings, not {}",
                    other.kind()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let _guard = self.control.lock().await;
        self.meta(name)?;
        self.engine.update(&key(name), ResourceUpdate::RemoveTags(keys)).await.map_err(error::engine)?;
        Ok(Value::map())
    }

    fn list_tags(&self, request: Request<'_>) -> Result<Value, ApiError> {
        let name = stream_name(request)?;
        let limit = bounded(request, "Limit", 1, 50)?.unwrap_or(50) as usize;
        let after = request.str_opt("ExclusiveStartTagKey")?;
        let (meta, _) = self.meta(name)?;
        let mut tags: Vec<&(String, String)> =
            meta.tags().iter().filter(|(key, _)| after.is_none_or(|after| key.as_str() > after)).collect();
        tags.sort();
        let more = tags.len() > limit;
        tags.truncate(limit);
        let tags = tags
            .into_iter()
            .map(|(key, value)| Value::map().with("Key", key.as_str()).with("Value", value.as_str()))
            .collect();
        Ok(Value::map().with("Tags", Value::List(tags)).with("HasMoreTags", more))
    }
}

/// The key the engine encrypts a delivery stream's buffer with.
fn engine_key_id(key_type: &str, key_arn: Option<&str>) -> String {
    match (key_type, key_arn) {
        ("CUSTOMER_MANAGED_CMK", Some(arn)) => arn.to_owned(),
        _ => AWS_OWNED_KEY.to_owned(),
    }
}

/// A record in the delivery buffer (one shard: the key only has to be valid).
fn buffer_record(data: Vec<u8>) -> Record {
    Record::new("firehose".parse::<PartitionKey>().expect("a valid partition key"), data)
}

/// The record id PutRecord answers: opaque to clients; the buffer's sequence number.
fn record_id(sequence: millrace_core::SequenceNumber) -> String {
    format!("{:0>56}", sequence.to_string())
}

fn too_large(at: &str, size: usize, count: usize) -> ApiError {
    let _ = size;
    ApiError::new(
        codes::VALIDATION,
        format!(
            "{count} validation error{} detected: Value at '{at}' failed to satisfy constraint: Member must have \
             length less than or equal to {RECORD_BYTES_MAX}",
            if count == 1 { "" } else { "s" }
        ),
    )
}

/// `DeliveryStreamName`: 1–64 of `[a-zA-Z0-9_.-]`.
fn stream_name<'a>(request: Request<'a>) -> Result<&'a str, ApiError> {
    let name = request.str_req("DeliveryStreamName")?;
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        return Err(ApiError::validation(
            "DeliveryStreamName",
            name,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 1 and 64",
        ));
    }
    Ok(name)
}

fn check_destination_id(id: &str, member: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(member, id, "Member must satisfy regular expression pattern: [a-zA-Z0-9-]+"))
    }
}

fn bounded(request: Request<'_>, member: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(value) = request.int_opt(member)? else { return Ok(None) };
    if value < min || value > max {
        return Err(ApiError::validation(
            member,
            &value.to_string(),
            &format!("Member must have value between {min} and {max}"),
        ));
    }
    Ok(Some(value))
}

/// `Tags: [{Key, Value?}]`, 1–50 of them, keys 1–128 characters not starting `aws:`, values
/// at most 256.
fn parse_tags(request: Request<'_>, member: &str) -> Result<Option<Vec<(String, String)>>, ApiError> {
    let Some(list) = request.list_opt(member)? else { return Ok(None) };
    if list.is_empty() || list.len() > TAGS_MAX {
        return Err(ApiError::validation(
            member,
            &format!("{} tags", list.len()),
            "Member must have length less than or equal to 50 and greater than or equal to 1",
        ));
    }
    let mut tags = Vec::with_capacity(list.len());
    for (index, tag) in list.iter().enumerate() {
        let tag = Request::new(request.protocol, tag);
        let key = tag.str_req("Key")?;
        let value = tag.str_opt("Value")?.unwrap_or("");
        if key.is_empty() || key.chars().count() > 128 || key.starts_with("aws:") {
            return Err(ApiError::validation(
                &format!("{member}.{}.member.key", index + 1),
                key,
                "Member must have length between 1 and 128 and must not start with aws:",
            ));
        }
        if value.chars().count() > 256 {
            return Err(ApiError::validation(
                &format!("{member}.{}.member.value", index + 1),
                value,
                "Member must have length less than or equal to 256",
            ));
        }
        tags.push((key.to_owned(), value.to_owned()));
    }
    Ok(Some(tags))
}

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` to `NAME`.
fn kinesis_stream_of_arn(arn: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "kinesis", _, _, resource] => resource
            .strip_prefix("stream/")
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("KinesisStreamARN {arn} does not name a stream"))),
        _ => Err(ApiError::validation(
            "KinesisStreamSourceConfiguration.KinesisStreamARN",
            arn,
            "Member must satisfy regular expression pattern: arn:.*:kinesis:[a-zA-Z0-9\\-]+:\\d{12}:stream/[a-zA-Z0-9_.-]+",
        )),
    }
}

impl Service for FirehoseApi {
    fn name(&self) -> &'static str {
        "firehose"
    }

    fn signing_name(&self) -> &'static str {
        "firehose"
    }

    fn routing(&self) -> Routing {
        Routing::Target { prefix: TARGET_PREFIX }
    }

    fn call(self: Arc<Self>, call: Call) -> ReplyFuture {
        Box::pin(async move {
            let protocol = call.head.protocol;
            let operation = call.head.operation.clone().unwrap_or_default();
            let request_id = call.head.request_id.clone();
            Reply::target(protocol, self.handle(&operation, protocol, call.body.bytes(), &request_id).await)
        })
    }
}
