//! A shard's log: an ordered list of segments, the next sequence number, group commit of
//! batches, reads from a sequence position, iterator resolution and retention trimming.
//! Single-owner: one task holds a `ShardLog` and serves every request for it in turn.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Arc;

use crate::catalog::{Closed, InheritedStamp};
use crate::crypto::{CryptoError, Keyring};
use crate::dedupe::{LastBatch, ProducerTable};
use crate::format::ProducerStamp;
use crate::format::{self, BatchBody, BodyRecord, FrameMeta};
use crate::segment::{self, parse_segment_file_name, ScanError, Segment};
use crate::storage::{IoError, Storage};
use crate::types::{Record, SequenceNumber, StoredRecord};

/// Sizing of a shard's segments.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// A segment is sealed once its data area would pass this many bytes.
    pub segment_bytes: u64,
    /// Space reserved for a new segment file up front.
    pub prealloc_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { segment_bytes: 128 << 20, prealloc_bytes: 128 << 20 }
    }
}

/// Where a read starts, as Kinesis' iterator types say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    TrimHorizon,
    Latest,
    AtSequence(SequenceNumber),
    AfterSequence(SequenceNumber),
    AtTimestamp { arrival_ms: i64 },
}

/// Bounds of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_records: usize,
    pub max_bytes: usize,
}

/// What a read returns.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    pub records: Vec<StoredRecord>,
    /// The position to continue from: one past the last record returned.
    pub next: u128,
    /// How far the last record returned is behind the newest record of the shard.
    pub millis_behind_latest: i64,
    /// True when `next` is past every record currently stored.
    pub caught_up: bool,
}

/// Failures of appends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("shard log {dir}: {source}")]
    Io { dir: String, source: IoError },
    #[error("shard log {dir} failed earlier and must be recovered: {cause}")]
    Poisoned { dir: String, cause: String },
    #[error("shard log {dir} is closed to writes")]
    Closed { dir: String },
    #[error("shard log {dir}: {source}")]
    Scan { dir: String, source: ScanError },
    #[error("sequence number {sequence} does not belong to shard log {dir}")]
    ForeignSequence { dir: String, sequence: u128 },
    #[error("shard log {dir}: {source}")]
    Crypto { dir: String, source: CryptoError },
}

impl LogError {
    /// The shard directory concerned.
    pub fn dir(&self) -> &str {
        match self {
            LogError::Io { dir, .. }
            | LogError::Poisoned { dir, .. }
            | LogError::Closed { dir }
            | LogError::Scan { dir, .. }
            | LogError::ForeignSequence { dir, .. }
            | LogError::Crypto { dir, .. } => dir,
        }
    }
}

/// Sealed segments that retention detached; their files are to be removed.
pub struct Expired(pub Vec<String>);

pub struct ShardLog<S: Storage> {
    storage: S,
    dir: String,
    epoch: u64,
    config: LogConfig,
    segments: VecDeque<Segment<S::File>>,
    next_sequence: u128,
    last_arrival_ms: i64,
    poisoned: Option<String>,
    closed: bool,
    /// Frames of the group being committed; reused between commits.
    frame_buf: Vec<u8>,
    /// Opens sealed frames and seals new ones; absent when no key is configured.
    keyring: Option<Arc<Keyring>>,
    /// Each idempotent producer's last stored batch.
    producers: ProducerTable,
    /// What the parents left (kept to give it again to a log recovered after a failure).
    inherited: (Arc<[InheritedStamp]>, bool),
}

/// A batch to append: its records, the key id that seals it, the producer stamp that makes
/// a retry of it recognisable.
#[derive(Debug, Clone)]
pub struct StampedBatch {
    pub records: Vec<Record>,
    pub key_id: Option<Arc<str>>,
    pub producer: Option<ProducerStamp>,
}

impl<S: Storage + Clone> ShardLog<S> {
    /// Opens (recovering every segment) or creates the log in `dir`. Sequence numbers of
    /// this shard are `epoch << 64 | counter`.
    pub async fn open(storage: &S, dir: &str, epoch: u64, config: LogConfig) -> Result<Self, LogError> {
        let io = |source| LogError::Io { dir: dir.to_owned(), source };
        storage.create_dir_all(dir).await.map_err(io)?;
        let mut ids: Vec<u64> = storage
            .list(dir)
            .await
            .map_err(io)?
            .iter()
            .filter_map(|name| parse_segment_file_name(name))
            .collect();
        ids.sort_unstable();
        let mut segments = VecDeque::new();
        // Counter 0 is never a record: the shard's starting sequence number (epoch, 0) then
        // names the position before its first record, so AFTER_SEQUENCE_NUMBER of it reads
        // from the start (SubscribeToShard's ContinuationSequenceNumber relies on this).
        let mut next_sequence = SequenceNumber::new(epoch, 1).0;
        let mut last_arrival_ms = 0;
        // Idempotent producers' last batches, from every frame recovery walked.
        let mut producers = ProducerTable::default();
        for id in ids {
            match segment::recover(storage, dir, id).await.map_err(io)? {
                Some((segment, recovered)) => {
                    if segment.schema != 0 {
                        let source = IoError::new(
                            "open",
                            segment.path(),
                            std::io::Error::other(format!(
                                "segment schema {} is not a shard log's",
                                segment.schema
                            )),
                        );
                        return Err(LogError::Io { dir: dir.to_owned(), source });
                    }
                    next_sequence = next_sequence.max(segment.base_sequence);
                    if let Some(last) = segment.stats.last_sequence {
                        next_sequence = next_sequence.max(last + 1);
                    }
                    last_arrival_ms = last_arrival_ms.max(segment.stats.last_arrival_ms);
                    for (stamp, base, count) in recovered.stamps {
                        let last =
                            LastBatch { batch: stamp.batch, base, count, stored_in: None, proven: false };
                        producers.record(stamp.producer_id, last);
                    }
                    segments.push_back(segment);
                }
                None => {
                    // Never became valid, so it holds nothing acknowledged.
                    let path = crate::storage::join(dir, &segment::segment_file_name(id));
                    storage.remove(&path).await.map_err(io)?;
                    storage.sync_dir(dir).await.map_err(io)?;
                }
            }
        }
        if !segments.is_empty() {
            // Recovery synced every recovered file; their directory entries must be durable
            // too, or a segment created just before a crash (a high-water mark among them)
            // could still vanish in a power cut after readers saw what it protects.
            storage.sync_dir(dir).await.map_err(io)?;
        }
        if segments.front().is_some_and(|first| first.id != 1) {
            // Retention removed segments: their producers may be gone from the record.
            producers.forget_history();
        }
        Ok(ShardLog {
            storage: storage.clone(),
            dir: dir.to_owned(),
            epoch,
            config,
            segments,
            next_sequence,
            last_arrival_ms,
            poisoned: None,
            closed: false,
            frame_buf: Vec::new(),
            keyring: None,
            producers,
            inherited: (Arc::from([]), true),
        })
    }

    /// Gives a child shard its parents' producers (see [`crate::dedupe`]).
    pub fn inherit(&mut self, stamps: &[InheritedStamp], complete: bool) {
        self.producers.inherit(stamps, complete);
        self.inherited = (Arc::from(stamps), complete);
    }

    /// Gives this log (recovered anew from the disk) what `old` inherited.
    pub fn adopt_inherited(&mut self, old: &ShardLog<S>) {
        let (stamps, complete) = old.inherited.clone();
        self.inherit(&stamps, complete);
    }

    /// Before a retry is answered from `producer_id`'s last batch of this shard: makes sure
    /// that batch's frame is durable (see [`LastBatch::proven`]).
    pub async fn confirm(&mut self, producer_id: u64, last: LastBatch) -> Result<(), LogError> {
        if last.proven || last.stored_in.is_some() {
            return Ok(());
        }
        self.rewrite_durably(last.base).await?;
        self.producers.prove(producer_id);
        Ok(())
    }

    /// Makes every producer's last frame durable, so that children can answer for them.
    pub async fn confirm_all(&mut self) -> Result<(), LogError> {
        for (producer_id, last) in self.producers.unproven() {
            self.confirm(producer_id, last).await?;
        }
        Ok(())
    }

    /// Writes the frame starting at `base` again, as it is, and syncs it.
    async fn rewrite_durably(&self, base: u128) -> Result<(), LogError> {
        let segment = self
            .segments
            .iter()
            .find(|segment| {
                segment.stats.first_sequence.is_some_and(|first| first <= base)
                    && segment.stats.last_sequence.is_some_and(|last| base <= last)
            })
            .ok_or_else(|| LogError::ForeignSequence { dir: self.dir.clone(), sequence: base })?;
        let mut found = None;
        segment
            .scan(segment.offset_for_sequence(base), |offset, frame| {
                if frame.meta.base_sequence == base {
                    found = Some((offset, frame.len as u64));
                    return Ok(false);
                }
                Ok(frame.meta.base_sequence < base)
            })
            .await
            .map_err(|source| LogError::Scan { dir: self.dir.clone(), source })?;
        let (offset, len) =
            found.ok_or_else(|| LogError::ForeignSequence { dir: self.dir.clone(), sequence: base })?;
        segment
            .rewrite_durably(offset, len)
            .await
            .map_err(|source| LogError::Io { dir: self.dir.clone(), source })
    }

    /// What a child of this (closed) shard inherits; `own` is this shard's id. Call
    /// [`ShardLog::confirm_all`] first.
    pub fn closed_state(&self, own: u32) -> Closed {
        Closed {
            ending_sequence: self.close_position(),
            stamps: self.producers.export(own),
            complete: self.producers.is_complete(),
        }
    }

    pub(crate) fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    /// Opens a log that will take appends: recovers it, then starts a new segment whose
    /// header durably records the next sequence number before anything is read or written.
    /// Recovery may accept frames that are visible but were never made durable (after a
    /// failed fdatasync the page cache, or a drive's volatile cache, still shows them, and a
    /// re-sync may flush nothing); should they vanish in a later power cut, the new header
    /// still keeps their sequence numbers from being handed out again to other records.
    /// The recovered segment before it gives back its unused preallocated space.
    pub async fn open_for_writes(
        storage: &S,
        dir: &str,
        epoch: u64,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        let io = |source| LogError::Io { dir: dir.to_owned(), source };
        let mut log = Self::open(storage, dir, epoch, config).await?;
        // Even an empty last segment is no proof: its header may be a write whose
        // fdatasync failed, visible now and lost in the next power cut. Only a segment
        // written and synced by this open is.
        if !log.segments.is_empty() {
            let next = log.next_sequence;
            log.roll(now_ms, next).await.map_err(io)?;
            let sealed = &log.segments[log.segments.len() - 2];
            sealed.release_unused().await.map_err(io)?;
        }
        Ok(log)
    }

    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The sequence number the next record will get.
    #[cfg(test)]
    pub fn next_sequence(&self) -> u128 {
        self.next_sequence
    }

    /// The lowest sequence number still stored, or `next_sequence` if none is.
    pub fn first_sequence(&self) -> u128 {
        self.segments.iter().find_map(|segment| segment.stats.first_sequence).unwrap_or(self.next_sequence)
    }

    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Stops writes for good (the shard was split or merged). Returns the last sequence
    /// number the shard will ever hold.
    pub fn close(&mut self) -> u128 {
        self.closed = true;
        self.close_position()
    }

    fn close_position(&self) -> u128 {
        self.next_sequence.saturating_sub(1).max(SequenceNumber::new(self.epoch, 0).0)
    }

    /// Takes back a [`ShardLog::close`] whose resharding failed before it was committed.
    pub fn reopen_writes(&mut self) {
        self.closed = false;
    }

    /// Appends a group of batches, each becoming one frame, with one fdatasync per segment
    /// touched. Returns each batch's first sequence number once all are durable. On error
    /// nothing is acknowledged (some batches may still be durable: at-least-once) and the log
    /// refuses writes until reopened, because after a failed fdatasync the page cache can no
    /// longer be trusted to say what is on disk.
    #[cfg(test)]
    pub async fn append_group(
        &mut self,
        batches: Vec<Vec<Record>>,
        now_ms: i64,
    ) -> Result<Vec<u128>, LogError> {
        self.append_group_sealed(batches.into_iter().map(|batch| (batch, None)).collect(), now_ms).await
    }

    /// Gives the log the key it seals and opens encrypted frames with.
    pub fn set_keyring(&mut self, keyring: Option<Arc<Keyring>>) {
        self.keyring = keyring;
    }

    /// [`ShardLog::append_group`] where a batch with a key id is sealed under it (encryption
    /// at rest). Fails before writing anything if a key id is given and no keyring is set.
    #[cfg(test)]
    pub async fn append_group_sealed(
        &mut self,
        batches: Vec<(Vec<Record>, Option<Arc<str>>)>,
        now_ms: i64,
    ) -> Result<Vec<u128>, LogError> {
        let batches = batches
            .into_iter()
            .map(|(records, key_id)| StampedBatch { records, key_id, producer: None })
            .collect();
        self.append_group_stamped(batches, now_ms).await
    }

    /// [`ShardLog::append_group_sealed`] with producer stamps. Stamps are recorded, not
    /// checked: the caller answers retries (see [`ShardLog::producer_last`]) before appending.
    pub async fn append_group_stamped(
        &mut self,
        batches: Vec<StampedBatch>,
        now_ms: i64,
    ) -> Result<Vec<u128>, LogError> {
        if batches.iter().any(|batch| batch.key_id.is_some()) && self.keyring.is_none() {
            return Err(LogError::Crypto { dir: self.dir.clone(), source: CryptoError::NoKeyring });
        }
        if let Some(cause) = &self.poisoned {
            return Err(LogError::Poisoned { dir: self.dir.clone(), cause: cause.clone() });
        }
        if self.closed {
            return Err(LogError::Closed { dir: self.dir.clone() });
        }
        let arrival_ms = now_ms.max(self.last_arrival_ms);
        let encode_started = std::time::Instant::now();
        let batch_count = batches.len();
        let mut bases = Vec::with_capacity(batches.len());
        let mut frames = std::mem::take(&mut self.frame_buf);
        frames.clear();
        let mut metas = Vec::with_capacity(batches.len());
        let mut sequence = self.next_sequence;
        let mut stamps = Vec::new();
        for StampedBatch { records: batch, key_id, producer } in batches {
            assert!(!batch.is_empty(), "empty batch");
            let count = u32::try_from(batch.len()).expect("batch of over 4G records");
            if let Some(stamp) = producer {
                stamps.push((stamp, sequence, count));
            }
            let body = BatchBody {
                records: batch
                    .into_iter()
                    .map(|record| BodyRecord {
                        partition_key: record.partition_key.into_string(),
                        data: record.data,
                    })
                    .collect(),
            };
            let meta = FrameMeta {
                base_sequence: sequence,
                record_count: count,
                first_arrival_ms: arrival_ms,
                last_arrival_ms: arrival_ms,
            };
            let encoded = format::encode_batch_body(&body);
            match (&key_id, &self.keyring) {
                (Some(key_id), Some(keyring)) => {
                    let sealed = keyring
                        .seal(key_id, &encoded, &format::sealing_context(&meta))
                        .map_err(|source| LogError::Crypto { dir: self.dir.clone(), source })?;
                    format::encode_frame_stamped(
                        &mut frames,
                        meta,
                        format::FLAG_ENCRYPTED,
                        producer,
                        &sealed,
                    );
                }
                _ => format::encode_frame_stamped(&mut frames, meta, 0, producer, &encoded),
            }
            bases.push(sequence);
            metas.push(meta);
            sequence += u128::from(count);
        }
        // Whatever happens next, these numbers may be on disk: never hand them out again.
        self.next_sequence = sequence;
        crate::metrics::COMMITS.encoded(batch_count, frames.len(), encode_started.elapsed());
        let result = self.commit_frames(&frames, &metas, now_ms).await;
        self.frame_buf = frames;
        match result {
            Ok(()) => {
                self.last_arrival_ms = arrival_ms;
                for (stamp, base, count) in stamps {
                    let last = LastBatch { batch: stamp.batch, base, count, stored_in: None, proven: true };
                    self.producers.record(stamp.producer_id, last);
                }
                Ok(bases)
            }
            Err(source) => {
                self.poisoned = Some(source.to_string());
                Err(LogError::Io { dir: self.dir.clone(), source })
            }
        }
    }

    async fn commit_frames(
        &mut self,
        frames: &[u8],
        metas: &[FrameMeta],
        now_ms: i64,
    ) -> Result<(), IoError> {
        let mut at = 0usize;
        let mut meta_at = 0usize;
        while meta_at < metas.len() {
            let limit = self.config.segment_bytes;
            let first_len = frame_len_at(frames, at) as u64;
            let usable = self.segments.back().is_some_and(|active| {
                !active.is_sealed() && (active.is_empty() || active.len() + first_len <= limit)
            });
            if !usable {
                self.roll(now_ms, metas[meta_at].base_sequence).await?;
                continue;
            }
            let active = self.segments.back_mut().expect("an active segment");
            // Take as many frames as fit; an empty segment takes at least one.
            let (mut take, mut take_bytes) = (1usize, first_len as usize);
            while meta_at + take < metas.len() {
                let len = frame_len_at(frames, at + take_bytes);
                if active.len() + (take_bytes + len) as u64 > limit {
                    break;
                }
                take += 1;
                take_bytes += len;
            }
            active.commit(&frames[at..at + take_bytes], &metas[meta_at..meta_at + take]).await?;
            at += take_bytes;
            meta_at += take;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one whose header records `base_sequence`.
    async fn roll(&mut self, now_ms: i64, base_sequence: u128) -> Result<(), IoError> {
        let id = self.segments.back().map_or(1, |last| last.id + 1);
        if let Some(active) = self.segments.back_mut() {
            active.seal();
        }
        let prealloc = self.config.prealloc_bytes;
        let segment =
            Segment::create(&self.storage, &self.dir, id, base_sequence, now_ms, prealloc, 0).await?;
        self.segments.push_back(segment);
        Ok(())
    }

    /// Resolves a start position to a sequence number to read from.
    pub async fn resolve(&self, start: StartPosition) -> Result<u128, LogError> {
        let check = |sequence: SequenceNumber| {
            if sequence.epoch() == self.epoch {
                Ok(sequence.0)
            } else {
                Err(LogError::ForeignSequence { dir: self.dir.clone(), sequence: sequence.0 })
            }
        };
        match start {
            StartPosition::TrimHorizon => Ok(self.first_sequence()),
            StartPosition::Latest => Ok(self.next_sequence),
            StartPosition::AtSequence(sequence) => check(sequence),
            StartPosition::AfterSequence(sequence) => check(sequence)?
                .checked_add(1)
                .ok_or(LogError::ForeignSequence { dir: self.dir.clone(), sequence: sequence.0 }),
            StartPosition::AtTimestamp { arrival_ms } => self.sequence_at_time(arrival_ms).await,
        }
    }

    async fn sequence_at_time(&self, arrival_ms: i64) -> Result<u128, LogError> {
        let Some(segment) = self
            .segments
            .iter()
            .find(|segment| segment.stats.records > 0 && segment.stats.last_arrival_ms >= arrival_ms)
        else {
            return Ok(self.next_sequence);
        };
        let mut found = None;
        segment
            .scan(segment.offset_for_time(arrival_ms), |_, frame| {
                if frame.meta.last_arrival_ms >= arrival_ms {
                    found = Some(frame.meta.base_sequence);
                    return Ok(false);
                }
                Ok(true)
            })
            .await
            .map_err(|source| LogError::Scan { dir: self.dir.clone(), source })?;
        Ok(found.unwrap_or(self.next_sequence))
    }

    /// Reads committed records with sequence numbers at or above `from`, in order, within
    /// `limits` (at least one record if any is there).
    pub async fn read(&self, from: u128, limits: ReadLimits) -> Result<ReadOutcome, LogError> {
        let mut outcome = ReadOutcome { next: from, ..ReadOutcome::default() };
        let (bytes, count) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
        // Each window is what the read still wants: the bytes left in its budget, or its
        // records left at the mean size seen so far, with room for the framing. A 4 MiB read
        // is one I/O, not four fixed windows that each re-read the frame they cut; a read of
        // a few records reads a few blocks.
        let window = || {
            let left = limits.max_bytes.saturating_sub(bytes.get());
            let mean = if count.get() == 0 { RECORD_GUESS_BYTES } else { bytes.get() / count.get() };
            let by_records = limits.max_records.saturating_sub(count.get()).saturating_mul(mean);
            let wanted = left.min(by_records);
            wanted.saturating_add(wanted / 8).saturating_add(FRAMING_SLACK_BYTES)
        };
        let mut last_arrival = None;
        for segment in &self.segments {
            match segment.stats.last_sequence {
                Some(last) if last >= from => {}
                _ => continue,
            }
            let mut full = false;
            let path = segment.path().to_owned();
            segment
                .scan_within(segment.offset_for_sequence(from), window, |offset, frame| {
                    if frame.last_sequence() < from {
                        return Ok(true);
                    }
                    let opened;
                    let body = if frame.flags & format::FLAG_ENCRYPTED != 0 {
                        let keyring = self.keyring.as_ref().ok_or_else(|| ScanError::BadBody {
                            path: path.clone(),
                            offset,
                            reason: CryptoError::NoKeyring.to_string(),
                        })?;
                        opened = keyring.open(frame.body, &format::sealing_context(&frame.meta)).map_err(
                            |error| ScanError::BadBody {
                                path: path.clone(),
                                offset,
                                reason: error.to_string(),
                            },
                        )?;
                        &opened[..]
                    } else {
                        frame.body
                    };
                    let view = format::access_batch_body(body, frame.meta.record_count).map_err(|error| {
                        ScanError::BadBody { path: path.clone(), offset, reason: error.to_string() }
                    })?;
                    for (index, record) in view.batch().records.iter().enumerate() {
                        let sequence = frame.meta.base_sequence + index as u128;
                        if sequence < from {
                            continue;
                        }
                        let size = record.data.len() + record.partition_key.len();
                        let over = outcome.records.len() >= limits.max_records
                            || (bytes.get() + size > limits.max_bytes && !outcome.records.is_empty());
                        if over {
                            full = true;
                            return Ok(false);
                        }
                        bytes.set(bytes.get() + size);
                        count.set(count.get() + 1);
                        outcome.records.push(StoredRecord {
                            sequence: SequenceNumber(sequence),
                            partition_key: record.partition_key.as_str().to_owned(),
                            data: record.data.as_slice().to_vec(),
                            arrival_ms: frame.meta.first_arrival_ms,
                            encrypted: frame.flags & format::FLAG_ENCRYPTED != 0,
                        });
                        outcome.next = sequence + 1;
                        last_arrival = Some(frame.meta.first_arrival_ms);
                    }
                    Ok(true)
                })
                .await
                .map_err(|source| LogError::Scan { dir: self.dir.clone(), source })?;
            if full {
                break;
            }
        }
        if outcome.records.is_empty() {
            // Nothing at or after `from`: skip over any trimmed or unused numbers.
            outcome.next = from.max(self.first_sequence()).min(self.next_sequence.max(from));
        }
        let newest = self.segments.iter().rev().find_map(|segment| segment.stats.last_sequence);
        outcome.caught_up = newest.is_none_or(|newest| outcome.next > newest);
        outcome.millis_behind_latest = match (outcome.caught_up, last_arrival) {
            (false, Some(arrival)) => (self.last_arrival_ms - arrival).max(0),
            _ => 0,
        };
        Ok(outcome)
    }

    /// Detaches every segment whose newest record is older than `cutoff_ms` (whole segments
    /// only). The newest segment is kept, or replaced by an empty one first, so that the next
    /// sequence number survives a restart. The caller removes the returned files (see
    /// [`remove_files`]) on a background queue.
    pub async fn detach_expired(&mut self, cutoff_ms: i64, now_ms: i64) -> Result<Expired, LogError> {
        let newest_expired = self
            .segments
            .back()
            .is_some_and(|last| last.stats.records > 0 && last.stats.last_arrival_ms < cutoff_ms);
        if newest_expired && !self.closed && self.poisoned.is_none() {
            let next = self.next_sequence;
            if let Err(source) = self.roll(now_ms, next).await {
                self.poisoned = Some(source.to_string());
                return Err(LogError::Io { dir: self.dir.clone(), source });
            }
        }
        let mut expired = Vec::new();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            if oldest.stats.records > 0 && oldest.stats.last_arrival_ms >= cutoff_ms {
                break;
            }
            let segment = self.segments.pop_front().expect("checked non-empty");
            expired.push(segment.path().to_owned());
        }
        // The producer record keeps what it learnt from the expired segments (only a rebuild
        // at the next open goes without them).
        Ok(Expired(expired))
    }

    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// Removes files and makes the removal durable.
pub async fn remove_files<S: Storage>(storage: &S, dir: &str, expired: Expired) -> Result<(), IoError> {
    if expired.0.is_empty() {
        return Ok(());
    }
    for path in &expired.0 {
        match storage.remove(path).await {
            Err(error) if !error.is_not_found() => return Err(error),
            _ => {}
        }
    }
    storage.sync_dir(dir).await
}

/// What a read's window adds to its byte budget for frame headers and the records' framing.
const FRAMING_SLACK_BYTES: usize = 16 << 10;
/// The record size a read assumes before it has seen one.
const RECORD_GUESS_BYTES: usize = 1 << 10;

fn frame_len_at(frames: &[u8], at: usize) -> usize {
    let body_len = u32::from_le_bytes(frames[at + 12..at + 16].try_into().expect("4 bytes"));
    format::frame_len(body_len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, SimDisk};
    use crate::types::PartitionKey;
    use futures_lite::future::block_on;

    fn record(key: &str, data: &[u8]) -> Record {
        Record::new(key.parse::<PartitionKey>().unwrap(), data.to_vec())
    }

    const SMALL: LogConfig = LogConfig { segment_bytes: 16 << 10, prealloc_bytes: 0 };
    const ALL: ReadLimits = ReadLimits { max_records: usize::MAX, max_bytes: usize::MAX };

    #[test]
    fn appends_read_back_across_segments_and_restarts() {
        block_on(async {
            let disk = SimDisk::new(7, Faults::default());
            let mut log = ShardLog::open(&disk, "s/0", 3, SMALL).await.unwrap();
            let mut expected = Vec::new();
            for round in 0..200u32 {
                let batch: Vec<Record> = (0..(round % 5 + 1))
                    .map(|i| record("k", &vec![round as u8; (round as usize * 37 + i as usize) % 900]))
                    .collect();
                let datas: Vec<Vec<u8>> = batch.iter().map(|r| r.data.clone()).collect();
                let base = log.append_group(vec![batch], 1000 + i64::from(round)).await.unwrap()[0];
                assert_eq!(SequenceNumber(base).epoch(), 3);
                for (i, data) in datas.into_iter().enumerate() {
                    expected.push((base + i as u128, data));
                }
            }
            assert!(log.segment_count() > 3, "segments rolled");
            let check = |outcome: ReadOutcome| {
                let got: Vec<(u128, Vec<u8>)> =
                    outcome.records.into_iter().map(|r| (r.sequence.0, r.data)).collect();
                assert_eq!(got, expected);
            };
            check(log.read(log.first_sequence(), ALL).await.unwrap());
            drop(log);
            disk.power_cut();
            let log = ShardLog::open(&disk, "s/0", 3, SMALL).await.unwrap();
            check(log.read(0, ALL).await.unwrap());
            // Partial reads continue where they stopped.
            let first = log.read(0, ReadLimits { max_records: 10, max_bytes: usize::MAX }).await.unwrap();
            assert_eq!(first.records.len(), 10);
            let rest = log.read(first.next, ALL).await.unwrap();
            assert_eq!(rest.records.first().unwrap().sequence.0, first.next);
            assert!(rest.caught_up);
        });
    }

    #[test]
    fn reads_in_budgeted_windows_return_every_record_once_in_order_whatever_the_limits() {
        block_on(async {
            let disk = SimDisk::new(13, Faults::default());
            let config = LogConfig { segment_bytes: 1 << 20, prealloc_bytes: 0 };
            let mut log = ShardLog::open(&disk, "s/2", 4, config).await.unwrap();
            // Frames of 70 to 150 KiB, larger than the smallest windows and cut by them.
            let mut expected = Vec::new();
            for round in 0..8u32 {
                let count = 70 + (round as usize * 37) % 80;
                let batch: Vec<Record> = (0..count)
                    .map(|i| record("k", &vec![(round as usize + i) as u8; 1000 + i % 48]))
                    .collect();
                let datas: Vec<Vec<u8>> = batch.iter().map(|r| r.data.clone()).collect();
                let base = log.append_group(vec![batch], 1000 + i64::from(round)).await.unwrap()[0];
                expected.extend(datas.into_iter().enumerate().map(|(i, data)| (base + i as u128, data)));
            }
            drop(log);
            disk.power_cut();
            let log = ShardLog::open(&disk, "s/2", 4, config).await.unwrap();
            let limits = [
                ReadLimits { max_records: 1, max_bytes: usize::MAX },
                ReadLimits { max_records: 7, max_bytes: usize::MAX },
                ReadLimits { max_records: 10_000, max_bytes: 1 },
                ReadLimits { max_records: 10_000, max_bytes: 100_000 },
                ReadLimits { max_records: 10_000, max_bytes: 300_000 },
                ReadLimits { max_records: 10_000, max_bytes: 4 << 20 },
                ReadLimits { max_records: 333, max_bytes: 1 << 20 },
            ];
            for limits in limits {
                let mut got = Vec::new();
                let mut from = log.first_sequence();
                loop {
                    let outcome = log.read(from, limits).await.unwrap();
                    assert!(outcome.records.len() <= limits.max_records);
                    let bytes: usize =
                        outcome.records.iter().map(|r| r.data.len() + r.partition_key.len()).sum();
                    assert!(
                        outcome.records.len() == 1 || bytes <= limits.max_bytes,
                        "{limits:?}: {bytes} bytes"
                    );
                    got.extend(outcome.records.into_iter().map(|r| (r.sequence.0, r.data)));
                    from = outcome.next;
                    if outcome.caught_up {
                        break;
                    }
                }
                assert!(got == expected, "{limits:?}: {} records read of {}", got.len(), expected.len());
            }
        });
    }

    #[test]
    fn sealed_frames_keep_no_plaintext_on_disk_and_read_back_after_restart() {
        block_on(async {
            let disk = SimDisk::new(11, Faults::default());
            let keyring = Arc::new(Keyring::new([5; 32], [6; 32]));
            let mut log = ShardLog::open(&disk, "s/1", 2, SMALL).await.unwrap();
            log.set_keyring(Some(keyring.clone()));
            let secret = b"the plaintext that must never reach the disk".to_vec();
            let key: Option<Arc<str>> = Some(Arc::from("alias/aws/kinesis"));
            let other: Option<Arc<str>> = Some(Arc::from("key-2"));
            let mut expected = Vec::new();
            for round in 0..40u8 {
                // Sealed under one key, under another, and in the clear, in one group.
                let mut data = secret.clone();
                data.push(round);
                let batches = vec![
                    (vec![record("k", &data)], key.clone()),
                    (vec![record("k", b"public"), record("k", b"public 2")], None),
                    (vec![record("k", &data)], other.clone()),
                ];
                log.append_group_sealed(batches, 1000).await.unwrap();
                expected.extend([data.clone(), b"public".to_vec(), b"public 2".to_vec(), data]);
            }
            let on_disk = disk.all_bytes();
            assert!(!on_disk.windows(secret.len()).any(|window| window == &secret[..]), "plaintext on disk");
            assert!(on_disk.windows(6).any(|window| window == b"public"), "clear frames stay clear");
            drop(log);
            disk.power_cut();
            let mut log = ShardLog::open(&disk, "s/1", 2, SMALL).await.unwrap();
            // Without the key, the sealed frames cannot be read.
            assert!(log.read(0, ALL).await.is_err());
            log.set_keyring(Some(keyring));
            let got: Vec<Vec<u8>> =
                log.read(0, ALL).await.unwrap().records.into_iter().map(|r| r.data).collect();
            assert_eq!(got, expected);
            // Another master key does not open them either.
            log.set_keyring(Some(Arc::new(Keyring::new([7; 32], [6; 32]))));
            assert!(log.read(0, ALL).await.is_err());
            // A sealed append without a keyring is refused before anything is written.
            log.set_keyring(None);
            let next = log.next_sequence();
            assert!(log.append_group_sealed(vec![(vec![record("k", b"x")], key)], 2000).await.is_err());
            assert_eq!(log.next_sequence(), next);
        });
    }

    #[test]
    fn positions_and_retention() {
        block_on(async {
            let disk = SimDisk::new(8, Faults::default());
            let mut log = ShardLog::open(&disk, "s/1", 0, SMALL).await.unwrap();
            let mut bases = Vec::new();
            for t in 0..100 {
                bases.push(log.append_group(vec![vec![record("k", &[0u8; 500])]], t * 10).await.unwrap()[0]);
            }
            assert_eq!(log.resolve(StartPosition::Latest).await.unwrap(), bases[99] + 1);
            assert_eq!(log.resolve(StartPosition::TrimHorizon).await.unwrap(), bases[0]);
            assert_eq!(log.resolve(StartPosition::AtTimestamp { arrival_ms: 505 }).await.unwrap(), bases[51]);
            assert_eq!(
                log.resolve(StartPosition::AfterSequence(SequenceNumber(bases[4]))).await.unwrap(),
                bases[5]
            );
            assert!(log.resolve(StartPosition::AtSequence(SequenceNumber::new(9, 0))).await.is_err());
            let behind = log.read(bases[0], ReadLimits { max_records: 1, max_bytes: 1 }).await.unwrap();
            assert_eq!(behind.millis_behind_latest, 990);
            // Retention: everything older than t=600 goes, whole segments only.
            let expired = log.detach_expired(600, 2000).await.unwrap();
            assert!(!expired.0.is_empty());
            remove_files(&disk, "s/1", expired).await.unwrap();
            let horizon = log.first_sequence();
            assert!(horizon > bases[0] && horizon <= bases[60]);
            // Expire everything: the next sequence survives a restart.
            let expired = log.detach_expired(i64::MAX, 3000).await.unwrap();
            remove_files(&disk, "s/1", expired).await.unwrap();
            let next = log.next_sequence();
            drop(log);
            disk.power_cut();
            let log = ShardLog::open(&disk, "s/1", 0, SMALL).await.unwrap();
            assert_eq!(log.next_sequence(), next);
            assert!(log.read(0, ALL).await.unwrap().records.is_empty());
        });
    }
}
