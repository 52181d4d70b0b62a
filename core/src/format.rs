//! Every on-disk byte layout of the storage engine, in one place: the batch frame header,
//! the segment header and the tail-slot header, with their byte maps and compile-time size
//! checks, and the frame codec (pure: bytes in, bytes out).
//!
//! All integers are little-endian. Reserved bytes are written as zero and checked zero on
//! read. Every header carries a CRC32C so that torn or stale blocks are recognised.
#![forbid(unsafe_code)]

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{I64, U128, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Direct I/O block: every write is a whole number of these at an offset that is a multiple.
pub const BLOCK_BYTES: usize = 4096;
/// Frames start at offsets that are multiples of this, so that an rkyv body read into a
/// block-aligned buffer is itself aligned.
pub const FRAME_ALIGN: usize = 16;

pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"MRB1");
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"MRSG");
pub const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"MRTS");
pub const FORMAT_VERSION: u16 = 1;

/// Flag of a batch frame whose body is sealed (see [`crate::crypto`]).
pub const FLAG_ENCRYPTED: u16 = 1;
/// Flag of a batch frame stamped by an idempotent producer: `reserved0` holds the batch
/// number and `reserved1` the producer id (see [`ProducerStamp`]).
pub const FLAG_PRODUCER: u16 = 2;
const FLAGS_KNOWN: u16 = FLAG_ENCRYPTED | FLAG_PRODUCER;

/// Who sent a batch, for idempotence: a retried batch carries the same stamp and is stored
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    pub producer_id: u64,
    pub batch: u32,
}

/// Largest body a frame may carry (a 10 MiB record plus its batch overhead, with room).
pub const FRAME_BODY_BYTES_MAX: u32 = 64 << 20;

/// The header of one batch frame.
///
/// ```text
/// offset size field
///  0      4   magic            "MRB1"
///  4      2   version          1
///  6      2   flags            bit 0: the body is sealed (FLAG_ENCRYPTED); bit 1: stamped by
///                             an idempotent producer (FLAG_PRODUCER); others 0
///  8      4   crc32c           CRC32C of header bytes 12..64, then the body, then the
///                             flags if they are not zero
/// 12      4   body_len         bytes of body that follow the header (padding excluded)
/// 16     16   base_sequence    sequence number of the first record
/// 32      4   record_count     number of records, >= 1
/// 36      4   reserved0        0, or the producer's batch number with FLAG_PRODUCER
/// 40      8   first_arrival_ms arrival time of the first record (ms since the epoch)
/// 48      8   last_arrival_ms  arrival time of the last record
/// 56      8   reserved1        0, or the producer id with FLAG_PRODUCER
/// 64          body (body_len bytes), then zero padding to a multiple of 16
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub magic: U32,
    pub version: U16,
    pub flags: U16,
    pub crc32c: U32,
    pub body_len: U32,
    pub base_sequence: U128,
    pub record_count: U32,
    pub reserved0: U32,
    pub first_arrival_ms: I64,
    pub last_arrival_ms: I64,
    pub reserved1: U64,
}

const _: () = assert!(size_of::<BatchHeader>() == 64);
const _: () = assert!(offset_of!(BatchHeader, crc32c) == 8);
const _: () = assert!(offset_of!(BatchHeader, body_len) == 12);
const _: () = assert!(offset_of!(BatchHeader, base_sequence) == 16);
const _: () = assert!(offset_of!(BatchHeader, first_arrival_ms) == 40);
const _: () = assert!(offset_of!(BatchHeader, reserved1) == 56);

/// The first block of every segment file.
///
/// ```text
/// offset size field
///  0      4   magic           "MRSG"
///  4      2   version         1
///  6      2   flags           0
///  8      4   crc32c          CRC32C of bytes 12..64
/// 12      4   schema          layout version of the frame bodies: 0 for shard logs (and
///                             for catalogs written before schemas had versions); each
///                             journal's own number otherwise (see `journal`)
/// 16     16   first_sequence  the shard's next sequence number when the segment was made;
///                             a lower bound for every frame in it (survives trimming)
/// 32      8   segment_id      the number in the file name
/// 40      8   created_ms      creation time
/// 48     16   reserved1       0
/// 64          zero to the end of the block
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SegmentHeader {
    pub magic: U32,
    pub version: U16,
    pub flags: U16,
    pub crc32c: U32,
    pub schema: U32,
    pub first_sequence: U128,
    pub segment_id: U64,
    pub created_ms: I64,
    pub reserved1: [u8; 16],
}

const _: () = assert!(size_of::<SegmentHeader>() == 64);
const _: () = assert!(offset_of!(SegmentHeader, first_sequence) == 16);
const _: () = assert!(offset_of!(SegmentHeader, created_ms) == 40);

/// Header of a tail slot. A slot is two blocks: the partial last block of the data area,
/// then a block that starts with this header. Two slots alternate so that the previous
/// acknowledged tail is never overwritten (see `segment`).
///
/// ```text
/// offset size field
///  0      4   magic        "MRTS"
///  4      2   version      1
///  6      2   flags        0
///  8      4   crc32c       CRC32C of header bytes 12..64, then the slot's data[..len]
/// 12      4   len          bytes of the block that are valid, 1..4095
/// 16      8   generation   increases by one with every slot write of the segment
/// 24      8   block_index  which data-area block this is the head of
/// 32      8   segment_id   the segment the slot belongs to
/// 40     24   reserved     0
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SlotHeader {
    pub magic: U32,
    pub version: U16,
    pub flags: U16,
    pub crc32c: U32,
    pub len: U32,
    pub generation: U64,
    pub block_index: U64,
    pub segment_id: U64,
    pub reserved: [u8; 24],
}

const _: () = assert!(size_of::<SlotHeader>() == 64);
const _: () = assert!(offset_of!(SlotHeader, generation) == 16);
const _: () = assert!(offset_of!(SlotHeader, segment_id) == 32);

/// Why bytes are not a valid frame or header. Recovery stops at the first one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("bad magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("unsupported format version {found}")]
    BadVersion { found: u16 },
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("body length {body_len} exceeds the limit {limit}")]
    BodyTooLong { body_len: u32, limit: u32 },
    #[error("reserved field or padding is not zero")]
    NonZeroReserved,
    #[error("record count is zero or does not fit the sequence space")]
    BadRecordCount,
    #[error("body does not validate: {reason}")]
    BadBody { reason: String },
}

/// Rounds up to the next multiple of `align` (a power of two).
pub const fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

/// Total bytes a frame with this body occupies on disk.
pub const fn frame_len(body_len: usize) -> usize {
    size_of::<BatchHeader>() + align_up(body_len, FRAME_ALIGN)
}

/// What the caller states about a frame it wants encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    pub base_sequence: u128,
    pub record_count: u32,
    pub first_arrival_ms: i64,
    pub last_arrival_ms: i64,
}

/// Appends one frame (header, body, zero padding) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, meta: FrameMeta, body: &[u8]) {
    encode_frame_with_flags(out, meta, 0, body)
}

/// [`encode_frame`] with header flags ([`FLAG_ENCRYPTED`]).
pub fn encode_frame_with_flags(out: &mut Vec<u8>, meta: FrameMeta, flags: u16, body: &[u8]) {
    encode_frame_stamped(out, meta, flags, None, body)
}

/// [`encode_frame_with_flags`], stamped by an idempotent producer when `stamp` is given.
pub fn encode_frame_stamped(
    out: &mut Vec<u8>,
    meta: FrameMeta,
    flags: u16,
    stamp: Option<ProducerStamp>,
    body: &[u8],
) {
    assert!(flags & !FLAG_ENCRYPTED == 0, "unknown frame flags");
    let flags = if stamp.is_some() { flags | FLAG_PRODUCER } else { flags };
    assert!(meta.record_count >= 1);
    let body_len = u32::try_from(body.len()).expect("frame body over 4 GiB");
    assert!(body_len <= FRAME_BODY_BYTES_MAX);
    let mut header = BatchHeader {
        magic: BATCH_MAGIC.into(),
        version: FORMAT_VERSION.into(),
        flags: flags.into(),
        crc32c: 0.into(),
        body_len: body_len.into(),
        base_sequence: meta.base_sequence.into(),
        record_count: meta.record_count.into(),
        reserved0: stamp.map_or(0, |stamp| stamp.batch).into(),
        first_arrival_ms: meta.first_arrival_ms.into(),
        last_arrival_ms: meta.last_arrival_ms.into(),
        reserved1: stamp.map_or(0, |stamp| stamp.producer_id).into(),
    };
    header.crc32c = frame_crc(&header, body).into();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + frame_len(body.len()) - size_of::<BatchHeader>() - body.len(), 0);
}

/// The flags are covered only when non-zero, so that frames written before flags existed
/// keep their CRCs, while a flipped flag bit is still caught.
fn frame_crc(header: &BatchHeader, body: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header.as_bytes()[12..]);
    let crc = crc32c::crc32c_append(crc, body);
    match header.flags.get() {
        0 => crc,
        flags => crc32c::crc32c_append(crc, &flags.to_le_bytes()),
    }
}

/// A frame that passed every check; borrows the bytes it was decoded from.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub meta: FrameMeta,
    /// Header flags: [`FLAG_ENCRYPTED`], [`FLAG_PRODUCER`].
    pub flags: u16,
    /// The idempotent producer's stamp, with [`FLAG_PRODUCER`].
    pub producer: Option<ProducerStamp>,
    pub body: &'a [u8],
    /// Bytes the frame occupies, padding included: the next frame starts this far on.
    pub len: usize,
}

impl Frame<'_> {
    pub fn last_sequence(&self) -> u128 {
        self.meta.base_sequence + u128::from(self.meta.record_count) - 1
    }
}

/// Decodes the frame at the start of `bytes` (which may continue past it). Validates the
/// header, the CRC and the padding before anything is handed out.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (header, _) = BatchHeader::read_from_prefix(bytes)
        .map_err(|_| FrameError::Truncated { needed: size_of::<BatchHeader>(), available: bytes.len() })?;
    if header.magic.get() != BATCH_MAGIC {
        return Err(FrameError::BadMagic { found: header.magic.get() });
    }
    if header.version.get() != FORMAT_VERSION {
        return Err(FrameError::BadVersion { found: header.version.get() });
    }
    let body_len = header.body_len.get();
    if body_len > FRAME_BODY_BYTES_MAX {
        return Err(FrameError::BodyTooLong { body_len, limit: FRAME_BODY_BYTES_MAX });
    }
    let len = frame_len(body_len as usize);
    if bytes.len() < len {
        return Err(FrameError::Truncated { needed: len, available: bytes.len() });
    }
    let body_end = size_of::<BatchHeader>() + body_len as usize;
    let body = &bytes[size_of::<BatchHeader>()..body_end];
    let computed = frame_crc(&header, body);
    if computed != header.crc32c.get() {
        return Err(FrameError::BadCrc { stored: header.crc32c.get(), computed });
    }
    let stamped = header.flags.get() & FLAG_PRODUCER != 0;
    if header.flags.get() & !FLAGS_KNOWN != 0
        || (!stamped && (header.reserved0.get() != 0 || header.reserved1.get() != 0))
        || bytes[body_end..len].iter().any(|&b| b != 0)
    {
        return Err(FrameError::NonZeroReserved);
    }
    let record_count = header.record_count.get();
    let base_sequence = header.base_sequence.get();
    if record_count == 0 || base_sequence.checked_add(u128::from(record_count)).is_none() {
        return Err(FrameError::BadRecordCount);
    }
    let meta = FrameMeta {
        base_sequence,
        record_count,
        first_arrival_ms: header.first_arrival_ms.get(),
        last_arrival_ms: header.last_arrival_ms.get(),
    };
    let producer =
        stamped.then(|| ProducerStamp { producer_id: header.reserved1.get(), batch: header.reserved0.get() });
    Ok(Frame { meta, flags: header.flags.get(), producer, body, len })
}

/// What a sealed body is bound to: its frame's place in the log.
pub fn sealing_context(meta: &FrameMeta) -> [u8; 20] {
    let mut context = [0u8; 20];
    context[..16].copy_from_slice(&meta.base_sequence.to_le_bytes());
    context[16..].copy_from_slice(&meta.record_count.to_le_bytes());
    context
}

/// Builds a segment's header block.
pub fn encode_segment_header(segment_id: u64, first_sequence: u128, created_ms: i64, schema: u32) -> Vec<u8> {
    let mut header = SegmentHeader {
        magic: SEGMENT_MAGIC.into(),
        version: FORMAT_VERSION.into(),
        flags: 0.into(),
        crc32c: 0.into(),
        schema: schema.into(),
        first_sequence: first_sequence.into(),
        segment_id: segment_id.into(),
        created_ms: created_ms.into(),
        reserved1: [0; 16],
    };
    header.crc32c = crc32c::crc32c(&header.as_bytes()[12..]).into();
    let mut block = vec![0u8; BLOCK_BYTES];
    block[..size_of::<SegmentHeader>()].copy_from_slice(header.as_bytes());
    block
}

/// Validates a segment header block.
pub fn decode_segment_header(block: &[u8]) -> Result<SegmentHeader, FrameError> {
    let (header, _) = SegmentHeader::read_from_prefix(block)
        .map_err(|_| FrameError::Truncated { needed: size_of::<SegmentHeader>(), available: block.len() })?;
    if header.magic.get() != SEGMENT_MAGIC {
        return Err(FrameError::BadMagic { found: header.magic.get() });
    }
    if header.version.get() != FORMAT_VERSION {
        return Err(FrameError::BadVersion { found: header.version.get() });
    }
    let computed = crc32c::crc32c(&header.as_bytes()[12..]);
    if computed != header.crc32c.get() {
        return Err(FrameError::BadCrc { stored: header.crc32c.get(), computed });
    }
    if header.flags.get() != 0 || header.reserved1 != [0; 16] {
        return Err(FrameError::NonZeroReserved);
    }
    Ok(header)
}

/// A decoded tail slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub generation: u64,
    pub block_index: u64,
    pub segment_id: u64,
    pub data: Vec<u8>,
}

/// Builds the two blocks of a slot: the partial block `data` (zero padded) and the header.
pub fn encode_slot(slot: &Slot) -> Vec<u8> {
    assert!(!slot.data.is_empty() && slot.data.len() < BLOCK_BYTES);
    let mut header = SlotHeader {
        magic: SLOT_MAGIC.into(),
        version: FORMAT_VERSION.into(),
        flags: 0.into(),
        crc32c: 0.into(),
        len: (slot.data.len() as u32).into(),
        generation: slot.generation.into(),
        block_index: slot.block_index.into(),
        segment_id: slot.segment_id.into(),
        reserved: [0; 24],
    };
    header.crc32c = slot_crc(&header, &slot.data).into();
    let mut blocks = vec![0u8; 2 * BLOCK_BYTES];
    blocks[..slot.data.len()].copy_from_slice(&slot.data);
    blocks[BLOCK_BYTES..BLOCK_BYTES + size_of::<SlotHeader>()].copy_from_slice(header.as_bytes());
    blocks
}

fn slot_crc(header: &SlotHeader, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header.as_bytes()[12..]), data)
}

/// Validates the two blocks of a slot. A torn slot write fails the CRC.
pub fn decode_slot(blocks: &[u8]) -> Result<Slot, FrameError> {
    if blocks.len() < 2 * BLOCK_BYTES {
        return Err(FrameError::Truncated { needed: 2 * BLOCK_BYTES, available: blocks.len() });
    }
    let (header, _) = SlotHeader::read_from_prefix(&blocks[BLOCK_BYTES..])
        .map_err(|_| FrameError::Truncated { needed: size_of::<SlotHeader>(), available: BLOCK_BYTES })?;
    if header.magic.get() != SLOT_MAGIC {
        return Err(FrameError::BadMagic { found: header.magic.get() });
    }
    if header.version.get() != FORMAT_VERSION {
        return Err(FrameError::BadVersion { found: header.version.get() });
    }
    let len = header.len.get() as usize;
    if len == 0 || len >= BLOCK_BYTES {
        return Err(FrameError::Truncated { needed: len, available: BLOCK_BYTES });
    }
    let computed = slot_crc(&header, &blocks[..len]);
    if computed != header.crc32c.get() {
        return Err(FrameError::BadCrc { stored: header.crc32c.get(), computed });
    }
    if header.flags.get() != 0 || header.reserved != [0; 24] {
        return Err(FrameError::NonZeroReserved);
    }
    Ok(Slot {
        generation: header.generation.get(),
        block_index: header.block_index.get(),
        segment_id: header.segment_id.get(),
        data: blocks[..len].to_vec(),
    })
}

/// The body of a record batch frame, archived with rkyv.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BatchBody {
    pub records: Vec<BodyRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BodyRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// Serialises a batch body.
pub fn encode_batch_body(body: &BatchBody) -> rkyv::util::AlignedVec {
    rkyv::to_bytes::<rkyv::rancor::Error>(body).expect("serialising to memory cannot fail")
}

/// Validates a batch body and gives zero-copy access to it. `body` must come from a frame
/// that passed [`decode_frame`]; the rkyv validation still runs, because CRCs catch damage,
/// not malice. Copies into an aligned buffer only if `body` is not 16-byte aligned.
pub fn access_batch_body(body: &[u8], record_count: u32) -> Result<ArchivedBodyOwned<'_>, FrameError> {
    let view = if (body.as_ptr() as usize).is_multiple_of(FRAME_ALIGN) {
        ArchivedBodyOwned::Borrowed(body)
    } else {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        ArchivedBodyOwned::Copied(aligned)
    };
    let archived = rkyv::access::<ArchivedBatchBody, rkyv::rancor::Error>(view.bytes())
        .map_err(|error| FrameError::BadBody { reason: error.to_string() })?;
    if archived.records.len() != record_count as usize {
        return Err(FrameError::BadBody {
            reason: format!("header says {record_count} records, body holds {}", archived.records.len()),
        });
    }
    Ok(view)
}

/// Bytes of a validated batch body, borrowed when aligned, copied when not.
pub enum ArchivedBodyOwned<'a> {
    Borrowed(&'a [u8]),
    Copied(rkyv::util::AlignedVec<16>),
}

impl ArchivedBodyOwned<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            ArchivedBodyOwned::Borrowed(bytes) => bytes,
            ArchivedBodyOwned::Copied(vec) => vec.as_slice(),
        }
    }

    /// The archived batch. Validated by [`access_batch_body`] already.
    pub fn batch(&self) -> &ArchivedBatchBody {
        // SAFETY-free: validated once in `access_batch_body`; validating again is cheap
        // relative to the disk read and keeps this module free of unsafe.
        rkyv::access::<ArchivedBatchBody, rkyv::rancor::Error>(self.bytes())
            .expect("body was validated when this view was made")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(base_sequence: u128, record_count: u32) -> FrameMeta {
        FrameMeta { base_sequence, record_count, first_arrival_ms: 5, last_arrival_ms: 9 }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, meta(42, 3), b"hello world");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_frame(&damaged).is_err(), "bit {bit} flip went unnoticed");
        }
    }

    #[test]
    fn producer_stamps_round_trip_and_are_covered_by_the_crc() {
        let stamp = ProducerStamp { producer_id: 0xfeed_beef, batch: 42 };
        let mut bytes = Vec::new();
        encode_frame_stamped(&mut bytes, meta(7, 1), FLAG_ENCRYPTED, Some(stamp), b"body");
        let frame = decode_frame(&bytes).unwrap();
        assert_eq!((frame.flags, frame.producer), (FLAG_ENCRYPTED | FLAG_PRODUCER, Some(stamp)));
        bytes[36] ^= 1; // another batch number
        assert!(matches!(decode_frame(&bytes), Err(FrameError::BadCrc { .. })));
        let mut plain = Vec::new();
        encode_frame(&mut plain, meta(7, 1), b"body");
        assert_eq!(decode_frame(&plain).unwrap().producer, None);
    }

    #[test]
    fn the_encrypted_flag_round_trips_and_is_covered_by_the_crc() {
        let mut bytes = Vec::new();
        encode_frame_with_flags(&mut bytes, meta(7, 1), FLAG_ENCRYPTED, b"sealed");
        assert_eq!(decode_frame(&bytes).unwrap().flags, FLAG_ENCRYPTED);
        bytes[6] = 0; // clear the flag: the CRC no longer matches
        assert!(matches!(decode_frame(&bytes), Err(FrameError::BadCrc { .. })));
        let mut plain = Vec::new();
        encode_frame(&mut plain, meta(7, 1), b"clear");
        plain[6] = 4; // an unknown flag
        assert!(decode_frame(&plain).is_err());
    }

    #[test]
    fn slot_round_trips_and_rejects_torn_halves() {
        let slot = Slot { generation: 7, block_index: 3, segment_id: 1, data: vec![0xab; 100] };
        let blocks = encode_slot(&slot);
        assert_eq!(decode_slot(&blocks), Ok(slot.clone()));
        let newer = Slot { generation: 8, data: vec![0xcd; 200], ..slot };
        let mut torn = encode_slot(&newer);
        torn[BLOCK_BYTES..].copy_from_slice(&blocks[BLOCK_BYTES..]);
        assert!(decode_slot(&torn).is_err());
    }

    #[test]
    fn batch_body_round_trips() {
        let body = BatchBody {
            records: vec![
                BodyRecord { partition_key: "a".into(), data: vec![1, 2, 3] },
                BodyRecord { partition_key: "b".into(), data: vec![] },
            ],
        };
        let bytes = encode_batch_body(&body);
        let view = access_batch_body(&bytes, 2).unwrap();
        assert_eq!(view.batch().records[0].partition_key.as_str(), "a");
        assert_eq!(view.batch().records[0].data.as_slice(), &[1, 2, 3]);
        assert!(access_batch_body(&bytes, 3).is_err());
    }

    proptest! {
        #[test]
        fn frame_round_trips(base in any::<u64>(), count in 1u32..1000, body in proptest::collection::vec(any::<u8>(), 0..300), trailing in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut bytes = Vec::new();
            let meta = meta(u128::from(base), count);
            encode_frame(&mut bytes, meta, &body);
            prop_assert_eq!(bytes.len(), frame_len(body.len()));
            prop_assert_eq!(bytes.len() % FRAME_ALIGN, 0);
            bytes.extend_from_slice(&trailing);
            let frame = decode_frame(&bytes).unwrap();
            prop_assert_eq!(frame.meta, meta);
            prop_assert_eq!(frame.body, &body[..]);
            prop_assert_eq!(frame.len, frame_len(body.len()));
            // Every strict prefix is reported as truncated, never as a frame.
            let cut = frame.len - 1;
            prop_assert!(decode_frame(&bytes[..cut]).is_err());
        }

        #[test]
        fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes);
            let _ = decode_segment_header(&bytes);
            let _ = decode_slot(&bytes);
        }

        #[test]
        fn batch_bodies_round_trip(records in proptest::collection::vec((".{1,8}", proptest::collection::vec(any::<u8>(), 0..64)), 1..20)) {
            let body = BatchBody { records: records.into_iter().map(|(partition_key, data)| BodyRecord { partition_key, data }).collect() };
            let bytes = encode_batch_body(&body);
            let view = access_batch_body(&bytes, body.records.len() as u32).unwrap();
            let back: BatchBody = rkyv::deserialize::<BatchBody, rkyv::rancor::Error>(view.batch()).unwrap();
            prop_assert_eq!(back, body);
        }
    }
}
