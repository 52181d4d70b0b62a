//! AWS Signature Version 4 verification, as the SDKs and the CLI sign requests.
//!
//! Pure: the caller hands in the method, path, query, headers, the payload and `now`; the
//! answer is who signed (and the key that chunked payloads are verified with), or the AWS
//! error a client expects. Only the `Authorization` header form is accepted (the SDKs' form
//! for these services); presigned URLs are not used by any of their clients.
//!
//! The variants the SDKs use, all accepted:
//! - the host signed as `host` (HTTP/1.1, and most SDKs over HTTP/2) or as the `:authority`
//!   pseudo-header (the JavaScript SDK v3's HTTP/2 handler sends no `host` at all);
//! - the payload hash of the body, or claimed in `x-amz-content-sha256`: a hex hash (checked
//!   against the body), `UNSIGNED-PAYLOAD` (the body is not covered), or the streaming forms
//!   `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (aws-chunked, each chunk signed; see
//!   [`super::chunked`]) and `STREAMING-UNSIGNED-PAYLOAD-TRAILER`;
//! - the credential scope names the service the request is for (`kinesis`, `firehose`,
//!   `kinesisvideo`, `kinesisanalytics`, `glue`, `monitoring`): a request signed for another
//!   service is refused, as AWS refuses it.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::error::{codes, ApiError};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's time may be from the server's, as AWS allows.
pub const SKEW_MAX_MS: i64 = 15 * 60 * 1000;

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    /// `date/region/service/aws4_request`
    pub scope: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

fn incomplete(message: impl Into<String>) -> ApiError {
    ApiError::new(codes::INCOMPLETE_SIGNATURE, message)
}

impl std::str::FromStr for Authorization {
    type Err = ApiError;

    fn from_str(header: &str) -> Result<Authorization, ApiError> {
        let rest = header
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| incomplete(format!("Authorization header requires the {ALGORITHM} algorithm")))?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=').ok_or_else(|| {
                incomplete(format!("Authorization header has a malformed part '{}'", part.trim()))
            })?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(incomplete(format!("Authorization header repeats {name}")));
            }
        }
        let missing = |name: &str| {
            incomplete(format!("Authorization header requires '{name}' parameter. Authorization={header}"))
        };
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
        let signature = signature.ok_or_else(|| missing("Signature"))?;
        let mut scope_parts = credential.splitn(5, '/');
        let (Some(access_key), Some(date), Some(region), Some(service), Some("aws4_request")) = (
            scope_parts.next(),
            scope_parts.next(),
            scope_parts.next(),
            scope_parts.next(),
            scope_parts.next(),
        ) else {
            return Err(incomplete(format!(
                "Credential should be scoped to a valid region, service and terminated by aws4_request: \
                 '{credential}'"
            )));
        };
        if access_key.is_empty() || date.len() != 8 || !date.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(incomplete(format!("Credential is malformed: '{credential}'")));
        }
        if signature.len() != 64 || !signature.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(incomplete("Signature must be 64 hexadecimal characters"));
        }
        let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
        if signed_headers.iter().any(|name| name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase())) {
            return Err(incomplete("SignedHeaders must be lower-case names separated by ';'"));
        }
        Ok(Authorization {
            access_key: access_key.to_owned(),
            scope: credential[access_key.len() + 1..].to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }
}

/// One request, as the verifier sees it. Header names are lower-case; an HTTP/2 request
/// carries its authority as `:authority` (and as `host` when it sent none).
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub payload: Payload<'a>,
}

/// What the verifier knows of the body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// The whole body (after any aws-chunked decoding, the body as sent).
    Body(&'a [u8]),
    /// Not read yet (a streamed upload): the signature must not depend on it, so it is
    /// `UNSIGNED-PAYLOAD`, a streaming form, or, with no `x-amz-content-sha256`, signed over an
    /// empty body as some streaming producers sign.
    Unread,
}

impl SignedRequest<'_> {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str()).collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }
}

/// `x-amz-content-sha256` of aws-chunked payloads whose chunks are signed.
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// `x-amz-content-sha256` of aws-chunked payloads whose chunks are not signed.
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Who signed a request, and what verifying its chunks needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key: String,
    /// `date/region/service/aws4_request`
    pub scope: String,
    pub amz_date: String,
    /// The request's own signature: the seed of a chunked payload's chain.
    pub signature: String,
    pub signing_key: [u8; 32],
    /// What `x-amz-content-sha256` said, if anything.
    pub content_sha256: Option<String>,
}

impl Verified {
    /// Whether the body is aws-chunked with signed chunks.
    pub fn chunks_signed(&self) -> bool {
        self.content_sha256.as_deref() == Some(STREAMING_SIGNED)
    }

    /// Whether the body is aws-chunked at all.
    pub fn is_chunked(&self) -> bool {
        self.content_sha256.as_deref().is_some_and(|claim| claim.starts_with("STREAMING-"))
    }
}

/// Checks a request's signature against the known keys. `service` is the signing name of
/// the API the request was routed to.
pub fn verify(
    request: &SignedRequest<'_>,
    secrets: &HashMap<String, String>,
    service: &str,
    now_ms: i64,
) -> Result<Verified, ApiError> {
    let header = request
        .header("authorization")
        .ok_or_else(|| ApiError::new(codes::MISSING_AUTHENTICATION_TOKEN, "Missing Authentication Token"))?;
    let authorization: Authorization = header.parse()?;
    let secret = secrets.get(&authorization.access_key).ok_or_else(|| {
        ApiError::new(codes::UNRECOGNIZED_CLIENT, "The security token included in the request is invalid.")
    })?;
    if !authorization.signed_headers.iter().any(|name| name == "host" || name == ":authority") {
        return Err(incomplete("The host header must be signed"));
    }
    if authorization.service != service {
        return Err(ApiError::new(
            codes::INVALID_SIGNATURE,
            format!("Credential should be scoped to correct service: '{service}'. "),
        ));
    }
    let amz_date = request
        .header("x-amz-date")
        .ok_or_else(|| incomplete("Authorization requires an X-Amz-Date header"))?
        .to_owned();
    let signed_ms = parse_amz_date(&amz_date).ok_or_else(|| {
        incomplete(format!("X-Amz-Date '{amz_date}' is not of the form YYYYMMDD'T'HHMMSS'Z'"))
    })?;
    if amz_date[..8] != authorization.date {
        return Err(ApiError::new(
            codes::INVALID_SIGNATURE,
            format!("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
                authorization.date, &amz_date[..8]),
        ));
    }
    if (now_ms - signed_ms).abs() > SKEW_MAX_MS {
        return Err(ApiError::new(
            codes::INVALID_SIGNATURE,
            format!(
                "Signature expired: {amz_date} is now earlier or later than the server time {} (15 min. allowed)",
                format_amz_date(now_ms)
            ),
        ));
    }
    let claim = request.header("x-amz-content-sha256").map(str::to_owned);
    let hashes: Vec<String> = match (&claim, request.payload) {
        (Some(claim), _) if claim == UNSIGNED_PAYLOAD || claim.starts_with("STREAMING-") => {
            vec![claim.clone()]
        }
        (Some(claim), Payload::Body(body)) => {
            if *claim != hex(&Sha256::digest(body)) {
                return Err(ApiError::new(
                    codes::INVALID_SIGNATURE,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
            vec![claim.clone()]
        }
        // A hash of a body not read yet: checked once the body is (see `PayloadCheck`).
        (Some(claim), Payload::Unread) => vec![claim.clone()],
        (None, Payload::Body(body)) => vec![hex(&Sha256::digest(body))],
        (None, Payload::Unread) => vec![hex(&Sha256::digest(b"")), UNSIGNED_PAYLOAD.to_owned()],
    };
    let key = signing_key(secret, &authorization.date, &authorization.region, &authorization.service);
    for payload_hash in hashes {
        let canonical = canonical_request(request, &authorization.signed_headers, &payload_hash)?;
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{}\n{}",
            authorization.scope,
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
        if constant_time_eq(expected.as_bytes(), authorization.signature.as_bytes()) {
            return Ok(Verified {
                access_key: authorization.access_key,
                scope: authorization.scope,
                amz_date,
                signature: authorization.signature,
                signing_key: key,
                content_sha256: claim,
            });
        }
    }
    Err(ApiError::new(
        codes::INVALID_SIGNATURE,
        "The request signature we calculated does not match the signature you provided. Check your AWS \
         Secret Access Key and signing method. Consult the service documentation for details.",
    ))
}

/// Signs a request the way the SDKs do; used by Millrace's own clients (CLI, bench) and by
/// the tests. Returns the `Authorization` header value.
pub fn sign(
    request: &SignedRequest<'_>,
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let mut signed_headers: Vec<String> = request.headers.iter().map(|(name, _)| name.clone()).collect();
    signed_headers.sort();
    signed_headers.dedup();
    let payload_hash = match (request.header("x-amz-content-sha256"), request.payload) {
        (Some(claim), _) => claim.to_owned(),
        (None, Payload::Body(body)) => hex(&Sha256::digest(body)),
        (None, Payload::Unread) => hex(&Sha256::digest(b"")),
    };
    let canonical =
        canonical_request(request, &signed_headers, &payload_hash).expect("own headers are present");
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign =
        format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let key = signing_key(secret, date, region, service);
    format!(
        "{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={}, Signature={}",
        signed_headers.join(";"),
        hex(&hmac(&key, string_to_sign.as_bytes()))
    )
}

fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &[String],
    payload_hash: &str,
) -> Result<String, ApiError> {
    let mut canonical = String::with_capacity(512);
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical.push_str(&uri_encode(request.path, false));
    canonical.push('\n');
    canonical.push_str(&canonical_query(request.query));
    canonical.push('\n');
    for name in signed_headers {
        let values = request.header_values(name);
        if values.is_empty() {
            return Err(incomplete(format!("Signed header '{name}' is not in the request")));
        }
        let values: Vec<String> = values.iter().map(|value| collapse_spaces(value)).collect();
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_headers.join(";"));
    canonical.push('\n');
    canonical.push_str(payload_hash);
    Ok(canonical)
}

/// SigV4's "trimall": spaces (and tabs) at the ends go, and every run of spaces inside
/// becomes one. Tabs inside a value stay, as the SDKs leave them (the Rust SDK collapses
/// spaces only; Go trims with `TrimSpace` and collapses spaces).
fn collapse_spaces(value: &str) -> String {
    let trimmed = value.trim_matches(|c| c == ' ' || c == '\t');
    let mut out = String::with_capacity(trimmed.len());
    let mut previous_space = false;
    for c in trimmed.chars() {
        if c == ' ' {
            if !previous_space {
                out.push(' ');
            }
            previous_space = true;
        } else {
            out.push(c);
            previous_space = false;
        }
    }
    out
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (uri_encode(&percent_decode(key), true), uri_encode(&percent_decode(value), true))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join("&")
}

/// AWS's URI encoding: unreserved characters stay, everything else is `%XX`; `/` stays in
/// paths. A path arrives already encoded, so `%` in it is kept as the client sent it.
pub(crate) fn uri_encode(text: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b'/' if !encode_slash => out.push('/'),
            b'%' if !encode_slash => out.push('%'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let Some(byte) =
                text.get(index + 1..index + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                index += 3;
                continue;
            }
        }
        out.push(if bytes[index] == b'+' { b' ' } else { bytes[index] });
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let key = hmac(&key, region.as_bytes());
    let key = hmac(&key, service.as_bytes());
    hmac(&key, b"aws4_request")
}

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(crate) fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `YYYYMMDDTHHMMSSZ` to milliseconds since the epoch.
pub fn parse_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes().all(|byte| byte.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

pub fn format_amz_date(millis: i64) -> String {
    let seconds = millis.div_euclid(1000);
    let (days, day_seconds) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        day_seconds / 3600,
        day_seconds / 60 % 60,
        day_seconds % 60
    )
}

// Howard Hinnant's civil-calendar algorithms.
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secrets() -> HashMap<String, String> {
        HashMap::from([("AKIDEXAMPLE".to_owned(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned())])
    }

    /// AWS's published example (sigv4 test suite, "get-vanilla"), whose signature is
    /// 5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31.
    #[test]
    fn matches_the_aws_test_suite_vector() {
        let headers = vec![
            ("host".to_owned(), "example.amazonaws.com".to_owned()),
            ("x-amz-date".to_owned(), "20150830T123600Z".to_owned()),
            (
                "authorization".to_owned(),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                    .to_owned(),
            ),
        ];
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload: Payload::Body(b""),
        };
        let now = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            verify(&request, &secrets(), "service", now).map(|signed| signed.access_key),
            Ok("AKIDEXAMPLE".to_owned())
        );
        // Fifteen minutes later it still passes; a second more and it has expired.
        assert!(verify(&request, &secrets(), "service", now + SKEW_MAX_MS).is_ok());
        let error = verify(&request, &secrets(), "service", now + SKEW_MAX_MS + 1000).unwrap_err();
        assert_eq!(error.code, codes::INVALID_SIGNATURE);
    }

    fn signed(body: &[u8]) -> Vec<(String, String)> {
        let mut headers = vec![
            ("host".to_owned(), "localhost:4567".to_owned()),
            ("x-amz-date".to_owned(), "20261122T050000Z".to_owned()),
            ("x-amz-target".to_owned(), "Kinesis_20131202.ListStreams".to_owned()),
        ];
        let request = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            payload: Payload::Body(body),
        };
        let secret = &secrets()["AKIDEXAMPLE"];
        let authorization = sign(&request, "AKIDEXAMPLE", secret, "us-east-1", "kinesis", "20261122T050000Z");
        headers.push(("authorization".to_owned(), authorization));
        headers
    }

    #[test]
    fn errors_have_the_aws_codes() {
        let now = parse_amz_date("20261122T050000Z").unwrap();
        let body = br#"{"Limit":1}"#;
        let headers = signed(body);
        let ok = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            payload: Payload::Body(body),
        };
        assert!(verify(&ok, &secrets(), "kinesis", now).is_ok());
        let tampered = SignedRequest { payload: Payload::Body(br#"{"Limit":2}"#), ..ok };
        assert_eq!(verify(&tampered, &secrets(), "kinesis", now).unwrap_err().code, codes::INVALID_SIGNATURE);
        let unknown = HashMap::from([("OTHER".to_owned(), "x".to_owned())]);
        assert_eq!(verify(&ok, &unknown, "kinesis", now).unwrap_err().code, codes::UNRECOGNIZED_CLIENT);
        let unsigned = SignedRequest { headers: &headers[..3], ..ok };
        assert_eq!(
            verify(&unsigned, &secrets(), "kinesis", now).unwrap_err().code,
            codes::MISSING_AUTHENTICATION_TOKEN
        );
        let mut broken = headers.clone();
        broken[3].1 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/us-east-1/kinesis".to_owned();
        let broken = SignedRequest { headers: &broken, ..ok };
        assert_eq!(
            verify(&broken, &secrets(), "kinesis", now).unwrap_err().code,
            codes::INCOMPLETE_SIGNATURE
        );
    }

    #[test]
    fn header_values_are_trimmed_as_the_sdks_trim_them() {
        assert_eq!(collapse_spaces("  attempt=1;   max=3 "), "attempt=1; max=3");
        assert_eq!(collapse_spaces("\ta\tb  c\t"), "a\tb c");
    }

    /// `headers` with the example key's `authorization` added, as a client signs them.
    fn signed_by_example(
        mut headers: Vec<(String, String)>,
        path: &str,
        payload: Payload<'_>,
        service: &str,
    ) -> Vec<(String, String)> {
        let request = SignedRequest { method: "POST", path, query: "", headers: &headers, payload };
        let secret = &secrets()["AKIDEXAMPLE"];
        let authorization = sign(&request, "AKIDEXAMPLE", secret, "us-east-1", service, "20261122T050000Z");
        headers.push(("authorization".to_owned(), authorization));
        headers
    }

    fn header(name: &str, value: impl Into<String>) -> (String, String) {
        (name.to_owned(), value.into())
    }

    /// Signs like the JavaScript SDK v3 over HTTP/2: `:authority` instead of `host`.
    #[test]
    fn the_authority_pseudo_header_stands_for_host() {
        let now = parse_amz_date("20261122T050000Z").unwrap();
        let payload = Payload::Body(br#"{}"#);
        let unsigned = vec![
            header(":authority", "127.0.0.1:4567"),
            header("x-amz-date", "20261122T050000Z"),
            header("x-amz-target", "Kinesis_20131202.ListStreams"),
        ];
        let headers = signed_by_example(unsigned, "/", payload, "kinesis");
        assert!(
            headers[3].1.contains("SignedHeaders=:authority;x-amz-date;x-amz-target"),
            "{}",
            headers[3].1
        );
        let request = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, payload };
        assert!(verify(&request, &secrets(), "kinesis", now).is_ok());
        // Another authority than the one signed does not pass.
        let mut moved = headers.clone();
        moved[0].1 = "127.0.0.1:9999".to_owned();
        let moved = SignedRequest { headers: &moved, ..request };
        assert_eq!(verify(&moved, &secrets(), "kinesis", now).unwrap_err().code, codes::INVALID_SIGNATURE);
    }

    /// `UNSIGNED-PAYLOAD` and the streaming claims leave the body out; a hex claim must match.
    #[test]
    fn payload_claims_are_honoured() {
        let now = parse_amz_date("20261122T050000Z").unwrap();
        for claim in [UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER] {
            let unsigned = vec![
                header("host", "localhost"),
                header("x-amz-content-sha256", claim),
                header("x-amz-date", "20261122T050000Z"),
            ];
            let headers = signed_by_example(unsigned, "/putMedia", Payload::Unread, "kinesisvideo");
            let request = SignedRequest {
                method: "POST",
                path: "/putMedia",
                query: "",
                headers: &headers,
                payload: Payload::Unread,
            };
            let signed = verify(&request, &secrets(), "kinesisvideo", now).unwrap();
            assert_eq!(signed.is_chunked(), claim.starts_with("STREAMING-"));
            assert_eq!(signed.chunks_signed(), claim == STREAMING_SIGNED);
            // The body does not matter to these claims.
            let with_body = SignedRequest { payload: Payload::Body(b"anything"), ..request };
            assert!(verify(&with_body, &secrets(), "kinesisvideo", now).is_ok());
        }
        // A hex claim that does not match the body is refused.
        let payload = Payload::Body(b"body");
        let unsigned = vec![
            header("host", "localhost"),
            header("x-amz-content-sha256", hex(&Sha256::digest(b"other"))),
            header("x-amz-date", "20261122T050000Z"),
        ];
        let headers = signed_by_example(unsigned, "/", payload, "kinesis");
        let request = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, payload };
        assert_eq!(verify(&request, &secrets(), "kinesis", now).unwrap_err().code, codes::INVALID_SIGNATURE);
    }

    proptest! {
        #[test]
        fn dates_round_trip(millis in 0i64..253_402_300_799_000) {
            let text = format_amz_date(millis);
            prop_assert_eq!(parse_amz_date(&text), Some(millis - millis % 1000));
        }

        #[test]
        fn the_header_parser_survives_garbage(header in "AWS4-HMAC-SHA256 .{0,120}") {
            let _ = header.parse::<Authorization>();
        }

        #[test]
        fn signatures_verify_for_any_body(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let headers = signed(&body);
            let request = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, payload: Payload::Body(&body) };
            let now = parse_amz_date("20261122T050000Z").unwrap();
            prop_assert!(verify(&request, &secrets(), "kinesis", now).is_ok());
        }
    }
}
