//! A simulated disk for deterministic tests: an in-memory [`Storage`] that remembers which
//! bytes and directory entries are durable, and injects faults from a seeded generator:
//! failed writes and fsyncs, and power cuts that keep only what was synced, with each
//! unsynced 512-byte sector of a pending write independently landed or lost (a torn write).
//!
//! Used by the simulation tests of this crate and of crates that build on it.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use crate::format::BLOCK_BYTES;
use crate::storage::{IoError, Storage, StorageFile};

/// Disks promise atomic writes per sector only.
pub const SECTOR_BYTES: usize = 512;

/// A small deterministic generator (SplitMix64): the same seed gives the same run.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// True with probability `per_million / 1e6`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        self.below(1_000_000) < u64::from(per_million)
    }
}

/// How often faults strike, per operation, in parts per million.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub write_error_ppm: u32,
    pub sync_error_ppm: u32,
}

#[derive(Debug, Default)]
struct FileData {
    /// What a power cut would keep if no pending write landed.
    durable: Vec<u8>,
    /// Writes since the last successful sync, in order.
    pending: Vec<(u64, Vec<u8>)>,
    /// What reads see (the page cache).
    current: Vec<u8>,
}

#[derive(Debug)]
struct State {
    rng: SimRng,
    faults: Faults,
    next_file_id: u64,
    data: BTreeMap<u64, FileData>,
    /// Directory entries as the running process sees them.
    names: BTreeMap<String, u64>,
    /// Directory entries as they would be after a power cut.
    durable_names: BTreeMap<String, u64>,
    dirs: std::collections::BTreeSet<String>,
    /// After this many more operations, every operation fails, as if the process died.
    ops_until_crash: Option<u64>,
    crashed: bool,
}

/// The simulated disk. Cloning gives another handle on the same disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Rc<RefCell<State>>,
}

fn write_into(target: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = offset as usize;
    if target.len() < offset + data.len() {
        target.resize(offset + data.len(), 0);
    }
    target[offset..offset + data.len()].copy_from_slice(data);
}

impl SimDisk {
    pub fn new(seed: u64, faults: Faults) -> SimDisk {
        let state = State {
            rng: SimRng::new(seed),
            faults,
            next_file_id: 1,
            data: BTreeMap::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: Default::default(),
            ops_until_crash: None,
            crashed: false,
        };
        SimDisk { state: Rc::new(RefCell::new(state)) }
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.borrow_mut().faults = faults;
    }

    /// Makes every operation from the `ops`-th on fail, as if the process died there.
    pub fn crash_after(&self, ops: u64) {
        self.state.borrow_mut().ops_until_crash = Some(ops);
    }

    /// Takes back a [`SimDisk::crash_after`] that has not struck yet.
    pub fn disarm_crash(&self) {
        self.state.borrow_mut().ops_until_crash = None;
    }

    pub fn has_crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// A power cut: directory entries and bytes revert to what was synced, except that each
    /// sector of each unsynced write lands or not at random (torn writes). Afterwards the
    /// disk works again, as after a reboot.
    pub fn power_cut(&self) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        for file in state.data.values_mut() {
            let pending = std::mem::take(&mut file.pending);
            for (offset, bytes) in pending {
                for (index, sector) in bytes.chunks(SECTOR_BYTES).enumerate() {
                    if state.rng.chance(500_000) {
                        let at = offset + (index * SECTOR_BYTES) as u64;
                        write_into(&mut file.durable, at, sector);
                    }
                }
            }
            file.current = file.durable.clone();
        }
        state.names = state.durable_names.clone();
        let live: std::collections::BTreeSet<u64> = state.names.values().copied().collect();
        state.data.retain(|id, _| live.contains(id));
        state.ops_until_crash = None;
        state.crashed = false;
    }

    /// A process crash without a power cut (SIGKILL): the page cache survives, so every
    /// write stays visible, synced or not; the disk works again.
    pub fn process_crash(&self) {
        let mut state = self.state.borrow_mut();
        state.ops_until_crash = None;
        state.crashed = false;
    }

    /// Every byte of every current file, concatenated (to check what reaches the disk).
    pub fn all_bytes(&self) -> Vec<u8> {
        let state = self.state.borrow();
        state.names.values().flat_map(|id| state.data[id].current.iter().copied()).collect()
    }

    pub fn file_names(&self) -> Vec<String> {
        self.state.borrow().names.keys().cloned().collect()
    }

    fn begin(&self, op: &'static str, path: &str) -> Result<(), IoError> {
        let mut state = self.state.borrow_mut();
        if let Some(left) = state.ops_until_crash.as_mut() {
            if *left == 0 {
                state.crashed = true;
            } else {
                *left -= 1;
            }
        }
        if state.crashed {
            return Err(IoError::new(op, path, io::Error::other("simulated crash")));
        }
        Ok(())
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

impl Storage for SimDisk {
    type File = SimFile;

    async fn create(&self, path: &str, _prealloc_bytes: u64) -> Result<SimFile, IoError> {
        self.begin("create", path)?;
        let mut state = self.state.borrow_mut();
        if !state.dirs.contains(parent(path)) && !parent(path).is_empty() {
            return Err(IoError::new("create", path, io::ErrorKind::NotFound.into()));
        }
        if state.names.contains_key(path) {
            return Err(IoError::new("create", path, io::ErrorKind::AlreadyExists.into()));
        }
        let id = state.next_file_id;
        state.next_file_id += 1;
        state.data.insert(id, FileData::default());
        state.names.insert(path.to_owned(), id);
        Ok(SimFile { disk: self.clone(), id, path: path.to_owned() })
    }

    async fn open(&self, path: &str) -> Result<SimFile, IoError> {
        self.begin("open", path)?;
        let state = self.state.borrow();
        match state.names.get(path) {
            Some(&id) => Ok(SimFile { disk: self.clone(), id, path: path.to_owned() }),
            None => Err(IoError::new("open", path, io::ErrorKind::NotFound.into())),
        }
    }

    async fn remove(&self, path: &str) -> Result<(), IoError> {
        self.begin("remove", path)?;
        let mut state = self.state.borrow_mut();
        match state.names.remove(path) {
            Some(_) => Ok(()),
            None => Err(IoError::new("remove", path, io::ErrorKind::NotFound.into())),
        }
    }

    async fn create_dir_all(&self, path: &str) -> Result<(), IoError> {
        self.begin("create_dir_all", path)?;
        let mut state = self.state.borrow_mut();
        let mut prefix = String::new();
        for part in path.split('/') {
            prefix = crate::storage::join(&prefix, part);
            state.dirs.insert(prefix.clone());
        }
        Ok(())
    }

    async fn remove_dir(&self, path: &str) -> Result<(), IoError> {
        self.begin("remove_dir", path)?;
        let mut state = self.state.borrow_mut();
        let prefix = format!("{path}/");
        if state.names.keys().any(|name| name.starts_with(&prefix)) {
            return Err(IoError::new("remove_dir", path, io::Error::other("directory not empty")));
        }
        // Directories stay durable in this model; only their emptiness matters.
        state.dirs.remove(path);
        Ok(())
    }

    async fn list(&self, path: &str) -> Result<Vec<String>, IoError> {
        self.begin("list", path)?;
        let state = self.state.borrow();
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        let mut names: Vec<String> = state
            .names
            .keys()
            .chain(state.dirs.iter())
            .filter_map(|name| name.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty())
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn sync_dir(&self, path: &str) -> Result<(), IoError> {
        self.begin("sync_dir", path)?;
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let in_dir = |name: &String| parent(name) == path;
        state.durable_names.retain(|name, _| !in_dir(name));
        for (name, id) in state.names.iter().filter(|(name, _)| in_dir(name)) {
            state.durable_names.insert(name.clone(), *id);
        }
        Ok(())
    }
}

/// A file of a [`SimDisk`].
#[derive(Debug, Clone)]
pub struct SimFile {
    disk: SimDisk,
    id: u64,
    path: String,
}

impl StorageFile for SimFile {
    type ReadBuf = AlignedBytes;

    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        assert_eq!(offset as usize % BLOCK_BYTES, 0, "unaligned write offset");
        assert_eq!(data.len() % BLOCK_BYTES, 0, "unaligned write length");
        self.disk.begin("write", &self.path)?;
        let mut state = self.disk.state.borrow_mut();
        let state = &mut *state;
        let fail = state.rng.chance(state.faults.write_error_ppm);
        let file = state.data.get_mut(&self.id).expect("file data outlives its handles");
        if fail {
            // Some sectors may reach the page cache before the error; none is acknowledged.
            for (index, sector) in data.chunks(SECTOR_BYTES).enumerate() {
                if state.rng.chance(500_000) {
                    let at = offset + (index * SECTOR_BYTES) as u64;
                    write_into(&mut file.current, at, sector);
                    file.pending.push((at, sector.to_vec()));
                }
            }
            return Err(IoError::new("write", &self.path, io::Error::other("injected EIO")));
        }
        write_into(&mut file.current, offset, data);
        file.pending.push((offset, data.to_vec()));
        Ok(())
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<AlignedBytes, IoError> {
        assert_eq!(offset as usize % BLOCK_BYTES, 0, "unaligned read offset");
        self.disk.begin("read", &self.path)?;
        let state = self.disk.state.borrow();
        let current = &state.data[&self.id].current;
        let start = (offset as usize).min(current.len());
        let end = (start + len).min(current.len());
        let mut bytes = rkyv::util::AlignedVec::<16>::with_capacity(end - start);
        bytes.extend_from_slice(&current[start..end]);
        Ok(AlignedBytes(bytes))
    }

    async fn release_after(&self, offset: u64) -> Result<(), IoError> {
        // Space is not modelled; only the failure is.
        let _ = offset;
        self.disk.begin("release", &self.path)
    }

    async fn sync(&self) -> Result<(), IoError> {
        self.disk.begin("sync", &self.path)?;
        let mut state = self.disk.state.borrow_mut();
        let state = &mut *state;
        let fail = state.rng.chance(state.faults.sync_error_ppm);
        let file = state.data.get_mut(&self.id).expect("file data outlives its handles");
        let pending = std::mem::take(&mut file.pending);
        if fail {
            // fsyncgate: some of the dirty data reached the disk, the rest is gone for good,
            // while the page cache still shows all of it.
            for (offset, bytes) in pending {
                for (index, sector) in bytes.chunks(SECTOR_BYTES).enumerate() {
                    if state.rng.chance(500_000) {
                        let at = offset + (index * SECTOR_BYTES) as u64;
                        write_into(&mut file.durable, at, sector);
                    }
                }
            }
            return Err(IoError::new("sync", &self.path, io::Error::other("injected EIO")));
        }
        for (offset, bytes) in pending {
            write_into(&mut file.durable, offset, &bytes);
        }
        Ok(())
    }
}

/// Bytes read from a [`SimFile`], 16-byte aligned like a DMA buffer.
#[derive(Debug)]
pub struct AlignedBytes(rkyv::util::AlignedVec<16>);

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn power_cut_keeps_synced_and_drops_unsynced_entries() {
        block_on(async {
            let disk = SimDisk::new(1, Faults::default());
            disk.create_dir_all("d").await.unwrap();
            let kept = disk.create("d/kept", 0).await.unwrap();
            kept.write_at(0, &[7u8; BLOCK_BYTES]).await.unwrap();
            kept.sync().await.unwrap();
            disk.sync_dir("d").await.unwrap();
            let lost = disk.create("d/lost", 0).await.unwrap();
            lost.write_at(0, &[9u8; BLOCK_BYTES]).await.unwrap();
            lost.sync().await.unwrap();
            disk.power_cut();
            assert_eq!(disk.list("d").await.unwrap(), vec!["kept".to_string()]);
            let kept = disk.open("d/kept").await.unwrap();
            assert_eq!(&kept.read_at(0, BLOCK_BYTES).await.unwrap()[..], &[7u8; BLOCK_BYTES]);
        });
    }

    #[test]
    fn unsynced_writes_tear_at_sector_granularity() {
        block_on(async {
            let mut saw_torn = false;
            for seed in 0..20 {
                let disk = SimDisk::new(seed, Faults::default());
                let file = disk.create("f", 0).await.unwrap();
                disk.sync_dir("").await.unwrap();
                file.write_at(0, &[1u8; BLOCK_BYTES]).await.unwrap();
                disk.power_cut();
                let bytes = disk.open("f").await.unwrap().read_at(0, BLOCK_BYTES).await.unwrap();
                for sector in bytes.chunks(SECTOR_BYTES) {
                    assert!(sector.iter().all(|&b| b == sector[0]), "a sector tore inside");
                }
                let landed = bytes.chunks(SECTOR_BYTES).filter(|s| s[0] == 1).count();
                saw_torn |= landed > 0 && landed < BLOCK_BYTES / SECTOR_BYTES;
            }
            assert!(saw_torn);
        });
    }
}
