//! Windows on event time: the Flink-style dialect's `TUMBLE`, `HOP` and `SESSION` table
//! functions over a TIMESTAMP column (or ROWTIME).
//!
//! - **Watermark.** The latest event time seen minus the stream's declared delay (`WATERMARK
//!   FOR t AS t - INTERVAL …`; 0 when none is declared). It only moves forward. On ROWTIME, the
//!   rowtime bound moves it too, so idle inputs close windows; on a column, as in Flink, only
//!   rows move it.
//! - **Tumbling and hopping windows** aggregate into panes of gcd(size, slide)
//!   ([`crate::pane::Hop`]): a row goes into exactly one pane, and a window is its panes
//!   merged, never a copy of the row per window. A window is put out once the watermark
//!   reaches its end, windows in order of their start; a pane is dropped once no window left
//!   to put out needs it.
//! - **Session windows** per partition (`PARTITION BY`): a row opens `[t, t + gap)`, and
//!   sessions it overlaps merge into one. A session is put out once the watermark reaches its
//!   end (its last row + gap), sessions in order of (end, start, partition).
//! - **Late rows**: a row whose every window has already been put out (a window's end at or
//!   below the watermark) is late: counted and refused with an error (the application's error
//!   stream gets it). A row some of whose windows are still open goes into those.

use std::collections::BTreeMap;

use super::value::{timestamp_text, ValueError};
use super::{group_bytes, Accumulator, Group, Groups, Value};
use crate::pane::Hop;
use crate::sql::plan::{EventWindow, Expr, Source, TimeColumn};

pub(super) struct EventState {
    pub window: EventWindow,
    /// Tumbling and hopping windows' panes (`None` for sessions).
    pub hop: Option<Hop>,
    pub delay_ms: u64,
    pub time: TimeColumn,
    /// Which window column (0 start, 1 end, 2 time) each GROUP BY key is, if any.
    pub window_keys: Vec<Option<usize>>,
    pub watermark_ms: i64,
    pub max_seen_ms: i64,
    /// The start of the next tumbling or hopping window to put out (once `started`); it only
    /// moves back before the first window is out.
    pub next_start: i64,
    pub started: bool,
    pub emitted: bool,
    /// Pane start → its groups.
    pub panes: BTreeMap<i64, Groups>,
    /// Partition → its open sessions, by start.
    pub sessions: BTreeMap<Vec<u8>, Vec<Session>>,
    pub late: u64,
    /// The GPU path: rows' values staged for the kernels (tumbling and hopping windows).
    #[cfg(feature = "device")]
    pub staging: Option<super::staging::Staging>,
}

pub(super) struct Session {
    pub start: i64,
    pub end: i64,
    pub groups: Groups,
}

/// A window closed: its start and end, and its groups in the order they first appeared.
pub(super) struct Closed {
    pub start: i64,
    pub end: i64,
    pub groups: Groups,
}

impl EventState {
    pub fn new(source: &Source, keys: &[Expr]) -> EventState {
        let Source::Windowed { width, time, window, delay_ms, .. } = source else {
            unreachable!("event-time windows read a window table function")
        };
        let hop = match window {
            EventWindow::Tumble { size_ms } => Some(Hop::tumbling(*size_ms).expect("the plan has a size")),
            EventWindow::Hop { slide_ms, size_ms } => {
                Some(Hop::new(*size_ms, *slide_ms).expect("the plan has both"))
            }
            EventWindow::Session { .. } => None,
        };
        let window_keys = keys
            .iter()
            .map(|key| match key {
                Expr::Column { relation: 0, index } if index >= width => Some(index - width),
                _ => None,
            })
            .collect();
        EventState {
            window: *window,
            hop,
            delay_ms: *delay_ms,
            time: *time,
            window_keys,
            watermark_ms: i64::MIN,
            max_seen_ms: i64::MIN,
            next_start: i64::MIN,
            started: false,
            emitted: false,
            panes: BTreeMap::new(),
            sessions: BTreeMap::new(),
            late: 0,
            #[cfg(feature = "device")]
            staging: None,
        }
    }

    /// Hands staged values to the GPU and merges the results (before windows close or the
    /// state is saved).
    pub fn flush_staged(&mut self) -> Result<(), ValueError> {
        #[cfg(feature = "device")]
        if let Some(staging) = self.staging.as_mut() {
            staging.flush(&mut self.panes)?;
        }
        Ok(())
    }

    fn size_slide(&self) -> (i64, i64) {
        match self.window {
            EventWindow::Tumble { size_ms } => (size_ms as i64, size_ms as i64),
            EventWindow::Hop { slide_ms, size_ms } => (size_ms as i64, slide_ms as i64),
            EventWindow::Session { gap_ms } => (gap_ms as i64, gap_ms as i64),
        }
    }

    /// A row's event time.
    pub fn time_of(&self, values: &[Value], rowtime_ms: i64) -> Result<i64, ValueError> {
        match self.time {
            TimeColumn::Rowtime => Ok(rowtime_ms),
            TimeColumn::Column(index) => match values.get(index) {
                Some(Value::Timestamp(ms)) => Ok(*ms),
                Some(Value::Null) | None => Err(ValueError("a row's event time is NULL".into())),
                Some(other) => {
                    Err(ValueError(format!("a row's event time is {}, not a TIMESTAMP", other.type_name())))
                }
            },
        }
    }

    /// Refuses a row whose every window is out already.
    pub fn check_late(&mut self, time_ms: i64) -> Result<(), ValueError> {
        let (size, slide) = self.size_slide();
        let last_end = match self.window {
            EventWindow::Session { .. } => time_ms.saturating_add(size),
            _ => time_ms.div_euclid(slide) * slide + size,
        };
        if last_end <= self.watermark_ms {
            self.late += 1;
            return Err(ValueError(format!(
                "late row: event time {} is behind the watermark {}",
                timestamp_text(time_ms),
                timestamp_text(self.watermark_ms)
            )));
        }
        Ok(())
    }

    /// Adds a row's keys and aggregate arguments at `time_ms` (`partition`: a session's).
    pub fn add(
        &mut self,
        time_ms: i64,
        partition: Vec<u8>,
        keys: Vec<Value>,
        arguments: &[Value],
        aggregates: &[Expr],
    ) -> Result<(), ValueError> {
        self.max_seen_ms = self.max_seen_ms.max(time_ms);
        match self.hop {
            Some(hop) => {
                let pane_ms = hop.pane_ms() as i64;
                let pane = hop.pane_of(time_ms) * pane_ms;
                let groups = self.panes.entry(pane).or_default();
                let index = groups.index_of(keys, aggregates);
                let accumulators = &mut groups.groups[index].accumulators;
                #[cfg(feature = "device")]
                let (staged, full) = match self.staging.as_mut() {
                    Some(staging) => (true, staging.add(pane, index, accumulators, arguments)?),
                    None => (false, false),
                };
                #[cfg(not(feature = "device"))]
                let (staged, full) = (false, false);
                if !staged {
                    for (accumulator, argument) in accumulators.iter_mut().zip(arguments) {
                        accumulator.add(argument)?;
                    }
                }
                if full {
                    self.flush_staged()?;
                }
                if let Some(first) = hop.windows_of(time_ms).next() {
                    if !self.started || (!self.emitted && first < self.next_start) {
                        self.next_start = if self.started { self.next_start.min(first) } else { first };
                        self.started = true;
                    }
                }
            }
            None => {
                let gap = self.size_slide().0;
                let mut groups = Groups::default();
                let group = groups.group(keys, aggregates);
                for (accumulator, argument) in group.accumulators.iter_mut().zip(arguments) {
                    accumulator.add(argument)?;
                }
                let mut session = Session { start: time_ms, end: time_ms.saturating_add(gap), groups };
                let sessions = self.sessions.entry(partition).or_default();
                // Merge every session the new one overlaps, earliest first.
                let mut merged =
                    Session { start: session.start, end: session.end, groups: Groups::default() };
                let mut kept = Vec::with_capacity(sessions.len() + 1);
                let mut absorbed = Vec::new();
                for existing in sessions.drain(..) {
                    if existing.start < session.end && session.start < existing.end {
                        merged.start = merged.start.min(existing.start);
                        merged.end = merged.end.max(existing.end);
                        absorbed.push(existing);
                    } else {
                        kept.push(existing);
                    }
                }
                for existing in &absorbed {
                    merged.groups.absorb(&existing.groups)?;
                }
                merged.groups.absorb(&session.groups)?;
                session = merged;
                let at = kept.partition_point(|existing| existing.start < session.start);
                kept.insert(at, session);
                *sessions = kept;
            }
        }
        Ok(())
    }

    /// Moves the watermark to `candidate_ms` (if later) and returns the windows it closes,
    /// in the order they are put out.
    pub fn close(&mut self, candidate_ms: i64) -> Result<Vec<Closed>, ValueError> {
        if candidate_ms <= self.watermark_ms {
            return Ok(Vec::new());
        }
        self.flush_staged()?;
        self.watermark_ms = candidate_ms;
        let watermark = candidate_ms;
        let mut closed = Vec::new();
        match self.hop {
            Some(hop) => {
                let (size, slide) = self.size_slide();
                while self.started && self.next_start.saturating_add(size) <= watermark {
                    let Some((&first_pane, _)) = self.panes.iter().next() else {
                        // Nothing held: the next window to put out is the first one still open.
                        let open = (watermark - size).div_euclid(slide) * slide + slide;
                        self.next_start = self.next_start.max(open);
                        break;
                    };
                    let start = self.next_start;
                    if first_pane >= start + size {
                        // An empty stretch: jump to the first window holding the first pane.
                        let first = hop.windows_of(first_pane).next().unwrap_or(start + slide);
                        self.next_start = first.max(start + slide);
                        continue;
                    }
                    let mut groups = Groups::default();
                    for (_, pane) in self.panes.range(start..start + size) {
                        groups.absorb(pane)?;
                    }
                    self.next_start = start + slide;
                    self.emitted = true;
                    // Panes before the next window's start are needed by no window left.
                    let needed = self.panes.split_off(&self.next_start);
                    self.panes = needed;
                    if !groups.groups.is_empty() {
                        closed.push(Closed { start, end: start + size, groups });
                    }
                }
            }
            None => {
                let mut due: Vec<(i64, i64, Vec<u8>)> = Vec::new();
                for (partition, sessions) in &self.sessions {
                    for session in sessions.iter().filter(|session| session.end <= watermark) {
                        due.push((session.end, session.start, partition.clone()));
                    }
                }
                due.sort();
                for (end, start, partition) in due {
                    let sessions = self.sessions.get_mut(&partition).expect("a partition with a due session");
                    let at =
                        sessions.iter().position(|session| session.start == start).expect("the due session");
                    let session = sessions.remove(at);
                    if sessions.is_empty() {
                        self.sessions.remove(&partition);
                    }
                    closed.push(Closed { start, end, groups: session.groups });
                }
            }
        }
        Ok(closed)
    }

    /// A closed window's group keys, with the window's values in its window-column keys.
    pub fn window_keys(&self, keys: &mut [Value], start: i64, end: i64) {
        for (key, window) in keys.iter_mut().zip(&self.window_keys) {
            match window {
                Some(0) => *key = Value::Timestamp(start),
                Some(1) => *key = Value::Timestamp(end),
                Some(_) => *key = Value::Timestamp(end - 1),
                None => {}
            }
        }
    }
}

impl Groups {
    /// Merges `other`'s groups into these: a group both have adds up, a new one follows.
    pub(super) fn absorb(&mut self, other: &Groups) -> Result<(), ValueError> {
        for group in &other.groups {
            let bytes = group_bytes(&group.keys);
            match self.index.get(&bytes) {
                Some(&index) => {
                    for (mine, theirs) in self.groups[index].accumulators.iter_mut().zip(&group.accumulators)
                    {
                        mine.merge(theirs)?;
                    }
                }
                None => {
                    self.index.insert(bytes, self.groups.len());
                    self.groups
                        .push(Group { keys: group.keys.clone(), accumulators: group.accumulators.clone() });
                }
            }
        }
        Ok(())
    }
}

impl Accumulator {
    /// Adds another accumulator of the same aggregate (a pane's, a merged session's).
    pub(super) fn merge(&mut self, other: &Accumulator) -> Result<(), ValueError> {
        use crate::agg::Merge;
        match (self, other) {
            (Accumulator::Rows(mine), Accumulator::Rows(theirs))
            | (Accumulator::Count(mine), Accumulator::Count(theirs)) => *mine += theirs,
            (Accumulator::CountDistinct(mine), Accumulator::CountDistinct(theirs)) => mine.merge(theirs),
            (
                Accumulator::Sum { sum, kind, .. },
                Accumulator::Sum { sum: other_sum, kind: other_kind, .. },
            ) => {
                match (*kind, *other_kind) {
                    (_, None) => return Ok(()),
                    (None, Some(found)) => *kind = Some(found),
                    (Some(mine), Some(theirs)) if mine != theirs => {
                        return Err(ValueError(
                            "SUM/AVG mixes kinds of numbers across windows; CAST the argument".into(),
                        ))
                    }
                    _ => {}
                }
                sum.merge(other_sum);
            }
            (Accumulator::Min(least), Accumulator::Min(Some(value))) => {
                if least.as_ref().is_none_or(|least| value.compare(least) == Some(std::cmp::Ordering::Less)) {
                    *least = Some(value.clone());
                }
            }
            (Accumulator::Max(most), Accumulator::Max(Some(value))) => {
                if most.as_ref().is_none_or(|most| value.compare(most) == Some(std::cmp::Ordering::Greater)) {
                    *most = Some(value.clone());
                }
            }
            (Accumulator::Min(_), Accumulator::Min(None)) | (Accumulator::Max(_), Accumulator::Max(None)) => {
            }
            (
                Accumulator::Percentile { histogram, .. },
                Accumulator::Percentile { histogram: theirs, .. },
            ) => histogram.merge(theirs),
            _ => unreachable!("accumulators of one aggregate are of one kind"),
        }
        Ok(())
    }
}
