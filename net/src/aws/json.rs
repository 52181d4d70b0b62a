//! JSON (RFC 8259), as the AWS JSON 1.1 protocol and rest-json bodies carry it: a one-pass
//! parser straight into [`Value`] with a word-at-a-time string scan (record data makes
//! strings of kilobytes), and the writer. Blobs are base64 (SIMD), timestamps epoch seconds.

use super::document::{serialization, Value, DEPTH_MAX};
use super::error::ApiError;

/// Decodes one JSON document, which must fill `body` (whitespace aside).
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let mut parser = JsonParser { bytes: body, at: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at != body.len() {
        return Err(parser.error("trailing characters after the JSON body"));
    }
    Ok(value)
}

/// Length of the prefix of `bytes` with no quote, backslash or control character: eight
/// bytes at a time (SWAR), since record data makes strings of kilobytes.
pub(crate) fn plain_prefix_len(bytes: &[u8]) -> usize {
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

pub(crate) fn write(out: &mut Vec<u8>, value: &Value) {
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
                write(out, item);
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
                write(out, item);
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
