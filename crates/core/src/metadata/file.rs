//! The bytes of the metadata log's files: headers, framed records, and the
//! scans that read them back (format in the [module doc](super)).
//!
//! Everything here reads; nothing changes a file. [`inspect`] is what a
//! start-up and `weir data check` both run.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metadata::command::MetadataCommand;
use crate::metadata::error::MetadataError;
use crate::metadata::state::MetadataState;

/// First bytes of a commands file.
pub(crate) const LOG_MAGIC: [u8; 8] = *b"WEIRMLOG";
/// First bytes of a snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"WEIRMSNP";
/// Version of the file format (header, framing, JSON envelope).
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Magic, version, index, CRC.
pub(crate) const FILE_HEADER_BYTES: usize = 8 + 4 + 8 + 4;
/// Length and CRC before each record's payload.
pub(crate) const FRAME_HEADER_BYTES: usize = 4 + 4;
/// Largest serialized command; checked before a command is appended and
/// before a record is read.
pub const COMMAND_BYTES_MAX: usize = 1 << 20;
/// Largest serialized snapshot.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;

const LOG_PREFIX: &str = "commands-";
const LOG_SUFFIX: &str = ".log";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";

/// One record of a commands file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LogEntry<C> {
    /// Position of the command in the history, from 1, without gaps.
    pub index: u64,
    /// The command.
    pub command: C,
}

/// The one record of a snapshot file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotBody<S> {
    /// Index of the last command the state includes (0: none).
    pub last_index: u64,
    /// The image.
    pub state: S,
}

/// Name of the commands file whose first record has index `first_index`.
pub(crate) fn log_file_name(first_index: u64) -> String {
    format!("{LOG_PREFIX}{first_index:020}{LOG_SUFFIX}")
}

/// Name of the snapshot of the state after command `last_index`.
pub(crate) fn snapshot_file_name(last_index: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{last_index:020}{SNAPSHOT_SUFFIX}")
}

/// A file header: magic, format version, index, CRC32C of the 20 bytes before it.
pub(crate) fn encode_header(magic: [u8; 8], index: u64) -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0; FILE_HEADER_BYTES];
    header[..8].copy_from_slice(&magic);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&index.to_le_bytes());
    let crc = crc32c::crc32c(&header[..20]);
    header[20..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The index a file header carries.
fn decode_header(bytes: &[u8], magic: [u8; 8], path: &Path) -> Result<u64, MetadataError> {
    let corrupt = |reason: String| MetadataError::Corrupt {
        path: path.to_owned(),
        position: 0,
        reason,
    };
    let Some(header) = bytes.get(..FILE_HEADER_BYTES) else {
        // Files are created whole (written aside, synced, renamed): a short
        // header is damage, not a crash.
        return Err(corrupt(format!(
            "{} bytes, shorter than the {FILE_HEADER_BYTES}-byte header",
            bytes.len()
        )));
    };
    if header[..8] != magic {
        return Err(corrupt("not a Weir metadata file (wrong magic)".into()));
    }
    let crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
    if crc32c::crc32c(&header[..20]) != crc {
        return Err(corrupt("header CRC mismatch".into()));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {version}; this Weir reads version {FORMAT_VERSION}"
        )));
    }
    Ok(u64::from_le_bytes(
        header[12..20].try_into().expect("8 bytes"),
    ))
}

/// A record: payload length (u32 LE), CRC32C of the length's bytes and the
/// payload (u32 LE), payload.
pub(crate) fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&length);
    crc = crc32c::crc32c_append(crc, payload);
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&length);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The whole, CRC-checked record at `position`: its payload and where the
/// next record starts; otherwise why not.
fn frame_at(bytes: &[u8], position: usize, limit: usize) -> Result<(&[u8], usize), String> {
    let Some(header) = bytes.get(position..position + FRAME_HEADER_BYTES) else {
        return Err("a record header cut short".into());
    };
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if length == 0 || length > limit {
        return Err(format!(
            "a record length of {length} bytes (1 to {limit} allowed)"
        ));
    }
    let start = position + FRAME_HEADER_BYTES;
    let Some(payload) = bytes.get(start..start + length) else {
        return Err(format!("a record of {length} bytes cut short"));
    };
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c_append(crc32c::crc32c(&header[..4]), payload);
    if computed != crc {
        return Err("a record CRC mismatch".into());
    }
    Ok((payload, start + length))
}

/// The first position after `from` where a whole record with a matching CRC starts.
fn next_valid_frame(bytes: &[u8], from: usize, limit: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(FRAME_HEADER_BYTES))
        .find(|&position| frame_at(bytes, position, limit).is_ok())
}

/// Reads a snapshot file: the index of the last command it includes and the state.
///
/// # Errors
///
/// [`MetadataError::Io`] when unreadable; [`MetadataError::Corrupt`] for
/// any damage (a snapshot is written whole, so damage is never a torn tail)
/// or a state that breaks an invariant.
pub(crate) fn read_snapshot(path: &Path) -> Result<(u64, MetadataState), MetadataError> {
    let bytes = read_bounded(
        path,
        SNAPSHOT_BYTES_MAX + FILE_HEADER_BYTES + FRAME_HEADER_BYTES,
    )?;
    let index = decode_header(&bytes, SNAPSHOT_MAGIC, path)?;
    let corrupt = |position: usize, reason: String| MetadataError::Corrupt {
        path: path.to_owned(),
        position: position as u64,
        reason,
    };
    let (payload, end) = frame_at(&bytes, FILE_HEADER_BYTES, SNAPSHOT_BYTES_MAX)
        .map_err(|why| corrupt(FILE_HEADER_BYTES, why))?;
    if end != bytes.len() {
        return Err(corrupt(end, "bytes after the snapshot record".into()));
    }
    let body: SnapshotBody<MetadataState> = serde_json::from_slice(payload)
        .map_err(|error| corrupt(FILE_HEADER_BYTES, format!("undecodable snapshot: {error}")))?;
    if body.last_index != index {
        return Err(corrupt(
            FILE_HEADER_BYTES,
            format!(
                "snapshot of command {} in a file headed {index}",
                body.last_index
            ),
        ));
    }
    body.state.check_invariants().map_err(|why| {
        corrupt(
            FILE_HEADER_BYTES,
            format!("the state breaks an invariant: {why}"),
        )
    })?;
    Ok((index, body.state))
}

/// Bad bytes at the end of the commands file with no valid record after
/// them: what a crash during an append leaves. Recovery cuts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The commands file.
    pub path: PathBuf,
    /// Where the bad bytes start (the file's valid length).
    pub position: u64,
    /// How many bytes are cut.
    pub bytes: u64,
    /// What is wrong at `position`.
    pub reason: String,
}

/// What reading a commands file found.
#[derive(Debug)]
pub(crate) struct LogScan {
    /// Index of the file's first record (from its header).
    pub first_index: u64,
    /// Index of its last whole record; `first_index - 1` when it has none.
    pub end_index: u64,
    /// Records applied to the state (those after the snapshot).
    pub applied: u64,
    /// Damage at the end, to be cut.
    pub torn_tail: Option<TornTail>,
}

/// Reads the commands file at `path`, applying every command after
/// `snapshot_index` to `state`, in order.
///
/// # Errors
///
/// [`MetadataError::Corrupt`] naming the file and position for damage
/// followed by a valid record, a record out of sequence or undecodable, or a
/// command that does not apply (the log then disagrees with its snapshot).
pub(crate) fn replay_log(
    path: &Path,
    snapshot_index: u64,
    state: &mut MetadataState,
) -> Result<LogScan, MetadataError> {
    let bytes = fs::read(path).map_err(|error| MetadataError::io(path, error))?;
    let first_index = decode_header(&bytes, LOG_MAGIC, path)?;
    let corrupt = |position: usize, reason: String| MetadataError::Corrupt {
        path: path.to_owned(),
        position: position as u64,
        reason,
    };
    let mut scan = LogScan {
        first_index,
        end_index: first_index.saturating_sub(1),
        applied: 0,
        torn_tail: None,
    };
    let mut position = FILE_HEADER_BYTES;
    while position < bytes.len() {
        let (payload, end) = match frame_at(&bytes, position, COMMAND_BYTES_MAX) {
            Ok(frame) => frame,
            Err(why) => {
                if let Some(resume) = next_valid_frame(&bytes, position + 1, COMMAND_BYTES_MAX) {
                    return Err(corrupt(
                        position,
                        format!("{why}, followed by a valid record at byte {resume}"),
                    ));
                }
                scan.torn_tail = Some(TornTail {
                    path: path.to_owned(),
                    position: position as u64,
                    bytes: (bytes.len() - position) as u64,
                    reason: why,
                });
                break;
            }
        };
        let entry: LogEntry<MetadataCommand> = serde_json::from_slice(payload)
            .map_err(|error| corrupt(position, format!("undecodable command: {error}")))?;
        let expected = scan.end_index + 1;
        if entry.index != expected {
            return Err(corrupt(
                position,
                format!("command {} where command {expected} belongs", entry.index),
            ));
        }
        if entry.index > snapshot_index {
            state.apply(&entry.command).map_err(|error| {
                corrupt(
                    position,
                    format!(
                        "command {} ({}) does not apply to the state before it: {error}",
                        entry.index,
                        entry.command.kind()
                    ),
                )
            })?;
            scan.applied += 1;
        }
        scan.end_index = entry.index;
        position = end;
    }
    Ok(scan)
}

fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, MetadataError> {
    let length = fs::metadata(path)
        .map_err(|error| MetadataError::io(path, error))?
        .len();
    if length > limit as u64 {
        return Err(MetadataError::Corrupt {
            path: path.to_owned(),
            position: 0,
            reason: format!("{length} bytes; the limit is {limit}"),
        });
    }
    fs::read(path).map_err(|error| MetadataError::io(path, error))
}

/// The files of a metadata directory, by kind.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Snapshots by the index they end at, ascending.
    pub snapshots: Vec<(u64, PathBuf)>,
    /// Commands files by their first index, ascending.
    pub logs: Vec<(u64, PathBuf)>,
    /// Files being written when a crash came (`*.tmp`).
    pub temporary: Vec<PathBuf>,
}

/// Lists `dir`; names the metadata log does not write are left alone.
pub(crate) fn list(dir: &Path) -> Result<Listing, MetadataError> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(|error| MetadataError::io(dir, error))?;
    for entry in entries {
        let path = entry.map_err(|error| MetadataError::io(dir, error))?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let index = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u64>()
                .ok()
        };
        if let Some(index) = index(SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            listing.snapshots.push((index, path));
        } else if let Some(index) = index(LOG_PREFIX, LOG_SUFFIX) {
            listing.logs.push((index, path));
        } else if name.ends_with(".tmp") {
            listing.temporary.push(path);
        }
    }
    listing.snapshots.sort();
    listing.logs.sort();
    Ok(listing)
}

/// What a metadata directory holds, read without changing anything.
#[derive(Debug)]
pub struct Inspection {
    /// The state after the last whole command.
    pub state: MetadataState,
    /// Index of the last command applied (0: none since the first snapshot).
    pub last_index: u64,
    /// The snapshot recovery started from.
    pub snapshot: PathBuf,
    /// Index of the last command that snapshot includes.
    pub snapshot_index: u64,
    /// The commands file replayed after the snapshot, with its first index
    /// and the index of its last whole record.
    pub active_log: Option<(PathBuf, u64, u64)>,
    /// Commands replayed on top of the snapshot.
    pub replayed: u64,
    /// Damage at the end of the commands file, cut by the next start.
    pub torn_tail: Option<TornTail>,
    /// Superseded snapshots and commands files, and leftovers of
    /// interrupted writes: removed by the next start.
    pub stale: Vec<PathBuf>,
}

/// Reads the metadata directory `dir`: the newest snapshot, then the
/// newest commands file on top of it. Changes nothing.
///
/// # Errors
///
/// [`MetadataError::Io`] when a file cannot be read;
/// [`MetadataError::Corrupt`] naming the file for damage other than a torn
/// tail, a missing snapshot, or a gap between snapshot and commands.
pub fn inspect(dir: &Path) -> Result<Inspection, MetadataError> {
    let mut listing = list(dir)?;
    let Some((snapshot_index, snapshot)) = listing.snapshots.pop() else {
        return Err(MetadataError::Corrupt {
            path: dir.to_owned(),
            position: 0,
            reason: "no snapshot file: the directory is not a metadata log".into(),
        });
    };
    let (read_index, mut state) = read_snapshot(&snapshot)?;
    debug_assert_eq!(read_index, snapshot_index);
    let mut stale: Vec<PathBuf> = listing.snapshots.into_iter().map(|(_, p)| p).collect();
    stale.extend(listing.temporary);
    let active = listing.logs.pop();
    stale.extend(listing.logs.into_iter().map(|(_, p)| p));
    let mut inspection = Inspection {
        state: MetadataState::new(),
        last_index: snapshot_index,
        snapshot,
        snapshot_index,
        active_log: None,
        replayed: 0,
        torn_tail: None,
        stale,
    };
    if let Some((first_index, path)) = active {
        if first_index > snapshot_index + 1 {
            return Err(MetadataError::Corrupt {
                path,
                position: 0,
                reason: format!(
                    "starts at command {first_index}, but the newest snapshot ends at command \
                     {snapshot_index}: the commands between are missing"
                ),
            });
        }
        let scan = replay_log(&path, snapshot_index, &mut state)?;
        if scan.first_index != first_index {
            return Err(MetadataError::Corrupt {
                path,
                position: 0,
                reason: format!("headed {} but named {first_index}", scan.first_index),
            });
        }
        inspection.last_index = snapshot_index.max(scan.end_index);
        inspection.replayed = scan.applied;
        inspection.torn_tail = scan.torn_tail;
        inspection.active_log = Some((path, scan.first_index, scan.end_index));
    }
    inspection.state = state;
    Ok(inspection)
}

/// Whether `error` says the file does not exist.
pub(crate) fn is_not_found(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound
}
