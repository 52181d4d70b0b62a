//! The native protocol's byte layouts (see `net/PROTOCOL.md`): the 32-byte frame header and
//! the payload of every message kind. Pure: bytes in, messages out, every length checked
//! against what is there before anything is allocated.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MAGIC: u32 = u32::from_le_bytes(*b"MRQ1");
pub const VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 32;
/// Largest payload: a 10 MiB record and its batch, with room.
pub const PAYLOAD_BYTES_MAX: u32 = (16 << 20) + (64 << 10);

/// ```text
/// offset size field
///      0    4 magic        "MRQ1"
///      4    1 version      1
///      5    1 kind
///      6    2 flags        bit 0 RESENT on PUT_STAMPED (the batch was sent before); 0
///                            on every other kind
///      8    4 length       payload bytes
///     12    4 crc32c       of header bytes 0..12 and 16..32, then the payload
///     16    8 request_id
///     24    8 reserved     0
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: U32,
    pub version: u8,
    pub kind: u8,
    pub flags: U16,
    pub length: U32,
    pub crc32c: U32,
    pub request_id: U64,
    pub reserved: U64,
}

const _: () = assert!(size_of::<FrameHeader>() == HEADER_BYTES);
const _: () = assert!(offset_of!(FrameHeader, kind) == 5);
const _: () = assert!(offset_of!(FrameHeader, length) == 8);
const _: () = assert!(offset_of!(FrameHeader, crc32c) == 12);
const _: () = assert!(offset_of!(FrameHeader, request_id) == 16);

/// The stable error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    BadFrame = 1,
    UnsupportedVersion = 2,
    Unauthenticated = 3,
    UnknownKind = 4,
    FrameTooLarge = 5,
    StreamNotFound = 6,
    ShardNotFound = 7,
    InvalidArgument = 8,
    RecordTooLarge = 9,
    ResourceInUse = 10,
    LimitExceeded = 11,
    Internal = 12,
    ShuttingDown = 13,
    /// A resent batch the server cannot confirm (its producer's history expired, or it was
    /// stored split over shards that were resharded since): maybe stored, not stored again.
    Unconfirmable = 14,
}

impl ErrorCode {
    /// Every code, so that the numbers are written once (in the enum).
    const ALL: [ErrorCode; 14] = [
        ErrorCode::BadFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unauthenticated,
        ErrorCode::UnknownKind,
        ErrorCode::FrameTooLarge,
        ErrorCode::StreamNotFound,
        ErrorCode::ShardNotFound,
        ErrorCode::InvalidArgument,
        ErrorCode::RecordTooLarge,
        ErrorCode::ResourceInUse,
        ErrorCode::LimitExceeded,
        ErrorCode::Internal,
        ErrorCode::ShuttingDown,
        ErrorCode::Unconfirmable,
    ];

    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|known| *known as u16 == code)
    }

    /// Worth retrying: the same request may succeed later.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorCode::ResourceInUse | ErrorCode::Internal | ErrorCode::ShuttingDown)
    }
}

/// The only header flag: on PUT_STAMPED, this batch was sent before.
pub const FLAG_RESENT: u16 = 1;

/// Why a message cannot be encoded: a field longer than its length prefix holds. Never
/// silently cut (a cut could even fall inside a UTF-8 character).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} of {len} is longer than the protocol's {max}")]
pub struct EncodeError {
    pub field: &'static str,
    pub len: usize,
    pub max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame needs {needed} bytes, {available} are there")]
    Truncated { needed: usize, available: usize },
    #[error("bad magic {found:#x}")]
    BadMagic { found: u32 },
    #[error("unsupported version {found}")]
    BadVersion { found: u8 },
    #[error("payload of {length} bytes is above the limit of {PAYLOAD_BYTES_MAX}")]
    TooLarge { length: u32 },
    #[error("CRC mismatch")]
    BadCrc,
    #[error("reserved bytes are not zero")]
    NonZeroReserved,
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("payload of kind {kind} is malformed: {what}")]
    BadPayload { kind: u8, what: &'static str },
}

impl FrameError {
    /// The code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::BadVersion { .. } => ErrorCode::UnsupportedVersion,
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::UnknownKind { .. } => ErrorCode::UnknownKind,
            _ => ErrorCode::BadFrame,
        }
    }
}

/// A checked header: everything but the payload's CRC, which needs the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub flags: u16,
    pub length: u32,
    pub request_id: u64,
    crc32c: u32,
    raw: [u8; HEADER_BYTES],
}

/// CRC32C of every header byte but the CRC itself (0..12, then 16..32), then the payload:
/// a flipped kind or length is caught like a flipped payload byte.
fn frame_crc(header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[..12]);
    let crc = crc32c::crc32c_append(crc, &header[16..HEADER_BYTES]);
    crc32c::crc32c_append(crc, payload)
}

/// Checks the fixed header. The caller then reads `length` payload bytes and calls
/// [`Header::check_payload`].
pub fn decode_header(bytes: &[u8]) -> Result<Header, FrameError> {
    let (header, _) = FrameHeader::read_from_prefix(bytes)
        .map_err(|_| FrameError::Truncated { needed: HEADER_BYTES, available: bytes.len() })?;
    if header.magic.get() != MAGIC {
        return Err(FrameError::BadMagic { found: header.magic.get() });
    }
    if header.version != VERSION {
        return Err(FrameError::BadVersion { found: header.version });
    }
    if header.length.get() > PAYLOAD_BYTES_MAX {
        return Err(FrameError::TooLarge { length: header.length.get() });
    }
    let flags_allowed = if header.kind == kind::PUT_STAMPED { FLAG_RESENT } else { 0 };
    if header.flags.get() & !flags_allowed != 0 || header.reserved.get() != 0 {
        return Err(FrameError::NonZeroReserved);
    }
    Ok(Header {
        kind: header.kind,
        flags: header.flags.get(),
        length: header.length.get(),
        request_id: header.request_id.get(),
        crc32c: header.crc32c.get(),
        raw: header.as_bytes().try_into().expect("32 bytes"),
    })
}

impl Header {
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() != self.length as usize {
            return Err(FrameError::Truncated { needed: self.length as usize, available: payload.len() });
        }
        if frame_crc(&self.raw, payload) != self.crc32c {
            return Err(FrameError::BadCrc);
        }
        Ok(())
    }
}

/// Appends a whole frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, request_id: u64, payload: &[u8]) {
    let length = u32::try_from(payload.len()).expect("payload over 4 GiB");
    assert!(length <= PAYLOAD_BYTES_MAX, "payload above the protocol's limit");
    let mut header = FrameHeader {
        magic: MAGIC.into(),
        version: VERSION,
        kind,
        flags: 0.into(),
        length: length.into(),
        crc32c: 0.into(),
        request_id: request_id.into(),
        reserved: 0.into(),
    };
    let crc = frame_crc(header.as_bytes(), payload);
    header.crc32c = crc.into();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
}

pub mod kind {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const PUT: u8 = 3;
    pub const PUT_ACK: u8 = 4;
    pub const ERROR: u8 = 5;
    pub const DESCRIBE: u8 = 6;
    pub const DESCRIPTION: u8 = 7;
    pub const READ: u8 = 8;
    pub const RECORDS: u8 = 9;
    pub const SUBSCRIBE: u8 = 10;
    pub const CREDIT: u8 = 11;
    pub const CHECKPOINT: u8 = 12;
    pub const CHECKPOINT_ACK: u8 = 13;
    pub const PUT_STAMPED: u8 = 14;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<u128>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: u32,
    pub open: bool,
    pub hash_start: u128,
    pub hash_end: u128,
    pub parents: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStart {
    TrimHorizon,
    Latest,
    AtSequence(u128),
    AfterSequence(u128),
    AtTimestamp(i64),
    /// A position returned by an earlier read.
    At(u128),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOut {
    pub sequence: u128,
    pub arrival_ms: i64,
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// Every message of protocol version 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello {
        version: u16,
        token: Vec<u8>,
        client: String,
    },
    Welcome {
        version: u16,
        payload_bytes_max: u32,
    },
    Put {
        stream: String,
        records: Vec<PutRecord>,
    },
    PutAck {
        acks: Vec<(u32, u128)>,
    },
    Error {
        code: u16,
        message: String,
    },
    Describe {
        stream: String,
    },
    Description {
        shards: Vec<ShardInfo>,
    },
    Read {
        stream: String,
        shard: u32,
        start: ReadStart,
        max_records: u32,
    },
    Records {
        next: u128,
        ended: bool,
        millis_behind_latest: i64,
        children: Vec<u32>,
        records: Vec<RecordOut>,
    },
    /// Push the shard's records from `start` as they become durable, `credits` records at
    /// most before the next CREDIT. Answered by RECORDS frames with this request's id.
    Subscribe {
        stream: String,
        shard: u32,
        start: ReadStart,
        credits: u32,
    },
    /// More credits for the subscription with this frame's request id.
    Credit {
        credits: u32,
    },
    /// Stores a consumer's position durably on the server (`sequence` = last one processed).
    Checkpoint {
        stream: String,
        owner: String,
        shard: u32,
        sequence: u128,
    },
    CheckpointAck,
    /// A PUT from an idempotent producer: sent again with the same stamp, it is stored once.
    PutStamped {
        producer_id: u64,
        batch: u32,
        /// This batch was sent before (header flag RESENT).
        resent: bool,
        stream: String,
        records: Vec<PutRecord>,
    },
}

/// Where a payload is written; the first field that does not fit is remembered.
struct Writer(Vec<u8>, Option<EncodeError>);

impl Writer {
    fn fits(&mut self, field: &'static str, len: usize, max: usize) -> bool {
        if len > max {
            self.1.get_or_insert(EncodeError { field, len, max });
            return false;
        }
        true
    }
    fn count8(&mut self, field: &'static str, len: usize) {
        if self.fits(field, len, 255) {
            self.u8(len as u8);
        }
    }
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u128(&mut self, value: u128) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn name(&mut self, text: &str) {
        if self.fits("a name", text.len(), 255) {
            self.u8(text.len() as u8);
            self.0.extend_from_slice(text.as_bytes());
        }
    }
    fn text(&mut self, text: &str) {
        if self.fits("a text", text.len(), u16::MAX as usize) {
            self.u16(text.len() as u16);
            self.0.extend_from_slice(text.as_bytes());
        }
    }
    fn blob(&mut self, bytes: &[u8]) {
        if self.fits("a blob", bytes.len(), PAYLOAD_BYTES_MAX as usize) {
            self.u32(bytes.len() as u32);
            self.0.extend_from_slice(bytes);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    kind: u8,
}

impl<'a> Reader<'a> {
    fn bad(&self, what: &'static str) -> FrameError {
        FrameError::BadPayload { kind: self.kind, what }
    }
    fn take(&mut self, count: usize) -> Result<&'a [u8], FrameError> {
        let slice = self.bytes.get(self.at..self.at.saturating_add(count)).ok_or(self.bad("ends early"))?;
        self.at += count;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn u128(&mut self) -> Result<u128, FrameError> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }
    fn utf8(&self, bytes: &[u8]) -> Result<String, FrameError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| self.bad("text is not UTF-8"))
    }
    fn name(&mut self) -> Result<String, FrameError> {
        let length = self.u8()? as usize;
        let bytes = self.take(length)?;
        self.utf8(bytes)
    }
    fn text(&mut self) -> Result<String, FrameError> {
        let length = self.u16()? as usize;
        let bytes = self.take(length)?;
        self.utf8(bytes)
    }
    fn blob(&mut self) -> Result<Vec<u8>, FrameError> {
        let length = self.u32()? as usize;
        Ok(self.take(length)?.to_vec())
    }
    /// A count of items of at least `item_bytes` each: refused if the rest cannot hold them.
    fn count(&mut self, item_bytes: usize) -> Result<usize, FrameError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(item_bytes) > self.bytes.len() - self.at {
            return Err(self.bad("count runs past the end"));
        }
        Ok(count)
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.at != self.bytes.len() {
            return Err(self.bad("trailing bytes"));
        }
        Ok(())
    }
}

impl Message {
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => kind::HELLO,
            Message::Welcome { .. } => kind::WELCOME,
            Message::Put { .. } => kind::PUT,
            Message::PutAck { .. } => kind::PUT_ACK,
            Message::Error { .. } => kind::ERROR,
            Message::Describe { .. } => kind::DESCRIBE,
            Message::Description { .. } => kind::DESCRIPTION,
            Message::Read { .. } => kind::READ,
            Message::Records { .. } => kind::RECORDS,
            Message::Subscribe { .. } => kind::SUBSCRIBE,
            Message::Credit { .. } => kind::CREDIT,
            Message::Checkpoint { .. } => kind::CHECKPOINT,
            Message::CheckpointAck => kind::CHECKPOINT_ACK,
            Message::PutStamped { .. } => kind::PUT_STAMPED,
        }
    }

    /// An ERROR. The server's own message is clipped, at a character boundary, to what the
    /// frame's text field holds.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        let mut message = message.into();
        if message.len() > u16::MAX as usize {
            let mut end = u16::MAX as usize;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Message::Error { code: code as u16, message }
    }

    pub fn encode_payload(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Writer(Vec::new(), None);
        self.write_payload(&mut out);
        match out.1 {
            Some(error) => Err(error),
            None => Ok(out.0),
        }
    }

    /// This message as sent again: a stamped PUT says it was sent before; others are the same.
    pub fn as_resent(&self) -> Message {
        match self {
            Message::PutStamped { producer_id, batch, stream, records, .. } => Message::PutStamped {
                producer_id: *producer_id,
                batch: *batch,
                resent: true,
                stream: stream.clone(),
                records: records.clone(),
            },
            other => other.clone(),
        }
    }

    /// The header flags this message carries.
    fn flags(&self) -> u16 {
        match self {
            Message::PutStamped { resent: true, .. } => FLAG_RESENT,
            _ => 0,
        }
    }

    fn write_payload(&self, out: &mut Writer) {
        match self {
            Message::Hello { version, token, client } => {
                out.u16(*version);
                if out.fits("the token", token.len(), u16::MAX as usize) {
                    out.u16(token.len() as u16);
                    out.0.extend_from_slice(token);
                }
                out.name(client);
            }
            Message::Welcome { version, payload_bytes_max } => {
                out.u16(*version);
                out.u32(*payload_bytes_max);
            }
            Message::PutStamped { producer_id, batch, stream, records, .. } => {
                out.0.extend_from_slice(&producer_id.to_le_bytes());
                out.u32(*batch);
                write_put(out, stream, records);
            }
            Message::Put { stream, records } => write_put(out, stream, records),
            Message::PutAck { acks } => {
                out.u32(acks.len() as u32);
                for (shard, sequence) in acks {
                    out.u32(*shard);
                    out.u128(*sequence);
                }
            }
            Message::Error { code, message } => {
                out.u16(*code);
                out.text(message);
            }
            Message::Describe { stream } => out.name(stream),
            Message::Description { shards } => {
                out.u32(shards.len() as u32);
                for shard in shards {
                    out.u32(shard.id);
                    out.u8(u8::from(shard.open));
                    out.u128(shard.hash_start);
                    out.u128(shard.hash_end);
                    out.count8("a shard's parents", shard.parents.len());
                    for parent in &shard.parents {
                        out.u32(*parent);
                    }
                }
            }
            Message::Read { stream, shard, start, max_records } => {
                out.name(stream);
                out.u32(*shard);
                let (tag, value) = start_fields(*start);
                out.u8(tag);
                out.u128(value);
                out.u32(*max_records);
            }
            Message::Subscribe { stream, shard, start, credits } => {
                out.name(stream);
                out.u32(*shard);
                let (tag, value) = start_fields(*start);
                out.u8(tag);
                out.u128(value);
                out.u32(*credits);
            }
            Message::Credit { credits } => out.u32(*credits),
            Message::Checkpoint { stream, owner, shard, sequence } => {
                out.name(stream);
                out.name(owner);
                out.u32(*shard);
                out.u128(*sequence);
            }
            Message::CheckpointAck => {}
            Message::Records { next, ended, millis_behind_latest, children, records } => {
                out.u128(*next);
                out.u8(u8::from(*ended));
                out.i64(*millis_behind_latest);
                out.count8("a shard's children", children.len());
                for child in children {
                    out.u32(*child);
                }
                out.u32(records.len() as u32);
                for record in records {
                    out.u128(record.sequence);
                    out.i64(record.arrival_ms);
                    out.text(&record.partition_key);
                    out.blob(&record.data);
                }
            }
        }
    }

    /// Decodes a payload whose frame passed its checks (with no header flags).
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Message, FrameError> {
        Message::decode_with_flags(kind, 0, payload)
    }

    /// Decodes a payload whose frame passed its checks, with the header's flags.
    pub fn decode_with_flags(kind: u8, flags: u16, payload: &[u8]) -> Result<Message, FrameError> {
        let mut input = Reader { bytes: payload, at: 0, kind };
        let message = match kind {
            kind::HELLO => {
                let version = input.u16()?;
                let length = input.u16()? as usize;
                let token = input.take(length)?.to_vec();
                Message::Hello { version, token, client: input.name()? }
            }
            kind::WELCOME => Message::Welcome { version: input.u16()?, payload_bytes_max: input.u32()? },
            kind::PUT => {
                let (stream, records) = read_put(&mut input)?;
                Message::Put { stream, records }
            }
            kind::PUT_STAMPED => {
                let producer_id = u64::from_le_bytes(input.take(8)?.try_into().expect("8 bytes"));
                let batch = input.u32()?;
                let (stream, records) = read_put(&mut input)?;
                Message::PutStamped { producer_id, batch, resent: flags & FLAG_RESENT != 0, stream, records }
            }
            kind::PUT_ACK => {
                let count = input.count(20)?;
                let mut acks = Vec::with_capacity(count);
                for _ in 0..count {
                    acks.push((input.u32()?, input.u128()?));
                }
                Message::PutAck { acks }
            }
            kind::ERROR => Message::Error { code: input.u16()?, message: input.text()? },
            kind::DESCRIBE => Message::Describe { stream: input.name()? },
            kind::DESCRIPTION => {
                let count = input.count(4 + 1 + 32 + 1)?;
                let mut shards = Vec::with_capacity(count);
                for _ in 0..count {
                    let id = input.u32()?;
                    let open = match input.u8()? {
                        0 => false,
                        1 => true,
                        _ => return Err(input.bad("open flag is not 0 or 1")),
                    };
                    let (hash_start, hash_end) = (input.u128()?, input.u128()?);
                    let parents = (0..input.u8()?).map(|_| input.u32()).collect::<Result<_, _>>()?;
                    shards.push(ShardInfo { id, open, hash_start, hash_end, parents });
                }
                Message::Description { shards }
            }
            kind::READ => {
                let stream = input.name()?;
                let shard = input.u32()?;
                let tag = input.u8()?;
                let value = input.u128()?;
                let start = start_from(tag, value)
                    .ok_or_else(|| input.bad("unknown start type, or a value where none belongs"))?;
                Message::Read { stream, shard, start, max_records: input.u32()? }
            }
            kind::SUBSCRIBE => {
                let stream = input.name()?;
                let shard = input.u32()?;
                let tag = input.u8()?;
                let value = input.u128()?;
                let start = start_from(tag, value)
                    .ok_or_else(|| input.bad("unknown start type, or a value where none belongs"))?;
                Message::Subscribe { stream, shard, start, credits: input.u32()? }
            }
            kind::CREDIT => Message::Credit { credits: input.u32()? },
            kind::CHECKPOINT => Message::Checkpoint {
                stream: input.name()?,
                owner: input.name()?,
                shard: input.u32()?,
                sequence: input.u128()?,
            },
            kind::CHECKPOINT_ACK => Message::CheckpointAck,
            kind::RECORDS => {
                let next = input.u128()?;
                let ended = match input.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(input.bad("ended flag is not 0 or 1")),
                };
                let millis_behind_latest = input.i64()?;
                let children = (0..input.u8()?).map(|_| input.u32()).collect::<Result<_, _>>()?;
                let count = input.count(16 + 8 + 2 + 4)?;
                let mut records = Vec::with_capacity(count);
                for _ in 0..count {
                    let sequence = input.u128()?;
                    let arrival_ms = input.i64()?;
                    let partition_key = input.text()?;
                    records.push(RecordOut { sequence, arrival_ms, partition_key, data: input.blob()? });
                }
                Message::Records { next, ended, millis_behind_latest, children, records }
            }
            other => return Err(FrameError::UnknownKind { kind: other }),
        };
        input.end()?;
        Ok(message)
    }

    /// The whole frame of this message; an error if a field does not fit its length prefix
    /// or the payload the protocol's limit.
    pub fn to_frame(&self, request_id: u64) -> Result<Vec<u8>, EncodeError> {
        // The payload is written after room for the header, which is filled in last: one
        // buffer, no copy of the (possibly megabytes of) payload.
        let mut out = Writer(vec![0u8; HEADER_BYTES], None);
        self.write_payload(&mut out);
        if let Some(error) = out.1 {
            return Err(error);
        }
        let mut frame = out.0;
        let length = frame.len() - HEADER_BYTES;
        if length > PAYLOAD_BYTES_MAX as usize {
            return Err(EncodeError { field: "the payload", len: length, max: PAYLOAD_BYTES_MAX as usize });
        }
        let length = length as u32;
        let mut header = FrameHeader {
            magic: MAGIC.into(),
            version: VERSION,
            kind: self.kind(),
            flags: self.flags().into(),
            length: length.into(),
            crc32c: 0.into(),
            request_id: request_id.into(),
            reserved: 0.into(),
        };
        let crc = frame_crc(header.as_bytes(), &frame[HEADER_BYTES..]);
        header.crc32c = crc.into();
        frame[..HEADER_BYTES].copy_from_slice(header.as_bytes());
        Ok(frame)
    }
}

fn write_put(out: &mut Writer, stream: &str, records: &[PutRecord]) {
    out.name(stream);
    out.u32(u32::try_from(records.len()).unwrap_or(u32::MAX));
    for record in records {
        out.text(&record.partition_key);
        match record.explicit_hash_key {
            Some(key) => {
                out.u8(1);
                out.u128(key);
            }
            None => out.u8(0),
        }
        out.blob(&record.data);
    }
}

fn read_put(input: &mut Reader<'_>) -> Result<(String, Vec<PutRecord>), FrameError> {
    let stream = input.name()?;
    // Smallest record: key length, flag, data length.
    let count = input.count(2 + 1 + 4)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let partition_key = input.text()?;
        let explicit_hash_key = match input.u8()? {
            0 => None,
            1 => Some(input.u128()?),
            _ => return Err(input.bad("explicit hash key flag is not 0 or 1")),
        };
        records.push(PutRecord { partition_key, explicit_hash_key, data: input.blob()? });
    }
    Ok((stream, records))
}

fn start_fields(start: ReadStart) -> (u8, u128) {
    match start {
        ReadStart::TrimHorizon => (0, 0),
        ReadStart::Latest => (1, 0),
        ReadStart::AtSequence(sequence) => (2, sequence),
        ReadStart::AfterSequence(sequence) => (3, sequence),
        ReadStart::AtTimestamp(millis) => (4, millis as u64 as u128),
        ReadStart::At(position) => (5, position),
    }
}

/// A start from its tag and value. The value of a start that has none must be zero, and a
/// timestamp fits 64 bits: every payload has one encoding (found by the `quic_frame` fuzz
/// target, which re-encodes what decodes).
fn start_from(tag: u8, value: u128) -> Option<ReadStart> {
    Some(match tag {
        0 if value == 0 => ReadStart::TrimHorizon,
        1 if value == 0 => ReadStart::Latest,
        2 => ReadStart::AtSequence(value),
        3 => ReadStart::AfterSequence(value),
        4 if value >> 64 == 0 => ReadStart::AtTimestamp(value as u64 as i64),
        5 => ReadStart::At(value),
        _ => return None,
    })
}

/// Decodes one whole frame from the start of `bytes`: the header, the CRC, the message.
/// Returns the request id, the message and the bytes used.
pub fn decode_frame(bytes: &[u8]) -> Result<(u64, Message, usize), FrameError> {
    let header = decode_header(bytes)?;
    let end = HEADER_BYTES + header.length as usize;
    let payload =
        bytes.get(HEADER_BYTES..end).ok_or(FrameError::Truncated { needed: end, available: bytes.len() })?;
    header.check_payload(payload)?;
    Ok((header.request_id, Message::decode_with_flags(header.kind, header.flags, payload)?, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_message() -> impl Strategy<Value = Message> {
        let record =
            (".{1,8}", proptest::option::of(any::<u128>()), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(partition_key, explicit_hash_key, data)| PutRecord {
                    partition_key,
                    explicit_hash_key,
                    data,
                });
        let shard = (
            any::<u32>(),
            any::<bool>(),
            any::<u128>(),
            any::<u128>(),
            proptest::collection::vec(any::<u32>(), 0..3),
        )
            .prop_map(|(id, open, hash_start, hash_end, parents)| ShardInfo {
                id,
                open,
                hash_start,
                hash_end,
                parents,
            });
        let start = prop_oneof![
            Just(ReadStart::TrimHorizon),
            Just(ReadStart::Latest),
            any::<u128>().prop_map(ReadStart::AtSequence),
            any::<u128>().prop_map(ReadStart::AfterSequence),
            any::<i64>().prop_map(ReadStart::AtTimestamp),
            any::<u128>().prop_map(ReadStart::At),
        ];
        let out = (any::<u128>(), any::<i64>(), ".{0,8}", proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(sequence, arrival_ms, partition_key, data)| RecordOut {
                sequence,
                arrival_ms,
                partition_key,
                data,
            });
        let base = prop_oneof![
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..64), "[a-z]{0,12}")
                .prop_map(|(version, token, client)| Message::Hello { version, token, client }),
            (any::<u16>(), any::<u32>())
                .prop_map(|(version, payload_bytes_max)| Message::Welcome { version, payload_bytes_max }),
            ("[a-z]{1,12}", proptest::collection::vec(record, 0..5))
                .prop_map(|(stream, records)| Message::Put { stream, records }),
            proptest::collection::vec((any::<u32>(), any::<u128>()), 0..5)
                .prop_map(|acks| Message::PutAck { acks }),
            (any::<u16>(), ".{0,20}").prop_map(|(code, message)| Message::Error { code, message }),
            "[a-z]{1,12}".prop_map(|stream| Message::Describe { stream }),
            proptest::collection::vec(shard, 0..4).prop_map(|shards| Message::Description { shards }),
            ("[a-z]{1,12}", any::<u32>(), start, any::<u32>()).prop_map(
                |(stream, shard, start, max_records)| Message::Read { stream, shard, start, max_records }
            ),
            (
                any::<u128>(),
                any::<bool>(),
                any::<i64>(),
                proptest::collection::vec(any::<u32>(), 0..3),
                proptest::collection::vec(out, 0..4)
            )
                .prop_map(|(next, ended, millis_behind_latest, children, records)| {
                    Message::Records { next, ended, millis_behind_latest, children, records }
                }),
        ];
        let more = prop_oneof![
            (
                "[a-z]{1,12}",
                any::<u32>(),
                prop_oneof![Just(ReadStart::Latest), any::<u128>().prop_map(ReadStart::At)],
                any::<u32>()
            )
                .prop_map(|(stream, shard, start, credits)| Message::Subscribe {
                    stream,
                    shard,
                    start,
                    credits
                }),
            any::<u32>().prop_map(|credits| Message::Credit { credits }),
            ("[a-z]{1,12}", "[a-z]{1,12}", any::<u32>(), any::<u128>()).prop_map(
                |(stream, owner, shard, sequence)| Message::Checkpoint { stream, owner, shard, sequence }
            ),
            Just(Message::CheckpointAck),
            (any::<u64>(), any::<u32>(), any::<bool>(), "[a-z]{1,12}").prop_map(
                |(producer_id, batch, resent, stream)| {
                    Message::PutStamped { producer_id, batch, resent, stream, records: vec![] }
                }
            ),
        ];
        prop_oneof![base, more]
    }

    proptest! {
        #[test]
        fn frames_round_trip(message in arb_message(), request_id in any::<u64>()) {
            let frame = message.to_frame(request_id).unwrap();
            prop_assert_eq!(decode_frame(&frame), Ok((request_id, message, frame.len())));
        }

        #[test]
        fn any_flipped_bit_is_caught(message in arb_message(), bit in any::<usize>()) {
            let mut frame = message.to_frame(7).unwrap();
            let bit = bit % (frame.len() * 8);
            frame[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&frame).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame(&bytes);
            for kind in 0..16u8 {
                let _ = Message::decode(kind, &bytes);
            }
        }
    }

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code as u16), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(15), None);
    }

    /// Too long for its length prefix: an error naming the field, never a silent cut (a cut
    /// at 255 bytes could fall inside a character).
    #[test]
    fn fields_too_long_are_errors() {
        let stream = "é".repeat(128); // 256 bytes
        let error = Message::Describe { stream }.to_frame(1).unwrap_err();
        assert_eq!((error.field, error.len, error.max), ("a name", 256, 255));
        let key = "k".repeat(70_000);
        let put = Message::Put {
            stream: "s".into(),
            records: vec![PutRecord { partition_key: key, explicit_hash_key: None, data: vec![] }],
        };
        assert_eq!(put.to_frame(1).unwrap_err().max, u16::MAX as usize);
        let parents = ShardInfo { id: 1, open: true, hash_start: 0, hash_end: 1, parents: vec![0; 300] };
        assert!(Message::Description { shards: vec![parents] }.to_frame(1).is_err());
        let hello = Message::Hello { version: 1, token: vec![0; 70_000], client: "c".into() };
        assert_eq!(hello.to_frame(1).unwrap_err().field, "the token");
        // The server's own error messages are clipped at a character boundary instead.
        let long = Message::error(ErrorCode::Internal, "é".repeat(40_000));
        let Message::Error { message, .. } = &long else { unreachable!() };
        assert!(message.len() <= u16::MAX as usize && message.chars().all(|c| c == 'é'));
        assert!(long.to_frame(1).is_ok());
    }

    /// Every payload has one encoding: a start with no value carries zero there.
    #[test]
    fn starts_are_canonical() {
        let mut payload = vec![0u8, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&7u128.to_le_bytes());
        payload.extend_from_slice(&1u32.to_le_bytes());
        assert!(matches!(Message::decode(kind::READ, &payload), Err(FrameError::BadPayload { .. })));
        payload[6..22].copy_from_slice(&0u128.to_le_bytes());
        assert!(Message::decode(kind::READ, &payload).is_ok());
    }

    #[test]
    fn only_a_stamped_put_may_say_it_was_resent() {
        let put = Message::PutStamped {
            producer_id: 1,
            batch: 2,
            resent: true,
            stream: "s".into(),
            records: vec![],
        };
        let frame = put.to_frame(3).unwrap();
        assert_eq!(u16::from_le_bytes([frame[6], frame[7]]), FLAG_RESENT);
        assert_eq!(decode_frame(&frame).unwrap().1, put);
        // The same flag on another kind is refused (and a flipped flag fails the CRC anyway).
        let mut describe = Vec::new();
        encode_frame(&mut describe, kind::DESCRIBE, 1, &[1, b's']);
        describe[6] = 1;
        assert!(decode_frame(&describe).is_err());
    }

    #[test]
    fn checks_come_before_the_payload() {
        let frame = Message::Describe { stream: "s".into() }.to_frame(1).unwrap();
        let mut wrong_version = frame.clone();
        wrong_version[4] = 2;
        assert_eq!(decode_header(&wrong_version).unwrap_err().code(), ErrorCode::UnsupportedVersion);
        let mut huge = frame.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_header(&huge).unwrap_err().code(), ErrorCode::FrameTooLarge);
        // SUBSCRIBE and READ share a payload layout: a flipped kind must not turn one into
        // the other.
        let mut subscribe =
            Message::Subscribe { stream: "s".into(), shard: 0, start: ReadStart::Latest, credits: 1 }
                .to_frame(1)
                .unwrap();
        subscribe[5] = kind::READ;
        assert_eq!(decode_frame(&subscribe).unwrap_err(), FrameError::BadCrc);
        let mut unknown = Vec::new();
        encode_frame(&mut unknown, 200, 1, b"");
        assert_eq!(decode_frame(&unknown).unwrap_err().code(), ErrorCode::UnknownKind);
        assert!(matches!(decode_frame(&frame[..frame.len() - 1]), Err(FrameError::Truncated { .. })));
        // A record count that the payload cannot hold is refused before allocating.
        let mut lying = Vec::new();
        encode_frame(&mut lying, kind::PUT, 1, &[1, b's', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decode_frame(&lying), Err(FrameError::BadPayload { .. })));
    }
}
