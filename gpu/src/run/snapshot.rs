//! A runner's operator state as bytes, and back: what an application checkpoints so that a
//! restart resumes its windows exactly (with the input positions the state was taken at, and
//! each output's durable position, both kept by the caller).
//!
//! Byte map (little-endian throughout):
//! ```text
//! magic "MRSNAP" | version u8 (1) | application fingerprint u64 | pump count u32 | pumps
//! pump    := state tag u8, then the state's fields (below)
//! value   := tag u8 | payload (see `put_value`)
//! bytes   := length u32 | that many bytes
//! list    := count u32 | items
//! option  := 0 | 1 item
//! ```
//! The fingerprint is the hash of the application written back as canonical SQL: a snapshot
//! of other code (UpdateApplication changed it) is refused, not misread. Bytes read back pass
//! a bounds check before every field; anything malformed is an error, never a panic.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::{event, Accumulator, Group, Groups, Held, NumberKind, PumpRunner, State, Value};
use crate::sql::plan::{Expr, Window};

/// The GROUP BY keys of an event-time pump.
fn window_keys(pump: &PumpRunner) -> &[Expr] {
    match &pump.pump.query.window {
        Window::Event { keys } => keys,
        _ => &[],
    }
}
use crate::agg::distinct::REGISTERS;
use crate::agg::{Distinct, Sum, SumParts, TopK};

const MAGIC: &[u8; 6] = b"MRSNAP";
const VERSION: u8 = 1;

/// Why stored state could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError(pub String);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the application's stored state: {}", self.0)
    }
}

impl std::error::Error for SnapshotError {}

fn bad<T>(why: impl Into<String>) -> Result<T, SnapshotError> {
    Err(SnapshotError(why.into()))
}

pub(super) fn encode(fingerprint: u64, pumps: &[PumpRunner]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend(fingerprint.to_le_bytes());
    put_u32(&mut out, pumps.len());
    for pump in pumps {
        put_state(&mut out, &pump.state);
        // A stream-to-stream join's kept rows, each side in arrival order.
        if let Some(join) = &pump.join {
            for side in &join.sides {
                put_u32(&mut out, side.order.len());
                for kept in &side.order {
                    out.extend(kept.rowtime_ms.to_le_bytes());
                    put_bytes(&mut out, &kept.key);
                    put_values(&mut out, &kept.values);
                }
            }
        }
    }
    out
}

/// Restores each pump's state from `bytes` (the pumps are fresh, built from the same plan).
pub(super) fn decode(bytes: &[u8], fingerprint: u64, pumps: &mut [PumpRunner]) -> Result<(), SnapshotError> {
    let mut input = Reader { bytes, at: 0 };
    if input.take(MAGIC.len())? != MAGIC {
        return bad("not a snapshot (bad magic)");
    }
    let version = input.u8()?;
    if version != VERSION {
        return bad(format!("version {version}, this server reads {VERSION}"));
    }
    if input.u64()? != fingerprint {
        return bad("it was taken of other application code");
    }
    let count = input.u32()? as usize;
    if count != pumps.len() {
        return bad(format!("{count} pumps stored, the application has {}", pumps.len()));
    }
    for pump in pumps.iter_mut() {
        let state = input.state(pump)?;
        pump.state = state;
        if let Some(join) = pump.join.as_mut() {
            for side in 0..2 {
                let count = input.count(12)?;
                let mut last = i64::MIN;
                for _ in 0..count {
                    let rowtime_ms = input.i64()?;
                    if rowtime_ms < last {
                        return bad("a join's kept rows out of ROWTIME order");
                    }
                    last = rowtime_ms;
                    let key = input.bytes()?.to_vec();
                    let values = input.values()?;
                    join.keep(side, rowtime_ms, key, values);
                }
            }
        }
    }
    if input.at != bytes.len() {
        return bad(format!("{} bytes after the last pump", bytes.len() - input.at));
    }
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    out.extend(u32::try_from(value).expect("fewer than 2^32 items").to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0),
        Value::Boolean(value) => out.extend([1, u8::from(*value)]),
        Value::Integer(value) => {
            out.push(2);
            out.extend(value.to_le_bytes());
        }
        Value::Decimal { unscaled, scale } => {
            out.push(3);
            out.extend(unscaled.to_le_bytes());
            out.push(*scale);
        }
        Value::Double(value) => {
            out.push(4);
            out.extend(value.to_bits().to_le_bytes());
        }
        Value::String(text) => {
            out.push(5);
            put_bytes(out, text.as_bytes());
        }
        Value::Binary(bytes) => {
            out.push(6);
            put_bytes(out, bytes);
        }
        Value::Timestamp(ms) => {
            out.push(7);
            out.extend(ms.to_le_bytes());
        }
        Value::Date(days) => {
            out.push(8);
            out.extend(days.to_le_bytes());
        }
        Value::Time(ms) => {
            out.push(9);
            out.extend(ms.to_le_bytes());
        }
        Value::Interval(ms) => {
            out.push(10);
            out.extend(ms.to_le_bytes());
        }
    }
}

fn put_values(out: &mut Vec<u8>, values: &[Value]) {
    put_u32(out, values.len());
    values.iter().for_each(|value| put_value(out, value));
}

fn put_distinct(out: &mut Vec<u8>, distinct: &Distinct) {
    match distinct {
        Distinct::Exact(set) => {
            out.push(0);
            put_u32(out, set.len());
            set.iter().for_each(|hash| out.extend(hash.to_le_bytes()));
        }
        Distinct::Registers(registers) => {
            out.push(1);
            out.extend_from_slice(&registers[..]);
        }
    }
}

fn put_accumulator(out: &mut Vec<u8>, accumulator: &Accumulator) {
    match accumulator {
        Accumulator::Rows(count) => {
            out.push(0);
            out.extend(count.to_le_bytes());
        }
        Accumulator::Count(count) => {
            out.push(1);
            out.extend(count.to_le_bytes());
        }
        Accumulator::CountDistinct(distinct) => {
            out.push(2);
            put_distinct(out, distinct);
        }
        Accumulator::Sum { average, sum, kind } => {
            out.push(3);
            out.push(u8::from(*average));
            match kind {
                None => out.push(0),
                Some(NumberKind::Integer) => out.push(1),
                Some(NumberKind::Decimal(scale)) => out.extend([2, *scale]),
                Some(NumberKind::Double) => out.push(3),
            }
            let parts = sum.to_parts();
            out.extend(parts.total_low.to_le_bytes());
            out.extend(parts.total_high.to_le_bytes());
            for word in [parts.count, parts.nan, parts.positive, parts.negative] {
                out.extend(word.to_le_bytes());
            }
        }
        Accumulator::Percentile { histogram, .. } => {
            out.push(6);
            let buckets: Vec<(u32, u64)> = histogram.buckets().collect();
            put_u32(out, buckets.len());
            for (bucket, count) in buckets {
                out.extend(bucket.to_le_bytes());
                out.extend(count.to_le_bytes());
            }
        }
        Accumulator::Min(value) | Accumulator::Max(value) => {
            out.push(if matches!(accumulator, Accumulator::Min(_)) { 4 } else { 5 });
            match value {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    put_value(out, value);
                }
            }
        }
    }
}

fn put_group(out: &mut Vec<u8>, group: &Group) {
    put_values(out, &group.keys);
    put_u32(out, group.accumulators.len());
    group.accumulators.iter().for_each(|accumulator| put_accumulator(out, accumulator));
}

fn put_groups(out: &mut Vec<u8>, groups: &Groups) {
    put_u32(out, groups.groups.len());
    groups.groups.iter().for_each(|group| put_group(out, group));
}

fn put_state(out: &mut Vec<u8>, state: &State) {
    match state {
        State::Rows => out.push(0),
        State::Tumbling { open, .. } => {
            out.push(1);
            match open {
                None => out.push(0),
                Some((start, groups)) => {
                    out.push(1);
                    out.extend(start.to_le_bytes());
                    put_u32(out, groups.groups.len());
                    groups.groups.iter().for_each(|group| put_group(out, group));
                }
            }
        }
        State::Sliding { partitions } => {
            out.push(2);
            // In key order, so that equal states give equal bytes.
            let mut keys: Vec<&Vec<u8>> = partitions.keys().collect();
            keys.sort();
            put_u32(out, keys.len());
            for key in keys {
                put_bytes(out, key);
                let held = &partitions[key];
                put_u32(out, held.len());
                for row in held {
                    out.extend(row.rowtime_ms.to_le_bytes());
                    put_values(out, &row.arguments);
                }
            }
        }
        State::Stagger { windows, .. } => {
            out.push(3);
            put_u32(out, windows.len());
            for (opened, key, group) in windows {
                out.extend(opened.to_le_bytes());
                put_bytes(out, key);
                put_group(out, group);
            }
        }
        State::TopK { open, .. } => {
            out.push(4);
            match open {
                None => out.push(0),
                Some((start, top, items)) => {
                    out.push(1);
                    out.extend(start.to_le_bytes());
                    let entries = top.entries();
                    put_u32(out, entries.len());
                    for (item, count) in entries {
                        put_value(out, &items[item]);
                        out.extend(count.to_le_bytes());
                    }
                }
            }
        }
        State::Event(state) => {
            out.push(6);
            for value in [state.watermark_ms, state.max_seen_ms, state.next_start] {
                out.extend(value.to_le_bytes());
            }
            out.extend([u8::from(state.started), u8::from(state.emitted)]);
            out.extend(state.late.to_le_bytes());
            put_u32(out, state.panes.len());
            for (start, groups) in &state.panes {
                out.extend(start.to_le_bytes());
                put_groups(out, groups);
            }
            put_u32(out, state.sessions.len());
            for (partition, sessions) in &state.sessions {
                put_bytes(out, partition);
                put_u32(out, sessions.len());
                for session in sessions {
                    out.extend(session.start.to_le_bytes());
                    out.extend(session.end.to_le_bytes());
                    put_groups(out, &session.groups);
                }
            }
        }
        State::Distinct { open, .. } => {
            out.push(5);
            match open {
                None => out.push(0),
                Some((start, distinct)) => {
                    out.push(1);
                    out.extend(start.to_le_bytes());
                    put_distinct(out, distinct);
                }
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], SnapshotError> {
        if self.bytes.len() - self.at < count {
            return bad(format!("cut short at byte {}", self.at));
        }
        let taken = &self.bytes[self.at..self.at + count];
        self.at += count;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A count of items each at least `item_bytes` long: no more than the bytes left allow
    /// (so that a corrupt count cannot ask for a huge allocation).
    fn count(&mut self, item_bytes: usize) -> Result<usize, SnapshotError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(item_bytes.max(1)) > self.bytes.len() - self.at {
            return bad(format!("a count of {count} at byte {} is past the end", self.at));
        }
        Ok(count)
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let length = self.count(1)?;
        self.take(length)
    }

    fn flag(&mut self) -> Result<bool, SnapshotError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => bad(format!("a flag of {other} at byte {}", self.at - 1)),
        }
    }

    fn value(&mut self) -> Result<Value, SnapshotError> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Boolean(self.flag()?),
            2 => Value::Integer(self.i64()?),
            3 => Value::Decimal { unscaled: i128::from_le_bytes(self.array()?), scale: self.u8()? },
            4 => Value::Double(f64::from_bits(self.u64()?)),
            5 => match std::str::from_utf8(self.bytes()?) {
                Ok(text) => Value::String(text.to_string()),
                Err(_) => return bad("a string that is not UTF-8"),
            },
            6 => Value::Binary(self.bytes()?.to_vec()),
            7 => Value::Timestamp(self.i64()?),
            8 => Value::Date(self.i64()?),
            9 => Value::Time(self.i64()?),
            10 => Value::Interval(self.i64()?),
            tag => return bad(format!("a value tag of {tag} at byte {}", self.at - 1)),
        })
    }

    fn values(&mut self) -> Result<Vec<Value>, SnapshotError> {
        let count = self.count(1)?;
        (0..count).map(|_| self.value()).collect()
    }

    fn distinct(&mut self) -> Result<Distinct, SnapshotError> {
        Ok(if self.flag()? {
            let mut registers = Box::new([0u8; REGISTERS]);
            registers.copy_from_slice(self.take(REGISTERS)?);
            Distinct::Registers(registers)
        } else {
            let count = self.count(8)?;
            let set: BTreeSet<u64> = (0..count).map(|_| self.u64()).collect::<Result<_, _>>()?;
            Distinct::Exact(set)
        })
    }

    fn accumulator(&mut self) -> Result<Accumulator, SnapshotError> {
        Ok(match self.u8()? {
            0 => Accumulator::Rows(self.u64()?),
            1 => Accumulator::Count(self.u64()?),
            2 => Accumulator::CountDistinct(self.distinct()?),
            3 => {
                let average = self.flag()?;
                let kind = match self.u8()? {
                    0 => None,
                    1 => Some(NumberKind::Integer),
                    2 => Some(NumberKind::Decimal(self.u8()?)),
                    3 => Some(NumberKind::Double),
                    other => return bad(format!("a number kind of {other}")),
                };
                let parts = SumParts {
                    total_low: u128::from_le_bytes(self.array()?),
                    total_high: self.i64()?,
                    count: self.u64()?,
                    nan: self.u64()?,
                    positive: self.u64()?,
                    negative: self.u64()?,
                };
                Accumulator::Sum { average, sum: Sum::from_parts(parts), kind }
            }
            tag @ (4 | 5) => {
                let value = if self.flag()? { Some(self.value()?) } else { None };
                if tag == 4 {
                    Accumulator::Min(value)
                } else {
                    Accumulator::Max(value)
                }
            }
            6 => {
                let count = self.count(12)?;
                let mut histogram = crate::agg::Histogram::default();
                let mut last = None;
                for _ in 0..count {
                    let bucket = self.u32()?;
                    let times = self.u64()?;
                    if times == 0 || last.is_some_and(|last| bucket <= last) {
                        return bad("a histogram's buckets out of order or empty");
                    }
                    last = Some(bucket);
                    histogram.add_bucket(bucket, times);
                }
                // The fraction is the plan's (the group check takes it from the template).
                Accumulator::Percentile { ppm: 0, histogram }
            }
            tag => return bad(format!("an accumulator tag of {tag}")),
        })
    }

    /// A group whose accumulators must be of the kinds `template` (fresh from the plan) has.
    fn group(&mut self, template: &[Accumulator]) -> Result<Group, SnapshotError> {
        let keys = self.values()?;
        let count = self.count(1)?;
        if count != template.len() {
            return bad(format!("a group of {count} aggregates, the pump has {}", template.len()));
        }
        let mut accumulators = Vec::with_capacity(count);
        for expected in template {
            let mut accumulator = self.accumulator()?;
            if std::mem::discriminant(&accumulator) != std::mem::discriminant(expected) {
                return bad("an aggregate of another kind than the pump's");
            }
            if let (Accumulator::Percentile { ppm, .. }, Accumulator::Percentile { ppm: planned, .. }) =
                (&mut accumulator, expected)
            {
                *ppm = *planned;
            }
            accumulators.push(accumulator);
        }
        Ok(Group { keys, accumulators })
    }

    fn groups(&mut self, template: &[Accumulator]) -> Result<Groups, SnapshotError> {
        let count = self.count(1)?;
        let mut groups = Groups::default();
        for _ in 0..count {
            let group = self.group(template)?;
            let bytes = super::group_bytes(&group.keys);
            if groups.index.insert(bytes, groups.groups.len()).is_some() {
                return bad("a group stored twice");
            }
            groups.groups.push(group);
        }
        Ok(groups)
    }

    /// The state of `pump` (its kind and settings come from the plan; only what was
    /// accumulated is read, and checked against the pump's aggregates).
    fn state(&mut self, pump: &PumpRunner) -> Result<State, SnapshotError> {
        let tag = self.u8()?;
        let template: Vec<Accumulator> = pump.aggregates.iter().map(Accumulator::new).collect();
        Ok(match (tag, &pump.state) {
            (0, State::Rows) => State::Rows,
            (1, State::Tumbling { size_ms, .. }) => {
                let open = if self.flag()? {
                    let start = self.i64()?;
                    let count = self.count(1)?;
                    let mut groups = Groups::default();
                    for _ in 0..count {
                        let group = self.group(&template)?;
                        let bytes = super::group_bytes(&group.keys);
                        if groups.index.insert(bytes, groups.groups.len()).is_some() {
                            return bad("a group stored twice");
                        }
                        groups.groups.push(group);
                    }
                    Some((start, groups))
                } else {
                    None
                };
                State::Tumbling { size_ms: *size_ms, open }
            }
            (2, State::Sliding { .. }) => {
                let count = self.count(1)?;
                let mut partitions = super::FastMap::with_capacity_and_hasher(count, Default::default());
                for _ in 0..count {
                    let key = self.bytes()?.to_vec();
                    let rows = self.count(8)?;
                    let mut held = VecDeque::with_capacity(rows);
                    for _ in 0..rows {
                        let rowtime_ms = self.i64()?;
                        let arguments = self.values()?;
                        if arguments.len() != template.len() {
                            return bad("a held row with another number of aggregate arguments");
                        }
                        held.push_back(Held { rowtime_ms, arguments });
                    }
                    partitions.insert(key, held);
                }
                State::Sliding { partitions }
            }
            (3, State::Stagger { range_ms, .. }) => {
                let count = self.count(8)?;
                let mut windows = Vec::with_capacity(count);
                for _ in 0..count {
                    let opened = self.i64()?;
                    let key = self.bytes()?.to_vec();
                    let group = self.group(&template)?;
                    if key != super::group_bytes(&group.keys) {
                        return bad("a stagger window whose key is not its group's");
                    }
                    windows.push((opened, key, group));
                }
                State::Stagger { range_ms: *range_ms, windows }
            }
            (4, State::TopK { k, size_ms, column, .. }) => {
                let open = if self.flag()? {
                    let start = self.i64()?;
                    let count = self.count(9)?;
                    let (mut top, mut items) = (TopK::default(), HashMap::with_capacity(count));
                    for _ in 0..count {
                        let item = self.value()?;
                        let bytes = item.canonical_bytes();
                        top.add_count(&bytes, self.u64()?);
                        items.insert(bytes, item);
                    }
                    Some((start, top, items))
                } else {
                    None
                };
                State::TopK { k: *k, size_ms: *size_ms, column: *column, open }
            }
            (6, State::Event(fresh)) => {
                let mut state = event::EventState::new(&pump.pump.query.source, window_keys(pump));
                state.watermark_ms = self.i64()?;
                state.max_seen_ms = self.i64()?;
                state.next_start = self.i64()?;
                state.started = self.flag()?;
                state.emitted = self.flag()?;
                state.late = self.u64()?;
                let panes = self.count(12)?;
                for _ in 0..panes {
                    let start = self.i64()?;
                    let groups = self.groups(&template)?;
                    if state.panes.insert(start, groups).is_some() {
                        return bad("a pane stored twice");
                    }
                }
                let partitions = self.count(8)?;
                for _ in 0..partitions {
                    let partition = self.bytes()?.to_vec();
                    let count = self.count(20)?;
                    let mut sessions = Vec::with_capacity(count);
                    for _ in 0..count {
                        let start = self.i64()?;
                        let end = self.i64()?;
                        if end < start
                            || sessions.last().is_some_and(|last: &event::Session| last.start > start)
                        {
                            return bad("sessions out of order");
                        }
                        sessions.push(event::Session { start, end, groups: self.groups(&template)? });
                    }
                    if state.sessions.insert(partition, sessions).is_some() {
                        return bad("a session partition stored twice");
                    }
                }
                let _ = fresh;
                State::Event(Box::new(state))
            }
            (5, State::Distinct { size_ms, column, .. }) => {
                let open = if self.flag()? { Some((self.i64()?, self.distinct()?)) } else { None };
                State::Distinct { size_ms: *size_ms, column: *column, open }
            }
            (tag, _) => return bad(format!("a pump state of kind {tag} where the plan has another")),
        })
    }
}
