//! Time lookups (`batch_at_or_after_timestamp`), time- and size-based
//! retention, and `segment.ms` rolling.

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use weir_log::batch;
use weir_log::{Log, LogConfig};

use common::{
    batch, batch_with_timestamps, check_whole_log, config, expected_deleted_by_size, parsed,
    segment_files, Model, NOW_MS,
};

const HOUR_MS: i64 = 3600 * 1000;

/// Appends `batches` one call each, at wall-clock `now_ms`.
fn append_all(log: &mut Log, model: &mut Model, batches: &[Bytes], now_ms: i64) {
    for bytes in batches {
        let (base, last) = model.append(std::slice::from_ref(bytes), 0);
        let info = log
            .append(&parsed(std::slice::from_ref(bytes)), 0, now_ms)
            .expect("append");
        assert_eq!((info.base_offset, info.last_offset), (base, last));
    }
}

/// Checks the time lookup for every target in `targets` against the model:
/// the first batch, in offset order, whose max timestamp is `>= target`.
fn check_time_lookups(log: &Log, model: &Model, targets: impl Iterator<Item = i64>, what: &str) {
    for target in targets {
        let found = log
            .batch_at_or_after_timestamp(target)
            .expect("time lookup");
        let wanted = model.live().iter().find(|b| b.max_timestamp >= target);
        match (found, wanted) {
            (None, None) => {}
            (Some(bytes), Some(expected)) => {
                let header = batch::validate(&bytes).expect("lookup returns a valid batch");
                common::assert_batch_is(&header, &bytes, expected);
            }
            (found, wanted) => panic!(
                "{what}: lookup of {target} found {:?}, wanted batch at {:?}",
                found.map(|bytes| batch::validate(&bytes).map(|h| h.base_offset)),
                wanted.map(|b| b.base_offset)
            ),
        }
    }
}

/// `(record timestamps relative to NOW_MS, value bytes)` of one batch.
type TimedBatch = (Vec<i64>, usize);

fn timed_batch() -> impl Strategy<Value = TimedBatch> {
    (prop::collection::vec(0i64..200, 1..=4), 0usize..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Timestamps need not increase with offsets; the lookup still returns
    /// the first batch in offset order whose max timestamp reaches the target,
    /// across segments, and after clean and crash-like reopens.
    #[test]
    fn time_lookup_returns_the_first_batch_reaching_the_target(
        shapes in prop::collection::vec(timed_batch(), 1..40),
        segment_bytes in 200u64..2000,
        index_interval_bytes in prop_oneof![Just(1u64), Just(64), Just(4096)],
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(segment_bytes, index_interval_bytes);
        let batches: Vec<Bytes> = shapes
            .iter()
            .enumerate()
            .map(|(i, (offsets, value_bytes))| {
                let timestamps: Vec<i64> = offsets.iter().map(|o| NOW_MS + o).collect();
                batch_with_timestamps(&timestamps, *value_bytes, i as u8)
            })
            .collect();
        let mut model = Model::default();
        let mut log = Log::open(dir.path(), config.clone(), false).expect("open");
        append_all(&mut log, &mut model, &batches, NOW_MS);
        let targets = || NOW_MS - 1..=NOW_MS + 201;
        check_time_lookups(&log, &model, targets(), "while writing");
        drop(log);
        let mut log = Log::open(dir.path(), config.clone(), false).expect("crash reopen");
        check_time_lookups(&log, &model, targets(), "after a crash");
        log.close().expect("close");
        drop(log);
        let log = Log::open(dir.path(), config, true).expect("clean reopen");
        check_time_lookups(&log, &model, targets(), "after a clean close");
        check_whole_log(&log, &model);
    }
}

/// Four sealed segments, one batch each, with newest records at
/// `NOW_MS - 4h .. NOW_MS - 1h`, and an active segment holding a batch at `NOW_MS`.
fn log_with_aging_segments(retention_ms: u64) -> (tempfile::TempDir, Log, Model) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention_ms: Some(retention_ms),
        ..config(1 << 20, 64)
    };
    let mut log = Log::open(dir.path(), config, false).expect("open");
    let mut model = Model::default();
    for hours_ago in [4, 3, 2, 1] {
        let newest = NOW_MS - hours_ago * HOUR_MS;
        let bytes = batch_with_timestamps(&[newest - 1000, newest], 10, hours_ago as u8);
        append_all(&mut log, &mut model, &[bytes], NOW_MS);
        log.roll().expect("roll");
    }
    append_all(&mut log, &mut model, &[batch(1, 10, NOW_MS, 0)], NOW_MS);
    assert_eq!(log.segment_count(), 5);
    (dir, log, model)
}

#[test]
fn retention_ms_deletes_segments_whose_newest_record_is_older() {
    let retention_ms = 2 * HOUR_MS as u64;
    // `now - newest > retention.ms`: the 4h and 3h segments go; the 2h one
    // is exactly at the limit and stays, as in Kafka.
    let (dir, mut log, mut model) = log_with_aging_segments(retention_ms);
    assert_eq!(log.apply_retention(NOW_MS, u64::MAX).expect("retention"), 2);
    model.log_start_offset = model.batches[2].base_offset;
    check_whole_log(&log, &model);
    assert_eq!(segment_files(dir.path()).len(), 3);

    // A millisecond later the 2h segment has expired too.
    assert_eq!(
        log.apply_retention(NOW_MS + 1, u64::MAX)
            .expect("retention"),
        1
    );
    model.log_start_offset = model.batches[3].base_offset;
    check_whole_log(&log, &model);

    drop(log);
    let config = LogConfig {
        retention_ms: Some(retention_ms),
        ..config(1 << 20, 64)
    };
    let log = Log::open(dir.path(), config, false).expect("reopen");
    check_whole_log(&log, &model);
}

#[test]
fn an_expired_active_segment_is_rolled_and_deleted() {
    let (dir, mut log, mut model) = log_with_aging_segments(HOUR_MS as u64);
    let later = NOW_MS + HOUR_MS + 1;
    assert_eq!(
        log.apply_retention(later, u64::MAX).expect("retention"),
        5,
        "four sealed segments and the rolled active one"
    );
    model.log_start_offset = model.end();
    check_whole_log(&log, &model);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(
        segment_files(dir.path()),
        vec![(model.end(), 0)],
        "one empty segment at the log end"
    );

    // Nothing more to delete; the log keeps its offsets across reopens and appends.
    assert_eq!(log.apply_retention(later, u64::MAX).expect("retention"), 0);
    let config = log.config().clone();
    log.close().expect("close");
    drop(log);
    let mut log = Log::open(dir.path(), config.clone(), true).expect("clean reopen");
    check_whole_log(&log, &model);
    append_all(&mut log, &mut model, &[batch(3, 10, later, 9)], later);
    check_whole_log(&log, &model);
    drop(log);
    let log = Log::open(dir.path(), config, false).expect("crash reopen");
    check_whole_log(&log, &model);
}

#[test]
fn time_retention_stops_at_the_first_segment_that_has_not_expired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention_ms: Some(HOUR_MS as u64),
        ..config(1 << 20, 64)
    };
    let mut log = Log::open(dir.path(), config, false).expect("open");
    let mut model = Model::default();
    // Oldest segment holds a recent record: nothing after it may go first.
    for timestamp in [NOW_MS, NOW_MS - 5 * HOUR_MS] {
        append_all(&mut log, &mut model, &[batch(1, 10, timestamp, 1)], NOW_MS);
        log.roll().expect("roll");
    }
    append_all(&mut log, &mut model, &[batch(1, 10, NOW_MS, 2)], NOW_MS);
    assert_eq!(log.apply_retention(NOW_MS, u64::MAX).expect("retention"), 0);
    check_whole_log(&log, &model);
}

#[test]
fn retention_bytes_keeps_at_least_the_limit() {
    // Identical batches of `size` bytes, two per segment: four full sealed
    // segments of 2*size and an active one holding one batch (9*size in all).
    let one = batch(2, 50, NOW_MS, 7);
    let size = one.len() as u64;
    for (retention_bytes, deleted) in [
        (0, 4),
        (size, 4),
        (size + 1, 3),
        (3 * size, 3),
        (4 * size, 2),
        (5 * size, 2),
        (5 * size + 1, 1),
        (7 * size, 1),
        (7 * size + 1, 0),
        (100 * size, 0),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            retention_bytes: Some(retention_bytes),
            ..config(2 * size, 64)
        };
        let mut log = Log::open(dir.path(), config, false).expect("open");
        let mut model = Model::default();
        append_all(&mut log, &mut model, &vec![one.clone(); 9], NOW_MS);
        assert_eq!(segment_files(dir.path()).len(), 5);
        assert_eq!(
            log.apply_retention(NOW_MS, u64::MAX).expect("retention"),
            deleted,
            "retention.bytes {retention_bytes} with 9 batches of {size} bytes"
        );
        model.log_start_offset = model.batches[2 * deleted].base_offset;
        check_whole_log(&log, &model);
        assert!(log.size_bytes() >= retention_bytes.min(9 * size) || log.segment_count() == 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Oldest segments go first, and only while what remains without the
    /// segment is still at least `retention.bytes` (Kafka's rule).
    #[test]
    fn retention_bytes_deletes_oldest_first_down_to_the_limit(
        value_sizes in prop::collection::vec(0usize..300, 1..40),
        segment_bytes in 100u64..1500,
        limit_fraction in 0u64..=120,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let batches: Vec<Bytes> = value_sizes.iter().enumerate().map(|(i, &v)| batch(1, v, NOW_MS, i as u8)).collect();
        let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let retention_bytes = total * limit_fraction / 100;
        let config = LogConfig { retention_bytes: Some(retention_bytes), ..config(segment_bytes, 64) };
        let mut log = Log::open(dir.path(), config.clone(), false).expect("open");
        let mut model = Model::default();
        append_all(&mut log, &mut model, &batches, NOW_MS);
        let before = segment_files(dir.path());
        let expected = expected_deleted_by_size(&before, retention_bytes);
        prop_assert_eq!(log.apply_retention(NOW_MS, u64::MAX).expect("retention"), expected);
        let after = segment_files(dir.path());
        prop_assert_eq!(&after[..], &before[expected..]);
        let remaining: u64 = after.iter().map(|&(_, size)| size).sum();
        prop_assert!(after.len() == 1 || remaining - after[0].1 < retention_bytes, "deleted too little");
        prop_assert!(expected == 0 || remaining >= retention_bytes, "deleted below the limit");
        model.log_start_offset = after[0].0;
        check_whole_log(&log, &model);
        // A second pass finds nothing more to delete.
        prop_assert_eq!(log.apply_retention(NOW_MS, u64::MAX).expect("retention"), 0);
        drop(log);
        let log = Log::open(dir.path(), config, false).expect("reopen");
        check_whole_log(&log, &model);
    }
}

#[test]
fn segment_ms_rolls_when_the_active_segments_first_batch_is_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_ms: HOUR_MS as u64,
        ..config(1 << 20, 64)
    };
    let mut log = Log::open(dir.path(), config, false).expect("open");
    let mut model = Model::default();
    append_all(&mut log, &mut model, &[batch(1, 10, NOW_MS, 1)], NOW_MS);
    append_all(
        &mut log,
        &mut model,
        &[batch(1, 10, NOW_MS + 1, 2)],
        NOW_MS + HOUR_MS - 1,
    );
    assert_eq!(log.segment_count(), 1, "younger than segment.ms: no roll");
    append_all(
        &mut log,
        &mut model,
        &[batch(1, 10, NOW_MS + 2, 3)],
        NOW_MS + HOUR_MS,
    );
    assert_eq!(log.segment_count(), 2, "segment.ms reached: rolled");
    check_whole_log(&log, &model);
}
