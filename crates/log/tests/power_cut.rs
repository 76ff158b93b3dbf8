//! Deterministic power-cut schedules on the simulated disk
//! ([`weir_log::sim::SimStorage`]): random appends, syncs (which acknowledge
//! what they cover), rolls, retention passes, clean closes and power cuts at
//! random points. After every cut the log is reopened as after a crash and
//! must hold every acknowledged batch byte for byte at its offset, nothing
//! unacknowledged half there (a batch is whole or absent), offsets without
//! gaps, no fenced range (a power cut only tears the tail), and must accept
//! further appends.
//!
//! A failing schedule prints its seed; replay it alone with
//! `WEIR_POWER_CUT_SEED=<seed> cargo test --release -p weir-log --test power_cut`.
//! `WEIR_POWER_CUT_SCHEDULES` sets how many schedules run (default 3000).

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use bytes::Bytes;
use weir_log::sim::{SimStorage, EIO, ENOSPC};
use weir_log::verify::verify_log_dir_in;
use weir_log::{Log, LogConfig, LogError};

use common::{batch, check_whole_log, config, parsed, Model, NOW_MS};

/// xorshift64: the schedule's own choices, independent of the disk's.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0xD134_2543_DE82_EF95) ^ 0x5851_F42D_4C95_7F2D | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

const DIR: &str = "/sim/topic-0";
const STEPS_PER_SCHEDULE: usize = 60;

/// One schedule: the log, what it must hold, and what was acknowledged.
struct Schedule {
    rng: Rng,
    sim: SimStorage,
    config: LogConfig,
    log: Option<Log>,
    model: Model,
    /// Every offset below was covered by a successful sync: acknowledged.
    acked_end: u64,
    epoch: i32,
    seed_byte: u8,
}

impl Schedule {
    fn new(seed: u64) -> Schedule {
        let mut rng = Rng::new(seed);
        let segment_bytes = 300 + rng.below(3000);
        let index_interval_bytes = [1, 64, 200, 4096][rng.below(4) as usize];
        let retention_bytes = (rng.below(3) == 0).then(|| 500 + rng.below(3000));
        let config = LogConfig {
            retention_bytes,
            ..config(segment_bytes, index_interval_bytes)
        };
        let sim = SimStorage::new(seed);
        let log = Log::open_in(sim.shared(), Path::new(DIR), config.clone(), false)
            .expect("open a new log");
        Schedule {
            rng,
            sim,
            config,
            log: Some(log),
            model: Model::default(),
            acked_end: 0,
            epoch: 0,
            seed_byte: 0,
        }
    }

    fn log(&mut self) -> &mut Log {
        self.log.as_mut().expect("log is open")
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=46 => self.append(),
            47..=49 => self.append_on_a_full_disk(),
            50..=66 => self.sync(),
            67..=69 => self.failed_sync_and_heal(),
            70..=74 => self.log().roll().expect("roll"),
            75..=79 => self.retention(),
            80..=83 => self.close_cut_and_reopen(),
            _ => self.cut_and_recover(),
        }
    }

    fn append(&mut self) {
        let batches = self.random_batches();
        let expected = self.model.append(&batches, self.epoch);
        let epoch = self.epoch;
        let info = self
            .log()
            .append(&parsed(&batches), epoch, NOW_MS)
            .expect("append");
        assert_eq!(
            (info.base_offset, info.last_offset),
            expected,
            "offsets given"
        );
    }

    /// An append that fails (ENOSPC after a random prefix) must leave the
    /// log exactly as it was.
    fn append_on_a_full_disk(&mut self) {
        let epoch_before = self.epoch;
        let batches = self.random_batches();
        let epoch = self.epoch;
        self.sim.set_write_fault(Some(ENOSPC));
        let result = self.log().append(&parsed(&batches), epoch, NOW_MS);
        self.sim.set_write_fault(None);
        match result {
            Err(LogError::WriteRolledBack(_)) => {}
            other => panic!("a failed write was not rolled back: {other:?}"),
        }
        self.epoch = epoch_before;
        check_whole_log(self.log.as_ref().expect("log is open"), &self.model);
    }

    /// A sync fails (fsyncgate: what it could not write is forgotten); the
    /// log heals as `SharedLog` does, by cutting back to the acknowledged end.
    fn failed_sync_and_heal(&mut self) {
        self.sim.set_sync_fault(Some(EIO));
        let (file, _) = self.log().sync_target();
        assert!(file.sync_data().is_err());
        self.sim.set_sync_fault(None);
        let acked_end = self.acked_end;
        self.log().truncate_to(acked_end).expect("heal");
        self.model
            .batches
            .retain(|stored| stored.last_offset < acked_end);
        self.model.epochs.retain(|&(_, start)| start < acked_end);
        check_whole_log(self.log.as_ref().expect("log is open"), &self.model);
    }

    fn random_batches(&mut self) -> Vec<Bytes> {
        if self.rng.below(20) == 0 {
            self.epoch += 1;
        }
        let count = 1 + self.rng.below(3) as usize;
        (0..count)
            .map(|_| {
                self.seed_byte = self.seed_byte.wrapping_add(1);
                let records = 1 + self.rng.below(4) as usize;
                let large = self.rng.below(4) == 0;
                let value_bytes = self.rng.below(if large { 700 } else { 60 });
                batch(
                    records,
                    value_bytes as usize,
                    NOW_MS + self.rng.below(50) as i64,
                    self.seed_byte,
                )
            })
            .collect()
    }

    /// What `SharedLog::wait_durable` does: sync the active segment; every
    /// offset below the target is then acknowledged.
    fn sync(&mut self) {
        let (file, target) = self.log().sync_target();
        file.sync_data().expect("sync");
        self.acked_end = self.acked_end.max(target);
    }

    fn retention(&mut self) {
        let acked_end = self.acked_end;
        self.log()
            .apply_retention(NOW_MS, acked_end)
            .expect("retention");
        self.model.log_start_offset = self.log().log_start_offset();
    }

    fn close_cut_and_reopen(&mut self) {
        let mut log = self.log.take().expect("log is open");
        log.close().expect("clean close");
        self.acked_end = log.log_end_offset();
        drop(log);
        self.sim.power_cut();
        let log = Log::open_in(self.sim.shared(), Path::new(DIR), self.config.clone(), true)
            .expect("clean reopen");
        assert!(
            log.last_recovery().bytes_truncated == 0,
            "a clean close lost nothing"
        );
        check_whole_log(&log, &self.model);
        self.log = Some(log);
    }

    fn cut_and_recover(&mut self) {
        drop(self.log.take());
        self.sim.power_cut();
        let log = Log::open_in(
            self.sim.shared(),
            Path::new(DIR),
            self.config.clone(),
            false,
        )
        .expect("reopen after a power cut");
        let end = log.log_end_offset();
        assert!(
            end >= self.acked_end,
            "acknowledged offsets lost: log end {end} < acknowledged end {}",
            self.acked_end
        );
        assert!(
            log.corrupt_ranges().is_empty() && log.last_recovery().fenced.is_empty(),
            "a power cut fenced a range: {:?}",
            log.corrupt_ranges()
        );
        // What survived unacknowledged must be whole batches as appended.
        self.model.batches.retain(|stored| stored.last_offset < end);
        assert_eq!(
            self.model.end(),
            end,
            "the log ends inside a batch or past what was appended"
        );
        self.model.epochs.retain(|&(_, start)| start < end);
        self.epoch = self
            .epoch
            .max(self.model.epochs.last().map_or(0, |&(e, _)| e));
        self.acked_end = end;
        check_whole_log(&log, &self.model);
        let report = verify_log_dir_in(&self.sim, Path::new(DIR)).expect("verify");
        assert!(
            report.is_clean(),
            "the recovered directory does not verify: {:?}",
            report.problems
        );
        self.log = Some(log);
    }
}

fn run(seed: u64) {
    let mut schedule = Schedule::new(seed);
    for _ in 0..STEPS_PER_SCHEDULE {
        schedule.step();
    }
    schedule.cut_and_recover();
    schedule.append();
    schedule.sync();
    schedule.cut_and_recover();
}

#[test]
fn acknowledged_batches_survive_every_power_cut() {
    if let Some(seed) = std::env::var("WEIR_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run(seed);
        return;
    }
    let schedules: u64 = std::env::var("WEIR_POWER_CUT_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let started = std::time::Instant::now();
    for seed in 0..schedules {
        if panic::catch_unwind(AssertUnwindSafe(|| run(seed))).is_err() {
            panic!("power-cut schedule failed; replay with WEIR_POWER_CUT_SEED={seed}");
        }
    }
    eprintln!(
        "{schedules} power-cut schedules in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
