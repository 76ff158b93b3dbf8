//! Crash recovery: a log whose last batch was torn or corrupted reopens
//! (`clean = false`) with exactly the batches before it, cuts the file
//! there, and carries on appending at the right offset.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use bytes::Bytes;
use weir_log::{Log, LogConfig};

use common::{
    batch, batch_with_timestamps, check_whole_log, config, copy_dir, parsed, segment_files,
    segment_index_path, segment_log_path, segment_time_index_path, Model, NOW_MS,
};

/// A crashed log directory (written, never closed) and what it holds.
struct CrashedLog {
    dir: tempfile::TempDir,
    config: LogConfig,
    model: Model,
}

impl CrashedLog {
    /// Appends `batches` one call each (rolling before the last one when
    /// `roll_before_last`), then drops the log without closing it.
    fn build(config: LogConfig, batches: &[Bytes], roll_before_last: bool) -> CrashedLog {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = Model::default();
        let mut log = Log::open(dir.path(), config.clone(), false).expect("open");
        for (i, bytes) in batches.iter().enumerate() {
            if roll_before_last && i + 1 == batches.len() {
                log.roll().expect("roll");
            }
            // The last batch starts a new leader epoch, which recovery must
            // forget when it cuts the batch.
            let epoch = i32::from(i + 1 == batches.len());
            model.append(std::slice::from_ref(bytes), epoch);
            log.append(&parsed(std::slice::from_ref(bytes)), epoch, NOW_MS)
                .expect("append");
        }
        drop(log);
        CrashedLog { dir, config, model }
    }

    /// Base offset of the active segment and where the last batch starts in it.
    fn last_batch_position(&self) -> (u64, u64, usize) {
        let (base, size) = *segment_files(self.dir.path()).last().expect("a segment");
        let last = self.model.batches.last().expect("a batch");
        let len = last.tail.len() + weir_log::batch::STAMPED_PREFIX_BYTES;
        (base, size - len as u64, len)
    }

    /// A copy of the directory to damage.
    fn copy(&self) -> tempfile::TempDir {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(self.dir.path(), copy.path());
        copy
    }

    /// The model without its last `dropped` batches.
    fn model_without_last(&self, dropped: usize) -> Model {
        let mut model = self.model.clone();
        model.batches.truncate(model.batches.len() - dropped);
        let end = model.end();
        model.epochs.retain(|&(_, start)| start < end);
        model
    }
}

/// Reopens a damaged copy and checks it holds exactly `expected`, its active
/// segment is `expected_active_bytes` long, a new append gets the next
/// offset, and a further crash keeps that append.
fn check_recovered(
    dir: &Path,
    config: &LogConfig,
    expected: &Model,
    active_base: u64,
    expected_active_bytes: u64,
    what: &str,
) {
    let mut log = Log::open(dir, config.clone(), false)
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    assert_eq!(
        log.log_end_offset(),
        expected.end(),
        "{what}: log end after recovery"
    );
    let active_bytes = fs::metadata(segment_log_path(dir, active_base))
        .expect("stat")
        .len();
    assert_eq!(
        active_bytes, expected_active_bytes,
        "{what}: active segment cut to the end of the last whole batch"
    );
    check_whole_log(&log, expected);

    let mut model = expected.clone();
    let next = batch(2, 10, NOW_MS + 1, 0xEE);
    let (base, last) = model.append(std::slice::from_ref(&next), 0);
    let info = log
        .append(&parsed(&[next]), 0, NOW_MS)
        .expect("append after recovery");
    assert_eq!(
        (info.base_offset, info.last_offset),
        (base, last),
        "{what}: append after recovery"
    );
    check_whole_log(&log, &model);
    drop(log);
    let log = Log::open(dir, config.clone(), false).expect("reopen after a second crash");
    check_whole_log(&log, &model);
}

fn sample_batches(count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| batch(1 + i % 3, 20 + 7 * i, NOW_MS + i as i64, i as u8))
        .collect()
}

/// Every layout the torn-tail tests run against.
fn layouts() -> Vec<(&'static str, LogConfig, bool)> {
    vec![
        ("one segment, sparse index", config(1 << 20, 64), false),
        (
            "one segment, an index entry per batch",
            config(1 << 20, 1),
            false,
        ),
        (
            "one segment, no index entries",
            config(1 << 20, 1 << 20),
            false,
        ),
        ("several segments", config(700, 64), false),
        (
            "last batch alone in the active segment",
            config(1 << 20, 1),
            true,
        ),
    ]
}

#[test]
fn every_truncation_inside_the_last_batch_recovers_the_batches_before_it() {
    for (layout, config, roll_before_last) in layouts() {
        let crashed = CrashedLog::build(config, &sample_batches(8), roll_before_last);
        let (active_base, position, len) = crashed.last_batch_position();
        let expected = crashed.model_without_last(1);
        for cut in position..position + len as u64 {
            let copy = crashed.copy();
            let file = OpenOptions::new()
                .write(true)
                .open(segment_log_path(copy.path(), active_base))
                .expect("open segment");
            file.set_len(cut).expect("truncate");
            drop(file);
            let what = format!(
                "{layout}: cut at {cut} (last batch at {position}..{})",
                position + len as u64
            );
            check_recovered(
                copy.path(),
                &crashed.config,
                &expected,
                active_base,
                position,
                &what,
            );
        }
    }
}

/// Bytes of a batch the CRC does not cover: `base_offset` (0..8) and
/// `partition_leader_epoch` (12..16). A flip there cannot be told from a
/// valid batch by the batch alone: the base offset has its own test (the
/// log can tell it from the offsets before it); a flipped leader epoch is
/// undetectable, as in Kafka.
fn covered_by_checks(byte: usize) -> bool {
    !(0..8).contains(&byte) && !(12..16).contains(&byte)
}

/// Masks to flip `byte` of a batch with: in the header each field is
/// parsed differently, so both a low bit and a whole byte; in the records,
/// which only the CRC covers, one bit is enough (the tests are fsync-bound).
fn masks_for(byte: usize) -> &'static [u8] {
    if byte < weir_log::batch::HEADER_BYTES {
        &[0x01, 0xFF]
    } else if byte % 2 == 0 {
        &[0x01]
    } else {
        &[0x80]
    }
}

/// Copies the crashed log with one byte of its last batch flipped.
fn flip_last_batch_byte(crashed: &CrashedLog, byte: usize, mask: u8) -> tempfile::TempDir {
    let (active_base, position, _) = crashed.last_batch_position();
    let copy = crashed.copy();
    let path = segment_log_path(copy.path(), active_base);
    let mut bytes = fs::read(&path).expect("read segment");
    bytes[position as usize + byte] ^= mask;
    fs::write(&path, &bytes).expect("write segment");
    copy
}

#[test]
fn every_flipped_byte_of_the_last_batch_is_cut() {
    for (layout, config, roll_before_last) in layouts().into_iter().filter(|&(_, _, roll)| !roll) {
        let crashed = CrashedLog::build(config, &sample_batches(8), roll_before_last);
        let (active_base, position, len) = crashed.last_batch_position();
        assert!(position > 0, "{layout}: the last batch shares its segment");
        let expected = crashed.model_without_last(1);
        for byte in (0..len).filter(|&b| covered_by_checks(b)) {
            for &mask in masks_for(byte) {
                let copy = flip_last_batch_byte(&crashed, byte, mask);
                let what = format!("{layout}: byte {byte} of the last batch xor {mask:#04x}");
                check_recovered(
                    copy.path(),
                    &crashed.config,
                    &expected,
                    active_base,
                    position,
                    &what,
                );
            }
        }
    }
}

/// When the damaged batch is the first of the active segment, its header
/// is the one `Log::open` reads first; the open must still recover.
#[test]
fn a_corrupt_header_of_the_first_batch_in_the_active_segment_is_cut() {
    let (layout, config, roll_before_last) = layouts().remove(4);
    assert!(roll_before_last);
    let crashed = CrashedLog::build(config, &sample_batches(8), roll_before_last);
    let (active_base, position, len) = crashed.last_batch_position();
    assert_eq!(position, 0, "the last batch starts the active segment");
    let expected = crashed.model_without_last(1);
    let mut open_failures = Vec::new();
    for byte in (0..len).filter(|&b| covered_by_checks(b)) {
        for &mask in masks_for(byte) {
            let copy = flip_last_batch_byte(&crashed, byte, mask);
            match Log::open(copy.path(), crashed.config.clone(), false) {
                Err(error) => open_failures.push(format!("byte {byte} xor {mask:#04x}: {error}")),
                Ok(log) => {
                    drop(log);
                    let what = format!("{layout}: byte {byte} of the last batch xor {mask:#04x}");
                    check_recovered(
                        copy.path(),
                        &crashed.config,
                        &expected,
                        active_base,
                        position,
                        &what,
                    );
                }
            }
        }
    }
    assert!(
        open_failures.is_empty(),
        "Log::open failed instead of recovering:\n{}",
        open_failures.join("\n")
    );
}

/// The stored base offset is not covered by the CRC, but Weir assigns
/// offsets contiguously, so a batch whose base offset does not follow the
/// previous batch's last offset can only be damage.
#[test]
fn a_flipped_base_offset_in_the_last_batch_is_cut() {
    let (layout, config, _) = layouts().remove(1);
    let crashed = CrashedLog::build(config, &sample_batches(8), false);
    let (active_base, position, _) = crashed.last_batch_position();
    let expected = crashed.model_without_last(1);
    let mut accepted = Vec::new();
    for byte in 0..8 {
        for mask in [0x01u8, 0xFF] {
            let copy = flip_last_batch_byte(&crashed, byte, mask);
            let log = Log::open(copy.path(), crashed.config.clone(), false).expect("reopen");
            if log.log_end_offset() != expected.end() {
                accepted.push(format!(
                    "byte {byte} xor {mask:#04x}: log end {}",
                    log.log_end_offset()
                ));
                continue;
            }
            drop(log);
            let what = format!("{layout}: base offset byte {byte} xor {mask:#04x}");
            check_recovered(
                copy.path(),
                &crashed.config,
                &expected,
                active_base,
                position,
                &what,
            );
        }
    }
    assert!(
        accepted.is_empty(),
        "recovery kept a batch whose base offset does not follow offset {}:\n{}",
        expected.end() - 1,
        accepted.join("\n")
    );
}

/// With an index entry per batch, cut the log inside (or at the start of)
/// every batch while the indexes still point at the batches that are gone.
#[test]
fn index_entries_past_the_cut_are_dropped() {
    let config = config(1 << 20, 1);
    let timestamps: Vec<i64> = (0..10).map(|i| NOW_MS + 10 * i).collect();
    let batches: Vec<Bytes> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &ts)| batch_with_timestamps(&[ts - 5, ts], 30, i as u8))
        .collect();
    let crashed = CrashedLog::build(config, &batches, false);
    let index_bytes = fs::metadata(segment_index_path(crashed.dir.path(), 0))
        .expect("stat")
        .len();
    assert_eq!(
        index_bytes,
        9 * 8,
        "an index entry for every batch but the first"
    );
    let mut position = 0u64;
    for (kept, stored) in crashed.model.batches.iter().enumerate() {
        let len = (stored.tail.len() + weir_log::batch::STAMPED_PREFIX_BYTES) as u64;
        for cut in [position, position + 1, position + 30, position + len - 1] {
            let copy = crashed.copy();
            let file = OpenOptions::new()
                .write(true)
                .open(segment_log_path(copy.path(), 0))
                .expect("open segment");
            file.set_len(cut).expect("truncate");
            drop(file);
            let expected = crashed.model_without_last(crashed.model.batches.len() - kept);
            let what = format!("cut at {cut}, inside batch {kept}");
            check_recovered(copy.path(), &crashed.config, &expected, 0, position, &what);
            check_time_lookups(copy.path(), &crashed.config, &expected, &what);
        }
        position += len;
    }
}

/// After recovery, a time lookup never returns a batch that was cut.
fn check_time_lookups(dir: &Path, config: &LogConfig, expected: &Model, what: &str) {
    let log = Log::open(dir, config.clone(), false).expect("reopen");
    for target in NOW_MS - 10..NOW_MS + 120 {
        let found = log
            .batch_at_or_after_timestamp(target)
            .expect("time lookup");
        let found = found.map(|bytes| {
            weir_log::batch::validate(&bytes)
                .expect("valid batch")
                .base_offset
        });
        // The batch appended by check_recovered is at the end with timestamp NOW_MS + 1.
        let mut candidates: Vec<(u64, i64)> = expected
            .batches
            .iter()
            .map(|b| (b.base_offset, b.max_timestamp))
            .collect();
        candidates.push((expected.end(), NOW_MS + 1));
        let wanted = candidates
            .iter()
            .find(|&&(_, max)| max >= target)
            .map(|&(base, _)| base);
        assert_eq!(
            found, wanted,
            "{what}: first batch with max timestamp >= {target}"
        );
    }
}

/// A small deterministic generator, so garbage is the same on every run.
fn garbage(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn random_garbage_in_the_index_files_is_not_trusted() {
    let crashed = CrashedLog::build(config(1 << 20, 64), &sample_batches(12), false);
    let size = segment_files(crashed.dir.path())[0].1;
    for (seed, len) in [
        (1u64, 8usize),
        (2, 16),
        (3, 64),
        (4, 7),
        (5, 240),
        (6, 1000),
    ] {
        let copy = crashed.copy();
        fs::write(segment_index_path(copy.path(), 0), garbage(len, seed)).expect("write index");
        fs::write(
            segment_time_index_path(copy.path(), 0),
            garbage(len + 4, seed + 100),
        )
        .expect("write time index");
        let what = format!("{len} random index bytes (seed {seed})");
        check_recovered(copy.path(), &crashed.config, &crashed.model, 0, size, &what);
    }
}

/// Entries that pass the index's own checks (offsets and positions
/// increasing, inside the segment) but point into the middle of batches,
/// as an index from another incarnation of the segment would.
#[test]
fn plausible_index_entries_that_miss_batch_starts_are_not_trusted() {
    let crashed = CrashedLog::build(config(1 << 20, 64), &sample_batches(12), false);
    let size = segment_files(crashed.dir.path())[0].1;
    let mut index = Vec::new();
    for (relative, position) in [(1u32, 7u32), (3, 50), (5, 130)] {
        index.extend_from_slice(&relative.to_be_bytes());
        index.extend_from_slice(&position.to_be_bytes());
    }
    let copy = crashed.copy();
    fs::write(segment_index_path(copy.path(), 0), &index).expect("write index");
    check_recovered(
        copy.path(),
        &crashed.config,
        &crashed.model,
        0,
        size,
        "index entries inside batches",
    );
}

/// `log-end-checkpoint` is written by a clean close and describes that
/// moment only. Left in place, it is trusted again by a later `clean` open
/// whenever the active segment happens to have the checkpointed size, even
/// though the log was written to (and not closed) since.
#[test]
fn a_checkpoint_from_an_earlier_clean_close_is_not_trusted_after_more_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(1 << 20, 64);
    let batches = sample_batches(4);
    let mut model = Model::default();
    let mut log = Log::open(dir.path(), config.clone(), false).expect("open");
    for bytes in &batches {
        model.append(std::slice::from_ref(bytes), 0);
        log.append(&parsed(std::slice::from_ref(bytes)), 0, NOW_MS)
            .expect("append");
    }
    log.close().expect("close");
    drop(log);

    // Next run: the active segment rolls and refills to the same size; then a crash.
    let mut log = Log::open(dir.path(), config.clone(), true).expect("clean reopen");
    log.roll().expect("roll");
    for bytes in &batches {
        model.append(std::slice::from_ref(bytes), 0);
        log.append(&parsed(std::slice::from_ref(bytes)), 0, NOW_MS)
            .expect("append");
    }
    drop(log);

    // The broker believes it shut down cleanly (say, its own marker was
    // left from the earlier run); the log must still not lose track of its end.
    let log = Log::open(dir.path(), config, true).expect("reopen");
    check_whole_log(&log, &model);
}
