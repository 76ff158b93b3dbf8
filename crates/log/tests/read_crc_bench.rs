//! What checking every batch's CRC on read costs. Not run in CI:
//!
//! ```text
//! cargo test --release -p weir-log --test read_crc_bench -- --ignored --nocapture
//! ```
//!
//! Writes `WEIR_BENCH_MIB` (default 1024) MiB of 16 KiB batches, then reads
//! them from the page cache in 1 MiB reads three ways: through
//! `ReadCursor::read` (pread, header walk and CRC-32C of every batch, as
//! served), as the read path did before the check (pread and header walk
//! only), and the CRC-32C alone over the bytes in memory.

mod common;

use std::time::Instant;

use bytes::Bytes;
use weir_log::batch::{self, BatchHeader, HEADER_BYTES};
use weir_log::{Log, LogConfig};

use common::{batch as make_batch, parsed, NOW_MS};

const BATCH_BYTES_TARGET: usize = 16 * 1024;
const READ_BYTES: usize = 1 << 20;

fn mib_per_second(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / seconds
}

#[test]
#[ignore = "benchmark: run by hand, see the module docs"]
fn crc_on_read_cost() {
    let mib: u64 = std::env::var("WEIR_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1 << 30,
        retention_ms: None,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config, false).expect("open");
    // 16 records of ~1 KiB: one 16 KiB batch, appended over and over.
    let one: Bytes = make_batch(16, BATCH_BYTES_TARGET / 16 - 20, NOW_MS, 7);
    let batches = parsed(std::slice::from_ref(&one));
    let count = mib * 1024 * 1024 / one.len() as u64;
    for _ in 0..count {
        log.append(&batches, 0, NOW_MS).expect("append");
    }
    let end = log.log_end_offset();
    let total = log.size_bytes();

    for round in 0..5 {
        let checked = timed(|| read_all_checked(&log, end));
        let unchecked = timed(|| read_all_unchecked(&log, end));
        let crc_only = timed(|| crc_all(&log, end));
        eprintln!(
            "round {round}: {} MiB of {}-byte batches: with CRC check {:.0} MiB/s, without {:.0} MiB/s, CRC-32C alone {:.0} MiB/s",
            total >> 20,
            one.len(),
            mib_per_second(total, checked),
            mib_per_second(total, unchecked),
            mib_per_second(total, crc_only),
        );
    }
}

fn timed(f: impl FnOnce() -> u64) -> f64 {
    let started = Instant::now();
    let bytes = f();
    assert!(bytes > 0);
    started.elapsed().as_secs_f64()
}

/// The served read path: `ReadCursor::read`, which checks every batch.
fn read_all_checked(log: &Log, end: u64) -> u64 {
    let mut offset = 0;
    let mut bytes = 0;
    while offset < end {
        let cursor = log.cursor(offset).expect("cursor").expect("data");
        let got = cursor.read(READ_BYTES, u64::MAX).expect("read");
        offset = last_offset(&got) + 1;
        bytes += got.len() as u64;
    }
    bytes
}

/// The read path before the check: one pread of up to 1 MiB and a walk of
/// the headers to cut it at a batch boundary.
fn read_all_unchecked(log: &Log, end: u64) -> u64 {
    let (file, _) = log.sync_target();
    let size = file.len().expect("len");
    let mut position = 0u64;
    let mut bytes = 0;
    let mut buf = vec![0u8; READ_BYTES];
    let mut offset = 0;
    while offset < end && position < size {
        let want = (READ_BYTES as u64).min(size - position) as usize;
        file.read_exact_at(&mut buf[..want], position)
            .expect("pread");
        // A fresh buffer per read, as the served path hands out `Bytes`.
        let owned = Bytes::copy_from_slice(&buf[..want]);
        let mut whole = 0;
        while whole + HEADER_BYTES <= owned.len() {
            let header = BatchHeader::parse(&owned[whole..]).expect("header");
            if whole + header.total_bytes() > owned.len() {
                break;
            }
            offset = header.last_offset() + 1;
            whole += header.total_bytes();
        }
        position += whole as u64;
        bytes += whole as u64;
    }
    bytes
}

/// CRC-32C of every batch, the bytes already in memory.
fn crc_all(log: &Log, end: u64) -> u64 {
    let cursor = log.cursor(0).expect("cursor").expect("data");
    let one = cursor.read(0, end).expect("read one batch");
    batch::validate(&one).expect("valid");
    let count = log.size_bytes() / one.len() as u64;
    let mut crc = 0u32;
    for _ in 0..count {
        crc ^= crc32c::crc32c(std::hint::black_box(&one[21..]));
    }
    std::hint::black_box(crc);
    count * one.len() as u64
}

fn last_offset(bytes: &Bytes) -> u64 {
    let mut at = 0;
    let mut last = 0;
    while at < bytes.len() {
        let header = BatchHeader::parse(&bytes[at..]).expect("header");
        last = header.last_offset();
        at += header.total_bytes();
    }
    last
}
