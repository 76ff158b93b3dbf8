//! `SharedLog` under concurrency: group commit, and readers that never see
//! past the high watermark.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use weir_log::batch::{self, BatchHeader};
use weir_log::{Log, LogConfig, LogError, SharedLog};

use common::{batch, config, parsed, split, NOW_MS};

const WRITERS: usize = 32;
const APPENDS_PER_WRITER: usize = 20;

/// Batch number `sequence` of `writer`: the writer is the first byte of
/// the first record's key, the sequence is the length of its value.
fn tagged_batch(writer: usize, sequence: usize) -> Bytes {
    batch(1 + sequence % 3, sequence, NOW_MS, writer as u8)
}

fn tag_of(header: &BatchHeader, bytes: &Bytes) -> (usize, usize) {
    // Record layout after the header: length varint, attributes, timestamp
    // delta, offset delta, key length (2 → varint 4), key = [seed, 0].
    let record = &bytes[batch::HEADER_BYTES..];
    let length_bytes = record.iter().take_while(|&&b| b & 0x80 != 0).count() + 1;
    let key_at = length_bytes + 1 + 1 + 1 + 1;
    let writer = record[key_at] as usize;
    let value_length_at = key_at + 2;
    let (zigzag, _) = read_varint(&record[value_length_at..]);
    let sequence = ((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64)) as usize;
    assert_eq!(
        header.offset_count(),
        (1 + sequence % 3) as u64,
        "records in batch {sequence} of writer {writer}"
    );
    (writer, sequence)
}

fn read_varint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("unterminated varint");
}

/// Reads everything below the high watermark, from the start, checking
/// that no read returns an offset at or past the watermark seen after it.
fn read_all_below_high_watermark(shared: &SharedLog) -> Vec<(BatchHeader, Bytes)> {
    let mut batches = Vec::new();
    let mut offset = shared.offsets().log_start_offset;
    loop {
        let high_watermark_before = shared.offsets().high_watermark;
        let got = shared.read(offset, 4096).expect("read");
        let high_watermark = shared.offsets().high_watermark;
        if got.is_empty() {
            assert!(
                offset >= high_watermark_before,
                "empty read at {offset} below the high watermark {high_watermark_before}"
            );
            return batches;
        }
        for (header, bytes) in split(&got) {
            assert!(
                header.last_offset() < high_watermark,
                "read offset {} at or past the high watermark {high_watermark}",
                header.last_offset()
            );
            assert_eq!(header.base_offset, offset, "reads are contiguous");
            offset = header.last_offset() + 1;
            batches.push((header, bytes));
        }
    }
}

fn check_every_append_landed_once(batches: &[(BatchHeader, Bytes)]) {
    let mut next_sequence: BTreeMap<usize, usize> = BTreeMap::new();
    for (header, bytes) in batches {
        let (writer, sequence) = tag_of(header, bytes);
        let expected = next_sequence.entry(writer).or_insert(0);
        assert_eq!(
            sequence, *expected,
            "writer {writer}'s appends land in order, once each"
        );
        *expected += 1;
    }
    assert_eq!(next_sequence.len(), WRITERS);
    assert!(next_sequence.values().all(|&n| n == APPENDS_PER_WRITER));
}

async fn group_commit(config: LogConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = Arc::new(SharedLog::new(
        Log::open(dir.path(), config.clone(), false).expect("open"),
    ));
    let writing = Arc::new(AtomicBool::new(true));

    let reader = {
        let shared = Arc::clone(&shared);
        let writing = Arc::clone(&writing);
        tokio::spawn(async move {
            let mut passes = 0;
            while writing.load(Ordering::SeqCst) {
                read_all_below_high_watermark(&shared);
                passes += 1;
                tokio::task::yield_now().await;
            }
            passes
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                for sequence in 0..APPENDS_PER_WRITER {
                    let bytes = tagged_batch(writer, sequence);
                    let info = shared.append(&parsed(&[bytes]), 0, NOW_MS).expect("append");
                    shared
                        .wait_durable(info.written())
                        .await
                        .expect("wait_durable");
                    let offsets = shared.offsets();
                    assert!(
                        offsets.high_watermark > info.last_offset,
                        "acknowledged only once durable"
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task");
    }
    writing.store(false, Ordering::SeqCst);
    reader.await.expect("reader task");

    let offsets = shared.offsets();
    assert_eq!(
        offsets.high_watermark, offsets.log_end_offset,
        "everything acknowledged is durable"
    );
    let total_offsets: u64 = (0..APPENDS_PER_WRITER)
        .map(|s| (1 + s % 3) as u64)
        .sum::<u64>()
        * WRITERS as u64;
    assert_eq!(offsets.log_end_offset, total_offsets);
    let batches = read_all_below_high_watermark(&shared);
    assert_eq!(batches.len(), WRITERS * APPENDS_PER_WRITER);
    check_every_append_landed_once(&batches);

    // A crash right now loses nothing that was acknowledged.
    drop(shared);
    let shared = SharedLog::new(Log::open(dir.path(), config, false).expect("reopen"));
    assert_eq!(shared.offsets().log_end_offset, total_offsets);
    check_every_append_landed_once(&read_all_below_high_watermark(&shared));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_all_become_durable() {
    group_commit(config(1 << 20, 64)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_all_become_durable_across_rolls() {
    group_commit(config(700, 64)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_with_flush_interval() {
    let config = LogConfig {
        flush_interval: Some(std::time::Duration::from_millis(10)),
        ..config(2000, 64)
    };
    group_commit(config).await;
}

#[tokio::test]
async fn appends_are_unreadable_until_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = SharedLog::new(Log::open(dir.path(), config(1 << 20, 64), false).expect("open"));
    let info = shared
        .append(&parsed(&[batch(3, 10, NOW_MS, 1)]), 0, NOW_MS)
        .expect("append");
    let offsets = shared.offsets();
    assert_eq!((offsets.high_watermark, offsets.log_end_offset), (0, 3));
    for offset in 0..=3 {
        assert!(
            shared.read(offset, 1 << 20).expect("read").is_empty(),
            "offset {offset} is not durable yet"
        );
    }
    assert!(shared
        .batch_at_or_after_timestamp(NOW_MS)
        .expect("time lookup")
        .is_none());
    let mut watermark = shared.watch_high_watermark();
    shared
        .wait_durable(info.written())
        .await
        .expect("wait_durable");
    assert_eq!(*watermark.borrow_and_update(), 3);
    assert_eq!(split(&shared.read(0, 1 << 20).expect("read")).len(), 1);
    assert!(shared
        .batch_at_or_after_timestamp(NOW_MS)
        .expect("time lookup")
        .is_some());
}

/// Kafka deletes only segments wholly below the high watermark, so the log
/// start never passes it: a consumer cannot be told "out of range" for data
/// the producer is still waiting to have acknowledged.
#[tokio::test]
async fn retention_never_moves_the_log_start_past_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention_bytes: Some(0),
        ..config(200, 64)
    };
    let shared = SharedLog::new(Log::open(dir.path(), config, false).expect("open"));
    for seed in 0..6 {
        shared
            .append(&parsed(&[batch(1, 100, NOW_MS, seed)]), 0, NOW_MS)
            .expect("append");
    }
    let before = shared.offsets();
    assert_eq!(before.high_watermark, 0, "nothing synced yet");
    shared.apply_retention(NOW_MS).expect("retention");
    let after = shared.offsets();
    assert!(
        after.log_start_offset <= after.high_watermark,
        "retention moved the log start to {} past the high watermark {}",
        after.log_start_offset,
        after.high_watermark
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_with_sync_spacing() {
    let config = LogConfig {
        sync_spacing: Some(std::time::Duration::from_millis(5)),
        ..config(2000, 64)
    };
    group_commit(config).await;
}

#[tokio::test]
async fn sync_spacing_delays_the_next_sync_and_unsynced_reads_see_writes() {
    let spacing = std::time::Duration::from_millis(80);
    let config = LogConfig {
        sync_spacing: Some(spacing),
        ..config(1 << 20, 64)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = SharedLog::new(Log::open(dir.path(), config, false).expect("open"));
    let first = shared
        .append(&parsed(&[batch(1, 10, NOW_MS, 1)]), 0, NOW_MS)
        .expect("append");
    shared
        .wait_durable(first.written())
        .await
        .expect("first sync");
    let second = shared
        .append(&parsed(&[batch(1, 10, NOW_MS, 2)]), 0, NOW_MS)
        .expect("append");
    // Written, not yet durable: only the unsynced read sees it.
    assert!(shared.read(1, 1 << 20).expect("read").is_empty());
    assert_eq!(
        split(&shared.read_unsynced(1, 1 << 20).expect("read")).len(),
        1
    );
    let started = std::time::Instant::now();
    shared
        .wait_durable(second.written())
        .await
        .expect("second sync");
    assert!(
        started.elapsed() >= spacing / 2,
        "the second sync waited for the spacing"
    );
    assert_eq!(split(&shared.read(1, 1 << 20).expect("read")).len(), 1);
}

/// A sync never waits for the log's lock, which an append rolling a
/// segment or a retention pass holds through fsyncs of its own: a waiter
/// on an async thread must not be held up behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_does_not_wait_for_the_log_lock() {
    const HELD: std::time::Duration = std::time::Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = Arc::new(SharedLog::new(
        Log::open(dir.path(), config(1 << 20, 64), false).expect("open"),
    ));
    let info = shared
        .append(&parsed(&[batch(3, 10, NOW_MS, 1)]), 0, NOW_MS)
        .expect("append");
    let (locked, is_locked) = std::sync::mpsc::channel();
    let holder = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            shared.with_log(|_| {
                locked.send(()).expect("send");
                std::thread::sleep(HELD);
            })
        })
    };
    is_locked.recv().expect("locked");
    let started = std::time::Instant::now();
    shared
        .wait_durable(info.written())
        .await
        .expect("wait_durable");
    assert!(
        started.elapsed() < HELD / 2,
        "the sync waited {:?} for the log's lock",
        started.elapsed()
    );
    assert_eq!(shared.offsets().high_watermark, 3);
    holder.join().expect("holder");
}

/// Counts the syncs it is told about.
#[derive(Debug, Default)]
struct SyncCount(std::sync::atomic::AtomicU64);

impl weir_log::SyncObserver for SyncCount {
    fn synced(&self, _duration: std::time::Duration) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn each_log_reports_its_syncs_to_its_own_observer() {
    let (one_dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one_count, other_count) = (
        Arc::new(SyncCount::default()),
        Arc::new(SyncCount::default()),
    );
    let open = |dir: &std::path::Path, count: &Arc<SyncCount>| {
        SharedLog::new(Log::open(dir, config(1 << 20, 64), false).expect("open"))
            .observing_syncs(Arc::clone(count))
    };
    let one = open(one_dir.path(), &one_count);
    let _other = open(other_dir.path(), &other_count);
    let info = one
        .append(&parsed(&[batch(1, 10, NOW_MS, 1)]), 0, NOW_MS)
        .expect("append");
    one.wait_durable(info.written()).await.expect("durable");
    assert_eq!(one_count.0.load(Ordering::Relaxed), 1);
    assert_eq!(other_count.0.load(Ordering::Relaxed), 0);
}

/// A follower's truncation fails the writes it cut, even once new data
/// fills their offsets, but never a write made after it (the node may
/// lead the partition again and write there).
#[tokio::test]
async fn a_truncation_fails_only_the_writes_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedLog::new(Log::open(dir.path(), config(1 << 20, 64), false).expect("open"));
    let append = |seed| {
        shared
            .append(&parsed(&[batch(1, 10, NOW_MS, seed)]), 0, NOW_MS)
            .expect("append")
    };
    let kept = append(1);
    let cut = append(2);
    shared.truncate_to(cut.base_offset).await.expect("truncate");
    let refilled = append(3);
    assert_eq!(refilled.base_offset, cut.base_offset, "same offset again");
    shared.wait_durable(kept.written()).await.expect("kept");
    assert!(matches!(
        shared.wait_durable(cut.written()).await,
        Err(LogError::Truncated { .. })
    ));
    assert!(matches!(
        shared.wait_committed(cut.written()).await,
        Err(LogError::Truncated { .. })
    ));
    shared
        .wait_committed(refilled.written())
        .await
        .expect("a write after the truncation is not concerned by it");
}
