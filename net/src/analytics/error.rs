//! Kinesis Data Analytics' errors, as both API versions name them.

use millrace_core::{CatalogError, EngineError, ResourceKind};

use crate::aws::ApiError;

pub mod codes {
    pub use crate::aws::codes::*;
    use crate::aws::ErrorCode;

    pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode::new("ResourceNotFoundException", 400);
    pub const RESOURCE_IN_USE: ErrorCode = ErrorCode::new("ResourceInUseException", 400);
    pub const INVALID_ARGUMENT: ErrorCode = ErrorCode::new("InvalidArgumentException", 400);
    pub const CODE_VALIDATION: ErrorCode = ErrorCode::new("CodeValidationException", 400);
    pub const CONCURRENT_MODIFICATION: ErrorCode = ErrorCode::new("ConcurrentModificationException", 400);
    pub const LIMIT_EXCEEDED: ErrorCode = ErrorCode::new("LimitExceededException", 400);
    pub const UNSUPPORTED_OPERATION: ErrorCode = ErrorCode::new("UnsupportedOperationException", 400);
    pub const INVALID_CONFIGURATION: ErrorCode =
        ErrorCode::new("InvalidApplicationConfigurationException", 400);
    pub const UNABLE_TO_DETECT_SCHEMA: ErrorCode = ErrorCode::new("UnableToDetectSchemaException", 400);
    pub const TOO_MANY_TAGS: ErrorCode = ErrorCode::new("TooManyTagsException", 400);
}

pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(codes::INVALID_ARGUMENT, message)
}

pub fn not_found(name: &str) -> ApiError {
    ApiError::new(codes::RESOURCE_NOT_FOUND, format!("Application {name} is not found."))
}

pub fn engine(error: EngineError) -> ApiError {
    match &error {
        EngineError::Catalog(CatalogError::NotFound { kind: ResourceKind::AnalyticsApplication, name }) => {
            not_found(name)
        }
        EngineError::Catalog(CatalogError::Exists { kind: ResourceKind::AnalyticsApplication, name }) => {
            ApiError::new(codes::RESOURCE_IN_USE, format!("Application {name} already exists."))
        }
        EngineError::Catalog(CatalogError::Invalid(millrace_core::Invalid::Version { .. })) => ApiError::new(
            codes::CONCURRENT_MODIFICATION,
            "The application was changed by another request; describe it and retry.",
        ),
        _ => ApiError::from(error),
    }
}
