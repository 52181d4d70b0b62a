//! The `application/vnd.amazon.eventstream` message framing, used by SubscribeToShard to
//! push events down one HTTP response.
//!
//! ```text
//! offset        size  field (all integers big-endian)
//!      0           4  total length T (whole message, CRCs included)
//!      4           4  headers length H
//!      8           4  prelude CRC: CRC-32 (IEEE) of bytes 0..8
//!     12           H  headers: { name length u8, name, value type u8, value }*
//!   12+H   T-16-H     payload
//!    T-4           4  message CRC: CRC-32 (IEEE) of bytes 0..T-4
//! ```
//! Header value types: 0 true, 1 false, 2 i8, 3 i16, 4 i32, 5 i64, 6 bytes (u16 length),
//! 7 string (u16 length), 8 timestamp (i64 ms), 9 uuid (16 bytes).
//!
//! Pure: encode to bytes, decode from bytes with every length and CRC checked first.

/// Largest message accepted (AWS: 16 MiB), and largest header block (128 KiB).
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;
pub const HEADERS_BYTES_MAX: usize = 128 << 10;
const PRELUDE_BYTES: usize = 12;
const OVERHEAD_BYTES: usize = PRELUDE_BYTES + 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    Timestamp(i64),
    Uuid([u8; 16]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event stream message needs {needed} bytes, {available} are buffered")]
    Incomplete { needed: usize, available: usize },
    #[error("event stream message length {length} is outside 16..={MESSAGE_BYTES_MAX}")]
    BadLength { length: usize },
    #[error("event stream headers length {length} does not fit the message")]
    BadHeadersLength { length: usize },
    #[error("event stream prelude CRC mismatch")]
    PreludeCrc,
    #[error("event stream message CRC mismatch")]
    MessageCrc,
    #[error("event stream header at byte {offset} is malformed")]
    BadHeader { offset: usize },
}

impl Message {
    /// An event as AWS sends one: `:message-type` event, the event type and content type.
    pub fn event(event_type: &str, content_type: &str, payload: Vec<u8>) -> Message {
        Message {
            headers: vec![
                (":event-type".into(), HeaderValue::String(event_type.into())),
                (":content-type".into(), HeaderValue::String(content_type.into())),
                (":message-type".into(), HeaderValue::String("event".into())),
            ],
            payload,
        }
    }

    /// An exception event, which ends a stream.
    pub fn exception(exception_type: &str, content_type: &str, payload: Vec<u8>) -> Message {
        Message {
            headers: vec![
                (":exception-type".into(), HeaderValue::String(exception_type.into())),
                (":content-type".into(), HeaderValue::String(content_type.into())),
                (":message-type".into(), HeaderValue::String("exception".into())),
            ],
            payload,
        }
    }

    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value)
    }

    /// Encodes the message. Panics if a header name or value is longer than the format
    /// allows (names ≤ 255 bytes, values ≤ 65535): the server builds only small headers.
    pub fn encode(&self) -> Vec<u8> {
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            assert!(name.len() <= 255, "event stream header names are at most 255 bytes");
            headers.push(name.len() as u8);
            headers.extend_from_slice(name.as_bytes());
            let variable = |headers: &mut Vec<u8>, kind: u8, bytes: &[u8]| {
                assert!(
                    bytes.len() <= u16::MAX as usize,
                    "event stream header values are at most 65535 bytes"
                );
                headers.push(kind);
                headers.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                headers.extend_from_slice(bytes);
            };
            match value {
                HeaderValue::Bool(true) => headers.push(0),
                HeaderValue::Bool(false) => headers.push(1),
                HeaderValue::Byte(value) => headers.extend_from_slice(&[2, *value as u8]),
                HeaderValue::Short(value) => {
                    headers.push(3);
                    headers.extend_from_slice(&value.to_be_bytes());
                }
                HeaderValue::Int(value) => {
                    headers.push(4);
                    headers.extend_from_slice(&value.to_be_bytes());
                }
                HeaderValue::Long(value) => {
                    headers.push(5);
                    headers.extend_from_slice(&value.to_be_bytes());
                }
                HeaderValue::Bytes(bytes) => variable(&mut headers, 6, bytes),
                HeaderValue::String(text) => variable(&mut headers, 7, text.as_bytes()),
                HeaderValue::Timestamp(millis) => {
                    headers.push(8);
                    headers.extend_from_slice(&millis.to_be_bytes());
                }
                HeaderValue::Uuid(bytes) => {
                    headers.push(9);
                    headers.extend_from_slice(bytes);
                }
            }
        }
        let total = OVERHEAD_BYTES + headers.len() + self.payload.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let prelude_crc = crc32(&out);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        out.extend_from_slice(&headers);
        out.extend_from_slice(&self.payload);
        let message_crc = crc32(&out);
        out.extend_from_slice(&message_crc.to_be_bytes());
        out
    }

    /// Decodes the message at the start of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(Message, usize), DecodeError> {
        if bytes.len() < PRELUDE_BYTES {
            return Err(DecodeError::Incomplete { needed: PRELUDE_BYTES, available: bytes.len() });
        }
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let (total, headers_len) = (word(0), word(4));
        if crc32(&bytes[..8]) as usize != word(8) {
            return Err(DecodeError::PreludeCrc);
        }
        if !(OVERHEAD_BYTES..=MESSAGE_BYTES_MAX).contains(&total) {
            return Err(DecodeError::BadLength { length: total });
        }
        if headers_len > HEADERS_BYTES_MAX || headers_len > total - OVERHEAD_BYTES {
            return Err(DecodeError::BadHeadersLength { length: headers_len });
        }
        if bytes.len() < total {
            return Err(DecodeError::Incomplete { needed: total, available: bytes.len() });
        }
        if crc32(&bytes[..total - 4]) as usize != word(total - 4) {
            return Err(DecodeError::MessageCrc);
        }
        let headers_end = PRELUDE_BYTES + headers_len;
        let headers = decode_headers(&bytes[PRELUDE_BYTES..headers_end])
            .map_err(|offset| DecodeError::BadHeader { offset: PRELUDE_BYTES + offset })?;
        Ok((Message { headers, payload: bytes[headers_end..total - 4].to_vec() }, total))
    }
}

/// Parses a header block; the error is the offset of the bad header.
fn decode_headers(block: &[u8]) -> Result<Vec<(String, HeaderValue)>, usize> {
    let mut headers = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let start = at;
        let take = |at: &mut usize, count: usize| -> Result<&[u8], usize> {
            let slice = block.get(*at..*at + count).ok_or(start)?;
            *at += count;
            Ok(slice)
        };
        let name_len = take(&mut at, 1)?[0] as usize;
        let name = std::str::from_utf8(take(&mut at, name_len)?).map_err(|_| start)?.to_owned();
        let kind = take(&mut at, 1)?[0];
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(take(&mut at, 1)?[0] as i8),
            3 => HeaderValue::Short(i16::from_be_bytes(take(&mut at, 2)?.try_into().expect("2 bytes"))),
            4 => HeaderValue::Int(i32::from_be_bytes(take(&mut at, 4)?.try_into().expect("4 bytes"))),
            5 => HeaderValue::Long(i64::from_be_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"))),
            6 | 7 => {
                let len = u16::from_be_bytes(take(&mut at, 2)?.try_into().expect("2 bytes")) as usize;
                let bytes = take(&mut at, len)?.to_vec();
                if kind == 6 {
                    HeaderValue::Bytes(bytes)
                } else {
                    HeaderValue::String(String::from_utf8(bytes).map_err(|_| start)?)
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(take(&mut at, 8)?.try_into().expect("8 bytes"))),
            9 => HeaderValue::Uuid(take(&mut at, 16)?.try_into().expect("16 bytes")),
            _ => return Err(start),
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as the event stream uses.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut index = 0;
        while index < 256 {
            let mut crc = index as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
                bit += 1;
            }
            table[index] = crc;
            index += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in bytes {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// The AWS SDKs' test vector "int32_header": one header `event-type` = int 0x0000A00C,
    /// payload `{'foo':'bar'}`.
    #[test]
    fn decodes_the_aws_sdk_vector() {
        let bytes = [
            0x00, 0x00, 0x00, 0x2d, 0x00, 0x00, 0x00, 0x10, 0x41, 0xc4, 0x24, 0xb8, 0x0a, 0x65, 0x76, 0x65,
            0x6e, 0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x04, 0x00, 0x00, 0xa0, 0x0c, 0x7b, 0x27, 0x66, 0x6f,
            0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0x36, 0xf4, 0x80, 0xa0,
        ];
        let (message, used) = Message::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(message.headers, vec![("event-type".to_owned(), HeaderValue::Int(0xa00c))]);
        assert_eq!(message.payload, b"{'foo':'bar'}");
        assert_eq!(message.encode(), bytes);
    }

    fn arb_header() -> impl Strategy<Value = (String, HeaderValue)> {
        let value = prop_oneof![
            any::<bool>().prop_map(HeaderValue::Bool),
            any::<i8>().prop_map(HeaderValue::Byte),
            any::<i16>().prop_map(HeaderValue::Short),
            any::<i32>().prop_map(HeaderValue::Int),
            any::<i64>().prop_map(HeaderValue::Long),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(HeaderValue::Bytes),
            ".{0,20}".prop_map(HeaderValue::String),
            any::<i64>().prop_map(HeaderValue::Timestamp),
            any::<[u8; 16]>().prop_map(HeaderValue::Uuid),
        ];
        (":?[a-z-]{1,20}", value)
    }

    proptest! {
        #[test]
        fn round_trips(headers in proptest::collection::vec(arb_header(), 0..6),
                       payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let message = Message { headers, payload };
            let bytes = message.encode();
            prop_assert_eq!(Message::decode(&bytes), Ok((message, bytes.len())));
        }

        #[test]
        fn any_flipped_bit_is_caught(bit in 0usize..(8 * 60)) {
            let bytes = Message::event("SubscribeToShardEvent", "application/x-amz-json-1.1", b"{}".to_vec()).encode();
            let mut corrupt = bytes.clone();
            let bit = bit % (8 * bytes.len());
            corrupt[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Message::decode(&corrupt).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::decode(&bytes);
        }
    }

    #[test]
    fn short_buffers_are_incomplete_not_errors() {
        let bytes = Message::event("initial-response", "application/x-amz-json-1.1", b"{}".to_vec()).encode();
        for cut in 0..bytes.len() {
            assert!(
                matches!(Message::decode(&bytes[..cut]), Err(DecodeError::Incomplete { .. })),
                "cut {cut}"
            );
        }
    }
}
