//! Errors as AWS clients receive them: a code (the `__type` or `x-amzn-ErrorType` name and
//! its HTTP status) and a message. Codes are public contracts: the SDKs dispatch on the
//! names (boto3's `ClientError.response['Error']['Code']`, Java's exception classes), so a
//! code, once answered, never changes. [`codes`] holds the ones every service shares; each
//! service keeps its own table beside its operations (`kinesis::error::codes`, …), apart
//! from the engine's internal error enum and with one mapping between them.
//!
//! The shapes: the JSON protocols answer `{"__type": NAME, "message": TEXT}` in the request's
//! encoding (JSON or CBOR) with `x-amzn-ErrorType: NAME`; rest-json services answer
//! `{"message": TEXT}` with `x-amzn-ErrorType: NAME` ([`ErrorStyle`]).

use super::document::{self, Protocol, Value};

/// One row of a service's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode {
    type_name: &'static str,
    status: u16,
}

impl ErrorCode {
    pub const fn new(type_name: &'static str, status: u16) -> ErrorCode {
        ErrorCode { type_name, status }
    }

    pub fn type_name(self) -> &'static str {
        self.type_name
    }

    /// The HTTP status. The SDKs retry 500 and 503.
    pub fn status(self) -> u16 {
        self.status
    }

    pub fn is_server_fault(self) -> bool {
        self.status >= 500
    }
}

/// The codes every service answers with (AWS's common errors). Client errors are 400; the
/// two authentication failures AWS answers with 403 are 403 here too.
pub mod codes {
    use super::ErrorCode;

    pub const VALIDATION: ErrorCode = ErrorCode::new("ValidationException", 400);
    pub const SERIALIZATION: ErrorCode = ErrorCode::new("SerializationException", 400);
    pub const UNKNOWN_OPERATION: ErrorCode = ErrorCode::new("UnknownOperationException", 400);
    /// A path no operation of a rest-json service serves.
    pub const UNKNOWN_OPERATION_PATH: ErrorCode = ErrorCode::new("UnknownOperationException", 404);
    pub const MISSING_AUTHENTICATION_TOKEN: ErrorCode =
        ErrorCode::new("MissingAuthenticationTokenException", 403);
    pub const INCOMPLETE_SIGNATURE: ErrorCode = ErrorCode::new("IncompleteSignatureException", 400);
    pub const INVALID_SIGNATURE: ErrorCode = ErrorCode::new("InvalidSignatureException", 400);
    pub const UNRECOGNIZED_CLIENT: ErrorCode = ErrorCode::new("UnrecognizedClientException", 400);
    pub const ACCESS_DENIED: ErrorCode = ErrorCode::new("AccessDeniedException", 403);
    pub const REQUEST_TOO_LARGE: ErrorCode = ErrorCode::new("SerializationException", 413);
    pub const INTERNAL_FAILURE: ErrorCode = ErrorCode::new("InternalFailure", 500);
    pub const SERVICE_UNAVAILABLE: ErrorCode = ErrorCode::new("ServiceUnavailable", 503);
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

    /// AWS's one-violation validation message.
    pub fn validation(member: &str, shown: &str, constraint: &str) -> ApiError {
        ApiError::new(
            codes::VALIDATION,
            format!(
                "1 validation error detected: Value '{shown}' at '{}' failed to satisfy constraint: {constraint}",
                document::lower_first(member)
            ),
        )
    }

    /// An internal failure, as clients see it: no detail of the server (files, paths) in it,
    /// only the request id under which the server's log has the detail.
    pub fn internal(request_id: &str) -> ApiError {
        ApiError::new(
            codes::INTERNAL_FAILURE,
            format!("The server failed to process the request; its log has the details under request id {request_id}."),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.type_name(), self.message)
    }
}

/// An error on its way to the client: an internal failure's detail (which may name files
/// of the server) goes to the server's log under the request id, and the client gets
/// [`ApiError::internal`] instead.
pub fn scrub(error: ApiError, service: &str, request_id: &str) -> ApiError {
    if error.code == codes::INTERNAL_FAILURE {
        eprintln!("millrace: {service} request {request_id}: internal failure: {}", error.message);
        ApiError::internal(request_id)
    } else {
        error
    }
}

/// How a service shapes its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"__type", "message"}` in the request's encoding (the JSON 1.1 and CBOR protocols).
    Json,
    /// `{"message"}` in JSON; the name only in `x-amzn-ErrorType` (rest-json).
    RestJson,
}

/// The body of an error answer.
pub fn error_body(style: ErrorStyle, protocol: Protocol, error: &ApiError) -> Vec<u8> {
    match style {
        ErrorStyle::Json => {
            let body =
                Value::map().with("__type", error.code.type_name()).with("message", error.message.as_str());
            document::encode(protocol, &body)
        }
        ErrorStyle::RestJson => {
            document::encode(Protocol::Json, &Value::map().with("message", error.message.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_carry_the_code_and_message() {
        let error = ApiError::new(codes::VALIDATION, "bad");
        let json = error_body(ErrorStyle::Json, Protocol::Json, &error);
        assert_eq!(json, br#"{"__type":"ValidationException","message":"bad"}"#);
        let rest = error_body(ErrorStyle::RestJson, Protocol::Cbor, &error);
        assert_eq!(rest, br#"{"message":"bad"}"#, "rest-json bodies are JSON whatever the request");
        let internal = ApiError::internal("req-1");
        assert!(internal.message.contains("req-1") && !internal.message.contains('/'));
    }
}
