//! Millrace analytics (issue 11): the SQL front ends, the window plan, the operators, the wgpu
//! kernels and their CPU reference. No sockets; the API lives in `net/src/analytics/`.
//!
//! What is here so far is the part every other piece stands on, the aggregate state and the
//! window arithmetic:
//! - [`agg`]: the state of each aggregate KDA SQL computes (COUNT, SUM, MIN, MAX, AVG,
//!   approximate COUNT DISTINCT, approximate percentiles, TOP-K). Every state is integer and
//!   order-independent and merges exactly, so that panes combine into windows, and so that a
//!   GPU kernel running the same integer arithmetic in any order gives the same bits. This is
//!   the CPU reference the kernels will be tested against.
//! - [`pane`]: windows of size and slide aggregated as panes of gcd(size, slide), never by
//!   copying an event into every window it belongs to.
//!
//! - [`device`] (feature `device`): wgpu, and the first kernels, each tested bit for bit
//!   against its CPU reference: the COUNT DISTINCT registers of a batch
//!   (`kernels/distinct.wgsl`, against [`agg::distinct`]), COUNT and SUM per pane
//!   (`kernels/pane_sum.wgsl`, against [`agg::Sum`]) and MIN and MAX per pane
//!   (`kernels/pane_minmax.wgsl`, against [`agg::MinMax`]).
//!
//! - [`sql`]: the KDA SQL front end. Application code (in-application streams, pumps, tumbling
//!   windows by STEP/FLOOR on ROWTIME, sliding windows, stagger windows, reference-data joins,
//!   the TOP-K and COUNT DISTINCT table functions) parsed with sqlparser and a KDA pre-pass,
//!   names resolved, refusals placed at their line and column; the plan writes itself back as
//!   SQL that parses to the same plan.
//!
//! - [`run`]: the plan run on the CPU. Rows pushed into an application's inputs come out of
//!   its pumps, chained through in-application streams: row-by-row queries, tumbling windows
//!   closed by ROWTIME or a rowtime bound (their rows carry the window's end), sliding RANGE
//!   and ROWS windows, stagger windows, reference-data joins, TOP-K and COUNT DISTINCT per
//!   window, KDA's functions with exact integer and decimal arithmetic, and rows that cannot
//!   be computed sent to the errors while the others go on. [`run::merge`] merges a stream's
//!   shards into one ROWTIME order with a watermark per shard (an idle shard does not hold it
//!   back), in an order that does not depend on how reads were chunked.
//!
//! - [`frame`]: frame analysis for Video Streams (luma histogram, motion between frames, scene
//!   change), the CPU reference of `kernels/luma_histogram.wgsl` and `kernels/motion.wgsl`.
//!
//! Not here yet: checkpointed operator state, the Flink-style
//! dialect, the GPU path of the operators.

#![forbid(unsafe_code)]

pub mod agg;
#[cfg(feature = "device")]
pub mod device;
pub mod frame;
pub mod pane;
pub mod run;
pub mod sql;
