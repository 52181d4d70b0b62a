//! One segment file of a shard log: the commit scheme that keeps acknowledged bytes safe,
//! recovery, the sparse index, and frame scanning.
//!
//! ```text
//! offset          what
//! 0               segment header block (format::SegmentHeader)
//! 4096 .. 12288   tail slot 0: partial block, then slot header block
//! 12288 .. 20480  tail slot 1
//! 20480 ..        data area: frames, back to back, each 16-byte aligned
//! ```
//!
//! **The tail-slot rule.** A data-area block is written exactly once, when it is full. The
//! partially filled last block is written instead into one of the two tail slots, the two
//! alternating with every commit, each stamped with a generation, the block's index and a
//! CRC. A commit therefore never rewrites a sector that holds acknowledged bytes: the full
//! blocks it writes were never written before (or held only unacknowledged garbage of a
//! crashed commit), and the slot it writes holds the tail of the commit *before* the last
//! acknowledged one, which the data area or the other slot already covers. A small batch
//! costs its own bytes plus one 8 KiB slot write, not a 4 KiB block of the data area.
//!
//! **Recovery** reads the data area, lays every valid slot over it in increasing generation
//! (each is a prefix of a later image, so the overlays agree), then walks the frames from the
//! start and stops at the first that fails its checks. A recovered segment is sealed: new
//! appends go to a fresh segment, so stale bytes past the recovered end can never be mistaken
//! for frames later.
#![forbid(unsafe_code)]

use crate::format::{
    self, decode_frame, decode_segment_header, decode_slot, encode_segment_header, encode_slot, Frame,
    FrameMeta, Slot, BLOCK_BYTES,
};
use crate::storage::{IoError, Storage, StorageFile};

pub const HEADER_OFFSET: u64 = 0;
pub const SLOT_OFFSETS: [u64; 2] = [BLOCK_BYTES as u64, 3 * BLOCK_BYTES as u64];
pub const DATA_START: u64 = 5 * BLOCK_BYTES as u64;
/// Distance in bytes between two sparse index entries.
pub const INDEX_INTERVAL_BYTES: u64 = 64 << 10;
/// Size of the sequential reads recovery and readers make.
const WINDOW_BYTES: usize = 1 << 20;
/// Bounds of the windows a reader with a budget reads ([`Segment::scan_within`]).
pub const WINDOW_MIN_BYTES: usize = 64 << 10;
pub const WINDOW_MAX_BYTES: usize = 8 << 20;

/// A sparse index entry: the frame at `offset` starts with `sequence` and arrived at
/// `arrival_ms`. Arrival times never decrease within a shard, so both searches work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub sequence: u128,
    pub arrival_ms: i64,
    pub offset: u64,
}

/// What is known about the frames of a segment.
#[derive(Debug, Clone, Default)]
pub struct SegmentStats {
    pub first_sequence: Option<u128>,
    pub last_sequence: Option<u128>,
    pub last_arrival_ms: i64,
    pub records: u64,
}

pub fn segment_file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// A segment file and its in-memory state. Only committed (durable) bytes are visible.
pub struct Segment<F> {
    pub id: u64,
    file: F,
    path: String,
    /// The shard's next sequence number when the segment was created.
    pub base_sequence: u128,
    /// Layout version of the frame bodies, from the header (0 for shard logs).
    pub schema: u32,
    /// Committed bytes of the data area.
    end: u64,
    /// The committed partial last block: `end % BLOCK_BYTES` bytes.
    tail: Vec<u8>,
    next_generation: u64,
    sealed: bool,
    index: Vec<IndexEntry>,
    pub stats: SegmentStats,
}

impl<F: StorageFile> Segment<F> {
    /// Creates a segment file durably: header written and synced, directory entry synced.
    pub async fn create<S: Storage<File = F>>(
        storage: &S,
        dir: &str,
        id: u64,
        base_sequence: u128,
        now_ms: i64,
        prealloc_bytes: u64,
        schema: u32,
    ) -> Result<Segment<F>, IoError> {
        let path = crate::storage::join(dir, &segment_file_name(id));
        let file = storage.create(&path, prealloc_bytes).await?;
        file.write_at(HEADER_OFFSET, &encode_segment_header(id, base_sequence, now_ms, schema)).await?;
        file.sync().await?;
        storage.sync_dir(dir).await?;
        Ok(Segment {
            id,
            file,
            path,
            base_sequence,
            schema,
            end: 0,
            tail: Vec::new(),
            next_generation: 1,
            sealed: false,
            index: Vec::new(),
            stats: SegmentStats::default(),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Committed bytes of the data area.
    pub fn len(&self) -> u64 {
        self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// No more appends go to this segment.
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    /// Gives back the preallocated space past the committed data of a sealed segment.
    pub async fn release_unused(&self) -> Result<(), IoError> {
        assert!(self.sealed, "only sealed segments give space back");
        let keep = DATA_START + self.end.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64;
        self.file.release_after(keep).await
    }

    /// Appends encoded frames (the concatenation of `metas.len()` frames) and makes them
    /// durable. On error nothing is acknowledged and the segment must not be written again:
    /// the caller seals it and recovers from disk.
    pub async fn commit(&mut self, frames: &[u8], metas: &[FrameMeta]) -> Result<(), IoError> {
        assert!(!self.sealed, "commit to a sealed segment");
        assert_eq!(frames.len() % format::FRAME_ALIGN, 0);
        if frames.is_empty() {
            return Ok(());
        }
        let block = BLOCK_BYTES as u64;
        let first_block = self.end / block;
        let mut image = Vec::with_capacity(self.tail.len() + frames.len());
        image.extend_from_slice(&self.tail);
        image.extend_from_slice(frames);
        let full_bytes = image.len() / BLOCK_BYTES * BLOCK_BYTES;
        let new_tail = image[full_bytes..].to_vec();

        let data_write = async {
            if full_bytes > 0 {
                let offset = DATA_START + first_block * block;
                self.file.write_at(offset, &image[..full_bytes]).await
            } else {
                Ok(())
            }
        };
        let generation = self.next_generation;
        let slot_write = async {
            if new_tail.is_empty() {
                return Ok(());
            }
            let slot = Slot {
                generation,
                block_index: first_block + (full_bytes / BLOCK_BYTES) as u64,
                segment_id: self.id,
                data: new_tail.clone(),
            };
            let offset = SLOT_OFFSETS[(generation % 2) as usize];
            self.file.write_at(offset, &encode_slot(&slot)).await
        };
        let started = std::time::Instant::now();
        let (data_result, slot_result) = futures_lite::future::zip(data_write, slot_write).await;
        let synced = std::time::Instant::now();
        crate::metrics::COMMITS.wrote(synced - started);
        let written = data_result.and(slot_result).and(self.file.sync().await);
        crate::metrics::COMMITS.synced(synced.elapsed());
        if let Err(error) = written {
            self.sealed = true;
            return Err(error);
        }
        if !new_tail.is_empty() {
            self.next_generation += 1;
        }
        // Durable: publish.
        let mut offset = self.end;
        for meta in metas {
            self.note_frame(offset, meta);
            offset += frame_bytes_at(frames, offset - self.end) as u64;
        }
        assert_eq!(offset, self.end + frames.len() as u64, "metas do not match the frames");
        self.end = offset;
        self.tail = new_tail;
        Ok(())
    }

    /// Writes committed bytes `[offset, offset + len)` of a sealed segment again, as they
    /// are, and syncs them: bytes that recovery found visible become durable even if an
    /// earlier fdatasync failed (the page cache, or a drive's volatile cache, may show bytes
    /// the disk lost). Full blocks are written where they are; the partial last block goes to
    /// its place in the data area, zero padded (sealed: no commit will write there again; the
    /// slots that hold the same prefix stay valid). Writing identical bytes cannot tear
    /// anything acknowledged.
    pub async fn rewrite_durably(&self, offset: u64, len: u64) -> Result<(), IoError> {
        assert!(self.sealed, "only sealed segments are rewritten");
        assert!(len > 0 && offset + len <= self.end, "rewrite inside the committed data");
        let block = BLOCK_BYTES as u64;
        let first = offset / block;
        let last = (offset + len - 1) / block;
        let full_blocks = (self.end - self.tail.len() as u64) / block;
        if first < full_blocks {
            let upto = last.min(full_blocks - 1);
            let want = ((upto - first + 1) * block) as usize;
            let read = self.file.read_at(DATA_START + first * block, want).await?;
            let mut bytes = read.to_vec();
            // Blocks past the file's end were never written and read as zeros.
            bytes.resize(want, 0);
            self.file.write_at(DATA_START + first * block, &bytes).await?;
        }
        if last >= full_blocks && !self.tail.is_empty() {
            let mut bytes = self.tail.clone();
            bytes.resize(BLOCK_BYTES, 0);
            self.file.write_at(DATA_START + full_blocks * block, &bytes).await?;
        }
        self.file.sync().await
    }

    fn note_frame(&mut self, offset: u64, meta: &FrameMeta) {
        let needs_entry = match self.index.last() {
            None => true,
            Some(last) => offset - last.offset >= INDEX_INTERVAL_BYTES,
        };
        if needs_entry {
            self.index.push(IndexEntry {
                sequence: meta.base_sequence,
                arrival_ms: meta.first_arrival_ms,
                offset,
            });
        }
        let stats = &mut self.stats;
        stats.first_sequence.get_or_insert(meta.base_sequence);
        stats.last_sequence = Some(meta.base_sequence + u128::from(meta.record_count) - 1);
        stats.last_arrival_ms = stats.last_arrival_ms.max(meta.last_arrival_ms);
        stats.records += u64::from(meta.record_count);
    }

    /// Reads committed data-area bytes `[offset, offset + len)`. Full blocks come from the
    /// file, the partial last block from memory. The result starts at `offset`, and since
    /// frames are 16-byte aligned, so is a frame body within it.
    pub async fn read(&self, offset: u64, len: usize) -> Result<SegmentBytes<F::ReadBuf>, IoError> {
        let end = offset + len as u64;
        assert!(end <= self.end, "read past the committed end");
        let block = BLOCK_BYTES as u64;
        let full_end = self.end - self.tail.len() as u64;
        let aligned_start = offset / block * block;
        let skip = (offset - aligned_start) as usize;
        if end <= full_end {
            let aligned_end = end.div_ceil(block) * block;
            let buf =
                self.file.read_at(DATA_START + aligned_start, (aligned_end - aligned_start) as usize).await?;
            if buf.len() >= skip + len {
                return Ok(SegmentBytes::File { buf, skip, len });
            }
            // The file ends early: the blocks past its end were never written and read as
            // zeros, which is what recovery validated them as.
            let mut bytes = rkyv::util::AlignedVec::<16>::with_capacity(len);
            bytes.extend_from_slice(buf.get(skip..).unwrap_or_default());
            bytes.resize(len, 0);
            return Ok(SegmentBytes::Owned(bytes));
        }
        let mut bytes = rkyv::util::AlignedVec::<16>::with_capacity(len);
        if offset < full_end {
            let want = (full_end - offset) as usize;
            let buf =
                self.file.read_at(DATA_START + aligned_start, (full_end - aligned_start) as usize).await?;
            bytes.extend_from_slice(buf.get(skip..).unwrap_or_default());
            bytes.resize(want, 0);
        }
        let tail_from = offset.max(full_end) - full_end;
        bytes.extend_from_slice(&self.tail[tail_from as usize..(end - full_end) as usize]);
        Ok(SegmentBytes::Owned(bytes))
    }

    /// Offset of the frame to start scanning from to find `sequence` (the sparse index
    /// entry at or before it).
    pub fn offset_for_sequence(&self, sequence: u128) -> u64 {
        let position = self.index.partition_point(|entry| entry.sequence <= sequence);
        position.checked_sub(1).map_or(0, |at| self.index[at].offset)
    }

    /// Offset to start scanning from to find the first record that arrived at or after
    /// `arrival_ms`.
    pub fn offset_for_time(&self, arrival_ms: i64) -> u64 {
        let position = self.index.partition_point(|entry| entry.arrival_ms < arrival_ms);
        position.checked_sub(1).map_or(0, |at| self.index[at].offset)
    }

    /// Calls `visit` for each committed frame from `offset` on, in order, until it returns
    /// false or the end is reached. Frames were checked when written or recovered; they are
    /// checked again here because the bytes came back from a disk.
    pub async fn scan<V>(&self, offset: u64, visit: V) -> Result<(), ScanError>
    where
        V: FnMut(u64, &Frame<'_>) -> Result<bool, ScanError>,
    {
        self.scan_within(offset, || WINDOW_BYTES, visit).await
    }

    /// [`Segment::scan`] reading windows of `window()` bytes (clamped to
    /// `WINDOW_MIN_BYTES..=WINDOW_MAX_BYTES`), asked before each: a reader that knows how much
    /// it still wants reads that in one I/O instead of in fixed windows, and no more.
    pub async fn scan_within<W, V>(&self, mut offset: u64, window: W, mut visit: V) -> Result<(), ScanError>
    where
        W: Fn() -> usize,
        V: FnMut(u64, &Frame<'_>) -> Result<bool, ScanError>,
    {
        while offset < self.end {
            let wanted = window().clamp(WINDOW_MIN_BYTES, WINDOW_MAX_BYTES);
            let window_len = ((self.end - offset) as usize).min(wanted);
            let bytes = self.read(offset, window_len).await.map_err(ScanError::Io)?;
            let mut at = 0usize;
            loop {
                let frame = match decode_frame(&bytes.bytes()[at..]) {
                    Ok(frame) => frame,
                    Err(format::FrameError::Truncated { needed, .. }) if at == 0 => {
                        // A frame larger than the window: read exactly it.
                        if offset + needed as u64 > self.end {
                            let source = format::FrameError::Truncated {
                                needed,
                                available: (self.end - offset) as usize,
                            };
                            return Err(ScanError::Corrupt { path: self.path.clone(), offset, source });
                        }
                        let whole = self.read(offset, needed).await.map_err(ScanError::Io)?;
                        let frame = decode_frame(whole.bytes()).map_err(|source| ScanError::Corrupt {
                            path: self.path.clone(),
                            offset,
                            source,
                        })?;
                        if !visit(offset, &frame)? {
                            return Ok(());
                        }
                        offset += frame.len as u64;
                        break;
                    }
                    Err(format::FrameError::Truncated { .. }) => {
                        offset += at as u64;
                        break;
                    }
                    Err(source) => {
                        let offset = offset + at as u64;
                        return Err(ScanError::Corrupt { path: self.path.clone(), offset, source });
                    }
                };
                if !visit(offset + at as u64, &frame)? {
                    return Ok(());
                }
                at += frame.len;
                if at == bytes.bytes().len() {
                    offset += at as u64;
                    break;
                }
            }
        }
        Ok(())
    }
}

fn frame_bytes_at(frames: &[u8], at: u64) -> usize {
    let header = &frames[at as usize..];
    let body_len = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
    format::frame_len(body_len as usize)
}

/// Errors while walking committed frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    #[error(transparent)]
    Io(IoError),
    #[error("{path} at data offset {offset}: committed frame is damaged: {source}")]
    Corrupt { path: String, offset: u64, source: format::FrameError },
    #[error("{path} at data offset {offset}: {reason}")]
    BadBody { path: String, offset: u64, reason: String },
}

/// Bytes of a segment read: a slice of a file buffer, or an assembled copy.
pub enum SegmentBytes<B> {
    File { buf: B, skip: usize, len: usize },
    Owned(rkyv::util::AlignedVec<16>),
}

impl<B: std::ops::Deref<Target = [u8]>> SegmentBytes<B> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            SegmentBytes::File { buf, skip, len } => &buf[*skip..*skip + *len],
            SegmentBytes::Owned(bytes) => bytes.as_slice(),
        }
    }
}

/// How a recovery went for one segment: frames up to `end` are valid; `stopped_at` says
/// why the walk stopped there (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub end: u64,
    pub stopped_at: Option<String>,
    /// Frames stamped by idempotent producers, in order: stamp, first sequence, records.
    pub stamps: Vec<(format::ProducerStamp, u128, u32)>,
}

/// Recovers a segment: validates the header, overlays the valid tail slots, walks the
/// frames and stops at the first bad one. The segment comes back sealed. Returns `None` if
/// the header is not valid (the file never held anything acknowledged).
pub async fn recover<S: Storage>(
    storage: &S,
    dir: &str,
    id: u64,
) -> Result<Option<(Segment<S::File>, Recovered)>, IoError> {
    let path = crate::storage::join(dir, &segment_file_name(id));
    let file = storage.open(&path).await?;
    let head = file.read_at(0, DATA_START as usize).await?;
    let header = match decode_segment_header(&head) {
        Ok(header) if header.segment_id.get() == id => header,
        _ => return Ok(None),
    };
    let mut slots: Vec<Slot> = SLOT_OFFSETS
        .iter()
        .filter_map(|&offset| {
            let at = offset as usize;
            head.get(at..at + 2 * BLOCK_BYTES).and_then(|blocks| decode_slot(blocks).ok())
        })
        .filter(|slot| slot.segment_id == id)
        .collect();
    slots.sort_by_key(|slot| slot.generation);
    let next_generation = slots.last().map_or(1, |slot| slot.generation + 1);
    let base_sequence = header.first_sequence.get();
    let schema = header.schema.get();

    let mut segment = Segment {
        id,
        file,
        path,
        base_sequence,
        schema,
        end: 0,
        tail: Vec::new(),
        next_generation,
        sealed: true,
        index: Vec::new(),
        stats: SegmentStats::default(),
    };
    let mut window = RecoveryWindow { start: 0, bytes: Vec::new(), slots: &slots };
    let mut offset = 0u64;
    let mut next_sequence = base_sequence;
    let mut stamps = Vec::new();
    let stopped_at = loop {
        let header_bytes = window.get(&segment.file, offset, 64).await?;
        let needed = match decode_frame(header_bytes) {
            Err(format::FrameError::Truncated { needed, .. }) if needed > 64 => needed,
            Err(error) => break Some(error.to_string()),
            Ok(frame) => frame.len,
        };
        let bytes = window.get(&segment.file, offset, needed).await?;
        let frame = match decode_frame(bytes) {
            Ok(frame) => frame,
            Err(error) => break Some(error.to_string()),
        };
        if frame.meta.base_sequence < next_sequence {
            break Some(format!("sequence {} goes backwards", frame.meta.base_sequence));
        }
        next_sequence = frame.last_sequence() + 1;
        if let Some(stamp) = frame.producer {
            stamps.push((stamp, frame.meta.base_sequence, frame.meta.record_count));
        }
        let meta = frame.meta;
        let len = frame.len as u64;
        segment.note_frame(offset, &meta);
        offset += len;
    };
    segment.end = offset;
    // A full block that recovery took partly from a slot (its data-area write tore after
    // the slot's prefix was acknowledged) is written back, so that reads, which use the data
    // area for full blocks, see what recovery validated. Safe to write: the acknowledged
    // copy stays in its slot, and only differing blocks are touched.
    let full_blocks = offset / BLOCK_BYTES as u64;
    for slot in slots.iter().filter(|slot| slot.block_index < full_blocks) {
        let at = slot.block_index * BLOCK_BYTES as u64; // < full_blocks * 4096: no overflow
        let image = window.get(&segment.file, at, BLOCK_BYTES).await?.to_vec();
        let on_disk = segment.file.read_at(DATA_START + at, BLOCK_BYTES).await?;
        if on_disk[..] != image[..] {
            segment.file.write_at(DATA_START + at, &image).await?;
        }
    }
    let tail_start = (offset / BLOCK_BYTES as u64 * BLOCK_BYTES as u64) as usize;
    segment.tail =
        window.get(&segment.file, tail_start as u64, (offset as usize) - tail_start).await?.to_vec();
    // Whatever recovery accepted becomes durable before anything builds on it.
    segment.file.sync().await?;
    Ok(Some((segment, Recovered { end: offset, stopped_at, stamps })))
}

/// A sequential window over the data area with the tail slots laid over it.
struct RecoveryWindow<'a> {
    start: u64,
    bytes: Vec<u8>,
    slots: &'a [Slot],
}

impl RecoveryWindow<'_> {
    async fn get<F: StorageFile>(&mut self, file: &F, offset: u64, len: usize) -> Result<&[u8], IoError> {
        let end = offset + len as u64;
        if offset < self.start || end > self.start + self.bytes.len() as u64 {
            let block = BLOCK_BYTES as u64;
            self.start = offset / block * block;
            let want = (end - self.start).max(WINDOW_BYTES as u64).div_ceil(block) * block;
            let read = file.read_at(DATA_START + self.start, want as usize).await?;
            self.bytes.clear();
            self.bytes.extend_from_slice(&read);
            self.bytes.resize(want as usize, 0);
            for slot in self.slots {
                let slot_start = slot.block_index.saturating_mul(block);
                let slot_end = slot_start + slot.data.len() as u64;
                let window_end = self.start + want;
                if slot_end <= self.start || slot_start >= window_end {
                    continue;
                }
                let from = slot_start.max(self.start);
                let to = slot_end.min(window_end);
                let src = &slot.data[(from - slot_start) as usize..(to - slot_start) as usize];
                self.bytes[(from - self.start) as usize..(to - self.start) as usize].copy_from_slice(src);
            }
        }
        let at = (offset - self.start) as usize;
        Ok(&self.bytes[at..at + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, SimDisk};
    use futures_lite::future::block_on;
    use proptest::prelude::*;

    proptest! {
        /// Recovery over arbitrary bytes after a valid header returns a valid prefix (or
        /// nothing) and never panics; scanning what it accepted succeeds.
        #[test]
        fn recovery_of_garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..40_000)) {
            block_on(async {
                let disk = SimDisk::new(0, Faults::default());
                disk.create_dir_all("s").await.unwrap();
                let file = disk.create("s/00000000000000000001.seg", 0).await.unwrap();
                let mut bytes = format::encode_segment_header(1, 0, 0, 0);
                bytes.extend_from_slice(&garbage);
                bytes.resize(bytes.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES, 0);
                file.write_at(0, &bytes).await.unwrap();
                let (segment, recovered) = recover(&disk, "s", 1).await.unwrap().expect("valid header");
                // The scan sees exactly the frames recovery accepted.
                let mut records = 0u64;
                segment.scan(0, |_, frame| { records += u64::from(frame.meta.record_count); Ok(true) }).await.unwrap();
                assert_eq!(records, segment.stats.records);
                assert_eq!(segment.len(), recovered.end);
            });
        }

        /// Commits of arbitrary sizes read back exactly, before and after a power cut.
        #[test]
        fn committed_frames_round_trip(sizes in proptest::collection::vec(0usize..9000, 1..40), seed in any::<u64>()) {
            block_on(async {
                let disk = SimDisk::new(seed, Faults::default());
                disk.create_dir_all("s").await.unwrap();
                let mut segment = Segment::create(&disk, "s", 1, 0, 0, 0, 0).await.unwrap();
                let mut expected = Vec::new();
                for (index, size) in sizes.iter().enumerate() {
                    let body = vec![index as u8; *size];
                    let meta = FrameMeta { base_sequence: index as u128, record_count: 1, first_arrival_ms: 0, last_arrival_ms: 0 };
                    let mut frame = Vec::new();
                    format::encode_frame(&mut frame, meta, &body);
                    segment.commit(&frame, &[meta]).await.unwrap();
                    expected.push(body);
                }
                let bodies = |segment: Segment<crate::sim::SimFile>| async move {
                    let mut bodies = Vec::new();
                    segment.scan(0, |_, frame| { bodies.push(frame.body.to_vec()); Ok(true) }).await.unwrap();
                    bodies
                };
                assert_eq!(bodies(segment).await, expected);
                disk.power_cut();
                let (recovered, _) = recover(&disk, "s", 1).await.unwrap().unwrap();
                assert_eq!(bodies(recovered).await, expected);
            });
        }
    }
}
