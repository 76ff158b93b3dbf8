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
//! corrupt-ranges                  fenced damage, present only when some is known:
//!                                 "0" (version), N, then N lines
//!                                 "<segment_base> <position> <bytes> <first_offset> <end_offset>"
//! ```
//!
//! Only the last (active) segment is written to. Sealed segments were
//! fsync'ed when they were rolled, so recovery after a crash validates the
//! active segment only, and only from its last valid index entry.
//!
//! Damage is never silently dropped. Recovery cuts a torn tail (and logs
//! every cut with its bytes and offsets) but fences damage that valid
//! batches follow ([`crate::segment::CorruptRange`]). The fenced ranges are
//! written to `corrupt-ranges` whenever they change, so they survive
//! restarts whether or not the next open scans the segment (a clean open
//! does not, and recovery scans only from the last index entry). Reads
//! check every batch's CRC before returning it, which also catches damage
//! recovery did not scan (before its checkpoint, in a sealed segment, after
//! a clean stop); [`crate::SharedLog`] then fences it too
//! ([`Log::fence_damage`]), so it is counted and persisted like the rest.
//!
//! A failed write is undone (file and indexes cut back) before
//! [`Log::append`] returns, so a full disk fails the write, not the log.
//! [`Log::truncate_to`] cuts the log back to any offset (healing after a
//! failed sync; a follower's truncation in replication).
//!
//! Not thread-safe: [`crate::SharedLog`] wraps it in a lock. A
//! [`ReadCursor`] is used outside the lock.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::{LogError, Result};
use crate::fenced::{format_corrupt_ranges, parse_corrupt_ranges};
use crate::segment::{AppendError, CorruptRange, Recovery, Segment, SEGMENT_BYTES_MAX};
use crate::storage::{remove_if_present, write_atomically_in, FileHandle, StdStorage, Storage};
use crate::stored::ReadError;

const LOG_END_CHECKPOINT: &str = "log-end-checkpoint";
const CORRUPT_RANGES: &str = "corrupt-ranges";

/// Offsets given to an appended set of batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: u64,
    /// Offset of the last record appended.
    pub last_offset: u64,
    /// How many truncations the log had begun before this append.
    pub truncations: u64,
}

impl AppendInfo {
    /// What a writer of these batches waits on.
    pub fn written(&self) -> Written {
        Written {
            end_offset: self.last_offset + 1,
            truncations: self.truncations,
        }
    }
}

/// The end of a write and how many truncations its log had begun before
/// it ([`Log::truncations`]): a later truncation that cut the end offset
/// makes the write lost for good, even once new data fills that offset
/// again, while a truncation before the write does not concern it.
/// The default is a write of nothing, durable from the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// The offset after the last one written.
    pub end_offset: u64,
    /// [`Log::truncations`] when it was written.
    pub truncations: u64,
}

/// Where to read from, captured under the log's lock and used outside it.
#[derive(Debug, Clone)]
pub struct ReadCursor {
    file: FileHandle,
    limit: u64,
    position: u64,
    offset: u64,
    segment_base_offset: u64,
    dir: Arc<Path>,
}

impl ReadCursor {
    /// Reads whole batches from the cursor: up to `max_bytes` but at least
    /// one batch, none that reaches `end_offset`. Every batch is checked
    /// against its CRC first; a read that runs into a damaged batch returns
    /// the good batches before it.
    ///
    /// # Errors
    ///
    /// [`LogError::Corrupt`] when the first batch is damaged; I/O errors.
    pub fn read(&self, max_bytes: usize, end_offset: u64) -> Result<Bytes> {
        crate::stored::read_batches(
            self.file.as_ref(),
            self.limit,
            self.position,
            max_bytes,
            end_offset,
        )
        .map_err(|error| match error {
            ReadError::Io(error) => LogError::Io(error),
            ReadError::Corrupt => self.corrupt(),
        })
    }

    fn corrupt(&self) -> LogError {
        // Damage recovery did not scan (before its checkpoint, in a sealed
        // segment, or after a clean stop) is first seen here.
        tracing::error!(
            dir = %self.dir.display(),
            segment = self.segment_base_offset,
            position = self.position,
            offset = self.offset,
            "stored batch failed its check (CRC, header or offsets); not served"
        );
        LogError::Corrupt {
            offset: self.offset,
            segment_base_offset: self.segment_base_offset,
            position: self.position,
        }
    }
}

/// A partition's segments and leader-epoch cache.
#[derive(Debug)]
pub struct Log {
    dir: Arc<Path>,
    storage: Arc<dyn Storage>,
    config: LogConfig,
    segments: BTreeMap<u64, Segment>,
    epochs: LeaderEpochCache,
    last_recovery: Recovery,
    truncations: u64,
}

impl Log {
    /// Opens the log in `dir` (creating it if needed) on the real disk.
    /// After a clean shutdown (`clean` true and a matching
    /// `log-end-checkpoint`) nothing is scanned; otherwise the active
    /// segment's tail is validated: a torn tail is cut, damage followed by
    /// valid batches is fenced. Every cut and every fenced range is logged
    /// (`tracing` error/warn) and reported by [`Log::last_recovery`] and
    /// [`Log::corrupt_ranges`].
    ///
    /// # Errors
    ///
    /// I/O errors reading the directory or its files.
    pub fn open(dir: &Path, config: LogConfig, clean: bool) -> Result<Log> {
        Log::open_in(StdStorage::shared(), dir, config, clean)
    }

    /// As [`Log::open`], with the files of `storage` (a simulated disk in tests).
    ///
    /// # Errors
    ///
    /// I/O errors reading the directory or its files.
    pub fn open_in(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: LogConfig,
        clean: bool,
    ) -> Result<Log> {
        storage.create_dir_all(dir)?;
        let base_offsets = segment_base_offsets(storage.as_ref(), dir)?;
        let mut segments = BTreeMap::new();
        for &base_offset in &base_offsets {
            let segment = Segment::open_in(
                Arc::clone(&storage),
                dir,
                base_offset,
                config.index_interval_bytes,
            )?;
            segments.insert(base_offset, segment);
        }
        if segments.is_empty() {
            let segment =
                Segment::create_in(Arc::clone(&storage), dir, 0, config.index_interval_bytes)?;
            segments.insert(0, segment);
            storage.sync_dir(dir)?;
        }
        let bases: Vec<u64> = segments.keys().copied().collect();
        for pair in bases.windows(2) {
            if let Some(segment) = segments.get_mut(&pair[0]) {
                segment.set_next_offset(pair[1]);
            }
        }
        let epochs = LeaderEpochCache::open_in(Arc::clone(&storage), dir)?;
        let mut log = Log {
            dir: Arc::from(dir),
            storage,
            config,
            segments,
            epochs,
            last_recovery: Recovery::default(),
            truncations: 0,
        };
        log.load_corrupt_ranges();
        log.open_active_segment(clean)?;
        let end = log.log_end_offset();
        log.epochs.truncate_from(end)?;
        Ok(log)
    }

    fn open_active_segment(&mut self, clean: bool) -> Result<()> {
        let checkpoint = if clean {
            read_log_end_checkpoint(self.storage.as_ref(), &self.dir)
        } else {
            None
        };
        // The checkpoint describes the log as it was closed; once the log
        // is written again it is stale. Removing it is enough without a
        // directory sync: the caller only passes `clean` after a clean stop.
        remove_if_present(self.storage.as_ref(), &self.dir.join(LOG_END_CHECKPOINT))?;
        let active = self.active_mut();
        match checkpoint {
            Some((next_offset, size))
                if size == active.size()
                    && next_offset >= active.base_offset()
                    && active.indexes_look_sound(next_offset) =>
            {
                active.set_next_offset(next_offset);
            }
            _ => {
                let fenced_before = active.fenced().to_vec();
                let size_found = active.size();
                let mut recovery = active.recover()?;
                // What recovery kept counts as durable from now on (the
                // high watermark starts at the log end), but after a crash
                // of the process alone it may sit in the page cache only.
                active.file().sync_data()?;
                self.report_recovery(&recovery);
                if let Some((next_offset, size)) = checkpoint {
                    self.report_checkpoint_mismatch(next_offset, size, size_found);
                    recovery.checkpoint_mismatch = Some((next_offset, size));
                }
                if self.active().fenced() != fenced_before.as_slice() {
                    self.persist_corrupt_ranges()?;
                }
                self.last_recovery = recovery;
            }
        }
        Ok(())
    }

    /// Logs every cut and every fenced range of a recovery.
    fn report_recovery(&self, recovery: &Recovery) {
        let dir = self.dir.display();
        let segment = self.active().base_offset();
        if recovery.bytes_truncated > 0 {
            tracing::warn!(
                dir = %dir,
                segment,
                position = recovery.truncated_at_position,
                bytes_cut = recovery.bytes_truncated,
                from_offset = recovery.truncated_from_offset,
                claimed_last_offset = ?recovery.truncated_claimed_last_offset,
                "cut a torn tail (bytes with no valid batch after them) from the active segment"
            );
        }
        for range in &recovery.fenced {
            tracing::error!(
                dir = %dir,
                segment,
                position = range.position,
                bytes = range.bytes,
                first_offset = range.first_offset,
                end_offset = range.end_offset,
                "corrupt bytes followed by valid batches: fenced, reads of these offsets fail"
            );
        }
        tracing::debug!(dir = %dir, batches_scanned = recovery.batches_scanned, "recovered active segment");
    }

    /// A clean close recorded `(next_offset, size)`, but the active segment
    /// does not match it: data the checkpoint vouched for may be missing.
    fn report_checkpoint_mismatch(&self, next_offset: u64, size: u64, size_found: u64) {
        let end = self.log_end_offset();
        let size_kept = self.active().size();
        if end < next_offset || size_kept < size {
            tracing::error!(
                dir = %self.dir.display(),
                checkpoint_next_offset = next_offset,
                checkpoint_bytes = size,
                bytes_found = size_found,
                bytes_kept = size_kept,
                log_end_offset = end,
                "data recorded by the clean-shutdown checkpoint is missing from the active segment"
            );
        } else {
            tracing::warn!(
                dir = %self.dir.display(),
                checkpoint_next_offset = next_offset,
                checkpoint_bytes = size,
                bytes_found = size_found,
                log_end_offset = end,
                "the active segment does not match the clean-shutdown checkpoint; recovered it"
            );
        }
    }

    /// What the last recovery on open found: cuts and fenced ranges
    /// (empty after a clean open).
    pub fn last_recovery(&self) -> &Recovery {
        &self.last_recovery
    }

    /// Every fenced range of the log, oldest first (for a metric and for
    /// operators: `weir data check` gives the details).
    pub fn corrupt_ranges(&self) -> Vec<CorruptRange> {
        self.segments
            .values()
            .flat_map(|segment| segment.fenced().iter().copied())
            .collect()
    }

    fn load_corrupt_ranges(&mut self) {
        let Ok(bytes) = self.storage.read(&self.dir.join(CORRUPT_RANGES)) else {
            return;
        };
        let Some(ranges) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(parse_corrupt_ranges)
        else {
            tracing::error!(dir = %self.dir.display(), "unreadable corrupt-ranges file ignored; reads still check every CRC");
            return;
        };
        for range in ranges {
            if let Some(segment) = self.segments.get_mut(&range.segment_base_offset) {
                segment.fence(range);
            }
        }
    }

    /// Writes the fenced ranges to `corrupt-ranges`, or removes the file
    /// when there are none.
    fn persist_corrupt_ranges(&self) -> io::Result<()> {
        let ranges = self.corrupt_ranges();
        let path = self.dir.join(CORRUPT_RANGES);
        if ranges.is_empty() {
            return remove_if_present(self.storage.as_ref(), &path);
        }
        let text = format_corrupt_ranges(&ranges);
        write_atomically_in(self.storage.as_ref(), &path, text.as_bytes())
    }

    /// The file layer this log's files live on.
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Fences the damage a read found at `position` of the segment starting
    /// at `segment_base_offset` (damage recovery did not scan: before its
    /// checkpoint, in a sealed segment, or after a clean stop), up to where
    /// valid batches resume or to the end of the segment; nothing is cut.
    /// Persists and logs the range. Returns it, or `None` when the bytes
    /// there are valid after all (the read raced a truncation) or already fenced.
    ///
    /// # Errors
    ///
    /// I/O errors reading the segment or writing `corrupt-ranges`.
    pub fn fence_damage(
        &mut self,
        segment_base_offset: u64,
        position: u64,
    ) -> Result<Option<CorruptRange>> {
        let Some(segment) = self.segments.get_mut(&segment_base_offset) else {
            return Ok(None);
        };
        let Some(range) = segment.fence_damage_at(position)? else {
            return Ok(None);
        };
        tracing::error!(
            dir = %self.dir.display(),
            segment = range.segment_base_offset,
            position = range.position,
            bytes = range.bytes,
            first_offset = range.first_offset,
            end_offset = range.end_offset,
            "corrupt bytes found by a read: fenced, reads of these offsets fail"
        );
        self.persist_corrupt_ranges()?;
        Ok(Some(range))
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
    pub fn sync_target(&self) -> (FileHandle, u64) {
        (self.active().file(), self.log_end_offset())
    }

    /// Appends validated batches, giving them consecutive offsets and
    /// `leader_epoch`. Written, not yet synced: see [`crate::SharedLog`].
    ///
    /// All or nothing: when a write fails, every batch of the call is
    /// undone and the log ends where it ended before.
    ///
    /// # Errors
    ///
    /// [`LogError::BatchTooLarge`] (nothing written);
    /// [`LogError::WriteRolledBack`] when a write failed and was undone (the
    /// log is usable, a later append may succeed); [`LogError::Io`] when a
    /// roll's sync failed or undoing a write failed: the caller must stop
    /// writing until the log is healed ([`Log::truncate_to`] the durable end).
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
        // Nothing is written yet: a failure here leaves the log as it was.
        self.epochs
            .assign(leader_epoch, base_offset)
            .map_err(LogError::WriteRolledBack)?;
        for (header, bytes) in batches {
            let mut stamped = *header;
            stamped.base_offset = self.log_end_offset();
            stamped.partition_leader_epoch = leader_epoch;
            if self.should_roll(&stamped, bytes.len(), now_ms) {
                if let Err(error) = self.roll() {
                    return Err(match error {
                        LogError::WriteRolledBack(error) => self.undo_append(base_offset, error),
                        other => other,
                    });
                }
            }
            match self.active_mut().append(&stamped, bytes) {
                Ok(()) => {}
                Err(AppendError::RolledBack(error)) => {
                    return Err(self.undo_append(base_offset, error));
                }
                Err(AppendError::Unknown { write, undo }) => {
                    tracing::error!(dir = %self.dir.display(), %write, %undo, "write failed and could not be undone");
                    return Err(LogError::Io(write));
                }
            }
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: self.log_end_offset() - 1,
            truncations: self.truncations,
        })
    }

    /// Undoes the batches of a failed append call written before the one
    /// that failed (that one is already undone).
    fn undo_append(&mut self, base_offset: u64, error: io::Error) -> LogError {
        tracing::warn!(dir = %self.dir.display(), %error, log_end_offset = base_offset, "write failed; undoing the append");
        if self.log_end_offset() == base_offset && self.active().base_offset() <= base_offset {
            self.forget_epochs_from(base_offset);
            return LogError::WriteRolledBack(error);
        }
        match self.truncate_to(base_offset) {
            Ok(_) => LogError::WriteRolledBack(error),
            Err(undo) => {
                tracing::error!(dir = %self.dir.display(), %error, %undo, "write failed and could not be undone");
                LogError::Io(error)
            }
        }
    }

    /// Drops an epoch assigned by an append that wrote nothing; on failure
    /// the stale entry is harmless until the next open drops it.
    fn forget_epochs_from(&mut self, offset: u64) {
        if let Err(error) = self.epochs.truncate_from(offset) {
            tracing::warn!(dir = %self.dir.display(), %error, "could not drop an unused leader epoch");
        }
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
    /// [`LogError::Io`] when sealing (a sync) failed: the log must be
    /// healed; [`LogError::WriteRolledBack`] when a write of the roll (the
    /// final time-index entry, the new segment's files) failed and was
    /// undone: the old segment stays active.
    pub fn roll(&mut self) -> Result<()> {
        match self.active_mut().record_final_timestamp() {
            Ok(()) => {}
            Err(AppendError::RolledBack(error)) => return Err(LogError::WriteRolledBack(error)),
            Err(AppendError::Unknown { write, .. }) => return Err(LogError::Io(write)),
        }
        // A failed sync here is fatal until healed (fsyncgate).
        self.active().sync_all()?;
        self.start_segment()
    }

    /// Creates the next segment at the log end and makes it active.
    fn start_segment(&mut self) -> Result<()> {
        let next_offset = self.log_end_offset();
        let created = Segment::create_in(
            Arc::clone(&self.storage),
            &self.dir,
            next_offset,
            self.config.index_interval_bytes,
        )
        .and_then(|segment| self.storage.sync_dir(&self.dir).map(|()| segment));
        match created {
            Ok(segment) => {
                self.segments.insert(next_offset, segment);
                Ok(())
            }
            Err(error) => {
                // A segment file left behind would claim offsets the
                // active segment goes on taking.
                match remove_segment_files(self.storage.as_ref(), &self.dir, next_offset) {
                    Ok(()) => Err(LogError::WriteRolledBack(error)),
                    Err(undo) => {
                        tracing::error!(dir = %self.dir.display(), %error, %undo, "could not remove a half-created segment");
                        Err(LogError::Io(error))
                    }
                }
            }
        }
    }

    /// Removes segment files that belong to no segment of the log (left by
    /// a roll that failed half-way), and syncs the directory if any.
    fn remove_stray_segment_files(&self) -> io::Result<()> {
        let mut removed = false;
        for base in segment_base_offsets(self.storage.as_ref(), &self.dir)? {
            if !self.segments.contains_key(&base) {
                remove_segment_files(self.storage.as_ref(), &self.dir, base)?;
                removed = true;
            }
        }
        if removed {
            self.storage.sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Cuts every batch holding an offset at or after `offset`, across
    /// segments (segments starting at or above it are deleted, the one
    /// holding it is cut), with their index and time-index entries, the
    /// leader epochs starting there and fenced ranges there; syncs the cut
    /// file and the directory. Returns the bytes cut. The new log end is
    /// `offset`, or lower when `offset` falls inside a batch or a fenced
    /// range (the whole batch or range goes).
    ///
    /// Also cuts whatever a failed write left past the end of the active
    /// segment, even when `offset` is at or past the log end.
    ///
    /// Used to heal after a failed sync (cut back to what is durable) and,
    /// in replication, by a follower cutting a diverging suffix (KIP-101).
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] below the log start; I/O errors, after
    /// which the log must not be written until a truncation succeeds.
    pub fn truncate_to(&mut self, offset: u64) -> Result<u64> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        self.remove_stray_segment_files()?;
        if offset >= end {
            self.active_mut().cut_stray_bytes()?;
            return Ok(0);
        }
        self.truncations += 1;
        let had_fences = self.segments.values().any(|s| !s.fenced().is_empty());
        let mut bytes_cut = 0;
        let mut deleted = false;
        while self.segments.len() > 1 {
            let Some(last) = self.segments.last_entry() else {
                break;
            };
            if *last.key() < offset {
                break;
            }
            bytes_cut += last.get().size();
            last.remove().delete()?;
            deleted = true;
        }
        if deleted {
            // A deleted segment that came back after a crash would hold
            // offsets the segment before it is about to be given again.
            self.storage.sync_dir(&self.dir)?;
        }
        bytes_cut += self.active_mut().truncate_to(offset)?;
        let new_end = self.log_end_offset();
        tracing::warn!(
            dir = %self.dir.display(),
            bytes_cut,
            from_offset = new_end,
            to_offset = end,
            "cut the log back to offset {new_end}"
        );
        self.epochs.truncate_from(new_end)?;
        if had_fences {
            self.persist_corrupt_ranges()?;
        }
        Ok(bytes_cut)
    }

    /// Empties the log and starts it again, empty, at `offset`, above its
    /// end: a follower whose leader's retention deleted everything up to
    /// there (Kafka's truncate-fully-and-start-at). The old segments go
    /// first, so a crash half-way leaves an empty log, never a gap.
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] when `offset` is not above the log
    /// end; I/O errors, after which the log must not be written until a
    /// truncation succeeds.
    pub fn restart_at(&mut self, offset: u64) -> Result<()> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset <= end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        self.truncations += 1;
        let had_fences = self.segments.values().any(|s| !s.fenced().is_empty());
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete()?;
        }
        self.storage.sync_dir(&self.dir)?;
        let segment = Segment::create_in(
            Arc::clone(&self.storage),
            &self.dir,
            offset,
            self.config.index_interval_bytes,
        )?;
        self.storage.sync_dir(&self.dir)?;
        self.segments.insert(offset, segment);
        self.epochs.truncate_from(0)?;
        if had_fences {
            self.persist_corrupt_ranges()?;
        }
        tracing::warn!(dir = %self.dir.display(), from_offset = end, to_offset = offset, "restarted the log at the leader's log start");
        Ok(())
    }

    /// How many truncations ([`Log::truncate_to`] below the end,
    /// [`Log::restart_at`]) this log has begun since it was opened,
    /// including failed ones.
    pub fn truncations(&self) -> u64 {
        self.truncations
    }

    /// Finds the batch holding `offset`, for a read outside the lock.
    /// `Ok(None)` when `offset` is the log end (nothing to read yet).
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] when `offset` is before the log start
    /// or after the log end; [`LogError::Corrupt`] when it lies in a fenced
    /// range or a damaged header is in the way; I/O errors.
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
            if let Some(range) = segment.fenced_range_of(offset) {
                return Err(LogError::Corrupt {
                    offset,
                    segment_base_offset: range.segment_base_offset,
                    position: range.position,
                });
            }
            let position = segment
                .position_of(offset)
                .map_err(|error| corrupt_or_io(error, offset, segment))?;
            if let Some(position) = position {
                return Ok(Some(ReadCursor {
                    file: segment.file(),
                    limit: segment.read_limit(position),
                    position,
                    offset,
                    segment_base_offset: segment.base_offset(),
                    dir: Arc::clone(&self.dir),
                }));
            }
        }
        Ok(None)
    }

    /// The first offset after the damaged data that a read at `offset` ran
    /// into ([`LogError::Corrupt`]), for readers that must go on past it
    /// (state rebuilt from a log at start-up): the end of a fenced range,
    /// else the end of the damaged batch when its header still reads,
    /// else the next segment's base offset. `None` when nothing readable
    /// follows in this log.
    pub fn offset_after_damage(&self, offset: u64) -> Option<u64> {
        let (&base, segment) = self.segments.range(..=offset).next_back()?;
        if let Some(range) = segment.fenced_range_of(offset) {
            return Some(range.end_offset);
        }
        let batch_end = segment
            .position_of(offset)
            .ok()
            .flatten()
            .and_then(|position| segment.read_header_at(position).ok())
            .map(|header| header.last_offset() + 1)
            .filter(|&end| end > offset && end <= segment.next_offset());
        batch_end.or_else(|| {
            self.segments
                .range(base + 1..)
                .next()
                .map(|(&next_base, _)| next_base)
        })
    }

    /// The first stored batch whose max timestamp is `>= timestamp`.
    ///
    /// # Errors
    ///
    /// [`LogError::Corrupt`] when a damaged batch is in the way; I/O errors.
    pub fn batch_at_or_after_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>> {
        for segment in self.segments.values() {
            let found = segment
                .find_batch_by_timestamp(timestamp)
                .map_err(|error| corrupt_or_io(error, segment.base_offset(), segment))?;
            if let Some(batch) = found {
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
        let mut fences_deleted = false;
        while self.segments.len() > 1 {
            let Some(first) = self.segments.first_entry() else {
                break;
            };
            if first.get().next_offset() > offset {
                break;
            }
            fences_deleted |= !first.get().fenced().is_empty();
            first.remove().delete()?;
            deleted += 1;
        }
        if deleted > 0 {
            self.storage.sync_dir(&self.dir)?;
        }
        if fences_deleted {
            self.persist_corrupt_ranges()?;
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
        write_atomically_in(
            self.storage.as_ref(),
            &self.dir.join(LOG_END_CHECKPOINT),
            contents.as_bytes(),
        )?;
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
fn segment_base_offsets(storage: &dyn Storage, dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for path in storage.read_dir(dir)? {
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
            Some("tmp") => remove_if_present(storage, &path)?,
            _ => {}
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn remove_segment_files(storage: &dyn Storage, dir: &Path, base_offset: u64) -> io::Result<()> {
    let stem = Segment::file_stem(base_offset);
    for extension in ["log", "index", "timeindex"] {
        remove_if_present(storage, &dir.join(format!("{stem}.{extension}")))?;
    }
    Ok(())
}

fn read_log_end_checkpoint(storage: &dyn Storage, dir: &Path) -> Option<(u64, u64)> {
    let bytes = storage.read(&dir.join(LOG_END_CHECKPOINT)).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (next_offset, size) = text.trim().split_once(' ')?;
    Some((next_offset.parse().ok()?, size.parse().ok()?))
}

/// A damaged header met while walking a segment is corruption at `offset`.
fn corrupt_or_io(error: io::Error, offset: u64, segment: &Segment) -> LogError {
    if error.kind() == io::ErrorKind::InvalidData || error.kind() == io::ErrorKind::UnexpectedEof {
        LogError::Corrupt {
            offset,
            segment_base_offset: segment.base_offset(),
            position: 0,
        }
    } else {
        LogError::Io(error)
    }
}
