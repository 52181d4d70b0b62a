//! Amazon Data Firehose (`Firehose_20150804.*`, JSON 1.1, SigV4 service `firehose`), served
//! on the same port as Kinesis.
//!
//! - [`api`]: the twelve operations; delivery streams are catalog resources of kind
//!   `DeliveryStream` whose spec ([`spec`]) holds the configuration, checked and filled with
//!   AWS's defaults by [`config`]; their one shard log is the durable delivery buffer (a
//!   record is acknowledged once it is durable there).
//! - [`delivery`]: one worker per stream reads the buffer (or the source data stream),
//!   cuts objects by the buffering hints, compresses them ([`compress`]), names them
//!   ([`prefix`], [`key`]), stores them durably through a [`sink`] (a local folder per
//!   bucket, or an S3 endpoint), and only then advances its durable cursor.
//! - Contracts not wired to a destination yet, pure and tested: the Lambda transformation
//!   ([`lambda`]), error records ([`errors`]) and HTTP endpoint delivery ([`http_endpoint`]).

pub mod api;
pub mod compress;
pub mod config;
pub mod convert;
pub mod deaggregate;
pub mod delivery;
pub mod error;
pub mod errors;
pub mod http;
pub mod http_endpoint;
pub mod invoke;
pub mod key;
pub mod lambda;
pub mod partition;
pub mod prefix;
pub mod sink;
pub mod spec;

pub use api::{FirehoseApi, FirehoseConfig, TARGET_PREFIX};
