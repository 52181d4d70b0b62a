//! Delivery workers: one task per delivery stream reads its records from the log (its own
//! shard for DirectPut; the source data stream's shards for KinesisStreamAsSource), buffers
//! them by the destination's hints (`SizeInMBs` reached, or `IntervalInSeconds` since the
//! buffer's first record, whichever comes first), writes each object durably to the sink,
//! and only then advances its durable cursor (a checkpoint in the positions journal).
//!
//! At-least-once: a crash after an object was stored and before its checkpoint was durable
//! delivers that object's records again on restart, so a crash duplicates at most one
//! object's records (at most `SizeInMBs`), and loses none: every acknowledged record is in
//! the log until the cursor has passed it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace_core::{Engine, ReadLimits, ResourceKey, ResourceKind, SequenceNumber, ShardId, StartPosition};

use super::compress::compress;
use super::config::{self, S3Plan};
use super::key;
use super::prefix::Values;
use super::sink::{Object, Sink};
use super::spec::Spec;

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
    workers: Mutex<HashMap<String, Worker>>,
}

impl Deliveries {
    pub fn new(engine: Engine, sink: Arc<Sink>, runtime: tokio::runtime::Handle) -> Deliveries {
        Deliveries { engine, sink, runtime, workers: Mutex::new(HashMap::new()) }
    }

    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// Starts the worker of a delivery stream (again, after a restart: it resumes at its cursor).
    pub fn start(&self, name: &str) {
        let state = WorkerState::new();
        let task =
            self.runtime.spawn(run(self.engine.clone(), self.sink.clone(), name.to_owned(), state.clone()));
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
}

struct Pending {
    source: usize,
    sequence: SequenceNumber,
    arrival_ms: i64,
    data: Vec<u8>,
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
    plan: S3Plan,
    version: u64,
}

fn load(engine: &Engine, key: &ResourceKey) -> Result<(Spec, Loaded), String> {
    let meta = engine.describe(key).map_err(|error| error.to_string())?;
    let spec =
        Spec::decode(meta.spec()).map_err(|error| format!("stored configuration: {}", error.message))?;
    let plan =
        config::plan(&spec.destination).map_err(|error| format!("stored destination: {}", error.message))?;
    let version = spec.version_id;
    Ok((spec, Loaded { plan, version }))
}

async fn run(engine: Engine, sink: Arc<Sink>, name: String, state: Arc<WorkerState>) {
    let key = ResourceKey::new(ResourceKind::DeliveryStream, name.clone());
    let (spec, mut loaded) = match load(&engine, &key) {
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
    state.set(Status::Active);
    let mut random = SplitMix::seeded();
    let mut buffer: Vec<Pending> = Vec::new();
    let mut buffered_bytes = 0usize;
    let clock = engine.clock();
    loop {
        if state.stopping() {
            return;
        }
        if state.reload.swap(false, Ordering::SeqCst) {
            match load(&engine, &key) {
                Ok((_, fresh)) => loaded = fresh,
                Err(error) => eprintln!("millrace: firehose {name}: keeping the old configuration: {error}"),
            }
        }
        // Read what is new, as long as the buffer is below its size hint.
        let mut read_any = false;
        let mut waits = Vec::new();
        let mut index = 0;
        while index < sources.len() && buffered_bytes < loaded.plan.size_bytes {
            let Some(from) = sources[index].from else {
                index += 1;
                continue;
            };
            let source = &sources[index];
            let signal = engine.commit_signal(&source.key, source.shard).ok();
            let generation = signal.as_ref().map(|signal| signal.generation());
            let limits = ReadLimits { max_records: 10_000, max_bytes: 4 << 20 };
            match engine.read(&source.key, source.shard, from, limits).await {
                Ok(read) => {
                    if read.records.is_empty() {
                        if let (Some(signal), Some(generation)) = (signal, generation) {
                            waits.push((signal, generation));
                        }
                    }
                    for record in read.records {
                        read_any = true;
                        buffered_bytes += record.data.len();
                        buffer.push(Pending {
                            source: index,
                            sequence: record.sequence,
                            arrival_ms: record.arrival_ms,
                            data: record.data,
                        });
                    }
                    sources[index].from = read.next;
                    if read.next.is_none() {
                        // A closed shard, read to its end: its children take over.
                        for child in read.child_shards {
                            if !sources
                                .iter()
                                .any(|other| other.key == sources[index].key && other.shard == child)
                            {
                                let (key, owner) = (sources[index].key.clone(), sources[index].owner.clone());
                                let from = engine.resolve(&key, child, StartPosition::TrimHorizon).await.ok();
                                sources.push(Source { key, shard: child, owner, from });
                            }
                        }
                    }
                }
                Err(error) if state.stopping() => {
                    let _ = error;
                    return;
                }
                Err(error) => {
                    eprintln!(
                        "millrace: firehose {name}: reading {}/{}: {error}",
                        source.key.name, source.shard
                    );
                    sleep_or_stop(&state, Duration::from_secs(1)).await;
                }
            }
            index += 1;
        }
        // Objects by size first, then by age.
        while buffered_bytes >= loaded.plan.size_bytes && !buffer.is_empty() {
            let mut count = 0;
            let mut bytes = 0;
            while count < buffer.len() && bytes < loaded.plan.size_bytes {
                bytes += buffer[count].data.len();
                count += 1;
            }
            if !deliver(&engine, &sink, &name, &state, &loaded, &sources, &mut buffer, count, &mut random)
                .await
            {
                return;
            }
            buffered_bytes -= bytes;
        }
        let now = clock.now_ms();
        if let Some(first) = buffer.first() {
            if now - first.arrival_ms >= loaded.plan.interval_ms {
                let count = buffer.len();
                if !deliver(&engine, &sink, &name, &state, &loaded, &sources, &mut buffer, count, &mut random)
                    .await
                {
                    return;
                }
                buffered_bytes = 0;
                continue;
            }
        }
        if read_any {
            continue;
        }
        // Nothing new: wait for a commit, a change, or the buffer's deadline.
        let deadline = buffer.first().map(|first| first.arrival_ms + loaded.plan.interval_ms - now);
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
            sources.push(Source { key: key.clone(), shard, owner: OWNER.to_owned(), from: Some(from) });
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

/// The key of an object whose oldest record arrived at `oldest`.
fn object_key(name: &str, loaded: &Loaded, oldest: i64, random: &mut SplitMix) -> String {
    let plan = &loaded.plan;
    let suffix_random = random.bytes();
    let mut next_random = || key::random_string(random.bytes());
    let mut values = Values {
        arrival_ms: oldest,
        error_output_type: None,
        query_key: &|_| None,
        lambda_key: &|_| None,
        random: &mut next_random,
    };
    let prefix = match plan.prefix.render(&mut values) {
        Ok(prefix) => prefix,
        Err(error) => {
            // Checked at create for streams without partition keys; kept safe regardless.
            eprintln!("millrace: firehose {name}: prefix: {error}; using the error prefix");
            values.error_output_type = Some("processing-failed");
            plan.errors.render(&mut values).unwrap_or_default()
        }
    };
    format!("{prefix}{}", key::object_suffix(name, loaded.version, oldest, suffix_random, &plan.extension))
}

/// Delivers the first `count` buffered records as one object, retrying until it is stored
/// (or the worker stops: then `false`, and the records stay in the log), then advances the
/// cursors past them.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    engine: &Engine,
    sink: &Sink,
    name: &str,
    state: &WorkerState,
    loaded: &Loaded,
    sources: &[Source],
    buffer: &mut Vec<Pending>,
    count: usize,
    random: &mut SplitMix,
) -> bool {
    let plan = &loaded.plan;
    let records = &buffer[..count];
    let oldest = records.iter().map(|record| record.arrival_ms).min().unwrap_or_else(|| engine.now_ms());
    let delimiter = plan.processors.delimiter.as_deref().unwrap_or(b"");
    let mut payload = Vec::with_capacity(records.iter().map(|r| r.data.len() + delimiter.len()).sum());
    for record in records {
        payload.extend_from_slice(&record.data);
        payload.extend_from_slice(delimiter);
    }
    let zip_entry = key::uuid_v4(random.bytes());
    let body = compress(plan.compression, &payload, &zip_entry);
    let object_key = object_key(name, loaded, oldest, random);
    let object = Object {
        bucket: &plan.bucket,
        key: &object_key,
        body: &body,
        content_encoding: plan.compression.content_encoding(),
        kms_key: plan.kms_key.as_deref(),
    };
    let mut attempt = 0u32;
    loop {
        match sink.put(&object).await {
            Ok(()) => break,
            Err(error) => {
                state.metrics.delivery_to_s3_failures.fetch_add(1, Ordering::Relaxed);
                if attempt < 3 || attempt.is_power_of_two() {
                    eprintln!(
                        "millrace: firehose {name}: delivery attempt {} failed, retrying: {error}",
                        attempt + 1
                    );
                }
                let jitter = (random.next() % 1000) as f64 / 1000.0;
                let wait = super::http_endpoint::backoff(attempt, jitter).min(Duration::from_secs(30));
                attempt = attempt.saturating_add(1);
                sleep_or_stop(state, wait).await;
                if state.stopping() {
                    return false;
                }
            }
        }
    }
    let delivered_bytes: usize = records.iter().map(|record| record.data.len()).sum();
    let metrics = &state.metrics;
    metrics.delivery_to_s3_success.fetch_add(1, Ordering::Relaxed);
    metrics.delivery_to_s3_records.fetch_add(count as u64, Ordering::Relaxed);
    metrics.delivery_to_s3_bytes.fetch_add(delivered_bytes as u64, Ordering::Relaxed);
    metrics.delivery_to_s3_data_freshness_ms.store(engine.now_ms() - oldest, Ordering::Relaxed);
    // The cursor of each source: the last record of it in the object.
    let mut last: HashMap<usize, SequenceNumber> = HashMap::new();
    for record in records {
        last.insert(record.source, record.sequence);
    }
    for (index, sequence) in last {
        let source = &sources[index];
        if let Err(error) = engine.checkpoint(&source.key, &source.owner, source.shard, sequence).await {
            // The object is stored; its records will be delivered again after a restart.
            eprintln!("millrace: firehose {name}: cursor not saved ({error}); a restart may deliver {object_key} again");
        }
    }
    buffer.drain(..count);
    true
}
