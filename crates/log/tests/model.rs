//! Model-based property tests: random sequences of appends, reads, rolls,
//! retention passes and reopens (clean and crash-like) against an in-memory
//! model of what the log must hold.

mod common;

use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use weir_log::{Log, LogConfig, LogError, SharedLog, Written};

use common::{
    batch, check_whole_log, config, expected_deleted_by_size, log_read, parsed, segment_files,
    segment_log_path, Model, NOW_MS,
};

/// Shape of one batch to append: `(records, value_bytes, timestamp - NOW_MS)`.
type BatchShape = (usize, usize, i64);

#[derive(Debug, Clone)]
enum Op {
    /// One append call holding one or more batches; `bump_epoch` moves to a
    /// newer leader epoch first.
    Append {
        batches: Vec<BatchShape>,
        bump_epoch: bool,
    },
    /// A read at `start + pick % (end - start + 1)`.
    Read {
        pick: u64,
        max_bytes: usize,
    },
    /// A read `distance` offsets past the end, or before the start.
    ReadOutOfRange {
        before_start: bool,
        distance: u64,
    },
    /// `batch_at_or_after_timestamp(NOW_MS + target)`.
    TimeLookup {
        target: i64,
    },
    Roll,
    Retention,
    CloseAndReopen,
    CrashAndReopen,
}

fn batch_shape() -> impl Strategy<Value = BatchShape> {
    (1usize..=4, prop_oneof![0usize..40, 40usize..400], 0i64..100)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(batch_shape(), 1..=3), prop::bool::weighted(0.1))
            .prop_map(|(batches, bump_epoch)| Op::Append { batches, bump_epoch }),
        6 => (any::<u64>(), prop_oneof![Just(0usize), 1usize..300, 300usize..3000])
            .prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => (any::<bool>(), 1u64..5).prop_map(|(before_start, distance)| Op::ReadOutOfRange { before_start, distance }),
        2 => (-1i64..=101).prop_map(|target| Op::TimeLookup { target }),
        1 => Just(Op::Roll),
        1 => Just(Op::Retention),
        1 => Just(Op::CloseAndReopen),
        1 => Just(Op::CrashAndReopen),
    ]
}

fn log_config() -> impl Strategy<Value = LogConfig> {
    (
        400u64..5000,
        prop_oneof![Just(1u64), Just(64), 65u64..400, Just(4096)],
        prop::option::weighted(0.7, 0u64..6000),
    )
        .prop_map(
            |(segment_bytes, index_interval_bytes, retention_bytes)| LogConfig {
                retention_bytes,
                ..config(segment_bytes, index_interval_bytes)
            },
        )
}

/// The log under test and everything known about it.
struct Harness {
    dir: tempfile::TempDir,
    config: LogConfig,
    log: Option<Log>,
    model: Model,
    epoch: i32,
    seed: u8,
}

impl Harness {
    fn new(config: LogConfig) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), config.clone(), false).expect("open a new log");
        Harness {
            dir,
            config,
            log: Some(log),
            model: Model::default(),
            epoch: 0,
            seed: 0,
        }
    }

    fn log(&mut self) -> &mut Log {
        self.log.as_mut().expect("log is open")
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append {
                batches,
                bump_epoch,
            } => self.append(batches, *bump_epoch),
            Op::Read { pick, max_bytes } => self.read(*pick, *max_bytes),
            Op::ReadOutOfRange {
                before_start,
                distance,
            } => self.read_out_of_range(*before_start, *distance),
            Op::TimeLookup { target } => self.time_lookup(NOW_MS + target),
            Op::Roll => self.log().roll().expect("roll"),
            Op::Retention => self.retention(),
            Op::CloseAndReopen => {
                let mut log = self.log.take().expect("log is open");
                log.close().expect("close");
                drop(log);
                self.reopen(true);
            }
            Op::CrashAndReopen => {
                drop(self.log.take());
                self.reopen(false);
            }
        }
        self.check_offsets();
    }

    fn append(&mut self, shapes: &[BatchShape], bump_epoch: bool) {
        if bump_epoch {
            self.epoch += 1;
        }
        let batches: Vec<Bytes> = shapes
            .iter()
            .map(|&(records, value_bytes, timestamp)| {
                self.seed = self.seed.wrapping_add(1);
                batch(records, value_bytes, NOW_MS + timestamp, self.seed)
            })
            .collect();
        let (base, last) = self.model.append(&batches, self.epoch);
        let epoch = self.epoch;
        let info = self
            .log()
            .append(&parsed(&batches), epoch, NOW_MS)
            .expect("append");
        assert_eq!(
            (info.base_offset, info.last_offset),
            (base, last),
            "offsets are assigned consecutively"
        );
    }

    fn read(&mut self, pick: u64, max_bytes: usize) {
        let (start, end) = (self.model.log_start_offset, self.model.end());
        let offset = start + pick % (end - start + 1);
        let log = self.log.as_ref().expect("log is open");
        let got = log_read(log, offset, max_bytes).expect("read in range");
        self.model.check_read(offset, max_bytes, end, &got);
    }

    fn read_out_of_range(&mut self, before_start: bool, distance: u64) {
        let (start, end) = (self.model.log_start_offset, self.model.end());
        let offset = if before_start {
            if start == 0 {
                return;
            }
            start.saturating_sub(distance)
        } else {
            end + distance
        };
        let log = self.log.as_ref().expect("log is open");
        match log_read(log, offset, 1000) {
            Err(LogError::OffsetOutOfRange {
                offset: reported,
                log_start_offset,
                log_end_offset,
            }) => {
                assert_eq!(
                    (reported, log_start_offset, log_end_offset),
                    (offset, start, end)
                );
            }
            other => panic!("read at {offset} outside [{start}, {end}] gave {other:?}"),
        }
    }

    fn time_lookup(&mut self, target: i64) {
        let log = self.log.as_ref().expect("log is open");
        let found = log
            .batch_at_or_after_timestamp(target)
            .expect("time lookup");
        let wanted = self.model.live().iter().find(|b| b.max_timestamp >= target);
        match (found, wanted) {
            (None, None) => {}
            (Some(bytes), Some(expected)) => {
                let header =
                    weir_log::batch::validate(&bytes).expect("lookup returns a valid batch");
                common::assert_batch_is(&header, &bytes, expected);
            }
            (found, wanted) => panic!(
                "lookup of {target} found {:?}, wanted batch at {:?}",
                found.map(|bytes| weir_log::batch::validate(&bytes).map(|h| h.base_offset)),
                wanted.map(|b| b.base_offset)
            ),
        }
    }

    fn retention(&mut self) {
        let before = segment_files(self.dir.path());
        let deleted = self
            .log()
            .apply_retention(NOW_MS, u64::MAX)
            .expect("retention");
        let expected = self
            .config
            .retention_bytes
            .map_or(0, |limit| expected_deleted_by_size(&before, limit));
        assert_eq!(
            deleted, expected,
            "segments deleted by retention.bytes {:?} from {before:?}",
            self.config.retention_bytes
        );
        let after = segment_files(self.dir.path());
        assert_eq!(
            after,
            before[deleted..],
            "the oldest segments were deleted, the rest untouched"
        );
        let start = self.log().log_start_offset();
        assert!(start >= self.model.log_start_offset, "log start moved back");
        self.model.log_start_offset = start;
    }

    fn reopen(&mut self, clean: bool) {
        let log = Log::open(self.dir.path(), self.config.clone(), clean).expect("reopen");
        self.log = Some(log);
        let log = self.log.as_ref().expect("log is open");
        check_whole_log(log, &self.model);
    }

    /// Invariants that hold after every operation.
    fn check_offsets(&mut self) {
        let dir = self.dir.path().to_path_buf();
        let model = self.model.clone();
        let log = self.log.as_ref().expect("log is open");
        assert_eq!(log.log_end_offset(), model.end(), "log end offset");
        assert_eq!(
            log.log_start_offset(),
            model.log_start_offset,
            "log start offset"
        );
        check_log_start_is_a_segment_base(&dir, &model);
        let files = segment_files(&dir);
        assert_eq!(
            log.segment_count(),
            files.len(),
            "segments in memory and on disk"
        );
        assert_eq!(
            log.size_bytes(),
            files.iter().map(|&(_, size)| size).sum::<u64>(),
            "size_bytes"
        );
        assert_eq!(
            log.epochs().entries(),
            &model.epochs[..],
            "leader-epoch cache"
        );
    }
}

fn check_log_start_is_a_segment_base(dir: &Path, model: &Model) {
    let start = model.log_start_offset;
    assert!(
        segment_log_path(dir, start).exists(),
        "log start {start} is not a segment's base"
    );
    assert!(
        start == model.end() || model.batches.iter().any(|b| b.base_offset == start),
        "log start {start} is not a batch boundary"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(config in log_config(), ops in prop::collection::vec(op(), 1..48)) {
        let mut harness = Harness::new(config);
        for op in &ops {
            harness.apply(op);
        }
        let log = harness.log.as_ref().expect("log is open");
        check_whole_log(log, &harness.model);
        // Whatever happened, a crash now loses nothing that was written.
        harness.apply(&Op::CrashAndReopen);
    }
}

// ---------------------------------------------------------------------------
// SharedLog: appends become readable only once durable.

#[derive(Debug, Clone)]
enum SharedOp {
    Append(Vec<BatchShape>),
    /// Waits for durability up to `pick % (end + 1)`.
    WaitDurable {
        pick: u64,
    },
    Flush,
    Read {
        pick: u64,
        max_bytes: usize,
    },
}

fn shared_op() -> impl Strategy<Value = SharedOp> {
    prop_oneof![
        4 => prop::collection::vec(batch_shape(), 1..=3).prop_map(SharedOp::Append),
        2 => any::<u64>().prop_map(|pick| SharedOp::WaitDurable { pick }),
        1 => Just(SharedOp::Flush),
        4 => (any::<u64>(), prop_oneof![Just(0usize), 1usize..3000])
            .prop_map(|(pick, max_bytes)| SharedOp::Read { pick, max_bytes }),
    ]
}

/// A write to a log these tests never truncate.
fn never_truncated(end_offset: u64) -> Written {
    Written {
        end_offset,
        truncations: 0,
    }
}

fn run_shared(config: LogConfig, ops: &[SharedOp]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let acknowledged_on_write = config.flush_interval.is_some();
    let shared = SharedLog::new(Log::open(dir.path(), config.clone(), false).expect("open"));
    let mut model = Model::default();
    let mut seed = 0u8;
    let mut high_watermark = 0;
    for op in ops {
        match op {
            SharedOp::Append(shapes) => {
                let batches: Vec<Bytes> = shapes
                    .iter()
                    .map(|&(records, value_bytes, timestamp)| {
                        seed = seed.wrapping_add(1);
                        batch(records, value_bytes, NOW_MS + timestamp, seed)
                    })
                    .collect();
                let (base, last) = model.append(&batches, 0);
                let info = shared.append(&parsed(&batches), 0, NOW_MS).expect("append");
                assert_eq!((info.base_offset, info.last_offset), (base, last));
            }
            SharedOp::WaitDurable { pick } => {
                let target = pick % (model.end() + 1);
                runtime
                    .block_on(shared.wait_durable(never_truncated(target)))
                    .expect("wait_durable");
                assert!(
                    shared.offsets().high_watermark >= target,
                    "durable up to {target}"
                );
            }
            SharedOp::Flush => {
                runtime.block_on(shared.flush()).expect("flush");
                assert_eq!(
                    shared.offsets().high_watermark,
                    model.end(),
                    "a flush makes everything durable"
                );
            }
            SharedOp::Read { pick, max_bytes } => {
                let offset = pick % (model.end() + 1);
                let got = shared.read(offset, *max_bytes).expect("read in range");
                let readable_end = shared.offsets().high_watermark;
                model.check_read(offset, *max_bytes, readable_end, &got);
            }
        }
        let offsets = shared.offsets();
        assert!(
            offsets.high_watermark >= high_watermark,
            "high watermark went back"
        );
        assert!(
            offsets.high_watermark <= offsets.log_end_offset,
            "high watermark past the log end"
        );
        assert_eq!(offsets.log_end_offset, model.end());
        if acknowledged_on_write {
            assert_eq!(
                offsets.high_watermark, offsets.log_end_offset,
                "flush.ms: readable on write"
            );
        }
        high_watermark = offsets.high_watermark;
    }
    runtime
        .block_on(shared.wait_durable(never_truncated(model.end())))
        .expect("final wait_durable");
    let offsets = shared.offsets();
    assert_eq!(offsets.high_watermark, model.end());
    shared.close().expect("close");
    assert!(matches!(
        shared.append(&parsed(&[batch(1, 1, NOW_MS, 0)]), 0, NOW_MS),
        Err(LogError::Closed)
    ));
    drop(shared);
    let log = Log::open(dir.path(), config, true).expect("reopen");
    check_whole_log(&log, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn shared_log_reads_stop_at_the_high_watermark(
        segment_bytes in 150u64..3000,
        flush_on_interval in prop::bool::weighted(0.25),
        ops in prop::collection::vec(shared_op(), 1..60),
    ) {
        let config = LogConfig {
            flush_interval: flush_on_interval.then(|| std::time::Duration::from_secs(1)),
            ..config(segment_bytes, 64)
        };
        run_shared(config, &ops);
    }
}
