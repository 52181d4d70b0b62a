//! A small crash-safe state store: a directory of segments (the shard logs' format, with its
//! tail slots and CRCs), each starting with a snapshot of the whole state and followed by
//! changes. The catalog and the positions journal are both one.
//!
//! - **Open** is two steps so that a caller can move state between journals before anything
//!   old is deleted: [`Journal::recover`] replays the newest segment that starts with a valid
//!   snapshot, without writing; [`Recovered::start`] then writes a fresh segment holding a
//!   snapshot in the current schema, makes it durable, and only then removes the old ones.
//!   Newer segments without a valid snapshot are leftovers of a compaction that did not
//!   finish, older ones of one that did.
//! - **Commit** appends changes (any number, one fdatasync) and applies them only once
//!   durable. After a failed write or fdatasync the page cache can no longer be trusted to
//!   say what is on disk, so the journal refuses changes until [`Journal::reopen`] recovers
//!   it from the disk, which any later commit does by itself: a failed fsync costs one
//!   refused change, never a restart.
//! - **Compaction** starts a new segment with a snapshot once the log is well past the size
//!   of the last snapshot, then deletes the old one.
#![forbid(unsafe_code)]

use crate::format::{self, FrameMeta};
use crate::segment::{self, Segment};
use crate::storage::{IoError, Storage, StorageFile};

/// A state that a [`Journal`] keeps.
pub(crate) trait JournalState: Sized {
    type Change: Clone;
    /// The directory, relative to the data directory.
    const DIR: &'static str;
    /// The schema this release writes.
    const SCHEMA: u32;
    /// An empty state.
    fn empty() -> Self;
    fn snapshot_body(&self) -> Vec<u8>;
    fn change_body(change: &Self::Change) -> Vec<u8>;
    /// Replays one frame body of a segment written in `schema`: the first of a segment builds
    /// the state (`state` is `None`), each later one changes it.
    fn replay(state: Option<Self>, schema: u32, body: &[u8]) -> Result<Self, String>;
    fn apply(&mut self, change: Self::Change);
}

/// Errors of a journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("journal segment {path} is damaged: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("journal {dir} failed to persist a change ({cause}) and could not be recovered yet")]
    Poisoned { dir: &'static str, cause: String },
}

impl JournalError {
    /// The file or directory concerned.
    pub fn path(&self) -> &str {
        match self {
            JournalError::Io(error) => &error.path,
            JournalError::Corrupt { path, .. } => path,
            JournalError::Poisoned { dir, .. } => dir,
        }
    }
}

/// Compact once the active segment passes this size (and four times the last snapshot).
const COMPACT_BYTES: u64 = 1 << 20;

/// The durable state.
pub(crate) struct Journal<S: Storage, T: JournalState> {
    storage: S,
    state: T,
    active: Segment<S::File>,
    next_change: u128,
    poisoned: Option<String>,
    snapshot_bytes: u64,
}

/// A journal read from disk, not yet rewritten.
pub(crate) struct Recovered<S: Storage, T: JournalState> {
    storage: S,
    pub state: T,
    /// Segment ids found; removed once the fresh segment is durable.
    stale: Vec<u64>,
}

impl<S: Storage + Clone, T: JournalState> Journal<S, T> {
    /// Reads the journal's state from disk without writing anything.
    pub async fn recover(storage: &S) -> Result<Recovered<S, T>, JournalError> {
        storage.create_dir_all(T::DIR).await?;
        let mut ids: Vec<u64> = storage
            .list(T::DIR)
            .await?
            .iter()
            .filter_map(|name| segment::parse_segment_file_name(name))
            .collect();
        ids.sort_unstable();
        let mut found = None;
        let mut any_frames = false;
        for &id in ids.iter().rev() {
            if let Some((segment, _)) = segment::recover(storage, T::DIR, id).await? {
                any_frames |= !segment.is_empty();
                if let Some(state) = replay::<S::File, T>(&segment).await? {
                    found = Some(state);
                    break;
                }
            }
        }
        if found.is_none() && any_frames {
            // Something was committed, yet nothing replays: starting empty would lose it
            // (for the catalog, make every stream's data look like garbage). Refuse, and
            // leave the files for an operator.
            return Err(JournalError::Corrupt {
                path: T::DIR.to_owned(),
                reason: "segments hold frames but none starts with a valid snapshot".to_owned(),
            });
        }
        Ok(Recovered { storage: storage.clone(), state: found.unwrap_or_else(T::empty), stale: ids })
    }

    /// [`Journal::recover`] then [`Recovered::start`].
    pub async fn open(storage: &S, now_ms: i64) -> Result<Journal<S, T>, JournalError> {
        Self::recover(storage).await?.start(now_ms).await
    }

    pub fn state(&self) -> &T {
        &self.state
    }

    #[cfg(test)]
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Recovers from the disk after a failure: whatever of the failed change is visible now
    /// is made durable (a fresh snapshot), whatever is not is gone.
    pub async fn reopen(&mut self, now_ms: i64) -> Result<(), JournalError> {
        let reopened = Self::open(&self.storage, now_ms).await?;
        *self = reopened;
        Ok(())
    }

    /// Makes `changes` durable with one fdatasync, then applies them in order. A poisoned
    /// journal first tries to recover.
    pub async fn commit(&mut self, changes: &[T::Change], now_ms: i64) -> Result<(), JournalError> {
        if let Some(cause) = self.poisoned.clone() {
            if let Err(error) = self.reopen(now_ms).await {
                return Err(JournalError::Poisoned { dir: T::DIR, cause: format!("{cause}; then {error}") });
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::new();
        let mut metas = Vec::with_capacity(changes.len());
        for change in changes {
            let meta = frame_meta(self.next_change + metas.len() as u128, now_ms);
            format::encode_frame(&mut frames, meta, &T::change_body(change));
            metas.push(meta);
        }
        if let Err(error) = self.active.commit(&frames, &metas).await {
            self.poisoned = Some(error.to_string());
            return Err(error.into());
        }
        self.next_change += metas.len() as u128;
        for change in changes {
            self.state.apply(change.clone());
        }
        // Durable and applied: from here on a failure does not undo it. Compaction waits
        // until the log is well past the size of a snapshot, so that a large state does not
        // compact on every commit.
        if self.active.len() > COMPACT_BYTES.max(4 * self.snapshot_bytes) {
            if let Err(error) = self.compact(now_ms).await {
                self.poisoned = Some(format!("compaction failed: {error}"));
            }
        }
        Ok(())
    }

    async fn compact(&mut self, now_ms: i64) -> Result<(), JournalError> {
        let id = self.active.id + 1;
        let (active, next_change) = write_snapshot(&self.storage, id, &self.state, now_ms).await?;
        self.snapshot_bytes = active.len();
        let old = std::mem::replace(&mut self.active, active);
        self.next_change = next_change;
        self.storage.remove(old.path()).await?;
        self.storage.sync_dir(T::DIR).await?;
        Ok(())
    }
}

impl<S: Storage + Clone, T: JournalState> Recovered<S, T> {
    /// Writes the state as a fresh segment in the current schema, durably, then removes
    /// every segment it was recovered from.
    pub async fn start(self, now_ms: i64) -> Result<Journal<S, T>, JournalError> {
        let Recovered { storage, state, stale } = self;
        let next_id = stale.last().map_or(1, |last| last + 1);
        let (active, next_change) = write_snapshot(&storage, next_id, &state, now_ms).await?;
        for id in stale {
            let path = crate::storage::join(T::DIR, &segment::segment_file_name(id));
            storage.remove(&path).await?;
        }
        storage.sync_dir(T::DIR).await?;
        let snapshot_bytes = active.len();
        Ok(Journal { storage, state, active, next_change, poisoned: None, snapshot_bytes })
    }
}

fn frame_meta(sequence: u128, now_ms: i64) -> FrameMeta {
    FrameMeta { base_sequence: sequence, record_count: 1, first_arrival_ms: now_ms, last_arrival_ms: now_ms }
}

async fn write_snapshot<S: Storage, T: JournalState>(
    storage: &S,
    id: u64,
    state: &T,
    now_ms: i64,
) -> Result<(Segment<S::File>, u128), JournalError> {
    let mut segment = Segment::create(storage, T::DIR, id, 0, now_ms, 0, T::SCHEMA).await?;
    let meta = frame_meta(0, now_ms);
    let mut frame = Vec::new();
    format::encode_frame(&mut frame, meta, &state.snapshot_body());
    segment.commit(&frame, &[meta]).await?;
    Ok((segment, 1))
}

/// Replays a segment: a snapshot, then changes. `None` if it does not start with a valid
/// snapshot.
async fn replay<F: StorageFile, T: JournalState>(segment: &Segment<F>) -> Result<Option<T>, JournalError> {
    let mut state: Option<T> = None;
    let mut failure = None;
    let mut frames = 0u64;
    let path = segment.path().to_owned();
    let schema = segment.schema;
    let result = segment
        .scan(0, |_, frame| {
            match T::replay(state.take(), schema, frame.body) {
                Ok(next) => state = Some(next),
                Err(reason) => {
                    failure = Some(reason);
                    return Ok(false);
                }
            }
            frames += 1;
            Ok(true)
        })
        .await;
    result.map_err(|error| JournalError::Corrupt { path: path.clone(), reason: error.to_string() })?;
    match (failure, frames) {
        (None, 0) => Ok(None),
        (None, _) => Ok(state),
        // The first frame is not a snapshot this release reads: not this segment.
        (Some(_), 0) => Ok(None),
        // CRCs passed but a body did not decode: not a torn write, a real problem.
        (Some(reason), _) => Err(JournalError::Corrupt { path, reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, SimDisk};
    use futures_lite::future::block_on;

    /// A journal of numbers: the state is their list.
    #[derive(Debug, Default, PartialEq)]
    struct Numbers(Vec<u64>);

    impl JournalState for Numbers {
        type Change = u64;
        const DIR: &'static str = "numbers";
        const SCHEMA: u32 = 5;
        fn empty() -> Self {
            Numbers::default()
        }
        fn snapshot_body(&self) -> Vec<u8> {
            let mut body = vec![0xff];
            body.extend(self.0.iter().flat_map(|n| n.to_le_bytes()));
            body
        }
        fn change_body(change: &u64) -> Vec<u8> {
            change.to_le_bytes().to_vec()
        }
        fn replay(state: Option<Self>, schema: u32, body: &[u8]) -> Result<Self, String> {
            if schema != 5 {
                return Err(format!("schema {schema}"));
            }
            match state {
                None if body.first() == Some(&0xff) => Ok(Numbers(
                    body[1..].chunks(8).map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap())).collect(),
                )),
                None => Err("not a snapshot".into()),
                Some(mut state) => {
                    state.0.push(u64::from_le_bytes(body.try_into().map_err(|_| "length")?));
                    Ok(state)
                }
            }
        }
        fn apply(&mut self, change: u64) {
            self.0.push(change);
        }
    }

    #[test]
    fn survives_power_cuts_compaction_and_failed_syncs() {
        block_on(async {
            let disk = SimDisk::new(3, Faults::default());
            let mut journal: Journal<SimDisk, Numbers> = Journal::open(&disk, 0).await.unwrap();
            let mut expected = Vec::new();
            for round in 0..3000u64 {
                let changes: Vec<u64> = (0..1 + round % 3).map(|n| round * 10 + n).collect();
                journal.commit(&changes, 0).await.unwrap();
                expected.extend(changes);
            }
            assert_eq!(journal.state().0, expected);
            drop(journal);
            disk.power_cut();
            let mut journal: Journal<SimDisk, Numbers> = Journal::open(&disk, 0).await.unwrap();
            assert_eq!(journal.state().0, expected);
            assert_eq!(disk.file_names().iter().filter(|name| name.starts_with("numbers/")).count(), 1);
            // Every sync fails: the change is refused and the journal is poisoned...
            disk.set_faults(Faults { write_error_ppm: 0, sync_error_ppm: 1_000_000 });
            assert!(journal.commit(&[1], 0).await.is_err());
            assert!(journal.is_poisoned());
            // ...and recovers by itself on the next commit once the disk works again,
            // keeping what it recovered (the failed change may or may not be there).
            disk.set_faults(Faults::default());
            journal.commit(&[2], 0).await.unwrap();
            assert!(!journal.is_poisoned());
            let state = &journal.state().0;
            assert_eq!(&state[..expected.len()], &expected[..]);
            assert_eq!(state.last(), Some(&2));
            assert!(state.len() == expected.len() + 1 || state[expected.len()] == 1);
        });
    }
}
