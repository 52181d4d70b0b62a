//! A delivery stream's configuration: the request's destination configuration checked as
//! AWS checks it and turned into the description DescribeDeliveryStream answers (every
//! default filled, as AWS fills it), kept in the catalog as the resource's spec document;
//! and the [`S3Plan`] the delivery worker runs from that description.
//!
//! The description is the single stored form: UpdateDestination merges its update into it
//! and checks the result again, so a stream never holds a configuration Create would refuse.

use super::error::invalid;
use super::key::{self, Compression};
use super::prefix::{self, Template};
use crate::aws::document::{self, Protocol, Request, Value};
use crate::aws::ApiError;

/// The only destination id a delivery stream has.
pub const DESTINATION_ID: &str = "destinationId-000000000001";

/// Destinations Millrace delivers to (named in the refusal of the others).
pub const SUPPORTED_DESTINATIONS: &str = "ExtendedS3DestinationConfiguration, S3DestinationConfiguration, \
     HttpEndpointDestinationConfiguration, AmazonopensearchserviceDestinationConfiguration, \
     ElasticsearchDestinationConfiguration, SplunkDestinationConfiguration";

/// Every destination member a request may carry, with whether it is served here.
const DESTINATIONS: [(&str, bool); 10] = [
    ("ExtendedS3DestinationConfiguration", true),
    ("S3DestinationConfiguration", true),
    ("HttpEndpointDestinationConfiguration", true),
    ("SplunkDestinationConfiguration", true),
    ("ElasticsearchDestinationConfiguration", true),
    ("AmazonopensearchserviceDestinationConfiguration", true),
    ("AmazonOpenSearchServerlessDestinationConfiguration", false),
    ("RedshiftDestinationConfiguration", false),
    ("SnowflakeDestinationConfiguration", false),
    ("IcebergDestinationConfiguration", false),
];

/// `SizeInMBs` default and range.
pub const SIZE_MB_DEFAULT: i64 = 5;
pub const SIZE_MB_MAX: i64 = 128;
/// `IntervalInSeconds` default and range.
pub const INTERVAL_S_DEFAULT: i64 = 300;
pub const INTERVAL_S_MAX: i64 = 900;

/// The kinds of destination served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    /// `ExtendedS3DestinationDescription` (the legacy S3 destination is stored as one).
    S3,
    /// `HttpEndpointDestinationDescription`, with its S3 backup under `S3Configuration` and
    /// the endpoint's access key, which Describe never shows.
    Http,
    /// `AmazonopensearchserviceDestinationDescription`: an OpenSearch (or Elasticsearch)
    /// cluster's bulk API at `ClusterEndpoint`, its S3 backup under `S3Configuration`.
    OpenSearch,
    /// `ElasticsearchDestinationDescription`: the same, named as the older API names it.
    Elasticsearch,
    /// `SplunkDestinationDescription`: a Splunk HTTP Event Collector with indexer
    /// acknowledgment, its S3 backup under `S3Configuration`.
    Splunk,
}

impl DestinationKind {
    /// The member DescribeDeliveryStream names it with.
    pub fn description_member(self) -> &'static str {
        match self {
            DestinationKind::S3 => "ExtendedS3DestinationDescription",
            DestinationKind::Http => "HttpEndpointDestinationDescription",
            DestinationKind::OpenSearch => "AmazonopensearchserviceDestinationDescription",
            DestinationKind::Elasticsearch => "ElasticsearchDestinationDescription",
            DestinationKind::Splunk => "SplunkDestinationDescription",
        }
    }
}

/// A destination as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub kind: DestinationKind,
    pub stored: Value,
}

impl Destination {
    /// Its entry in DescribeDeliveryStream's `Destinations`.
    pub fn describe(&self) -> Value {
        let entry = Value::map().with("DestinationId", DESTINATION_ID);
        match self.kind {
            DestinationKind::S3 => entry
                .with("S3DestinationDescription", legacy_description(&self.stored))
                .with("ExtendedS3DestinationDescription", self.stored.clone()),
            DestinationKind::Http
            | DestinationKind::OpenSearch
            | DestinationKind::Elasticsearch
            | DestinationKind::Splunk => {
                let Value::Map(members) = &self.stored else { return entry };
                let described: Vec<(String, Value)> = members
                    .iter()
                    .map(|(name, value)| match (name.as_str(), value) {
                        ("EndpointConfiguration", Value::Map(endpoint)) => (
                            name.clone(),
                            Value::Map(
                                endpoint.iter().filter(|(key, _)| key != "AccessKey").cloned().collect(),
                            ),
                        ),
                        ("S3Configuration", backup) => {
                            ("S3DestinationDescription".to_owned(), legacy_description(backup))
                        }
                        _ => (name.clone(), value.clone()),
                    })
                    .collect();
                entry.with(self.kind.description_member(), Value::Map(described))
            }
        }
    }
}

/// The one destination of a create request, as it is stored.
pub fn destination_of_create(request: Request<'_>) -> Result<Destination, ApiError> {
    let given: Vec<&str> =
        DESTINATIONS.iter().map(|(name, _)| *name).filter(|name| request.has(name)).collect();
    match given.as_slice() {
        [] => Err(invalid("Exactly one destination configuration is supported for a Firehose")),
        [one] => {
            let supported = DESTINATIONS.iter().any(|(name, ok)| name == one && *ok);
            if !supported {
                return Err(invalid(format!(
                    "{one} is not supported by this server; the supported destinations are {SUPPORTED_DESTINATIONS}"
                )));
            }
            let config = request.structure_opt(one)?.expect("present");
            let base = document::lower_first(one);
            Ok(match *one {
                "HttpEndpointDestinationConfiguration" => {
                    Destination { kind: DestinationKind::Http, stored: http_endpoint(config, &base)? }
                }
                "AmazonopensearchserviceDestinationConfiguration" => {
                    Destination { kind: DestinationKind::OpenSearch, stored: opensearch(config, &base)? }
                }
                "ElasticsearchDestinationConfiguration" => {
                    Destination { kind: DestinationKind::Elasticsearch, stored: opensearch(config, &base)? }
                }
                "SplunkDestinationConfiguration" => {
                    Destination { kind: DestinationKind::Splunk, stored: splunk(config, &base)? }
                }
                _ => Destination { kind: DestinationKind::S3, stored: extended_s3(config, &base)? },
            })
        }
        _ => Err(invalid("Exactly one destination configuration is supported for a Firehose")),
    }
}

/// UpdateDestination's update merged into the stored destination, then checked as at
/// create. `ExtendedS3DestinationUpdate` and the legacy `S3DestinationUpdate` update an S3
/// destination, `HttpEndpointDestinationUpdate` an HTTP endpoint (its `S3Update` the backup).
pub fn destination_of_update(stored: &Destination, request: Request<'_>) -> Result<Destination, ApiError> {
    const UPDATES: [(&str, DestinationKind); 6] = [
        ("ExtendedS3DestinationUpdate", DestinationKind::S3),
        ("S3DestinationUpdate", DestinationKind::S3),
        ("HttpEndpointDestinationUpdate", DestinationKind::Http),
        ("AmazonopensearchserviceDestinationUpdate", DestinationKind::OpenSearch),
        ("ElasticsearchDestinationUpdate", DestinationKind::Elasticsearch),
        ("SplunkDestinationUpdate", DestinationKind::Splunk),
    ];
    for other in [
        "AmazonOpenSearchServerlessDestinationUpdate",
        "RedshiftDestinationUpdate",
        "SnowflakeDestinationUpdate",
        "IcebergDestinationUpdate",
    ] {
        if request.has(other) {
            return Err(invalid(format!(
                "{other} is not supported by this server; the supported destinations are {SUPPORTED_DESTINATIONS}"
            )));
        }
    }
    let given: Vec<&(&str, DestinationKind)> = UPDATES.iter().filter(|(name, _)| request.has(name)).collect();
    let (member, kind) = match given.as_slice() {
        [one] => **one,
        [] => return Err(invalid("UpdateDestination needs exactly one destination update")),
        _ => return Err(invalid("UpdateDestination takes exactly one destination update")),
    };
    if kind != stored.kind {
        return Err(invalid(format!(
            "{member} does not match the delivery stream's destination; this server does not change a \
             destination's type (delete and create the delivery stream instead)"
        )));
    }
    let update = request.structure_opt(member)?.expect("present");
    let base = document::lower_first(member);
    let mut merged = stored.stored.clone();
    match kind {
        DestinationKind::S3 => {
            let enabled = |value: &Value| {
                value.get("DynamicPartitioningConfiguration").and_then(|section| section.get("Enabled"))
                    == Some(&Value::Bool(true))
            };
            let before = enabled(&stored.stored);
            let mut update = update.value.clone();
            if let Value::Map(members) = &mut update {
                for (name, _) in members.iter_mut() {
                    if name == "S3BackupUpdate" {
                        *name = "S3BackupDescription".to_owned();
                    }
                }
            }
            let backed_up = stored.stored.get("S3BackupMode") == Some(&Value::from("Enabled"));
            merge(&mut merged, &update);
            if backed_up && merged.get("S3BackupMode") != Some(&Value::from("Enabled")) {
                return Err(invalid("S3 backup cannot be disabled once it is enabled"));
            }
            if enabled(&merged) != before {
                return Err(invalid(if before {
                    "Dynamic partitioning cannot be disabled once it is enabled"
                } else {
                    "Dynamic partitioning can only be enabled when the delivery stream is created"
                }));
            }
            extended_s3(Request::new(Protocol::Json, &merged), &base)
                .map(|stored| Destination { kind, stored })
        }
        DestinationKind::Http
        | DestinationKind::OpenSearch
        | DestinationKind::Elasticsearch
        | DestinationKind::Splunk => {
            let mut update = update.value.clone();
            if let Value::Map(members) = &mut update {
                for (name, _) in members.iter_mut() {
                    if name == "S3Update" {
                        *name = "S3Configuration".to_owned();
                    }
                }
            }
            merge(&mut merged, &update);
            let merged = Request::new(Protocol::Json, &merged);
            match kind {
                DestinationKind::Http => http_endpoint(merged, &base),
                DestinationKind::Splunk => splunk(merged, &base),
                _ => opensearch(merged, &base),
            }
            .map(|stored| Destination { kind, stored })
        }
    }
}

/// Fields given replace fields stored; structures merge member by member.
fn merge(into: &mut Value, update: &Value) {
    let (Value::Map(stored), Value::Map(given)) = (into, update) else { return };
    for (name, value) in given {
        match stored.iter_mut().find(|(existing, _)| existing == name) {
            Some((_, existing @ Value::Map(_))) if matches!(value, Value::Map(_)) => merge(existing, value),
            Some((_, existing)) => *existing = value.clone(),
            None => stored.push((name.clone(), value.clone())),
        }
    }
}

fn field(base: &str, member: &str) -> String {
    format!("{base}.{}", document::lower_first(member))
}

fn validation(at: &str, constraint: &str) -> ApiError {
    ApiError::new(
        crate::aws::codes::VALIDATION,
        format!("1 validation error detected: Value at '{at}' failed to satisfy constraint: {constraint}"),
    )
}

/// The bucket named by `arn:aws:s3:::BUCKET` (`arn:.*:s3:::[\w\.\-]{1,255}`, and a name S3
/// accepts: 3–63 characters, no `..`, not an address, so it is also a safe folder name).
pub fn bucket_of(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let (_partition, rest) = rest.split_once(':')?;
    let bucket = rest.strip_prefix("s3:::")?;
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..");
    ok.then_some(bucket)
}

fn role_ok(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:") else { return false };
    let Some((_partition, rest)) = rest.split_once(':') else { return false };
    let Some(rest) = rest.strip_prefix("iam::") else { return false };
    let Some((account, role)) = rest.split_once(":role/") else { return false };
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !role.is_empty() && arn.len() <= 512
}

/// An S3 destination configuration (extended or legacy) to its description.
fn extended_s3(config: Request<'_>, base: &str) -> Result<Value, ApiError> {
    let role = config
        .str_opt("RoleARN")?
        .ok_or_else(|| validation(&field(base, "RoleARN"), "Member must not be null"))?;
    if !role_ok(role) {
        return Err(validation(
            &field(base, "RoleARN"),
            "Member must satisfy regular expression pattern: arn:.*:iam::\\d{12}:role/[a-zA-Z_0-9+=,.@\\-_/]+",
        ));
    }
    let bucket_arn = config
        .str_opt("BucketARN")?
        .ok_or_else(|| validation(&field(base, "BucketARN"), "Member must not be null"))?;
    if bucket_of(bucket_arn).is_none() {
        return Err(validation(
            &field(base, "BucketARN"),
            "Member must satisfy regular expression pattern: arn:.*:s3:::[\\w\\.\\-]{1,255} (and name a valid bucket)",
        ));
    }
    let prefix = config.str_opt("Prefix")?;
    let error_prefix = config.str_opt("ErrorOutputPrefix")?;
    let (template, _) =
        prefix::check_pair(prefix, error_prefix).map_err(|error| invalid(error.to_string()))?;
    let dynamic = match config.structure_opt("DynamicPartitioningConfiguration")? {
        Some(section) => section.bool_opt("Enabled")?.unwrap_or(false),
        None => false,
    };
    let conversion = match config.structure_opt("DataFormatConversionConfiguration")? {
        Some(section) if section.bool_opt("Enabled")?.unwrap_or(true) => {
            Some(conversion_plan(section, &field(base, "DataFormatConversionConfiguration"))?)
        }
        _ => None,
    };
    let hints = if (dynamic || conversion.is_some()) && !config.has("BufferingHints") {
        (DYNAMIC_SIZE_MB_DEFAULT, INTERVAL_S_DEFAULT)
    } else {
        hints(config, base, SIZE_MB_MAX)?
    };
    if conversion.is_some() && hints.0 < DYNAMIC_SIZE_MB_MIN {
        return Err(invalid(
            "BufferingHints.SizeInMBs must be at least 64 when data format conversion is enabled.",
        ));
    }
    let compression = Compression::parse(
        config.str_opt("CompressionFormat")?.unwrap_or("UNCOMPRESSED"),
        &field(base, "CompressionFormat"),
    )
    .map_err(|message| ApiError::new(crate::aws::codes::VALIDATION, message))?;
    let encryption = match config.member("EncryptionConfiguration") {
        Some(value @ Value::Map(_)) => value.clone(),
        _ => Value::map().with("NoEncryptionConfig", "NoEncryption"),
    };
    let logging = logging_of(config);
    let (processing, parsed) = match config.structure_opt("ProcessingConfiguration")? {
        None => (None, Processors::default()),
        Some(processing) => {
            let parsed = processors(processing, &format!("{base}.processingConfiguration"))?;
            (Some(processing.value.clone()), parsed)
        }
    };
    check_partitioning(dynamic, &template, error_prefix, hints, &parsed)?;
    let backup_mode = config.str_opt("S3BackupMode")?.unwrap_or("Disabled");
    let backup = match backup_mode {
        "Disabled" => None,
        "Enabled" => {
            let section = config
                .structure_opt("S3BackupConfiguration")?
                .or(config.structure_opt("S3BackupDescription")?)
                .ok_or_else(|| invalid("S3BackupConfiguration is required when S3BackupMode is Enabled"))?;
            Some(extended_s3(section, &field(base, "S3BackupConfiguration"))?)
        }
        _ => {
            return Err(validation(
                &field(base, "S3BackupMode"),
                "Member must satisfy enum value set: [Disabled, Enabled]",
            ))
        }
    };
    if conversion.is_some() && compression != Compression::Uncompressed {
        return Err(invalid(
            "CompressionFormat must be UNCOMPRESSED when data format conversion is enabled; the Parquet \
             serializer compresses (ParquetSerDe.Compression)",
        ));
    }
    let extension = match config.str_opt("FileExtension")? {
        Some(text) => key::file_extension(text, &field(base, "FileExtension"))
            .map_err(|message| ApiError::new(crate::aws::codes::VALIDATION, message))?,
        None => None,
    };
    if let Some(zone) = config.str_opt("CustomTimeZone")? {
        if zone.chars().count() > 50 {
            return Err(validation(
                &field(base, "CustomTimeZone"),
                "Member must have length less than or equal to 50",
            ));
        }
        time_zone(zone)?;
    }

    let mut description = Value::map().with("RoleARN", role).with("BucketARN", bucket_arn);
    description = description.with_opt("Prefix", prefix).with_opt("ErrorOutputPrefix", error_prefix);
    description = description
        .with("BufferingHints", Value::map().with("SizeInMBs", hints.0).with("IntervalInSeconds", hints.1))
        .with("CompressionFormat", compression.as_str())
        .with("EncryptionConfiguration", encryption)
        .with("CloudWatchLoggingOptions", logging)
        .with_opt("ProcessingConfiguration", processing)
        .with("S3BackupMode", backup_mode)
        .with_opt("S3BackupDescription", backup.as_ref().map(legacy_description));
    for member in ["DataFormatConversionConfiguration", "DynamicPartitioningConfiguration"] {
        if let Some(value) = config.member(member) {
            description = description.with(member, value.clone());
        }
    }
    description = description.with_opt("FileExtension", extension);
    if let Some(zone) = config.str_opt("CustomTimeZone")? {
        description = description.with("CustomTimeZone", zone);
    }
    Ok(description)
}

/// `BufferingHints` (both or neither), defaulted to 5 MiB / 300 s.
fn hints(config: Request<'_>, base: &str, size_max: i64) -> Result<(i64, i64), ApiError> {
    let Some(hints) = config.structure_opt("BufferingHints")? else {
        return Ok((SIZE_MB_DEFAULT, INTERVAL_S_DEFAULT));
    };
    let size = hints.int_opt("SizeInMBs")?;
    let interval = hints.int_opt("IntervalInSeconds")?;
    let (size, interval) = match (size, interval) {
        (Some(size), Some(interval)) => (size, interval),
        (None, None) => (SIZE_MB_DEFAULT, INTERVAL_S_DEFAULT),
        _ => {
            return Err(invalid(
                "If you specify a value for SizeInMBs, you must also specify a value for IntervalInSeconds, and vice versa.",
            ))
        }
    };
    if !(1..=size_max).contains(&size) {
        return Err(validation(
            &format!("{base}.bufferingHints.sizeInMBs"),
            &format!("Member must have value between 1 and {size_max}"),
        ));
    }
    if !(0..=INTERVAL_S_MAX).contains(&interval) {
        return Err(validation(
            &format!("{base}.bufferingHints.intervalInSeconds"),
            &format!("Member must have value between 0 and {INTERVAL_S_MAX}"),
        ));
    }
    Ok((size, interval))
}

/// `SizeInMBs` with dynamic partitioning: default and minimum; the interval's minimum.
pub const DYNAMIC_SIZE_MB_DEFAULT: i64 = 128;
pub const DYNAMIC_SIZE_MB_MIN: i64 = 64;
pub const DYNAMIC_INTERVAL_S_MIN: i64 = 60;

/// AWS's create-time rules for dynamic partitioning (`net/FIREHOSE-NOTES.md` §1.6).
fn check_partitioning(
    dynamic: bool,
    prefix: &Template,
    error_prefix: Option<&str>,
    (size, interval): (i64, i64),
    processors: &Processors,
) -> Result<(), ApiError> {
    let query_keys: Vec<&str> = prefix.query_keys().collect();
    let uses_keys = !query_keys.is_empty() || prefix.uses_lambda_keys();
    if !dynamic {
        if uses_keys {
            return Err(invalid(
                "Dynamic Partitioning namespaces (partitionKeyFromQuery, partitionKeyFromLambda) can only be used \
                 in the S3 Prefix when Dynamic Partitioning is enabled",
            ));
        }
        return Ok(());
    }
    if processors.lambda.is_none() && processors.metadata_query.is_none() {
        return Err(invalid("Processing Configuration is not enabled when DataPartitioning is enabled"));
    }
    if !uses_keys {
        return Err(invalid(
            "S3 Prefix should contain Dynamic Partitioning namespaces when Dynamic Partitioning is enabled",
        ));
    }
    if prefix.uses_lambda_keys() && processors.lambda.is_none() {
        return Err(invalid(
            "Lambda should be present when S3 Prefix contains keys from partitionKeyFromLambda namespace",
        ));
    }
    if let Some(query) = &processors.metadata_query {
        if let Some(defined) = super::partition::top_level_keys(query) {
            if let Some(missing) = query_keys.iter().find(|key| !defined.iter().any(|name| name == *key)) {
                return Err(invalid(format!(
                    "partitionKeyFromQuery:{missing} in the S3 Prefix is not a key of the MetadataExtractionQuery"
                )));
            }
        }
    } else if !query_keys.is_empty() {
        return Err(invalid("MetadataExtraction processor should be present when S3 Prefix has partitionKeyFromQuery namespace"));
    }
    if error_prefix.is_none_or(str::is_empty) {
        return Err(invalid("ErrorOutputPrefix is required when Dynamic Partitioning is enabled"));
    }
    if size < DYNAMIC_SIZE_MB_MIN {
        return Err(invalid(
            "BufferingHints.SizeInMBs must be at least 64 when Dynamic Partitioning is enabled.",
        ));
    }
    if interval < DYNAMIC_INTERVAL_S_MIN {
        return Err(invalid(
            "BufferingHints.IntervalInSeconds must be at least 60 seconds when Dynamic Partitioning is enabled.",
        ));
    }
    Ok(())
}

/// `HttpEndpointBufferingHints.SizeInMBs` at most.
pub const HTTP_SIZE_MB_MAX: i64 = 64;
/// `RetryOptions.DurationInSeconds` default and maximum.
pub const HTTP_RETRY_S_DEFAULT: i64 = 300;
pub const HTTP_RETRY_S_MAX: i64 = 7200;

/// An HTTP endpoint destination configuration to what is stored (its description, with the
/// access key kept and the S3 backup's description under `S3Configuration`).
fn http_endpoint(config: Request<'_>, base: &str) -> Result<Value, ApiError> {
    let endpoint = config
        .structure_opt("EndpointConfiguration")?
        .ok_or_else(|| validation(&field(base, "EndpointConfiguration"), "Member must not be null"))?;
    let url = endpoint
        .str_opt("Url")?
        .ok_or_else(|| validation(&format!("{base}.endpointConfiguration.url"), "Member must not be null"))?;
    if url.is_empty() || url.len() > 1000 || super::http::Target::parse(url).is_err() {
        return Err(validation(
            &format!("{base}.endpointConfiguration.url"),
            "Member must satisfy regular expression pattern: https?://.* and have length between 1 and 1000",
        ));
    }
    let endpoint_name = endpoint.str_opt("Name")?;
    if endpoint_name.is_some_and(|name| name.is_empty() || name.chars().count() > 256) {
        return Err(validation(
            &format!("{base}.endpointConfiguration.name"),
            "Member must have length between 1 and 256",
        ));
    }
    let access_key = endpoint.str_opt("AccessKey")?;
    if access_key.is_some_and(|key| key.len() > 4096) {
        return Err(validation(
            &format!("{base}.endpointConfiguration.accessKey"),
            "Member must have length less than or equal to 4096",
        ));
    }
    let hints = hints(config, base, HTTP_SIZE_MB_MAX)?;
    let logging = logging_of(config);
    let mut request_config = Value::map();
    let (encoding, attributes) = match config.structure_opt("RequestConfiguration")? {
        Some(request) => {
            (request.str_opt("ContentEncoding")?.unwrap_or("NONE"), request.list_opt("CommonAttributes")?)
        }
        None => ("NONE", None),
    };
    if !matches!(encoding, "NONE" | "GZIP") {
        return Err(validation(
            &format!("{base}.requestConfiguration.contentEncoding"),
            "Member must satisfy enum value set: [NONE, GZIP]",
        ));
    }
    request_config = request_config.with("ContentEncoding", encoding);
    if let Some(attributes) = attributes {
        if attributes.len() > 50 {
            return Err(validation(
                &format!("{base}.requestConfiguration.commonAttributes"),
                "Member must have length less than or equal to 50",
            ));
        }
        let mut checked = Vec::with_capacity(attributes.len());
        for attribute in attributes {
            let attribute = Request::new(config.protocol, attribute);
            let name = attribute.str_req("AttributeName")?;
            let value = attribute.str_req("AttributeValue")?;
            if name.is_empty() || name.chars().count() > 256 || value.chars().count() > 1024 {
                return Err(validation(
                    &format!("{base}.requestConfiguration.commonAttributes"),
                    "AttributeName must have length between 1 and 256 and AttributeValue at most 1024",
                ));
            }
            checked.push(Value::map().with("AttributeName", name).with("AttributeValue", value));
        }
        request_config = request_config.with("CommonAttributes", Value::List(checked));
    }
    let processing = processing_of(config, base)?;
    let role = config.str_opt("RoleARN")?;
    if role.is_some_and(|role| !role_ok(role)) {
        return Err(validation(
            &field(base, "RoleARN"),
            "Member must satisfy regular expression pattern: arn:.*:iam::\\d{12}:role/[a-zA-Z_0-9+=,.@\\-_/]+",
        ));
    }
    let retry = retry_of(config, base, HTTP_RETRY_S_DEFAULT)?;
    let backup_mode = config.str_opt("S3BackupMode")?.unwrap_or("FailedDataOnly");
    if !matches!(backup_mode, "FailedDataOnly" | "AllData") {
        return Err(validation(
            &field(base, "S3BackupMode"),
            "Member must satisfy enum value set: [FailedDataOnly, AllData]",
        ));
    }
    let backup = backup_of(config, base)?;
    let endpoint =
        Value::map().with("Url", url).with_opt("Name", endpoint_name).with_opt("AccessKey", access_key);
    Ok(Value::map()
        .with("EndpointConfiguration", endpoint)
        .with("BufferingHints", Value::map().with("SizeInMBs", hints.0).with("IntervalInSeconds", hints.1))
        .with("CloudWatchLoggingOptions", logging)
        .with("RequestConfiguration", request_config)
        .with_opt("ProcessingConfiguration", processing)
        .with_opt("RoleARN", role)
        .with("RetryOptions", Value::map().with("DurationInSeconds", retry))
        .with("S3BackupMode", backup_mode)
        .with("S3Configuration", backup))
}

/// `IndexRotationPeriod` values; the default rotates daily.
const ROTATIONS: [&str; 5] = ["NoRotation", "OneHour", "OneDay", "OneWeek", "OneMonth"];
/// OpenSearch buffering: `SizeInMBs` at most.
pub const OPENSEARCH_SIZE_MB_MAX: i64 = 100;

/// An OpenSearch (or Elasticsearch) destination configuration to what is stored.
fn opensearch(config: Request<'_>, base: &str) -> Result<Value, ApiError> {
    let role = config
        .str_opt("RoleARN")?
        .ok_or_else(|| validation(&field(base, "RoleARN"), "Member must not be null"))?;
    if !role_ok(role) {
        return Err(validation(
            &field(base, "RoleARN"),
            "Member must satisfy regular expression pattern: arn:.*:iam::\\d{12}:role/[a-zA-Z_0-9+=,.@\\-_/]+",
        ));
    }
    let endpoint = config.str_opt("ClusterEndpoint")?;
    match (config.str_opt("DomainARN")?, endpoint) {
        (Some(_), Some(_)) => return Err(invalid("Specify either DomainARN or ClusterEndpoint, not both")),
        (Some(domain), None) => {
            return Err(invalid(format!(
                "DomainARN {domain} names an Amazon OpenSearch Service domain, which this server cannot reach; give \
                 the cluster's URL as ClusterEndpoint (http:// or https://)"
            )))
        }
        (None, None) => return Err(invalid("Either DomainARN or ClusterEndpoint is required")),
        (None, Some(url)) => {
            if url.len() > 512 || super::http::Target::parse(url).is_err() {
                return Err(validation(
                    &field(base, "ClusterEndpoint"),
                    "Member must satisfy regular expression pattern: https?://.* and have length at most 512",
                ));
            }
        }
    }
    let index = config
        .str_opt("IndexName")?
        .ok_or_else(|| validation(&field(base, "IndexName"), "Member must not be null"))?;
    if index.is_empty()
        || index.chars().count() > 80
        || index.starts_with(['_', '-', '+'])
        || index != index.to_lowercase()
        || index.contains([' ', ',', '"', '*', '\\', '<', '>', '|', '?', '/', '#'])
    {
        return Err(validation(
            &field(base, "IndexName"),
            "Member must be 1-80 characters, lowercase, without spaces or ,\"*\\<>|?/#, not starting with _ - +",
        ));
    }
    let type_name = config.str_opt("TypeName")?.filter(|name| !name.is_empty());
    let rotation = config.str_opt("IndexRotationPeriod")?.unwrap_or("OneDay");
    if !ROTATIONS.contains(&rotation) {
        return Err(validation(
            &field(base, "IndexRotationPeriod"),
            "Member must satisfy enum value set: [NoRotation, OneHour, OneDay, OneWeek, OneMonth]",
        ));
    }
    let hints = hints(config, base, OPENSEARCH_SIZE_MB_MAX)?;
    let retry = retry_of(config, base, HTTP_RETRY_S_DEFAULT)?;
    let backup_mode = config.str_opt("S3BackupMode")?.unwrap_or("FailedDocumentsOnly");
    if !matches!(backup_mode, "FailedDocumentsOnly" | "AllDocuments") {
        return Err(validation(
            &field(base, "S3BackupMode"),
            "Member must satisfy enum value set: [FailedDocumentsOnly, AllDocuments]",
        ));
    }
    let ids = match config.structure_opt("DocumentIdOptions")? {
        Some(options) => options.str_req("DefaultDocumentIdFormat")?,
        None => "FIREHOSE_DEFAULT",
    };
    if !matches!(ids, "FIREHOSE_DEFAULT" | "NO_DOCUMENT_ID") {
        return Err(validation(
            &format!("{base}.documentIdOptions.defaultDocumentIdFormat"),
            "Member must satisfy enum value set: [FIREHOSE_DEFAULT, NO_DOCUMENT_ID]",
        ));
    }
    let processing = processing_of(config, base)?;
    let logging = logging_of(config);
    let backup = backup_of(config, base)?;
    Ok(Value::map()
        .with("RoleARN", role)
        .with_opt("ClusterEndpoint", endpoint)
        .with("IndexName", index)
        .with_opt("TypeName", type_name)
        .with("IndexRotationPeriod", rotation)
        .with("BufferingHints", Value::map().with("SizeInMBs", hints.0).with("IntervalInSeconds", hints.1))
        .with("RetryOptions", Value::map().with("DurationInSeconds", retry))
        .with("S3BackupMode", backup_mode)
        .with("S3Configuration", backup)
        .with_opt("ProcessingConfiguration", processing)
        .with("CloudWatchLoggingOptions", logging)
        .with("DocumentIdOptions", Value::map().with("DefaultDocumentIdFormat", ids)))
}

/// Splunk buffering: `SizeInMBs` at most, and the interval's default and maximum.
pub const SPLUNK_SIZE_MB_MAX: i64 = 5;
pub const SPLUNK_INTERVAL_S_MAX: i64 = 60;
/// `HECAcknowledgmentTimeoutInSeconds` range and default; `RetryOptions` default.
pub const SPLUNK_ACK_TIMEOUT_S: (i64, i64) = (180, 600);
pub const SPLUNK_RETRY_S_DEFAULT: i64 = 3600;

/// A Splunk destination configuration to what is stored.
fn splunk(config: Request<'_>, base: &str) -> Result<Value, ApiError> {
    let endpoint = config
        .str_opt("HECEndpoint")?
        .ok_or_else(|| validation(&field(base, "HECEndpoint"), "Member must not be null"))?;
    if endpoint.len() > 2048 || super::http::Target::parse(endpoint).is_err() {
        return Err(validation(
            &field(base, "HECEndpoint"),
            "Member must be an http:// or https:// URL of at most 2048 characters",
        ));
    }
    let endpoint_type = config
        .str_opt("HECEndpointType")?
        .ok_or_else(|| validation(&field(base, "HECEndpointType"), "Member must not be null"))?;
    if !matches!(endpoint_type, "Raw" | "Event") {
        return Err(validation(
            &field(base, "HECEndpointType"),
            "Member must satisfy enum value set: [Raw, Event]",
        ));
    }
    if config.has("SecretsManagerConfiguration") {
        return Err(invalid(
            "SecretsManagerConfiguration is not supported by this server; give the HECToken",
        ));
    }
    let token = config.str_opt("HECToken")?.filter(|token| !token.is_empty()).ok_or_else(|| {
        invalid("HECToken is required (this server has no Secrets Manager to read it from)")
    })?;
    if token.len() > 2048 {
        return Err(validation(
            &field(base, "HECToken"),
            "Member must have length less than or equal to 2048",
        ));
    }
    let ack_timeout = config.int_opt("HECAcknowledgmentTimeoutInSeconds")?.unwrap_or(SPLUNK_ACK_TIMEOUT_S.0);
    if !(SPLUNK_ACK_TIMEOUT_S.0..=SPLUNK_ACK_TIMEOUT_S.1).contains(&ack_timeout) {
        return Err(validation(
            &field(base, "HECAcknowledgmentTimeoutInSeconds"),
            "Member must have value between 180 and 600",
        ));
    }
    let hints = if config.has("BufferingHints") {
        let hints = hints(config, base, SPLUNK_SIZE_MB_MAX)?;
        if hints.1 > SPLUNK_INTERVAL_S_MAX {
            return Err(validation(
                &format!("{base}.bufferingHints.intervalInSeconds"),
                "Member must have value between 0 and 60",
            ));
        }
        hints
    } else {
        (SPLUNK_SIZE_MB_MAX, SPLUNK_INTERVAL_S_MAX)
    };
    let retry = retry_of(config, base, SPLUNK_RETRY_S_DEFAULT)?;
    let backup_mode = config.str_opt("S3BackupMode")?.unwrap_or("FailedEventsOnly");
    if !matches!(backup_mode, "FailedEventsOnly" | "AllEvents") {
        return Err(validation(
            &field(base, "S3BackupMode"),
            "Member must satisfy enum value set: [FailedEventsOnly, AllEvents]",
        ));
    }
    let processing = processing_of(config, base)?;
    let logging = logging_of(config);
    let backup = backup_of(config, base)?;
    Ok(Value::map()
        .with("HECEndpoint", endpoint)
        .with("HECEndpointType", endpoint_type)
        .with("HECToken", token)
        .with("HECAcknowledgmentTimeoutInSeconds", ack_timeout)
        .with("S3BackupMode", backup_mode)
        .with("S3Configuration", backup)
        .with_opt("ProcessingConfiguration", processing)
        .with("CloudWatchLoggingOptions", logging)
        .with("RetryOptions", Value::map().with("DurationInSeconds", retry))
        .with("BufferingHints", Value::map().with("SizeInMBs", hints.0).with("IntervalInSeconds", hints.1)))
}

/// What the delivery worker needs of a Splunk HTTP Event Collector.
#[derive(Debug)]
pub struct SplunkPlan {
    /// `{HECEndpoint}/services/collector/raw` or `/event`, and `/services/collector/ack`.
    pub send_url: String,
    pub ack_url: String,
    pub token: String,
    pub ack_timeout_ms: i64,
    pub size_bytes: usize,
    pub interval_ms: i64,
    pub retry_ms: i64,
    pub all_events_backup: bool,
    pub processors: Processors,
    pub backup: S3Plan,
}

/// What the delivery worker needs of an OpenSearch cluster.
#[derive(Debug)]
pub struct OpenSearchPlan {
    /// `{ClusterEndpoint}/_bulk`.
    pub bulk_url: String,
    pub index: String,
    pub type_name: Option<String>,
    pub rotation: &'static str,
    pub size_bytes: usize,
    pub interval_ms: i64,
    pub retry_ms: i64,
    pub all_documents_backup: bool,
    /// FIREHOSE_DEFAULT: each document's id derives from its record, so that a retry
    /// overwrites instead of duplicating.
    pub document_ids: bool,
    pub processors: Processors,
    pub backup: S3Plan,
}

impl OpenSearchPlan {
    /// The index a record arriving at `arrival_ms` goes to: the name with its rotation's
    /// suffix (UTC), as Firehose appends it.
    pub fn index_for(&self, arrival_ms: i64) -> String {
        let pattern = match self.rotation {
            "OneHour" => "-yyyy-MM-dd-HH",
            "OneDay" => "-yyyy-MM-dd",
            "OneMonth" => "-yyyy-MM",
            "OneWeek" => {
                let days = arrival_ms.div_euclid(86_400_000);
                // ISO week: the Thursday of the week decides its year.
                let weekday = (days + 3).rem_euclid(7); // 0 = Monday
                let thursday = days - weekday + 3;
                let (year, _, _) = crate::aws::sigv4::civil_from_days(thursday);
                let first = crate::aws::sigv4::days_from_civil(year, 1, 4);
                let first_monday = first - (first + 3).rem_euclid(7);
                let week = (days - weekday - first_monday) / 7 + 1;
                return format!("{}-{year}-w{week}", self.index);
            }
            _ => return self.index.clone(),
        };
        let suffix = super::prefix::DatePattern::parse(&pattern.replace('-', "'-'"))
            .map(|pattern| pattern.render(arrival_ms))
            .unwrap_or_default();
        format!("{}{suffix}", self.index)
    }
}

/// `ProcessingConfiguration`, its processors checked, kept as sent.
fn processing_of(config: Request<'_>, base: &str) -> Result<Option<Value>, ApiError> {
    match config.structure_opt("ProcessingConfiguration")? {
        None => Ok(None),
        Some(processing) => {
            processors(processing, &format!("{base}.processingConfiguration"))?;
            Ok(Some(processing.value.clone()))
        }
    }
}

/// `CloudWatchLoggingOptions` as sent, or AWS's default `{"Enabled": false}`.
fn logging_of(config: Request<'_>) -> Value {
    match config.member("CloudWatchLoggingOptions") {
        Some(value @ Value::Map(_)) => value.clone(),
        _ => Value::map().with("Enabled", false),
    }
}

/// `S3Configuration`, the S3 backup every non-S3 destination needs, checked as an S3
/// destination.
fn backup_of(config: Request<'_>, base: &str) -> Result<Value, ApiError> {
    let backup = config
        .structure_opt("S3Configuration")?
        .ok_or_else(|| validation(&field(base, "S3Configuration"), "Member must not be null"))?;
    extended_s3(backup, &field(base, "S3Configuration"))
}

/// `RetryOptions.DurationInSeconds`, 0–7200, or the destination's default.
fn retry_of(config: Request<'_>, base: &str, default: i64) -> Result<i64, ApiError> {
    let retry = match config.structure_opt("RetryOptions")? {
        Some(options) => options.int_opt("DurationInSeconds")?.unwrap_or(default),
        None => default,
    };
    if !(0..=HTTP_RETRY_S_MAX).contains(&retry) {
        return Err(validation(
            &format!("{base}.retryOptions.durationInSeconds"),
            &format!("Member must have value between 0 and {HTTP_RETRY_S_MAX}"),
        ));
    }
    Ok(retry)
}

/// The processors this server runs, with their parameters checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Processors {
    /// `AppendDelimiterToRecord`: bytes after each record.
    pub delimiter: Option<Vec<u8>>,
    /// `RecordDeAggregation`: records that hold several (KPL aggregation is undone for a
    /// Kinesis source regardless).
    pub deaggregate: Option<SubRecords>,
    /// `Lambda`: the transformation, invoked through the Lambda Invoke API.
    pub lambda: Option<LambdaPlan>,
    /// `MetadataExtraction`: the jq query of dynamic partitioning's keys.
    pub metadata_query: Option<String>,
}

/// How `RecordDeAggregation` splits a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubRecords {
    Json,
    Delimited(Vec<u8>),
}

/// A `Lambda` processor's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaPlan {
    pub arn: String,
    /// The function's name and qualifier as the Invoke path and query carry them.
    pub function: String,
    pub qualifier: Option<String>,
    /// The region named in the ARN (the signature's scope).
    pub region: String,
    pub retries: u32,
    pub buffer_bytes: usize,
    pub interval_ms: i64,
}

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
fn lambda_plan(arn: &str, param: &dyn Fn(&str) -> Option<String>, at: &str) -> Result<LambdaPlan, ApiError> {
    let parts: Vec<&str> = arn.split(':').collect();
    let (region, function, qualifier) = match parts.as_slice() {
        ["arn", _, "lambda", region, account, "function", name]
            if account.len() == 12 && !name.is_empty() => (*region, *name, None),
        ["arn", _, "lambda", region, account, "function", name, qualifier]
            if account.len() == 12 && !name.is_empty() && !qualifier.is_empty() =>
        {
            (*region, *name, Some((*qualifier).to_owned()))
        }
        _ => {
            return Err(invalid(format!(
                "LambdaArn {arn} at {at} is not a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
            )))
        }
    };
    let number = |name: &str, default: f64, min: f64, max: f64| -> Result<f64, ApiError> {
        let Some(text) = param(name) else { return Ok(default) };
        match text.parse::<f64>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(invalid(format!(
                "{name} {text:?} of the Lambda processor must be a number from {min} to {max}"
            ))),
        }
    };
    let retries = number("NumberOfRetries", 3.0, 0.0, 300.0)?;
    let size_mb = number("BufferSizeInMBs", 1.0, 0.2, 3.0)?;
    let interval = number("BufferIntervalInSeconds", 60.0, 0.0, 900.0)?;
    Ok(LambdaPlan {
        arn: arn.to_owned(),
        function: function.to_owned(),
        qualifier,
        region: region.to_owned(),
        retries: retries as u32,
        buffer_bytes: (size_mb * f64::from(1u32 << 20)) as usize,
        interval_ms: (interval * 1000.0) as i64,
    })
}

fn processors(processing: Request<'_>, base: &str) -> Result<Processors, ApiError> {
    let mut out = Processors::default();
    if !processing.bool_opt("Enabled")?.unwrap_or(false) {
        return Ok(out);
    }
    for (index, processor) in processing.list_opt("Processors")?.unwrap_or(&[]).iter().enumerate() {
        let processor = Request::new(processing.protocol, processor);
        let kind = processor.str_req("Type")?;
        let mut parameters = Vec::new();
        for parameter in processor.list_opt("Parameters")?.unwrap_or(&[]) {
            let parameter = Request::new(processing.protocol, parameter);
            parameters.push((parameter.str_req("ParameterName")?, parameter.str_req("ParameterValue")?));
        }
        let param = |name: &str| parameters.iter().find(|(key, _)| *key == name).map(|(_, value)| *value);
        match kind {
            "AppendDelimiterToRecord" => {
                out.delimiter = Some(unescape(param("Delimiter").unwrap_or("\\n")));
            }
            "RecordDeAggregation" => {
                let at = format!("{base}.processors.{}", index + 1);
                out.deaggregate = Some(match param("SubRecordType").unwrap_or("JSON") {
                    "JSON" => SubRecords::Json,
                    "DELIMITED" => {
                        let encoded = param("Delimiter").ok_or_else(|| {
                            invalid(format!(
                                "RecordDeAggregation at {at} with SubRecordType DELIMITED needs a Delimiter"
                            ))
                        })?;
                        use base64::Engine as _;
                        let delimiter = base64::engine::general_purpose::STANDARD
                            .decode(encoded)
                            .ok()
                            .filter(|delimiter| !delimiter.is_empty())
                            .ok_or_else(|| {
                                invalid(format!(
                                    "Delimiter {encoded:?} at {at} must be base64 of at least one byte"
                                ))
                            })?;
                        SubRecords::Delimited(delimiter)
                    }
                    other => {
                        return Err(invalid(format!(
                            "SubRecordType {other} at {at}: RecordDeAggregation takes JSON or DELIMITED"
                        )))
                    }
                });
            }
            "Lambda" => {
                let at = format!("{base}.processors.{}", index + 1);
                let arn = param("LambdaArn").ok_or_else(|| {
                    invalid(format!("the Lambda processor at {at} needs its LambdaArn parameter"))
                })?;
                let lookup = |name: &str| param(name).map(str::to_owned);
                out.lambda = Some(lambda_plan(arn, &lookup, &at)?);
            }
            "MetadataExtraction" => {
                let at = format!("{base}.processors.{}", index + 1);
                let query = param("MetadataExtractionQuery").ok_or_else(|| {
                    invalid(format!("the MetadataExtraction processor at {at} needs its MetadataExtractionQuery parameter"))
                })?;
                match param("JsonParsingEngine").unwrap_or("JQ-1.6") {
                    "JQ-1.6" => {}
                    other => {
                        return Err(invalid(format!(
                            "JsonParsingEngine {other} at {at}: the supported engine is JQ-1.6"
                        )))
                    }
                }
                super::partition::check(query).map_err(invalid)?;
                out.metadata_query = Some(query.to_owned());
            }
            "Decompression" | "CloudWatchLogProcessing" => {
                return Err(invalid(format!("the {kind} processor is not supported by this server yet")));
            }
            _ => {
                return Err(validation(
                    &format!("{base}.processors.{}.member.type", index + 1),
                    "Member must satisfy enum value set: [RecordDeAggregation, Decompression, \
                     CloudWatchLogProcessing, Lambda, MetadataExtraction, AppendDelimiterToRecord]",
                ))
            }
        }
    }
    Ok(out)
}

/// `\n`, `\t`, `\r`, `\\` in a delimiter parameter; everything else as written.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('r') => out.push(b'\r'),
                Some('\\') => out.push(b'\\'),
                Some(other) => {
                    out.push(b'\\');
                    out.extend(other.to_string().bytes());
                }
                None => out.push(b'\\'),
            }
        } else {
            out.extend(c.to_string().bytes());
        }
    }
    out
}

/// What the delivery worker needs of an S3 destination.
#[derive(Debug)]
pub struct S3Plan {
    pub bucket: String,
    pub prefix: Template,
    pub errors: Template,
    pub size_bytes: usize,
    pub interval_ms: i64,
    pub compression: Compression,
    pub extension: String,
    pub processors: Processors,
    /// `KMSEncryptionConfig.AWSKMSKeyARN`, sent to an S3 endpoint as SSE-KMS.
    pub kms_key: Option<String>,
    /// Dynamic partitioning: one buffer per distinct set of partition keys.
    pub dynamic: bool,
    /// `CustomTimeZone` (UTC when not set): the zone of the key's timestamps.
    pub time_zone: Option<jiff::tz::TimeZone>,
    /// Record format conversion to Parquet.
    pub conversion: Option<ConversionPlan>,
    /// `S3BackupMode` Enabled: where the source records are kept as they arrived.
    pub source_backup: Option<Box<S3Plan>>,
}

/// `DataFormatConversionConfiguration`: the Glue table to read the schema from, and the
/// SerDes' options.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionPlan {
    pub database: String,
    pub table: String,
    pub region: String,
    pub version_id: String,
    pub options: super::convert::Options,
}

fn conversion_plan(section: Request<'_>, base: &str) -> Result<ConversionPlan, ApiError> {
    let schema = section.structure_opt("SchemaConfiguration")?.ok_or_else(|| {
        invalid(format!("{base}.schemaConfiguration is required when data format conversion is enabled"))
    })?;
    let database = schema
        .str_opt("DatabaseName")?
        .filter(|name| !name.is_empty())
        .ok_or_else(|| invalid("SchemaConfiguration.DatabaseName is required"))?;
    let table = schema
        .str_opt("TableName")?
        .filter(|name| !name.is_empty())
        .ok_or_else(|| invalid("SchemaConfiguration.TableName is required"))?;
    if let Some(catalog) = schema.str_opt("CatalogId")? {
        if catalog != crate::aws::ACCOUNT_ID {
            return Err(invalid(format!(
                "SchemaConfiguration.CatalogId {catalog}: this server's Glue catalog is {}",
                crate::aws::ACCOUNT_ID
            )));
        }
    }
    let mut options = super::convert::Options::default();
    let input = section
        .structure_opt("InputFormatConfiguration")?
        .and_then(|input| input.structure_opt("Deserializer").ok().flatten());
    if let Some(deserializer) = input {
        if let Some(openx) = deserializer.structure_opt("OpenXJsonSerDe")? {
            options.case_insensitive = openx.bool_opt("CaseInsensitive")?.unwrap_or(true);
            options.dots_to_underscores =
                openx.bool_opt("ConvertDotsInJsonKeysToUnderscores")?.unwrap_or(false);
            options.key_mappings = openx.string_map_opt("ColumnToJsonKeyMappings")?.unwrap_or_default();
        } else if let Some(hive) = deserializer.structure_opt("HiveJsonSerDe")? {
            if let Some(formats) = hive.list_opt("TimestampFormats")? {
                if formats.iter().any(|format| format != &Value::from("millis")) {
                    return Err(invalid(
                        "HiveJsonSerDe.TimestampFormats other than \"millis\" are not supported by this server yet; \
                         timestamps are read from epoch seconds or milliseconds, RFC 3339, or yyyy-MM-dd HH:mm:ss",
                    ));
                }
            }
        }
    }
    let output = section
        .structure_opt("OutputFormatConfiguration")?
        .and_then(|output| output.structure_opt("Serializer").ok().flatten());
    if let Some(serializer) = output {
        if serializer.has("OrcSerDe") {
            return Err(invalid("ORC output (OrcSerDe) is not supported by this server; use ParquetSerDe"));
        }
        if let Some(parquet) = serializer.structure_opt("ParquetSerDe")? {
            options.compression = match parquet.str_opt("Compression")?.unwrap_or("SNAPPY") {
                "SNAPPY" => parquet::basic::Compression::SNAPPY,
                "GZIP" => parquet::basic::Compression::GZIP(Default::default()),
                "UNCOMPRESSED" => parquet::basic::Compression::UNCOMPRESSED,
                other => {
                    return Err(validation(
                        &format!("{base}.outputFormatConfiguration.serializer.parquetSerDe.compression"),
                        &format!(
                            "Member must satisfy enum value set: [UNCOMPRESSED, GZIP, SNAPPY] (was {other})"
                        ),
                    ))
                }
            };
            if let Some(size) = parquet.int_opt("BlockSizeBytes")? {
                if size < 64 << 20 {
                    return Err(invalid("ParquetSerDe.BlockSizeBytes must be at least 67108864 (64 MiB)"));
                }
                options.block_size_bytes = size as usize;
            }
            if let Some(size) = parquet.int_opt("PageSizeBytes")? {
                if size < 64 << 10 {
                    return Err(invalid("ParquetSerDe.PageSizeBytes must be at least 65536 (64 KiB)"));
                }
                options.page_size_bytes = size as usize;
            }
            options.dictionary = parquet.bool_opt("EnableDictionaryCompression")?.unwrap_or(false);
            options.writer_v2 = match parquet.str_opt("WriterVersion")?.unwrap_or("V1") {
                "V1" => false,
                "V2" => true,
                other => {
                    return Err(invalid(format!("ParquetSerDe.WriterVersion {other}: expected V1 or V2")))
                }
            };
        }
    }
    Ok(ConversionPlan {
        database: database.to_owned(),
        table: table.to_owned(),
        region: schema.str_opt("Region")?.unwrap_or("us-east-1").to_owned(),
        version_id: schema.str_opt("VersionId")?.unwrap_or("LATEST").to_owned(),
        options,
    })
}

impl S3Plan {
    /// `instant_ms` as the key's clock reads it: shifted by the zone's offset at that instant,
    /// so that the UTC calendar of the result is the zone's local time.
    pub fn local_ms(&self, instant_ms: i64) -> i64 {
        let Some(zone) = &self.time_zone else { return instant_ms };
        let Ok(instant) = jiff::Timestamp::from_millisecond(instant_ms) else { return instant_ms };
        instant_ms + i64::from(zone.to_offset(instant).seconds()) * 1000
    }
}

/// A `CustomTimeZone`: an IANA zone name (`America/New_York`, `Asia/Tokyo`, …) from the
/// time-zone database built into the server; empty or `UTC` means UTC.
pub fn time_zone(name: &str) -> Result<Option<jiff::tz::TimeZone>, ApiError> {
    if name.is_empty() || name == "UTC" {
        return Ok(None);
    }
    jiff::tz::TimeZone::get(name).map(Some).map_err(|_| {
        invalid(format!("CustomTimeZone {name:?} is not a time zone of the IANA time-zone database"))
    })
}

/// What the delivery worker needs of an HTTP endpoint.
#[derive(Debug)]
pub struct HttpPlan {
    pub url: String,
    pub access_key: Option<String>,
    pub common_attributes: Vec<(String, String)>,
    pub gzip: bool,
    pub size_bytes: usize,
    pub interval_ms: i64,
    pub retry_ms: i64,
    pub all_data_backup: bool,
    pub processors: Processors,
    /// Where failed (or, with `AllData`, all) records go.
    pub backup: S3Plan,
}

/// One per worker: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Plan {
    S3(S3Plan),
    Http(HttpPlan),
    OpenSearch(OpenSearchPlan),
    Splunk(SplunkPlan),
}

impl Plan {
    pub fn size_bytes(&self) -> usize {
        match self {
            Plan::S3(plan) => plan.size_bytes,
            Plan::Http(plan) => plan.size_bytes,
            Plan::OpenSearch(plan) => plan.size_bytes,
            Plan::Splunk(plan) => plan.size_bytes,
        }
    }

    pub fn interval_ms(&self) -> i64 {
        match self {
            Plan::S3(plan) => plan.interval_ms,
            Plan::Http(plan) => plan.interval_ms,
            Plan::OpenSearch(plan) => plan.interval_ms,
            Plan::Splunk(plan) => plan.interval_ms,
        }
    }

    /// Records per object or request (an HTTP request carries at most 10,000).
    pub fn max_records(&self) -> usize {
        match self {
            Plan::S3(_) => usize::MAX,
            Plan::Http(_) | Plan::OpenSearch(_) | Plan::Splunk(_) => 10_000,
        }
    }

    pub fn processors(&self) -> &Processors {
        match self {
            Plan::S3(plan) => &plan.processors,
            Plan::Http(plan) => &plan.processors,
            Plan::OpenSearch(plan) => &plan.processors,
            Plan::Splunk(plan) => &plan.processors,
        }
    }
}

/// The plan of a stored destination (it was checked when stored; a failure here is a bug or
/// a damaged catalog, reported as such).
pub fn plan(destination: &Destination) -> Result<Plan, ApiError> {
    match destination.kind {
        DestinationKind::Splunk => {
            let config = Request::new(Protocol::Json, &destination.stored);
            let hints =
                config.structure_opt("BufferingHints")?.ok_or_else(|| invalid("no BufferingHints"))?;
            let retry = config.structure_opt("RetryOptions")?.ok_or_else(|| invalid("no RetryOptions"))?;
            let processors = match config.structure_opt("ProcessingConfiguration")? {
                Some(processing) => processors(processing, "processingConfiguration")?,
                None => Processors::default(),
            };
            let backup = config.member("S3Configuration").ok_or_else(|| invalid("no S3Configuration"))?;
            let endpoint = config.str_req("HECEndpoint")?.trim_end_matches('/');
            let kind = if config.str_req("HECEndpointType")? == "Raw" { "raw" } else { "event" };
            Ok(Plan::Splunk(SplunkPlan {
                send_url: format!("{endpoint}/services/collector/{kind}"),
                ack_url: format!("{endpoint}/services/collector/ack"),
                token: config.str_req("HECToken")?.to_owned(),
                ack_timeout_ms: config.int_req("HECAcknowledgmentTimeoutInSeconds")? * 1000,
                size_bytes: (hints.int_req("SizeInMBs")? as usize) << 20,
                interval_ms: hints.int_req("IntervalInSeconds")? * 1000,
                retry_ms: retry.int_req("DurationInSeconds")? * 1000,
                all_events_backup: config.str_opt("S3BackupMode")? == Some("AllEvents"),
                processors,
                backup: s3_plan(backup)?,
            }))
        }
        DestinationKind::OpenSearch | DestinationKind::Elasticsearch => {
            let config = Request::new(Protocol::Json, &destination.stored);
            let hints =
                config.structure_opt("BufferingHints")?.ok_or_else(|| invalid("no BufferingHints"))?;
            let retry = config.structure_opt("RetryOptions")?.ok_or_else(|| invalid("no RetryOptions"))?;
            let processors = match config.structure_opt("ProcessingConfiguration")? {
                Some(processing) => processors(processing, "processingConfiguration")?,
                None => Processors::default(),
            };
            let rotation = config.str_req("IndexRotationPeriod")?;
            let rotation = ROTATIONS.iter().copied().find(|known| *known == rotation).unwrap_or("OneDay");
            let backup = config.member("S3Configuration").ok_or_else(|| invalid("no S3Configuration"))?;
            let endpoint = config.str_req("ClusterEndpoint")?.trim_end_matches('/');
            Ok(Plan::OpenSearch(OpenSearchPlan {
                bulk_url: format!("{endpoint}/_bulk"),
                index: config.str_req("IndexName")?.to_owned(),
                type_name: config.str_opt("TypeName")?.map(str::to_owned),
                rotation,
                size_bytes: (hints.int_req("SizeInMBs")? as usize) << 20,
                interval_ms: hints.int_req("IntervalInSeconds")? * 1000,
                retry_ms: retry.int_req("DurationInSeconds")? * 1000,
                all_documents_backup: config.str_opt("S3BackupMode")? == Some("AllDocuments"),
                document_ids: config
                    .structure_opt("DocumentIdOptions")?
                    .and_then(|options| options.str_opt("DefaultDocumentIdFormat").ok().flatten())
                    != Some("NO_DOCUMENT_ID"),
                processors,
                backup: s3_plan(backup)?,
            }))
        }
        DestinationKind::S3 => s3_plan(&destination.stored).map(Plan::S3),
        DestinationKind::Http => {
            let config = Request::new(Protocol::Json, &destination.stored);
            let endpoint =
                config.structure_opt("EndpointConfiguration")?.ok_or_else(|| invalid("no endpoint"))?;
            let hints =
                config.structure_opt("BufferingHints")?.ok_or_else(|| invalid("no BufferingHints"))?;
            let request =
                config.structure_opt("RequestConfiguration")?.ok_or_else(|| invalid("no request"))?;
            let mut common_attributes = Vec::new();
            for attribute in request.list_opt("CommonAttributes")?.unwrap_or(&[]) {
                let attribute = Request::new(Protocol::Json, attribute);
                common_attributes.push((
                    attribute.str_req("AttributeName")?.to_owned(),
                    attribute.str_req("AttributeValue")?.to_owned(),
                ));
            }
            let processors = match config.structure_opt("ProcessingConfiguration")? {
                Some(processing) => processors(processing, "processingConfiguration")?,
                None => Processors::default(),
            };
            let retry = config.structure_opt("RetryOptions")?.ok_or_else(|| invalid("no RetryOptions"))?;
            let backup = config.member("S3Configuration").ok_or_else(|| invalid("no S3Configuration"))?;
            Ok(Plan::Http(HttpPlan {
                url: endpoint.str_req("Url")?.to_owned(),
                access_key: endpoint.str_opt("AccessKey")?.map(str::to_owned),
                common_attributes,
                gzip: request.str_opt("ContentEncoding")? == Some("GZIP"),
                size_bytes: (hints.int_req("SizeInMBs")? as usize) << 20,
                interval_ms: hints.int_req("IntervalInSeconds")? * 1000,
                retry_ms: retry.int_req("DurationInSeconds")? * 1000,
                all_data_backup: config.str_opt("S3BackupMode")? == Some("AllData"),
                processors,
                backup: s3_plan(backup)?,
            }))
        }
    }
}

fn s3_plan(description: &Value) -> Result<S3Plan, ApiError> {
    let config = Request::new(Protocol::Json, description);
    let conversion = match config.structure_opt("DataFormatConversionConfiguration")? {
        Some(section) if section.bool_opt("Enabled")?.unwrap_or(true) => {
            Some(conversion_plan(section, "dataFormatConversionConfiguration")?)
        }
        _ => None,
    };
    let bucket = bucket_of(config.str_req("BucketARN")?).ok_or_else(|| invalid("bad BucketARN"))?.to_owned();
    let (prefix, errors) =
        prefix::check_pair(config.str_opt("Prefix")?, config.str_opt("ErrorOutputPrefix")?)
            .map_err(|error| invalid(error.to_string()))?;
    let hints = config.structure_opt("BufferingHints")?.ok_or_else(|| invalid("no BufferingHints"))?;
    let compression =
        Compression::parse(config.str_req("CompressionFormat")?, "CompressionFormat").map_err(invalid)?;
    let processors = match config.structure_opt("ProcessingConfiguration")? {
        Some(processing) => processors(processing, "processingConfiguration")?,
        None => Processors::default(),
    };
    let kms_key = config
        .structure_opt("EncryptionConfiguration")?
        .and_then(|encryption| encryption.structure_opt("KMSEncryptionConfig").ok().flatten())
        .and_then(|kms| kms.str_opt("AWSKMSKeyARN").ok().flatten())
        .map(str::to_owned);
    Ok(S3Plan {
        bucket,
        prefix,
        errors,
        size_bytes: (hints.int_req("SizeInMBs")? as usize) << 20,
        interval_ms: hints.int_req("IntervalInSeconds")? * 1000,
        extension: config.str_opt("FileExtension")?.map(str::to_owned).unwrap_or_else(|| {
            if conversion.is_some() {
                ".parquet".to_owned()
            } else {
                compression.extension().to_owned()
            }
        }),
        conversion,
        source_backup: match (config.str_opt("S3BackupMode")?, config.member("S3BackupDescription")) {
            (Some("Enabled"), Some(backup)) => Some(Box::new(s3_plan(backup)?)),
            _ => None,
        },
        compression,
        processors,
        kms_key,
        time_zone: time_zone(config.str_opt("CustomTimeZone")?.unwrap_or(""))?,
        dynamic: config
            .structure_opt("DynamicPartitioningConfiguration")?
            .and_then(|section| section.bool_opt("Enabled").ok().flatten())
            .unwrap_or(false),
    })
}

/// The legacy `S3DestinationDescription`: the extended one without the members its shape
/// does not have.
pub fn legacy_description(extended: &Value) -> Value {
    const EXTENDED_ONLY: [&str; 7] = [
        "ProcessingConfiguration",
        "S3BackupMode",
        "DataFormatConversionConfiguration",
        "DynamicPartitioningConfiguration",
        "FileExtension",
        "CustomTimeZone",
        "S3BackupDescription",
    ];
    match extended {
        Value::Map(members) => Value::Map(
            members.iter().filter(|(name, _)| !EXTENDED_ONLY.contains(&name.as_str())).cloned().collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        document::decode(Protocol::Json, text.as_bytes()).unwrap()
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/firehose";

    #[test]
    fn create_fills_every_default_aws_fills() {
        let request = json(&format!(
            r#"{{"ExtendedS3DestinationConfiguration":{{"RoleARN":"{ROLE}","BucketARN":"arn:aws:s3:::my-bucket"}}}}"#
        ));
        let destination = destination_of_create(Request::new(Protocol::Json, &request)).unwrap();
        let description = destination.stored.clone();
        let text = String::from_utf8(document::encode(Protocol::Json, &description)).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"RoleARN":"{ROLE}","BucketARN":"arn:aws:s3:::my-bucket","BufferingHints":{{"SizeInMBs":5,"IntervalInSeconds":300}},"CompressionFormat":"UNCOMPRESSED","EncryptionConfiguration":{{"NoEncryptionConfig":"NoEncryption"}},"CloudWatchLoggingOptions":{{"Enabled":false}},"S3BackupMode":"Disabled"}}"#
            )
        );
        let plan = s3_plan(&description).unwrap();
        assert_eq!(
            (plan.bucket.as_str(), plan.size_bytes, plan.interval_ms),
            ("my-bucket", 5 << 20, 300_000)
        );
        assert_eq!(plan.prefix.to_string(), "!{timestamp:yyyy/MM/dd/HH/}");
    }

    #[test]
    fn refusals_name_the_rule() {
        let refused = |body: String| {
            let request = json(&body);
            destination_of_create(Request::new(Protocol::Json, &request)).unwrap_err()
        };
        let s3 = |extra: &str| {
            format!(
                r#"{{"ExtendedS3DestinationConfiguration":{{"RoleARN":"{ROLE}","BucketARN":"arn:aws:s3:::b-1"{extra}}}}}"#
            )
        };
        assert!(refused("{}".into()).message.contains("Exactly one destination"));
        assert!(refused(r#"{"RedshiftDestinationConfiguration":{}}"#.into())
            .message
            .contains("supported destinations are ExtendedS3DestinationConfiguration"));
        assert!(refused(s3(r#","Prefix":"a/!{timestamp:yyyy}/""#))
            .message
            .starts_with("Ths supplied prefix(es)"));
        assert!(refused(s3(r#","BufferingHints":{"SizeInMBs":3}"#)).message.contains("vice versa"));
        assert!(refused(s3(r#","BufferingHints":{"SizeInMBs":129,"IntervalInSeconds":60}"#))
            .message
            .contains("bufferingHints.sizeInMBs"));
        assert_eq!(refused(s3(r#","CompressionFormat":"snappy""#)).code.type_name(), "ValidationException");
        let bad_bucket = format!(
            r#"{{"S3DestinationConfiguration":{{"RoleARN":"{ROLE}","BucketARN":"arn:aws:s3:::.."}}}}"#
        );
        assert!(refused(bad_bucket).message.contains("s3DestinationConfiguration.bucketARN"));
    }

    #[test]
    fn update_merges_into_the_stored_description() {
        let request = json(&format!(
            r#"{{"ExtendedS3DestinationConfiguration":{{"RoleARN":"{ROLE}","BucketARN":"arn:aws:s3:::my-bucket","Prefix":"logs/"}}}}"#
        ));
        let stored = destination_of_create(Request::new(Protocol::Json, &request)).unwrap();
        let update = json(
            r#"{"ExtendedS3DestinationUpdate":{"BufferingHints":{"SizeInMBs":1,"IntervalInSeconds":60},"CompressionFormat":"GZIP"}}"#,
        );
        let updated = destination_of_update(&stored, Request::new(Protocol::Json, &update)).unwrap();
        let Plan::S3(plan) = plan(&updated).unwrap() else { panic!("an S3 plan") };
        assert_eq!(
            (plan.size_bytes, plan.interval_ms, plan.compression),
            (1 << 20, 60_000, Compression::Gzip)
        );
        assert_eq!(plan.prefix.to_string(), "logs/!{timestamp:yyyy/MM/dd/HH/}");
        assert_eq!(plan.extension, ".gz");
        assert!(legacy_description(&updated.stored).get("S3BackupMode").is_none());
    }

    #[test]
    fn custom_time_zones_shift_the_key_clock() {
        let tokyo = time_zone("Asia/Tokyo").unwrap();
        assert!(time_zone("UTC").unwrap().is_none());
        assert!(time_zone("Mars/Olympus").is_err());
        let request = json(&format!(
            r#"{{"ExtendedS3DestinationConfiguration":{{"RoleARN":"{ROLE}","BucketARN":"arn:aws:s3:::b-1","CustomTimeZone":"America/New_York"}}}}"#
        ));
        let destination = destination_of_create(Request::new(Protocol::Json, &request)).unwrap();
        let Plan::S3(plan) = plan(&destination).unwrap() else { panic!("an S3 plan") };
        // 2026-07-01T12:00Z is 08:00 in New York (EDT, UTC-4); 2026-01-01T12:00Z is 07:00 (EST).
        assert_eq!(plan.local_ms(1_782_907_200_000), 1_782_907_200_000 - 4 * 3_600_000);
        assert_eq!(plan.local_ms(1_767_268_800_000), 1_767_268_800_000 - 5 * 3_600_000);
        assert!(tokyo.is_some());
    }

    #[test]
    fn opensearch_indexes_rotate_as_firehose_names_them() {
        let request = json(&format!(
            r#"{{"AmazonopensearchserviceDestinationConfiguration":{{"RoleARN":"{ROLE}","ClusterEndpoint":"http://127.0.0.1:9200","IndexName":"logs","S3Configuration":{{"RoleARN":"{ROLE}","BucketARN":"arn:aws:s3:::b-1"}}}}}}"#
        ));
        let destination = destination_of_create(Request::new(Protocol::Json, &request)).unwrap();
        let Plan::OpenSearch(mut plan) = plan(&destination).unwrap() else { panic!("an OpenSearch plan") };
        assert_eq!(plan.bulk_url, "http://127.0.0.1:9200/_bulk");
        let at = 1_796_154_000_000; // 2026-12-01T19:40:00Z, a Tuesday of ISO week 49
        assert_eq!(plan.index_for(at), "logs-2026-12-01", "OneDay is the default");
        for (rotation, index) in [
            ("OneHour", "logs-2026-12-01-19"),
            ("OneWeek", "logs-2026-w49"),
            ("OneMonth", "logs-2026-12"),
            ("NoRotation", "logs"),
        ] {
            plan.rotation = rotation;
            assert_eq!(plan.index_for(at), index);
        }
        plan.rotation = "OneWeek";
        assert_eq!(plan.index_for(1_767_225_600_000), "logs-2026-w1", "2026-01-01 is in week 1 of 2026");
        assert_eq!(plan.index_for(1_735_603_200_000), "logs-2025-w1", "2024-12-31 is in week 1 of 2025");
        let described = destination.describe();
        let text = String::from_utf8(document::encode(Protocol::Json, &described)).unwrap();
        assert!(
            text.contains("AmazonopensearchserviceDestinationDescription")
                && text.contains("S3DestinationDescription")
        );
    }

    #[test]
    fn delimiters_are_unescaped() {
        assert_eq!(unescape("\\n"), b"\n");
        assert_eq!(unescape("|\\t"), b"|\t");
        assert_eq!(unescape("\\x"), b"\\x");
    }
}
