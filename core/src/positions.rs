//! Positions that change often: consumer checkpoints today, Firehose delivery cursors and
//! analytics checkpoints next. Each is a sequence number per (resource, owner, shard), kept
//! in their own journal (`positions/`, the catalog's crash-safe format) so that writing one
//! costs no catalog fsync, and group-committed: every position that arrives while one
//! fdatasync runs shares the next. A position is acknowledged only once durable.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::journal::JournalState;

/// Whose position: a resource (by uid), an owner (a consumer, a delivery worker, an
/// application) and one of the resource's shards.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub(crate) struct PositionKey {
    pub uid: u64,
    pub owner: String,
    pub shard: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Position {
    pub sequence: u128,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) enum PositionChange {
    Put(PositionKey, Position),
    /// The resource is gone: forget all its positions.
    DropResource {
        uid: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum PositionRecord {
    Snapshot(Vec<(PositionKey, Position)>),
    Change(PositionChange),
}

/// Every stored position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Positions {
    positions: BTreeMap<PositionKey, Position>,
}

impl Positions {
    pub fn get(&self, key: &PositionKey) -> Option<Position> {
        self.positions.get(key).copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Forgets the positions of resources not in `live`.
    pub fn retain_uids(&mut self, live: &std::collections::BTreeSet<u64>) {
        self.positions.retain(|key, _| live.contains(&key.uid));
    }
}

fn encode(record: &PositionRecord) -> Vec<u8> {
    rkyv::to_bytes::<rkyv::rancor::Error>(record).expect("serialising to memory cannot fail").into_vec()
}

impl JournalState for Positions {
    type Change = PositionChange;
    const DIR: &'static str = "positions";
    const SCHEMA: u32 = 1;

    fn empty() -> Positions {
        Positions::default()
    }

    fn snapshot_body(&self) -> Vec<u8> {
        let all = self.positions.iter().map(|(key, position)| (key.clone(), *position)).collect();
        encode(&PositionRecord::Snapshot(all))
    }

    fn change_body(change: &PositionChange) -> Vec<u8> {
        encode(&PositionRecord::Change(change.clone()))
    }

    fn replay(state: Option<Positions>, schema: u32, body: &[u8]) -> Result<Positions, String> {
        if schema != Self::SCHEMA {
            return Err(format!("positions schema {schema} is not one this release reads"));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        let record = rkyv::from_bytes::<PositionRecord, rkyv::rancor::Error>(&aligned)
            .map_err(|error| error.to_string())?;
        match (record, state) {
            (PositionRecord::Snapshot(all), None) => Ok(Positions { positions: all.into_iter().collect() }),
            (PositionRecord::Change(change), Some(mut state)) => {
                state.apply(change);
                Ok(state)
            }
            _ => Err("position records out of order".to_owned()),
        }
    }

    fn apply(&mut self, change: PositionChange) {
        match change {
            PositionChange::Put(key, position) => {
                self.positions.insert(key, position);
            }
            PositionChange::DropResource { uid } => self.positions.retain(|key, _| key.uid != uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::sim::{Faults, SimDisk};
    use futures_lite::future::block_on;

    #[test]
    fn positions_survive_power_cuts_and_drop_with_their_resource() {
        block_on(async {
            let disk = SimDisk::new(5, Faults::default());
            let mut journal: Journal<SimDisk, Positions> = Journal::open(&disk, 0).await.unwrap();
            let key = |uid, shard| PositionKey { uid, owner: "app".into(), shard };
            for round in 0..500u128 {
                let changes: Vec<PositionChange> = (0..4)
                    .map(|shard| {
                        PositionChange::Put(
                            key(1 + shard as u64 % 2, shard),
                            Position { sequence: round, updated_ms: 0 },
                        )
                    })
                    .collect();
                journal.commit(&changes, 0).await.unwrap();
            }
            journal.commit(&[PositionChange::DropResource { uid: 2 }], 0).await.unwrap();
            drop(journal);
            disk.power_cut();
            let journal: Journal<SimDisk, Positions> = Journal::open(&disk, 0).await.unwrap();
            assert_eq!(journal.state().get(&key(1, 0)).map(|p| p.sequence), Some(499));
            assert_eq!(journal.state().get(&key(1, 2)).map(|p| p.sequence), Some(499));
            assert_eq!(journal.state().get(&key(2, 1)), None);
            assert_eq!(journal.state().len(), 2);
        });
    }
}
