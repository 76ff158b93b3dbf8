//! `Log::truncate_to`: cutting a log back to any offset, across segments,
//! with its indexes, time index and leader epochs, as healing after a
//! failed sync and a replication follower (KIP-101) need.

mod common;

use std::path::Path;

use bytes::Bytes;
use weir_log::sim::SimStorage;
use weir_log::{Log, LogError};

use common::{batch_with_timestamps, check_whole_log, config, parsed, Model, NOW_MS};

const DIR: &str = "/sim/t-0";

/// Builds a log of `count` batches, several leader epochs and (with small
/// segments) several segments.
fn build(sim: &SimStorage, segment_bytes: u64, count: usize) -> (Log, Model) {
    let config = config(segment_bytes, 64);
    let mut log = Log::open_in(sim.shared(), Path::new(DIR), config, false).expect("open");
    let mut model = Model::default();
    for i in 0..count {
        let epoch = (i / 7) as i32;
        let ts = NOW_MS + 10 * i as i64;
        let bytes: Bytes = batch_with_timestamps(&[ts, ts + 3], 20 + (i * 13) % 90, i as u8);
        model.append(std::slice::from_ref(&bytes), epoch);
        log.append(&parsed(&[bytes]), epoch, NOW_MS)
            .expect("append");
    }
    (log, model)
}

/// The model cut as `truncate_to(offset)` must cut: every batch holding an
/// offset at or after it.
fn cut_model(model: &Model, offset: u64) -> Model {
    let mut cut = model.clone();
    cut.batches.retain(|stored| stored.last_offset < offset);
    let end = cut.end();
    cut.epochs.retain(|&(_, start)| start < end);
    cut
}

#[test]
fn truncation_to_every_offset_keeps_exactly_what_is_below() {
    for segment_bytes in [1 << 20, 600] {
        let probe = SimStorage::new(0);
        let (_, model) = build(&probe, segment_bytes, 30);
        for offset in (0..=model.end()).step_by(3) {
            let sim = SimStorage::new(offset);
            let (mut log, model) = build(&sim, segment_bytes, 30);
            log.truncate_to(offset).expect("truncate");
            let mut expected = cut_model(&model, offset);
            check_whole_log(&log, &expected);
            // Time lookups never find a cut batch.
            for target in [NOW_MS, NOW_MS + 150, NOW_MS + 1000] {
                let found = log.batch_at_or_after_timestamp(target).expect("lookup");
                let wanted = expected.batches.iter().find(|b| b.max_timestamp >= target);
                assert_eq!(
                    found.map(|bytes| weir_log::batch::validate(&bytes)
                        .expect("valid")
                        .base_offset),
                    wanted.map(|b| b.base_offset),
                    "time lookup {target} after truncating to {offset}"
                );
            }
            // Appends continue at the new end, under a new epoch too.
            let next = batch_with_timestamps(&[NOW_MS + 5000], 40, 0xAA);
            expected.append(std::slice::from_ref(&next), 9);
            log.append(&parsed(&[next]), 9, NOW_MS)
                .expect("append after truncation");
            check_whole_log(&log, &expected);
            // The cut was synced: a power cut keeps it, and the append if synced.
            let (file, _) = log.sync_target();
            file.sync_data().expect("sync");
            drop(log);
            sim.power_cut();
            let log = Log::open_in(
                sim.shared(),
                Path::new(DIR),
                config(segment_bytes, 64),
                false,
            )
            .expect("reopen");
            check_whole_log(&log, &expected);
        }
    }
}

#[test]
fn truncation_below_the_log_start_is_refused() {
    let sim = SimStorage::new(3);
    let (mut log, model) = build(&sim, 500, 20);
    assert!(log.segment_count() > 2);
    let second_segment_end = log.log_end_offset();
    log.delete_segments_below(second_segment_end)
        .expect("delete");
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        log.truncate_to(start - 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.truncate_to(start).expect("truncate to the start");
    assert_eq!(log.log_end_offset(), start);
    assert_eq!(log.segment_count(), 1);
    assert!(model.end() > start);
}

#[test]
fn a_restarted_log_is_empty_at_the_new_offset_and_reopens_there() {
    let sim = SimStorage::new(1);
    let (mut log, model) = build(&sim, 600, 20);
    assert!(matches!(
        log.restart_at(model.end()),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let start = model.end() + 100;
    log.restart_at(start).expect("restart");
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (start, start)
    );
    assert_eq!(log.epochs().latest_epoch(), None);
    let bytes = batch_with_timestamps(&[NOW_MS], 30, 9);
    let info = log.append(&parsed(&[bytes]), 7, NOW_MS).expect("append");
    assert_eq!(info.base_offset, start);
    drop(log);
    let reopened =
        Log::open_in(sim.shared(), Path::new(DIR), config(600, 64), false).expect("reopen");
    assert_eq!(reopened.log_start_offset(), start);
    assert_eq!(reopened.log_end_offset(), info.last_offset + 1);
    assert_eq!(reopened.epochs().entries(), &[(7, start)]);
}
