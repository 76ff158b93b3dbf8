//! Helpers shared by the log crate's integration tests: batch builders, an
//! in-memory model of what a log must hold, and checks of what it returns.

#![allow(dead_code)] // each test file uses a different subset

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use weir_log::batch::{self, BatchHeader, NewRecord, STAMPED_PREFIX_BYTES};
use weir_log::{Log, LogConfig, LogError};

/// A wall-clock time far from zero, so `now - timestamp` never underflows.
pub const NOW_MS: i64 = 1_700_000_000_000;

/// One batch of `records` records, all stamped `timestamp`, whose values are
/// `value_bytes` long and filled with `seed` so batches differ in content.
pub fn batch(records: usize, value_bytes: usize, timestamp: i64, seed: u8) -> Bytes {
    let timestamps = vec![timestamp; records];
    batch_with_timestamps(&timestamps, value_bytes, seed)
}

/// One batch holding one record per timestamp (the batch's max timestamp is
/// the largest of them).
pub fn batch_with_timestamps(timestamps: &[i64], value_bytes: usize, seed: u8) -> Bytes {
    let records: Vec<NewRecord> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &timestamp)| NewRecord {
            timestamp,
            key: Some(Bytes::from(vec![seed, i as u8])),
            value: Some(Bytes::from(vec![seed.wrapping_add(i as u8); value_bytes])),
            headers: Vec::new(),
        })
        .collect();
    batch::encode_batch(&records)
}

/// Validates producer-built batches as the broker does before appending.
pub fn parsed(batches: &[Bytes]) -> Vec<(BatchHeader, Bytes)> {
    batches
        .iter()
        .map(|bytes| {
            (
                batch::validate(bytes).expect("test batch is valid"),
                bytes.clone(),
            )
        })
        .collect()
}

/// Splits what a read returned into batches, checking that every one is
/// whole and passes its CRC.
pub fn split(bytes: &Bytes) -> Vec<(BatchHeader, Bytes)> {
    batch::split_batches(bytes.clone()).expect("a read returns whole, valid batches")
}

/// Settings for tests: no time-based retention, small segments and index interval.
pub fn config(segment_bytes: u64, index_interval_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes,
        ..LogConfig::default()
    }
}

/// Reads from a bare [`Log`] as a consumer with no high watermark would:
/// up to the log end.
pub fn log_read(log: &Log, offset: u64, max_bytes: usize) -> Result<Bytes, LogError> {
    match log.cursor(offset)? {
        Some(cursor) => Ok(cursor.read(max_bytes, log.log_end_offset())?),
        None => Ok(Bytes::new()),
    }
}

/// The `.log` file of the segment starting at `base_offset`.
pub fn segment_log_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

/// The `.index` file of the segment starting at `base_offset`.
pub fn segment_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

/// The `.timeindex` file of the segment starting at `base_offset`.
pub fn segment_time_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

/// `(base_offset, bytes)` of every `.log` file in `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<(u64, u64)> {
    let mut segments: Vec<(u64, u64)> = fs::read_dir(dir)
        .expect("read log dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("log"))
        .map(|path| {
            let base = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .expect("segment file named by its base offset");
            (base, fs::metadata(&path).expect("stat segment").len())
        })
        .collect();
    segments.sort_unstable();
    segments
}

/// Copies every file of a (flat) log directory.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let path = entry.expect("dir entry").path();
        fs::copy(&path, to.join(path.file_name().expect("file name"))).expect("copy file");
    }
}

/// How many of the oldest segments Kafka's `retention.bytes` deletes: while
/// `size - segment_size >= retention_bytes`, never the active (last) one.
pub fn expected_deleted_by_size(segments: &[(u64, u64)], retention_bytes: u64) -> usize {
    let mut remaining: u64 = segments.iter().map(|&(_, size)| size).sum();
    let mut deleted = 0;
    for &(_, size) in &segments[..segments.len().saturating_sub(1)] {
        if remaining - size < retention_bytes {
            break;
        }
        remaining -= size;
        deleted += 1;
    }
    deleted
}

/// A batch as the log must store it.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub base_offset: u64,
    pub last_offset: u64,
    pub leader_epoch: i32,
    pub max_timestamp: i64,
    /// The bytes after the broker-owned prefix, which the log never changes.
    pub tail: Bytes,
}

/// What a log must hold: every batch ever appended, and where the log starts.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub batches: Vec<StoredBatch>,
    pub log_start_offset: u64,
    /// `(epoch, first offset)` as the leader-epoch cache must record them.
    pub epochs: Vec<(i32, u64)>,
}

impl Model {
    /// Offset the next appended record must get.
    pub fn end(&self) -> u64 {
        self.batches
            .last()
            .map_or(self.log_start_offset, |b| b.last_offset + 1)
    }

    /// Records an append and returns `(base_offset, last_offset)` it must get.
    pub fn append(&mut self, batches: &[Bytes], leader_epoch: i32) -> (u64, u64) {
        let base = self.end();
        if self
            .epochs
            .last()
            .is_none_or(|&(latest, _)| latest < leader_epoch)
        {
            self.epochs.push((leader_epoch, base));
        }
        for bytes in batches {
            let header = batch::validate(bytes).expect("valid batch");
            let base_offset = self.end();
            self.batches.push(StoredBatch {
                base_offset,
                last_offset: base_offset + header.offset_count() - 1,
                leader_epoch,
                max_timestamp: header.max_timestamp,
                tail: bytes.slice(STAMPED_PREFIX_BYTES..),
            });
        }
        (base, self.end() - 1)
    }

    /// Index of the batch holding `offset`.
    pub fn batch_index_of(&self, offset: u64) -> Option<usize> {
        let index = self.batches.partition_point(|b| b.last_offset < offset);
        (index < self.batches.len() && self.batches[index].base_offset <= offset).then_some(index)
    }

    /// Batches at or after the log start.
    pub fn live(&self) -> &[StoredBatch] {
        let first = self
            .batches
            .partition_point(|b| b.base_offset < self.log_start_offset);
        &self.batches[first..]
    }

    /// Checks a read at `offset` with `max_bytes` that may return nothing at
    /// or after `readable_end` (the log end, or a high watermark).
    pub fn check_read(&self, offset: u64, max_bytes: usize, readable_end: u64, got: &Bytes) {
        if offset >= readable_end {
            assert!(
                got.is_empty(),
                "read at {offset} >= readable end {readable_end} returned data"
            );
            return;
        }
        let returned = split(got);
        assert!(
            !returned.is_empty(),
            "read at {offset} below {readable_end} returned nothing"
        );
        let first = self
            .batch_index_of(offset)
            .expect("offset below the end is in a batch");
        let total: usize = returned.iter().map(|(_, bytes)| bytes.len()).sum();
        assert!(
            total <= max_bytes || returned.len() == 1,
            "read of {max_bytes} bytes returned {} batches, {total} bytes",
            returned.len()
        );
        for (i, (header, bytes)) in returned.iter().enumerate() {
            let expected = &self.batches[first + i];
            assert_batch_is(header, bytes, expected);
            assert!(
                header.last_offset() < readable_end,
                "read returned offset {} past {readable_end}",
                header.last_offset()
            );
        }
    }
}

/// Asserts a stored batch is byte-for-byte the one the model expects.
pub fn assert_batch_is(header: &BatchHeader, bytes: &Bytes, expected: &StoredBatch) {
    assert_eq!(header.base_offset, expected.base_offset, "base offset");
    assert_eq!(
        header.last_offset(),
        expected.last_offset,
        "last offset of batch at {}",
        expected.base_offset
    );
    assert_eq!(
        header.partition_leader_epoch, expected.leader_epoch,
        "leader epoch of batch at {}",
        expected.base_offset
    );
    assert!(
        bytes[STAMPED_PREFIX_BYTES..] == expected.tail[..],
        "bytes of batch at {} differ from what was appended",
        expected.base_offset
    );
}

/// Reads the whole log from its start and checks it equals the model, batch
/// by batch; then checks a one-batch read at every offset of every batch.
pub fn check_whole_log(log: &Log, model: &Model) {
    assert_eq!(
        log.log_start_offset(),
        model.log_start_offset,
        "log start offset"
    );
    assert_eq!(log.log_end_offset(), model.end(), "log end offset");
    assert_eq!(
        log.epochs().entries(),
        &model.epochs[..],
        "leader-epoch cache"
    );
    let live = model.live();
    let mut next = 0;
    let mut offset = model.log_start_offset;
    while offset < model.end() {
        let got = log_read(log, offset, 1 << 20).expect("read below the end");
        let returned = split(&got);
        assert!(
            !returned.is_empty(),
            "read at {offset} returned nothing before the end"
        );
        for (header, bytes) in &returned {
            assert_batch_is(header, bytes, &live[next]);
            next += 1;
        }
        offset = returned
            .last()
            .map_or(offset, |(header, _)| header.last_offset() + 1);
    }
    assert_eq!(next, live.len(), "every live batch was read once");
    for expected in live {
        for offset in [expected.base_offset, expected.last_offset] {
            let got = log_read(log, offset, 0).expect("read a batch");
            let returned = split(&got);
            assert_eq!(returned.len(), 1, "max_bytes 0 returns exactly one batch");
            assert_batch_is(&returned[0].0, &returned[0].1, expected);
        }
    }
    assert!(log_read(log, model.end(), 1 << 20)
        .expect("read at the end")
        .is_empty());
}
