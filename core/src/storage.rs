//! The narrow interface between the engine's logic and a disk: block-aligned positional
//! writes and reads, fdatasync, and a few directory operations. The production
//! implementation is glommio's direct I/O (`dma`); the simulation implements it in memory
//! with injected faults (`sim`). Paths are relative to the engine's data directory and use
//! `/` as separator.
#![forbid(unsafe_code)]
#![allow(async_fn_in_trait)] // Single-threaded executors: no Send bounds wanted.

use std::fmt;
use std::ops::Deref;

/// An I/O failure, with the operation and path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoError {
    pub op: &'static str,
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    pub fn new(op: &'static str, path: impl fmt::Display, source: std::io::Error) -> IoError {
        IoError { op, path: path.to_string(), source }
    }

    pub fn is_not_found(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::NotFound
    }
}

/// A directory of files the engine owns.
pub trait Storage {
    type File: StorageFile;

    /// Creates a new, empty file (it must not exist) with `prealloc_bytes` reserved.
    /// The directory entry is durable only after [`Storage::sync_dir`].
    async fn create(&self, path: &str, prealloc_bytes: u64) -> Result<Self::File, IoError>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, path: &str) -> Result<Self::File, IoError>;
    /// Removes a file; durable only after [`Storage::sync_dir`].
    async fn remove(&self, path: &str) -> Result<(), IoError>;
    /// Creates a directory and its parents if missing (durably).
    async fn create_dir_all(&self, path: &str) -> Result<(), IoError>;
    /// Removes an empty directory.
    async fn remove_dir(&self, path: &str) -> Result<(), IoError>;
    /// Names of the entries of a directory, sorted; empty if it does not exist.
    async fn list(&self, path: &str) -> Result<Vec<String>, IoError>;
    /// Makes creations and removals of entries of directory `path` durable.
    async fn sync_dir(&self, path: &str) -> Result<(), IoError>;
}

/// An open file. Offsets and lengths of writes and reads are multiples of
/// [`crate::format::BLOCK_BYTES`].
pub trait StorageFile {
    /// Bytes read back; 16-byte aligned at least.
    type ReadBuf: Deref<Target = [u8]>;

    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), IoError>;
    /// Reads up to `len` bytes; fewer at the end of the file.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Self::ReadBuf, IoError>;
    /// fdatasync: every write issued before is on stable storage when this returns Ok.
    async fn sync(&self) -> Result<(), IoError>;
    /// Gives back the space of everything past `offset` (preallocated and never to be
    /// written); reads there return zeros or nothing. Only for files no longer written.
    async fn release_after(&self, offset: u64) -> Result<(), IoError>;
}

/// Joins a directory and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}
