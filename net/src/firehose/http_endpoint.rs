//! Delivery to an HTTP endpoint (`net/FIREHOSE-NOTES.md` §4): the request Firehose sends
//! (headers and JSON body, timestamps in milliseconds), how it judges the answer (only 200
//! with a conforming body delivers; 413 is permanent; everything else, malformed answers
//! included, is retried), and the backoff between attempts.
//!
//! Pure: the caller sends the request and brings back status, headers and body.

use std::time::Duration;

use crate::aws::document::{self, Protocol, Request, Value};

/// The endpoint has this long to answer each request.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(180);
/// Answers longer than this are not conforming.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// One batch as it is sent. Retries of a batch carry the same `request_id`.
pub struct Delivery<'a> {
    pub request_id: &'a str,
    pub source_arn: &'a str,
    /// Milliseconds since the epoch, when this attempt's request was made.
    pub timestamp_ms: i64,
    pub records: &'a [&'a [u8]],
    pub access_key: Option<&'a str>,
    pub common_attributes: &'a [(String, String)],
}

impl Delivery<'_> {
    /// Headers (besides `Content-Length` and, when compressed, `Content-Encoding: gzip`,
    /// which the sender adds) and the uncompressed body.
    pub fn request(&self) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let mut headers = vec![
            ("Content-Type", "application/json".to_owned()),
            ("X-Amz-Firehose-Protocol-Version", "1.0".to_owned()),
            ("X-Amz-Firehose-Request-Id", self.request_id.to_owned()),
            ("X-Amz-Firehose-Source-Arn", self.source_arn.to_owned()),
        ];
        if let Some(key) = self.access_key {
            headers.push(("X-Amz-Firehose-Access-Key", key.to_owned()));
        }
        if !self.common_attributes.is_empty() {
            let attributes = Value::Map(
                self.common_attributes
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
                    .collect(),
            );
            let header = document::encode(Protocol::Json, &Value::map().with("commonAttributes", attributes));
            headers.push((
                "X-Amz-Firehose-Common-Attributes",
                String::from_utf8(header).expect("JSON is UTF-8"),
            ));
        }
        let records: Vec<Value> =
            self.records.iter().map(|data| Value::map().with("data", Value::Bytes(data.to_vec()))).collect();
        let body = Value::map()
            .with("requestId", self.request_id)
            .with("timestamp", self.timestamp_ms)
            .with("records", records);
        (headers, document::encode(Protocol::Json, &body))
    }
}

/// What one attempt's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// Try again (until the retry duration runs out); `message` goes into the error record.
    Retry {
        message: String,
    },
    /// 413: neither retried nor written to the error prefix.
    Permanent,
}

/// Judges an endpoint's answer to the request with `request_id`.
pub fn judge(
    status: u16,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    request_id: &str,
) -> Answer {
    let retry = |message: String| Answer::Retry { message };
    if status == 413 {
        return Answer::Permanent;
    }
    if !(200..600).contains(&status) || (300..400).contains(&status) {
        return retry(format!("the endpoint answered status {status}, which is not 2xx, 4xx or 5xx"));
    }
    let message = match parse_body(content_type, content_encoding, body, request_id) {
        Ok(message) => message,
        Err(why) => return retry(format!("the endpoint's answer (status {status}) does not conform: {why}")),
    };
    if status == 200 {
        return Answer::Delivered;
    }
    retry(match message {
        Some(text) => format!("Received the following response from the endpoint destination. {text}"),
        None => format!("the endpoint answered status {status}"),
    })
}

/// The answer's body: `{"requestId": …, "timestamp": …, "errorMessage"?: …}`. Returns the
/// error message, if any.
pub fn parse_body(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
    request_id: &str,
) -> Result<Option<String>, String> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(format!("the body is {} bytes; at most {MAX_RESPONSE_BYTES} are allowed", body.len()));
    }
    if content_encoding.is_some_and(|encoding| !encoding.is_empty() && encoding != "identity") {
        return Err("the body must not carry a Content-Encoding".to_owned());
    }
    let json = content_type.and_then(|value| value.split(';').next()).map(str::trim);
    if !json.is_some_and(|media| media.eq_ignore_ascii_case("application/json")) {
        return Err("the body must be application/json".to_owned());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("the body is empty".to_owned());
    }
    let value = document::decode(Protocol::Json, body).map_err(|error| error.message)?;
    let answer = Request::new(Protocol::Json, &value);
    let got = answer.str_req("requestId").map_err(|error| error.message)?;
    if got != request_id {
        return Err(format!("requestId {got:?} does not match the request's {request_id:?}"));
    }
    // An integer per the schema; the documentation's own example sends a string.
    match answer.member("timestamp") {
        Some(Value::Int(_)) => {}
        Some(Value::Str(text)) if text.parse::<i64>().is_ok() => {}
        Some(_) => return Err("timestamp must be milliseconds since the epoch".to_owned()),
        None => return Err("timestamp is missing".to_owned()),
    }
    let message = answer.str_opt("errorMessage").map_err(|error| error.message)?;
    Ok(message.map(|text| text.chars().take(8192).collect()))
}

/// The wait before retry `n` (0 for the first): 1 s × 2ⁿ, capped at 2 minutes, times
/// `jitter` (AWS draws it from 0.85..1.15).
pub fn backoff(n: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << n.min(7)).min(Duration::from_secs(120));
    base.mul_f64(jitter.clamp(0.85, 1.15))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn the_request_as_documented() {
        let records: [&[u8]; 2] = [b"sample raw data", b""];
        let attributes = [("team".to_owned(), "a".to_owned())];
        let delivery = Delivery {
            request_id: "ed4acda5-034f-9f42-bba1-f29aea6d7d8f",
            source_arn: "arn:aws:firehose:us-east-1:123456789:deliverystream/testStream",
            timestamp_ms: 1_578_090_901_599,
            records: &records,
            access_key: Some("secret"),
            common_attributes: &attributes,
        };
        let (headers, body) = delivery.request();
        let header =
            |name: &str| headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str());
        assert_eq!(header("X-Amz-Firehose-Protocol-Version"), Some("1.0"));
        assert_eq!(header("X-Amz-Firehose-Request-Id"), Some("ed4acda5-034f-9f42-bba1-f29aea6d7d8f"));
        assert_eq!(header("X-Amz-Firehose-Access-Key"), Some("secret"));
        assert_eq!(header("X-Amz-Firehose-Common-Attributes"), Some(r#"{"commonAttributes":{"team":"a"}}"#));
        assert_eq!(header("Content-Type"), Some("application/json"));
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"requestId":"ed4acda5-034f-9f42-bba1-f29aea6d7d8f","timestamp":1578090901599,"records":[{"data":"c2FtcGxlIHJhdyBkYXRh"},{"data":""}]}"#
        );
        let bare = Delivery { access_key: None, common_attributes: &[], ..delivery };
        let (headers, _) = bare.request();
        assert!(headers.iter().all(|(name, _)| !name.contains("Access-Key") && !name.contains("Common")));
    }

    #[test]
    fn answers_are_judged_as_aws_documents() {
        let ok = br#"{"requestId":"r","timestamp":1578090903599}"#;
        assert_eq!(judge(200, JSON, None, ok, "r"), Answer::Delivered);
        assert_eq!(judge(200, Some("application/json; charset=utf-8"), None, ok, "r"), Answer::Delivered);
        assert_eq!(judge(413, None, None, b"", "r"), Answer::Permanent);
        let failed = br#"{"requestId":"r","timestamp":"1578090903599","errorMessage":"Unauthorized"}"#;
        assert_eq!(
            judge(401, JSON, None, failed, "r"),
            Answer::Retry {
                message: "Received the following response from the endpoint destination. Unauthorized".into()
            }
        );
        for (status, content_type, encoding, body) in [
            (302, JSON, None, &ok[..]),
            (201, JSON, None, &ok[..]),
            (200, None, None, &ok[..]),
            (200, Some("text/plain"), None, &ok[..]),
            (200, JSON, Some("gzip"), &ok[..]),
            (200, JSON, None, b""),
            (200, JSON, None, br#"{"requestId":"other","timestamp":1}"#),
            (200, JSON, None, br#"{"requestId":"r"}"#),
            (200, JSON, None, br#"{"requestId":"r","timestamp":"soon"}"#),
            (200, JSON, None, b"{"),
        ] {
            assert!(
                matches!(judge(status, content_type, encoding, body, "r"), Answer::Retry { .. }),
                "{status} {content_type:?} {encoding:?} {}",
                String::from_utf8_lossy(body)
            );
        }
        let huge = vec![b' '; MAX_RESPONSE_BYTES + 1];
        assert!(matches!(judge(200, JSON, None, &huge, "r"), Answer::Retry { .. }));
    }

    #[test]
    fn backoff_doubles_to_two_minutes() {
        assert_eq!(backoff(0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(7, 1.0), Duration::from_secs(120));
        assert_eq!(backoff(40, 1.0), Duration::from_secs(120));
        assert_eq!(backoff(0, 0.85), Duration::from_millis(850));
        assert_eq!(backoff(0, 9.0), Duration::from_millis(1150), "jitter is clamped");
    }
}
