//! A running application: one task that reads its input stream's shards, merges them into
//! ROWTIME order, runs the SQL on the CPU, and writes the rows of its outputs.
//!
//! Exactly once, across a kill -9:
//! - **Input and state.** Every few seconds, with every output written up to date, the task
//!   appends a snapshot ([`super::checkpoint`]) to the application's own log: the runner's
//!   operator state, each input shard's next read position, and each output's row count. A
//!   position entry then points at it. A restart restores it and reads on from those positions;
//!   the merge releases the same records in the same order ([`millrace_gpu::run::merge`]), so
//!   the runner puts out the same rows, with the same row numbers (ordinals) per output.
//! - **Output.** Rows are written in batches of consecutive ordinals. Before a batch is
//!   appended, its end and length go durably into a position entry of the application
//!   (`out:<output id>`: an intent). The append carries an idempotent producer stamp derived
//!   from the application, the output and the batch's end. After a restart, the rows below the
//!   intent's start are dropped (they were written), and the intent's batch is regenerated and
//!   sent again with the same stamp, marked as a resend: the engine stores it if the crash
//!   came before the append was durable and answers "already stored" otherwise.
//!
//! Watermarks: each shard promises no record below its last arrival, or the clock minus a
//! grace when a read finds it caught up; the least promise is the rowtime bound the runner
//! closes windows by. An idle shard does not hold windows open.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use millrace_core::{
    Engine, EngineError, PartitionKey, ReadLimits, Record, ResourceKey, ResourceKind, SequenceNumber,
    ShardId, Stamp, StartPosition,
};
use millrace_gpu::run::merge::ShardMerge;
use millrace_gpu::run::record::{self as records, InputSchema};
use millrace_gpu::run::{ApplicationRunner, Produced, Row, Value as SqlValue};
use millrace_gpu::sql::plan::{Column, Name};
use sha2::{Digest, Sha256};

use super::checkpoint::{Checkpoint, SNAPSHOT_OWNER};
use super::model::{output_format, App, Compiled};
use crate::firehose::sink::Sink;

/// How a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the tip of each shard, with empty state.
    Now,
    /// At the oldest record kept, with empty state.
    TrimHorizon,
    /// From the last snapshot (refused when there is none).
    LastStopped,
    /// From the last snapshot, or, when there is none, as the given start (a server restart).
    Resume(Fallback),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Now,
    TrimHorizon,
}

impl Start {
    pub fn parse(text: &str) -> Option<Start> {
        match text {
            "NOW" => Some(Start::Now),
            "TRIM_HORIZON" => Some(Start::TrimHorizon),
            "LAST_STOPPED_POINT" => Some(Start::LastStopped),
            _ => None,
        }
    }
}

/// Tunables of the workers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long after `now` an append may still commit with an earlier arrival time.
    pub grace_ms: i64,
    /// How often the state is snapshotted while it changes.
    pub snapshot_ms: i64,
    /// How often an idle worker wakes to move the watermark with the clock.
    pub tick_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig { grace_ms: 500, snapshot_ms: 2_000, tick_ms: 100 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
    Stopping,
}

/// What a worker shows the API.
#[derive(Default)]
pub struct WorkerState {
    phase: AtomicU8,
    stop: AtomicBool,
    wake: tokio::sync::Notify,
    /// The last error that made the worker start over (it retries), for the log and tests.
    pub last_error: Mutex<Option<String>>,
    pub records_in: AtomicU64,
    /// Records released by the merge into the runner.
    pub released: AtomicU64,
    pub rows_out: AtomicU64,
    pub late: AtomicU64,
    pub errors: AtomicU64,
}

impl WorkerState {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }

    fn set(&self, phase: Phase) {
        let value = match phase {
            Phase::Starting => 0,
            Phase::Running => 1,
            Phase::Stopping => 2,
        };
        self.phase.store(value, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

struct Worker {
    state: Arc<WorkerState>,
    task: tokio::task::JoinHandle<()>,
}

/// Every running application's worker.
pub struct Workers {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    workers: Mutex<HashMap<String, Worker>>,
}

struct Shared {
    engine: Engine,
    sink: Option<Sink>,
    config: WorkerConfig,
    /// The GPU the runners aggregate event-time windows on, if any.
    device: Option<millrace_gpu::run::Device>,
}

impl Workers {
    pub fn new(
        engine: Engine,
        sink: Option<Sink>,
        config: WorkerConfig,
        device: Option<millrace_gpu::run::Device>,
        runtime: tokio::runtime::Handle,
    ) -> Workers {
        let shared = Arc::new(Shared { engine, sink, config, device });
        Workers { shared, runtime, workers: Mutex::new(HashMap::new()) }
    }

    pub fn start(&self, name: &str, start: Start) {
        let state = Arc::new(WorkerState::default());
        let task = self.runtime.spawn(run(self.shared.clone(), name.to_owned(), start, state.clone()));
        let old = self.workers.lock().expect("not poisoned").insert(name.to_owned(), Worker { state, task });
        if let Some(old) = old {
            old.state.stop.store(true, Ordering::SeqCst);
            old.task.abort();
        }
    }

    /// Asks the worker to write its outputs, snapshot and stop; returns at once (the status
    /// is STOPPING until it has).
    pub fn stop(&self, name: &str) {
        if let Some(worker) = self.workers.lock().expect("not poisoned").get(name) {
            worker.state.set(Phase::Stopping);
            worker.state.stop.store(true, Ordering::SeqCst);
            worker.state.wake.notify_one();
        }
    }

    /// Stops the worker and waits for it.
    pub async fn stop_and_wait(&self, name: &str) {
        self.stop(name);
        let worker = self.workers.lock().expect("not poisoned").remove(name);
        if let Some(worker) = worker {
            let _ = worker.task.await;
        }
    }

    /// The phase of a live worker; `None` when there is none (or it has finished).
    pub fn phase(&self, name: &str) -> Option<Phase> {
        let mut workers = self.workers.lock().expect("not poisoned");
        let worker = workers.get(name)?;
        if worker.task.is_finished() {
            workers.remove(name);
            return None;
        }
        Some(worker.state.phase())
    }

    pub fn state(&self, name: &str) -> Option<Arc<WorkerState>> {
        self.workers.lock().expect("not poisoned").get(name).map(|worker| worker.state.clone())
    }
}

async fn run(shared: Arc<Shared>, name: String, start: Start, state: Arc<WorkerState>) {
    let mut start = start;
    loop {
        match attempt(&shared, &name, start, &state).await {
            Ok(()) => return,
            Err(error) => {
                if state.stopping() {
                    eprintln!("millrace: analytics {name}: stopped with an error: {error}");
                    return;
                }
                eprintln!("millrace: analytics {name}: {error}; starting over in 1 s");
                *state.last_error.lock().expect("not poisoned") = Some(error);
                // Once a run has begun, it goes on from its last snapshot.
                start = match start {
                    Start::Now => Start::Resume(Fallback::Now),
                    Start::TrimHorizon => Start::Resume(Fallback::TrimHorizon),
                    other => other,
                };
                let notified = state.wake.notified();
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if state.stopping() {
                    return;
                }
            }
        }
    }
}

/// One input shard.
struct Source {
    shard: ShardId,
    /// Where the next read starts; `None` once a closed shard is read to its end.
    from: Option<SequenceNumber>,
}

/// One output: its rows numbered from 0 for the application's whole life.
struct OutputState {
    id: String,
    stream: Name,
    columns: Vec<Column>,
    key: ResourceKey,
    format: records::OutputFormat,
    producer: u64,
    /// The ordinal the next row gets.
    next: u64,
    /// Rows below this were written before (a replay regenerates them): dropped.
    skip_below: u64,
    /// A batch whose intent is durable but whose append may not be: sent again once its rows
    /// are regenerated.
    resend: Option<(u64, u64)>,
    /// Rows generated and not yet written, from ordinal `pending_start`.
    pending: Vec<Vec<u8>>,
    pending_start: u64,
    /// Whether this is the error stream (errors are written to it, not rows).
    errors: bool,
}

/// Snapshot bytes written per second on average, at most: a state of 10 MiB is snapshotted
/// every 10 s rather than every interval. (Old snapshots leave the log only by retention.)
const SNAPSHOT_BYTES_PER_S: u64 = 1 << 20;
/// Rows per output batch, at most.
const BATCH_ROWS_MAX: u64 = 5_000;
/// Reads from a shard at once.
const READ_LIMITS: ReadLimits = ReadLimits { max_records: 10_000, max_bytes: 4 << 20 };
/// A reference table's object, at most.
const REFERENCE_BYTES_MAX: usize = 64 << 20;

fn owner_of(output_id: &str) -> String {
    format!("out:{output_id}")
}

/// An intent in 64 bits: the batch's end (44 bits) and its length (20 bits).
fn pack(end: u64, len: u64) -> u64 {
    (end << 20) | len
}

fn unpack(packed: u64) -> (u64, u64) {
    (packed >> 20, packed & ((1 << 20) - 1))
}

/// The stamp of the batch ending at `end`: batch numbers grow with the ordinals; every 2^31
/// rows the producer id moves on (batches never cross such a boundary).
fn stamp(producer: u64, end: u64, resent: bool) -> Stamp {
    let last = end - 1;
    Stamp {
        producer_id: producer ^ (last >> 31).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        batch: (last & 0x7fff_ffff) as u32 + 1,
        resent,
    }
}

fn digest64(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

async fn attempt(shared: &Shared, name: &str, start: Start, state: &WorkerState) -> Result<(), String> {
    state.set(Phase::Starting);
    let engine = &shared.engine;
    let app_key = ResourceKey::new(ResourceKind::AnalyticsApplication, name);
    let meta = engine.describe(&app_key).map_err(|error| error.to_string())?;
    let app = App::decode(meta.spec()).map_err(|error| error.message)?;
    let compiled = app.compile().map_err(|error| error.message)?;
    let app_shard = meta.shards().first().ok_or("the application has no log")?;
    let (app_shard_id, app_epoch) = (app_shard.shard_id(), app_shard.epoch());
    let input = app.inputs.first().ok_or("the application has no input")?;
    let input_name = Name::new(input.stream_name());
    let input_schema = compiled
        .schemas
        .iter()
        .find(|(stream, _)| *stream == input_name)
        .map(|(_, schema)| schema.clone())
        .ok_or("the input has no schema")?;
    let source_key = ResourceKey::new(input.source.kind, input.source.name.as_str());
    let references = load_references(shared, &app, &compiled).await?;

    // Outputs, and where each stands durably.
    let mut outputs = Vec::new();
    for output in &app.outputs {
        let destination = output.destination.as_ref().ok_or("an output has no destination")?;
        let errors = output.name.eq_ignore_ascii_case("error_stream");
        let (stream, columns) = if errors {
            (Name::new("error_stream"), Vec::new())
        } else {
            compiled.columns_of(&output.name).ok_or_else(|| {
                format!(
                    "output {} names the in-application stream {}, which the code does not create",
                    output.id, output.name
                )
            })?
        };
        let intent = engine
            .get_checkpoint(&app_key, &owner_of(&output.id), app_shard_id)
            .await
            .map_err(|error| error.to_string())?
            .map(|sequence| unpack(sequence.counter()));
        outputs.push((
            OutputState {
                id: output.id.clone(),
                stream,
                columns,
                key: ResourceKey::new(destination.kind, destination.name.as_str()),
                format: output_format(&output.format),
                producer: digest64(&format!("{}/{}", meta.uid(), output.id)),
                next: 0,
                skip_below: 0,
                resend: None,
                pending: Vec::new(),
                pending_start: 0,
                errors,
            },
            intent,
        ));
    }

    // The state to start from.
    let snapshot = match start {
        Start::LastStopped | Start::Resume(_) => load_snapshot(engine, &app_key, app_shard_id).await?,
        Start::Now | Start::TrimHorizon => None,
    };
    if snapshot.is_none() && start == Start::LastStopped {
        return Err("LAST_STOPPED_POINT: the application has no stopping point yet".into());
    }
    let source_meta = engine.describe(&source_key).map_err(|error| error.to_string())?;
    let mut sources: Vec<Source> = Vec::new();
    let mut released_ms = i64::MIN;
    let mut bound_ms = i64::MIN;
    let runner = match &snapshot {
        Some(checkpoint) => {
            released_ms = checkpoint.released_ms;
            bound_ms = checkpoint.bound_ms;
            for (shard, from) in &checkpoint.shards {
                sources.push(Source {
                    shard: ShardId::new(*shard),
                    from: Some(SequenceNumber::from_u128(*from)),
                });
            }
            for (output, intent) in &mut outputs {
                let written =
                    checkpoint.outputs.iter().find(|(id, _)| *id == output.id).map_or(0, |(_, rows)| *rows);
                output.next = written;
                output.skip_below = written;
                if let Some((end, len)) = *intent {
                    if end > written {
                        output.skip_below = end - len;
                        output.resend = Some((end - len, end));
                    }
                }
                output.pending_start = output.skip_below;
            }
            match ApplicationRunner::restore(
                &compiled.application,
                &compiled.defs,
                &references,
                &checkpoint.runner,
            ) {
                Ok(runner) => runner,
                Err(error) => {
                    // The code changed since (an update): its windows start empty; the input
                    // goes on from where it was.
                    eprintln!("millrace: analytics {name}: the saved state does not fit the code ({error}); starting it empty");
                    ApplicationRunner::new(&compiled.application, &compiled.defs, &references)
                        .map_err(|error| error.to_string())?
                }
            }
        }
        None => {
            let fresh_start = match start {
                Start::Now | Start::Resume(Fallback::Now) => StartPosition::Latest,
                _ => StartPosition::TrimHorizon,
            };
            let present: Vec<u32> = source_meta.shards().iter().map(|shard| shard.shard_id().get()).collect();
            for shard in source_meta.shards() {
                let take = match fresh_start {
                    StartPosition::Latest => shard.is_open(),
                    // The roots: shards none of whose parents are still kept.
                    _ => shard.parents().all(|parent| !present.contains(&parent.get())),
                };
                if take {
                    let from = engine
                        .resolve(&source_key, shard.shard_id(), fresh_start)
                        .await
                        .map_err(|error| error.to_string())?;
                    sources.push(Source { shard: shard.shard_id(), from: Some(from) });
                }
            }
            for (output, intent) in &mut outputs {
                let written = intent.map_or(0, |(end, _)| end);
                output.next = written;
                output.skip_below = written;
                output.pending_start = written;
            }
            ApplicationRunner::new(&compiled.application, &compiled.defs, &references)
                .map_err(|error| error.to_string())?
        }
    };
    let mut runner = runner;
    if let Some(device) = &shared.device {
        let moved = runner.use_device(device);
        if moved > 0 {
            eprintln!(
                "millrace: analytics {name}: {moved} pump(s) aggregate on the GPU ({})",
                device.adapter
            );
        }
    }
    let mut outputs: Vec<OutputState> = outputs.into_iter().map(|(output, _)| output).collect();
    let mut run = Running {
        engine,
        name,
        state,
        app_key,
        app_shard_id,
        app_epoch,
        source_key,
        input_name,
        input_schema,
        runner,
        merge: ShardMerge::new(shared.config.grace_ms, released_ms),
        positions: HashMap::new(),
        bound_ms,
        changed: true,
        last_snapshot_ms: i64::MIN,
        last_snapshot_bytes: 0,
    };
    for source in &sources {
        run.merge.add_shard(source.shard.get());
        if let Some(from) = source.from {
            run.positions.insert(source.shard.get(), from.as_u128());
        }
    }
    // A fresh start snapshots at once: a restart before the next snapshot resumes here (a
    // restored run has its snapshot already; until a pending resend is regenerated, it could
    // not take a new one).
    if snapshot.is_none() {
        run.snapshot(&outputs, true).await?;
    }
    state.set(Phase::Running);

    loop {
        if state.stopping() {
            state.set(Phase::Stopping);
            run.flush(&mut outputs).await?;
            // Unsettled (a resend still waiting for its rows), the last snapshot stays the
            // stopping point: resuming from it is as exact.
            run.snapshot(&outputs, false).await?;
            return Ok(());
        }
        let mut waits = Vec::new();
        let mut read_any = false;
        let mut index = 0;
        while index < sources.len() {
            let Some(from) = sources[index].from else {
                index += 1;
                continue;
            };
            let shard = sources[index].shard;
            let signal = engine.commit_signal(&run.source_key, shard).ok();
            let generation = signal.as_ref().map(|signal| signal.generation());
            match engine.read(&run.source_key, shard, from, READ_LIMITS).await {
                Ok(read) => {
                    let now = engine.now_ms();
                    if read.records.is_empty() {
                        run.merge.caught_up(shard.get(), now);
                        if let (Some(signal), Some(generation)) = (signal, generation) {
                            waits.push((signal, generation));
                        }
                    }
                    for record in read.records {
                        read_any = true;
                        state.records_in.fetch_add(1, Ordering::Relaxed);
                        run.merge.push(
                            shard.get(),
                            record.arrival_ms,
                            record.sequence.as_u128(),
                            record.data,
                        );
                    }
                    sources[index].from = read.next;
                    if read.next.is_none() {
                        run.merge.finish(shard.get());
                        for child in read.child_shards {
                            if !sources.iter().any(|source| source.shard == child) {
                                let from = engine
                                    .resolve(&run.source_key, child, StartPosition::TrimHorizon)
                                    .await
                                    .map_err(|error| error.to_string())?;
                                run.merge.add_shard(child.get());
                                run.positions.insert(child.get(), from.as_u128());
                                sources.push(Source { shard: child, from: Some(from) });
                            }
                        }
                    }
                }
                Err(EngineError::Catalog(millrace_core::CatalogError::ShardNotFound { .. })) => {
                    // Gone (retention dropped a closed shard): its children carry on.
                    sources[index].from = None;
                    run.merge.finish(shard.get());
                }
                Err(error) => return Err(format!("reading {}/{shard}: {error}", run.source_key.name)),
            }
            index += 1;
        }
        run.process(&mut outputs);
        run.flush(&mut outputs).await?;
        run.snapshot_if_due(&outputs, shared.config.snapshot_ms).await?;
        if read_any {
            continue;
        }
        // Nothing new: wait for a commit on any shard, a stop, or the clock (the watermark
        // moves with it).
        let notified = state.wake.notified();
        let mut changes: Vec<_> =
            waits.iter().map(|(signal, generation)| signal.changed(*generation)).collect();
        let any_commit = std::future::poll_fn(move |context| {
            for change in changes.iter_mut() {
                if Pin::new(change).poll(context).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        tokio::select! {
            _ = notified => {}
            _ = any_commit => {}
            _ = tokio::time::sleep(Duration::from_millis(shared.config.tick_ms)) => {}
        }
    }
}

struct Running<'a> {
    engine: &'a Engine,
    name: &'a str,
    state: &'a WorkerState,
    app_key: ResourceKey,
    app_shard_id: ShardId,
    app_epoch: u64,
    source_key: ResourceKey,
    input_name: Name,
    input_schema: InputSchema,
    runner: ApplicationRunner,
    merge: ShardMerge<Vec<u8>>,
    /// Per shard: where a read starts to get the first record not yet released.
    positions: HashMap<u32, u128>,
    /// The last rowtime bound given to the runner.
    bound_ms: i64,
    /// Whether anything moved since the last snapshot.
    changed: bool,
    last_snapshot_ms: i64,
    last_snapshot_bytes: u64,
}

impl Running<'_> {
    /// Releases what the merge may, runs it, and moves the rowtime bound.
    fn process(&mut self, outputs: &mut [OutputState]) {
        let released = self.merge.release();
        let now = self.engine.now_ms();
        self.state.released.fetch_add(released.len() as u64, Ordering::Relaxed);
        for record in released {
            self.changed = true;
            self.positions.insert(record.shard, record.sequence + 1);
            if record.late {
                self.state.late.fetch_add(1, Ordering::Relaxed);
            }
            match self.input_schema.decode(&record.item) {
                Ok(rows) => {
                    for values in rows {
                        let produced = self.runner.push(
                            &self.input_name,
                            Row { rowtime_ms: record.rowtime_ms, values },
                            now,
                        );
                        self.route(produced, outputs, now);
                    }
                }
                Err(error) => {
                    self.state.errors.fetch_add(1, Ordering::Relaxed);
                    let data = String::from_utf8_lossy(&record.item).into_owned();
                    error_row(outputs, now, record.rowtime_ms, "Input_Error", &error.0, "", &data);
                }
            }
        }
        let watermark = self.merge.watermark_ms();
        if watermark != i64::MAX && watermark > self.bound_ms {
            self.bound_ms = watermark;
            self.changed = true;
            let produced = self.runner.advance(&self.input_name, watermark, now);
            self.route(produced, outputs, now);
        }
    }

    fn route(&self, produced: Produced, outputs: &mut [OutputState], now: i64) {
        for (stream, row) in produced.rows {
            for output in outputs.iter_mut().filter(|output| !output.errors && output.stream == stream) {
                let ordinal = output.next;
                output.next += 1;
                self.state.rows_out.fetch_add(1, Ordering::Relaxed);
                if ordinal >= output.skip_below {
                    output.pending.push(records::encode(output.format, &output.columns, &row.values));
                }
            }
        }
        for error in produced.errors {
            self.state.errors.fetch_add(1, Ordering::Relaxed);
            error_row(outputs, now, error.rowtime_ms, "Pump_Error", &error.message, error.pump.as_str(), "");
        }
    }

    /// Writes every output's pending rows (and a pending resend once its rows are back).
    async fn flush(&mut self, outputs: &mut [OutputState]) -> Result<(), String> {
        for output in outputs.iter_mut() {
            loop {
                if let Some((start, end)) = output.resend {
                    let len = (end - start) as usize;
                    if output.pending_start != start || output.pending.len() < len {
                        break;
                    }
                    let batch: Vec<Vec<u8>> = output.pending.drain(..len).collect();
                    self.append(output, batch, start, end, true).await?;
                    output.resend = None;
                    output.pending_start = end;
                    continue;
                }
                if output.pending.is_empty() {
                    break;
                }
                let start = output.pending_start;
                let mut len = (output.pending.len() as u64).min(BATCH_ROWS_MAX);
                // A batch never crosses a 2^31 boundary of ordinals (the stamp's producer moves on there).
                let boundary = ((start >> 31) + 1) << 31;
                len = len.min(boundary - start);
                let end = start + len;
                let sequence = SequenceNumber::new(self.app_epoch, pack(end, len));
                self.engine
                    .checkpoint(&self.app_key, &owner_of(&output.id), self.app_shard_id, sequence)
                    .await
                    .map_err(|error| format!("saving output {}'s position: {error}", output.id))?;
                let batch: Vec<Vec<u8>> = output.pending.drain(..len as usize).collect();
                self.append(output, batch, start, end, false).await?;
                output.pending_start = end;
            }
        }
        Ok(())
    }

    /// Appends one batch, again (as a resend) until it is stored or the worker stops.
    async fn append(
        &self,
        output: &OutputState,
        batch: Vec<Vec<u8>>,
        start: u64,
        end: u64,
        resent: bool,
    ) -> Result<(), String> {
        let mut resent = resent;
        let mut tries = 0u32;
        loop {
            let records: Vec<Record> = batch
                .iter()
                .enumerate()
                .map(|(offset, data)| {
                    let key = (start + offset as u64).to_string();
                    Record::new(
                        key.parse::<PartitionKey>().expect("a number is a partition key"),
                        data.clone(),
                    )
                })
                .collect();
            let outcome = self
                .engine
                .append_stamped(&output.key, records, Some(stamp(output.producer, end, resent)))
                .await;
            let failure = match outcome {
                Ok(results) => match results.into_iter().find_map(Result::err) {
                    None => return Ok(()),
                    Some(error) => error.to_string(),
                },
                Err(error) => error.to_string(),
            };
            tries += 1;
            if self.state.stopping() && tries >= 3 {
                return Err(format!("writing output {} ({}): {failure}", output.id, output.key.name));
            }
            eprintln!(
                "millrace: analytics {}: writing output {} to {}: {failure}; retrying",
                self.name, output.id, output.key.name
            );
            resent = true;
            let backoff = Duration::from_millis(100u64 << tries.min(5));
            tokio::time::sleep(backoff).await;
        }
    }

    /// A snapshot every `interval_ms` while the state changes, and no more than
    /// [`SNAPSHOT_BYTES_PER_S`] of them on average (a large state waits longer).
    async fn snapshot_if_due(&mut self, outputs: &[OutputState], interval_ms: i64) -> Result<(), String> {
        let now = self.engine.now_ms();
        let paced_ms = (self.last_snapshot_bytes.saturating_mul(1000) / SNAPSHOT_BYTES_PER_S) as i64;
        if self.changed && now.saturating_sub(self.last_snapshot_ms) >= interval_ms.max(paced_ms) {
            self.snapshot(outputs, false).await?;
        }
        Ok(())
    }

    /// Saves the state, when every output is written up to it.
    async fn snapshot(&mut self, outputs: &[OutputState], required: bool) -> Result<(), String> {
        let settled = outputs.iter().all(|output| {
            output.pending.is_empty() && output.resend.is_none() && output.pending_start == output.next
        });
        if !settled {
            return if required { Err("the outputs could not be written up to date".into()) } else { Ok(()) };
        }
        let mut shards: Vec<(u32, u128)> =
            self.positions.iter().map(|(shard, from)| (*shard, *from)).collect();
        shards.sort_unstable();
        let checkpoint = Checkpoint {
            runner: self.runner.snapshot(),
            released_ms: self.merge.released_ms(),
            bound_ms: self.bound_ms,
            shards,
            outputs: outputs.iter().map(|output| (output.id.clone(), output.next)).collect(),
        };
        let encoded = checkpoint.encode();
        self.last_snapshot_bytes = encoded.iter().map(|chunk| chunk.len() as u64).sum();
        let chunks: Vec<Record> = encoded
            .into_iter()
            .map(|data| Record::new("snapshot".parse::<PartitionKey>().expect("a partition key"), data))
            .collect();
        let stored = self
            .engine
            .append(&self.app_key, chunks)
            .await
            .map_err(|error| format!("saving a snapshot: {error}"))?;
        let first = stored.first().ok_or("a snapshot stored no record")?;
        self.engine
            .checkpoint(&self.app_key, SNAPSHOT_OWNER, first.shard, first.sequence)
            .await
            .map_err(|error| format!("pointing at the snapshot: {error}"))?;
        self.changed = false;
        self.last_snapshot_ms = self.engine.now_ms();
        Ok(())
    }
}

/// A row of the error stream, as KDA writes it.
fn error_row(
    outputs: &mut [OutputState],
    now: i64,
    rowtime_ms: i64,
    name: &str,
    message: &str,
    pump: &str,
    data: &str,
) {
    for output in outputs.iter_mut().filter(|output| output.errors) {
        let ordinal = output.next;
        output.next += 1;
        if ordinal < output.skip_below {
            continue;
        }
        let text = |value: &str| serde_json_string(value);
        let row = format!(
            "{{\"ERROR_TIME\":{now},\"ERROR_LEVEL\":\"ERROR\",\"ERROR_NAME\":{},\"MESSAGE\":{},\"DATA_ROWTIME\":{},\"DATA_ROW\":{},\"PUMP_NAME\":{}}}",
            text(name),
            text(message),
            text(&millrace_gpu::run::value::timestamp_text(rowtime_ms)),
            text(data),
            text(pump),
        );
        output.pending.push(row.into_bytes());
    }
}

fn serde_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if (ch as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", ch as u32)),
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// The latest snapshot, if any.
async fn load_snapshot(
    engine: &Engine,
    key: &ResourceKey,
    shard: ShardId,
) -> Result<Option<Checkpoint>, String> {
    let Some(at) =
        engine.get_checkpoint(key, SNAPSHOT_OWNER, shard).await.map_err(|error| error.to_string())?
    else {
        return Ok(None);
    };
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut from = at;
    let mut wanted = 1;
    while records.len() < wanted {
        let read = engine
            .read(key, shard, from, ReadLimits { max_records: wanted - records.len(), max_bytes: 64 << 20 })
            .await
            .map_err(|error| format!("reading the snapshot: {error}"))?;
        if read.records.is_empty() {
            return Err("the snapshot's records are missing from the application's log".into());
        }
        for record in read.records {
            if records.is_empty() {
                if record.sequence != at {
                    return Err("the snapshot's first record is missing from the application's log".into());
                }
                wanted = Checkpoint::chunks(&record.data).map_err(|error| error.to_string())?;
            }
            records.push(record.data);
        }
        from = read.next.ok_or("the application's log ended inside a snapshot")?;
    }
    Checkpoint::decode(&records).map(Some).map_err(|error| error.to_string())
}

/// Every reference table's rows, read from the S3 store.
async fn load_references(
    shared: &Shared,
    app: &App,
    compiled: &Compiled,
) -> Result<HashMap<Name, Vec<Vec<SqlValue>>>, String> {
    let mut tables = HashMap::new();
    for reference in &app.references {
        let sink =
            shared.sink.as_ref().ok_or("reference data needs the S3 store, which this server has not")?;
        let body = sink.get(reference.bucket(), &reference.file_key, REFERENCE_BYTES_MAX).await?;
        let name = Name::new(reference.table.as_str());
        let schema = compiled
            .schemas
            .iter()
            .find(|(stream, _)| *stream == name)
            .map(|(_, schema)| schema)
            .ok_or("a reference table has no schema")?;
        tables.insert(
            name,
            reference_rows(schema, &body)
                .map_err(|error| format!("reference table {}: {error}", reference.table))?,
        );
    }
    Ok(tables)
}

/// A reference object's rows: the object decoded whole, or, for JSON that is not one
/// document, one document per line.
pub fn reference_rows(schema: &InputSchema, body: &[u8]) -> Result<Vec<Vec<SqlValue>>, String> {
    match schema.decode(body) {
        Ok(rows) => Ok(rows),
        Err(error) if matches!(schema.format, records::RecordFormat::Json { .. }) => {
            let mut rows = Vec::new();
            for line in
                body.split(|byte| *byte == b'\n').filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            {
                rows.extend(schema.decode(line).map_err(|_| error.0.clone())?);
            }
            Ok(rows)
        }
        Err(error) => Err(error.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_pack_and_stamps_grow() {
        for (end, len) in [(1, 1), (5_000, 5_000), ((1 << 44) - 1, (1 << 20) - 1), (123_456_789, 17)] {
            assert_eq!(unpack(pack(end, len)), (end, len));
        }
        let mut last = stamp(7, 1, false);
        for end in [2, 3, 1 << 20, (1 << 31) - 1, 1 << 31] {
            let next = stamp(7, end, false);
            assert!(next.batch > last.batch && next.producer_id == last.producer_id, "{end}");
            last = next;
        }
        // Past 2^31 rows, another producer, from batch 1 again.
        let moved = stamp(7, (1 << 31) + 1, false);
        assert_ne!(moved.producer_id, last.producer_id);
        assert_eq!(moved.batch, 1);
    }

    #[test]
    fn error_text_is_json() {
        let text = serde_json_string("a \"quoted\"\n\\ \u{1}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, serde_json::Value::String("a \"quoted\"\n\\ \u{1}".into()));
    }
}
