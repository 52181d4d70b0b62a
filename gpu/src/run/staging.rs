//! The GPU path of event-time windows: instead of adding each row's value to its group's
//! accumulator, the runner stages (slot, value) columns per aggregate, a slot being one group
//! of one pane, and hands them to the wgpu kernels in batches of at least [`BATCH_BYTES`]
//! (or when a window must close, or the state is snapshotted): COUNT, SUM and AVG of integers
//! by `pane_sum`, MIN and MAX of integers by `pane_minmax`. The kernels compute the same
//! integer state the CPU folds ([`crate::agg::Sum`], [`crate::agg::MinMax`]), so the windows
//! put out are bit for bit the CPU runner's. Values the kernels do not take (NULL, non-integer,
//! COUNT DISTINCT) are added on the CPU as before: accumulators merge exactly either way.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use super::value::ValueError;
use super::{Accumulator, Groups, NumberKind, Value};
use crate::agg::{i64_of_key, Merge};
use crate::device::Gpu;
use crate::sql::plan::{AggregateFunction, Expr};

/// Staged bytes (4 for the slot, 8 for the value) that make a batch (in tests, a few values:
/// batches fill up mid-window there too).
pub const BATCH_BYTES: usize = if cfg!(test) { 240 } else { 1 << 20 };
/// A batch flushed before it is full (a window closing, a snapshot) smaller than this is
/// folded on the CPU: a dispatch costs more than the few values it would add (the answer is
/// the same either way).
pub const GPU_MIN_BYTES: usize = BATCH_BYTES / 16;

/// The process's GPU, opened once; `None` when there is no adapter.
pub fn shared() -> Option<Arc<Gpu>> {
    static GPU: OnceLock<Option<Arc<Gpu>>> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::open() {
        Ok(gpu) => gpu.map(Arc::new),
        Err(error) => {
            eprintln!("millrace: analytics: no GPU: {error}");
            None
        }
    })
    .clone()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// COUNT(*), COUNT(x), SUM and AVG: `pane_sum` (the count and the sum of each slot).
    Sums,
    /// MIN and MAX: `pane_minmax`.
    Extremes,
}

pub(super) struct Staging {
    gpu: Arc<Gpu>,
    /// Per aggregate: the kernel, if the kernels take it.
    kernels: Vec<Option<Kernel>>,
    /// Slot → (pane start, group index in the pane).
    slots: Vec<(i64, usize)>,
    slot_of: HashMap<(i64, usize), u32>,
    /// Per aggregate: the staged slots and values.
    columns: Vec<(Vec<u32>, Vec<i64>)>,
    staged_bytes: usize,
}

impl Staging {
    pub fn new(gpu: Arc<Gpu>, aggregates: &[Expr]) -> Staging {
        let kernels = aggregates
            .iter()
            .map(|aggregate| match aggregate {
                Expr::Aggregate { distinct: true, .. } => None,
                Expr::Aggregate { function, .. } => match function {
                    AggregateFunction::CountRows
                    | AggregateFunction::Count
                    | AggregateFunction::Sum
                    | AggregateFunction::Avg => Some(Kernel::Sums),
                    AggregateFunction::Min | AggregateFunction::Max => Some(Kernel::Extremes),
                    AggregateFunction::Percentile { .. } => None,
                },
                _ => None,
            })
            .collect::<Vec<_>>();
        let columns = kernels.iter().map(|_| (Vec::new(), Vec::new())).collect();
        Staging { gpu, kernels, slots: Vec::new(), slot_of: HashMap::new(), columns, staged_bytes: 0 }
    }

    /// Whether any aggregate goes to the kernels (else staging is pointless).
    pub fn useful(&self) -> bool {
        self.kernels.iter().any(Option::is_some)
    }

    /// Stages what the kernels take of one row's arguments for the group `index` of the pane
    /// starting at `pane`; adds the rest to the accumulators on the CPU. `true` when a batch is
    /// full.
    pub fn add(
        &mut self,
        pane: i64,
        index: usize,
        accumulators: &mut [Accumulator],
        arguments: &[Value],
    ) -> Result<bool, ValueError> {
        let next = self.slots.len() as u32;
        let slot = *self.slot_of.entry((pane, index)).or_insert(next);
        if slot == next {
            self.slots.push((pane, index));
        }
        for (((kernel, accumulator), argument), column) in
            self.kernels.iter().zip(accumulators.iter_mut()).zip(arguments).zip(self.columns.iter_mut())
        {
            let staged = match (kernel, &mut *accumulator, argument) {
                // COUNT(*): every row; the value is irrelevant.
                (Some(Kernel::Sums), Accumulator::Rows(_), _) => Some(0),
                (Some(Kernel::Sums), Accumulator::Count(_), value) if !value.is_null() => Some(0),
                (Some(Kernel::Sums), Accumulator::Sum { kind, .. }, Value::Integer(value))
                    if matches!(kind, None | Some(NumberKind::Integer)) =>
                {
                    // The kind is fixed by the first value, as on the CPU.
                    *kind = Some(NumberKind::Integer);
                    Some(*value)
                }
                (
                    Some(Kernel::Extremes),
                    Accumulator::Min(_) | Accumulator::Max(_),
                    Value::Integer(value),
                ) => Some(*value),
                _ => None,
            };
            match staged {
                Some(value) => {
                    column.0.push(slot);
                    column.1.push(value);
                    self.staged_bytes += 12;
                }
                None => accumulator.add(argument)?,
            }
        }
        Ok(self.staged_bytes >= BATCH_BYTES)
    }

    /// Runs the staged columns on the GPU and merges each slot's result into its group.
    pub fn flush(&mut self, panes: &mut BTreeMap<i64, Groups>) -> Result<(), ValueError> {
        if self.slots.is_empty() {
            return Ok(());
        }
        let slot_count = self.slots.len();
        let on_gpu = self.staged_bytes >= GPU_MIN_BYTES;
        for (aggregate, (kernel, column)) in self.kernels.iter().zip(self.columns.iter_mut()).enumerate() {
            let (slots, values) = (std::mem::take(&mut column.0), std::mem::take(&mut column.1));
            if slots.is_empty() {
                continue;
            }
            // A GPU that fails (a lost device) leaves the batch to the CPU: nothing staged is lost.
            let warn = |error: crate::device::GpuError| {
                eprintln!("millrace: analytics: the GPU failed ({error}); this batch runs on the CPU");
            };
            match kernel {
                Some(Kernel::Sums) => {
                    let on_device = if on_gpu {
                        self.gpu.pane_sums(&slots, &values, slot_count).map_err(warn).ok()
                    } else {
                        None
                    };
                    let sums = on_device.unwrap_or_else(|| {
                        let mut sums = vec![crate::agg::Sum::default(); slot_count];
                        for (slot, value) in slots.iter().zip(&values) {
                            sums[*slot as usize].add_i64(*value);
                        }
                        sums
                    });
                    for (sum, (pane, index)) in sums.iter().zip(&self.slots) {
                        if sum.count() == 0 {
                            continue;
                        }
                        let accumulator = accumulator_of(panes, *pane, *index, aggregate)?;
                        match accumulator {
                            Accumulator::Rows(count) | Accumulator::Count(count) => *count += sum.count(),
                            Accumulator::Sum { sum: total, .. } => total.merge(sum),
                            _ => return Err(ValueError("a staged sum for another aggregate".into())),
                        }
                    }
                }
                Some(Kernel::Extremes) => {
                    let on_device = if on_gpu {
                        self.gpu.pane_extremes(&slots, &values, slot_count).map_err(warn).ok()
                    } else {
                        None
                    };
                    let extremes = on_device.unwrap_or_else(|| {
                        let mut extremes = vec![crate::agg::MinMax::default(); slot_count];
                        for (slot, value) in slots.iter().zip(&values) {
                            extremes[*slot as usize].add_i64(*value);
                        }
                        extremes
                    });
                    for (extreme, (pane, index)) in extremes.iter().zip(&self.slots) {
                        let Some((low, high)) = extreme.keys() else { continue };
                        let accumulator = accumulator_of(panes, *pane, *index, aggregate)?;
                        match accumulator {
                            Accumulator::Min(least) => {
                                let value = i64_of_key(low);
                                if least.as_ref().is_none_or(|least| {
                                    Value::Integer(value).compare(least) == Some(std::cmp::Ordering::Less)
                                }) {
                                    *least = Some(Value::Integer(value));
                                }
                            }
                            Accumulator::Max(most) => {
                                let value = i64_of_key(high);
                                if most.as_ref().is_none_or(|most| {
                                    Value::Integer(value).compare(most) == Some(std::cmp::Ordering::Greater)
                                }) {
                                    *most = Some(Value::Integer(value));
                                }
                            }
                            _ => return Err(ValueError("a staged extreme for another aggregate".into())),
                        }
                    }
                }
                None => {}
            }
        }
        self.slots.clear();
        self.slot_of.clear();
        self.staged_bytes = 0;
        Ok(())
    }
}

fn accumulator_of(
    panes: &mut BTreeMap<i64, Groups>,
    pane: i64,
    index: usize,
    aggregate: usize,
) -> Result<&mut Accumulator, ValueError> {
    panes
        .get_mut(&pane)
        .and_then(|groups| groups.groups.get_mut(index))
        .and_then(|group| group.accumulators.get_mut(aggregate))
        .ok_or_else(|| ValueError("a staged value's pane is gone".into()))
}
