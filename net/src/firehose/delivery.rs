//! Delivery workers: one task per delivery stream reads its records from the log (its own
//! shard for DirectPut; the source data stream's shards for KinesisStreamAsSource), buffers
//! them by the destination's hints (`SizeInMBs` reached, or `IntervalInSeconds` since the
//! buffer's first record, whichever comes first), writes each object durably to the sink,
//! and only then advances its durable cursor (a checkpoint in the positions journal).
//!
//! At-least-once: a crash after an object was stored and before its checkpoint was durable
//! delivers that object's records again on restart. A worker has at most two S3 objects in
//! flight (one being built while the other is stored), and with dynamic partitioning the
//! cursor moves after each round of due partitions, so a crash repeats at most the records of
//! the objects stored since the cursor last moved (two objects, each at most `SizeInMBs`,
//! without partitioning), and loses none: every acknowledged record stays in the log until the
//! cursor has passed it and everything before it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace_core::{
    Engine, EngineError, ReadLimits, ResourceKey, ResourceKind, SequenceNumber, ShardId, ShardRead,
    StartPosition,
};

use super::compress::{compress, compress_owned};
use super::config::{
    self, ConversionPlan, HttpPlan, LambdaPlan, OpenSearchPlan, Plan, S3Plan, SplunkPlan, SubRecords,
};
use super::convert;
use super::deaggregate;
use super::errors::CatalogTable;
use super::errors::{Detail, ErrorOutputType, ErrorRecord};
use super::http::{CallError, Target};
use super::http_endpoint;
use super::invoke::{self, Invoked, LambdaEndpoint};
use super::key;
use super::lambda;
use super::partition::{Extractor, Keys};
use super::prefix::Values;
use super::sink::{Object, Sink};
use super::spec::Spec;
use crate::aws::document::{self, Protocol, Value};

/// The cursor's owner name in the delivery stream's own positions.
pub const OWNER: &str = "firehose-delivery";

/// The cursor's owner name in a source data stream's positions.
pub fn source_owner(delivery_stream: &str) -> String {
    format!("firehose:{delivery_stream}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Active,
    Deleting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "CREATING",
            Status::Active => "ACTIVE",
            Status::Deleting => "DELETING",
        }
    }
}

/// What CloudWatch calls them (`AWS/Firehose`), per delivery stream; kept for the metrics
/// endpoint of the observability issue.
#[derive(Debug, Default)]
pub struct Metrics {
    pub incoming_bytes: AtomicU64,
    pub incoming_records: AtomicU64,
    pub delivery_to_s3_records: AtomicU64,
    pub delivery_to_s3_bytes: AtomicU64,
    /// Successful PutObjects and failed attempts (DeliveryToS3.Success is their ratio).
    pub delivery_to_s3_success: AtomicU64,
    pub delivery_to_s3_failures: AtomicU64,
    /// Age of the oldest record of the last delivered object when it was delivered, ms.
    pub delivery_to_s3_data_freshness_ms: AtomicI64,
    pub delivery_to_http_records: AtomicU64,
    pub delivery_to_http_bytes: AtomicU64,
    pub delivery_to_http_success: AtomicU64,
    pub delivery_to_http_failures: AtomicU64,
    pub delivery_to_http_data_freshness_ms: AtomicI64,
}

pub struct WorkerState {
    status: AtomicU8,
    stop: AtomicBool,
    reload: AtomicBool,
    wake: tokio::sync::Notify,
    pub metrics: Metrics,
}

impl WorkerState {
    fn new() -> Arc<WorkerState> {
        Arc::new(WorkerState {
            status: AtomicU8::new(Status::Creating as u8),
            stop: AtomicBool::new(false),
            reload: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            metrics: Metrics::default(),
        })
    }

    pub fn status(&self) -> Status {
        match self.status.load(Ordering::SeqCst) {
            0 => Status::Creating,
            1 => Status::Active,
            _ => Status::Deleting,
        }
    }

    fn set(&self, status: Status) {
        self.status.store(status as u8, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

struct Worker {
    state: Arc<WorkerState>,
    task: tokio::task::JoinHandle<()>,
}

/// Every delivery stream's worker.
pub struct Deliveries {
    engine: Engine,
    sink: Arc<Sink>,
    runtime: tokio::runtime::Handle,
    region: String,
    lambda: Option<Arc<LambdaEndpoint>>,
    workers: Mutex<HashMap<String, Worker>>,
}

impl Deliveries {
    pub fn new(
        engine: Engine,
        sink: Arc<Sink>,
        runtime: tokio::runtime::Handle,
        region: String,
        lambda: Option<LambdaEndpoint>,
    ) -> Deliveries {
        let lambda = lambda.map(Arc::new);
        Deliveries { engine, sink, runtime, region, lambda, workers: Mutex::new(HashMap::new()) }
    }

    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    pub fn lambda(&self) -> Option<&LambdaEndpoint> {
        self.lambda.as_deref()
    }

    /// Starts the worker of a delivery stream (again, after a restart: it resumes at its cursor).
    pub fn start(&self, name: &str) {
        let state = WorkerState::new();
        let worker = run(
            self.engine.clone(),
            self.sink.clone(),
            self.lambda.clone(),
            name.to_owned(),
            self.region.clone(),
            state.clone(),
        );
        let task = self.runtime.spawn(worker);
        let old = self.workers.lock().expect("not poisoned").insert(name.to_owned(), Worker { state, task });
        if let Some(old) = old {
            old.state.stop.store(true, Ordering::SeqCst);
            old.task.abort();
        }
    }

    /// Stops a worker and waits for it (records it had buffered stay in the log, undelivered).
    pub async fn stop(&self, name: &str) {
        let worker = self.workers.lock().expect("not poisoned").remove(name);
        if let Some(worker) = worker {
            worker.state.set(Status::Deleting);
            worker.state.stop.store(true, Ordering::SeqCst);
            worker.state.wake.notify_one();
            let _ = worker.task.await;
        }
    }

    /// Marks a stream as being deleted (DescribeDeliveryStream says DELETING meanwhile).
    pub fn mark_deleting(&self, name: &str) {
        if let Some(worker) = self.workers.lock().expect("not poisoned").get(name) {
            worker.state.set(Status::Deleting);
        }
    }

    /// The configuration changed: the worker reloads it before its next object.
    pub fn reload(&self, name: &str) {
        if let Some(worker) = self.workers.lock().expect("not poisoned").get(name) {
            worker.state.reload.store(true, Ordering::SeqCst);
            worker.state.wake.notify_one();
        }
    }

    pub fn state(&self, name: &str) -> Option<Arc<WorkerState>> {
        self.workers.lock().expect("not poisoned").get(name).map(|worker| worker.state.clone())
    }
}

/// Where records come from: one shard of a resource, with the cursor kept under `owner`.
struct Source {
    key: ResourceKey,
    shard: ShardId,
    owner: String,
    /// Where the next read starts; `None` once a closed shard is exhausted.
    from: Option<SequenceNumber>,
    /// The read after the last one, started as soon as that one returned records, so that
    /// the shard's core reads (off the disk) while the worker partitions, builds and stores.
    ahead: Option<ReadAhead>,
}

/// A read started early: where it starts, and the task reading.
type ReadAhead = (SequenceNumber, tokio::task::JoinHandle<Result<ShardRead, EngineError>>);

/// What the worker reads at once from a source.
const READ_LIMITS: ReadLimits = ReadLimits { max_records: 10_000, max_bytes: 4 << 20 };

struct Pending {
    source: usize,
    sequence: SequenceNumber,
    arrival_ms: i64,
    data: Vec<u8>,
    /// `metadata.partitionKeys` the Lambda function gave it.
    lambda_keys: Keys,
    /// Which sub-record of its stored record it is (0 unless de-aggregated).
    part: u32,
}

/// A small generator for object names (UUIDs and random strings need no cryptographic
/// strength; seeded from the OS once per worker).
struct SplitMix(u64);

impl SplitMix {
    fn seeded() -> SplitMix {
        let seed = crate::secrets::random_bytes(8)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0x9e37_79b9_7f4a_7c15, u64::from_le_bytes);
        SplitMix(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let value = self.next().to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
        out
    }
}

/// What the worker runs from: the plan of the stored description and the key's version.
struct Loaded {
    plan: Plan,
    version: u64,
    /// The delivery stream's ARN (`X-Amz-Firehose-Source-Arn`).
    arn: String,
}

fn load(engine: &Engine, key: &ResourceKey, region: &str) -> Result<(Spec, Loaded), String> {
    let meta = engine.describe(key).map_err(|error| error.to_string())?;
    let spec =
        Spec::decode(meta.spec()).map_err(|error| format!("stored configuration: {}", error.message))?;
    let plan =
        config::plan(&spec.destination).map_err(|error| format!("stored destination: {}", error.message))?;
    let version = spec.version_id;
    let arn = format!("arn:aws:firehose:{region}:{}:deliverystream/{}", crate::aws::ACCOUNT_ID, key.name);
    Ok((spec, Loaded { plan, version, arn }))
}

/// The partition of a record: its keys from the query and from the Lambda function (both
/// empty without dynamic partitioning: one partition).
type PartitionKeys = (Keys, Keys);

#[derive(Default)]
struct Partition {
    records: Vec<Pending>,
    bytes: usize,
}

/// The most partitions with records buffered at once (AWS's default quota).
pub const ACTIVE_PARTITIONS_MAX: usize = 500;

/// What is read and not yet delivered, per source, in order: a cursor moves past a record
/// only once it and everything before it were delivered (or dropped, or written as an error).
#[derive(Default)]
struct Ledger {
    /// Each record read, with how many of its parts (sub-records) are not done yet.
    sources: Vec<VecDeque<(SequenceNumber, u32)>>,
}

impl Ledger {
    fn track(&mut self, source: usize, sequence: SequenceNumber, parts: u32) {
        if self.sources.len() <= source {
            self.sources.resize_with(source + 1, VecDeque::new);
        }
        self.sources[source].push_back((sequence, parts));
    }

    /// One part of the record is delivered, dropped or written as an error.
    fn done(&mut self, source: usize, sequence: SequenceNumber) {
        let Some(queue) = self.sources.get_mut(source) else { return };
        if let Ok(at) = queue.binary_search_by(|(seq, _)| seq.cmp(&sequence)) {
            queue[at].1 = queue[at].1.saturating_sub(1);
        }
    }

    /// Advances every source past its delivered prefix and saves the new cursors.
    async fn commit(&mut self, engine: &Engine, name: &str, sources: &[Source]) {
        for (index, queue) in self.sources.iter_mut().enumerate() {
            let mut last = None;
            while queue.front().is_some_and(|(_, left)| *left == 0) {
                last = queue.pop_front().map(|(sequence, _)| sequence);
            }
            let (Some(sequence), Some(source)) = (last, sources.get(index)) else { continue };
            if let Err(error) = engine.checkpoint(&source.key, &source.owner, source.shard, sequence).await {
                // Delivered; these records will be delivered again after a restart.
                eprintln!(
                    "millrace: firehose {name}: cursor not saved ({error}); a restart may deliver again"
                );
            }
        }
    }
}

async fn run(
    engine: Engine,
    sink: Arc<Sink>,
    lambda_endpoint: Option<Arc<LambdaEndpoint>>,
    name: String,
    region: String,
    state: Arc<WorkerState>,
) {
    let key = ResourceKey::new(ResourceKind::DeliveryStream, name.clone());
    let (spec, mut loaded) = match load(&engine, &key, &region) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("millrace: firehose {name}: cannot start delivery: {error}");
            return;
        }
    };
    let mut sources = match open_sources(&engine, &key, &name, &spec).await {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("millrace: firehose {name}: cannot start delivery: {error}");
            return;
        }
    };
    let mut extractor = match start_extractor(&loaded, &name) {
        Ok(extractor) => extractor,
        Err(error) => {
            eprintln!("millrace: firehose {name}: cannot start delivery: {error}");
            return;
        }
    };
    state.set(Status::Active);
    let mut random = SplitMix::seeded();
    let mut ledger = Ledger::default();
    let mut partitions: BTreeMap<PartitionKeys, Partition> = BTreeMap::new();
    let mut buffered_bytes = 0usize;
    // With a Lambda processor, records wait here for their invocation first.
    let mut staged: Vec<Pending> = Vec::new();
    let mut staged_bytes = 0usize;
    let mut in_flight: VecDeque<Store> = VecDeque::new();
    let clock = engine.clock();
    loop {
        if state.stopping() {
            return;
        }
        if state.reload.swap(false, Ordering::SeqCst) {
            match load(&engine, &key, &region) {
                Ok((_, fresh)) => {
                    loaded = fresh;
                    match start_extractor(&loaded, &name) {
                        Ok(fresh) => extractor = fresh,
                        Err(error) => eprintln!("millrace: firehose {name}: keeping the old query: {error}"),
                    }
                }
                Err(error) => eprintln!("millrace: firehose {name}: keeping the old configuration: {error}"),
            }
        }
        let lambda = loaded.plan.processors().lambda.clone();
        // Read what is new while the buffers are below their hints (with partitions, below
        // a bound on memory).
        let read_limit = if extractor.is_some() { PARTITIONED_BUFFER_MAX } else { loaded.plan.size_bytes() };
        let staged_limit = lambda.as_ref().map_or(usize::MAX, |lambda| lambda.buffer_bytes);
        let mut read_any = false;
        let mut waits = Vec::new();
        let mut incoming: Vec<Pending> = Vec::new();
        let mut index = 0;
        while index < sources.len() && buffered_bytes < read_limit && staged_bytes < staged_limit {
            let Some(from) = sources[index].from else {
                index += 1;
                continue;
            };
            let (source_key, shard) = (sources[index].key.clone(), sources[index].shard);
            let signal = engine.commit_signal(&source_key, shard).ok();
            let generation = signal.as_ref().map(|signal| signal.generation());
            // A read started ahead is used if it found records; otherwise the log is read now
            // (records may have been committed since it ran).
            let early = match sources[index].ahead.take() {
                Some((at, task)) if at == from => match task.await {
                    Ok(Ok(read)) if !read.records.is_empty() => Some(read),
                    _ => None,
                },
                _ => None,
            };
            let read = match early {
                Some(read) => Ok(read),
                None => engine.read(&source_key, shard, from, READ_LIMITS).await,
            };
            match read {
                Ok(read) => {
                    if let (false, Some(next)) = (read.records.is_empty(), read.next) {
                        let (engine, key) = (engine.clone(), source_key.clone());
                        let task =
                            tokio::spawn(async move { engine.read(&key, shard, next, READ_LIMITS).await });
                        sources[index].ahead = Some((next, task));
                    }
                    if read.records.is_empty() {
                        if let (Some(signal), Some(generation)) = (signal, generation) {
                            waits.push((signal, generation));
                        }
                    }
                    let kinesis_source = source_key.kind == ResourceKind::DataStream;
                    let splitting = loaded.plan.processors().deaggregate.clone();
                    for record in read.records {
                        read_any = true;
                        let parts = split(&name, record.data, kinesis_source, splitting.as_ref());
                        ledger.track(index, record.sequence, parts.len() as u32);
                        for (part, data) in parts.into_iter().enumerate() {
                            let pending = Pending {
                                source: index,
                                sequence: record.sequence,
                                arrival_ms: record.arrival_ms,
                                data,
                                lambda_keys: Vec::new(),
                                part: part as u32,
                            };
                            if lambda.is_some() {
                                staged_bytes += pending.data.len();
                                staged.push(pending);
                            } else {
                                buffered_bytes += pending.data.len();
                                incoming.push(pending);
                            }
                        }
                    }
                    sources[index].from = read.next;
                    if read.next.is_none() {
                        // A closed shard, read to its end: its children take over.
                        for child in read.child_shards {
                            if !sources.iter().any(|other| other.key == source_key && other.shard == child) {
                                let owner = sources[index].owner.clone();
                                let from =
                                    engine.resolve(&source_key, child, StartPosition::TrimHorizon).await.ok();
                                sources.push(Source {
                                    key: source_key.clone(),
                                    shard: child,
                                    owner,
                                    from,
                                    ahead: None,
                                });
                            }
                        }
                    }
                }
                Err(_) if state.stopping() => return,
                Err(error) => {
                    eprintln!("millrace: firehose {name}: reading {}/{shard}: {error}", source_key.name);
                    sleep_or_stop(&state, Duration::from_secs(1)).await;
                }
            }
            index += 1;
        }
        // Invocations by size, then by age; their results join the destination's buffers.
        if let Some(lambda) = &lambda {
            loop {
                let due = staged
                    .first()
                    .is_some_and(|first| clock.now_ms() - first.arrival_ms >= lambda.interval_ms);
                if staged.is_empty() || !(staged_bytes >= lambda.buffer_bytes || due) {
                    break;
                }
                let (mut count, mut bytes) = (0, 0);
                while count < staged.len()
                    && (count == 0 || bytes + staged[count].data.len() <= lambda.buffer_bytes)
                {
                    bytes += staged[count].data.len();
                    count += 1;
                }
                let batch: Vec<Pending> = staged.drain(..count).collect();
                staged_bytes -= bytes;
                let endpoint = lambda_endpoint.as_deref();
                let transformed = transform(
                    &engine,
                    &sink,
                    endpoint,
                    &name,
                    &state,
                    &loaded,
                    lambda,
                    batch,
                    &mut ledger,
                    &mut random,
                )
                .await;
                let Some(outputs) = transformed else { return };
                for output in outputs {
                    buffered_bytes += output.data.len();
                    incoming.push(output);
                }
            }
        }
        // Each record to its partition.
        if !incoming.is_empty() {
            let placed = partition(
                &engine,
                &sink,
                &name,
                &state,
                &loaded,
                extractor.as_ref(),
                &mut partitions,
                incoming,
                &mut ledger,
                &mut random,
            )
            .await;
            match placed {
                Some(rejected_bytes) => buffered_bytes -= rejected_bytes,
                None => return,
            }
        }
        // Objects by size first, then by age, partition by partition.
        let now = clock.now_ms();
        let size = loaded.plan.size_bytes();
        let interval = loaded.plan.interval_ms();
        let max_records = loaded.plan.max_records();
        let due: Vec<PartitionKeys> = partitions
            .iter()
            .filter(|(_, partition)| {
                partition.bytes >= size
                    || partition.records.len() >= max_records
                    || partition.records.first().is_some_and(|first| now - first.arrival_ms >= interval)
            })
            .map(|(keys, _)| keys.clone())
            .collect();
        let delivered_any = !due.is_empty();
        for keys in due {
            let Some(partition) = partitions.get_mut(&keys) else { continue };
            loop {
                let aged = partition.records.first().is_some_and(|first| now - first.arrival_ms >= interval);
                let full = partition.bytes >= size || partition.records.len() >= max_records;
                if partition.records.is_empty() || !(full || aged) {
                    break;
                }
                let (mut count, mut bytes) = (0, 0);
                while count < partition.records.len() && bytes < size && count < max_records {
                    bytes += partition.records[count].data.len();
                    count += 1;
                }
                let records = &partition.records[..count];
                match &loaded.plan {
                    // The common path: the object is stored by a task of its own while the
                    // worker reads and builds the next one (two in flight at most).
                    Plan::S3(plan) if plan.conversion.is_none() && plan.source_backup.is_none() => {
                        while in_flight.len() >= STORES_IN_FLIGHT {
                            if !finish_store(&mut in_flight, &mut ledger).await {
                                return;
                            }
                        }
                        let store = start_store(
                            &engine,
                            &sink,
                            &name,
                            &state,
                            &loaded,
                            plan,
                            &keys,
                            records,
                            &mut random,
                        );
                        in_flight.push_back(store);
                    }
                    _ => {
                        if !deliver(&engine, &sink, &name, &state, &loaded, &keys, records, &mut random).await
                        {
                            return;
                        }
                        for record in records {
                            ledger.done(record.source, record.sequence);
                        }
                    }
                }
                partition.records.drain(..count);
                partition.bytes -= bytes;
                buffered_bytes -= bytes;
            }
            if partition.records.is_empty() {
                partitions.remove(&keys);
            }
        }
        // Stores that finished meanwhile move their records' cursors.
        while in_flight.front().is_some_and(|(task, _)| task.is_finished()) {
            if !finish_store(&mut in_flight, &mut ledger).await {
                return;
            }
        }
        ledger.commit(&engine, &name, &sources).await;
        if read_any || delivered_any {
            continue;
        }
        // Nothing to read: finish what is being stored before waiting.
        if !in_flight.is_empty() {
            if !finish_store(&mut in_flight, &mut ledger).await {
                return;
            }
            ledger.commit(&engine, &name, &sources).await;
            continue;
        }
        // Nothing new: wait for a commit, a change, or the next deadline.
        let deadline = partitions
            .values()
            .filter_map(|partition| partition.records.first())
            .map(|first| first.arrival_ms + interval - now)
            .chain(
                staged
                    .first()
                    .zip(lambda.as_ref())
                    .map(|(first, lambda)| first.arrival_ms + lambda.interval_ms - now),
            )
            .min();
        let wait = Duration::from_millis(deadline.map_or(1_000, |left| left.clamp(1, 1_000)) as u64);
        let notified = state.wake.notified();
        match waits.as_slice() {
            [(signal, generation)] => {
                let changed = signal.changed(*generation);
                tokio::select! {
                    _ = changed => {}
                    _ = notified => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            _ => {
                // Several shards (a Kinesis source): poll them at a short interval.
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(wait.min(Duration::from_millis(100))) => {}
                }
            }
        }
    }
}

/// A record's parts: the sub-records of a KPL aggregate (from a Kinesis source), each split
/// again by `RecordDeAggregation` when configured. A record that does not split as
/// configured is delivered whole (and the reason logged): nothing is lost to a bad split.
fn split(name: &str, data: Vec<u8>, kinesis_source: bool, splitting: Option<&SubRecords>) -> Vec<Vec<u8>> {
    let aggregated: Vec<Vec<u8>> = match kinesis_source.then(|| deaggregate::kpl(&data)).flatten() {
        Some(parts) => parts.into_iter().map(<[u8]>::to_vec).collect(),
        None => vec![data],
    };
    let Some(splitting) = splitting else { return aggregated };
    let mut out = Vec::with_capacity(aggregated.len());
    for record in aggregated {
        match splitting {
            SubRecords::Json => match deaggregate::json_values(&record) {
                Ok(values) => out.extend(values.into_iter().map(<[u8]>::to_vec)),
                Err(why) => {
                    eprintln!("millrace: firehose {name}: a record is not JSON sub-records ({why}); delivered whole");
                    out.push(record);
                }
            },
            SubRecords::Delimited(delimiter) => {
                out.extend(deaggregate::delimited(&record, delimiter).into_iter().map(<[u8]>::to_vec))
            }
        }
    }
    out
}

/// Objects being stored at once by one worker.
const STORES_IN_FLIGHT: usize = 2;

/// An object being stored by a task of its own, and the records in it (source, sequence).
type Store = (tokio::task::JoinHandle<bool>, Vec<(usize, SequenceNumber)>);

/// Builds an object of `records` and starts storing it (retrying until stored, or until the
/// worker stops); the cursor moves when [`finish_store`] sees it done.
#[allow(clippy::too_many_arguments)]
fn start_store(
    engine: &Engine,
    sink: &Arc<Sink>,
    name: &str,
    state: &Arc<WorkerState>,
    loaded: &Loaded,
    plan: &S3Plan,
    keys: &PartitionKeys,
    records: &[Pending],
    random: &mut SplitMix,
) -> Store {
    let oldest = records.iter().map(|record| record.arrival_ms).min().unwrap_or_else(|| engine.now_ms());
    let payload = payload_of(records, plan.processors.delimiter.as_deref().unwrap_or(b""));
    let key = object_key(name, plan, loaded.version, oldest, None, keys, random);
    let zip_entry = key::uuid_v4(random.bytes());
    let body = bytes::Bytes::from(compress_owned(plan.compression, payload, &zip_entry));
    let delivered_bytes: usize = records.iter().map(|record| record.data.len()).sum();
    let count = records.len() as u64;
    let (sink, state, name, engine) = (sink.clone(), state.clone(), name.to_owned(), engine.clone());
    let (bucket, encoding, kms) =
        (plan.bucket.clone(), plan.compression.content_encoding(), plan.kms_key.clone());
    let mut jitter = SplitMix(random.next());
    let task = tokio::spawn(async move {
        let object =
            Object { bucket: &bucket, key: &key, body, content_encoding: encoding, kms_key: kms.as_deref() };
        let metrics = &state.metrics;
        let mut attempt = 0u32;
        loop {
            match sink.put(&object).await {
                Ok(()) => break,
                Err(error) => {
                    metrics.delivery_to_s3_failures.fetch_add(1, Ordering::Relaxed);
                    if attempt < 3 || attempt.is_power_of_two() {
                        eprintln!(
                            "millrace: firehose {name}: delivery attempt {} failed, retrying: {error}",
                            attempt + 1
                        );
                    }
                    let wait =
                        super::http_endpoint::backoff(attempt, 0.85 + (jitter.next() % 300) as f64 / 1000.0);
                    attempt = attempt.saturating_add(1);
                    sleep_or_stop(&state, wait.min(Duration::from_secs(30))).await;
                    if state.stopping() {
                        return false;
                    }
                }
            }
        }
        metrics.delivery_to_s3_success.fetch_add(1, Ordering::Relaxed);
        metrics.delivery_to_s3_records.fetch_add(count, Ordering::Relaxed);
        metrics.delivery_to_s3_bytes.fetch_add(delivered_bytes as u64, Ordering::Relaxed);
        metrics.delivery_to_s3_data_freshness_ms.store(engine.now_ms() - oldest, Ordering::Relaxed);
        true
    });
    (task, records.iter().map(|record| (record.source, record.sequence)).collect())
}

/// Waits for the oldest store; once it is stored, its records are done. `false` if it gave up
/// (the worker is stopping: its records stay in the log).
async fn finish_store(in_flight: &mut VecDeque<Store>, ledger: &mut Ledger) -> bool {
    let Some((task, records)) = in_flight.pop_front() else { return true };
    if !task.await.unwrap_or(false) {
        return false;
    }
    for (source, sequence) in records {
        ledger.done(source, sequence);
    }
    true
}

/// With partitions, reading pauses once this much is buffered across them.
const PARTITIONED_BUFFER_MAX: usize = 1 << 30;

fn start_extractor(loaded: &Loaded, name: &str) -> Result<Option<Extractor>, String> {
    match (&loaded.plan, &loaded.plan.processors().metadata_query) {
        (Plan::S3(plan), Some(query)) if plan.dynamic => Extractor::start(query, name).map(Some),
        _ => Ok(None),
    }
}

/// Puts records into their partitions. Records whose keys cannot be extracted, and those
/// beyond the active-partition limit, are written as error records at once. Returns the
/// bytes that did not join a buffer (`None` if the worker stopped).
#[allow(clippy::too_many_arguments)]
async fn partition(
    engine: &Engine,
    sink: &Sink,
    name: &str,
    state: &WorkerState,
    loaded: &Loaded,
    extractor: Option<&Extractor>,
    partitions: &mut BTreeMap<PartitionKeys, Partition>,
    incoming: Vec<Pending>,
    ledger: &mut Ledger,
    random: &mut SplitMix,
) -> Option<usize> {
    let dynamic = matches!(&loaded.plan, Plan::S3(plan) if plan.dynamic);
    let keys: Vec<Result<Keys, String>> = match extractor {
        Some(extractor) => {
            extractor.extract(incoming.iter().map(|record| record.data.clone()).collect()).await
        }
        None => vec![Ok(Vec::new()); incoming.len()],
    };
    let mut failed: Vec<(Pending, &'static str, String, ErrorOutputType)> = Vec::new();
    let mut rejected_bytes = 0;
    for (record, keys) in incoming.into_iter().zip(keys) {
        let query_keys = match keys {
            Ok(keys) => keys,
            Err(why) => {
                rejected_bytes += record.data.len();
                let message = format!("Non JSON record provided or the metadata extraction failed: {why}");
                failed.push((
                    record,
                    "DynamicPartitioning.MetadataExtractionFailed",
                    message,
                    ErrorOutputType::ProcessingFailed,
                ));
                continue;
            }
        };
        let lambda_keys = if dynamic { record.lambda_keys.clone() } else { Vec::new() };
        let partition_keys = (query_keys, lambda_keys);
        if !partitions.contains_key(&partition_keys) && partitions.len() >= ACTIVE_PARTITIONS_MAX {
            rejected_bytes += record.data.len();
            let message =
                format!("The number of active partitions exceeded the limit of {ACTIVE_PARTITIONS_MAX}");
            failed.push((
                record,
                "DynamicPartitioning.ActivePartitionsLimitExceeded",
                message,
                ErrorOutputType::ActivePartitionExceeded,
            ));
            continue;
        }
        let partition = partitions.entry(partition_keys).or_default();
        partition.bytes += record.data.len();
        partition.records.push(record);
    }
    if failed.is_empty() {
        return Some(rejected_bytes);
    }
    let Plan::S3(plan) = &loaded.plan else { return Some(rejected_bytes) };
    let ended_ms = engine.now_ms();
    for error_type in [ErrorOutputType::ProcessingFailed, ErrorOutputType::ActivePartitionExceeded] {
        let group: Vec<&(Pending, &str, String, ErrorOutputType)> =
            failed.iter().filter(|(.., kind)| *kind == error_type).collect();
        if group.is_empty() {
            continue;
        }
        let mut lines = Vec::new();
        for (record, code, message, _) in &group {
            lines.extend(
                ErrorRecord {
                    attempts_made: 1,
                    arrival_ms: record.arrival_ms,
                    error_code: code,
                    error_message: message,
                    attempt_ending_ms: ended_ms,
                    raw_data: &record.data,
                    detail: Detail::Plain,
                }
                .to_json_line(),
            );
        }
        let oldest = group.iter().map(|(record, ..)| record.arrival_ms).min().unwrap_or(ended_ms);
        let key =
            object_key(name, plan, loaded.version, oldest, Some(error_type.as_str()), &EMPTY_KEYS, random);
        let failures = &state.metrics.delivery_to_s3_failures;
        if !put_retrying(sink, name, state, plan, &key, lines, random, failures).await {
            return None;
        }
        eprintln!("millrace: firehose {name}: {} records went to s3://{}/{key}", group.len(), plan.bucket);
    }
    for (record, ..) in &failed {
        ledger.done(record.source, record.sequence);
    }
    Some(rejected_bytes)
}

static EMPTY_KEYS: PartitionKeys = (Vec::new(), Vec::new());

async fn open_sources(
    engine: &Engine,
    key: &ResourceKey,
    name: &str,
    spec: &Spec,
) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    match &spec.kinesis_source {
        None => {
            let shard = ShardId::new(0);
            let from = start_of(engine, key, OWNER, shard, StartPosition::TrimHorizon).await?;
            sources.push(Source {
                key: key.clone(),
                shard,
                owner: OWNER.to_owned(),
                from: Some(from),
                ahead: None,
            });
        }
        Some(source) => {
            let stream = ResourceKey::new(ResourceKind::DataStream, source.stream.clone());
            let meta = engine.describe(&stream).map_err(|error| format!("source stream: {error}"))?;
            let owner = source_owner(name);
            // With no cursor yet, delivery starts with what arrived once the delivery stream
            // existed (AWS starts a new delivery stream at the source's LATEST).
            let start = StartPosition::AtTimestamp { arrival_ms: source.start_ms };
            for shard in meta.shards() {
                let from = start_of(engine, &stream, &owner, shard.shard_id(), start).await?;
                sources.push(Source {
                    key: stream.clone(),
                    shard: shard.shard_id(),
                    owner: owner.clone(),
                    from: Some(from),
                    ahead: None,
                });
            }
        }
    }
    Ok(sources)
}

async fn start_of(
    engine: &Engine,
    key: &ResourceKey,
    owner: &str,
    shard: ShardId,
    fresh: StartPosition,
) -> Result<SequenceNumber, String> {
    let cursor = engine.get_checkpoint(key, owner, shard).await.map_err(|error| error.to_string())?;
    let start = cursor.map_or(fresh, StartPosition::AfterSequence);
    engine.resolve(key, shard, start).await.map_err(|error| error.to_string())
}

async fn sleep_or_stop(state: &WorkerState, duration: Duration) {
    let notified = state.wake.notified();
    tokio::select! {
        _ = notified => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

/// The key of an object whose oldest record arrived at `oldest`: under the prefix, or, with
/// an error output type, under the error prefix.
fn object_key(
    name: &str,
    plan: &S3Plan,
    version: u64,
    oldest: i64,
    error_output_type: Option<&str>,
    keys: &PartitionKeys,
    random: &mut SplitMix,
) -> String {
    let suffix_random = random.bytes();
    let mut next_random = || key::random_string(random.bytes());
    let find = |keys: &Keys, wanted: &str| {
        keys.iter().find(|(name, _)| name == wanted).map(|(_, value)| value.clone())
    };
    let query_key = |wanted: &str| find(&keys.0, wanted);
    let lambda_key = |wanted: &str| find(&keys.1, wanted);
    // The key's timestamps, in CustomTimeZone when one is set.
    let oldest = plan.local_ms(oldest);
    let mut values = Values {
        arrival_ms: oldest,
        error_output_type,
        query_key: &query_key,
        lambda_key: &lambda_key,
        random: &mut next_random,
    };
    let rendered = match error_output_type {
        None => plan.prefix.render(&mut values),
        Some(_) => plan.errors.render(&mut values),
    };
    let prefix = match rendered {
        Ok(prefix) => prefix,
        Err(error) => {
            // Checked at create for streams without partition keys; kept safe regardless.
            eprintln!("millrace: firehose {name}: prefix: {error}; using the error prefix");
            values.error_output_type = Some(error_output_type.unwrap_or("processing-failed"));
            plan.errors.render(&mut values).unwrap_or_default()
        }
    };
    format!("{prefix}{}", key::object_suffix(name, version, oldest, suffix_random, &plan.extension))
}

/// Stores one object in an S3 destination (or backup), retrying until it is stored; `false`
/// if the worker stopped first.
#[allow(clippy::too_many_arguments)]
async fn put_retrying(
    sink: &Sink,
    name: &str,
    state: &WorkerState,
    plan: &S3Plan,
    key: &str,
    payload: Vec<u8>,
    random: &mut SplitMix,
    failures: &AtomicU64,
) -> bool {
    let zip_entry = key::uuid_v4(random.bytes());
    let body = bytes::Bytes::from(compress_owned(plan.compression, payload, &zip_entry));
    let object = Object {
        bucket: &plan.bucket,
        key,
        body,
        content_encoding: plan.compression.content_encoding(),
        kms_key: plan.kms_key.as_deref(),
    };
    let mut attempt = 0u32;
    loop {
        match sink.put(&object).await {
            Ok(()) => return true,
            Err(error) => {
                failures.fetch_add(1, Ordering::Relaxed);
                if attempt < 3 || attempt.is_power_of_two() {
                    eprintln!(
                        "millrace: firehose {name}: delivery attempt {} failed, retrying: {error}",
                        attempt + 1
                    );
                }
                let jitter = 0.85 + (random.next() % 300) as f64 / 1000.0;
                let wait = super::http_endpoint::backoff(attempt, jitter).min(Duration::from_secs(30));
                attempt = attempt.saturating_add(1);
                sleep_or_stop(state, wait).await;
                if state.stopping() {
                    return false;
                }
            }
        }
    }
}

/// The records' bytes as delivered: each followed by the delimiter, if one is configured.
fn payload_of(records: &[Pending], delimiter: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(records.iter().map(|r| r.data.len() + delimiter.len()).sum());
    for record in records {
        payload.extend_from_slice(&record.data);
        payload.extend_from_slice(delimiter);
    }
    payload
}

/// Delivers the first `count` buffered records (one object, or one HTTP request), retrying
/// as the destination's rules say (or until the worker stops: then `false`, and the records
/// stay in the log), then advances the cursors past them.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    engine: &Engine,
    sink: &Sink,
    name: &str,
    state: &WorkerState,
    loaded: &Loaded,
    keys: &PartitionKeys,
    records: &[Pending],
    random: &mut SplitMix,
) -> bool {
    let count = records.len();
    let oldest = records.iter().map(|record| record.arrival_ms).min().unwrap_or_else(|| engine.now_ms());
    let delivered_bytes: usize = records.iter().map(|record| record.data.len()).sum();
    let metrics = &state.metrics;
    match &loaded.plan {
        Plan::Splunk(plan) => {
            if !splunk_retrying(engine, sink, name, state, loaded, plan, records, random).await {
                return false;
            }
            metrics.delivery_to_http_success.fetch_add(1, Ordering::Relaxed);
            metrics.delivery_to_http_records.fetch_add(count as u64, Ordering::Relaxed);
            metrics.delivery_to_http_bytes.fetch_add(delivered_bytes as u64, Ordering::Relaxed);
        }
        Plan::OpenSearch(plan) => {
            if !index_retrying(engine, sink, name, state, loaded, plan, records, random).await {
                return false;
            }
            metrics.delivery_to_http_success.fetch_add(1, Ordering::Relaxed);
            metrics.delivery_to_http_records.fetch_add(count as u64, Ordering::Relaxed);
            metrics.delivery_to_http_bytes.fetch_add(delivered_bytes as u64, Ordering::Relaxed);
        }
        Plan::S3(plan) => {
            let failures = &metrics.delivery_to_s3_failures;
            // S3BackupMode Enabled without a Lambda function: the source records are these.
            if let (Some(backup), None) = (&plan.source_backup, &plan.processors.lambda) {
                let key = object_key(name, backup, loaded.version, oldest, None, &EMPTY_KEYS, random);
                if !put_retrying(sink, name, state, backup, &key, payload_of(records, b""), random, failures)
                    .await
                {
                    return false;
                }
            }
            let payload = match &plan.conversion {
                None => Some(payload_of(records, plan.processors.delimiter.as_deref().unwrap_or(b""))),
                Some(conversion) => {
                    match to_parquet(engine, sink, name, state, loaded, plan, conversion, records, random)
                        .await
                    {
                        Some(file) => file,
                        None => return false,
                    }
                }
            };
            if let Some(payload) = payload {
                let key = object_key(name, plan, loaded.version, oldest, None, keys, random);
                if !put_retrying(sink, name, state, plan, &key, payload, random, failures).await {
                    return false;
                }
            }
            metrics.delivery_to_s3_success.fetch_add(1, Ordering::Relaxed);
            metrics.delivery_to_s3_records.fetch_add(count as u64, Ordering::Relaxed);
            metrics.delivery_to_s3_bytes.fetch_add(delivered_bytes as u64, Ordering::Relaxed);
            metrics.delivery_to_s3_data_freshness_ms.store(engine.now_ms() - oldest, Ordering::Relaxed);
        }
        Plan::Http(plan) => {
            let arn = loaded.arn.as_str();
            match post_retrying(engine, name, arn, state, plan, records, random).await {
                None => return false,
                Some(HttpOutcome::Delivered) => {
                    metrics.delivery_to_http_success.fetch_add(1, Ordering::Relaxed);
                    metrics.delivery_to_http_records.fetch_add(count as u64, Ordering::Relaxed);
                    metrics.delivery_to_http_bytes.fetch_add(delivered_bytes as u64, Ordering::Relaxed);
                    metrics
                        .delivery_to_http_data_freshness_ms
                        .store(engine.now_ms() - oldest, Ordering::Relaxed);
                    if plan.all_data_backup {
                        let backup = &plan.backup;
                        let payload =
                            payload_of(records, backup.processors.delimiter.as_deref().unwrap_or(b""));
                        let key = object_key(name, backup, loaded.version, oldest, None, &EMPTY_KEYS, random);
                        let failures = &metrics.delivery_to_s3_failures;
                        if !put_retrying(sink, name, state, backup, &key, payload, random, failures).await {
                            return false;
                        }
                    }
                }
                Some(HttpOutcome::Rejected) => {
                    // 413: AWS neither retries nor backs up; the loss is the endpoint's choice.
                    eprintln!(
                        "millrace: firehose {name}: the endpoint refused {count} records with 413 (too large); \
                         as AWS does, they are neither retried nor written to the backup"
                    );
                }
                Some(HttpOutcome::Failed { attempts, code, message, ended_ms }) => {
                    let mut lines = Vec::new();
                    for record in records {
                        let data_id = format!("{}.0", record.sequence);
                        lines.extend(
                            ErrorRecord {
                                attempts_made: attempts,
                                arrival_ms: record.arrival_ms,
                                error_code: code,
                                error_message: &message,
                                attempt_ending_ms: ended_ms,
                                raw_data: &record.data,
                                detail: Detail::HttpEndpoint { subsequence_number: 0, data_id: &data_id },
                            }
                            .to_json_line(),
                        );
                    }
                    let backup = &plan.backup;
                    let error_type = Some(ErrorOutputType::HttpEndpointFailed.as_str());
                    let key =
                        object_key(name, backup, loaded.version, oldest, error_type, &EMPTY_KEYS, random);
                    let failures = &metrics.delivery_to_s3_failures;
                    if !put_retrying(sink, name, state, backup, &key, lines, random, failures).await {
                        return false;
                    }
                    eprintln!(
                        "millrace: firehose {name}: {count} records went to s3://{}/{key}: {code}",
                        backup.bucket
                    );
                }
            }
        }
    }
    true
}

/// Runs a Lambda transformation on a batch, retrying failed invocations `NumberOfRetries`
/// times; records the function marks ProcessingFailed, and every record of a batch that
/// failed, are written as error records under `processing-failed` (durably, before their
/// cursor can move). Returns the transformed records, in order, carrying their sources'
/// positions; `None` if the worker stopped.
#[allow(clippy::too_many_arguments)]
async fn transform(
    engine: &Engine,
    sink: &Sink,
    endpoint: Option<&LambdaEndpoint>,
    name: &str,
    state: &WorkerState,
    loaded: &Loaded,
    plan: &LambdaPlan,
    batch: Vec<Pending>,
    ledger: &mut Ledger,
    random: &mut SplitMix,
) -> Option<Vec<Pending>> {
    let Some(endpoint) = endpoint else {
        // The stream was created by a server with a Lambda endpoint; this one has none. The
        // records stay in the log until it is started with MILLRACE_LAMBDA_ENDPOINT again.
        eprintln!(
            "millrace: firehose {name}: its Lambda processor needs MILLRACE_LAMBDA_ENDPOINT; delivery waits"
        );
        while !state.stopping() {
            sleep_or_stop(state, Duration::from_secs(60)).await;
        }
        return None;
    };
    // S3BackupMode Enabled: the source records, as they arrived, before the function runs.
    if let Plan::S3(destination) = &loaded.plan {
        if let Some(backup) = &destination.source_backup {
            let oldest =
                batch.iter().map(|record| record.arrival_ms).min().unwrap_or_else(|| engine.now_ms());
            let payload = payload_of(&batch, b"");
            let key = object_key(name, backup, loaded.version, oldest, None, &EMPTY_KEYS, random);
            let failures = &state.metrics.delivery_to_s3_failures;
            if !put_retrying(sink, name, state, backup, &key, payload, random, failures).await {
                return None;
            }
        }
    }
    let ids: Vec<String> = batch.iter().map(|record| record.sequence.to_string()).collect();
    let records: Vec<lambda::EventRecord<'_>> = batch
        .iter()
        .zip(&ids)
        .map(|(record, id)| lambda::EventRecord {
            record_id: id,
            arrival_ms: record.arrival_ms,
            data: &record.data,
        })
        .collect();
    let invocation_id = key::uuid_v4(random.bytes());
    let region = loaded.arn.split(':').nth(3).unwrap_or("us-east-1");
    let event = lambda::Event {
        invocation_id: &invocation_id,
        delivery_stream_arn: &loaded.arn,
        region,
        records: &records,
    }
    .to_json();
    let event = bytes::Bytes::from(event);
    let sent: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut attempts = 0u32;
    let decoded = loop {
        attempts += 1;
        match invoke::invoke(endpoint, plan, event.clone()).await {
            Invoked::Answer(body) => {
                break lambda::decode_response(&body, &sent)
                    .map_err(|failure| (failure.code.to_owned(), failure.message, ""));
            }
            Invoked::Failed { code, message } => {
                if attempts > plan.retries {
                    break Err((code, message, plan.arn.as_str()));
                }
                if attempts <= 3 || attempts.is_power_of_two() {
                    eprintln!(
                        "millrace: firehose {name}: invoking {} (attempt {attempts}): {code}: {message}",
                        plan.arn
                    );
                }
                let jitter = 0.85 + (random.next() % 300) as f64 / 1000.0;
                sleep_or_stop(
                    state,
                    http_endpoint::backoff(attempts - 1, jitter).min(Duration::from_secs(30)),
                )
                .await;
                if state.stopping() {
                    return None;
                }
            }
        }
    };
    let ended_ms = engine.now_ms();
    let mut outputs = Vec::with_capacity(batch.len());
    let mut failed: Vec<(Pending, String, String, &str)> = Vec::new();
    match decoded {
        Ok(outcomes) => {
            for (record, outcome) in batch.into_iter().zip(outcomes) {
                match outcome {
                    lambda::Outcome::Ok { data, partition_keys } => {
                        outputs.push(Pending { data, lambda_keys: partition_keys, ..record })
                    }
                    lambda::Outcome::Dropped => ledger.done(record.source, record.sequence),
                    lambda::Outcome::ProcessingFailed => failed.push((
                        record,
                        "Lambda.ProcessingFailed".to_owned(),
                        "The Lambda function returned the record with result ProcessingFailed.".to_owned(),
                        plan.arn.as_str(),
                    )),
                }
            }
        }
        Err((code, message, arn)) => {
            failed.extend(batch.into_iter().map(|record| (record, code.clone(), message.clone(), arn)));
        }
    }
    if !failed.is_empty() {
        let mut lines = Vec::new();
        for (record, code, message, arn) in &failed {
            lines.extend(
                ErrorRecord {
                    attempts_made: attempts,
                    arrival_ms: record.arrival_ms,
                    error_code: code,
                    error_message: message,
                    attempt_ending_ms: ended_ms,
                    raw_data: &record.data,
                    detail: Detail::Processing { lambda_arn: arn },
                }
                .to_json_line(),
            );
        }
        let errors = match &loaded.plan {
            Plan::S3(plan) => plan,
            Plan::Http(plan) => &plan.backup,
            Plan::OpenSearch(plan) => &plan.backup,
            Plan::Splunk(plan) => &plan.backup,
        };
        let oldest = failed.iter().map(|(record, ..)| record.arrival_ms).min().unwrap_or(ended_ms);
        let error_type = Some(ErrorOutputType::ProcessingFailed.as_str());
        let key = object_key(name, errors, loaded.version, oldest, error_type, &EMPTY_KEYS, random);
        let failures = &state.metrics.delivery_to_s3_failures;
        if !put_retrying(sink, name, state, errors, &key, lines, random, failures).await {
            return None;
        }
        eprintln!("millrace: firehose {name}: {} records went to s3://{}/{key}", failed.len(), errors.bucket);
        for (record, ..) in &failed {
            ledger.done(record.source, record.sequence);
        }
    }
    Some(outputs)
}

/// Indexes documents through the bulk API, retrying the ones the cluster did not take (and
/// whole requests that failed) within `RetryOptions.DurationInSeconds`, then writes what is
/// left as error records under `AmazonOpenSearchService-failed` in the S3 backup (and, with
/// `AllDocuments`, every record there too). `false` if the worker stopped.
#[allow(clippy::too_many_arguments)]
async fn index_retrying(
    engine: &Engine,
    sink: &Sink,
    name: &str,
    state: &WorkerState,
    loaded: &Loaded,
    plan: &OpenSearchPlan,
    records: &[Pending],
    random: &mut SplitMix,
) -> bool {
    let target = match Target::parse(&plan.bulk_url) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("millrace: firehose {name}: {error}");
            return false;
        }
    };
    let delimiter = plan.processors.delimiter.as_deref().unwrap_or(b"");
    let ids: Vec<String> =
        records.iter().map(|record| format!("{}-{}", record.sequence, record.part)).collect();
    let indexes: Vec<String> = records.iter().map(|record| plan.index_for(record.arrival_ms)).collect();
    // Documents still to index, with the last reason each failed.
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut reasons: HashMap<usize, (String, String)> = HashMap::new();
    let mut first_failure: Option<i64> = None;
    let mut attempts = 0u32;
    while !pending.is_empty() {
        attempts += 1;
        let mut body = Vec::new();
        for &at in &pending {
            let mut action = Value::map().with("_index", indexes[at].as_str());
            if let Some(type_name) = &plan.type_name {
                action = action.with("_type", type_name.as_str());
            }
            if plan.document_ids {
                action = action.with("_id", ids[at].as_str());
            }
            body.extend(document::encode(Protocol::Json, &Value::map().with("index", action)));
            body.push(b'\n');
            let mut document = records[at].data.clone();
            document.extend_from_slice(delimiter);
            while document.last().is_some_and(|byte| byte.is_ascii_whitespace()) {
                document.pop();
            }
            body.extend(document);
            body.push(b'\n');
        }
        let headers = vec![
            ("Host".to_owned(), target.host_header.clone()),
            ("Content-Type".to_owned(), "application/x-ndjson".to_owned()),
            ("Content-Length".to_owned(), body.len().to_string()),
        ];
        let answer = target
            .call(
                "POST",
                &target.path_and_query,
                &headers,
                bytes::Bytes::from(body),
                Duration::from_secs(180),
                64 << 20,
            )
            .await;
        let mut still = Vec::new();
        match answer {
            Ok(answer) if answer.status == 200 => match bulk_failures(&answer.body, pending.len()) {
                Ok(failures) => {
                    for (position, failure) in failures.into_iter().enumerate() {
                        if let Some(reason) = failure {
                            reasons.insert(pending[position], reason);
                            still.push(pending[position]);
                        }
                    }
                }
                Err(why) => {
                    for &at in &pending {
                        reasons.insert(at, ("OpenSearch.InvalidResponse".to_owned(), why.clone()));
                    }
                    still = pending.clone();
                }
            },
            Ok(answer) => {
                let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(400)]).into_owned();
                for &at in &pending {
                    reasons.insert(
                        at,
                        (
                            "OpenSearch.ServiceException".to_owned(),
                            format!("The bulk API answered {}: {text}", answer.status),
                        ),
                    );
                }
                still = pending.clone();
            }
            Err(error) => {
                for &at in &pending {
                    reasons.insert(at, ("OpenSearch.ConnectionFailed".to_owned(), error.to_string()));
                }
                still = pending.clone();
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        state.metrics.delivery_to_http_failures.fetch_add(1, Ordering::Relaxed);
        let now = engine.now_ms();
        let since = *first_failure.get_or_insert(now);
        if now - since >= plan.retry_ms {
            break;
        }
        if attempts <= 3 || attempts.is_power_of_two() {
            eprintln!(
                "millrace: firehose {name}: {} documents not indexed (attempt {attempts}); retrying",
                pending.len()
            );
        }
        let jitter = 0.85 + (random.next() % 300) as f64 / 1000.0;
        let left = Duration::from_millis((since + plan.retry_ms - now).max(1) as u64);
        sleep_or_stop(state, http_endpoint::backoff(attempts - 1, jitter).min(left)).await;
        if state.stopping() {
            return false;
        }
    }
    let failures = &state.metrics.delivery_to_s3_failures;
    let oldest = records.iter().map(|record| record.arrival_ms).min().unwrap_or_else(|| engine.now_ms());
    if !pending.is_empty() {
        let ended_ms = engine.now_ms();
        let mut lines = Vec::new();
        for &at in &pending {
            let (code, message) = reasons.get(&at).cloned().unwrap_or_default();
            lines.extend(
                ErrorRecord {
                    attempts_made: attempts,
                    arrival_ms: records[at].arrival_ms,
                    error_code: &code,
                    error_message: &message,
                    attempt_ending_ms: ended_ms,
                    raw_data: &records[at].data,
                    detail: Detail::OpenSearch {
                        document_id: &ids[at],
                        index_name: &indexes[at],
                        type_name: plan.type_name.as_deref().unwrap_or(""),
                    },
                }
                .to_json_line(),
            );
        }
        let error_type = Some(ErrorOutputType::OpenSearchFailed.as_str());
        let key = object_key(name, &plan.backup, loaded.version, oldest, error_type, &EMPTY_KEYS, random);
        if !put_retrying(sink, name, state, &plan.backup, &key, lines, random, failures).await {
            return false;
        }
        eprintln!(
            "millrace: firehose {name}: {} documents went to s3://{}/{key}",
            pending.len(),
            plan.backup.bucket
        );
    }
    if plan.all_documents_backup {
        let payload = payload_of(records, plan.backup.processors.delimiter.as_deref().unwrap_or(b""));
        let key = object_key(name, &plan.backup, loaded.version, oldest, None, &EMPTY_KEYS, random);
        if !put_retrying(sink, name, state, &plan.backup, &key, payload, random, failures).await {
            return false;
        }
    }
    true
}

/// Converts records to one Parquet file with the schema of their Glue table (waiting, and
/// retrying, while the table does not exist: the records stay in the log). Records that do
/// not convert are written under `format-conversion-failed` first. `Some(None)` when no
/// record converted; `None` if the worker stopped.
#[allow(clippy::too_many_arguments)]
async fn to_parquet(
    engine: &Engine,
    sink: &Sink,
    name: &str,
    state: &WorkerState,
    loaded: &Loaded,
    plan: &S3Plan,
    conversion: &ConversionPlan,
    records: &[Pending],
    random: &mut SplitMix,
) -> Option<Option<Vec<u8>>> {
    let mut attempt = 0u32;
    let schema = loop {
        match crate::glue::table_schema(engine, &conversion.database, &conversion.table) {
            Ok(schema) => break schema,
            Err(error) => {
                if attempt < 3 || attempt.is_power_of_two() {
                    eprintln!("millrace: firehose {name}: cannot convert yet ({error}); retrying");
                }
                attempt = attempt.saturating_add(1);
                sleep_or_stop(state, Duration::from_secs(2)).await;
                if state.stopping() {
                    return None;
                }
            }
        }
    };
    let datas: Vec<&[u8]> = records.iter().map(|record| record.data.as_slice()).collect();
    let converted =
        tokio::task::block_in_place(|| convert::convert(&schema.columns, &conversion.options, &datas));
    // Each record that did not convert: its index, why, and the error code.
    type Failures = Vec<(usize, String, &'static str)>;
    let (file, failed): (Option<Vec<u8>>, Failures) = match converted {
        Ok(converted) => (
            converted.file,
            converted
                .failed
                .into_iter()
                .map(|(at, why)| (at, why, "DataFormatConversion.MalformedData"))
                .collect(),
        ),
        // The schema itself cannot be written (a nested type): every record fails with that.
        Err(why) => (
            None,
            (0..records.len()).map(|at| (at, why.clone(), "DataFormatConversion.InvalidSchema")).collect(),
        ),
    };
    if !failed.is_empty() {
        let ended_ms = engine.now_ms();
        let region = conversion.region.as_str();
        let catalog_arn = format!("arn:aws:glue:{region}:{}:catalog", crate::aws::ACCOUNT_ID);
        let mut lines = Vec::new();
        for (at, why, code) in &failed {
            let record = &records[*at];
            let sequence = record.sequence.to_string();
            lines.extend(
                ErrorRecord {
                    attempts_made: 1,
                    arrival_ms: record.arrival_ms,
                    error_code: code,
                    error_message: why,
                    attempt_ending_ms: ended_ms,
                    raw_data: &record.data,
                    detail: Detail::FormatConversion {
                        sequence_number: &sequence,
                        subsequence_number: u64::from(record.part),
                        table: CatalogTable {
                            catalog_id: crate::aws::ACCOUNT_ID,
                            database_name: &schema.database,
                            table_name: &schema.table,
                            region,
                            version_id: &schema.version_id,
                            catalog_arn: &catalog_arn,
                        },
                    },
                }
                .to_json_line(),
            );
        }
        let oldest = records.iter().map(|record| record.arrival_ms).min().unwrap_or(ended_ms);
        let error_type = Some(ErrorOutputType::FormatConversionFailed.as_str());
        let key = object_key(name, plan, loaded.version, oldest, error_type, &EMPTY_KEYS, random);
        // Error records are JSON lines, not Parquet: the plan's extension does not apply.
        let key = key.strip_suffix(plan.extension.as_str()).map_or(key.clone(), str::to_owned);
        let failures = &state.metrics.delivery_to_s3_failures;
        if !put_retrying(sink, name, state, plan, &key, lines, random, failures).await {
            return None;
        }
        eprintln!("millrace: firehose {name}: {} records went to s3://{}/{key}", failed.len(), plan.bucket);
    }
    Some(file)
}

/// Sends events to a Splunk HTTP Event Collector as Firehose does, with indexer
/// acknowledgment: `POST …/services/collector/raw|event` with `Authorization: Splunk TOKEN`
/// and an `X-Splunk-Request-Channel`, then `POST …/services/collector/ack` with the answer's
/// `ackId` until Splunk says the events are indexed (within
/// `HECAcknowledgmentTimeoutInSeconds`). Failures are retried within `RetryOptions`, then
/// written under `splunk-failed` in the S3 backup (with `AllEvents`, every event there too).
#[allow(clippy::too_many_arguments)]
async fn splunk_retrying(
    engine: &Engine,
    sink: &Sink,
    name: &str,
    state: &WorkerState,
    loaded: &Loaded,
    plan: &SplunkPlan,
    records: &[Pending],
    random: &mut SplitMix,
) -> bool {
    let (send, ack) = match (Target::parse(&plan.send_url), Target::parse(&plan.ack_url)) {
        (Ok(send), Ok(ack)) => (send, ack),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("millrace: firehose {name}: {error}");
            return false;
        }
    };
    let channel = key::uuid_v4(random.bytes());
    let payload =
        bytes::Bytes::from(payload_of(records, plan.processors.delimiter.as_deref().unwrap_or(b"")));
    let headers = |target: &Target, length: usize| {
        vec![
            ("Host".to_owned(), target.host_header.clone()),
            ("Authorization".to_owned(), format!("Splunk {}", plan.token)),
            ("X-Splunk-Request-Channel".to_owned(), channel.clone()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Content-Length".to_owned(), length.to_string()),
        ]
    };
    let mut first_failure: Option<i64> = None;
    let mut attempts = 0u32;
    let failed = loop {
        attempts += 1;
        let outcome: Result<(), (&'static str, String)> = async {
            let answer = send
                .call("POST", &send.path_and_query, &headers(&send, payload.len()), payload.clone(), Duration::from_secs(180), 1 << 20)
                .await
                .map_err(|error| match error {
                    CallError::Timeout(_) => ("Splunk.ConnectionTimeout", error.to_string()),
                    CallError::Connect(_) => ("Splunk.ConnectionRefused", error.to_string()),
                    _ => ("Splunk.ConnectionClosed", error.to_string()),
                })?;
            let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(400)]).into_owned();
            match answer.status {
                200 => {}
                401 | 403 => return Err(("Splunk.InvalidToken", format!("The HEC answered {}: {text}", answer.status))),
                400 => return Err(("Splunk.InvalidDataFormat", format!("The HEC answered 400: {text}"))),
                status => return Err(("Splunk.ServerError", format!("The HEC answered {status}: {text}"))),
            }
            let ack_id = match document::decode(Protocol::Json, &answer.body).ok().and_then(|value| value.get("ackId").cloned()) {
                Some(Value::Int(id)) => id,
                _ => {
                    return Err((
                        "Splunk.InvalidAckResponse",
                        format!("The HEC answered without an ackId (is indexer acknowledgment on for the token?): {text}"),
                    ))
                }
            };
            // Poll the acknowledgment until it is true or the timeout passes.
            let deadline = engine.now_ms() + plan.ack_timeout_ms;
            let query = document::encode(Protocol::Json, &Value::map().with("acks", Value::List(vec![Value::Int(ack_id)])));
            let query = bytes::Bytes::from(query);
            loop {
                let answer = ack
                    .call("POST", &ack.path_and_query, &headers(&ack, query.len()), query.clone(), Duration::from_secs(60), 1 << 20)
                    .await
                    .map_err(|error| ("Splunk.AckTimeout", error.to_string()))?;
                let acked = document::decode(Protocol::Json, &answer.body)
                    .ok()
                    .and_then(|value| value.get("acks").and_then(|acks| acks.get(&ack_id.to_string())).cloned());
                if answer.status == 200 && acked == Some(Value::Bool(true)) {
                    return Ok(());
                }
                if engine.now_ms() >= deadline {
                    return Err((
                        "Splunk.AckTimeout",
                        "Did not receive an acknowledgement from HEC before the HEC acknowledgement timeout expired. \
                         Despite the acknowledgement timeout, it's possible the data was indexed successfully in Splunk. \
                         Firehose backs up in Amazon S3 data for which the acknowledgement timeout expired."
                            .to_owned(),
                    ));
                }
                sleep_or_stop(state, Duration::from_millis(200)).await;
                if state.stopping() {
                    return Err(("Splunk.AckTimeout", "the worker stopped".to_owned()));
                }
            }
        }
        .await;
        let (code, message) = match outcome {
            Ok(()) => break None,
            Err(failure) => failure,
        };
        if state.stopping() {
            return false;
        }
        state.metrics.delivery_to_http_failures.fetch_add(1, Ordering::Relaxed);
        let now = engine.now_ms();
        let since = *first_failure.get_or_insert(now);
        if now - since >= plan.retry_ms {
            break Some((code, message, now));
        }
        if attempts <= 3 || attempts.is_power_of_two() {
            eprintln!("millrace: firehose {name}: Splunk attempt {attempts}: {code}: {message}");
        }
        let jitter = 0.85 + (random.next() % 300) as f64 / 1000.0;
        let left = Duration::from_millis((since + plan.retry_ms - now).max(1) as u64);
        sleep_or_stop(state, http_endpoint::backoff(attempts - 1, jitter).min(left)).await;
        if state.stopping() {
            return false;
        }
    };
    let failures = &state.metrics.delivery_to_s3_failures;
    let oldest = records.iter().map(|record| record.arrival_ms).min().unwrap_or_else(|| engine.now_ms());
    if let Some((code, message, ended_ms)) = failed {
        let mut lines = Vec::new();
        for record in records {
            let data_id = format!("{}.{}", record.sequence, record.part);
            lines.extend(
                ErrorRecord {
                    attempts_made: attempts,
                    arrival_ms: record.arrival_ms,
                    error_code: code,
                    error_message: &message,
                    attempt_ending_ms: ended_ms,
                    raw_data: &record.data,
                    detail: Detail::Splunk {
                        subsequence_number: u64::from(record.part),
                        data_id: &data_id,
                        event_id: &data_id,
                    },
                }
                .to_json_line(),
            );
        }
        let error_type = Some(ErrorOutputType::SplunkFailed.as_str());
        let key = object_key(name, &plan.backup, loaded.version, oldest, error_type, &EMPTY_KEYS, random);
        if !put_retrying(sink, name, state, &plan.backup, &key, lines, random, failures).await {
            return false;
        }
        eprintln!(
            "millrace: firehose {name}: {} events went to s3://{}/{key}: {code}",
            records.len(),
            plan.backup.bucket
        );
    }
    if plan.all_events_backup {
        let key = object_key(name, &plan.backup, loaded.version, oldest, None, &EMPTY_KEYS, random);
        if !put_retrying(sink, name, state, &plan.backup, &key, payload.to_vec(), random, failures).await {
            return false;
        }
    }
    true
}

/// The documents of a bulk answer that were not indexed, in request order, each with its
/// error code and message (`{"errors": …, "items": [{"index": {"status": …, "error": …}}]}`).
fn bulk_failures(body: &[u8], sent: usize) -> Result<Vec<Option<(String, String)>>, String> {
    let value = document::decode(Protocol::Json, body)
        .map_err(|error| format!("the bulk answer is not JSON: {}", error.message))?;
    let Some(Value::List(items)) = value.get("items") else {
        return Err("the bulk answer has no items".to_owned());
    };
    if items.len() != sent {
        return Err(format!("the bulk answer has {} items for {sent} documents", items.len()));
    }
    Ok(items
        .iter()
        .map(|item| {
            let action = item.get("index").or_else(|| item.get("create"));
            let status = match action.and_then(|action| action.get("status")) {
                Some(Value::Int(status)) => *status,
                _ => 0,
            };
            if (200..300).contains(&status) {
                return None;
            }
            let error = action.and_then(|action| action.get("error"));
            let kind = match error.and_then(|error| error.get("type")) {
                Some(Value::Str(kind)) => kind.clone(),
                _ => format!("status_{status}"),
            };
            let message = error
                .map(|error| String::from_utf8_lossy(&document::encode(Protocol::Json, error)).into_owned())
                .unwrap_or_else(|| format!("the cluster answered status {status} for the document"));
            Some((format!("OpenSearch.{kind}"), message))
        })
        .collect())
}

enum HttpOutcome {
    Delivered,
    /// 413.
    Rejected,
    /// The retry duration ran out; the last error, as AWS's error records name it.
    Failed {
        attempts: u32,
        code: &'static str,
        message: String,
        ended_ms: i64,
    },
}

/// Posts records to an HTTP endpoint as AWS's specification says, retrying with backoff
/// within `RetryOptions.DurationInSeconds` (counted from the first failure). `None` if the
/// worker stopped.
async fn post_retrying(
    engine: &Engine,
    name: &str,
    source_arn: &str,
    state: &WorkerState,
    plan: &HttpPlan,
    records: &[Pending],
    random: &mut SplitMix,
) -> Option<HttpOutcome> {
    let target = match Target::parse(&plan.url) {
        Ok(target) => target,
        Err(error) => {
            let ended_ms = engine.now_ms();
            return Some(HttpOutcome::Failed {
                attempts: 0,
                code: "HttpEndpoint.InvalidUrl",
                message: error,
                ended_ms,
            });
        }
    };
    let delimiter = plan.processors.delimiter.as_deref().unwrap_or(b"");
    let owned: Vec<Vec<u8>>;
    let datas: Vec<&[u8]> = if delimiter.is_empty() {
        records.iter().map(|record| record.data.as_slice()).collect()
    } else {
        owned = records.iter().map(|record| [record.data.as_slice(), delimiter].concat()).collect();
        owned.iter().map(Vec::as_slice).collect()
    };
    let request_id = key::uuid_v4(random.bytes());
    let mut first_failure: Option<i64> = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let delivery = http_endpoint::Delivery {
            request_id: &request_id,
            source_arn,
            timestamp_ms: engine.now_ms(),
            records: &datas,
            access_key: plan.access_key.as_deref(),
            common_attributes: &plan.common_attributes,
        };
        let (headers, body) = delivery.request();
        let mut headers: Vec<(String, String)> =
            headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        let body = if plan.gzip {
            headers.push(("Content-Encoding".to_owned(), "gzip".to_owned()));
            compress(key::Compression::Gzip, &body, "")
        } else {
            body
        };
        headers.push(("Host".to_owned(), target.host_header.clone()));
        headers.push(("Content-Length".to_owned(), body.len().to_string()));
        let answer = target
            .call(
                "POST",
                &target.path_and_query,
                &headers,
                bytes::Bytes::from(body),
                http_endpoint::RESPONSE_TIMEOUT,
                http_endpoint::MAX_RESPONSE_BYTES,
            )
            .await;
        let (code, message) = match answer {
            Ok(answer) => {
                let judged = http_endpoint::judge(
                    answer.status,
                    answer.header("content-type"),
                    answer.header("content-encoding"),
                    &answer.body,
                    &request_id,
                );
                match judged {
                    http_endpoint::Answer::Delivered => return Some(HttpOutcome::Delivered),
                    http_endpoint::Answer::Permanent => return Some(HttpOutcome::Rejected),
                    http_endpoint::Answer::Retry { message } => {
                        let code = if message.starts_with("Received the following response") {
                            "HttpEndpoint.DestinationException"
                        } else {
                            "HttpEndpoint.InvalidResponseFromDestination"
                        };
                        (code, message)
                    }
                }
            }
            Err(error) => {
                let code = match error {
                    CallError::Connect(_) => "HttpEndpoint.ConnectionFailed",
                    CallError::Timeout(_) => "HttpEndpoint.RequestTimeout",
                    CallError::TooLarge(_) => "HttpEndpoint.ResponseTooLarge",
                    CallError::Reset(_) => "HttpEndpoint.ConnectionReset",
                };
                (code, error.to_string())
            }
        };
        state.metrics.delivery_to_http_failures.fetch_add(1, Ordering::Relaxed);
        let now = engine.now_ms();
        let since = *first_failure.get_or_insert(now);
        if now - since >= plan.retry_ms {
            return Some(HttpOutcome::Failed { attempts, code, message, ended_ms: now });
        }
        if attempts <= 3 || attempts.is_power_of_two() {
            eprintln!("millrace: firehose {name}: {} attempt {attempts}: {code}: {message}", plan.url);
        }
        let jitter = 0.85 + (random.next() % 300) as f64 / 1000.0;
        let left = Duration::from_millis((since + plan.retry_ms - now).max(1) as u64);
        sleep_or_stop(state, http_endpoint::backoff(attempts - 1, jitter).min(left)).await;
        if state.stopping() {
            return None;
        }
    }
}
