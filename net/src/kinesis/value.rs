//! The document model shared by the two AWS JSON-protocol encodings Kinesis speaks:
//! `application/x-amz-json-1.1` and `application/x-amz-cbor-1.1`. Requests are decoded into
//! a [`Value`] tree, operations read it through [`Request`] and answer with a [`Value`],
//! which is encoded back in the client's own encoding.
//!
//! The two encodings differ in exactly two places, and both are handled here rather than in
//! the operations:
//! - blobs: JSON carries them as base64 strings, CBOR as byte strings;
//! - timestamps: JSON carries epoch *seconds* (a number with a fraction); the AWS SDKs' CBOR
//!   carries epoch *milliseconds* as an integer, tagged 1 (the Java SDK writes tag 1 with
//!   milliseconds, against RFC 8949's seconds; emulators that follow the RFC break it).

use super::error::{ApiError, ErrorCode};

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

    fn kind(&self) -> &'static str {
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

fn serialization(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Serialization, message)
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Decodes a request body. An empty body is an empty structure, as AWS treats it.
pub fn decode(protocol: Protocol, body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::map());
    }
    let value = match protocol {
        Protocol::Json => {
            let mut parser = JsonParser { bytes: body, at: 0 };
            let value = parser.value(0)?;
            parser.skip_whitespace();
            if parser.at != body.len() {
                return Err(parser.error("trailing characters after the JSON body"));
            }
            value
        }
        Protocol::Cbor => {
            let mut decoder = CborDecoder { bytes: body, at: 0 };
            let value = decoder.value(0)?;
            if decoder.at != body.len() {
                return Err(serialization("trailing bytes after the CBOR request body"));
            }
            value
        }
    };
    match value {
        Value::Map(_) => Ok(value),
        other => Err(serialization(format!("request body must be a structure, not a {}", other.kind()))),
    }
}

/// Length of the prefix of `bytes` with no quote, backslash or control character: eight
/// bytes at a time (SWAR), since record data makes strings of kilobytes.
fn plain_prefix_len(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Non-zero if some byte of `word` is below `limit` (exact as a yes/no for limit <= 128).
    let any_below = |word: u64, limit: u64| word.wrapping_sub(ONES * limit) & !word & HIGHS;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let special = any_below(word ^ (ONES * u64::from(b'"')), 1)
            | any_below(word ^ (ONES * u64::from(b'\\')), 1)
            | any_below(word, 0x20);
        if special != 0 {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .unwrap_or(bytes.len() - at)
}

/// A JSON (RFC 8259) parser straight into [`Value`]: one pass, one allocation per string,
/// no intermediate tree. Kinesis bodies are mostly base64 strings, so the string scan is
/// the hot loop.
struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn error(&self, what: &str) -> ApiError {
        serialization(format!("request body is not valid JSON: {what} at byte {}", self.at))
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Result<u8, ApiError> {
        self.skip_whitespace();
        self.bytes.get(self.at).copied().ok_or_else(|| self.error("unexpected end"))
    }

    fn expect(&mut self, byte: u8) -> Result<(), ApiError> {
        if self.peek()? != byte {
            return Err(self.error(&format!("expected '{}'", byte as char)));
        }
        self.at += 1;
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, ApiError> {
        if depth > DEPTH_MAX {
            return Err(serialization("request nests too deeply"));
        }
        match self.peek()? {
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                if self.peek()? == b'}' {
                    self.at += 1;
                    return Ok(Value::Map(members));
                }
                loop {
                    if self.peek()? != b'"' {
                        return Err(self.error("expected a member name"));
                    }
                    let key = self.string()?;
                    self.expect(b':')?;
                    members.push((key, self.value(depth + 1)?));
                    match self.peek()? {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            return Ok(Value::Map(members));
                        }
                        _ => return Err(self.error("expected ',' or '}'")),
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.peek()? == b']' {
                    self.at += 1;
                    return Ok(Value::List(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Ok(Value::List(items));
                        }
                        _ => return Err(self.error("expected ',' or ']'")),
                    }
                }
            }
            b'"' => Ok(Value::Str(self.string()?)),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(self.error("unexpected character")),
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, ApiError> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.bytes.get(self.at) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Value, ApiError> {
        let start = self.at;
        if self.bytes[self.at] == b'-' {
            self.at += 1;
        }
        let integer_start = self.at;
        if self.digits() == 0 {
            return Err(self.error("a number needs digits"));
        }
        if self.bytes[integer_start] == b'0' && self.at - integer_start > 1 {
            return Err(self.error("numbers have no leading zeros"));
        }
        let mut integral = true;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            integral = false;
            if self.digits() == 0 {
                return Err(self.error("a fraction needs digits"));
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            integral = false;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("an exponent needs digits"));
            }
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).expect("ASCII digits");
        if integral {
            if let Ok(int) = text.parse::<i64>() {
                return Ok(Value::Int(int));
            }
        }
        text.parse::<f64>().map(Value::Float).map_err(|_| self.error("invalid number"))
    }

    /// A string at `self.at` (which is a quote). Fast path: no escapes, one copy.
    fn string(&mut self) -> Result<String, ApiError> {
        self.at += 1;
        let start = self.at;
        let rest = &self.bytes[start..];
        let plain_len = plain_prefix_len(rest);
        let plain_len = (plain_len < rest.len()).then_some(plain_len);
        match plain_len {
            Some(len) if rest[len] == b'"' => {
                self.at = start + len + 1;
                std::str::from_utf8(&rest[..len])
                    .map(str::to_owned)
                    .map_err(|_| self.error("strings must be UTF-8"))
            }
            Some(len) if rest[len] == b'\\' => {
                let mut out = rest[..len].to_vec();
                self.at = start + len;
                self.escaped_tail(&mut out)?;
                String::from_utf8(out).map_err(|_| self.error("strings must be UTF-8"))
            }
            Some(len) => {
                self.at = start + len;
                Err(self.error("control characters must be escaped in strings"))
            }
            None => {
                self.at = self.bytes.len();
                Err(self.error("unterminated string"))
            }
        }
    }

    /// The rest of a string with escapes, up to and past its closing quote.
    fn escaped_tail(&mut self, out: &mut Vec<u8>) -> Result<(), ApiError> {
        loop {
            let byte = *self.bytes.get(self.at).ok_or_else(|| self.error("unterminated string"))?;
            self.at += 1;
            match byte {
                b'"' => return Ok(()),
                b'\\' => {
                    let escape = *self.bytes.get(self.at).ok_or_else(|| self.error("unterminated escape"))?;
                    self.at += 1;
                    match escape {
                        b'"' | b'\\' | b'/' => out.push(escape),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xd800..0xdc00).contains(&code) {
                                // A high surrogate must be followed by an escaped low one.
                                if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                                    return Err(self.error("unpaired surrogate"));
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    return Err(self.error("unpaired surrogate"));
                                }
                                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                            }
                            let character =
                                char::from_u32(code).ok_or_else(|| self.error("unpaired surrogate"))?;
                            let mut buffer = [0u8; 4];
                            out.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                0..=0x1f => return Err(self.error("control characters must be escaped in strings")),
                _ => out.push(byte),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ApiError> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or_else(|| self.error("short \\u escape"))?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(self.error("invalid \\u escape"));
        }
        let text = std::str::from_utf8(digits).expect("hex digits are ASCII");
        self.at += 4;
        Ok(u32::from_str_radix(text, 16).expect("four hex digits"))
    }
}

/// RFC 8949 decoder for the subset AWS uses: every major type, definite and indefinite
/// lengths, half/single/double floats. Every length is checked against the bytes left
/// before anything is allocated.
struct CborDecoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

const BREAK: u8 = 0xff;

impl CborDecoder<'_> {
    fn byte(&mut self) -> Result<u8, ApiError> {
        let byte = *self.bytes.get(self.at).ok_or_else(|| serialization("CBOR body ends early"))?;
        self.at += 1;
        Ok(byte)
    }

    fn take(&mut self, count: u64) -> Result<&[u8], ApiError> {
        let left = (self.bytes.len() - self.at) as u64;
        if count > left {
            return Err(serialization("CBOR length runs past the end of the body"));
        }
        let start = self.at;
        self.at += count as usize;
        Ok(&self.bytes[start..self.at])
    }

    /// The argument of an initial byte; `None` for the indefinite-length marker.
    fn argument(&mut self, initial: u8) -> Result<Option<u64>, ApiError> {
        let info = initial & 0x1f;
        Ok(Some(match info {
            0..=23 => info.into(),
            24 => self.byte()?.into(),
            25 => u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")).into(),
            26 => u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")).into(),
            27 => u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")),
            31 => return Ok(None),
            _ => return Err(serialization(format!("reserved CBOR additional information {info}"))),
        }))
    }

    fn at_break(&mut self) -> Result<bool, ApiError> {
        match self.bytes.get(self.at) {
            Some(&BREAK) => {
                self.at += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(serialization("CBOR body ends inside an indefinite-length item")),
        }
    }

    /// A definite or indefinite byte/text string of `major` type.
    fn string(&mut self, major: u8, length: Option<u64>) -> Result<Vec<u8>, ApiError> {
        match length {
            Some(length) => Ok(self.take(length)?.to_vec()),
            None => {
                let mut out = Vec::new();
                while !self.at_break()? {
                    let initial = self.byte()?;
                    if initial >> 5 != major {
                        return Err(serialization("CBOR indefinite string has a chunk of another type"));
                    }
                    let length = self
                        .argument(initial)?
                        .ok_or_else(|| serialization("CBOR indefinite string chunk is itself indefinite"))?;
                    out.extend_from_slice(self.take(length)?);
                }
                Ok(out)
            }
        }
    }

    fn text(&mut self, length: Option<u64>) -> Result<String, ApiError> {
        String::from_utf8(self.string(3, length)?).map_err(|_| serialization("CBOR text is not UTF-8"))
    }

    fn value(&mut self, depth: usize) -> Result<Value, ApiError> {
        if depth > DEPTH_MAX {
            return Err(serialization("request nests too deeply"));
        }
        let initial = self.byte()?;
        let major = initial >> 5;
        if major == 7 {
            return self.simple(initial);
        }
        let argument = self.argument(initial)?;
        match major {
            0 => {
                let value = argument.ok_or_else(|| serialization("indefinite CBOR integer"))?;
                i64::try_from(value).map(Value::Int).map_err(|_| serialization("CBOR integer out of range"))
            }
            1 => {
                let value = argument.ok_or_else(|| serialization("indefinite CBOR integer"))?;
                i64::try_from(value)
                    .map(|value| Value::Int(-1 - value))
                    .map_err(|_| serialization("CBOR integer out of range"))
            }
            2 => Ok(Value::Bytes(self.string(2, argument)?)),
            3 => Ok(Value::Str(self.text(argument)?)),
            4 => {
                let mut items = Vec::new();
                match argument {
                    Some(count) => {
                        // Each item takes at least one byte: a count above what is left is a lie.
                        self.check_count(count)?;
                        for _ in 0..count {
                            items.push(self.value(depth + 1)?);
                        }
                    }
                    None => {
                        while !self.at_break()? {
                            items.push(self.value(depth + 1)?);
                        }
                    }
                }
                Ok(Value::List(items))
            }
            5 => {
                let mut members = Vec::new();
                match argument {
                    Some(count) => {
                        self.check_count(count.saturating_mul(2))?;
                        for _ in 0..count {
                            members.push(self.member(depth)?);
                        }
                    }
                    None => {
                        while !self.at_break()? {
                            members.push(self.member(depth)?);
                        }
                    }
                }
                Ok(Value::Map(members))
            }
            6 => {
                let tag = argument.ok_or_else(|| serialization("indefinite CBOR tag"))?;
                let inner = self.value(depth + 1)?;
                match (tag, inner) {
                    // Timestamps: milliseconds, as the AWS SDKs write them.
                    (1, Value::Int(millis)) => Ok(Value::Timestamp(millis)),
                    (1, Value::Float(millis)) => Ok(Value::Timestamp(millis as i64)),
                    (_, inner) => Ok(inner),
                }
            }
            _ => unreachable!("major type is three bits"),
        }
    }

    fn check_count(&self, count: u64) -> Result<(), ApiError> {
        if count > (self.bytes.len() - self.at) as u64 {
            return Err(serialization("CBOR item count runs past the end of the body"));
        }
        Ok(())
    }

    fn member(&mut self, depth: usize) -> Result<(String, Value), ApiError> {
        let initial = self.byte()?;
        if initial >> 5 != 3 {
            return Err(serialization("CBOR map key is not a text string"));
        }
        let length = self.argument(initial)?;
        let key = self.text(length)?;
        Ok((key, self.value(depth + 1)?))
    }

    fn simple(&mut self, initial: u8) -> Result<Value, ApiError> {
        match initial & 0x1f {
            20 => Ok(Value::Bool(false)),
            21 => Ok(Value::Bool(true)),
            22 | 23 => Ok(Value::Null),
            25 => {
                Ok(Value::Float(f16_to_f64(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))))
            }
            26 => Ok(Value::Float(f32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")).into())),
            27 => Ok(Value::Float(f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))),
            31 => Err(serialization("unexpected CBOR break")),
            other => Err(serialization(format!("unsupported CBOR simple value {other}"))),
        }
    }
}

fn f16_to_f64(half: u16) -> f64 {
    let sign = if half & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((half >> 10) & 0x1f);
    let mantissa = f64::from(half & 0x3ff);
    sign * match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + mantissa / 1024.0) * 2f64.powi(exponent - 15),
    }
}

// ---------------------------------------------------------------------------------------
// Encoding

pub fn encode(protocol: Protocol, value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match protocol {
        Protocol::Json => write_json(&mut out, value),
        Protocol::Cbor => write_cbor(&mut out, value),
    }
    out
}

fn write_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(value) => out.extend_from_slice(if *value { b"true" } else { b"false" }),
        Value::Int(value) => out.extend_from_slice(value.to_string().as_bytes()),
        Value::Float(value) if value.is_finite() => out.extend_from_slice(value.to_string().as_bytes()),
        Value::Float(_) => out.extend_from_slice(b"null"),
        Value::Str(text) => write_json_string(out, text),
        Value::Bytes(bytes) => {
            out.push(b'"');
            let start = out.len();
            out.resize(start + base64_simd::STANDARD.encoded_length(bytes.len()), 0);
            let _ = base64_simd::STANDARD.encode(bytes, base64_simd::Out::from_slice(&mut out[start..]));
            out.push(b'"');
        }
        Value::Timestamp(millis) => {
            // Epoch seconds with the milliseconds as a fraction, as Kinesis answers.
            let seconds = millis.div_euclid(1000);
            let fraction = millis.rem_euclid(1000);
            out.extend_from_slice(format!("{seconds}.{fraction:03}").as_bytes());
        }
        Value::List(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Value::Map(members) => {
            out.push(b'{');
            for (index, (key, item)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json_string(out, key);
                out.push(b':');
                write_json(out, item);
            }
            out.push(b'}');
        }
    }
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

fn write_cbor_head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let major = major << 5;
    match argument {
        0..=23 => out.push(major | argument as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, argument as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(argument as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(argument as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&argument.to_be_bytes());
        }
    }
}

fn write_cbor_int(out: &mut Vec<u8>, value: i64) {
    if value >= 0 {
        write_cbor_head(out, 0, value as u64);
    } else {
        write_cbor_head(out, 1, (-1 - value) as u64);
    }
}

fn write_cbor(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(value) => out.push(if *value { 0xf5 } else { 0xf4 }),
        Value::Int(value) => write_cbor_int(out, *value),
        Value::Float(value) => {
            out.push(0xfb);
            out.extend_from_slice(&value.to_be_bytes());
        }
        Value::Str(text) => {
            write_cbor_head(out, 3, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
        Value::Bytes(bytes) => {
            write_cbor_head(out, 2, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        Value::Timestamp(millis) => {
            write_cbor_head(out, 6, 1);
            write_cbor_int(out, *millis);
        }
        Value::List(items) => {
            write_cbor_head(out, 4, items.len() as u64);
            for item in items {
                write_cbor(out, item);
            }
        }
        Value::Map(members) => {
            write_cbor_head(out, 5, members.len() as u64);
            for (key, item) in members {
                write_cbor_head(out, 3, key.len() as u64);
                out.extend_from_slice(key.as_bytes());
                write_cbor(out, item);
            }
        }
    }
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
        ErrorCode::Validation,
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
            prop_assert_eq!(plain_prefix_len(&bytes), naive);
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
        assert_eq!(request.str_req("StreamName").unwrap_err().code, ErrorCode::Serialization);
        let error = request.str_req("ShardId").unwrap_err();
        assert_eq!(error.code, ErrorCode::Validation);
        assert!(error.message.contains("'shardId'"), "{}", error.message);
        assert_eq!(decode(Protocol::Json, b"[1]").unwrap_err().code, ErrorCode::Serialization);
        assert_eq!(decode(Protocol::Json, b"").unwrap(), Value::map());
    }
}
