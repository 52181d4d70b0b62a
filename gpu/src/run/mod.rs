//! Running an application: rows pushed into its input streams come out of its pumps into
//! in-application streams, on the CPU. Pure: rows, ROWTIME and the output time come from the
//! caller, which owns the shard reading, the checkpoints and the writing of output streams.
//!
//! Semantics, as KDA documents them:
//! - ROWTIME only grows on a stream. A tumbling window (`GROUP BY … STEP(ROWTIME BY …)`) ends
//!   when a row (or a rowtime bound, [`ApplicationRunner::advance`]) at or past its end
//!   arrives; its rows carry the window's end as their ROWTIME. Groups come out in the order
//!   they first appeared.
//! - A sliding window puts out one row per row in, aggregating the rows of its partition
//!   within the range (or row count) before it, itself included; the row keeps its ROWTIME.
//! - A stagger window opens per partition with the partition's first row and closes `range`
//!   later; its row carries the close time as ROWTIME.
//! - TOP_K_ITEMS_TUMBLING and COUNT_DISTINCT_ITEMS_TUMBLING aggregate tumbling windows of
//!   their size, their rows carry the window's end. TOP-K is exact here (KDA's is
//!   approximate: this is the answer it approximates); COUNT DISTINCT is exact to
//!   [`crate::agg::distinct::EXACT_MAX`] items, then HyperLogLog.
//! - A value a row cannot be computed with (division by zero, an overflow, a bad cast, NULL
//!   into a NOT NULL column) sends that row to the errors, as KDA's error stream does; the
//!   other rows go on.
//! - AVG of integers is an integer (truncated), of decimals a decimal, of doubles a double.
//!   SUM and AVG of doubles add in fixed point ([`crate::agg::Sum`]): the same answer in any
//!   order, on the CPU and the GPU.

mod eval;
mod event;
mod join;
pub mod merge;
pub mod record;
pub mod snapshot;
#[cfg(feature = "device")]
pub mod staging;
pub mod value;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use eval::{Env, Evaluator};

/// Maps keyed by group bytes, on every row: a fast hash (foldhash) rather than SipHash. Keys
/// are the application's own data; iteration order is never relied on (groups keep theirs in a
/// `Vec`).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub use value::{Value, ValueError};

use crate::agg::{hash::hash64, Distinct, Sum, TopK};
use crate::sql::plan::{
    AggregateFunction, Application, Expr, Frame, Name, Pump, Source, StreamDef, TimeColumn, Window,
};

/// A row of a stream: its ROWTIME (UTC ms) and a value per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub rowtime_ms: i64,
    pub values: Vec<Value>,
}

/// A row that could not be computed, for the application's error stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub pump: Name,
    pub rowtime_ms: i64,
    pub message: String,
}

/// What a push or an advance produced: the rows that landed in in-application streams, in
/// order, and the rows that failed.
#[derive(Debug, Default, PartialEq)]
pub struct Produced {
    pub rows: Vec<(Name, Row)>,
    pub errors: Vec<RowError>,
}

/// Where the aggregation of event-time windows runs: `auto` takes a GPU when there is one
/// (not a CPU rasterizer such as lavapipe), `gpu` any adapter, `cpu` none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Gpu,
}

/// An opened device the runners share.
#[derive(Clone)]
pub struct Device {
    #[cfg(feature = "device")]
    gpu: std::sync::Arc<crate::device::Gpu>,
    /// The adapter, in words.
    pub adapter: String,
}

/// The device `choice` asks for: `Ok(None)` for the CPU (and for `auto` without a GPU), an
/// error when `gpu` is asked and there is no adapter or this build has no wgpu.
pub fn open_device(choice: DeviceChoice) -> Result<Option<Device>, String> {
    if choice == DeviceChoice::Cpu {
        return Ok(None);
    }
    #[cfg(feature = "device")]
    {
        match staging::shared() {
            Some(gpu) if choice == DeviceChoice::Gpu || !gpu.is_software() => {
                Ok(Some(Device { adapter: gpu.adapter().to_owned(), gpu }))
            }
            Some(_) => Ok(None),
            None if choice == DeviceChoice::Gpu => Err("no GPU adapter was found (wgpu, Vulkan)".into()),
            None => Ok(None),
        }
    }
    #[cfg(not(feature = "device"))]
    {
        match choice {
            DeviceChoice::Gpu => {
                Err("this build has no GPU support (millrace-gpu's feature `device`)".into())
            }
            _ => Ok(None),
        }
    }
}

/// Why an application cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// Pumps feed each other in a circle through these streams.
    Cycle(Vec<Name>),
    /// A pump joins a reference table the caller gave no rows for.
    MissingReference(Name),
    /// A snapshot that cannot be restored.
    Snapshot(snapshot::SnapshotError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Cycle(streams) => {
                let names: Vec<String> = streams.iter().map(Name::to_string).collect();
                write!(f, "pumps feed each other in a circle through {}", names.join(" -> "))
            }
            RunError::MissingReference(name) => write!(f, "reference table {name} has no data"),
            RunError::Snapshot(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for RunError {}

pub struct ApplicationRunner {
    streams: Vec<StreamDef>,
    pumps: Vec<PumpRunner>,
    /// The hash of the application as canonical SQL: a snapshot belongs to this code only.
    fingerprint: u64,
}

impl ApplicationRunner {
    /// `inputs`: the streams the application was parsed with; `references`: the rows of each
    /// reference table it joins.
    pub fn new(
        application: &Application,
        inputs: &[StreamDef],
        references: &HashMap<Name, Vec<Vec<Value>>>,
    ) -> Result<Self, RunError> {
        check_acyclic(application)?;
        let mut pumps = Vec::new();
        for pump in &application.pumps {
            // A table function's column, by position in its stream (the plan checked it).
            let column = match &pump.query.source {
                Source::TopK { stream, column, .. } | Source::DistinctCount { stream, column, .. } => {
                    application
                        .streams
                        .iter()
                        .chain(inputs)
                        .find(|definition| &definition.name == stream)
                        .and_then(|definition| definition.column(column))
                        .unwrap_or(0)
                }
                _ => 0,
            };
            let reference = match &pump.query.source {
                Source::Join { reference, .. } => Some(
                    references
                        .get(&reference.stream)
                        .cloned()
                        .ok_or_else(|| RunError::MissingReference(reference.stream.clone()))?,
                ),
                _ => None,
            };
            pumps.push(PumpRunner::new(pump.clone(), reference, column));
        }
        let fingerprint = hash64(application.to_sql(inputs).as_bytes());
        Ok(ApplicationRunner { streams: application.streams.clone(), pumps, fingerprint })
    }

    /// The runner's operator state (every open window, held row and accumulator) as bytes, to
    /// checkpoint with the input positions it was taken at. Equal states give equal bytes.
    /// Values staged for the GPU are aggregated first.
    pub fn snapshot(&mut self) -> Vec<u8> {
        for pump in &mut self.pumps {
            if let State::Event(state) = &mut pump.state {
                if let Err(error) = state.flush_staged() {
                    eprintln!("millrace: analytics: staged values of pump {}: {error}", pump.pump.name);
                }
            }
        }
        snapshot::encode(self.fingerprint, &self.pumps)
    }

    /// Runs the aggregation of tumbling and hopping event-time windows on `device` (the pumps
    /// whose aggregates the kernels take); answers how many pumps moved.
    pub fn use_device(&mut self, device: &Device) -> usize {
        #[cfg(feature = "device")]
        {
            let mut moved = 0;
            for pump in &mut self.pumps {
                if let State::Event(state) = &mut pump.state {
                    if state.hop.is_some() {
                        let staging = staging::Staging::new(device.gpu.clone(), &pump.aggregates);
                        if staging.useful() {
                            state.staging = Some(staging);
                            moved += 1;
                        }
                    }
                }
            }
            moved
        }
        #[cfg(not(feature = "device"))]
        {
            let _ = device;
            0
        }
    }

    /// A runner of `application` in the state `snapshot` holds: fed the input from the
    /// positions the snapshot was taken at, it puts out exactly what the runner that took it
    /// would have put out from then on.
    pub fn restore(
        application: &Application,
        inputs: &[StreamDef],
        references: &HashMap<Name, Vec<Vec<Value>>>,
        snapshot: &[u8],
    ) -> Result<Self, RunError> {
        let mut runner = ApplicationRunner::new(application, inputs, references)?;
        snapshot::decode(snapshot, runner.fingerprint, &mut runner.pumps).map_err(RunError::Snapshot)?;
        Ok(runner)
    }

    /// A row arrives on `stream` (an input, in ROWTIME order). `now_ms` is the output time
    /// (CURRENT_ROW_TIMESTAMP).
    pub fn push(&mut self, stream: &Name, row: Row, now_ms: i64) -> Produced {
        let mut produced = Produced::default();
        let mut queue = VecDeque::from([(stream.clone(), Arrival::Row(row))]);
        self.drain(&mut queue, now_ms, &mut produced);
        produced
    }

    /// No row of `stream` will have a ROWTIME below `bound_ms` from now on: windows that end
    /// by then close (KDA's rowtime bound; what an idle source's clock says).
    pub fn advance(&mut self, stream: &Name, bound_ms: i64, now_ms: i64) -> Produced {
        let mut produced = Produced::default();
        let mut queue = VecDeque::from([(stream.clone(), Arrival::Bound(bound_ms))]);
        self.drain(&mut queue, now_ms, &mut produced);
        produced
    }

    fn drain(&mut self, queue: &mut VecDeque<(Name, Arrival)>, now_ms: i64, produced: &mut Produced) {
        while let Some((stream, arrival)) = queue.pop_front() {
            for pump in self.pumps.iter_mut().filter(|pump| reads(&pump.pump, &stream)) {
                let mut rows = Vec::new();
                let mut errors = Vec::new();
                match &arrival {
                    Arrival::Row(row) => pump.push(&stream, row, now_ms, &mut rows, &mut errors),
                    Arrival::Bound(bound_ms) => pump.close_before(*bound_ms, now_ms, &mut rows, &mut errors),
                }
                let target = pump.pump.target.clone();
                let definition = self.streams.iter().find(|definition| definition.name == target);
                let definition = definition.expect("a pump's target is a declared stream (the plan checked)");
                for row in rows {
                    match insert(definition, &pump.pump.target_columns, row) {
                        Ok(row) => {
                            produced.rows.push((target.clone(), row.clone()));
                            queue.push_back((target.clone(), Arrival::Row(row)));
                        }
                        Err((rowtime_ms, error)) => produced.errors.push(RowError {
                            pump: pump.pump.name.clone(),
                            rowtime_ms,
                            message: error.0,
                        }),
                    }
                }
                produced.errors.extend(errors.into_iter().map(|(rowtime_ms, error)| RowError {
                    pump: pump.pump.name.clone(),
                    rowtime_ms,
                    message: error.0,
                }));
                if let Arrival::Bound(bound_ms) = arrival {
                    // Whatever a pump puts out from now on is at or past the bound.
                    queue.push_back((target, Arrival::Bound(bound_ms)));
                }
            }
        }
    }
}

enum Arrival {
    Row(Row),
    Bound(i64),
}

/// The values of a pump's output row placed in the target's columns and cast to their types.
fn insert(target: &StreamDef, columns: &[usize], row: Row) -> Result<Row, (i64, ValueError)> {
    let mut values = vec![Value::Null; target.columns.len()];
    for (value, index) in row.values.into_iter().zip(columns) {
        let column = &target.columns[*index];
        values[*index] = value.cast(column.sql_type).map_err(|error| {
            (row.rowtime_ms, ValueError(format!("column {} of {}: {error}", column.name, target.name)))
        })?;
    }
    for (value, column) in values.iter().zip(&target.columns) {
        if column.not_null && value.is_null() {
            return Err((
                row.rowtime_ms,
                ValueError(format!("NULL into NOT NULL column {} of {}", column.name, target.name)),
            ));
        }
    }
    Ok(Row { rowtime_ms: row.rowtime_ms, values })
}

/// Whether a pump reads `stream` (without the allocation of [`sources_of`]: once per pump and
/// row).
fn reads(pump: &Pump, stream: &Name) -> bool {
    match &pump.query.source {
        Source::StreamJoin { left, right, .. } => &left.stream == stream || &right.stream == stream,
        _ => source_of(pump) == stream,
    }
}

/// The streams a pump reads (two for a stream-to-stream join).
fn sources_of(pump: &Pump) -> Vec<&Name> {
    match &pump.query.source {
        Source::StreamJoin { left, right, .. } => vec![&left.stream, &right.stream],
        _ => vec![source_of(pump)],
    }
}

/// The stream a pump reads (a join's left one).
fn source_of(pump: &Pump) -> &Name {
    match &pump.query.source {
        Source::StreamJoin { left, .. } => &left.stream,
        Source::Stream(relation) | Source::Join { stream: relation, .. } => &relation.stream,
        Source::TopK { stream, .. } | Source::DistinctCount { stream, .. } => stream,
        Source::Windowed { stream, .. } => &stream.stream,
    }
}

/// Pumps must not feed their own sources, directly or through other pumps.
fn check_acyclic(application: &Application) -> Result<(), RunError> {
    for pump in &application.pumps {
        for source in sources_of(pump) {
            // From the pump's target, follow pumps downstream; reaching its source is a cycle.
            let mut path = vec![source.clone(), pump.target.clone()];
            let mut frontier = vec![pump.target.clone()];
            let mut seen = Vec::new();
            while let Some(stream) = frontier.pop() {
                if stream == *source {
                    return Err(RunError::Cycle(path));
                }
                if seen.contains(&stream) {
                    continue;
                }
                seen.push(stream.clone());
                for next in application.pumps.iter().filter(|next| sources_of(next).contains(&&stream)) {
                    if next.target == *source {
                        path.push(next.target.clone());
                        return Err(RunError::Cycle(path));
                    }
                    frontier.push(next.target.clone());
                }
            }
        }
    }
    Ok(())
}

/// One pump's query, run.
struct PumpRunner {
    pump: Pump,
    evaluator: Evaluator,
    reference: Option<Vec<Vec<Value>>>,
    /// The aggregates the projection and HAVING use, each once.
    aggregates: Vec<Expr>,
    state: State,
    /// A stream-to-stream join's kept rows.
    join: Option<Box<join::JoinState>>,
}

enum State {
    Rows,
    Tumbling { size_ms: u64, open: Option<(i64, Groups)> },
    Sliding { partitions: FastMap<Vec<u8>, VecDeque<Held>> },
    Stagger { range_ms: u64, windows: Vec<(i64, Vec<u8>, Group)> },
    TopK { k: u32, size_ms: u64, column: usize, open: Option<(i64, TopK, HashMap<Vec<u8>, Value>)> },
    Distinct { size_ms: u64, column: usize, open: Option<(i64, Distinct)> },
    Event(Box<event::EventState>),
}

/// A window's groups, in the order they first appeared.
#[derive(Default)]
struct Groups {
    index: FastMap<Vec<u8>, usize>,
    groups: Vec<Group>,
}

struct Group {
    keys: Vec<Value>,
    accumulators: Vec<Accumulator>,
}

/// A row held by a sliding window: its ROWTIME and the arguments of each aggregate.
struct Held {
    rowtime_ms: i64,
    arguments: Vec<Value>,
}

/// The context rows an expression is evaluated in.
struct RowEnv<'a> {
    stream: &'a [Value],
    reference: Option<&'a [Value]>,
    rowtime_ms: i64,
    now_ms: i64,
    substitutions: &'a [(&'a Expr, Value)],
}

impl Env for RowEnv<'_> {
    fn column(&self, relation: usize, index: usize) -> Value {
        match relation {
            0 => self.stream.get(index).cloned().unwrap_or(Value::Null),
            _ => self.reference.and_then(|row| row.get(index).cloned()).unwrap_or(Value::Null),
        }
    }

    fn rowtime(&self) -> Value {
        Value::Timestamp(self.rowtime_ms)
    }

    fn now_ms(&self) -> i64 {
        self.now_ms
    }

    fn substitute(&self, expr: &Expr) -> Option<Value> {
        self.substitutions.iter().find(|(candidate, _)| *candidate == expr).map(|(_, value)| value.clone())
    }
}

type Out<'a> = (&'a mut Vec<Row>, &'a mut Vec<(i64, ValueError)>);

impl PumpRunner {
    fn new(pump: Pump, reference: Option<Vec<Vec<Value>>>, function_column: usize) -> PumpRunner {
        let mut aggregates: Vec<Expr> = Vec::new();
        let mut collect = |expr: &Expr| {
            if matches!(expr, Expr::Aggregate { .. }) && !aggregates.contains(expr) {
                aggregates.push(expr.clone());
            }
        };
        for projected in &pump.query.projection {
            projected.expr.visit(&mut collect);
        }
        if let Some(having) = &pump.query.having {
            having.visit(&mut collect);
        }
        let state = match (&pump.query.source, &pump.query.window) {
            (Source::TopK { k, window_s, .. }, _) => State::TopK {
                k: *k,
                size_ms: u64::from(*window_s) * 1000,
                column: function_column,
                open: None,
            },
            (Source::DistinctCount { window_s, .. }, _) => {
                State::Distinct { size_ms: u64::from(*window_s) * 1000, column: function_column, open: None }
            }
            (source, Window::Event { keys }) => State::Event(Box::new(event::EventState::new(source, keys))),
            (_, Window::None) => State::Rows,
            (_, Window::Tumbling { size_ms, .. }) => State::Tumbling { size_ms: *size_ms, open: None },
            (_, Window::Sliding { .. }) => State::Sliding { partitions: FastMap::default() },
            (_, Window::Stagger { range_ms, .. }) => {
                State::Stagger { range_ms: *range_ms, windows: Vec::new() }
            }
        };
        let join = match &pump.query.source {
            Source::StreamJoin { on, range_ms, .. } => Some(Box::new(join::JoinState::new(on, *range_ms))),
            _ => None,
        };
        PumpRunner { pump, evaluator: Evaluator::default(), reference, aggregates, state, join }
    }

    fn push(
        &mut self,
        stream: &Name,
        row: &Row,
        now_ms: i64,
        rows: &mut Vec<Row>,
        errors: &mut Vec<(i64, ValueError)>,
    ) {
        // Windows that end by this row's ROWTIME close first: their rows come before it.
        self.close_before(row.rowtime_ms, now_ms, rows, errors);
        if self.join.is_some() {
            self.push_joined(stream, row, now_ms, rows, errors);
            if matches!(self.state, State::Event(_)) {
                self.close_before(row.rowtime_ms, now_ms, rows, errors);
            }
            return;
        }
        match &mut self.state {
            State::TopK { size_ms, column, open, .. } => {
                let start = window_start(row.rowtime_ms, *size_ms);
                let (_, top, items) = open.get_or_insert_with(|| (start, TopK::default(), HashMap::new()));
                let value = row.values.get(*column).cloned().unwrap_or(Value::Null);
                if !value.is_null() {
                    let bytes = value.canonical_bytes();
                    top.add(&bytes);
                    items.entry(bytes).or_insert(value);
                }
                return;
            }
            State::Distinct { size_ms, column, open } => {
                let start = window_start(row.rowtime_ms, *size_ms);
                let (_, distinct) = open.get_or_insert_with(|| (start, Distinct::default()));
                let value = row.values.get(*column).cloned().unwrap_or(Value::Null);
                if !value.is_null() {
                    distinct.add_hash(hash64(&value.canonical_bytes()));
                }
                return;
            }
            _ => {}
        }
        // The rows of the FROM clause: the row itself, or joined with its reference rows.
        let mut joined: Vec<Option<Vec<Value>>> = Vec::new();
        match (&self.pump.query.source, &self.reference) {
            (Source::Join { on, left, .. }, Some(reference)) => {
                for candidate in reference {
                    let env = RowEnv {
                        stream: &row.values,
                        reference: Some(candidate),
                        rowtime_ms: row.rowtime_ms,
                        now_ms,
                        substitutions: &[],
                    };
                    match self.evaluator.eval(on, &env) {
                        Ok(Value::Boolean(true)) => joined.push(Some(candidate.clone())),
                        Ok(_) => {}
                        Err(error) => {
                            errors.push((row.rowtime_ms, error));
                            return;
                        }
                    }
                }
                if joined.is_empty() && *left {
                    joined.push(None);
                }
            }
            _ => joined.push(None),
        }
        for reference in &joined {
            let env = RowEnv {
                stream: &row.values,
                reference: reference.as_deref(),
                rowtime_ms: row.rowtime_ms,
                now_ms,
                substitutions: &[],
            };
            if let Err(error) = self.accept(&env, (rows, errors)) {
                errors.push((row.rowtime_ms, error));
            }
        }
        if matches!(self.state, State::Event(_)) {
            // The row may have moved the watermark.
            self.close_before(row.rowtime_ms, now_ms, rows, errors);
        }
    }

    /// A row of one side of a stream-to-stream join: it meets the other side's kept rows of
    /// its key for which ON holds, then is kept itself.
    fn push_joined(
        &mut self,
        stream: &Name,
        row: &Row,
        now_ms: i64,
        rows: &mut Vec<Row>,
        errors: &mut Vec<(i64, ValueError)>,
    ) {
        let Source::StreamJoin { left, right, on, .. } = &self.pump.query.source else { return };
        let sides: Vec<usize> = [&left.stream, &right.stream]
            .iter()
            .enumerate()
            .filter(|(_, side_stream)| **side_stream == stream)
            .map(|(side, _)| side)
            .collect();
        let Some(join) = self.join.as_mut() else { return };
        let mut met: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
        for side in sides {
            let other = 1 - side;
            join.evict(other, row.rowtime_ms);
            let key = match join.key(&mut self.evaluator, side, &row.values, row.rowtime_ms) {
                Ok(Some(key)) => key,
                Ok(None) => continue,
                Err(error) => {
                    errors.push((row.rowtime_ms, error));
                    continue;
                }
            };
            for kept in join.matches(other, &key) {
                let (left_values, right_values) =
                    if side == 0 { (&row.values, &kept.values) } else { (&kept.values, &row.values) };
                let env = RowEnv {
                    stream: left_values,
                    reference: Some(right_values),
                    rowtime_ms: row.rowtime_ms,
                    now_ms,
                    substitutions: &[],
                };
                match self.evaluator.eval(on, &env) {
                    Ok(Value::Boolean(true)) => met.push((left_values.clone(), right_values.clone())),
                    Ok(_) => {}
                    Err(error) => errors.push((row.rowtime_ms, error)),
                }
            }
            join.keep(side, row.rowtime_ms, key, row.values.clone());
        }
        for (left_values, right_values) in &met {
            let env = RowEnv {
                stream: left_values,
                reference: Some(right_values),
                rowtime_ms: row.rowtime_ms,
                now_ms,
                substitutions: &[],
            };
            if let Err(error) = self.accept(&env, (rows, errors)) {
                errors.push((row.rowtime_ms, error));
            }
        }
    }

    /// One row of the FROM clause through WHERE and the window.
    fn accept(&mut self, env: &RowEnv<'_>, out: Out<'_>) -> Result<(), ValueError> {
        let query = &self.pump.query;
        if let Some(filter) = &query.filter {
            if self.evaluator.eval(filter, env)? != Value::Boolean(true) {
                return Ok(());
            }
        }
        let arguments = |evaluator: &mut Evaluator, aggregates: &[Expr]| -> Result<Vec<Value>, ValueError> {
            aggregates
                .iter()
                .map(|aggregate| match aggregate {
                    Expr::Aggregate { arg: Some(arg), .. } => evaluator.eval(arg, env),
                    _ => Ok(Value::Boolean(true)),
                })
                .collect()
        };
        match (&mut self.state, &query.window) {
            (State::Rows, _) => {
                let values = project(&mut self.evaluator, &query.projection, env)?;
                out.0.push(Row { rowtime_ms: env.rowtime_ms, values });
            }
            (State::Tumbling { size_ms, open }, Window::Tumbling { keys, .. }) => {
                let start = window_start(env.rowtime_ms, *size_ms);
                let (_, groups) = open.get_or_insert_with(|| (start, Groups::default()));
                let key_values: Vec<Value> =
                    keys.iter().map(|key| self.evaluator.eval(key, env)).collect::<Result<_, _>>()?;
                let arguments = arguments(&mut self.evaluator, &self.aggregates)?;
                let group = groups.group(key_values, &self.aggregates);
                for (accumulator, argument) in group.accumulators.iter_mut().zip(&arguments) {
                    accumulator.add(argument)?;
                }
            }
            (State::Stagger { windows, .. }, Window::Stagger { keys, .. }) => {
                let key_values: Vec<Value> =
                    keys.iter().map(|key| self.evaluator.eval(key, env)).collect::<Result<_, _>>()?;
                let arguments = arguments(&mut self.evaluator, &self.aggregates)?;
                let bytes = group_bytes(&key_values);
                let index = match windows.iter().position(|(_, key, _)| *key == bytes) {
                    Some(index) => index,
                    None => {
                        let accumulators = self.aggregates.iter().map(Accumulator::new).collect();
                        windows.push((env.rowtime_ms, bytes, Group { keys: key_values, accumulators }));
                        windows.len() - 1
                    }
                };
                for (accumulator, argument) in windows[index].2.accumulators.iter_mut().zip(&arguments) {
                    accumulator.add(argument)?;
                }
            }
            (State::Event(state), Window::Event { keys }) => {
                let time_ms = state.time_of(env.stream, env.rowtime_ms)?;
                state.check_late(time_ms)?;
                let key_values: Vec<Value> = keys
                    .iter()
                    .zip(&state.window_keys)
                    .map(|(key, window)| match window {
                        Some(_) => Ok(Value::Null),
                        None => self.evaluator.eval(key, env),
                    })
                    .collect::<Result<_, _>>()?;
                let arguments = arguments(&mut self.evaluator, &self.aggregates)?;
                let partition = match &query.source {
                    Source::Windowed { partition, .. } if !partition.is_empty() => {
                        let values: Vec<Value> = partition
                            .iter()
                            .map(|key| self.evaluator.eval(key, env))
                            .collect::<Result<_, _>>()?;
                        group_bytes(&values)
                    }
                    _ => Vec::new(),
                };
                state.add(time_ms, partition, key_values, &arguments, &self.aggregates)?;
            }
            (State::Sliding { partitions }, Window::Sliding { partition, frame, .. }) => {
                let key_values: Vec<Value> =
                    partition.iter().map(|key| self.evaluator.eval(key, env)).collect::<Result<_, _>>()?;
                let arguments = arguments(&mut self.evaluator, &self.aggregates)?;
                let held = partitions.entry(group_bytes(&key_values)).or_default();
                held.push_back(Held { rowtime_ms: env.rowtime_ms, arguments });
                match frame {
                    Frame::RangeMs(range_ms) => {
                        while held
                            .front()
                            .is_some_and(|first| first.rowtime_ms < env.rowtime_ms - *range_ms as i64)
                        {
                            held.pop_front();
                        }
                    }
                    Frame::Rows(back) => {
                        while held.len() as u64 > back + 1 {
                            held.pop_front();
                        }
                    }
                }
                let mut accumulators: Vec<Accumulator> =
                    self.aggregates.iter().map(Accumulator::new).collect();
                for row in held.iter() {
                    for (accumulator, argument) in accumulators.iter_mut().zip(&row.arguments) {
                        accumulator.add(argument)?;
                    }
                }
                let finals: Vec<Value> = accumulators.iter().map(Accumulator::finish).collect();
                let substitutions: Vec<(&Expr, Value)> = self.aggregates.iter().zip(finals).collect();
                let env = RowEnv { substitutions: &substitutions, ..*env };
                let values = project(&mut self.evaluator, &query.projection, &env)?;
                out.0.push(Row { rowtime_ms: env.rowtime_ms, values });
            }
            _ => unreachable!("the state follows the plan's window"),
        }
        Ok(())
    }

    /// Closes the windows that end at or before `bound_ms`, putting out their rows.
    fn close_before(
        &mut self,
        bound_ms: i64,
        now_ms: i64,
        rows: &mut Vec<Row>,
        errors: &mut Vec<(i64, ValueError)>,
    ) {
        let query = &self.pump.query;
        match &mut self.state {
            State::Rows | State::Sliding { .. } => {}
            State::Tumbling { size_ms, open } => {
                let Some((start, _)) = open else { return };
                let end = *start + *size_ms as i64;
                if end > bound_ms {
                    return;
                }
                let (_, groups) = open.take().expect("an open window");
                let keys = match &query.window {
                    Window::Tumbling { keys, .. } => keys,
                    _ => unreachable!("a tumbling state has a tumbling window"),
                };
                for group in groups.groups {
                    emit_group(
                        &mut self.evaluator,
                        query,
                        keys,
                        &self.aggregates,
                        group,
                        end,
                        now_ms,
                        rows,
                        errors,
                    );
                }
            }
            State::Stagger { range_ms, windows } => {
                let keys = match &query.window {
                    Window::Stagger { keys, .. } => keys,
                    _ => unreachable!("a stagger state has a stagger window"),
                };
                // In order of closing: windows opened earlier close earlier.
                while windows.first().is_some_and(|(opened, _, _)| opened + *range_ms as i64 <= bound_ms) {
                    let (opened, _, group) = windows.remove(0);
                    let end = opened + *range_ms as i64;
                    emit_group(
                        &mut self.evaluator,
                        query,
                        keys,
                        &self.aggregates,
                        group,
                        end,
                        now_ms,
                        rows,
                        errors,
                    );
                }
            }
            State::TopK { k, size_ms, open, .. } => {
                let Some((start, _, _)) = open else { return };
                let end = *start + *size_ms as i64;
                if end > bound_ms {
                    return;
                }
                let (_, top, items) = open.take().expect("an open window");
                for (item, count) in top.top(*k as usize) {
                    let values = vec![items[item].clone(), Value::Integer(count as i64)];
                    emit_function_row(&mut self.evaluator, query, values, end, now_ms, rows, errors);
                }
            }
            State::Event(state) => {
                let candidate = match state.time {
                    TimeColumn::Rowtime => bound_ms.saturating_sub(state.delay_ms as i64),
                    TimeColumn::Column(_) => state.max_seen_ms.saturating_sub(state.delay_ms as i64),
                };
                let closed = match state.close(candidate) {
                    Ok(closed) => closed,
                    Err(error) => {
                        errors.push((bound_ms, error));
                        return;
                    }
                };
                let keys = match &query.window {
                    Window::Event { keys } => keys,
                    _ => unreachable!("an event-time state has an event-time window"),
                };
                for window in closed {
                    for mut group in window.groups.groups {
                        state.window_keys(&mut group.keys, window.start, window.end);
                        emit_group(
                            &mut self.evaluator,
                            query,
                            keys,
                            &self.aggregates,
                            group,
                            bound_ms,
                            now_ms,
                            rows,
                            errors,
                        );
                    }
                }
            }
            State::Distinct { size_ms, open, .. } => {
                let Some((start, _)) = open else { return };
                let end = *start + *size_ms as i64;
                if end > bound_ms {
                    return;
                }
                let (_, distinct) = open.take().expect("an open window");
                let values = vec![Value::Integer(distinct.estimate() as i64)];
                emit_function_row(&mut self.evaluator, query, values, end, now_ms, rows, errors);
            }
        }
    }
}

fn window_start(rowtime_ms: i64, size_ms: u64) -> i64 {
    rowtime_ms.div_euclid(size_ms as i64) * size_ms as i64
}

fn group_bytes(keys: &[Value]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for key in keys {
        let canonical = key.canonical_bytes();
        bytes.extend((canonical.len() as u32).to_le_bytes());
        bytes.extend(canonical);
    }
    bytes
}

impl Groups {
    fn group(&mut self, keys: Vec<Value>, aggregates: &[Expr]) -> &mut Group {
        let index = self.index_of(keys, aggregates);
        &mut self.groups[index]
    }

    /// The group of `keys` (a new one, after the others, if none has them).
    fn index_of(&mut self, keys: Vec<Value>, aggregates: &[Expr]) -> usize {
        let bytes = group_bytes(&keys);
        let next = self.groups.len();
        let index = *self.index.entry(bytes).or_insert(next);
        if index == next {
            self.groups.push(Group { keys, accumulators: aggregates.iter().map(Accumulator::new).collect() });
        }
        index
    }
}

fn project(
    evaluator: &mut Evaluator,
    projection: &[crate::sql::plan::Projected],
    env: &RowEnv<'_>,
) -> Result<Vec<Value>, ValueError> {
    projection.iter().map(|projected| evaluator.eval(&projected.expr, env)).collect()
}

#[allow(clippy::too_many_arguments)]
fn emit_group(
    evaluator: &mut Evaluator,
    query: &crate::sql::plan::Query,
    keys: &[Expr],
    aggregates: &[Expr],
    group: Group,
    end_ms: i64,
    now_ms: i64,
    rows: &mut Vec<Row>,
    errors: &mut Vec<(i64, ValueError)>,
) {
    let finals: Vec<Value> = group.accumulators.iter().map(Accumulator::finish).collect();
    let substitutions: Vec<(&Expr, Value)> =
        keys.iter().zip(group.keys).chain(aggregates.iter().zip(finals)).collect();
    let env =
        RowEnv { stream: &[], reference: None, rowtime_ms: end_ms, now_ms, substitutions: &substitutions };
    emit_if(evaluator, query.having.as_ref(), &query.projection, &env, rows, errors);
}

fn emit_function_row(
    evaluator: &mut Evaluator,
    query: &crate::sql::plan::Query,
    values: Vec<Value>,
    end_ms: i64,
    now_ms: i64,
    rows: &mut Vec<Row>,
    errors: &mut Vec<(i64, ValueError)>,
) {
    let env = RowEnv { stream: &values, reference: None, rowtime_ms: end_ms, now_ms, substitutions: &[] };
    emit_if(evaluator, query.filter.as_ref(), &query.projection, &env, rows, errors);
}

/// A window's row, put out if `condition` (HAVING, or a table function's WHERE) holds: its
/// projection, at the environment's ROWTIME; a value that cannot be computed sends it to the
/// errors instead.
fn emit_if(
    evaluator: &mut Evaluator,
    condition: Option<&Expr>,
    projection: &[crate::sql::plan::Projected],
    env: &RowEnv<'_>,
    rows: &mut Vec<Row>,
    errors: &mut Vec<(i64, ValueError)>,
) {
    if let Some(condition) = condition {
        match evaluator.eval(condition, env) {
            Ok(Value::Boolean(true)) => {}
            Ok(_) => return,
            Err(error) => {
                errors.push((env.rowtime_ms, error));
                return;
            }
        }
    }
    match project(evaluator, projection, env) {
        Ok(values) => rows.push(Row { rowtime_ms: env.rowtime_ms, values }),
        Err(error) => errors.push((env.rowtime_ms, error)),
    }
}

/// The state of one aggregate over one group.
#[derive(Clone)]
enum Accumulator {
    Rows(u64),
    Count(u64),
    CountDistinct(Distinct),
    /// SUM or AVG, and the kind of number it adds (from its first value).
    Sum {
        average: bool,
        sum: Sum,
        kind: Option<NumberKind>,
    },
    Min(Option<Value>),
    Max(Option<Value>),
    /// APPROX_PERCENTILE: the fraction in millionths, and the histogram of the values.
    Percentile {
        ppm: u32,
        histogram: crate::agg::Histogram,
    },
}

#[derive(Clone, Copy, PartialEq)]
enum NumberKind {
    Integer,
    Decimal(u8),
    Double,
}

impl Accumulator {
    fn new(aggregate: &Expr) -> Accumulator {
        let Expr::Aggregate { function, distinct, .. } = aggregate else {
            unreachable!("only aggregates are accumulated")
        };
        match (function, distinct) {
            (AggregateFunction::CountRows, _) => Accumulator::Rows(0),
            (AggregateFunction::Count, true) => Accumulator::CountDistinct(Distinct::default()),
            (AggregateFunction::Count, false) => Accumulator::Count(0),
            (AggregateFunction::Sum, _) => {
                Accumulator::Sum { average: false, sum: Sum::default(), kind: None }
            }
            (AggregateFunction::Avg, _) => {
                Accumulator::Sum { average: true, sum: Sum::default(), kind: None }
            }
            (AggregateFunction::Min, _) => Accumulator::Min(None),
            (AggregateFunction::Max, _) => Accumulator::Max(None),
            (AggregateFunction::Percentile { ppm }, _) => {
                Accumulator::Percentile { ppm: *ppm, histogram: crate::agg::Histogram::default() }
            }
        }
    }

    fn add(&mut self, value: &Value) -> Result<(), ValueError> {
        if let Accumulator::Rows(count) = self {
            *count += 1;
            return Ok(());
        }
        if value.is_null() {
            return Ok(());
        }
        match self {
            Accumulator::Rows(_) => unreachable!("counted above"),
            Accumulator::Count(count) => *count += 1,
            Accumulator::CountDistinct(distinct) => distinct.add_hash(hash64(&value.canonical_bytes())),
            Accumulator::Sum { sum, kind, .. } => {
                // The kind of number is the first value's; the others are added as that kind.
                let kind = *kind.get_or_insert(match value {
                    Value::Integer(_) => NumberKind::Integer,
                    Value::Decimal { scale, .. } => NumberKind::Decimal(*scale),
                    Value::Double(_) => NumberKind::Double,
                    other => return value::fail(format!("SUM/AVG of {}", other.type_name())),
                });
                match (kind, value) {
                    (NumberKind::Integer, Value::Integer(value)) => sum.add_i64(*value),
                    (NumberKind::Decimal(scale), Value::Integer(value)) => {
                        sum.add_partial(value::rescale(i128::from(*value), 0, scale), 1)
                    }
                    (NumberKind::Decimal(scale), Value::Decimal { unscaled, scale: from }) => {
                        sum.add_partial(value::rescale(*unscaled, *from, scale), 1)
                    }
                    (NumberKind::Double, value) if value.as_f64().is_some() => {
                        sum.add_f64(value.as_f64().expect("a number"))
                    }
                    (_, other) => {
                        return value::fail(format!(
                            "SUM/AVG mixes numbers: {} among others; CAST the argument",
                            other.type_name()
                        ))
                    }
                }
            }
            Accumulator::Percentile { histogram, .. } => match value.as_f64() {
                Some(number) => histogram.add_f64(number),
                None => return value::fail(format!("APPROX_PERCENTILE of {}", value.type_name())),
            },
            Accumulator::Min(least) => {
                if least.as_ref().is_none_or(|least| value.compare(least) == Some(std::cmp::Ordering::Less)) {
                    *least = Some(value.clone());
                }
            }
            Accumulator::Max(most) => {
                if most.as_ref().is_none_or(|most| value.compare(most) == Some(std::cmp::Ordering::Greater)) {
                    *most = Some(value.clone());
                }
            }
        }
        Ok(())
    }

    fn finish(&self) -> Value {
        match self {
            Accumulator::Rows(count) | Accumulator::Count(count) => Value::Integer(*count as i64),
            Accumulator::CountDistinct(distinct) => Value::Integer(distinct.estimate() as i64),
            Accumulator::Sum { average, sum, kind } => {
                if sum.count() == 0 {
                    return Value::Null;
                }
                let count = sum.count() as i128;
                match kind {
                    None => Value::Null,
                    Some(NumberKind::Double) => Value::Double(if *average {
                        sum.mean_f64().unwrap_or(f64::NAN)
                    } else {
                        sum.total_f64()
                    }),
                    Some(NumberKind::Integer) => match sum.total_i128() {
                        Some(total) => {
                            // AVG of integers truncates, as SQL's integer division does.
                            let total = if *average { total / count } else { total };
                            i64::try_from(total)
                                .map_or(Value::Decimal { unscaled: total, scale: 0 }, Value::Integer)
                        }
                        None => Value::Null,
                    },
                    Some(NumberKind::Decimal(scale)) => match sum.total_i128() {
                        Some(total) => {
                            let unscaled = if *average { divide_rounded(total, count) } else { total };
                            Value::Decimal { unscaled, scale: *scale }
                        }
                        None => Value::Null,
                    },
                }
            }
            Accumulator::Min(value) | Accumulator::Max(value) => value.clone().unwrap_or(Value::Null),
            Accumulator::Percentile { ppm, histogram } => {
                histogram.percentile(f64::from(*ppm) / 1e6).map_or(Value::Null, Value::Double)
            }
        }
    }
}

/// `total / count`, rounded half away from zero.
fn divide_rounded(total: i128, count: i128) -> i128 {
    let (quotient, remainder) = (total / count, total % count);
    if remainder.abs() * 2 >= count {
        quotient + total.signum()
    } else {
        quotient
    }
}
