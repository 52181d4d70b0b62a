//! A stream-to-stream join (`FROM a JOIN b OVER (RANGE INTERVAL r PRECEDING) ON …`): each
//! side keeps its rows of the last `r` of ROWTIME, and a row arriving on one side meets the
//! kept rows of the other. KDA joins a left row with the right rows in the range before it;
//! here rows of either side also meet rows of the other that arrive after them within the
//! range, so that rows with the same ROWTIME (windows two pumps close at one watermark) meet
//! whichever pump put them out first.
//!
//! The ON condition's equalities between a left and a right expression are hash keys: a row
//! is compared only with the other side's rows of the same key values (numbers compared by
//! value, as `=` does), then the whole condition decides. A NULL key meets nothing.

use std::collections::{HashMap, VecDeque};

use super::eval::{Env, Evaluator};
use super::value::ValueError;
use super::{group_bytes, Value};
use crate::sql::plan::{BinaryOp, Expr};

/// One kept row: its id (arrival order), ROWTIME, key bytes and values.
#[derive(Clone)]
pub(super) struct Kept {
    pub id: u64,
    pub rowtime_ms: i64,
    pub key: Vec<u8>,
    pub values: Vec<Value>,
}

#[derive(Default)]
pub(super) struct Side {
    /// Every kept row, in arrival order (evicted from the front).
    pub order: VecDeque<Kept>,
    /// Key → ids of the kept rows with it, in arrival order.
    pub buckets: HashMap<Vec<u8>, VecDeque<u64>>,
}

pub(super) struct JoinState {
    pub range_ms: u64,
    /// (left expression, right expression) of each equality of ON.
    pub keys: Vec<(Expr, Expr)>,
    pub sides: [Side; 2],
    pub next_id: u64,
}

/// Environment of one side's row alone (for its key expressions).
struct SideEnv<'a> {
    side: usize,
    values: &'a [Value],
    rowtime_ms: i64,
}

impl Env for SideEnv<'_> {
    fn column(&self, relation: usize, index: usize) -> Value {
        if relation == self.side {
            self.values.get(index).cloned().unwrap_or(Value::Null)
        } else {
            Value::Null
        }
    }

    fn rowtime(&self) -> Value {
        Value::Timestamp(self.rowtime_ms)
    }

    fn now_ms(&self) -> i64 {
        0
    }

    fn substitute(&self, _: &Expr) -> Option<Value> {
        None
    }
}

/// The relations an expression reads (bit 0: relation 0, bit 1: relation 1, bit 2: ROWTIME or
/// the output time).
fn reads(expr: &Expr) -> u8 {
    let mut mask = 0;
    expr.visit(&mut |inner| match inner {
        Expr::Column { relation, .. } => mask |= 1 << (*relation).min(1),
        Expr::Rowtime | Expr::CurrentRowTimestamp => mask |= 4,
        _ => {}
    });
    mask
}

/// The equalities of `on`'s top-level conjunction that compare a left expression with a
/// right one.
pub(super) fn equalities(on: &Expr) -> Vec<(Expr, Expr)> {
    let mut conjuncts = vec![on];
    let mut keys = Vec::new();
    while let Some(expr) = conjuncts.pop() {
        match expr {
            Expr::Binary { op: BinaryOp::And, left, right } => {
                conjuncts.push(right);
                conjuncts.push(left);
            }
            Expr::Binary { op: BinaryOp::Eq, left, right } => match (reads(left), reads(right)) {
                (1, 2) => keys.push(((**left).clone(), (**right).clone())),
                (2, 1) => keys.push(((**right).clone(), (**left).clone())),
                _ => {}
            },
            _ => {}
        }
    }
    keys
}

impl JoinState {
    pub fn new(on: &Expr, range_ms: u64) -> JoinState {
        JoinState { range_ms, keys: equalities(on), sides: [Side::default(), Side::default()], next_id: 0 }
    }

    /// The key of a row of `side`; `None` when a key value is NULL (it meets nothing).
    pub fn key(
        &self,
        evaluator: &mut Evaluator,
        side: usize,
        values: &[Value],
        rowtime_ms: i64,
    ) -> Result<Option<Vec<u8>>, ValueError> {
        let env = SideEnv { side, values, rowtime_ms };
        let mut key = Vec::with_capacity(self.keys.len());
        for (left, right) in &self.keys {
            let value = evaluator.eval(if side == 0 { left } else { right }, &env)?;
            if value.is_null() {
                return Ok(None);
            }
            key.push(value);
        }
        Ok(Some(group_bytes(&key)))
    }

    /// Drops the rows of `side` that fell out of the range of a row at `rowtime_ms` of the
    /// other side (later rows of that side come later still).
    pub fn evict(&mut self, side: usize, rowtime_ms: i64) {
        let threshold = rowtime_ms.saturating_sub(self.range_ms as i64);
        let kept = &mut self.sides[side];
        while kept.order.front().is_some_and(|row| row.rowtime_ms < threshold) {
            let row = kept.order.pop_front().expect("a front row");
            if let Some(bucket) = kept.buckets.get_mut(&row.key) {
                if bucket.front() == Some(&row.id) {
                    bucket.pop_front();
                }
                if bucket.is_empty() {
                    kept.buckets.remove(&row.key);
                }
            }
        }
    }

    /// The kept rows of `side` with `key`, oldest first.
    pub fn matches(&self, side: usize, key: &[u8]) -> Vec<&Kept> {
        let kept = &self.sides[side];
        let Some(bucket) = kept.buckets.get(key) else { return Vec::new() };
        let Some(first) = kept.order.front().map(|row| row.id) else { return Vec::new() };
        bucket.iter().filter_map(|id| kept.order.get((id - first) as usize)).collect()
    }

    pub fn keep(&mut self, side: usize, rowtime_ms: i64, key: Vec<u8>, values: Vec<Value>) {
        let id = self.next_id;
        self.next_id += 1;
        let kept = &mut self.sides[side];
        // Ids are consecutive within a side so that `matches` finds a row by offset.
        let id = kept.order.back().map_or(id, |last| last.id + 1);
        kept.buckets.entry(key.clone()).or_default().push_back(id);
        kept.order.push_back(Kept { id, rowtime_ms, key, values });
    }
}
