//! The metadata log of one node: commands appended and fsync'ed before
//! they are acknowledged, applied to the state, and snapshots that let the
//! log start afresh (format in the [module doc](super)).
//!
//! Concurrency: a [`MetadataStore`] is used from one place at a time
//! (`&mut self`); the broker keeps it behind the lock that serialises its
//! administrative operations.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use weir_log::checkpoint::{sync_dir, write_atomically};

use crate::metadata::command::MetadataCommand;
use crate::metadata::error::MetadataError;
use crate::metadata::file::{
    encode_frame, encode_header, inspect, is_not_found, log_file_name, snapshot_file_name,
    Inspection, LogEntry, SnapshotBody, COMMAND_BYTES_MAX, LOG_MAGIC, SNAPSHOT_BYTES_MAX,
    SNAPSHOT_MAGIC,
};
use crate::metadata::state::MetadataState;

/// How often the store snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataOptions {
    /// A snapshot is written, and the commands file started afresh, once
    /// this many commands were appended since the last snapshot.
    pub snapshot_interval_commands: u64,
}

impl Default for MetadataOptions {
    fn default() -> MetadataOptions {
        MetadataOptions {
            snapshot_interval_commands: 1024,
        }
    }
}

/// The metadata state and the log that makes it durable.
#[derive(Debug)]
pub struct MetadataStore {
    dir: PathBuf,
    options: MetadataOptions,
    state: MetadataState,
    /// Index of the last command applied.
    last_index: u64,
    /// Index of the last command the newest durable snapshot includes.
    snapshot_index: u64,
    /// The commands file appended to, and its path.
    log: File,
    log_path: PathBuf,
    /// Set when a write or sync failed: what is on disk is no longer known.
    poisoned: Option<String>,
}

/// What opening a store found and repaired, for the operator's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Commands replayed on top of the snapshot.
    pub replayed: u64,
    /// A torn tail that was cut: `(file, position, bytes)`.
    pub cut: Option<(PathBuf, u64, u64)>,
}

impl MetadataStore {
    /// Creates a metadata directory at `dir` whose first snapshot (index 0)
    /// is `state`, all at once: it is assembled in `<dir>.new`, synced and
    /// renamed into place, so `dir` exists only complete.
    ///
    /// # Errors
    ///
    /// [`MetadataError::Io`]; `dir` then does not exist.
    /// [`MetadataError::Corrupt`] when `state` breaks an invariant.
    pub fn create(
        dir: &Path,
        state: MetadataState,
        options: MetadataOptions,
    ) -> Result<MetadataStore, MetadataError> {
        state
            .check_invariants()
            .map_err(|why| MetadataError::Corrupt {
                path: dir.to_owned(),
                position: 0,
                reason: format!("the initial state breaks an invariant: {why}"),
            })?;
        let staged = dir.with_extension("new");
        let io = |path: &Path| {
            let path = path.to_owned();
            move |error| MetadataError::io(path, error)
        };
        match fs::remove_dir_all(&staged) {
            Err(error) if !is_not_found(&error) => return Err(MetadataError::io(&staged, error)),
            _ => {}
        }
        fs::create_dir_all(&staged).map_err(io(&staged))?;
        write_snapshot(&staged, 0, &state)?;
        let log_path = staged.join(log_file_name(1));
        write_atomically(&log_path, &encode_header(LOG_MAGIC, 1)).map_err(io(&log_path))?;
        fs::rename(&staged, dir).map_err(io(dir))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(io(parent))?;
        }
        MetadataStore::open(dir, options).map(|(store, _)| store)
    }

    /// Opens the metadata directory `dir`: the newest snapshot, then the
    /// commands after it. A torn tail is cut (and the cut synced) and
    /// superseded files are removed.
    ///
    /// # Errors
    ///
    /// As [`crate::metadata::inspect`]; [`MetadataError::Io`] when the repair fails.
    pub fn open(
        dir: &Path,
        options: MetadataOptions,
    ) -> Result<(MetadataStore, Recovery), MetadataError> {
        let inspection = inspect(dir)?;
        let mut recovery = Recovery {
            replayed: inspection.replayed,
            cut: None,
        };
        if let Some(torn) = &inspection.torn_tail {
            cut_torn_tail(&torn.path, torn.position)?;
            tracing::warn!(
                file = %torn.path.display(),
                position = torn.position,
                bytes = torn.bytes,
                reason = %torn.reason,
                "cut a torn tail of the metadata log (a command whose append a crash interrupted; it was never acknowledged)"
            );
            recovery.cut = Some((torn.path.clone(), torn.position, torn.bytes));
        }
        let Inspection {
            state,
            last_index,
            snapshot_index,
            active_log,
            stale,
            ..
        } = inspection;
        let mut stale = stale;
        let (log, log_path) = match active_log {
            // Appending continues the file only where its records end at
            // the last index: a file older than the snapshot that ends
            // before it must not gain a gap.
            Some((path, _, end_index)) if end_index == last_index => {
                (open_for_append(&path)?, path)
            }
            other => {
                stale.extend(other.map(|(path, _, _)| path));
                new_log_file(dir, last_index + 1)?
            }
        };
        let store = MetadataStore {
            dir: dir.to_owned(),
            options,
            state,
            last_index,
            snapshot_index,
            log,
            log_path,
            poisoned: None,
        };
        store.remove_files(stale.into_iter().filter(|path| path != &store.log_path));
        Ok((store, recovery))
    }

    /// The current state.
    pub fn state(&self) -> &MetadataState {
        &self.state
    }

    /// Index of the last command applied (0 before any).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Index of the last command the newest snapshot includes.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// The metadata directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Validates `command`, appends it to the log and syncs it, then
    /// applies it; returns its index. Only a command that is durable
    /// changes the state. May write a snapshot afterwards.
    ///
    /// # Errors
    ///
    /// A refusal of [`MetadataState::validate`] (nothing written);
    /// [`MetadataError::CommandTooLarge`]; [`MetadataError::Io`] when the
    /// append failed (undone: the command is not in the log) or its sync
    /// failed, after which the store is poisoned ([`MetadataError::Poisoned`])
    /// until the broker restarts: whether the failed command survives is
    /// then decided by recovery, as for a crash.
    pub fn commit(&mut self, command: MetadataCommand) -> Result<u64, MetadataError> {
        if let Some(cause) = &self.poisoned {
            return Err(MetadataError::Poisoned(cause.clone()));
        }
        self.state.validate(&command)?;
        let index = self.last_index + 1;
        let payload = serde_json::to_vec(&LogEntry {
            index,
            command: &command,
        })
        .map_err(|error| MetadataError::io(&self.log_path, std::io::Error::other(error)))?;
        if payload.len() > COMMAND_BYTES_MAX {
            return Err(MetadataError::CommandTooLarge {
                bytes: payload.len(),
                limit: COMMAND_BYTES_MAX,
            });
        }
        self.append_durably(&encode_frame(&payload))?;
        self.state
            .apply(&command)
            .expect("a command validated against this state applies to it");
        self.last_index = index;
        if index - self.snapshot_index >= self.options.snapshot_interval_commands {
            self.snapshot();
        }
        Ok(index)
    }

    /// Appends `frame` and syncs it. A failed write (a full disk) is undone
    /// by cutting the file back to its length before it, and the store
    /// stays usable, as the partition logs do; a failed sync, or a write
    /// that cannot be undone, poisons the store.
    fn append_durably(&mut self, frame: &[u8]) -> Result<(), MetadataError> {
        let path = self.log_path.clone();
        let length_before = self
            .log
            .metadata()
            .map_err(|error| MetadataError::io(&path, error))?
            .len();
        if let Err(error) = self.log.write_all(frame) {
            let undone = self
                .log
                .set_len(length_before)
                .and_then(|()| self.log.sync_data());
            if let Err(undo_error) = undone {
                self.poison(&format!("{error}; cutting it back failed: {undo_error}"));
            }
            return Err(MetadataError::io(&path, error));
        }
        if let Err(error) = self.log.sync_data() {
            // Whether the record, or any of the file, survives a failed
            // sync is unknown (the kernel may have dropped the dirty
            // pages); recovery decides, as after a crash. Best effort: take
            // the record back from the cache.
            let _ = self.log.set_len(length_before);
            self.poison(&error.to_string());
            return Err(MetadataError::io(&path, error));
        }
        Ok(())
    }

    /// Refuses every further command until a restart: for a failure that
    /// leaves the state and what the caller did with it disagreeing.
    pub(crate) fn poison(&mut self, cause: &str) {
        tracing::error!(file = %self.log_path.display(), cause, "the metadata log failed; metadata changes are refused until a restart");
        self.poisoned = Some(cause.to_owned());
    }

    /// Writes a snapshot of the current state and starts a new commands
    /// file after it; the superseded files are then removed. A snapshot
    /// that cannot be written is logged and retried after the next command:
    /// the commands file still holds everything. A failure to start the new
    /// commands file poisons the store, because which file recovery would
    /// then read is no longer certain.
    pub fn snapshot(&mut self) {
        if self.poisoned.is_some() || self.snapshot_index == self.last_index {
            return;
        }
        if let Err(error) = write_snapshot(&self.dir, self.last_index, &self.state) {
            tracing::warn!(%error, "writing a metadata snapshot failed; the commands file keeps growing until one succeeds");
            return;
        }
        let previous_snapshot = self.snapshot_index;
        self.snapshot_index = self.last_index;
        match new_log_file(&self.dir, self.last_index + 1) {
            Ok((log, path)) => {
                let old_log = std::mem::replace(&mut self.log_path, path);
                self.log = log;
                let old_snapshot = self.dir.join(snapshot_file_name(previous_snapshot));
                self.remove_files([old_log, old_snapshot].into_iter());
            }
            Err(error) => self.poison(&format!("starting a new commands file failed: {error}")),
        }
    }

    /// Removes superseded files; a failure leaves them for the next start.
    fn remove_files(&self, paths: impl Iterator<Item = PathBuf>) {
        let mut removed = false;
        for path in paths {
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(error) if is_not_found(&error) => {}
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "cannot remove a superseded metadata file; the next start retries")
                }
            }
        }
        if removed {
            if let Err(error) = sync_dir(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), %error, "syncing the metadata directory failed");
            }
        }
    }
}

/// Writes `snapshot-<last_index>.snap` atomically.
fn write_snapshot(dir: &Path, last_index: u64, state: &MetadataState) -> Result<(), MetadataError> {
    let path = dir.join(snapshot_file_name(last_index));
    let body = serde_json::to_vec(&SnapshotBody { last_index, state })
        .map_err(|error| MetadataError::io(&path, std::io::Error::other(error)))?;
    if body.len() > SNAPSHOT_BYTES_MAX {
        return Err(MetadataError::io(
            &path,
            std::io::Error::other(format!(
                "a snapshot of {} bytes exceeds the limit of {SNAPSHOT_BYTES_MAX}",
                body.len()
            )),
        ));
    }
    let mut bytes = encode_header(SNAPSHOT_MAGIC, last_index).to_vec();
    bytes.extend_from_slice(&encode_frame(&body));
    write_atomically(&path, &bytes).map_err(|error| MetadataError::io(&path, error))
}

/// Creates an empty commands file whose first record will be `first_index`
/// (written aside and renamed, so it exists only with a whole header) and
/// opens it for appending.
fn new_log_file(dir: &Path, first_index: u64) -> Result<(File, PathBuf), MetadataError> {
    let path = dir.join(log_file_name(first_index));
    write_atomically(&path, &encode_header(LOG_MAGIC, first_index))
        .map_err(|error| MetadataError::io(&path, error))?;
    Ok((open_for_append(&path)?, path))
}

fn open_for_append(path: &Path) -> Result<File, MetadataError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|error| MetadataError::io(path, error))
}

fn cut_torn_tail(path: &Path, position: u64) -> Result<(), MetadataError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|error| MetadataError::io(path, error))?;
    file.set_len(position)
        .and_then(|()| file.sync_data())
        .map_err(|error| MetadataError::io(path, error))
}
