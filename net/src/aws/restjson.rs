//! The request side of the rest-json protocol, as Kinesis Video (and the other path-routed
//! services) use it: the operation is named by method and path; its parameters come as a JSON
//! body (an empty body is an empty structure), some as headers (PutMedia's
//! `x-amzn-stream-name`), some in the query string. Errors go out in
//! [`super::ErrorStyle::RestJson`] (`x-amzn-ErrorType`, `{"message"}`). Pure.

use super::document::{self, Protocol, Value};
use super::error::{codes, ApiError};
use super::service::Head;

/// One operation of a path-routed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub name: &'static str,
}

/// The operation a request names; an `UnknownOperationException` (404) if none.
pub fn operation<'a>(operations: &'a [Operation], head: &Head) -> Result<&'a Operation, ApiError> {
    let path = head.path.trim_end_matches('/');
    operations
        .iter()
        .find(|operation| operation.method == head.method.as_str() && operation.path == path)
        .ok_or_else(|| {
            ApiError::new(
                codes::UNKNOWN_OPERATION_PATH,
                format!("No operation {} {}", head.method, head.path),
            )
        })
}

/// The JSON body of a request; an empty one is an empty structure.
pub fn body(bytes: &[u8]) -> Result<Value, ApiError> {
    document::decode(Protocol::Json, bytes)
}

/// The query string's parameters, percent-decoded, in order.
pub fn query(head: &Head) -> Vec<(String, String)> {
    head.query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => match text.get(at + 1..at + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                Some(byte) => {
                    out.push(byte);
                    at += 3;
                }
                None => {
                    out.push(b'%');
                    at += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                at += 1;
            }
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str, query: &str) -> Head {
        Head {
            method: method.parse().unwrap(),
            path: path.into(),
            query: query.into(),
            headers: http::HeaderMap::new(),
            operation: None,
            protocol: Protocol::Json,
            request_id: "r".into(),
            access_key: None,
        }
    }

    const OPERATIONS: [Operation; 2] = [
        Operation { method: "POST", path: "/createStream", name: "CreateStream" },
        Operation { method: "POST", path: "/putMedia", name: "PutMedia" },
    ];

    #[test]
    fn operations_by_method_and_path() {
        assert_eq!(operation(&OPERATIONS, &head("POST", "/putMedia", "")).unwrap().name, "PutMedia");
        assert_eq!(operation(&OPERATIONS, &head("POST", "/createStream/", "")).unwrap().name, "CreateStream");
        let unknown = operation(&OPERATIONS, &head("GET", "/putMedia", "")).unwrap_err();
        assert_eq!((unknown.code.type_name(), unknown.code.status()), ("UnknownOperationException", 404));
        assert_eq!(body(b"").unwrap(), Value::map());
        assert_eq!(body(br#"{"StreamName":"s"}"#).unwrap().get("StreamName"), Some(&Value::Str("s".into())));
        assert_eq!(
            query(&head("GET", "/x", "a=1&b=two%20words&c=%zz+x")),
            vec![("a".into(), "1".into()), ("b".into(), "two words".into()), ("c".into(), "%zz x".into())]
        );
    }
}
