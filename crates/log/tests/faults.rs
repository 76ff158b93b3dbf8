//! A full disk and failing syncs, on the simulated disk: a failed write is
//! undone and the next one succeeds; a failed sync poisons the log until it
//! heals by cutting back to the durable end; nothing acknowledged is lost
//! and no partial batch stays on disk, across power cuts too.

mod common;

use std::io;
use std::path::Path;

use bytes::Bytes;
use weir_log::sim::{SimStorage, EIO, ENOSPC};
use weir_log::{Log, LogConfig, LogError, SharedLog};

use common::{batch, check_whole_log, config, parsed, Model, NOW_MS};

const DIR: &str = "/sim/queue-0";

fn open(sim: &SimStorage, config: &LogConfig) -> SharedLog {
    SharedLog::new(Log::open_in(sim.shared(), Path::new(DIR), config.clone(), false).expect("open"))
}

fn batches(count: usize, value_bytes: usize, seed: u8) -> Vec<Bytes> {
    (0..count)
        .map(|i| batch(2, value_bytes, NOW_MS, seed.wrapping_add(i as u8)))
        .collect()
}

/// Appends and waits until durable, recording the batches in the model.
async fn append_acked(shared: &SharedLog, model: &mut Model, batches: &[Bytes]) {
    let info = shared.append(&parsed(batches), 0, NOW_MS).expect("append");
    model.append(batches, 0);
    shared.wait_durable(info.written()).await.expect("durable");
}

/// Every `.log` file's bytes are whole batches, and the log agrees.
fn check_no_partial_batch(sim: &SimStorage, shared: &SharedLog, model: &Model) {
    let on_disk: u64 = sim
        .list(Path::new(DIR))
        .iter()
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("log"))
        .map(|path| sim.contents(path).map_or(0, |bytes| bytes.len() as u64))
        .sum();
    shared.with_log(|log| {
        assert_eq!(
            on_disk,
            log.size_bytes(),
            "bytes on disk beyond the log's end"
        );
        check_whole_log(log, model);
    });
}

fn power_cut_and_check(sim: &SimStorage, shared: SharedLog, config: &LogConfig, model: &Model) {
    drop(shared);
    sim.power_cut();
    let log = Log::open_in(sim.shared(), Path::new(DIR), config.clone(), false).expect("reopen");
    assert!(log.corrupt_ranges().is_empty());
    check_whole_log(&log, model);
}

#[tokio::test]
async fn a_full_disk_fails_the_write_and_writing_resumes_when_space_returns() {
    // Small segments, so the failing calls also cross rolls.
    let config = config(700, 64);
    for seed in 0..40 {
        let sim = SimStorage::new(seed);
        let shared = open(&sim, &config);
        let mut model = Model::default();
        for round in 0..4u8 {
            append_acked(&shared, &mut model, &batches(3, 60, round * 10)).await;
        }
        sim.set_write_fault(Some(ENOSPC));
        for attempt in 0..3u8 {
            let error = shared
                .append(&parsed(&batches(4, 90, 100 + attempt)), 0, NOW_MS)
                .expect_err("no space");
            match error {
                LogError::WriteRolledBack(error) => {
                    assert_eq!(error.kind(), io::ErrorKind::StorageFull, "seed {seed}")
                }
                other => panic!("seed {seed}: expected a rolled-back write, got {other}"),
            }
            assert!(
                !shared.is_poisoned(),
                "seed {seed}: a full disk poisoned the log"
            );
            check_no_partial_batch(&sim, &shared, &model);
        }
        sim.set_write_fault(None);
        append_acked(&shared, &mut model, &batches(5, 90, 200)).await;
        check_no_partial_batch(&sim, &shared, &model);
        power_cut_and_check(&sim, shared, &config, &model);
    }
}

#[tokio::test]
async fn a_failed_sync_poisons_then_the_log_heals_to_its_durable_end() {
    let config = config(900, 64);
    for seed in 0..40 {
        let sim = SimStorage::new(seed);
        let shared = open(&sim, &config);
        let mut model = Model::default();
        append_acked(&shared, &mut model, &batches(3, 50, 1)).await;
        let durable = shared.durable_end_offset();
        assert_eq!(durable, model.end());

        // Written but not durable when the disk starts failing syncs.
        let lost = shared
            .append(&parsed(&batches(6, 80, 50)), 0, NOW_MS)
            .expect("append");
        sim.set_sync_fault(Some(EIO));
        let error = shared
            .wait_durable(lost.written())
            .await
            .expect_err("sync fails");
        assert!(matches!(error, LogError::Poisoned), "seed {seed}: {error}");
        // The first attempt to heal fails too (its sync fails); later
        // appends are refused until one succeeds.
        assert!(matches!(
            shared.append(&parsed(&batches(1, 10, 70)), 0, NOW_MS),
            Err(LogError::Poisoned)
        ));
        assert!(
            !shared.try_heal().await,
            "seed {seed}: healed while syncs fail"
        );
        assert!(shared.is_poisoned());

        sim.set_sync_fault(None);
        // The next append heals (a heal attempt is due after a failed one
        // only after a second: ask for it now).
        assert!(shared.try_heal().await, "seed {seed}: heal");
        assert_eq!(
            shared.offsets().log_end_offset,
            durable,
            "cut to the durable end"
        );
        assert_eq!(shared.offsets().high_watermark, durable);
        // The writer of the cut batches learns it, even once their offsets
        // are taken again.
        append_acked(&shared, &mut model, &batches(8, 80, 90)).await;
        let error = shared
            .wait_durable(lost.written())
            .await
            .expect_err("cut write");
        assert!(
            matches!(error, LogError::Truncated { .. }),
            "seed {seed}: {error}"
        );
        check_no_partial_batch(&sim, &shared, &model);
        append_acked(&shared, &mut model, &batches(2, 30, 120)).await;
        power_cut_and_check(&sim, shared, &config, &model);
    }
}

#[tokio::test]
async fn a_poisoned_log_heals_at_the_next_append_without_help() {
    let config = config(1 << 20, 64);
    let sim = SimStorage::new(7);
    let shared = open(&sim, &config);
    let mut model = Model::default();
    append_acked(&shared, &mut model, &batches(2, 20, 1)).await;
    let pending = shared
        .append(&parsed(&batches(2, 20, 9)), 0, NOW_MS)
        .expect("append");
    sim.set_sync_fault(Some(ENOSPC));
    assert!(shared.wait_durable(pending.written()).await.is_err());
    sim.set_sync_fault(None);
    // No heal was attempted yet, so this append heals first and succeeds.
    append_acked(&shared, &mut model, &batches(3, 20, 30)).await;
    assert!(!shared.is_poisoned());
    check_no_partial_batch(&sim, &shared, &model);
    power_cut_and_check(&sim, shared, &config, &model);
}

#[tokio::test]
async fn a_failed_roll_sync_poisons_and_heals() {
    // Every append of 3 batches rolls at least once.
    let config = config(300, 64);
    let sim = SimStorage::new(11);
    let shared = open(&sim, &config);
    let mut model = Model::default();
    append_acked(&shared, &mut model, &batches(3, 60, 1)).await;
    sim.set_sync_fault(Some(EIO));
    let error = shared
        .append(&parsed(&batches(3, 60, 40)), 0, NOW_MS)
        .expect_err("the roll's sync fails");
    assert!(matches!(error, LogError::Io(_)), "{error}");
    assert!(shared.is_poisoned());
    sim.set_sync_fault(None);
    assert!(shared.try_heal().await);
    append_acked(&shared, &mut model, &batches(3, 60, 80)).await;
    check_no_partial_batch(&sim, &shared, &model);
    power_cut_and_check(&sim, shared, &config, &model);
}

/// A poisoned log whose first heal failed heals by itself at an append
/// once `HEAL_RETRY_INTERVAL` has passed.
#[tokio::test]
async fn a_failed_heal_is_retried_after_the_interval() {
    let config = config(1 << 20, 64);
    let sim = SimStorage::new(5);
    let shared = open(&sim, &config);
    let mut model = Model::default();
    append_acked(&shared, &mut model, &batches(2, 20, 1)).await;
    let pending = shared
        .append(&parsed(&batches(1, 20, 7)), 0, NOW_MS)
        .expect("append");
    sim.set_sync_fault(Some(EIO));
    assert!(shared.wait_durable(pending.written()).await.is_err());
    // This append's heal attempt fails (its sync fails too).
    assert!(matches!(
        shared.append(&parsed(&batches(1, 20, 8)), 0, NOW_MS),
        Err(LogError::Poisoned)
    ));
    sim.set_sync_fault(None);
    // Too soon for another attempt.
    assert!(matches!(
        shared.append(&parsed(&batches(1, 20, 9)), 0, NOW_MS),
        Err(LogError::Poisoned)
    ));
    tokio::time::sleep(weir_log::HEAL_RETRY_INTERVAL).await;
    append_acked(&shared, &mut model, &batches(2, 20, 10)).await;
    power_cut_and_check(&sim, shared, &config, &model);
}

/// Concurrent writers on a disk whose syncs fail now and then: every write
/// a writer saw acknowledged (`wait_durable` returned `Ok`) is on disk after
/// a power cut, at the offsets it was given, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_failing_syncs_and_heals() {
    use std::sync::Arc;

    let config = config(2000, 64);
    for seed in 0..8u64 {
        let sim = SimStorage::new(seed);
        let shared = Arc::new(open(&sim, &config));
        let faults = {
            let sim = sim.clone();
            tokio::spawn(async move {
                for round in 0..30u64 {
                    let failing = (seed + round) % 3 == 0;
                    sim.set_sync_fault(failing.then_some(EIO));
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                sim.set_sync_fault(None);
            })
        };
        let mut writers = Vec::new();
        for writer in 0..4u8 {
            let shared = Arc::clone(&shared);
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for sequence in 0..120u8 {
                    let bytes = batch(
                        1 + usize::from(sequence % 3),
                        30,
                        NOW_MS,
                        writer.wrapping_mul(64).wrapping_add(sequence),
                    );
                    match shared.append(&parsed(std::slice::from_ref(&bytes)), 0, NOW_MS) {
                        Ok(info) => {
                            // Half the writers wait a little before asking
                            // for durability: a heal may cut their write in
                            // between, and they must not be told it is durable.
                            if writer % 2 == 1 {
                                tokio::time::sleep(std::time::Duration::from_micros(500)).await;
                            }
                            if shared.wait_durable(info.written()).await.is_ok() {
                                acked.push((info.base_offset, bytes));
                            }
                        }
                        // Heal now rather than after the retry interval.
                        Err(_) => {
                            shared.try_heal().await;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_micros(300)).await;
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for writer in writers {
            acked.extend(writer.await.expect("writer"));
        }
        faults.await.expect("faults");
        assert!(shared.try_heal().await, "seed {seed}: heal once syncs work");
        let shared = Arc::into_inner(shared).expect("last handle");
        drop(shared);
        sim.power_cut();
        let log =
            Log::open_in(sim.shared(), Path::new(DIR), config.clone(), false).expect("reopen");
        for (base_offset, bytes) in &acked {
            let got = common::log_read(&log, *base_offset, 0)
                .unwrap_or_else(|e| panic!("seed {seed}: acknowledged offset {base_offset}: {e}"));
            let returned = common::split(&got);
            assert_eq!(returned[0].0.base_offset, *base_offset, "seed {seed}");
            assert!(
                returned[0].1[weir_log::batch::STAMPED_PREFIX_BYTES..]
                    == bytes[weir_log::batch::STAMPED_PREFIX_BYTES..],
                "seed {seed}: acknowledged batch at {base_offset} differs"
            );
        }
        assert!(
            !acked.is_empty(),
            "seed {seed}: some writes were acknowledged"
        );
    }
}
