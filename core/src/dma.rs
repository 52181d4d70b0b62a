//! [`Storage`] on a real disk: glommio's `DmaFile` (O_DIRECT through io_uring) for data,
//! with directory operations done the plain way (they are rare: segment creation and
//! removal). Must run inside a glommio executor.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions, ReadResult};

use crate::storage::{IoError, Storage, StorageFile};

/// A data directory on a real file system.
#[derive(Debug, Clone)]
pub struct DmaStorage {
    root: Rc<PathBuf>,
}

impl DmaStorage {
    pub fn new(root: &Path) -> DmaStorage {
        DmaStorage { root: Rc::new(root.to_owned()) }
    }

    fn path(&self, relative: &str) -> PathBuf {
        if relative.is_empty() {
            self.root.as_ref().clone()
        } else {
            self.root.join(relative)
        }
    }
}

fn io_error(op: &'static str, path: &Path, error: impl Into<std::io::Error>) -> IoError {
    IoError::new(op, path.display(), error.into())
}

/// fsync of a directory, which makes creations and removals of its entries durable.
fn sync_directory(path: &Path) -> Result<(), IoError> {
    std::fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| io_error("sync_dir", path, error))
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;

    async fn create(&self, relative: &str, prealloc_bytes: u64) -> Result<DmaStorageFile, IoError> {
        let path = self.path(relative);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(|error| io_error("create", &path, error))?;
        if prealloc_bytes > 0 {
            // Reserve the extent now so that appends do not allocate blocks one by one, and
            // set the file size up front so that an fdatasync need not also persist a size
            // change (measured: commit p99 0.85 ms against 1.3 ms when the size grows).
            // Reads past the written data see zeros, which recovery treats as the end.
            file.pre_allocate(prealloc_bytes, false)
                .await
                .map_err(|error| io_error("fallocate", &path, error))?;
        }
        Ok(DmaStorageFile { file: Rc::new(file), path: Rc::new(path) })
    }

    async fn open(&self, relative: &str) -> Result<DmaStorageFile, IoError> {
        let path = self.path(relative);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(|error| io_error("open", &path, error))?;
        Ok(DmaStorageFile { file: Rc::new(file), path: Rc::new(path) })
    }

    async fn remove(&self, relative: &str) -> Result<(), IoError> {
        let path = self.path(relative);
        glommio::io::remove(&path).await.map_err(|error| io_error("remove", &path, error))
    }

    async fn create_dir_all(&self, relative: &str) -> Result<(), IoError> {
        let path = self.path(relative);
        // No early return when it exists: a crash may have left the entry created but not
        // yet durable, so the parents are synced every time (this runs once per shard open).
        std::fs::create_dir_all(&path).map_err(|error| io_error("create_dir_all", &path, error))?;
        // Make the new entries durable all the way up to the data directory's parent.
        let mut dir = path.as_path();
        while let Some(parent) = dir.parent() {
            sync_directory(parent)?;
            if dir == self.root.as_path() {
                break;
            }
            dir = parent;
        }
        Ok(())
    }

    async fn remove_dir(&self, relative: &str) -> Result<(), IoError> {
        let path = self.path(relative);
        std::fs::remove_dir(&path).map_err(|error| io_error("remove_dir", &path, error))?;
        if let Some(parent) = path.parent() {
            sync_directory(parent)?;
        }
        Ok(())
    }

    async fn list(&self, relative: &str) -> Result<Vec<String>, IoError> {
        let path = self.path(relative);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error("list", &path, error)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| io_error("list", &path, error))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn sync_dir(&self, relative: &str) -> Result<(), IoError> {
        sync_directory(&self.path(relative))
    }
}

/// An open segment or catalog file.
#[derive(Debug, Clone)]
pub struct DmaStorageFile {
    file: Rc<DmaFile>,
    path: Rc<PathBuf>,
}

impl StorageFile for DmaStorageFile {
    type ReadBuf = ReadResult;

    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let mut buffer = self.file.alloc_dma_buffer(data.len());
        buffer.as_bytes_mut().copy_from_slice(data);
        let written =
            self.file.write_at(buffer, offset).await.map_err(|error| io_error("write", &self.path, error))?;
        if written != data.len() {
            let short =
                std::io::Error::new(std::io::ErrorKind::WriteZero, format!("short write: {written} bytes"));
            return Err(io_error("write", &self.path, short));
        }
        Ok(())
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<ReadResult, IoError> {
        self.file.read_at_aligned(offset, len).await.map_err(|error| io_error("read", &self.path, error))
    }

    async fn release_after(&self, offset: u64) -> Result<(), IoError> {
        let size = self.file.file_size().await.map_err(|error| io_error("stat", &self.path, error))?;
        if size > offset {
            // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE.
            self.file
                .deallocate(offset, size - offset)
                .await
                .map_err(|error| io_error("punch", &self.path, error))?;
        }
        Ok(())
    }

    async fn sync(&self) -> Result<(), IoError> {
        self.file.fdatasync().await.map_err(|error| io_error("fdatasync", &self.path, error))
    }
}

/// Makes glommio learn correctly whether the data directory's device supports io_uring
/// polled I/O. glommio probes this with a read at offset 0 of the first file it opens on a
/// device and caches the answer; on an empty file that read succeeds without reaching the
/// device, so it wrongly concludes "pollable" and every later read fails with EOPNOTSUPP.
/// Opening a file that holds a block first gives the probe something real to read.
pub async fn probe_device(root: &Path, core: usize) -> Result<(), IoError> {
    let path = root.join(format!(".probe-{core}"));
    std::fs::write(&path, vec![0u8; 4096]).map_err(|error| io_error("write", &path, error))?;
    let file = DmaFile::open(&path).await.map_err(|error| io_error("open", &path, error))?;
    let read = file.read_at_aligned(0, 4096).await.map_err(|error| io_error("read", &path, error));
    let _ = file.close().await;
    std::fs::remove_file(&path).map_err(|error| io_error("remove", &path, error))?;
    read.map(|_| ())
}
