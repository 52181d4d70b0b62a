//! The errors a Firehose client sees: the codes the Firehose API answers with (the shared
//! ones of [`crate::aws::codes`] and Firehose's own; Firehose's model gives its errors no
//! HTTP status, so they are all 400 but ServiceUnavailableException), and the wording of the
//! engine's errors as Firehose words them.

use millrace_core::{CatalogError, EngineError, ResourceKind};

use crate::aws::{ApiError, ACCOUNT_ID};

pub mod codes {
    pub use crate::aws::codes::*;
    use crate::aws::ErrorCode;

    pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode::new("ResourceNotFoundException", 400);
    pub const RESOURCE_IN_USE: ErrorCode = ErrorCode::new("ResourceInUseException", 400);
    pub const INVALID_ARGUMENT: ErrorCode = ErrorCode::new("InvalidArgumentException", 400);
    pub const LIMIT_EXCEEDED: ErrorCode = ErrorCode::new("LimitExceededException", 400);
    pub const CONCURRENT_MODIFICATION: ErrorCode = ErrorCode::new("ConcurrentModificationException", 400);
    pub const INVALID_KMS_RESOURCE: ErrorCode = ErrorCode::new("InvalidKMSResourceException", 400);
    pub const INVALID_SOURCE: ErrorCode = ErrorCode::new("InvalidSourceException", 400);
    pub const FIREHOSE_UNAVAILABLE: ErrorCode = ErrorCode::new("ServiceUnavailableException", 503);
}

pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(codes::INVALID_ARGUMENT, message)
}

pub fn not_found(name: &str) -> ApiError {
    ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Firehose {name} under account {ACCOUNT_ID} not found."))
}

/// The engine's errors, as Firehose answers them; what is not Firehose's own is worded as
/// the shared mapping words it (internal failures are scrubbed before they leave).
pub fn engine(error: EngineError) -> ApiError {
    match &error {
        EngineError::Catalog(CatalogError::NotFound { kind: ResourceKind::DeliveryStream, name }) => {
            not_found(name)
        }
        EngineError::Catalog(CatalogError::NotFound { kind: ResourceKind::DataStream, name }) => {
            invalid(format!("Kinesis stream {name} under account {ACCOUNT_ID} not found."))
        }
        EngineError::Catalog(CatalogError::Exists { kind: ResourceKind::DeliveryStream, name }) => {
            ApiError::new(
                codes::RESOURCE_IN_USE,
                format!("Firehose {name} under accountId {ACCOUNT_ID} already exists"),
            )
        }
        EngineError::Catalog(CatalogError::Invalid(millrace_core::Invalid::Version { .. })) => ApiError::new(
            codes::CONCURRENT_MODIFICATION,
            "The delivery stream was changed by another request; describe it and retry.",
        ),
        EngineError::ShuttingDown => {
            ApiError::new(codes::FIREHOSE_UNAVAILABLE, "The service is shutting down.")
        }
        _ => ApiError::from(error),
    }
}
