//! What an application stores to resume exactly where it was: its operator state, where it
//! was in each input shard, and how many rows it had written to each output. One snapshot is
//! written to the application's own log (cut into records of at most [`CHUNK_BYTES`]), and a
//! position entry (owner [`SNAPSHOT_OWNER`]) then points at its first record.
//!
//! The format (little-endian), after the first record's 16-byte header (`MRKDAS01`, the chunk
//! count, the body's length):
//! - the runner's snapshot: u32 length, bytes ([`millrace_gpu::run::ApplicationRunner::snapshot`]);
//! - the ROWTIME released last (i64) and the last rowtime bound given to the runner (i64);
//! - the input shards: u32 count, then per shard its id (u32) and the position its next read
//!   starts at (u128);
//! - the outputs: u32 count, then per output its id (u16 length, UTF-8) and the number of
//!   rows written to it so far (u64).
//!
//! Decoding checks every length against what is left and refuses trailing bytes.

pub const MAGIC: &[u8; 8] = b"MRKDAS01";
/// The position entry that points at the latest snapshot.
pub const SNAPSHOT_OWNER: &str = "snapshot";
/// A snapshot's records are at most this long (a record is at most 1 MiB with its partition key).
pub const CHUNK_BYTES: usize = (1 << 20) - 1024;
const HEADER_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub runner: Vec<u8>,
    pub released_ms: i64,
    pub bound_ms: i64,
    /// (shard, position of its next read).
    pub shards: Vec<(u32, u128)>,
    /// (output id, rows written).
    pub outputs: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointError(pub String);

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an application snapshot cannot be read: {}", self.0)
    }
}

impl Checkpoint {
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.runner.len() + 64);
        out.extend_from_slice(&(self.runner.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.runner);
        out.extend_from_slice(&self.released_ms.to_le_bytes());
        out.extend_from_slice(&self.bound_ms.to_le_bytes());
        out.extend_from_slice(&(self.shards.len() as u32).to_le_bytes());
        for (shard, from) in &self.shards {
            out.extend_from_slice(&shard.to_le_bytes());
            out.extend_from_slice(&from.to_le_bytes());
        }
        out.extend_from_slice(&(self.outputs.len() as u32).to_le_bytes());
        for (id, rows) in &self.outputs {
            out.extend_from_slice(&(id.len() as u16).to_le_bytes());
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&rows.to_le_bytes());
        }
        out
    }

    /// The records to append, in order.
    pub fn encode(&self) -> Vec<Vec<u8>> {
        let body = self.body();
        let first_room = CHUNK_BYTES - HEADER_BYTES;
        let chunks =
            if body.len() <= first_room { 1 } else { 1 + (body.len() - first_room).div_ceil(CHUNK_BYTES) };
        let mut first = Vec::with_capacity(HEADER_BYTES + body.len().min(first_room));
        first.extend_from_slice(MAGIC);
        first.extend_from_slice(&(chunks as u32).to_le_bytes());
        first.extend_from_slice(&(body.len() as u32).to_le_bytes());
        first.extend_from_slice(&body[..body.len().min(first_room)]);
        let mut records = vec![first];
        if body.len() > first_room {
            records.extend(body[first_room..].chunks(CHUNK_BYTES).map(<[u8]>::to_vec));
        }
        records
    }

    /// How many records the snapshot starting with `first` spans.
    pub fn chunks(first: &[u8]) -> Result<usize, CheckpointError> {
        if first.len() < HEADER_BYTES || &first[..8] != MAGIC {
            return Err(CheckpointError("the first record is not a snapshot's header".into()));
        }
        let chunks = u32::from_le_bytes(first[8..12].try_into().expect("4 bytes")) as usize;
        if chunks == 0 || chunks > 4096 {
            return Err(CheckpointError(format!("{chunks} chunks")));
        }
        Ok(chunks)
    }

    pub fn decode(records: &[Vec<u8>]) -> Result<Checkpoint, CheckpointError> {
        let first = records.first().ok_or_else(|| CheckpointError("no record".into()))?;
        let chunks = Checkpoint::chunks(first)?;
        if records.len() != chunks {
            return Err(CheckpointError(format!("{} records of {chunks}", records.len())));
        }
        let length = u32::from_le_bytes(first[12..16].try_into().expect("4 bytes")) as usize;
        let mut body = first[HEADER_BYTES..].to_vec();
        for record in &records[1..] {
            body.extend_from_slice(record);
        }
        if body.len() != length {
            return Err(CheckpointError(format!("{} bytes where the header says {length}", body.len())));
        }
        let mut reader = Reader { bytes: &body, at: 0 };
        let runner_len = reader.u32()? as usize;
        let runner = reader.take(runner_len)?.to_vec();
        let released_ms = reader.i64()?;
        let bound_ms = reader.i64()?;
        let shard_count = reader.u32()? as usize;
        let mut shards = Vec::with_capacity(shard_count.min(4096));
        for _ in 0..shard_count {
            let shard = reader.u32()?;
            let from = u128::from_le_bytes(reader.take(16)?.try_into().expect("16 bytes"));
            shards.push((shard, from));
        }
        let output_count = reader.u32()? as usize;
        let mut outputs = Vec::with_capacity(output_count.min(64));
        for _ in 0..output_count {
            let id_len = u16::from_le_bytes(reader.take(2)?.try_into().expect("2 bytes")) as usize;
            let id = std::str::from_utf8(reader.take(id_len)?)
                .map_err(|_| CheckpointError("an output id is not UTF-8".into()))?
                .to_owned();
            let rows = u64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"));
            outputs.push((id, rows));
        }
        if reader.at != body.len() {
            return Err(CheckpointError(format!("{} bytes left over", body.len() - reader.at)));
        }
        Ok(Checkpoint { runner, released_ms, bound_ms, shards, outputs })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], CheckpointError> {
        let end = self.at.checked_add(count).filter(|end| *end <= self.bytes.len()).ok_or_else(|| {
            CheckpointError(format!("{count} bytes wanted at offset {} of {}", self.at, self.bytes.len()))
        })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn i64(&mut self) -> Result<i64, CheckpointError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn checkpoint() -> impl Strategy<Value = Checkpoint> {
        (
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (0usize..3_000_000).prop_map(|n| vec![7u8; n])
            ],
            any::<i64>(),
            any::<i64>(),
            proptest::collection::vec((any::<u32>(), any::<u128>()), 0..8),
            proptest::collection::vec(("[0-9.]{1,8}", any::<u64>()), 0..4),
        )
            .prop_map(|(runner, released_ms, bound_ms, shards, outputs)| Checkpoint {
                runner,
                released_ms,
                bound_ms,
                shards,
                outputs,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn round_trips_across_chunks(checkpoint in checkpoint()) {
            let records = checkpoint.encode();
            prop_assert!(records.iter().all(|record| record.len() <= CHUNK_BYTES));
            prop_assert_eq!(Checkpoint::chunks(&records[0]).unwrap(), records.len());
            prop_assert_eq!(Checkpoint::decode(&records).unwrap(), checkpoint);
        }

        #[test]
        fn damage_is_refused_or_harmless(checkpoint in checkpoint(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
            let mut records = checkpoint.encode();
            let last = records.len() - 1;
            let record = &mut records[last];
            if !record.is_empty() {
                let at = cut.index(record.len());
                record.truncate(at);
            }
            // A shortened snapshot never decodes (its length is in the header).
            prop_assert!(Checkpoint::decode(&records).is_err());
            let mut flipped = checkpoint.encode();
            let at = cut.index(flipped[0].len());
            flipped[0][at] ^= flip | 1;
            // A flipped byte either is refused or decodes to some checkpoint; it never panics.
            let _ = Checkpoint::decode(&flipped);
        }
    }
}
