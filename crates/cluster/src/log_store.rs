//! The controller's raft log on disk: openraft's [`RaftLogStorage`].
//!
//! # On disk: `<data>/controller/`
//!
//! ```text
//! raft-log      entries, each framed as below, indexes contiguous
//! raft-state    JSON {"vote": …, "last_purged": …}, replaced atomically
//! ```
//!
//! A frame is `length u32 LE | crc u32 LE | payload`, the CRC32C covering
//! the length bytes and the payload, the payload an openraft entry as JSON
//! (1 byte to [`ENTRY_BYTES_MAX`]). The metadata log is small, so every
//! entry after the last purge is also kept in memory; reads never touch
//! the disk.
//!
//! # To ensure correctness (openraft's contract, and how it is kept)
//!
//! * An append is reported flushed only after `fdatasync` of the file.
//! * A vote is durable before `save_vote` returns (written aside, synced,
//!   renamed): a node never votes twice in a term across a crash.
//! * `truncate` rewrites the file without the removed entries (written
//!   aside, synced, renamed) before returning, so they never come back
//!   after a crash.
//! * `purge` first records the purged id durably in `raft-state`, then
//!   forgets the entries; the file is rewritten without them once enough
//!   accumulated, atomically, so a crash leaves either file whole.
//! * All file I/O runs on tokio's blocking pool, serialised by one lock.
//! * A write the disk refuses for want of space leaves the files and the
//!   memory as they were, and is tried again until there is space (see
//!   [`crate::full_disk`]); only closing the store makes it fail.
//!
//! # Recovery
//!
//! Frames are read until the end. A frame that is cut short at the end of
//! the file, or whose declared length runs past it, is a torn tail (an
//! append a crash interrupted before it was reported flushed): it is cut
//! and the cut synced. A whole frame with a bad CRC, an entry that does
//! not decode, or a gap in the indexes is [`ClusterError::Corrupt`]: the
//! node does not start on a raft log it cannot trust, since dropping an
//! entry it acknowledged could undo a committed command.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_log::checkpoint::write_atomically;

use crate::error::ClusterError;
use crate::full_disk::retry_while_full;
use crate::{NodeId, TypeConfig};

/// Largest serialized entry: far above any metadata command.
pub const ENTRY_BYTES_MAX: usize = 16 << 20;
/// Purged entries that may stay in the file before it is rewritten.
const PURGED_IN_FILE_MAX: u64 = 4096;
const FRAME_HEADER_BYTES: usize = 8;
const LOG_FILE: &str = "raft-log";
/// An entry read back, with its frame's position in the file.
type Frame = (u64, Entry<TypeConfig>);
const STATE_FILE: &str = "raft-state";

/// The raft log; cheap to clone (clones share one log).
#[derive(Clone)]
pub struct LogStore {
    files: Arc<Mutex<LogFiles>>,
    /// Set by [`LogStore::close`]: a write waiting for space gives up.
    closing: Arc<AtomicBool>,
}

/// What `raft-state` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PersistentState {
    vote: Option<Vote<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

struct LogFiles {
    dir: PathBuf,
    log: File,
    persistent: PersistentState,
    /// Entries after the last purge, by index.
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    /// Entries before `entries` that the file still holds.
    purged_in_file: u64,
    /// Bytes in the file.
    end: u64,
}

impl LogStore {
    /// Opens (or creates) the raft log in `dir`, cutting a torn tail.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Io`], or [`ClusterError::Corrupt`] as the module doc says.
    pub fn open(dir: &Path) -> Result<LogStore, ClusterError> {
        fs::create_dir_all(dir).map_err(|error| ClusterError::io(dir, error))?;
        let state_path = dir.join(STATE_FILE);
        let persistent = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| ClusterError::Corrupt {
                path: state_path.clone(),
                position: 0,
                reason: error.to_string(),
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => PersistentState::default(),
            Err(error) => return Err(ClusterError::io(state_path, error)),
        };
        let log_path = dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| ClusterError::io(&log_path, error))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)
            .map_err(|error| ClusterError::io(&log_path, error))?;
        let (frames, valid_end) = read_frames(&log_path, &bytes)?;
        if valid_end < bytes.len() as u64 {
            tracing::warn!(
                file = %log_path.display(),
                position = valid_end,
                bytes = bytes.len() as u64 - valid_end,
                "cutting the torn tail of the raft log (an append a crash interrupted)"
            );
            log.set_len(valid_end)
                .and_then(|()| log.sync_data())
                .map_err(|error| ClusterError::io(&log_path, error))?;
        }
        let purged_index = persistent.last_purged.map(|id| id.index);
        let mut files = LogFiles {
            dir: dir.to_owned(),
            log,
            persistent,
            entries: BTreeMap::new(),
            purged_in_file: 0,
            end: valid_end,
        };
        for (position, entry) in frames {
            let index = entry.log_id.index;
            if let Some((&last, _)) = files.entries.last_key_value() {
                if index <= last {
                    return Err(ClusterError::Corrupt {
                        path: log_path,
                        position,
                        reason: format!("entry {index} follows entry {last}"),
                    });
                }
            }
            if purged_index.is_some_and(|purged| index <= purged) {
                files.purged_in_file += 1;
            } else {
                files.entries.insert(index, entry);
            }
        }
        Ok(LogStore {
            files: Arc::new(Mutex::new(files)),
            closing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Makes writes that wait for disk space fail instead (the controller
    /// shuts down: raft must not wait for a disk that stays full).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Runs `work` on the log files off the async threads, again while the
    /// disk is full. The lock is taken for each try, so that reads are not
    /// held up while a write waits for space.
    async fn blocking<T, F>(&self, what: &'static str, mut work: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut LogFiles) -> io::Result<T> + Send + 'static,
    {
        let files = Arc::clone(&self.files);
        let closing = Arc::clone(&self.closing);
        tokio::task::spawn_blocking(move || {
            retry_while_full(what, &closing, || work(&mut files.lock()))
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Reads every whole, valid frame; returns them with the end of the last one.
fn read_frames(path: &Path, bytes: &[u8]) -> Result<(Vec<Frame>, u64), ClusterError> {
    let mut frames = Vec::new();
    let mut position = 0usize;
    while bytes.len() - position >= FRAME_HEADER_BYTES {
        let header = &bytes[position..position + FRAME_HEADER_BYTES];
        let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let payload_start = position + FRAME_HEADER_BYTES;
        if length == 0 || length > ENTRY_BYTES_MAX || bytes.len() - payload_start < length {
            // A frame the file cannot hold whole: where an append was cut.
            break;
        }
        let payload = &bytes[payload_start..payload_start + length];
        let corrupt = |reason: String| ClusterError::Corrupt {
            path: path.to_owned(),
            position: position as u64,
            reason,
        };
        if frame_crc(&header[0..4], payload) != crc {
            if payload_start + length == bytes.len() {
                break; // The last frame, written partly: a torn tail too.
            }
            return Err(corrupt("CRC mismatch with frames after it".into()));
        }
        let entry = serde_json::from_slice(payload).map_err(|error| corrupt(error.to_string()))?;
        frames.push((position as u64, entry));
        position = payload_start + length;
    }
    Ok((frames, position as u64))
}

fn frame_crc(length: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(length), payload)
}

fn encode_frame(entry: &Entry<TypeConfig>) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(entry)?;
    if payload.len() > ENTRY_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a raft entry of {} bytes exceeds {ENTRY_BYTES_MAX}",
                payload.len()
            ),
        ));
    }
    let length = (payload.len() as u32).to_le_bytes();
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&length);
    frame.extend_from_slice(&frame_crc(&length, &payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

impl LogFiles {
    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .last_key_value()
            .map(|(_, entry)| entry.log_id)
            .or(self.persistent.last_purged)
    }

    fn save_persistent(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&self.persistent)?;
        write_atomically(&self.dir.join(STATE_FILE), &bytes)
    }

    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> io::Result<()> {
        let last = self.last_log_id().map(|id| id.index);
        let mut previous = last;
        let mut bytes = Vec::new();
        for entry in &entries {
            let index = entry.log_id.index;
            if previous.is_some_and(|previous| index <= previous) {
                // Not at the end: openraft truncates before it overwrites,
                // so only a direct caller (its conformance suite) gets
                // here. Overwrite in memory, then rewrite the file whole.
                let kept = std::mem::take(&mut self.entries);
                self.entries = kept.clone();
                self.entries
                    .extend(entries.into_iter().map(|entry| (entry.log_id.index, entry)));
                return self.rewrite().inspect_err(|_| self.entries = kept);
            }
            previous = Some(index);
            bytes.extend_from_slice(&encode_frame(entry)?);
        }
        if let Err(error) = self
            .log
            .write_all(&bytes)
            .and_then(|()| self.log.sync_data())
        {
            // Take back whatever part reached the file; unknown bytes must
            // not precede the next append.
            let _ = self.log.set_len(self.end);
            return Err(error);
        }
        self.end += bytes.len() as u64;
        self.entries
            .extend(entries.into_iter().map(|entry| (entry.log_id.index, entry)));
        Ok(())
    }

    /// Truncation is rare (a new leader overwriting an uncommitted tail):
    /// the file is rewritten whole rather than cut, which keeps its frames
    /// in index order whatever came before.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        if self.entries.range(index..).next().is_none() {
            return Ok(());
        }
        let removed = self.entries.split_off(&index);
        self.rewrite().inspect_err(|_| self.entries.extend(removed))
    }

    fn purge(&mut self, upto: LogId<NodeId>) -> io::Result<()> {
        if self
            .persistent
            .last_purged
            .is_some_and(|purged| purged >= upto)
        {
            return Ok(());
        }
        let previous = self.persistent.last_purged.replace(upto);
        self.save_persistent()
            .inspect_err(|_| self.persistent.last_purged = previous)?;
        let kept = self.entries.split_off(&(upto.index + 1));
        self.purged_in_file += std::mem::replace(&mut self.entries, kept).len() as u64;
        if self.purged_in_file > PURGED_IN_FILE_MAX {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Replaces the file with one holding exactly the entries in memory.
    fn rewrite(&mut self) -> io::Result<()> {
        let mut bytes = Vec::new();
        for entry in self.entries.values() {
            bytes.extend_from_slice(&encode_frame(entry)?);
        }
        let path = self.dir.join(LOG_FILE);
        write_atomically(&path, &bytes)?;
        self.log = OpenOptions::new().read(true).append(true).open(&path)?;
        self.purged_in_file = 0;
        self.end = bytes.len() as u64;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let files = self.files.lock();
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        Ok(files
            .entries
            .range(bounds)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let files = self.files.lock();
        Ok(LogState {
            last_purged_log_id: files.persistent.last_purged,
            last_log_id: files.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.blocking("raft vote", move |files| {
            let previous = files.persistent.vote.replace(vote);
            files
                .save_persistent()
                .inspect_err(|_| files.persistent.vote = previous)
        })
        .await
        .map_err(|error| StorageIOError::write_vote(&error).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.files.lock().persistent.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let result = self
            .blocking("raft log append", move |files| {
                files.append(entries.clone())
            })
            .await;
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|error| io::Error::new(error.kind(), error.to_string())),
        );
        result.map_err(|error| StorageIOError::write_logs(&error).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking("raft log truncation", move |files| {
            files.truncate(log_id.index)
        })
        .await
        .map_err(|error| StorageIOError::write_logs(&error).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking("raft log purge", move |files| files.purge(log_id))
            .await
            .map_err(|error| StorageIOError::write_logs(&error).into())
    }
}
