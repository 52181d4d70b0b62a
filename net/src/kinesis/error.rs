//! The errors a Kinesis client sees: the stable table of the codes the Kinesis API answers
//! with (the shared ones of [`crate::aws::codes`] and Kinesis' own), and the one mapping from
//! the engine's structured errors, worded as Kinesis words them.

use millrace_core::{CatalogError, EngineError, Invalid, Limit, ResourceKind};

use crate::aws::{ApiError, ErrorCode, ACCOUNT_ID};

/// Every code the Kinesis API answers with. The names are a public contract.
pub mod codes {
    pub use crate::aws::codes::*;
    use crate::aws::ErrorCode;

    pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode::new("ResourceNotFoundException", 400);
    pub const RESOURCE_IN_USE: ErrorCode = ErrorCode::new("ResourceInUseException", 400);
    pub const INVALID_ARGUMENT: ErrorCode = ErrorCode::new("InvalidArgumentException", 400);
    pub const LIMIT_EXCEEDED: ErrorCode = ErrorCode::new("LimitExceededException", 400);
    pub const PROVISIONED_THROUGHPUT_EXCEEDED: ErrorCode =
        ErrorCode::new("ProvisionedThroughputExceededException", 400);
    pub const EXPIRED_ITERATOR: ErrorCode = ErrorCode::new("ExpiredIteratorException", 400);
    pub const EXPIRED_NEXT_TOKEN: ErrorCode = ErrorCode::new("ExpiredNextTokenException", 400);
}

pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(codes::INVALID_ARGUMENT, message)
}

fn code(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(code, message)
}

/// Kinesis' wording of what the catalog refused.
fn catalog(error: &CatalogError) -> ApiError {
    match error {
        CatalogError::NotFound { kind: ResourceKind::DataStream, name } => {
            code(codes::RESOURCE_NOT_FOUND, format!("Stream {name} under account {ACCOUNT_ID} not found."))
        }
        CatalogError::Exists { kind: ResourceKind::DataStream, name } => {
            code(codes::RESOURCE_IN_USE, format!("Stream {name} under account {ACCOUNT_ID} already exists."))
        }
        CatalogError::NotFound { kind, name } => code(codes::RESOURCE_NOT_FOUND, format!("{kind} {name} not found.")),
        CatalogError::Exists { kind, name } => code(codes::RESOURCE_IN_USE, format!("{kind} {name} already exists.")),
        CatalogError::ShardNotFound { name, shard } => code(
            codes::RESOURCE_NOT_FOUND,
            format!("Shard {shard} in stream {name} under account {ACCOUNT_ID} does not exist"),
        ),
        CatalogError::ShardClosed { name, shard } => code(
            codes::INVALID_ARGUMENT,
            format!("Shard {shard} in stream {name} under account {ACCOUNT_ID} is closed"),
        ),
        CatalogError::ConsumerNotFound { stream, consumer } => code(
            codes::RESOURCE_NOT_FOUND,
            format!("Consumer {consumer} of stream {stream} under account {ACCOUNT_ID} not found."),
        ),
        CatalogError::ConsumerExists { stream, consumer } => code(
            codes::RESOURCE_IN_USE,
            format!("Consumer {consumer} of stream {stream} under account {ACCOUNT_ID} already exists."),
        ),
        CatalogError::HasConsumers { stream } => code(
            codes::RESOURCE_IN_USE,
            format!("Stream {stream} has registered consumers; deregister them or enforce consumer deletion"),
        ),
        CatalogError::Invalid(invalid) => match invalid {
            Invalid::ShardCount { .. } => ApiError::validation(
                "ShardCount",
                "0",
                "Member must have value greater than or equal to 1",
            ),
            Invalid::SplitOutsideRange { shard, new_start, range } => invalid_argument(format!(
                "NewStartingHashKey {new_start} used in SplitShard() on shard {shard} in stream under account \
                 {ACCOUNT_ID} is not both greater than one plus the shard's StartingHashKey {} and less than the \
                 shard's EndingHashKey {}.",
                range.start(),
                range.end()
            )),
            Invalid::NotAdjacent { shard, adjacent } => invalid_argument(format!(
                "Shards {shard} and {adjacent} in stream under account {ACCOUNT_ID} are not an adjacent pair of \
                 shards eligible for merging"
            )),
            Invalid::RescaleTarget { target, open } => invalid_argument(format!(
                "UpdateShardCount {target} must be between half ({}) and double ({}) of the open shard count \
                 {open}",
                open.div_ceil(2),
                open * 2
            )),
            Invalid::RetentionHours { hours } => invalid_argument(format!(
                "Minimum allowed retention period is {} hours and maximum is {} hours; requested {hours}.",
                millrace_core::RETENTION_HOURS_MIN,
                millrace_core::RETENTION_HOURS_MAX
            )),
            Invalid::Tag { key } => {
                invalid_argument(format!("Tag key {key:?} must be 1-128 characters and its value at most 256."))
            }
            Invalid::ConsumerName { name } => ApiError::validation(
                "ConsumerName",
                name,
                "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length 1..=128",
            ),
            Invalid::MaxRecordBytes { bytes } => invalid_argument(format!(
                "MaxRecordSizeInKiB {} must be 1..={} KiB",
                bytes >> 10,
                millrace_core::MAX_RECORD_BYTES_LIMIT >> 10
            )),
            Invalid::CheckpointOwner => invalid_argument("checkpoint owner must be 1-128 bytes"),
            Invalid::ForeignSequence { shard, sequence } => {
                invalid_argument(format!("Sequence number {sequence} does not belong to shard {shard}."))
            }
            other => invalid_argument(other.to_string()),
        },
        CatalogError::Limit(limit) => match limit {
            Limit::Shards { requested, max } => code(
                codes::LIMIT_EXCEEDED,
                format!("This request would make the stream have {requested} shards, above the limit of {max}."),
            ),
            Limit::Tags { max } => code(codes::LIMIT_EXCEEDED, format!("A stream can have at most {max} tags.")),
            Limit::Consumers { max } => {
                code(codes::LIMIT_EXCEEDED, format!("A stream can have at most {max} registered consumers."))
            }
            other => code(codes::LIMIT_EXCEEDED, other.to_string()),
        },
        other => code(codes::INVALID_ARGUMENT, other.to_string()),
    }
}

fn invalid_argument(message: impl Into<String>) -> ApiError {
    ApiError::new(codes::INVALID_ARGUMENT, message)
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> ApiError {
        catalog(&error)
    }
}

/// The engine's errors, as Kinesis answers them. Internal failures carry the detail only as
/// far as [`crate::aws::error::scrub`], which logs it and answers the client without it.
impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match &error {
            EngineError::Catalog(refused) => catalog(refused),
            EngineError::RecordTooLarge { size_bytes, limit_bytes } => ApiError::new(
                codes::VALIDATION,
                format!(
                    "1 validation error detected: Value at 'data' failed to satisfy constraint: Member must \
                     have length less than or equal to {limit_bytes} (was {size_bytes})"
                ),
            ),
            EngineError::ForeignSequence { name, shard, sequence } => invalid_argument(format!(
                "Invalid StartingSequenceNumber. It encodes {sequence}, which does not belong to shard {shard} in \
                 stream {name} under account {ACCOUNT_ID}."
            )),
            EngineError::Resharding { name } => code(
                codes::RESOURCE_IN_USE,
                format!("Stream {name} under account {ACCOUNT_ID} is being resharded; retry."),
            ),
            EngineError::StaleBatch { .. }
            | EngineError::RetryOutsideWindow { .. }
            | EngineError::RetryAcrossReshard { .. } => invalid_argument(error.to_string()),
            EngineError::ShuttingDown => ApiError::new(codes::SERVICE_UNAVAILABLE, "The service is shutting down."),
            // Storage faults, a broken shard map, and whatever comes later: the server's to
            // explain in its log, not the client's to read.
            _ => ApiError::new(codes::INTERNAL_FAILURE, error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_faults_are_internal_failures_never_shutting_down() {
        let error: ApiError =
            EngineError::NoOwningShard { name: "s".into(), hash_key: millrace_core::HashKey::new(5) }.into();
        assert_eq!(error.code, codes::INTERNAL_FAILURE);
        assert_eq!(error.code.status(), 500);
        let scrubbed = crate::aws::error::scrub(error, "kinesis", "req-9");
        assert!(!scrubbed.message.contains("hash key"), "the detail stays in the log: {}", scrubbed.message);
        let shutting: ApiError = EngineError::ShuttingDown.into();
        assert_eq!(shutting.code.status(), 503);
    }
}
