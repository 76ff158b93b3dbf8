//! Offline verification of a partition directory, for `weir data check DIR`
//! (like Kafka's `kafka-dump-log --deep-iteration` and
//! `--verify-index-only` together).
//!
//! [`verify_log_dir`] opens every file read-only and changes nothing on
//! disk. It checks every segment from its first byte: each batch's header,
//! length and CRC; offsets following each other without gaps across batches
//! and segments; offset-index entries pointing at batch starts with
//! increasing offsets and positions; time-index entries monotone and inside
//! their segment; leftover `.tmp` files. Damage followed by valid batches
//! is reported with the offsets it covers, as recovery would fence it;
//! damage at the end of a segment is reported as a torn tail, as recovery
//! would cut it (if it is the active segment).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::batch::{BatchHeader, HEADER_BYTES};
use crate::index::{OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use crate::segment::Segment;
use crate::storage::{StdStorage, Storage, StorageFile};
use crate::stored::{crc_matches, find_valid_batch};

/// What [`verify_log_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The directory checked.
    pub dir: PathBuf,
    /// Segments (`.log` files) found.
    pub segments: u64,
    /// Valid batches.
    pub batches: u64,
    /// Records in the valid batches (as their headers count them).
    pub records: u64,
    /// Bytes of all `.log` files.
    pub bytes: u64,
    /// First offset of the first segment, if any.
    pub log_start_offset: Option<u64>,
    /// Offset after the last valid batch, if any segment.
    pub log_end_offset: Option<u64>,
    /// Every problem, in file order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Byte position in the file, where it applies.
    pub position: Option<u64>,
    /// Offsets affected, `[first, end)`, where known.
    pub offsets: Option<(u64, u64)>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// Bytes that are not a valid batch, with valid batches after them:
    /// recovery fences them; reads of their offsets fail.
    DamagedBytes {
        /// Damaged bytes.
        bytes: u64,
        /// Why the first of them is not a valid batch.
        reason: String,
    },
    /// Bytes at the end of a segment with no valid batch after them:
    /// recovery cuts them from the active segment.
    TornTail {
        /// Bytes from the first invalid one to the end of the file.
        bytes: u64,
        /// Why the first of them is not a valid batch.
        reason: String,
    },
    /// A segment does not start where the one before it ends.
    SegmentGap {
        /// Where the previous segment's valid batches end.
        expected: u64,
    },
    /// An offset-index file whose length is not a whole number of entries.
    IndexTornEntry {
        /// Bytes of the file.
        bytes: u64,
    },
    /// An offset-index entry not after the one before it.
    IndexOutOfOrder {
        /// Entry number.
        entry: usize,
    },
    /// An offset-index entry that does not point at the start of the batch
    /// with its offset.
    IndexEntryNotAtBatchStart {
        /// Entry number.
        entry: usize,
        /// Offset the entry names.
        offset: u64,
    },
    /// A time-index file whose length is not a whole number of entries.
    TimeIndexTornEntry {
        /// Bytes of the file.
        bytes: u64,
    },
    /// A time-index entry whose timestamp does not increase or whose offset goes back.
    TimeIndexOutOfOrder {
        /// Entry number.
        entry: usize,
    },
    /// A time-index entry naming an offset outside its segment.
    TimeIndexOffsetOutsideSegment {
        /// Entry number.
        entry: usize,
        /// Offset the entry names.
        offset: u64,
    },
    /// A `.tmp` file left by an interrupted atomic write (removed on open).
    LeftoverTemporaryFile,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(position) = self.position {
            write!(f, " at byte {position}")?;
        }
        if let Some((first, end)) = self.offsets {
            write!(f, " (offsets {first}..{end})")?;
        }
        write!(f, ": ")?;
        match &self.kind {
            ProblemKind::DamagedBytes { bytes, reason } => {
                write!(
                    f,
                    "{bytes} damaged bytes followed by valid batches: {reason}"
                )
            }
            ProblemKind::TornTail { bytes, reason } => {
                write!(f, "torn tail of {bytes} bytes: {reason}")
            }
            ProblemKind::SegmentGap { expected } => {
                write!(
                    f,
                    "segment does not start at {expected}, where the one before ends"
                )
            }
            ProblemKind::IndexTornEntry { bytes } => {
                write!(f, "index of {bytes} bytes ends inside an entry")
            }
            ProblemKind::IndexOutOfOrder { entry } => {
                write!(f, "index entry {entry} does not increase")
            }
            ProblemKind::IndexEntryNotAtBatchStart { entry, offset } => write!(
                f,
                "index entry {entry} for offset {offset} does not point at that batch"
            ),
            ProblemKind::TimeIndexTornEntry { bytes } => {
                write!(f, "time index of {bytes} bytes ends inside an entry")
            }
            ProblemKind::TimeIndexOutOfOrder { entry } => {
                write!(f, "time index entry {entry} is not monotone")
            }
            ProblemKind::TimeIndexOffsetOutsideSegment { entry, offset } => write!(
                f,
                "time index entry {entry} names offset {offset}, outside the segment"
            ),
            ProblemKind::LeftoverTemporaryFile => write!(f, "leftover temporary file"),
        }
    }
}

/// Checks the partition directory `dir` on the real disk without writing
/// anything (see the module docs).
///
/// # Errors
///
/// I/O errors reading the directory or its files; damage is not an error
/// but a [`Problem`] in the report.
pub fn verify_log_dir(dir: &Path) -> io::Result<VerifyReport> {
    verify_log_dir_in(&StdStorage, dir)
}

/// As [`verify_log_dir`], through `storage`.
///
/// # Errors
///
/// As [`verify_log_dir`].
pub fn verify_log_dir_in(storage: &dyn Storage, dir: &Path) -> io::Result<VerifyReport> {
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        ..VerifyReport::default()
    };
    let mut bases = Vec::new();
    let mut paths = storage.read_dir(dir)?;
    paths.sort();
    for path in paths {
        match path.extension().and_then(|e| e.to_str()) {
            Some("log") => {
                if let Some(base) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    bases.push(base);
                }
            }
            Some("tmp") => report.problems.push(Problem {
                path,
                position: None,
                offsets: None,
                kind: ProblemKind::LeftoverTemporaryFile,
            }),
            _ => {}
        }
    }
    bases.sort_unstable();
    report.log_start_offset = bases.first().copied();
    let mut previous_end: Option<u64> = None;
    for base in bases {
        let stem = Segment::file_stem(base);
        let log_path = dir.join(format!("{stem}.log"));
        if let Some(expected) = previous_end.filter(|&end| end != base) {
            report.problems.push(Problem {
                path: log_path.clone(),
                position: Some(0),
                offsets: Some((expected.min(base), expected.max(base))),
                kind: ProblemKind::SegmentGap { expected },
            });
        }
        let scan = scan_segment(storage, &log_path, base, &mut report)?;
        check_offset_index(
            storage,
            &dir.join(format!("{stem}.index")),
            base,
            &scan,
            &mut report,
        )?;
        check_time_index(
            storage,
            &dir.join(format!("{stem}.timeindex")),
            base,
            scan.end_offset,
            &mut report,
        )?;
        previous_end = Some(scan.end_offset);
        report.log_end_offset = Some(scan.end_offset);
    }
    Ok(report)
}

/// What a segment scan learnt for the index checks.
struct SegmentScan {
    /// Batch start position → base offset of every valid batch, and of
    /// every damaged range (an index entry may point at a batch damaged since).
    starts: BTreeMap<u64, u64>,
    /// Offset after the last valid batch.
    end_offset: u64,
}

fn scan_segment(
    storage: &dyn Storage,
    path: &Path,
    base: u64,
    report: &mut VerifyReport,
) -> io::Result<SegmentScan> {
    let file = storage.open_read(path)?;
    let size = file.len()?;
    report.segments += 1;
    report.bytes += size;
    let mut scan = SegmentScan {
        starts: BTreeMap::new(),
        end_offset: base,
    };
    let fits = |header: &BatchHeader, next: u64| {
        header.base_offset >= next && header.last_offset() - base <= u64::from(u32::MAX)
    };
    let mut position = 0;
    while position < size {
        let reason = match checked_batch(file.as_ref(), position, size)? {
            Ok(header) if header.base_offset == scan.end_offset && fits(&header, base) => {
                scan.starts.insert(position, header.base_offset);
                report.batches += 1;
                report.records += header.records_count.max(0) as u64;
                scan.end_offset = header.last_offset() + 1;
                position += header.total_bytes() as u64;
                continue;
            }
            Ok(header) => format!(
                "batch with base offset {} where {} was expected",
                header.base_offset, scan.end_offset
            ),
            Err(reason) => reason,
        };
        let next = scan.end_offset;
        let resume = find_valid_batch(file.as_ref(), position + 1, size, |header, at| {
            fits(header, next) && at + header.total_bytes() as u64 <= size
        })?;
        let problem = |offsets, kind| Problem {
            path: path.to_path_buf(),
            position: Some(position),
            offsets,
            kind,
        };
        match resume {
            Some((at, header)) => {
                scan.starts.insert(position, next);
                report.problems.push(problem(
                    Some((next, header.base_offset)),
                    ProblemKind::DamagedBytes {
                        bytes: at - position,
                        reason,
                    },
                ));
                scan.end_offset = header.base_offset;
                position = at;
            }
            None => {
                report.problems.push(problem(
                    None,
                    ProblemKind::TornTail {
                        bytes: size - position,
                        reason,
                    },
                ));
                break;
            }
        }
    }
    Ok(scan)
}

/// The header of the batch at `position` if it is whole and valid, or why not.
fn checked_batch(
    file: &dyn StorageFile,
    position: u64,
    size: u64,
) -> io::Result<Result<BatchHeader, String>> {
    let left = size - position;
    if left < HEADER_BYTES as u64 {
        return Ok(Err(format!(
            "only {left} bytes left, less than a batch header"
        )));
    }
    let mut buf = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut buf, position)?;
    let header = match BatchHeader::parse(&buf) {
        Ok(header) => header,
        Err(error) => return Ok(Err(error.to_string())),
    };
    if header.total_bytes() as u64 > left {
        return Ok(Err(format!(
            "batch claims {} bytes, only {left} left",
            header.total_bytes()
        )));
    }
    if !crc_matches(file, &header, position)? {
        return Ok(Err("CRC mismatch".to_string()));
    }
    if header.records_count < 0 || header.records_count as u64 > header.offset_count() {
        return Ok(Err("record count does not fit the offset range".to_string()));
    }
    Ok(Ok(header))
}

/// Whole contents of an index file, `None` when it does not exist (a
/// missing index is rebuilt by recovery, not a problem).
fn read_optional(storage: &dyn Storage, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match storage.read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn check_offset_index(
    storage: &dyn Storage,
    path: &Path,
    base: u64,
    scan: &SegmentScan,
    report: &mut VerifyReport,
) -> io::Result<()> {
    let Some(bytes) = read_optional(storage, path)? else {
        return Ok(());
    };
    let problem = |entry: usize, kind| Problem {
        path: path.to_path_buf(),
        position: Some((entry * OFFSET_ENTRY_BYTES) as u64),
        offsets: None,
        kind,
    };
    if bytes.len() % OFFSET_ENTRY_BYTES != 0 {
        let entries = bytes.len() / OFFSET_ENTRY_BYTES;
        report.problems.push(problem(
            entries,
            ProblemKind::IndexTornEntry {
                bytes: bytes.len() as u64,
            },
        ));
    }
    let mut previous: Option<(u32, u32)> = None;
    for (entry, chunk) in bytes.chunks_exact(OFFSET_ENTRY_BYTES).enumerate() {
        let relative = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        if previous.is_some_and(|(r, p)| relative <= r || position <= p) {
            report
                .problems
                .push(problem(entry, ProblemKind::IndexOutOfOrder { entry }));
        }
        let offset = base + u64::from(relative);
        if scan.starts.get(&u64::from(position)) != Some(&offset) {
            report.problems.push(problem(
                entry,
                ProblemKind::IndexEntryNotAtBatchStart { entry, offset },
            ));
        }
        previous = Some((relative, position));
    }
    Ok(())
}

fn check_time_index(
    storage: &dyn Storage,
    path: &Path,
    base: u64,
    end_offset: u64,
    report: &mut VerifyReport,
) -> io::Result<()> {
    let Some(bytes) = read_optional(storage, path)? else {
        return Ok(());
    };
    let problem = |entry: usize, kind| Problem {
        path: path.to_path_buf(),
        position: Some((entry * TIME_ENTRY_BYTES) as u64),
        offsets: None,
        kind,
    };
    if bytes.len() % TIME_ENTRY_BYTES != 0 {
        let entries = bytes.len() / TIME_ENTRY_BYTES;
        report.problems.push(problem(
            entries,
            ProblemKind::TimeIndexTornEntry {
                bytes: bytes.len() as u64,
            },
        ));
    }
    let mut previous: Option<(i64, u32)> = None;
    for (entry, chunk) in bytes.chunks_exact(TIME_ENTRY_BYTES).enumerate() {
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&chunk[..8]);
        let timestamp = i64::from_be_bytes(timestamp);
        let relative = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
        if previous.is_some_and(|(t, r)| timestamp <= t || relative < r) {
            report
                .problems
                .push(problem(entry, ProblemKind::TimeIndexOutOfOrder { entry }));
        }
        let offset = base + u64::from(relative);
        if offset >= end_offset.max(base + 1) {
            report.problems.push(problem(
                entry,
                ProblemKind::TimeIndexOffsetOutsideSegment { entry, offset },
            ));
        }
        previous = Some((timestamp, relative));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{encode_batch, validate, NewRecord};
    use crate::{Log, LogConfig};
    use bytes::Bytes;

    fn batch(records: usize, value_bytes: usize, seed: u8) -> (BatchHeader, Bytes) {
        let records: Vec<NewRecord> = (0..records)
            .map(|_| NewRecord {
                timestamp: 1_700_000_000_000 + i64::from(seed),
                key: None,
                value: Some(Bytes::from(vec![seed; value_bytes])),
                headers: Vec::new(),
            })
            .collect();
        let bytes = encode_batch(&records);
        (validate(&bytes).expect("valid"), bytes)
    }

    /// A closed log of 3 segments, 30 batches of 2 records, with index entries.
    fn good_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 1500,
            index_interval_bytes: 100,
            retention_ms: None,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), config, false).expect("open");
        for i in 0..30u8 {
            log.append(&[batch(2, 40, i)], 0, 1_700_000_000_000)
                .expect("append");
        }
        log.close().expect("close");
        dir
    }

    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| {
                let path = entry.expect("entry").path();
                let bytes = std::fs::read(&path).expect("read");
                (path, bytes)
            })
            .collect();
        files.sort();
        files
    }

    fn first_segment(dir: &Path) -> PathBuf {
        dir.join(format!("{}.log", Segment::file_stem(0)))
    }

    #[test]
    fn a_good_log_is_clean_and_counted() {
        let dir = good_dir();
        let before = snapshot(dir.path());
        let report = verify_log_dir(dir.path()).expect("verify");
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.batches, 30);
        assert_eq!(report.records, 60);
        assert!(report.segments >= 3);
        assert_eq!(report.log_start_offset, Some(0));
        assert_eq!(report.log_end_offset, Some(60));
        assert_eq!(snapshot(dir.path()), before, "verify changed nothing");
    }

    #[test]
    fn a_flipped_byte_in_a_middle_batch_is_damage_with_its_offsets() {
        let dir = good_dir();
        let path = first_segment(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        let (_, one) = batch(2, 40, 0);
        // The third batch of the first segment: offsets 4..6.
        bytes[2 * one.len() + one.len() - 5] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let before = snapshot(dir.path());
        let report = verify_log_dir(dir.path()).expect("verify");
        assert_eq!(snapshot(dir.path()), before, "verify changed nothing");
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        let problem = &report.problems[0];
        assert_eq!(problem.path, path);
        assert_eq!(problem.position, Some(2 * one.len() as u64));
        assert_eq!(problem.offsets, Some((4, 6)));
        assert!(matches!(problem.kind, ProblemKind::DamagedBytes { .. }));
        assert_eq!(report.batches, 29);
        assert_eq!(report.log_end_offset, Some(60));
        assert!(problem.to_string().contains("offsets 4..6"));
    }

    #[test]
    fn a_torn_tail_garbage_indexes_and_leftovers_are_reported() {
        let dir = good_dir();
        let last = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("log"))
            .max()
            .expect("a segment");
        let mut bytes = std::fs::read(&last).expect("read");
        bytes.truncate(bytes.len() - 9);
        std::fs::write(&last, &bytes).expect("write");
        let index = first_segment(dir.path()).with_extension("index");
        std::fs::write(&index, [0u8, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0]).expect("write index");
        let time_index = first_segment(dir.path()).with_extension("timeindex");
        let mut entries = Vec::new();
        for (ts, rel) in [(50i64, 1u32), (40, 2), (60, 999)] {
            entries.extend_from_slice(&ts.to_be_bytes());
            entries.extend_from_slice(&rel.to_be_bytes());
        }
        std::fs::write(&time_index, &entries).expect("write time index");
        std::fs::write(dir.path().join("leader-epoch-checkpoint.tmp"), b"0\n").expect("tmp");
        let report = verify_log_dir(dir.path()).expect("verify");
        let kinds: Vec<&ProblemKind> = report.problems.iter().map(|p| &p.kind).collect();
        assert!(
            kinds.contains(&&ProblemKind::LeftoverTemporaryFile),
            "{kinds:?}"
        );
        assert!(kinds
            .iter()
            .any(|k| matches!(k, ProblemKind::TornTail { .. })));
        assert!(kinds.contains(&&ProblemKind::IndexTornEntry { bytes: 11 }));
        assert!(kinds
            .iter()
            .any(|k| matches!(k, ProblemKind::IndexEntryNotAtBatchStart { offset: 3, .. })));
        assert!(kinds.contains(&&ProblemKind::TimeIndexOutOfOrder { entry: 1 }));
        assert!(kinds.iter().any(|k| matches!(
            k,
            ProblemKind::TimeIndexOffsetOutsideSegment { entry: 2, .. }
        )));
    }
}
