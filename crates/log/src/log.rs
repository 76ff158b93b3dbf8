//! A partition log: an ordered set of segments in one directory.
//!
//! Directory layout:
//!
//! ```text
//! 00000000000000000000.log        segment files, named by base offset
//! 00000000000000000000.index
//! 00000000000000000000.timeindex
//! leader-epoch-checkpoint         epoch → start offset (crate::epoch)
//! log-end-checkpoint              "<next_offset> <active_segment_bytes>",
//!                                 written on clean close only
//! ```
//!
//! Only the last (active) segment is written to. Sealed segments were
//! fsync'ed when they were rolled, so recovery after a crash validates the
//! active segment only, and only from its last valid index entry.
//!
//! Not thread-safe: [`crate::SharedLog`] wraps it in a lock.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::checkpoint::{sync_dir, write_atomically};
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{LogError, Result};
use crate::segment::{Recovery, Segment, SEGMENT_BYTES_MAX};

const LOG_END_CHECKPOINT: &str = "log-end-checkpoint";

/// Offsets given to an appended set of batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: u64,
    /// Offset of the last record appended.
    pub last_offset: u64,
}

/// Where to read from, captured under the log's lock and used outside it.
#[derive(Debug, Clone)]
pub struct ReadCursor {
    file: Arc<std::fs::File>,
    size: u64,
    position: u64,
}

impl ReadCursor {
    /// Reads whole batches from the cursor: up to `max_bytes` but at least
    /// one batch, none that reaches `end_offset`.
    ///
    /// # Errors
    ///
    /// I/O errors, or `InvalidData` if the stored bytes are not batches.
    pub fn read(&self, max_bytes: usize, end_offset: u64) -> io::Result<Bytes> {
        crate::segment::read_batches(&self.file, self.size, self.position, max_bytes, end_offset)
    }
}

/// A partition's segments and leader-epoch cache.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<u64, Segment>,
    epochs: LeaderEpochCache,
}

impl Log {
    /// Opens the log in `dir` (creating it if needed). After a clean
    /// shutdown (`clean` true and a matching `log-end-checkpoint`) nothing is
    /// scanned; otherwise the active segment's tail is validated and a torn
    /// or corrupt tail is cut.
    ///
    /// # Errors
    ///
    /// I/O errors reading the directory or its files.
    pub fn open(dir: &Path, config: LogConfig, clean: bool) -> Result<Log> {
        fs::create_dir_all(dir)?;
        let base_offsets = segment_base_offsets(dir)?;
        let mut segments = BTreeMap::new();
        for &base_offset in &base_offsets {
            segments.insert(
                base_offset,
                Segment::open(dir, base_offset, config.index_interval_bytes)?,
            );
        }
        if segments.is_empty() {
            segments.insert(0, Segment::create(dir, 0, config.index_interval_bytes)?);
            sync_dir(dir)?;
        }
        let bases: Vec<u64> = segments.keys().copied().collect();
        for pair in bases.windows(2) {
            if let Some(segment) = segments.get_mut(&pair[0]) {
                segment.set_next_offset(pair[1]);
            }
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            epochs: LeaderEpochCache::open(dir)?,
        };
        log.open_active_segment(clean)?;
        let end = log.log_end_offset();
        log.epochs.truncate_from(end)?;
        Ok(log)
    }

    fn open_active_segment(&mut self, clean: bool) -> Result<()> {
        let checkpoint = if clean {
            read_log_end_checkpoint(&self.dir)
        } else {
            None
        };
        // The checkpoint describes the log as it was closed; once the log
        // is written again it is stale. Removing it is enough without a
        // directory sync: the caller only passes `clean` after a clean stop.
        match fs::remove_file(self.dir.join(LOG_END_CHECKPOINT)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
        let active = self.active_mut();
        match checkpoint {
            Some((next_offset, size))
                if size == active.size() && next_offset >= active.base_offset() =>
            {
                active.set_next_offset(next_offset);
            }
            _ => {
                let Recovery {
                    batches_scanned,
                    bytes_truncated,
                } = active.recover()?;
                if bytes_truncated > 0 {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        bytes_truncated,
                        "cut a torn or corrupt tail from the active segment"
                    );
                }
                tracing::debug!(dir = %self.dir.display(), batches_scanned, "recovered active segment");
            }
        }
        Ok(())
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the settings; they apply from the next append or retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.segments
            .values()
            .next()
            .map_or(0, Segment::base_offset)
    }

    /// Offset the next appended record gets.
    pub fn log_end_offset(&self) -> u64 {
        self.active().next_offset()
    }

    /// Bytes stored in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The leader-epoch cache.
    pub fn epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// The active segment's file and the log end offset: syncing that file
    /// makes every offset below the returned one durable (sealed segments
    /// were synced when rolled).
    pub fn sync_target(&self) -> (Arc<std::fs::File>, u64) {
        (self.active().file(), self.log_end_offset())
    }

    /// Appends validated batches, giving them consecutive offsets and
    /// `leader_epoch`. Written, not yet synced: see [`crate::SharedLog`].
    ///
    /// # Errors
    ///
    /// [`LogError::BatchTooLarge`] (nothing written) or I/O errors (the
    /// caller must stop writing: some batches may be partly written).
    pub fn append(
        &mut self,
        batches: &[(BatchHeader, Bytes)],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        assert!(!batches.is_empty(), "append needs at least one batch");
        let limit = self.config.max_message_bytes;
        if let Some((_, bytes)) = batches.iter().find(|(_, bytes)| bytes.len() > limit) {
            return Err(LogError::BatchTooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let base_offset = self.log_end_offset();
        self.epochs.assign(leader_epoch, base_offset)?;
        for (header, bytes) in batches {
            let mut stamped = *header;
            stamped.base_offset = self.log_end_offset();
            stamped.partition_leader_epoch = leader_epoch;
            if self.should_roll(&stamped, bytes.len(), now_ms) {
                self.roll()?;
            }
            self.active_mut().append(&stamped, bytes)?;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: self.log_end_offset() - 1,
        })
    }

    fn should_roll(&self, header: &BatchHeader, size: usize, now_ms: i64) -> bool {
        let active = self.active();
        if active.size() == 0 {
            return false;
        }
        let segment_bytes = self.config.segment_bytes.min(SEGMENT_BYTES_MAX);
        let too_big = active.size() + size as u64 > segment_bytes;
        let too_old = active
            .first_batch_timestamp()
            .is_some_and(|first| now_ms.saturating_sub(first) >= self.config.segment_ms as i64);
        too_big || too_old || !active.can_hold(header.last_offset())
    }

    /// Seals the active segment (fsync'ed) and starts a new one at the log end.
    ///
    /// # Errors
    ///
    /// I/O errors sealing or creating segments.
    pub fn roll(&mut self) -> Result<()> {
        let next_offset = self.log_end_offset();
        self.active_mut().seal()?;
        let segment = Segment::create(&self.dir, next_offset, self.config.index_interval_bytes)?;
        sync_dir(&self.dir)?;
        self.segments.insert(next_offset, segment);
        Ok(())
    }

    /// Finds the batch holding `offset`, for a read outside the lock.
    /// `Ok(None)` when `offset` is the log end (nothing to read yet).
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] when `offset` is before the log start
    /// or after the log end; I/O errors.
    pub fn cursor(&self, offset: u64) -> Result<Option<ReadCursor>> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        let first_candidate = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(start, |(&base, _)| base);
        for segment in self
            .segments
            .range(first_candidate..)
            .map(|(_, segment)| segment)
        {
            if let Some(position) = segment.position_of(offset)? {
                return Ok(Some(ReadCursor {
                    file: segment.file(),
                    size: segment.size(),
                    position,
                }));
            }
        }
        Ok(None)
    }

    /// The first stored batch whose max timestamp is `>= timestamp`.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn batch_at_or_after_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>> {
        for segment in self.segments.values() {
            if let Some(batch) = segment.find_batch_by_timestamp(timestamp)? {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// Deletes sealed segments past `retention.ms` (by their newest record)
    /// or beyond `retention.bytes` (oldest first), but only segments that
    /// end at or below `deletable_below` (the high watermark: data not yet
    /// acknowledged or readable is never deleted, so the log start never
    /// passes it). An active segment whose records have all expired is
    /// rolled first, so idle topics expire too. Returns how many segments
    /// were deleted.
    ///
    /// # Errors
    ///
    /// I/O errors deleting files.
    pub fn apply_retention(&mut self, now_ms: i64, deletable_below: u64) -> Result<usize> {
        let expired = |segment: &Segment, retention_ms: u64| {
            segment
                .max_timestamp()
                .is_some_and(|max| now_ms.saturating_sub(max) > retention_ms as i64)
        };
        if let Some(retention_ms) = self.config.retention_ms {
            if self.active().size() > 0 && expired(self.active(), retention_ms) {
                self.roll()?;
            }
        }
        let mut delete_below = None;
        let mut remaining_bytes = self.size_bytes();
        for segment in self.segments.values().take(self.segments.len() - 1) {
            if segment.next_offset() > deletable_below {
                break;
            }
            let by_time = self
                .config
                .retention_ms
                .is_some_and(|ms| expired(segment, ms));
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|limit| remaining_bytes.saturating_sub(segment.size()) >= limit);
            if !(by_time || by_size) {
                break;
            }
            remaining_bytes -= segment.size();
            delete_below = Some(segment.next_offset());
        }
        match delete_below {
            Some(offset) => self.delete_segments_below(offset),
            None => Ok(0),
        }
    }

    /// Deletes the sealed segments that end at or below `offset`, moving the
    /// log start to the first segment kept. Returns how many were deleted.
    ///
    /// # Errors
    ///
    /// I/O errors deleting files.
    pub fn delete_segments_below(&mut self, offset: u64) -> Result<usize> {
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let Some(first) = self.segments.first_entry() else {
                break;
            };
            if first.get().next_offset() > offset {
                break;
            }
            first.remove().delete()?;
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }

    /// Syncs everything and records the log end so the next open after a
    /// clean shutdown scans nothing.
    ///
    /// # Errors
    ///
    /// I/O errors; the checkpoint is then not written and the next open recovers.
    pub fn close(&mut self) -> Result<()> {
        let active = self.active_mut();
        active.seal()?;
        let contents = format!("{} {}\n", active.next_offset(), active.size());
        write_atomically(&self.dir.join(LOG_END_CHECKPOINT), contents.as_bytes())?;
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
}

/// Base offsets of the `.log` files in `dir`, ascending. Leftover temporary
/// files from an interrupted checkpoint write are removed.
fn segment_base_offsets(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("log") => {
                if let Some(base) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse().ok())
                {
                    bases.push(base);
                }
            }
            Some("tmp") => fs::remove_file(&path)?,
            _ => {}
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn read_log_end_checkpoint(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join(LOG_END_CHECKPOINT)).ok()?;
    let (next_offset, size) = text.trim().split_once(' ')?;
    Some((next_offset.parse().ok()?, size.parse().ok()?))
}
