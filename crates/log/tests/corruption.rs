//! The damage matrix at the log level, on the simulated disk: every kind of
//! torn or corrupt tail is cut (and reported), damage followed by valid
//! batches is fenced (never cut, reads of it fail with `Corrupt`), and
//! each case is followed by appends and another crash that lose nothing
//! else.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use weir_log::batch::{self, STAMPED_PREFIX_BYTES};
use weir_log::sim::SimStorage;
use weir_log::{Log, LogConfig, LogError};

use common::{batch, check_whole_log, config, log_read, parsed, split, Model, NOW_MS};

const DIR: &str = "/sim/orders-0";

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn segment_path(base: u64, extension: &str) -> PathBuf {
    dir().join(format!("{base:020}.{extension}"))
}

/// A log written and closed on a simulated disk, ready to be damaged.
struct Built {
    sim: SimStorage,
    config: LogConfig,
    model: Model,
    active_base: u64,
    /// The active segment's `.log`, `.index` and `.timeindex` as closed.
    original: [Vec<u8>; 3],
}

const EXTENSIONS: [&str; 3] = ["log", "index", "timeindex"];

impl Built {
    fn new(config: LogConfig, batches: &[Bytes]) -> Built {
        let sim = SimStorage::new(1);
        let mut model = Model::default();
        let mut log = Log::open_in(sim.shared(), dir(), config.clone(), false).expect("open");
        for bytes in batches {
            model.append(std::slice::from_ref(bytes), 0);
            log.append(&parsed(std::slice::from_ref(bytes)), 0, NOW_MS)
                .expect("append");
        }
        log.close().expect("close");
        let active_base = *log_bases(&sim).last().expect("a segment");
        let original = EXTENSIONS.map(|extension| {
            sim.contents(&segment_path(active_base, extension))
                .unwrap_or_default()
        });
        Built {
            sim,
            config,
            model,
            active_base,
            original,
        }
    }

    /// Positions and model indexes of the batches in the active segment.
    fn active_batches(&self) -> Vec<(usize, u64, u64)> {
        let mut position = 0;
        let mut found = Vec::new();
        for (index, stored) in self.model.batches.iter().enumerate() {
            if stored.base_offset < self.active_base {
                continue;
            }
            let len = (stored.tail.len() + STAMPED_PREFIX_BYTES) as u64;
            found.push((index, position, len));
            position += len;
        }
        found
    }

    fn set_active_bytes(&self, bytes: &[u8]) {
        self.sim
            .overwrite(&segment_path(self.active_base, "log"), bytes);
    }

    fn model_without(&self, dropped_from: usize) -> Model {
        let mut model = self.model.clone();
        model.batches.truncate(dropped_from);
        let end = model.end();
        model.epochs.retain(|&(_, start)| start < end);
        model
    }
}

fn log_bases(sim: &SimStorage) -> Vec<u64> {
    let mut bases: Vec<u64> = sim
        .list(dir())
        .iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("log"))
        .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
        .collect();
    bases.sort_unstable();
    bases
}

fn sample_batches(count: usize) -> Vec<Bytes> {
    (0..count)
        .map(|i| batch(1 + i % 3, 20 + 7 * i, NOW_MS + i as i64, i as u8))
        .collect()
}

fn layouts() -> Vec<(&'static str, LogConfig)> {
    vec![
        ("one segment, sparse index", config(1 << 20, 64)),
        ("one segment, an index entry per batch", config(1 << 20, 1)),
        ("several segments", config(700, 64)),
    ]
}

/// Opens after a crash, checks the log holds `expected` and that the
/// recovery cut exactly `bytes_cut`, then appends, crashes again and checks.
fn check_tail_recovery(built: &Built, expected: &Model, bytes_cut: u64, what: &str) {
    let mut log = Log::open_in(built.sim.shared(), dir(), built.config.clone(), false)
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let recovery = log.last_recovery().clone();
    assert_eq!(recovery.bytes_truncated, bytes_cut, "{what}: bytes cut");
    if bytes_cut > 0 {
        assert_eq!(
            recovery.truncated_from_offset,
            expected.end(),
            "{what}: reported offset of the cut"
        );
    }
    assert!(
        recovery.fenced.is_empty(),
        "{what}: fenced {:?}",
        recovery.fenced
    );
    assert!(log.corrupt_ranges().is_empty(), "{what}");
    check_whole_log(&log, expected);
    let mut model = expected.clone();
    let next = batch(2, 10, NOW_MS + 1, 0xEE);
    model.append(std::slice::from_ref(&next), 0);
    log.append(&parsed(&[next]), 0, NOW_MS)
        .expect("append after recovery");
    drop(log);
    let log = Log::open_in(built.sim.shared(), dir(), built.config.clone(), false)
        .expect("reopen after a second crash");
    assert_eq!(
        log.last_recovery().bytes_truncated,
        0,
        "{what}: second crash cut"
    );
    check_whole_log(&log, &model);
}

#[test]
fn a_truncated_tail_is_cut_and_reported() {
    for (layout, config) in layouts() {
        let built = Built::new(config, &sample_batches(10));
        let batches = built.active_batches();
        let &(last_index, last_position, last_len) = batches.last().expect("a batch");
        let size = last_position + last_len;
        let half = last_len / 2;
        for shorter_by in [1, 7, 13, 50.min(last_len - 1), half] {
            built.set_active_bytes(&built_bytes(&built)[..(size - shorter_by) as usize]);
            let what = format!("{layout}: last segment shorter by {shorter_by}");
            check_tail_recovery(
                &built,
                &built.model_without(last_index),
                last_len - shorter_by,
                &what,
            );
            restore(&built, size);
        }
        built.set_active_bytes(&built_bytes(&built)[..last_position as usize]);
        check_tail_recovery(
            &built,
            &built.model_without(last_index),
            0,
            &format!("{layout}: cut at a batch boundary"),
        );
        restore(&built, size);
        built.set_active_bytes(&[]);
        let first_active = batches[0].0;
        check_tail_recovery(
            &built,
            &built.model_without(first_active),
            0,
            &format!("{layout}: cut to zero"),
        );
    }
}

/// The bytes of the built active segment as closed.
fn built_bytes(built: &Built) -> Vec<u8> {
    built.original[0].clone()
}

/// Puts the built log back as it was closed: the active segment's files,
/// no segment a previous case added, no `corrupt-ranges` file.
fn restore(built: &Built, size: u64) {
    assert_eq!(built.original[0].len() as u64, size);
    let storage = built.sim.shared();
    for base in log_bases(&built.sim) {
        if base > built.active_base {
            for extension in EXTENSIONS {
                let _ = storage.remove(&segment_path(base, extension));
            }
        }
    }
    for (extension, bytes) in EXTENSIONS.iter().zip(&built.original) {
        built
            .sim
            .overwrite(&segment_path(built.active_base, extension), bytes);
    }
    let _ = storage.remove(&dir().join("corrupt-ranges"));
}

fn fake_huge_header() -> Vec<u8> {
    let mut header = vec![0u8; batch::HEADER_BYTES];
    header[8..12].copy_from_slice(&0x7FFF_FFF0u32.to_be_bytes());
    header[16] = 2;
    header
}

#[test]
fn bytes_appended_after_the_last_batch_are_cut_and_reported() {
    for (layout, config) in layouts() {
        let built = Built::new(config, &sample_batches(10));
        let batches = built.active_batches();
        let &(_, last_position, last_len) = batches.last().expect("a batch");
        let size = last_position + last_len;
        let original = built_bytes(&built);
        let last = original[last_position as usize..].to_vec();
        let mut bad_crc = last.clone();
        let end = bad_crc.len() - 1;
        bad_crc[end] ^= 0x40;
        let random: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for (name, extra) in [
            ("random bytes", random),
            ("zeros", vec![0u8; 300]),
            ("a fake 2 GB batch header", fake_huge_header()),
            ("a bad-CRC copy of the last batch", bad_crc),
            ("a duplicate of the last batch", last.clone()),
        ] {
            let mut bytes = original.clone();
            bytes.extend_from_slice(&extra);
            built.set_active_bytes(&bytes);
            let what = format!("{layout}: {name} appended");
            check_tail_recovery(&built, &built.model, extra.len() as u64, &what);
            restore(&built, size);
        }
    }
}

#[test]
fn a_flipped_byte_in_the_last_batch_is_cut() {
    for (layout, config) in layouts() {
        let built = Built::new(config, &sample_batches(10));
        let &(last_index, last_position, last_len) =
            built.active_batches().last().expect("a batch");
        let size = last_position + last_len;
        for byte in [20, 40, last_len - 1] {
            let mut bytes = built_bytes(&built);
            bytes[(last_position + byte) as usize] ^= 0x10;
            built.set_active_bytes(&bytes);
            let what = format!("{layout}: byte {byte} of the last batch flipped");
            check_tail_recovery(&built, &built.model_without(last_index), last_len, &what);
            restore(&built, size);
        }
    }
}

#[test]
fn garbage_or_missing_index_files_lose_nothing() {
    for (layout, config) in layouts() {
        let built = Built::new(config, &sample_batches(10));
        let index = segment_path(built.active_base, "index");
        let time_index = segment_path(built.active_base, "timeindex");
        built.sim.overwrite(&index, &[0xAB; 45]);
        built.sim.overwrite(&time_index, &[0x17; 30]);
        check_tail_recovery(
            &built,
            &built.model,
            0,
            &format!("{layout}: garbage indexes"),
        );
        restore(&built, built.original[0].len() as u64);
        built.sim.shared().remove(&index).expect("remove index");
        built
            .sim
            .shared()
            .remove(&time_index)
            .expect("remove time index");
        check_tail_recovery(
            &built,
            &built.model,
            0,
            &format!("{layout}: missing indexes"),
        );
    }
}

/// Reads every live batch; those of `fenced` (model indexes) must fail with
/// `Corrupt`, the others must be whole and as appended.
fn check_log_with_fences(log: &Log, model: &Model, fenced: &[usize], what: &str) {
    assert_eq!(log.log_end_offset(), model.end(), "{what}: log end");
    for (index, expected) in model.batches.iter().enumerate() {
        if expected.base_offset < log.log_start_offset() {
            continue;
        }
        for offset in [expected.base_offset, expected.last_offset] {
            let read = log_read(log, offset, 0);
            if fenced.contains(&index) {
                assert!(
                    matches!(read, Err(LogError::Corrupt { .. })),
                    "{what}: read of fenced offset {offset} gave {read:?}"
                );
            } else {
                let got = read.unwrap_or_else(|e| panic!("{what}: read at {offset}: {e}"));
                let returned = split(&got);
                assert_eq!(returned.len(), 1);
                common::assert_batch_is(&returned[0].0, &returned[0].1, expected);
            }
        }
    }
    // A long read from the first batch returns only batches before the
    // first fenced one.
    if let Some(&first_fenced) = fenced.iter().min() {
        let start = model.batches[0].base_offset.max(log.log_start_offset());
        if start < model.batches[first_fenced].base_offset {
            let got = log_read(log, start, 1 << 20).expect("read before the damage");
            let returned = split(&got);
            let last = returned.last().expect("some batches").0.last_offset();
            assert!(
                last < model.batches[first_fenced].base_offset,
                "{what}: a read ran into the fenced range"
            );
        }
    }
}

/// Recovery scans the active segment from its last index entry that points
/// at a valid batch; here there is none, so it scans it all.
#[test]
fn damage_followed_by_valid_batches_is_fenced_not_cut() {
    for (layout, config) in [("one segment, no index entries", config(1 << 20, 1 << 20))] {
        let built = Built::new(config, &sample_batches(12));
        let batches = built.active_batches();
        if batches.len() < 4 {
            continue;
        }
        let size = batches.last().map(|&(_, p, l)| p + l).expect("a batch");
        // A byte of a middle batch's records, and the length field of the
        // last-but-two batch's header.
        let (middle, middle_position, middle_len) = batches[batches.len() / 2];
        let (third_last, third_last_position, _) = batches[batches.len() - 3];
        for (name, index, at) in [
            (
                "a record byte of a middle batch",
                middle,
                middle_position + middle_len - 3,
            ),
            (
                "the length of the last-but-two batch",
                third_last,
                third_last_position + 10,
            ),
        ] {
            let mut bytes = built_bytes(&built);
            bytes[at as usize] ^= 0x21;
            built.set_active_bytes(&bytes);
            let what = format!("{layout}: {name}");
            check_fenced(&built, index, &what);
            restore(&built, size);
        }
    }
}

/// Recovery fences exactly batch `index`, reads refuse it, and the fence
/// survives appends, crashes, rolls and clean restarts.
fn check_fenced(built: &Built, index: usize, what: &str) {
    let mut log = Log::open_in(built.sim.shared(), dir(), built.config.clone(), false)
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let damaged = &built.model.batches[index];
    let recovery = log.last_recovery().clone();
    assert_eq!(recovery.bytes_truncated, 0, "{what}: nothing may be cut");
    assert_eq!(recovery.fenced.len(), 1, "{what}: one fenced range");
    let range = recovery.fenced[0];
    assert_eq!(
        (range.first_offset, range.end_offset),
        (damaged.base_offset, damaged.last_offset + 1),
        "{what}: fenced offsets"
    );
    assert_eq!(log.corrupt_ranges(), vec![range]);
    check_log_with_fences(&log, &built.model, &[index], what);

    let mut model = built.model.clone();
    let next = batch(2, 10, NOW_MS + 1, 0xEE);
    model.append(std::slice::from_ref(&next), 0);
    log.append(&parsed(&[next]), 0, NOW_MS)
        .expect("append after the fence");
    drop(log);
    let mut log = Log::open_in(built.sim.shared(), dir(), built.config.clone(), false)
        .expect("reopen after a crash");
    assert_eq!(
        log.corrupt_ranges(),
        vec![range],
        "{what}: fence after a crash"
    );
    check_log_with_fences(&log, &model, &[index], what);

    log.roll().expect("roll");
    let next = batch(1, 10, NOW_MS + 2, 0xEF);
    model.append(std::slice::from_ref(&next), 0);
    log.append(&parsed(&[next]), 0, NOW_MS).expect("append");
    log.close().expect("close");
    drop(log);
    let log =
        Log::open_in(built.sim.shared(), dir(), built.config.clone(), true).expect("clean reopen");
    assert_eq!(
        log.corrupt_ranges(),
        vec![range],
        "{what}: fence after a clean restart"
    );
    check_log_with_fences(&log, &model, &[index], what);
    drop(log);
    let log = Log::open_in(built.sim.shared(), dir(), built.config.clone(), false)
        .expect("crash reopen of the rolled log");
    assert_eq!(
        log.corrupt_ranges(),
        vec![range],
        "{what}: fence in a sealed segment"
    );
}

/// Damage before the last index entry is not scanned by recovery (which
/// starts there); it is neither cut nor fenced, and reads refuse it.
#[test]
fn damage_before_the_recovery_checkpoint_is_refused_by_reads() {
    for (layout, config) in layouts().into_iter().take(2) {
        let built = Built::new(config, &sample_batches(12));
        let batches = built.active_batches();
        let (index, position, len) = batches[2];
        let mut bytes = built_bytes(&built);
        bytes[(position + len - 2) as usize] ^= 0x08;
        built.set_active_bytes(&bytes);
        let mut log =
            Log::open_in(built.sim.shared(), dir(), built.config.clone(), false).expect("reopen");
        assert_eq!(log.last_recovery().bytes_truncated, 0, "{layout}");
        check_log_with_fences(&log, &built.model, &[index], layout);
        let mut model = built.model.clone();
        let next = batch(2, 10, NOW_MS + 1, 0xEE);
        model.append(std::slice::from_ref(&next), 0);
        log.append(&parsed(&[next]), 0, NOW_MS).expect("append");
        drop(log);
        let log =
            Log::open_in(built.sim.shared(), dir(), built.config.clone(), false).expect("reopen");
        check_log_with_fences(&log, &model, &[index], layout);
    }
}

#[test]
fn damage_after_a_clean_stop_is_refused_by_reads() {
    for (layout, config) in layouts() {
        let built = Built::new(config, &sample_batches(10));
        let &(last_index, last_position, last_len) =
            built.active_batches().last().expect("a batch");
        let mut bytes = built_bytes(&built);
        bytes[(last_position + last_len - 5) as usize] ^= 0x02;
        built.set_active_bytes(&bytes);
        // The clean open trusts the checkpoint and scans nothing ...
        let log = Log::open_in(built.sim.shared(), dir(), built.config.clone(), true)
            .expect("clean reopen");
        assert_eq!(log.log_end_offset(), built.model.end(), "{layout}");
        // ... but no read serves the damaged batch.
        check_log_with_fences(&log, &built.model, &[last_index], layout);
    }
}

/// A clean-shutdown checkpoint that the active segment no longer matches
/// (here: cut at a batch boundary after the clean stop) is not trusted, and
/// the disagreement is reported.
#[test]
fn a_segment_shorter_than_its_clean_checkpoint_is_recovered_and_reported() {
    for (layout, config) in layouts() {
        let built = Built::new(config, &sample_batches(10));
        let &(last_index, last_position, _) = built.active_batches().last().expect("a batch");
        built.set_active_bytes(&built_bytes(&built)[..last_position as usize]);
        let log = Log::open_in(built.sim.shared(), dir(), built.config.clone(), true)
            .expect("clean reopen");
        let mismatch = log.last_recovery().checkpoint_mismatch;
        assert_eq!(
            mismatch,
            Some((built.model.end(), built.original[0].len() as u64)),
            "{layout}"
        );
        check_whole_log(&log, &built.model_without(last_index));
    }
}

/// Damage recovery did not scan is fenced by the first read that meets it:
/// counted in `corrupt_ranges`, persisted, refused to every later read.
#[test]
fn a_read_that_meets_damage_fences_it() {
    for (layout, config) in layouts().into_iter().take(2) {
        let built = Built::new(config, &sample_batches(12));
        let (index, position, len) = built.active_batches()[3];
        let mut bytes = built_bytes(&built);
        bytes[(position + len - 4) as usize] ^= 0x04;
        built.set_active_bytes(&bytes);
        let shared = weir_log::SharedLog::new(
            Log::open_in(built.sim.shared(), dir(), built.config.clone(), false).expect("reopen"),
        );
        assert!(
            shared.with_log(Log::corrupt_ranges).is_empty(),
            "{layout}: not scanned"
        );
        let damaged = &built.model.batches[index];
        let read = shared.read(damaged.base_offset, 1 << 20);
        assert!(
            matches!(read, Err(LogError::Corrupt { .. })),
            "{layout}: {read:?}"
        );
        let ranges = shared.with_log(Log::corrupt_ranges);
        assert_eq!(ranges.len(), 1, "{layout}");
        assert_eq!(
            (
                ranges[0].first_offset,
                ranges[0].end_offset,
                ranges[0].position
            ),
            (damaged.base_offset, damaged.last_offset + 1, position),
            "{layout}"
        );
        shared.with_log(|log| check_log_with_fences(log, &built.model, &[index], layout));
        drop(shared);
        let log =
            Log::open_in(built.sim.shared(), dir(), built.config.clone(), false).expect("reopen");
        assert_eq!(log.corrupt_ranges(), ranges, "{layout}: the fence persists");
        check_log_with_fences(&log, &built.model, &[index], layout);
    }
}
