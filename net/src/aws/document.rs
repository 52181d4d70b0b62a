//! The document model every AWS protocol decodes into: a request body becomes a [`Value`]
//! tree, an operation reads it through [`Request`] and answers with a [`Value`], which is
//! encoded back in the client's own encoding. Two encodings ([`Protocol`]): JSON (the
//! `application/x-amz-json-1.1` protocol, and the bodies of rest-json services) in
//! [`super::json`], and CBOR (`application/x-amz-cbor-1.1`) in [`super::cbor`].
//!
//! The two differ in exactly two places, and both are handled here rather than in the
//! operations:
//! - blobs: JSON carries them as base64 strings, CBOR as byte strings;
//! - timestamps: JSON carries epoch *seconds* (a number with a fraction); the AWS SDKs' CBOR
//!   carries epoch *milliseconds* as an integer, tagged 1 (the Java SDK writes tag 1 with
//!   milliseconds, against RFC 8949's seconds; emulators that follow the RFC break it).
//!
//! Pure: bytes in, values out; fuzzed by `fuzz/fuzz_targets/aws_document.rs`.

use super::error::{codes, ApiError};

/// Deepest nesting a request may have. Kinesis requests nest three levels at most.
pub const DEPTH_MAX: usize = 32;

/// The wire encoding of one request, and so of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Json,
    Cbor,
}

impl Protocol {
    pub fn from_content_type(content_type: &str) -> Protocol {
        if content_type.trim().starts_with("application/x-amz-cbor") {
            Protocol::Cbor
        } else {
            Protocol::Json
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::Json => "application/x-amz-json-1.1",
            Protocol::Cbor => "application/x-amz-cbor-1.1",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    pub fn map() -> Value {
        Value::Map(Vec::new())
    }

    /// Adds a member to a map (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Value {
        match &mut self {
            Value::Map(members) => members.push((key.to_owned(), value.into())),
            _ => panic!("with() on a non-map value"),
        }
        self
    }

    /// Adds a member only when there is one.
    pub fn with_opt(self, key: &str, value: Option<impl Into<Value>>) -> Value {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(members) => members.iter().find(|(name, _)| name == key).map(|(_, value)| value),
            _ => None,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Bytes(_) => "blob",
            Value::Timestamp(_) => "timestamp",
            Value::List(_) => "list",
            Value::Map(_) => "structure",
        }
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Str(value.to_owned())
    }
}
impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Str(value)
    }
}
impl From<bool> for Value {
    fn from(value: bool) -> Value {
        Value::Bool(value)
    }
}
impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Int(value)
    }
}
impl From<u32> for Value {
    fn from(value: u32) -> Value {
        Value::Int(value.into())
    }
}
impl From<usize> for Value {
    fn from(value: usize) -> Value {
        Value::Int(value as i64)
    }
}
impl From<Vec<Value>> for Value {
    fn from(value: Vec<Value>) -> Value {
        Value::List(value)
    }
}

pub(crate) fn serialization(message: impl Into<String>) -> ApiError {
    ApiError::new(codes::SERIALIZATION, message)
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Decodes a request body. An empty body is an empty structure, as AWS treats it.
pub fn decode(protocol: Protocol, body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::map());
    }
    let value = match protocol {
        Protocol::Json => super::json::decode(body)?,
        Protocol::Cbor => super::cbor::decode(body)?,
    };
    match value {
        Value::Map(_) => Ok(value),
        other => Err(serialization(format!("request body must be a structure, not a {}", other.kind()))),
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

pub fn encode(protocol: Protocol, value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match protocol {
        Protocol::Json => super::json::write(&mut out, value),
        Protocol::Cbor => super::cbor::write(&mut out, value),
    }
    out
}

// ---------------------------------------------------------------------------------------
// Reading a request

/// A decoded request structure, read member by member with AWS's error shapes: a member of
/// the wrong type is a SerializationException, a missing required one a ValidationException.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub protocol: Protocol,
    pub value: &'a Value,
}

impl<'a> Request<'a> {
    pub fn new(protocol: Protocol, value: &'a Value) -> Request<'a> {
        Request { protocol, value }
    }

    /// A member, treating an explicit null as absent (as the SDKs do).
    pub fn member(&self, name: &str) -> Option<&'a Value> {
        self.value.get(name).filter(|value| **value != Value::Null)
    }

    pub fn has(&self, name: &str) -> bool {
        self.member(name).is_some()
    }

    fn wrong_type(name: &str, expected: &str, got: &Value) -> ApiError {
        serialization(format!("member {name} must be a {expected}, not a {}", got.kind()))
    }

    pub fn str_opt(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(Value::Str(text)) => Ok(Some(text)),
            Some(other) => Err(Self::wrong_type(name, "string", other)),
        }
    }

    pub fn str_req(&self, name: &str) -> Result<&'a str, ApiError> {
        self.str_opt(name)?.ok_or_else(|| missing(name))
    }

    pub fn int_opt(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(Value::Int(value)) => Ok(Some(*value)),
            Some(Value::Float(value)) if value.fract() == 0.0 && value.abs() < 9.0e15 => {
                Ok(Some(*value as i64))
            }
            Some(other) => Err(Self::wrong_type(name, "integer", other)),
        }
    }

    pub fn int_req(&self, name: &str) -> Result<i64, ApiError> {
        self.int_opt(name)?.ok_or_else(|| missing(name))
    }

    pub fn bool_opt(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(other) => Err(Self::wrong_type(name, "boolean", other)),
        }
    }

    pub fn blob_opt(&self, name: &str) -> Result<Option<Vec<u8>>, ApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(Value::Bytes(bytes)) => Ok(Some(bytes.clone())),
            // SIMD base64: record data is the bulk of every put.
            Some(Value::Str(text)) => base64_simd::STANDARD
                .decode_to_vec(text)
                .map(Some)
                .map_err(|_| serialization(format!("member {name} is not valid base64"))),
            Some(other) => Err(Self::wrong_type(name, "blob", other)),
        }
    }

    pub fn blob_req(&self, name: &str) -> Result<Vec<u8>, ApiError> {
        self.blob_opt(name)?.ok_or_else(|| missing(name))
    }

    /// A timestamp in milliseconds since the epoch: JSON sends seconds (with a fraction, or
    /// as an ISO-8601 string from some clients), CBOR sends milliseconds.
    pub fn timestamp_opt(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let scale = match self.protocol {
            Protocol::Json => 1000.0,
            Protocol::Cbor => 1.0,
        };
        match self.member(name) {
            None => Ok(None),
            Some(Value::Timestamp(millis)) => Ok(Some(*millis)),
            Some(Value::Int(value)) => Ok(Some((*value as f64 * scale) as i64)),
            Some(Value::Float(value)) if value.is_finite() => Ok(Some((value * scale).round() as i64)),
            Some(other) => Err(Self::wrong_type(name, "timestamp", other)),
        }
    }

    pub fn list_opt(&self, name: &str) -> Result<Option<&'a [Value]>, ApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(Value::List(items)) => Ok(Some(items)),
            Some(other) => Err(Self::wrong_type(name, "list", other)),
        }
    }

    pub fn list_req(&self, name: &str) -> Result<&'a [Value], ApiError> {
        self.list_opt(name)?.ok_or_else(|| missing(name))
    }

    /// A nested structure, read the same way.
    pub fn structure_opt(&self, name: &str) -> Result<Option<Request<'a>>, ApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(value @ Value::Map(_)) => Ok(Some(Request::new(self.protocol, value))),
            Some(other) => Err(Self::wrong_type(name, "structure", other)),
        }
    }

    /// A string-to-string map (AWS `map` shape).
    pub fn string_map_opt(&self, name: &str) -> Result<Option<Vec<(String, String)>>, ApiError> {
        match self.member(name) {
            None => Ok(None),
            Some(Value::Map(members)) => members
                .iter()
                .map(|(key, value)| match value {
                    Value::Str(text) => Ok((key.clone(), text.clone())),
                    other => Err(Self::wrong_type(name, "map of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(Self::wrong_type(name, "map", other)),
        }
    }
}

/// AWS's wording for a missing required member.
pub fn missing(name: &str) -> ApiError {
    let field = lower_first(name);
    ApiError::new(
        codes::VALIDATION,
        format!("1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"),
    )
}

/// AWS names members in validation messages with a lower-case first letter.
pub fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::Float),
            ".{0,20}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
            any::<i64>().prop_map(Value::Timestamp),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec(("[a-zA-Z]{1,8}", inner), 0..6).prop_map(Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn cbor_round_trips(members in proptest::collection::vec(("[a-zA-Z]{1,8}", arb_value()), 0..6)) {
            let value = Value::Map(members);
            let bytes = encode(Protocol::Cbor, &value);
            prop_assert_eq!(decode(Protocol::Cbor, &bytes).unwrap(), value);
        }

        #[test]
        fn cbor_decoder_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Protocol::Cbor, &bytes);
        }

        #[test]
        fn json_strings_round_trip(text in "\\PC{0,40}|[\\x00-\\x1f\"\\\\]{0,10}") {
            let value = Value::map().with("S", text.clone());
            let bytes = encode(Protocol::Json, &value);
            let decoded = decode(Protocol::Json, &bytes).unwrap();
            prop_assert_eq!(decoded.get("S"), Some(&Value::Str(text)));
        }

        #[test]
        fn blobs_round_trip_in_both_encodings(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            for protocol in [Protocol::Json, Protocol::Cbor] {
                let bytes = encode(protocol, &Value::map().with("Data", Value::Bytes(data.clone())));
                let decoded = decode(protocol, &bytes).unwrap();
                prop_assert_eq!(Request::new(protocol, &decoded).blob_req("Data").unwrap(), data.clone());
            }
        }
    }

    /// The same answers as serde_json, on documents serde_json writes.
    fn from_serde(value: serde_json::Value) -> Value {
        match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(value) => Value::Bool(value),
            serde_json::Value::Number(number) => match number.as_i64() {
                Some(int) => Value::Int(int),
                None => Value::Float(number.as_f64().unwrap()),
            },
            serde_json::Value::String(text) => Value::Str(text),
            serde_json::Value::Array(items) => Value::List(items.into_iter().map(from_serde).collect()),
            serde_json::Value::Object(members) => {
                Value::Map(members.into_iter().map(|(key, value)| (key, from_serde(value))).collect())
            }
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|int| serde_json::json!(int)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|float| serde_json::json!(float)),
            r#"\PC{0,12}|[\x00-\x1f"\\/\u{1F600}]{0,6}"#.prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..5)
                    .prop_map(|members| serde_json::Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_parser_agrees_with_serde_json(
            members in proptest::collection::btree_map("[a-zA-Z]{1,6}", arb_json(), 0..5),
            pretty in any::<bool>(),
        ) {
            let document = serde_json::Value::Object(members.into_iter().collect());
            let text =
                if pretty { serde_json::to_vec_pretty(&document).unwrap() } else { serde_json::to_vec(&document).unwrap() };
            prop_assert_eq!(decode(Protocol::Json, &text).unwrap(), from_serde(document));
        }

        #[test]
        fn json_parser_refuses_what_serde_json_refuses(text in r#"[\[\]{}",:0-9a-z.eE+\-\\ ]{0,24}"#) {
            if text.trim().is_empty() {
                return Ok(());
            }
            let ours = decode(Protocol::Json, text.as_bytes());
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(_)) => prop_assert!(ours.is_ok(), "{}: {:?}", text, ours),
                _ => prop_assert!(ours.is_err(), "{}: {:?}", text, ours),
            }
        }
    }

    proptest! {
        #[test]
        fn the_word_scan_finds_the_first_special_byte(bytes in proptest::collection::vec(
            prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, Just(b'A')], 0..64)) {
            let naive = bytes.iter().position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20).unwrap_or(bytes.len());
            prop_assert_eq!(super::super::json::plain_prefix_len(&bytes), naive);
        }
    }

    #[test]
    fn escapes_and_surrogates() {
        let value = decode(Protocol::Json, br#"{"S":"a\"b\\c\/d\n\u00e9\ud83d\ude00"}"#).unwrap();
        assert_eq!(value.get("S"), Some(&Value::Str("a\"b\\c/d\n\u{e9}\u{1F600}".into())));
        let bad: [&[u8]; 5] =
            [br#"{"S":"\ud83d"}"#, br#"{"S":"\x"}"#, b"{\"S\":\"\x01\"}", br#"{"S":01}"#, br#"{"S":1.}"#];
        for bad in bad {
            assert!(decode(Protocol::Json, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn timestamps_are_seconds_in_json_and_millis_in_cbor() {
        let json = encode(Protocol::Json, &Value::map().with("T", Value::Timestamp(1_700_000_000_123)));
        assert_eq!(std::str::from_utf8(&json).unwrap(), r#"{"T":1700000000.123}"#);
        let decoded = decode(Protocol::Json, &json).unwrap();
        assert_eq!(
            Request::new(Protocol::Json, &decoded).timestamp_opt("T").unwrap(),
            Some(1_700_000_000_123)
        );
        // Tag 1 followed by milliseconds, as the Java SDK writes them.
        let cbor = encode(Protocol::Cbor, &Value::map().with("T", Value::Timestamp(1_700_000_000_123)));
        assert_eq!(&cbor[..4], &[0xa1, 0x61, b'T', 0xc1]);
        let decoded = decode(Protocol::Cbor, &cbor).unwrap();
        assert_eq!(
            Request::new(Protocol::Cbor, &decoded).timestamp_opt("T").unwrap(),
            Some(1_700_000_000_123)
        );
        // An untagged number in CBOR is milliseconds too.
        let untagged = [0xa1, 0x61, b'T', 0x1b, 0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b];
        let decoded = decode(Protocol::Cbor, &untagged).unwrap();
        assert_eq!(
            Request::new(Protocol::Cbor, &decoded).timestamp_opt("T").unwrap(),
            Some(1_700_000_000_123)
        );
    }

    #[test]
    fn indefinite_cbor_maps_and_strings_decode() {
        // {_ "A": (_ h'01', h'02'), "B": [_ 1, 2]} as Jackson's CBOR generator writes them.
        let bytes =
            [0xbf, 0x61, b'A', 0x5f, 0x41, 0x01, 0x41, 0x02, 0xff, 0x61, b'B', 0x9f, 0x01, 0x02, 0xff, 0xff];
        let value = decode(Protocol::Cbor, &bytes).unwrap();
        assert_eq!(value.get("A"), Some(&Value::Bytes(vec![1, 2])));
        assert_eq!(value.get("B"), Some(&Value::List(vec![Value::Int(1), Value::Int(2)])));
    }

    #[test]
    fn lying_lengths_are_refused_without_allocating() {
        // A byte string claiming 2^63 bytes, and an array claiming 2^32 items.
        assert!(decode(Protocol::Cbor, &[0xa1, 0x61, b'A', 0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode(Protocol::Cbor, &[0x9a, 0xff, 0xff, 0xff, 0xff]).is_err());
        let deep = vec![0x81u8; 10_000];
        assert!(decode(Protocol::Cbor, &deep).is_err());
    }

    #[test]
    fn wrong_types_are_serialization_errors_and_missing_is_validation() {
        let value = decode(Protocol::Json, br#"{"StreamName": 5}"#).unwrap();
        let request = Request::new(Protocol::Json, &value);
        assert_eq!(request.str_req("StreamName").unwrap_err().code, codes::SERIALIZATION);
        let error = request.str_req("ShardId").unwrap_err();
        assert_eq!(error.code, codes::VALIDATION);
        assert!(error.message.contains("'shardId'"), "{}", error.message);
        assert_eq!(decode(Protocol::Json, b"[1]").unwrap_err().code, codes::SERIALIZATION);
        assert_eq!(decode(Protocol::Json, b"").unwrap(), Value::map());
    }
}
