//! The file operations the log uses, behind a small trait, so a test can
//! swap the disk for one that fails writes, fails syncs or loses power
//! ([`crate::sim::SimStorage`]).
//!
//! [`StdStorage`] is the real implementation over `std::fs` and the default
//! of [`crate::Log::open`]. Calls go through `Arc<dyn …>`: one indirect call
//! per system call, which is noise next to the system call itself.
//!
//! # Contract
//!
//! To ensure correctness, an implementation of [`Storage`] and
//! [`StorageFile`] must:
//!
//! * make a write visible to every later read of the same file (through any
//!   handle) as soon as the write returns, durable or not (a page cache);
//! * make the bytes of a file durable only through [`StorageFile::sync_data`]
//!   or [`StorageFile::sync_all`]: after they return `Ok`, every byte written
//!   and every length change made before the call survives a power loss;
//! * make directory changes (create, rename, remove) durable only through
//!   [`Storage::sync_dir`] on the directory holding them;
//! * report a failed write as an error even when a prefix of the bytes was
//!   written: the caller then no longer knows the file's length and must
//!   read it back or cut the file with [`StorageFile::set_len`];
//! * report a failed sync as an error; after one, nothing written since the
//!   last successful sync may be assumed durable, even after a later sync
//!   succeeds (Linux drops the dirty pages a failed `fsync` could not write:
//!   "fsyncgate"). The caller must cut the file back to what it knows is
//!   durable and write the rest again.
//!
//! All methods take `&self` and may be called from several threads; the log
//! serialises writes to one file itself (one writer per segment).

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open file of the log: read at a position, append, cut, sync.
pub trait StorageFile: Send + Sync + Debug {
    /// Fills `buf` from `position`.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` when the file ends before `buf` is full; I/O errors.
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;

    /// Appends `parts`, in order, at the end of the file.
    ///
    /// # Errors
    ///
    /// I/O errors (`StorageFull` for ENOSPC); a prefix of the bytes may then
    /// have been written.
    fn append(&self, parts: &[&[u8]]) -> io::Result<()>;

    /// Cuts (or extends with zeros) the file to `length` bytes.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn set_len(&self, length: u64) -> io::Result<()>;

    /// Current length in bytes (durable or not).
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file holds no byte.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Makes the file's bytes and length durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// I/O errors; see the module's contract for what a failure means.
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the file's bytes and all its metadata durable (`fsync`).
    ///
    /// # Errors
    ///
    /// As [`StorageFile::sync_data`].
    fn sync_all(&self) -> io::Result<()>;
}

/// A shared handle to an open file.
pub type FileHandle = Arc<dyn StorageFile>;

/// The directory operations of the log and the way it opens files.
pub trait Storage: Send + Sync + Debug {
    /// Opens `path` for reading and appending, creating it empty if missing.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn open(&self, path: &Path) -> io::Result<FileHandle>;

    /// Opens an existing file for reading only (offline checks change nothing).
    ///
    /// # Errors
    ///
    /// `NotFound` when missing; I/O errors.
    fn open_read(&self, path: &Path) -> io::Result<FileHandle>;

    /// Creates `path` empty, replacing any file there.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn create(&self, path: &Path) -> io::Result<FileHandle>;

    /// Whole contents of `path`.
    ///
    /// # Errors
    ///
    /// `NotFound` when missing; I/O errors.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Removes the file at `path`.
    ///
    /// # Errors
    ///
    /// `NotFound` when missing; I/O errors.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Renames `from` to `to`, replacing `to` atomically.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Paths of the entries of `dir` (files only matter to the log).
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;

    /// Creates `dir` and its parents if missing.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Makes the entries of `dir` (created, renamed, removed files) durable.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Removes `dir` and everything in it.
    ///
    /// # Errors
    ///
    /// I/O errors, `NotFound` when missing.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// The real disk, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdStorage;

impl StdStorage {
    /// The real disk as a shared [`Storage`].
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(StdStorage)
    }
}

/// Parts one [`StorageFile::append`] writes with one `writev`; more are
/// written one call each.
const APPEND_PARTS_MAX: usize = 4;

/// A `std::fs::File` opened for appending.
#[derive(Debug)]
struct StdFile(File);

impl StorageFile for StdFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, position)
    }

    fn append(&self, parts: &[&[u8]]) -> io::Result<()> {
        if parts.len() > APPEND_PARTS_MAX {
            return parts.iter().try_for_each(|part| self.append(&[part]));
        }
        // On the stack: this is the hot path of every produce.
        let mut pending: [&[u8]; APPEND_PARTS_MAX] = [&[]; APPEND_PARTS_MAX];
        pending[..parts.len()].copy_from_slice(parts);
        let pending = &mut pending[..parts.len()];
        loop {
            let first = pending.iter().take_while(|part| part.is_empty()).count();
            if first == pending.len() {
                return Ok(());
            }
            let slices: [IoSlice<'_>; APPEND_PARTS_MAX] = std::array::from_fn(|i| {
                IoSlice::new(pending.get(first + i).copied().unwrap_or(&[]))
            });
            let written = match (&self.0).write_vectored(&slices[..pending.len() - first]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let mut left = written;
            for part in pending[first..].iter_mut() {
                let taken = left.min(part.len());
                *part = &part[taken..];
                left -= taken;
            }
        }
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        self.0.set_len(length)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Storage for StdStorage {
    fn open(&self, path: &Path) -> io::Result<FileHandle> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn open_read(&self, path: &Path) -> io::Result<FileHandle> {
        Ok(Arc::new(StdFile(File::open(path)?)))
    }

    fn create(&self, path: &Path) -> io::Result<FileHandle> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }
}

/// Replaces `path` with `contents` through `storage` so that a crash leaves
/// either the old or the new file: write a temporary file, sync it, rename
/// it over the old one, sync the directory.
///
/// # Errors
///
/// Any I/O error; the old file is then unchanged.
pub fn write_atomically_in(storage: &dyn Storage, path: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let file = storage.create(&temporary)?;
        file.append(&[contents])?;
        file.sync_all()?;
    }
    storage.rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        storage.sync_dir(dir)?;
    }
    Ok(())
}

/// Removes `path`, treating a file already gone as removed.
///
/// # Errors
///
/// I/O errors other than `NotFound`.
pub fn remove_if_present(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.remove(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
