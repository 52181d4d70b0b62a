//! Deterministic simulation of the storage engine (controller, catalog, positions, shard
//! logs, idempotent producers) on a simulated disk that injects failed writes, failed
//! fsyncs, process crashes at any I/O (recovery included) and power cuts that tear unsynced
//! writes at sector granularity. After every recovery, and now and then in between, the
//! stored records are checked against a plain model:
//!
//! - every acknowledged record is there, with its sequence number and its exact bytes,
//!   unless retention was allowed to remove it;
//! - nothing else is there but records whose append failed (at-least-once), whole, and never
//!   twice: an idempotent producer's resent batch (its acknowledgement lost, sent again
//!   later, after restarts, splits and merges) is answered with the sequence numbers it was
//!   stored under, or refused with a clear error, never stored again;
//! - sequence numbers strictly increase within each shard, and every record of a child
//!   shard is above every sequence number of its parents (their ending sequence numbers);
//! - acknowledged checkpoints survive; failed catalog operations leave the catalog and the
//!   shard logs agreeing, without a restart.
//!
//! A failure prints its seed. `MILLRACE_SIM_SEEDS=N` runs N seeds (default 200),
//! `MILLRACE_SIM_SEED=S` runs one, `MILLRACE_SIM_TRACE=1` prints what each step did. Run:
//! `cargo test -p millrace-core --lib simulation`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_lite::future::block_on;

use crate::catalog::{NewResource, ResourceKey, ResourceKind, ResourceMeta, StreamMode};
use crate::controller::{self, route_records, Controller, LocalHosts, ShardKey};
use crate::crypto::Keyring;
use crate::dedupe::{self, Judged, Pending, Stamp, Verdict};
use crate::journal::Journal;
use crate::positions::{PositionKey, Positions};
use crate::shard_log::{self, LogConfig, ReadLimits, ShardLog};
use crate::sim::{Faults, SimDisk, SimRng};
use crate::types::{HashKey, PartitionKey, Record, SequenceNumber, ShardId, StreamName};

const HOUR_MS: i64 = 3_600_000;
const RETENTION_MS: i64 = 24 * HOUR_MS;
const ALL: ReadLimits = ReadLimits { max_records: usize::MAX, max_bytes: usize::MAX };

type Ctl = Controller<SimDisk, LocalHosts<SimDisk>>;
type PositionJournal = Journal<SimDisk, Positions>;

/// The simulation's master key (fixed, so that runs replay exactly).
fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new([0x5a; 32], [0xa5; 32]))
}

/// (stream, owner, shard)
type CheckpointKey = (String, String, ShardId);

#[derive(Default)]
struct Model {
    /// Acknowledged records by shard: data → (sequence, arrival time of the append).
    acked: HashMap<ShardKey, BTreeMap<Vec<u8>, (u128, i64)>>,
    /// Records whose append failed: they may or may not be stored.
    maybe: HashSet<Vec<u8>>,
    /// Retention may have removed acknowledged records that arrived before this.
    trim_cutoff_ms: i64,
    /// Checkpoints: the last acknowledged value, and values of later attempts that failed
    /// (any of which may have become durable).
    checkpoints: HashMap<CheckpointKey, (Option<u128>, Vec<u128>)>,
    /// Streams whose deletion was acknowledged: they must stay gone.
    deleted: Vec<String>,
    /// Every (shard, sequence) a reader has seen, with its data: a sequence number never
    /// comes back naming different data, whether by a later read or a later acknowledgement.
    seen: HashMap<(ShardKey, u128), Vec<u8>>,
    /// Resends answered from what was stored, and refused as unjudgeable.
    resends_answered: u64,
    resends_refused: u64,
}

/// A batch of an idempotent producer whose acknowledgement the producer did not get: it
/// will be sent again, with the same stamp.
struct Unacked {
    stream: String,
    stamp: Stamp,
    records: Vec<Record>,
    /// Where each record was stored, if the first sending was acknowledged (and the
    /// acknowledgement then lost on the way).
    first: Option<Vec<(ShardKey, u128)>>,
    /// When it was first sent: a record found stored arrived no earlier.
    sent_ms: i64,
}

/// How one record of a put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored(ShardKey, u128),
    /// A resend found stored (by an earlier sending) under this number.
    Found(ShardKey, u128),
    /// The commit failed: the record may or may not be stored.
    Failed,
    /// Refused without storing (stale, or a resend that cannot be judged or restated).
    Refused,
}

struct Sim {
    seed: u64,
    rng: SimRng,
    disk: SimDisk,
    config: LogConfig,
    faults: Faults,
    now_ms: i64,
    next_record: u64,
    model: Model,
    streams: Vec<String>,
    /// Each stream's producer queues: producer id → next batch number.
    queues: HashMap<String, Vec<(u64, u32)>>,
    unacked: Vec<Unacked>,
}

fn stream_key(name: &str) -> ResourceKey {
    ResourceKey::new(ResourceKind::DataStream, name)
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = SimRng::new(seed);
        let faults = if rng.chance(500_000) {
            Faults { write_error_ppm: rng.below(30_000) as u32, sync_error_ppm: rng.below(30_000) as u32 }
        } else {
            Faults::default()
        };
        let config = LogConfig { segment_bytes: 4096 * (2 + rng.below(8)), prealloc_bytes: 0 };
        Sim {
            seed,
            disk: SimDisk::new(seed ^ 0x5eed, faults),
            rng,
            config,
            faults,
            now_ms: 1_700_000_000_000,
            next_record: 0,
            model: Model::default(),
            streams: Vec::new(),
            queues: HashMap::new(),
            unacked: Vec::new(),
        }
    }

    /// Starts the controller. Now and then the start itself crashes part way, or meets
    /// failed writes, and is retried after the crash: recovery must survive its own crashes.
    async fn start(&mut self) -> (Ctl, PositionJournal) {
        for attempt in 0..20 {
            let troubled = attempt < 4 && self.rng.chance(200_000);
            if troubled {
                self.disk.set_faults(self.faults);
                self.disk.crash_after(self.rng.below(60));
            } else {
                self.disk.set_faults(Faults::default());
            }
            let hosts = LocalHosts::new(&self.disk, self.config).with_keyring(Some(keyring()));
            let started = Controller::start(&self.disk, hosts, self.now_ms).await;
            if std::env::var_os("MILLRACE_SIM_TRACE").is_some() {
                eprintln!(
                    "  start attempt {attempt} troubled {troubled}: {:?} crashed {}",
                    started.as_ref().err(),
                    self.disk.has_crashed()
                );
            }
            match started {
                Ok(started) if !self.disk.has_crashed() => {
                    // A crash armed for the start that it finished before stays away.
                    self.disk.disarm_crash();
                    self.disk.set_faults(self.faults);
                    return started;
                }
                Ok(_) | Err(_) if troubled => {
                    // The start crashed (or met a fault): the process dies, and starts again.
                    if self.rng.chance(300_000) {
                        self.disk.power_cut();
                    } else {
                        self.disk.process_crash();
                    }
                }
                Ok(_) => unreachable!("no crash was armed"),
                Err(error) => panic!("seed {}: recovery failed: {error}", self.seed),
            }
        }
        panic!("seed {}: recovery did not finish in 20 attempts", self.seed)
    }

    fn record(&mut self) -> Record {
        let id = self.next_record;
        self.next_record += 1;
        let len_max = if self.rng.chance(100_000) { 9000 } else { 400 };
        let len = 8 + self.rng.below(len_max) as usize;
        let mut data = vec![(id % 251) as u8; len];
        data[..8].copy_from_slice(&id.to_le_bytes());
        let key: PartitionKey = format!("pk-{}", self.rng.below(50)).parse().unwrap();
        Record::new(key, data)
    }

    fn pick_stream(&mut self) -> Option<String> {
        if self.streams.is_empty() {
            return None;
        }
        Some(self.streams[self.rng.below(self.streams.len() as u64) as usize].clone())
    }

    /// Stores records as the runtime does (`Engine::append_stamped` and the shard task's
    /// group commit): routes them, judges the stamp in each shard against its producer
    /// record, commits, and restates the sequence numbers of duplicates.
    async fn put(
        &mut self,
        ctl: &mut Ctl,
        meta: &ResourceMeta,
        records: Vec<Record>,
        stamp: Option<Stamp>,
    ) -> Vec<Outcome> {
        let total = records.len();
        let mut outcomes = vec![Outcome::Failed; total];
        let groups = route_records(meta, records).expect("records are within limits");
        // Unstamped groups are sometimes split into two frames, or sealed under a key id;
        // several frames per shard in one commit, as the runtime's group commit does.
        let mut by_shard: BTreeMap<ShardId, Vec<Pending<Vec<usize>>>> = BTreeMap::new();
        for (shard, group) in groups {
            let (positions, batch): (Vec<usize>, Vec<Record>) = group.into_iter().unzip();
            let key_id: Option<Arc<str>> = match self.rng.below(8) {
                0 => Some(Arc::from("sim-key-1")),
                1 => Some(Arc::from("alias/sim-key-2")),
                _ => None,
            };
            let pendings = by_shard.entry(shard).or_default();
            if stamp.is_none() && batch.len() > 1 && self.rng.chance(500_000) {
                let half = batch.len() / 2;
                pendings.push(Pending {
                    records: batch[..half].to_vec(),
                    key_id: key_id.clone(),
                    stamp,
                    reply: positions[..half].to_vec(),
                });
                pendings.push(Pending {
                    records: batch[half..].to_vec(),
                    key_id: None,
                    stamp,
                    reply: positions[half..].to_vec(),
                });
            } else {
                pendings.push(Pending { records: batch, key_id, stamp, reply: positions });
            }
        }
        for (shard, pendings) in by_shard {
            let key = ShardKey { uid: meta.uid, shard };
            let log = ctl.hosts_mut().logs.get_mut(&key).expect("open shards have logs");
            if std::env::var_os("MILLRACE_SIM_TRACE").is_some() {
                if let Some(stamp) = stamp {
                    eprintln!(
                        "    {key:?} knows {:?} complete {}",
                        log.producers().entry(stamp.producer_id),
                        log.producers().is_complete()
                    );
                }
            }
            let Judged { batches, waiting, answered } = dedupe::judge_group(log.producers(), pendings);
            for (positions, stamp, verdict) in answered {
                match verdict {
                    Verdict::Duplicate(last) if log.confirm(stamp.producer_id, last).await.is_err() => {
                        // The frame could not be made durable: the retry fails, as a failed
                        // append does (its records stay maybe-stored).
                        for position in positions {
                            outcomes[position] = Outcome::Failed;
                        }
                    }
                    Verdict::Duplicate(last) => {
                        let stored_in = last
                            .stored_in
                            .map_or(key, |parent| ShardKey { uid: meta.uid, shard: ShardId::new(parent) });
                        let group_len = positions.len();
                        for (group_index, position) in positions.into_iter().enumerate() {
                            outcomes[position] =
                                match dedupe::restate(last, total, position, group_len, group_index) {
                                    Some(sequence) => Outcome::Found(stored_in, sequence),
                                    None => Outcome::Refused,
                                };
                        }
                    }
                    Verdict::Stale { .. } | Verdict::OutsideWindow => {
                        for position in positions {
                            outcomes[position] = Outcome::Refused;
                        }
                    }
                    Verdict::Store => unreachable!("stored batches are not answered"),
                }
            }
            if batches.is_empty() {
                continue;
            }
            match log.append_group_stamped(batches, self.now_ms).await {
                Ok(bases) => {
                    for (base, waiters) in bases.into_iter().zip(waiting) {
                        for positions in waiters {
                            for (offset, position) in positions.into_iter().enumerate() {
                                outcomes[position] = Outcome::Stored(key, base + offset as u128);
                            }
                        }
                    }
                }
                Err(_) => {
                    if log.is_poisoned() && !self.disk.has_crashed() {
                        // As the runtime does: recover the shard from the disk. Appends only
                        // reach open shards, so the recovered log stays open.
                        let dir = log.dir().to_owned();
                        let epoch = meta.shard(shard).expect("routed shard exists").epoch;
                        let reopened =
                            ShardLog::open_for_writes(&self.disk, &dir, epoch, self.config, self.now_ms)
                                .await;
                        if let Ok(mut recovered) = reopened {
                            recovered.set_keyring(Some(keyring()));
                            recovered.adopt_inherited(log);
                            *log = recovered;
                        }
                    }
                }
            }
        }
        outcomes
    }

    /// Notes acknowledged records in the model, checking that no sequence number changes
    /// meaning.
    fn acknowledge(&mut self, key: ShardKey, sequence: u128, data: Vec<u8>, arrival_ms: i64) {
        if std::env::var_os("MILLRACE_SIM_TRACE").is_some() {
            eprintln!("  ack {key:?} {sequence} {:?}", &data[..8]);
        }
        if let Some(seen) = self.model.seen.get(&(key, sequence)) {
            assert_eq!(
                seen, &data,
                "seed {}: sequence {sequence} of {key:?} was read as other data before",
                self.seed
            );
        }
        let acked = self.model.acked.entry(key).or_default();
        match acked.get(&data) {
            Some((earlier, _)) => assert_eq!(
                *earlier, sequence,
                "seed {}: a record was acknowledged under two sequence numbers (stored twice)",
                self.seed
            ),
            None => {
                acked.insert(data, (sequence, arrival_ms));
            }
        }
    }

    /// An append by a plain producer, or a new batch of an idempotent one whose
    /// acknowledgement is sometimes lost (it is then resent later).
    async fn append(&mut self, ctl: &mut Ctl) {
        let Some(name) = self.pick_stream() else { return };
        let Ok(meta) = ctl.resource(&stream_key(&name)).cloned() else { return };
        let count = 1 + self.rng.below(6) as usize;
        let records: Vec<Record> = (0..count).map(|_| self.record()).collect();
        let stamp = if self.rng.chance(400_000) {
            let queues = self
                .queues
                .entry(name.clone())
                .or_insert_with(|| (0..3).map(|queue| ((meta.uid << 8) | queue, 1)).collect());
            let queue = self.rng.below(queues.len() as u64) as usize;
            let (producer_id, batch) = queues[queue];
            queues[queue].1 += 1;
            Some(Stamp { producer_id, batch, resent: false })
        } else {
            None
        };
        let kept: Vec<Record> = if stamp.is_some() { records.clone() } else { Vec::new() };
        let outcomes = self.put(ctl, &meta, records.clone(), stamp).await;
        let lost_ack = stamp.is_some() && self.rng.chance(250_000);
        if std::env::var_os("MILLRACE_SIM_TRACE").is_some() && stamp.is_some() {
            eprintln!("  stamped {stamp:?} -> {outcomes:?} lost ack {lost_ack}");
        }
        let all_stored = outcomes.iter().all(|outcome| matches!(outcome, Outcome::Stored(..)));
        let now = self.now_ms;
        for (record, outcome) in records.into_iter().zip(&outcomes) {
            match *outcome {
                Outcome::Stored(key, sequence) => self.acknowledge(key, sequence, record.data, now),
                Outcome::Failed => {
                    self.model.maybe.insert(record.data);
                }
                Outcome::Refused | Outcome::Found(..) => {
                    panic!("seed {}: a first sending was refused or found stored", self.seed)
                }
            }
        }
        // A failed batch is resent too, as the producer SDK does.
        if let (Some(stamp), true) = (stamp, lost_ack || !all_stored) {
            let first = all_stored.then(|| {
                outcomes
                    .iter()
                    .map(|outcome| match outcome {
                        Outcome::Stored(key, sequence) => (*key, *sequence),
                        _ => unreachable!("all stored"),
                    })
                    .collect()
            });
            let stamp = Stamp { resent: true, ..stamp };
            self.unacked.push(Unacked { stream: name, stamp, records: kept, first, sent_ms: now });
        }
    }

    /// A producer sends a batch again: it must be answered with where it was stored, or
    /// stored now if it never was, or refused with a clear error; never stored twice.
    async fn resend(&mut self, ctl: &mut Ctl) {
        if self.unacked.is_empty() {
            return;
        }
        let index = self.rng.below(self.unacked.len() as u64) as usize;
        let unacked = self.unacked.swap_remove(index);
        let Ok(meta) = ctl.resource(&stream_key(&unacked.stream)).cloned() else { return };
        let outcomes = self.put(ctl, &meta, unacked.records.clone(), Some(unacked.stamp)).await;
        if std::env::var_os("MILLRACE_SIM_TRACE").is_some() {
            eprintln!("  resend {:?} first {:?} -> {outcomes:?}", unacked.stamp, unacked.first);
        }
        let seed = self.seed;
        for (position, (record, outcome)) in unacked.records.into_iter().zip(outcomes).enumerate() {
            match (outcome, &unacked.first) {
                (Outcome::Found(key, sequence), Some(first)) => {
                    assert_eq!(
                        (key, sequence),
                        first[position],
                        "seed {seed}: a resent batch got other sequence numbers"
                    );
                    self.model.resends_answered += 1;
                }
                (Outcome::Stored(..), Some(_)) => {
                    panic!("seed {seed}: an acknowledged batch was stored again")
                }
                (Outcome::Found(key, sequence), None) => {
                    // The failed first sending did store it.
                    self.model.resends_answered += 1;
                    self.acknowledge(key, sequence, record.data, unacked.sent_ms);
                }
                (Outcome::Stored(key, sequence), None) => {
                    let now = self.now_ms;
                    self.acknowledge(key, sequence, record.data, now);
                }
                (Outcome::Refused, _) => self.model.resends_refused += 1,
                (Outcome::Failed, _) => {
                    self.model.maybe.insert(record.data);
                }
            }
        }
    }

    /// Returns false if the controller must restart.
    async fn reshard(&mut self, ctl: &mut Ctl) -> bool {
        let Some(name) = self.pick_stream() else { return true };
        let key = stream_key(&name);
        let Ok(meta) = ctl.resource(&key).cloned() else { return true };
        let open: Vec<_> = meta.open_shards().cloned().collect();
        let result = match self.rng.below(3) {
            0 => {
                let shard = &open[self.rng.below(open.len() as u64) as usize];
                let width = shard.hash_end - shard.hash_start;
                if width < 2 {
                    return true;
                }
                let at = shard.hash_start + 1 + (u128::from(self.rng.next_u64()) % (width - 1));
                ctl.split_shard(&key, shard.shard_id(), HashKey::new(at), self.now_ms).await
            }
            1 => {
                let mut sorted = open.clone();
                sorted.sort_by_key(|shard| shard.hash_start);
                if sorted.len() < 2 {
                    return true;
                }
                let at = self.rng.below(sorted.len() as u64 - 1) as usize;
                ctl.merge_shards(&key, sorted[at].shard_id(), sorted[at + 1].shard_id(), self.now_ms).await
            }
            _ => {
                let target = (open.len() as u32 + 1).min(6);
                ctl.update_shard_count(&key, target, self.now_ms).await
            }
        };
        if std::env::var_os("MILLRACE_SIM_TRACE").is_some() {
            eprintln!("  reshard {name}: {result:?}");
        }
        // A failed commit recovered the catalog in place: most of the time go on without a
        // restart, so that the reconciliation is what gets checked.
        result.is_ok() || !self.rng.chance(200_000)
    }

    /// Several consumers checkpoint at once: one group commit of the positions journal.
    async fn checkpoint(&mut self, ctl: &Ctl, positions: &mut PositionJournal) {
        let Some(name) = self.pick_stream() else { return };
        let Ok(meta) = ctl.resource(&stream_key(&name)).cloned() else { return };
        let mut changes = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..1 + self.rng.below(4) {
            let shard = &meta.shards[self.rng.below(meta.shards.len() as u64) as usize];
            let owner = format!("app-{}", self.rng.below(2));
            let sequence = SequenceNumber::new(shard.epoch, self.rng.below(1000));
            let change =
                controller::prepare_checkpoint(&meta, &owner, shard.shard_id(), sequence, self.now_ms)
                    .expect("valid checkpoint");
            changes.push(change);
            keys.push(((name.clone(), owner, shard.shard_id()), sequence.0));
        }
        let result = positions.commit(&changes, self.now_ms).await;
        for (key, sequence) in keys {
            let entry = self.model.checkpoints.entry(key).or_default();
            match &result {
                Ok(()) => *entry = (Some(sequence), Vec::new()),
                Err(_) => entry.1.push(sequence),
            }
        }
    }

    /// Returns false if the controller must restart.
    async fn delete(&mut self, ctl: &mut Ctl) -> bool {
        let Some(name) = self.pick_stream() else { return true };
        let key = stream_key(&name);
        let Ok(meta) = ctl.resource(&key).cloned() else { return true };
        // Whatever happens, stop tracking it: a failed delete may or may not have committed.
        self.streams.retain(|stream| *stream != name);
        self.model.checkpoints.retain(|(stream, _, _), _| *stream != name);
        self.model.acked.retain(|key, _| key.uid != meta.uid);
        self.unacked.retain(|unacked| unacked.stream != name);
        let result = ctl.delete(&key, true, self.now_ms).await;
        if result.is_ok() {
            self.model.deleted.push(name);
        }
        result.is_ok()
    }

    async fn retention(&mut self, ctl: &mut Ctl) {
        let cutoff_ms = self.now_ms - RETENTION_MS;
        self.model.trim_cutoff_ms = self.model.trim_cutoff_ms.max(cutoff_ms);
        let keys: Vec<ShardKey> = ctl.hosts().logs.keys().copied().collect();
        for key in keys {
            let log = ctl.hosts_mut().logs.get_mut(&key).expect("listed");
            if let Ok(expired) = log.detach_expired(cutoff_ms, self.now_ms).await {
                let dir = log.dir().to_owned();
                let _ = shard_log::remove_files(&self.disk, &dir, expired).await;
            }
        }
    }

    /// Checks every shard of every stream against the model.
    async fn verify(&mut self, ctl: &Ctl, positions: &PositionJournal, when: &str) {
        let seed = self.seed;
        let mut seen_keys = HashSet::new();
        for name in &self.streams {
            let meta = ctl
                .resource(&stream_key(name))
                .unwrap_or_else(|_| panic!("seed {seed} {when}: stream {name} lost"));
            for shard in &meta.shards {
                let key = ShardKey { uid: meta.uid, shard: shard.shard_id() };
                seen_keys.insert(key);
                let log = ctl.hosts().logs.get(&key).expect("every shard has a log");
                if !ctl.catalog_failed() {
                    assert_eq!(
                        log.is_closed(),
                        !shard.is_open(),
                        "seed {seed} {when}: log and catalog disagree on {key:?}"
                    );
                }
                let read = log
                    .read(0, ALL)
                    .await
                    .unwrap_or_else(|error| panic!("seed {seed} {when}: read: {error}"));
                let acked = self.model.acked.get(&key);
                let mut last = None;
                let mut present = HashSet::new();
                // Children above parents: every record above every parent's last number.
                let floor = shard
                    .parents
                    .iter()
                    .filter_map(|parent| meta.shard(ShardId::new(*parent)))
                    .map(|parent| {
                        assert!(
                            parent.epoch < shard.epoch,
                            "seed {seed} {when}: child epoch not above its parent's"
                        );
                        parent.ending_sequence.expect("parents are closed")
                    })
                    .max();
                for record in &read.records {
                    assert!(
                        last < Some(record.sequence.0),
                        "seed {seed} {when}: sequence not increasing in {key:?}"
                    );
                    assert!(
                        floor.is_none_or(|floor| record.sequence.0 > floor),
                        "seed {seed} {when}: record {} of child {key:?} is not above its parents",
                        record.sequence
                    );
                    if let Some(ending) = shard.ending_sequence {
                        assert!(
                            record.sequence.0 <= ending,
                            "seed {seed} {when}: record {} past its shard's end {ending} in {key:?}",
                            record.sequence
                        );
                    }
                    assert_eq!(record.sequence.epoch(), shard.epoch, "seed {seed} {when}: sequence epoch");
                    last = Some(record.sequence.0);
                    match acked.and_then(|acked| acked.get(&record.data)) {
                        Some((sequence, _)) => assert_eq!(
                            *sequence, record.sequence.0,
                            "seed {seed} {when}: acknowledged record moved in {key:?} (or was stored twice)"
                        ),
                        None => assert!(
                            self.model.maybe.contains(&record.data),
                            "seed {seed} {when}: record {:?}… in {key:?} was never appended",
                            &record.data[..8.min(record.data.len())]
                        ),
                    }
                    assert!(
                        present.insert(record.data.clone()),
                        "seed {seed} {when}: a record is stored twice in {key:?}"
                    );
                    let seen = self
                        .model
                        .seen
                        .entry((key, record.sequence.0))
                        .or_insert_with(|| record.data.clone());
                    assert_eq!(
                        seen, &record.data,
                        "seed {seed} {when}: sequence {} of {key:?} now names other data",
                        record.sequence
                    );
                }
                for (data, (sequence, arrival_ms)) in acked.into_iter().flatten() {
                    if *arrival_ms >= self.model.trim_cutoff_ms {
                        assert!(
                            present.contains(data),
                            "seed {seed} {when}: acknowledged record {sequence} of {key:?} is lost"
                        );
                    }
                }
            }
        }
        for key in self.model.acked.keys() {
            assert!(
                seen_keys.contains(key),
                "seed {seed} {when}: shard {key:?} with acknowledged data vanished"
            );
        }
        for ((name, owner, shard), (acked, attempted)) in &self.model.checkpoints {
            let uid = ctl.resource(&stream_key(name)).expect("tracked streams exist").uid;
            let key = PositionKey { uid, owner: owner.clone(), shard: shard.get() };
            let stored = positions.state().get(&key).map(|position| position.sequence);
            let allowed = stored == *acked || stored.is_some_and(|value| attempted.contains(&value));
            assert!(
                allowed,
                "seed {seed} {when}: checkpoint {owner}/{shard} is {stored:?}, acknowledged {acked:?}"
            );
        }
        for name in &self.model.deleted {
            assert!(
                ctl.resource(&stream_key(name)).is_err(),
                "seed {seed} {when}: deleted stream {name} is back"
            );
        }
        if when.starts_with("recovery") || when.starts_with("final") {
            // No shard file outlives its stream: deletions finish, or start-up removes them.
            let live: HashSet<String> = ctl
                .catalog()
                .all()
                .flat_map(|resource| {
                    resource
                        .shards
                        .iter()
                        .map(|shard| crate::catalog::shard_dir(resource.uid, shard.shard_id()))
                })
                .collect();
            for file in self.disk.file_names().iter().filter(|name| name.starts_with("shards/")) {
                let dir = file.rsplit_once('/').map_or(file.as_str(), |(dir, _)| dir);
                assert!(live.contains(dir), "seed {seed} {when}: orphan file {file}");
            }
        }
    }

    async fn create(&mut self, ctl: &mut Ctl, step: usize) -> bool {
        let name = format!("stream-{step}");
        let shards = 1 + self.rng.below(3) as u32;
        let new =
            NewResource::data_stream(&name.parse::<StreamName>().unwrap(), shards, StreamMode::Provisioned);
        let result = ctl.create(new, self.now_ms).await;
        // A failed commit may still have happened: the recovered catalog says.
        if result.is_ok() || ctl.resource(&stream_key(&name)).is_ok() {
            self.streams.push(name);
        }
        result.is_ok() || !self.rng.chance(200_000)
    }

    /// Runs `steps` steps; returns how many resent records were answered from what was
    /// stored, and how many were refused.
    async fn run(mut self, steps: usize) -> (u64, u64) {
        let (mut ctl, mut positions) = self.start().await;
        for step in 0..steps {
            let jump_ms = if self.rng.chance(20_000) { 30 * HOUR_MS as u64 } else { 60_000 };
            self.now_ms += self.rng.below(jump_ms) as i64;
            let mut must_restart = false;
            let action = self.rng.below(100);
            if std::env::var_os("MILLRACE_SIM_TRACE").is_some() {
                eprintln!(
                    "step {step}: action {action} streams {:?} unacked {}",
                    self.streams,
                    self.unacked.len()
                );
            }
            match action {
                0..=4 if self.streams.len() < 3 => must_restart = !self.create(&mut ctl, step).await,
                5..=9 => must_restart = !self.reshard(&mut ctl).await,
                10..=12 => self.retention(&mut ctl).await,
                21..=23 => self.checkpoint(&ctl, &mut positions).await,
                24 if self.rng.chance(300_000) => must_restart = !self.delete(&mut ctl).await,
                25..=30 => self.resend(&mut ctl).await,
                13..=15 => {
                    // As an append that meets a closed shard does: recover a failed catalog.
                    let _ = ctl.ready(self.now_ms).await;
                    self.verify(&ctl, &positions, &format!("step {step}")).await
                }
                16..=20 => {
                    // A crash somewhere in the next few operations.
                    self.disk.crash_after(self.rng.below(40));
                    for _ in 0..1 + self.rng.below(4) {
                        self.append(&mut ctl).await;
                    }
                    must_restart = true;
                }
                _ => self.append(&mut ctl).await,
            }
            if must_restart || self.disk.has_crashed() {
                drop((ctl, positions));
                let power = self.rng.chance(500_000);
                if std::env::var_os("MILLRACE_SIM_TRACE").is_some() {
                    eprintln!("  restart (power cut: {power})");
                }
                if power {
                    self.disk.power_cut();
                } else {
                    self.disk.process_crash();
                }
                (ctl, positions) = self.start().await;
                self.verify(&ctl, &positions, &format!("recovery after step {step}")).await;
            }
        }
        // Every producer sends what it has left.
        while !self.unacked.is_empty() {
            self.disk.set_faults(Faults::default());
            self.resend(&mut ctl).await;
        }
        drop((ctl, positions));
        self.disk.power_cut();
        let (ctl, positions) = self.start().await;
        self.verify(&ctl, &positions, "final recovery").await;
        (self.model.resends_answered, self.model.resends_refused)
    }
}

fn run_seed(seed: u64, steps: usize) -> (u64, u64) {
    match std::panic::catch_unwind(|| block_on(Sim::new(seed).run(steps))) {
        Ok(counts) => counts,
        Err(panic) => {
            eprintln!("simulation failed with seed {seed}; rerun with MILLRACE_SIM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn simulated_crashes_lose_nothing_acknowledged() {
    if let Some(seed) = std::env::var("MILLRACE_SIM_SEED").ok().and_then(|seed| seed.parse().ok()) {
        run_seed(seed, 400);
        return;
    }
    let seeds: u64 = std::env::var("MILLRACE_SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let (mut answered, mut refused) = (0, 0);
    for seed in 0..seeds {
        let (a, r) = run_seed(seed, 250);
        answered += a;
        refused += r;
    }
    // The dedupe path is exercised: resends found their stored batches.
    assert!(
        answered > seeds,
        "{answered} resent records were answered from what was stored ({refused} refused)"
    );
}

#[test]
fn failed_split_leaves_the_parent_writable() {
    block_on(async {
        let disk = SimDisk::new(1, Faults::default());
        let config = LogConfig { segment_bytes: 1 << 20, prealloc_bytes: 0 };
        let (mut ctl, _positions) =
            Controller::start(&disk, LocalHosts::new(&disk, config), 0).await.unwrap();
        let name: StreamName = "s".parse().unwrap();
        let key = stream_key("s");
        ctl.create(NewResource::data_stream(&name, 1, StreamMode::Provisioned), 0).await.unwrap();
        // Every write fails: the split's catalog commit cannot happen.
        disk.set_faults(Faults { write_error_ppm: 1_000_000, sync_error_ppm: 0 });
        assert!(ctl.split_shard(&key, ShardId::new(0), HashKey::new(u128::MAX / 2), 1).await.is_err());
        disk.set_faults(Faults::default());
        // The catalog could not even be recovered: whether the split happened is unknown, so
        // the parent takes no writes (they could land past an ending the catalog may record).
        assert!(ctl.catalog_failed());
        let meta = ctl.resource(&key).unwrap().clone();
        let shard_key = ShardKey { uid: meta.uid, shard: ShardId::new(0) };
        let record = Record::new("k".parse::<PartitionKey>().unwrap(), vec![1, 2, 3]);
        let log = ctl.hosts_mut().logs.get_mut(&shard_key).unwrap();
        assert!(log.append_group(vec![vec![record.clone()]], 2).await.is_err(), "closed while undecided");
        // Once the disk works, the catalog is recovered: the split did not happen.
        ctl.ready(2).await.unwrap();
        assert_eq!(
            ctl.resource(&key).unwrap().open_shards().count(),
            1,
            "the catalog still has the parent open"
        );
        let log = ctl.hosts_mut().logs.get_mut(&shard_key).unwrap();
        assert!(log.append_group(vec![vec![record]], 2).await.is_ok(), "the parent takes writes again");
        // And the control plane goes on without a restart: the next split succeeds.
        ctl.split_shard(&key, ShardId::new(0), HashKey::new(u128::MAX / 2), 3).await.unwrap();
        assert_eq!(ctl.resource(&key).unwrap().open_shards().count(), 2);
    });
}

#[test]
fn a_failed_catalog_fsync_recovers_in_place() {
    block_on(async {
        let disk = SimDisk::new(2, Faults::default());
        let config = LogConfig { segment_bytes: 1 << 20, prealloc_bytes: 0 };
        let (mut ctl, _positions) =
            Controller::start(&disk, LocalHosts::new(&disk, config), 0).await.unwrap();
        // Every fsync fails: the create is not acknowledged...
        disk.set_faults(Faults { write_error_ppm: 0, sync_error_ppm: 1_000_000 });
        let new = |name: &str| NewResource::data_stream(&name.parse().unwrap(), 2, StreamMode::Provisioned);
        assert!(ctl.create(new("a"), 1).await.is_err());
        // ...and once the disk works again, the next operation succeeds without a restart.
        disk.set_faults(Faults::default());
        ctl.create(new("b"), 2).await.unwrap();
        let b = ctl.resource(&stream_key("b")).unwrap().clone();
        for shard in &b.shards {
            assert!(ctl.hosts().logs.contains_key(&ShardKey { uid: b.uid, shard: shard.shard_id() }));
        }
        // The logs agree with the catalog for `a` too, whichever way its commit went.
        let a_logs = ctl.hosts().logs.keys().filter(|key| key.uid != b.uid).count();
        let a_shards = ctl.resource(&stream_key("a")).map_or(0, |a| a.shards.len());
        assert_eq!(a_logs, a_shards);
    });
}
