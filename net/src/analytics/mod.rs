//! Amazon Kinesis Data Analytics for SQL: applications whose SQL runs continuously over a
//! data stream or delivery stream and writes its in-application streams out to others.
//!
//! - [`api`]: the `KinesisAnalytics_20150814` API and the SQL applications of
//!   `KinesisAnalytics_20180523`, over applications kept in the catalog.
//! - [`worker`]: a running application: the shards merged into ROWTIME order, the runner of
//!   `millrace-gpu`, outputs written exactly once across a kill -9.
//! - [`checkpoint`]: the snapshot format an application resumes from.
//! - [`discover`]: DiscoverInputSchema's inference.
//!
//! ROWTIME of an input row is the record's stored arrival time: the time it entered the
//! stream, which is when KDA's in-application stream would have seen it to within
//! milliseconds for live data, and which makes a replay give the same answer.

pub mod api;
pub mod checkpoint;
mod discover;
mod error;
mod model;
pub mod worker;

pub use api::{AnalyticsApi, AnalyticsConfig, AnalyticsV2};
