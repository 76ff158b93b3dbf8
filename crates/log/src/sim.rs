//! A simulated disk for tests: files in memory that can fail writes and
//! syncs and lose power, deterministically from a seed.
//!
//! # The model
//!
//! Every file keeps its *current* bytes (the page cache: what reads see)
//! and its *durable* bytes (what the disk holds as of the last successful
//! `sync_data`/`sync_all` of that file). Every directory keeps its durable
//! entries (as of the last `sync_dir`) and the list of entry changes made
//! since (create, rename, remove), in order.
//!
//! [`SimStorage::power_cut`] then, as a machine losing power would:
//!
//! * keeps, of the unsynced directory changes, a random prefix in order
//!   (journaling file systems commit metadata in order), the rest is lost:
//!   a rename or a create is durable only once its directory is synced;
//! * gives every surviving file its durable bytes, or its durable bytes up
//!   to where the current ones differ followed by a random prefix of the
//!   current ones from there: unsynced writes (and length changes) are lost,
//!   or survive up to any byte — a torn write;
//! * invalidates every open handle (they fail with `EIO` afterwards), as
//!   the process holding them died.
//!
//! Faults: [`SimStorage::set_write_fault`] makes every write (and file
//! creation) fail with an OS error — after writing a random prefix of the
//! bytes, as a short write does — until lifted;
//! [`SimStorage::set_sync_fault`] makes every sync fail. A failed file sync
//! behaves as Linux's does ("fsyncgate"): the bytes it failed to write are
//! forgotten as dirty, so a later successful sync does *not* write them, and
//! the disk keeps its old bytes (zeros past its old end) there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{FileHandle, Storage, StorageFile};

/// `ENOSPC`: no space left on the device.
pub const ENOSPC: i32 = 28;
/// `EIO`: an I/O error.
pub const EIO: i32 = 5;

/// An in-memory disk; clones share it.
#[derive(Debug, Clone)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Ranges a failed sync dropped from the dirty set (fsyncgate).
    forgotten: Vec<Range<usize>>,
}

impl Inode {
    /// The current bytes as a sync (or the kernel's writeback) would put
    /// them on disk: where a failed sync forgot dirty bytes, the disk keeps
    /// its old bytes, zeros past its old end.
    fn writable_view(&self) -> Vec<u8> {
        let mut bytes = self.current.clone();
        for range in &self.forgotten {
            for at in range.start..range.end.min(bytes.len()) {
                bytes[at] = self.durable.get(at).copied().unwrap_or(0);
            }
        }
        bytes
    }
}

#[derive(Debug, Clone)]
enum DirChange {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    /// One journal entry: a rename is atomic.
    Rename(PathBuf, PathBuf, u64),
}

impl DirChange {
    fn dir(&self) -> Option<&Path> {
        match self {
            DirChange::Link(path, _) | DirChange::Unlink(path) | DirChange::Rename(_, path, _) => {
                path.parent()
            }
        }
    }
}

#[derive(Debug, Default)]
struct SimState {
    rng: u64,
    boot: u64,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    pending: Vec<DirChange>,
    dirs: BTreeSet<PathBuf>,
    write_fault: Option<i32>,
    sync_fault: Option<i32>,
}

impl SimState {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: small, fast and reproducible.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_random() % bound
        }
    }

    fn inode(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::from_raw_os_error(EIO))
    }

    fn link(&mut self, path: &Path) -> u64 {
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.names.insert(path.to_path_buf(), id);
        self.pending.push(DirChange::Link(path.to_path_buf(), id));
        id
    }

    fn unlink(&mut self, path: &Path) -> io::Result<u64> {
        let id = self
            .names
            .remove(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        self.pending.push(DirChange::Unlink(path.to_path_buf()));
        Ok(id)
    }

    fn sync_file(&mut self, id: u64) -> io::Result<()> {
        let fault = self.sync_fault;
        let inode = self.inode(id)?;
        if let Some(errno) = fault {
            let common = common_prefix(&inode.durable, &inode.current);
            if common < inode.current.len() {
                inode.forgotten.push(common..inode.current.len());
            }
            return Err(io::Error::from_raw_os_error(errno));
        }
        inode.durable = inode.writable_view();
        inode.forgotten.clear();
        Ok(())
    }

    fn power_cut(&mut self) {
        let survive = self.below(self.pending.len() as u64 + 1) as usize;
        let mut names = self.durable_names.clone();
        for change in self.pending.drain(..survive) {
            apply(&mut names, change);
        }
        self.pending.clear();
        self.names = names.clone();
        self.durable_names = names;
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|id, _| live.contains(id));
        let ids: Vec<u64> = self.inodes.keys().copied().collect();
        for id in ids {
            let keep_unsynced = self.next_random();
            let Some(inode) = self.inodes.get_mut(&id) else {
                continue;
            };
            let written = inode.writable_view();
            let common = common_prefix(&inode.durable, &written);
            let torn = if written.len() > common && keep_unsynced % 2 == 1 {
                let extra = (keep_unsynced >> 1) as usize % (written.len() - common + 1);
                written[..common + extra].to_vec()
            } else if keep_unsynced % 2 == 1 {
                written
            } else {
                inode.durable.clone()
            };
            inode.durable = torn.clone();
            inode.current = torn;
            inode.forgotten.clear();
        }
        self.boot += 1;
    }
}

fn apply(names: &mut BTreeMap<PathBuf, u64>, change: DirChange) {
    match change {
        DirChange::Link(path, id) => {
            names.insert(path, id);
        }
        DirChange::Unlink(path) => {
            names.remove(&path);
        }
        DirChange::Rename(from, to, id) => {
            names.remove(&from);
            names.insert(to, id);
        }
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl SimStorage {
    /// An empty disk whose random choices (torn writes, surviving
    /// directory changes, short writes) follow `seed`.
    pub fn new(seed: u64) -> SimStorage {
        let state = SimState {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            ..SimState::default()
        };
        SimStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// This disk as a shared [`Storage`].
    pub fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }

    /// Makes every write and file creation fail with `errno` (e.g.
    /// [`ENOSPC`]), after writing a random prefix; `None` lifts the fault.
    pub fn set_write_fault(&self, errno: Option<i32>) {
        self.state.lock().write_fault = errno;
    }

    /// Makes every sync fail with `errno` (see the module docs for what a
    /// failed sync forgets); `None` lifts the fault.
    pub fn set_sync_fault(&self, errno: Option<i32>) {
        self.state.lock().sync_fault = errno;
    }

    /// Loses power: see the module docs. Open handles fail from now on.
    pub fn power_cut(&self) {
        self.state.lock().power_cut();
    }

    /// Current bytes of `path` (what a read sees), if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let id = state.names.get(path)?;
        state.inodes.get(id).map(|inode| inode.current.clone())
    }

    /// Replaces the bytes of `path` (current and durable), creating it and
    /// making its entry durable: for tests that damage files on purpose.
    pub fn overwrite(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.state.lock();
        let id = match state.names.get(path) {
            Some(&id) => id,
            None => {
                let id = state.link(path);
                state.durable_names.insert(path.to_path_buf(), id);
                state.pending.pop();
                id
            }
        };
        if let Some(inode) = state.inodes.get_mut(&id) {
            inode.current = bytes.to_vec();
            inode.durable = bytes.to_vec();
            inode.forgotten.clear();
        }
    }

    /// The files of `dir` now, sorted.
    pub fn list(&self, dir: &Path) -> Vec<PathBuf> {
        let state = self.state.lock();
        state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .cloned()
            .collect()
    }

    fn handle(&self, id: u64, boot: u64) -> FileHandle {
        Arc::new(SimFile {
            state: Arc::clone(&self.state),
            inode: id,
            boot,
        })
    }
}

/// An open file of a [`SimStorage`].
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    boot: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimState, u64) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state.lock();
        if state.boot != self.boot {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        f(&mut state, self.inode)
    }
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.with(|state, id| {
            let inode = state.inode(id)?;
            let start = usize::try_from(position).map_err(|_| io::ErrorKind::UnexpectedEof)?;
            let bytes = inode
                .current
                .get(start..start + buf.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(bytes);
            Ok(())
        })
    }

    fn append(&self, parts: &[&[u8]]) -> io::Result<()> {
        self.with(|state, id| {
            let bytes: Vec<u8> = parts.concat();
            if let Some(errno) = state.write_fault {
                let written = state.below(bytes.len() as u64 + 1) as usize;
                state
                    .inode(id)?
                    .current
                    .extend_from_slice(&bytes[..written]);
                return Err(io::Error::from_raw_os_error(errno));
            }
            state.inode(id)?.current.extend_from_slice(&bytes);
            Ok(())
        })
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        self.with(|state, id| {
            let inode = state.inode(id)?;
            inode.current.resize(length as usize, 0);
            for range in &mut inode.forgotten {
                range.end = range.end.min(length as usize);
            }
            inode.forgotten.retain(|range| range.start < range.end);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|state, id| Ok(state.inode(id)?.current.len() as u64))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|state, id| state.sync_file(id))
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path) -> io::Result<FileHandle> {
        let mut state = self.state.lock();
        let id = match state.names.get(path) {
            Some(&id) => id,
            None => {
                if let Some(errno) = state.write_fault {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                state.link(path)
            }
        };
        let boot = state.boot;
        drop(state);
        Ok(self.handle(id, boot))
    }

    fn open_read(&self, path: &Path) -> io::Result<FileHandle> {
        let state = self.state.lock();
        let id = *state
            .names
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let boot = state.boot;
        drop(state);
        Ok(self.handle(id, boot))
    }

    fn create(&self, path: &Path) -> io::Result<FileHandle> {
        let mut state = self.state.lock();
        if let Some(errno) = state.write_fault {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if state.names.contains_key(path) {
            state.unlink(path)?;
        }
        let id = state.link(path);
        let boot = state.boot;
        drop(state);
        Ok(self.handle(id, boot))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.contents(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.state.lock().unlink(path).map(|_| ())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let id = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.names.insert(to.to_path_buf(), id);
        state
            .pending
            .push(DirChange::Rename(from.to_path_buf(), to.to_path_buf(), id));
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.state.lock();
        if !state.dirs.contains(dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        if let Some(errno) = state.sync_fault {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let (synced, rest): (Vec<DirChange>, Vec<DirChange>) = state
            .pending
            .drain(..)
            .partition(|change| change.dir() == Some(dir));
        state.pending = rest;
        for change in synced {
            apply(&mut state.durable_names, change);
        }
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let inside: Vec<PathBuf> = state
            .names
            .keys()
            .filter(|path| path.starts_with(dir))
            .cloned()
            .collect();
        for path in inside {
            state.unlink(&path)?;
        }
        state.dirs.retain(|d| !d.starts_with(dir));
        Ok(())
    }
}
