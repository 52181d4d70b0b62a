//! CBOR (RFC 8949) for the subset AWS uses (`application/x-amz-cbor-1.1`, the Java SDK's
//! default for Kinesis): every major type, definite and indefinite lengths (Jackson writes
//! indefinite maps), half/single/double floats; blobs as byte strings, timestamps as epoch
//! milliseconds tagged 1. Every length is checked against the bytes left before anything is
//! allocated.

use super::document::{serialization, Value, DEPTH_MAX};
use super::error::ApiError;

/// Decodes one CBOR item, which must fill `body`.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let mut decoder = CborDecoder { bytes: body, at: 0 };
    let value = decoder.value(0)?;
    if decoder.at != body.len() {
        return Err(serialization("trailing bytes after the CBOR request body"));
    }
    Ok(value)
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

pub(crate) fn write(out: &mut Vec<u8>, value: &Value) {
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
                write(out, item);
            }
        }
        Value::Map(members) => {
            write_cbor_head(out, 5, members.len() as u64);
            for (key, item) in members {
                write_cbor_head(out, 3, key.len() as u64);
                out.extend_from_slice(key.as_bytes());
                write(out, item);
            }
        }
    }
}
