//! The errors a Kinesis client sees: a stable table of AWS `__type` names and HTTP statuses,
//! kept apart from the engine's internal error enum, and the one mapping between them.

use millrace_core::engine::EngineError;

/// The AWS error codes Millrace answers with. The names are a public contract: the SDKs
/// dispatch on them (boto3's `ClientError.response['Error']['Code']`, Java's exception
/// classes), so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    ResourceNotFound,
    ResourceInUse,
    InvalidArgument,
    Validation,
    LimitExceeded,
    ProvisionedThroughputExceeded,
    ExpiredIterator,
    ExpiredNextToken,
    Serialization,
    UnknownOperation,
    MissingAuthenticationToken,
    IncompleteSignature,
    InvalidSignature,
    UnrecognizedClient,
    AccessDenied,
    InternalFailure,
    ServiceUnavailable,
}

impl ErrorCode {
    pub fn type_name(self) -> &'static str {
        match self {
            ErrorCode::ResourceNotFound => "ResourceNotFoundException",
            ErrorCode::ResourceInUse => "ResourceInUseException",
            ErrorCode::InvalidArgument => "InvalidArgumentException",
            ErrorCode::Validation => "ValidationException",
            ErrorCode::LimitExceeded => "LimitExceededException",
            ErrorCode::ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            ErrorCode::ExpiredIterator => "ExpiredIteratorException",
            ErrorCode::ExpiredNextToken => "ExpiredNextTokenException",
            ErrorCode::Serialization => "SerializationException",
            ErrorCode::UnknownOperation => "UnknownOperationException",
            ErrorCode::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorCode::IncompleteSignature => "IncompleteSignatureException",
            ErrorCode::InvalidSignature => "InvalidSignatureException",
            ErrorCode::UnrecognizedClient => "UnrecognizedClientException",
            ErrorCode::AccessDenied => "AccessDeniedException",
            ErrorCode::InternalFailure => "InternalFailure",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// The HTTP status AWS answers this error with. Kinesis answers client errors, auth
    /// errors included, with 400; the SDKs retry 500 and 503.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InternalFailure => 500,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::MissingAuthenticationToken | ErrorCode::AccessDenied => 403,
            _ => 400,
        }
    }
}

/// An error as the client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }

    /// AWS's one-violation validation message.
    pub fn validation(member: &str, shown: &str, constraint: &str) -> ApiError {
        ApiError::new(
            ErrorCode::Validation,
            format!(
                "1 validation error detected: Value '{shown}' at '{}' failed to satisfy constraint: {constraint}",
                super::value::lower_first(member)
            ),
        )
    }
}

/// The account id in ARNs and messages. Millrace is one account.
pub const ACCOUNT_ID: &str = "000000000000";

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        let (code, message) = match &error {
            EngineError::StreamNotFound { name } => {
                (ErrorCode::ResourceNotFound, format!("Stream {name} under account {ACCOUNT_ID} not found."))
            }
            EngineError::StreamExists { name } => (
                ErrorCode::ResourceInUse,
                format!("Stream {name} under account {ACCOUNT_ID} already exists."),
            ),
            EngineError::ShardNotFound { stream, shard } => (
                ErrorCode::ResourceNotFound,
                format!("Shard {shard} in stream {stream} under account {ACCOUNT_ID} does not exist"),
            ),
            EngineError::ShardClosed { stream, shard } => (
                ErrorCode::InvalidArgument,
                format!("Shard {shard} in stream {stream} under account {ACCOUNT_ID} is closed"),
            ),
            EngineError::ConsumerNotFound { stream, consumer } => (
                ErrorCode::ResourceNotFound,
                format!("Consumer {consumer} of stream {stream} under account {ACCOUNT_ID} not found."),
            ),
            EngineError::ConsumerExists { stream, consumer } => (
                ErrorCode::ResourceInUse,
                format!("Consumer {consumer} of stream {stream} under account {ACCOUNT_ID} already exists."),
            ),
            EngineError::ResourceInUse { what } => (ErrorCode::ResourceInUse, what.clone()),
            EngineError::InvalidArgument { what } => (ErrorCode::InvalidArgument, what.clone()),
            EngineError::LimitExceeded { what } => (ErrorCode::LimitExceeded, what.clone()),
            EngineError::RecordTooLarge { size_bytes, limit_bytes } => (
                ErrorCode::Validation,
                format!(
                    "1 validation error detected: Value at 'data' failed to satisfy constraint: Member must \
                     have length less than or equal to {limit_bytes} (was {size_bytes})"
                ),
            ),
            EngineError::Storage { .. } => (ErrorCode::InternalFailure, error.to_string()),
            EngineError::ShuttingDown => (ErrorCode::ServiceUnavailable, error.to_string()),
            _ => (ErrorCode::InternalFailure, error.to_string()),
        };
        ApiError { code, message }
    }
}
