//! One segment of a partition log: `<base_offset>.log` with its `.index` and
//! `.timeindex` (formats in [`crate::index`]).
//!
//! The `.log` file is a plain concatenation of RecordBatch v2 batches
//! ([`crate::batch`]), each stamped with its final offsets. Positions are
//! `u32`, so a segment never exceeds 2 GiB ([`SEGMENT_BYTES_MAX`]).
//!
//! Damage inside a segment takes one of two shapes. A *torn tail* (bad
//! bytes with no valid batch after them) is what a crash during a write
//! leaves; [`Segment::recover`] cuts it. Bad bytes *followed* by valid
//! batches are corruption of data that may have been acknowledged: recovery
//! keeps everything around them and *fences* them as a [`CorruptRange`];
//! reads that reach a fenced range fail instead of returning its bytes.
//!
//! Concurrency: `&mut self` methods are called by the owning log under its
//! lock. Reads go through [`Segment::file`], a shared handle read with
//! `pread` outside the lock: bytes below `size()` never change while the
//! segment is open, except by [`Segment::truncate_to`], which the owner
//! calls only with no reader planned past the cut (above the high watermark).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::error::BatchError;
use crate::index::{OffsetIndex, TimeIndex};
use crate::storage::{remove_if_present, FileHandle, StdStorage, Storage};
use crate::stored::{crc_matches, find_valid_batch};

pub use crate::fenced::CorruptRange;

/// Largest segment a `u32` position can address; Kafka caps `segment.bytes` the same way.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// Bytes read per `pread` when scanning batch headers.
const HEADER_PROBE_BYTES: usize = HEADER_BYTES;

/// A `.log` file and its two indexes.
#[derive(Debug)]
pub struct Segment {
    base_offset: u64,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    file: FileHandle,
    size: u64,
    next_offset: u64,
    max_timestamp: Option<i64>,
    first_batch_timestamp: Option<i64>,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    index_interval_bytes: u64,
    fenced: Vec<CorruptRange>,
}

/// Where recovery may start scanning: a batch known to be valid.
struct Checkpoint {
    position: u64,
    offset: u64,
    trusted_entries: usize,
}

/// What an append may have to undo.
struct AppendUndo {
    size: u64,
    next_offset: u64,
    max_timestamp: Option<i64>,
    first_batch_timestamp: Option<i64>,
    bytes_since_index_entry: u64,
    index_entries: usize,
    time_entries: usize,
}

/// Result of scanning a segment's tail on recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Valid batches found in the scanned range.
    pub batches_scanned: u64,
    /// Bytes cut from the end of the file (a torn tail).
    pub bytes_truncated: u64,
    /// Where the cut started, when bytes were cut.
    pub truncated_at_position: u64,
    /// The offset the cut bytes would have started at (the log end after the cut).
    pub truncated_from_offset: u64,
    /// The last offset the first cut batch's header claims, when its header is readable.
    pub truncated_claimed_last_offset: Option<u64>,
    /// Damage with valid batches after it, fenced and kept.
    pub fenced: Vec<CorruptRange>,
    /// `(next_offset, bytes)` of a clean-shutdown checkpoint the active
    /// segment did not match (set by [`crate::Log::open`], which then
    /// recovered instead of trusting it).
    pub checkpoint_mismatch: Option<(u64, u64)>,
}

impl Segment {
    /// File name stem of a segment: the base offset, zero-padded to 20 digits as Kafka does.
    pub fn file_stem(base_offset: u64) -> String {
        format!("{base_offset:020}")
    }

    /// Creates an empty segment starting at `base_offset`.
    ///
    /// # Errors
    ///
    /// Any I/O error creating the files.
    pub fn create(dir: &Path, base_offset: u64, index_interval_bytes: u64) -> io::Result<Segment> {
        Segment::create_in(StdStorage::shared(), dir, base_offset, index_interval_bytes)
    }

    /// As [`Segment::create`], through `storage`.
    ///
    /// # Errors
    ///
    /// Any I/O error creating the files; `AlreadyExists` when the segment holds data.
    pub fn create_in(
        storage: Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u64,
    ) -> io::Result<Segment> {
        let mut segment = Segment::open_in(storage, dir, base_offset, index_interval_bytes)?;
        if segment.size != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("segment {base_offset} already holds data"),
            ));
        }
        segment.next_offset = base_offset;
        Ok(segment)
    }

    /// Opens an existing segment, trusting its files: the caller either
    /// knows it was closed cleanly or calls [`Segment::recover`] next.
    /// `next_offset` is left at `base_offset` until the owner sets it.
    ///
    /// # Errors
    ///
    /// Any I/O error opening the files.
    pub fn open(dir: &Path, base_offset: u64, index_interval_bytes: u64) -> io::Result<Segment> {
        Segment::open_in(StdStorage::shared(), dir, base_offset, index_interval_bytes)
    }

    /// As [`Segment::open`], through `storage`.
    ///
    /// # Errors
    ///
    /// Any I/O error opening the files.
    pub fn open_in(
        storage: Arc<dyn Storage>,
        dir: &Path,
        base_offset: u64,
        index_interval_bytes: u64,
    ) -> io::Result<Segment> {
        let stem = Segment::file_stem(base_offset);
        let file = storage.open(&dir.join(format!("{stem}.log")))?;
        let size = file.len()?;
        let index = OffsetIndex::open_in(storage.as_ref(), &dir.join(format!("{stem}.index")))?;
        let time_index =
            TimeIndex::open_in(storage.as_ref(), &dir.join(format!("{stem}.timeindex")))?;
        let max_timestamp = time_index.max_timestamp();
        let mut segment = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            storage,
            file,
            size,
            next_offset: base_offset,
            max_timestamp,
            first_batch_timestamp: None,
            index,
            time_index,
            bytes_since_index_entry: 0,
            index_interval_bytes,
            fenced: Vec::new(),
        };
        // A damaged first header is recovery's business, not a reason to fail here.
        segment.first_batch_timestamp = segment
            .read_header_at(0)
            .ok()
            .map(|header| header.max_timestamp);
        Ok(segment)
    }

    /// Offset of the first batch this segment may hold.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset after the last batch.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Sets the offset after the last batch of a sealed segment, known from
    /// the base offset of the segment that follows it.
    pub fn set_next_offset(&mut self, next_offset: u64) {
        assert!(
            next_offset >= self.base_offset,
            "segment end before its base"
        );
        self.next_offset = next_offset;
    }

    /// Bytes in the `.log` file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest record timestamp in the segment, if it holds any batch.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }

    /// Max timestamp of the first batch, which `segment.ms` rolling counts from.
    pub fn first_batch_timestamp(&self) -> Option<i64> {
        self.first_batch_timestamp
    }

    /// The `.log` file, for `pread` and `fdatasync` outside the owner's lock.
    pub fn file(&self) -> FileHandle {
        Arc::clone(&self.file)
    }

    /// The fenced ranges of this segment, by position.
    pub fn fenced(&self) -> &[CorruptRange] {
        &self.fenced
    }

    /// Fences a range known from an earlier run (the log's `corrupt-ranges`
    /// file); ignored when already known or past the end of the file.
    pub fn fence(&mut self, range: CorruptRange) {
        if range.end_position() > self.size || self.fenced.contains(&range) {
            return;
        }
        self.fenced.push(range);
        self.fenced.sort_by_key(|range| range.position);
    }

    /// The fenced range holding `offset`, if any.
    pub fn fenced_range_of(&self, offset: u64) -> Option<&CorruptRange> {
        self.fenced.iter().find(|range| range.holds_offset(offset))
    }

    /// Where a read starting at `position` must stop: the end of the file
    /// or the first fenced range after it.
    pub fn read_limit(&self, position: u64) -> u64 {
        self.fenced
            .iter()
            .map(|range| range.position)
            .filter(|&start| start >= position)
            .min()
            .map_or(self.size, |start| start.min(self.size))
    }

    /// Whether a batch with these offsets fits the `u32` relative offsets of
    /// the indexes.
    pub fn can_hold(&self, last_offset: u64) -> bool {
        last_offset >= self.base_offset && last_offset - self.base_offset <= u64::from(u32::MAX)
    }

    /// Appends a validated batch, writing `header`'s base offset and leader
    /// epoch over the ones in `bytes`. The caller checks that it fits.
    ///
    /// # Errors
    ///
    /// [`AppendError::RolledBack`]: the write failed (a full disk, an I/O
    /// error, a short write) and the segment is exactly as before the call.
    /// [`AppendError::Unknown`]: undoing the write failed too; the segment's
    /// file may hold part of the batch and the owner must stop writing.
    pub fn append(&mut self, header: &BatchHeader, bytes: &[u8]) -> Result<(), AppendError> {
        assert!(
            header.base_offset == self.next_offset,
            "offsets must follow without gaps: batch at {} after segment end {}",
            header.base_offset,
            self.next_offset
        );
        assert!(
            self.can_hold(header.last_offset()),
            "batch overflows the segment's offsets"
        );
        assert!(
            self.size + bytes.len() as u64 <= SEGMENT_BYTES_MAX,
            "segment overflow"
        );
        let undo = self.undo_point();
        match self.write_batch(header, bytes) {
            Ok(()) => Ok(()),
            Err(error) => match self.undo(undo) {
                Ok(()) => Err(AppendError::RolledBack(error)),
                Err(undo_error) => Err(AppendError::Unknown {
                    write: error,
                    undo: undo_error,
                }),
            },
        }
    }

    fn write_batch(&mut self, header: &BatchHeader, bytes: &[u8]) -> io::Result<()> {
        let position = self.size;
        // Index entries are written before the batch: after a crash between
        // the two, the entry points at the end of the file and recovery drops it.
        self.index_batch(header, position)?;
        let prefix =
            batch::stamped_prefix(bytes, header.base_offset, header.partition_leader_epoch);
        self.file
            .append(&[&prefix, &bytes[batch::STAMPED_PREFIX_BYTES..]])?;
        if position == 0 {
            self.first_batch_timestamp = Some(header.max_timestamp);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn undo_point(&self) -> AppendUndo {
        AppendUndo {
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            first_batch_timestamp: self.first_batch_timestamp,
            bytes_since_index_entry: self.bytes_since_index_entry,
            index_entries: self.index.len(),
            time_entries: self.time_index.len(),
        }
    }

    /// Puts the file, both indexes and the counters back as they were. No
    /// sync: the cut bytes were never acknowledged, and the next write
    /// lands over them.
    fn undo(&mut self, undo: AppendUndo) -> io::Result<()> {
        self.file.set_len(undo.size)?;
        self.index.keep_first(undo.index_entries)?;
        self.time_index.keep_first(undo.time_entries)?;
        self.size = undo.size;
        self.next_offset = undo.next_offset;
        self.max_timestamp = undo.max_timestamp;
        self.first_batch_timestamp = undo.first_batch_timestamp;
        self.bytes_since_index_entry = undo.bytes_since_index_entry;
        Ok(())
    }

    /// Accounts for the batch at `position`: sparse index entries once per
    /// `index_interval_bytes`, the max timestamp and the next offset.
    fn index_batch(&mut self, header: &BatchHeader, position: u64) -> io::Result<()> {
        let relative = (header.base_offset - self.base_offset) as u32;
        let max_timestamp = self
            .max_timestamp
            .map_or(header.max_timestamp, |ts| ts.max(header.max_timestamp));
        if position > 0 && self.bytes_since_index_entry >= self.index_interval_bytes {
            self.index.append(relative, position as u32)?;
            self.time_index.maybe_append(max_timestamp, relative)?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_bytes() as u64;
        self.next_offset = header.last_offset() + 1;
        self.max_timestamp = Some(max_timestamp);
        Ok(())
    }

    /// Whether the indexes can be trusted for a segment that ends at
    /// `next_offset` without scanning it (the check Kafka's
    /// `OffsetIndex.sanityCheck` makes on a clean open): offset entries
    /// strictly increasing in offset and position, inside the file and the
    /// offsets, the last one at a batch start; time entries monotone and
    /// inside the offsets. Damaged index files fail it and are rebuilt.
    pub fn indexes_look_sound(&self, next_offset: u64) -> bool {
        let relative_end = next_offset.saturating_sub(self.base_offset);
        let offsets = self.index.entries();
        let offsets_sound = offsets
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1)
            && offsets.iter().all(|&(relative, position)| {
                u64::from(relative) < relative_end && u64::from(position) < self.size
            });
        let last_at_batch_start = offsets.last().is_none_or(|&(relative, position)| {
            self.read_header_at(u64::from(position))
                .is_ok_and(|header| header.base_offset == self.base_offset + u64::from(relative))
        });
        let times = self.time_index.entries();
        let times_sound = times
            .windows(2)
            .all(|pair| pair[0].0 <= pair[1].0 && pair[0].1 <= pair[1].1)
            && times
                .iter()
                .all(|&(_, relative)| u64::from(relative) < relative_end.max(1));
        offsets_sound && last_at_batch_start && times_sound
    }

    /// Reads the header of the batch starting at `position`.
    ///
    /// # Errors
    ///
    /// I/O errors, or `InvalidData` when the bytes are not a batch header.
    pub fn read_header_at(&self, position: u64) -> io::Result<BatchHeader> {
        let mut buf = [0u8; HEADER_PROBE_BYTES];
        self.file.read_exact_at(&mut buf, position)?;
        BatchHeader::parse(&buf).map_err(invalid_data)
    }

    /// The end of the fenced range starting at `position`, or `position`.
    fn skip_fenced(&self, position: u64) -> u64 {
        self.fenced
            .iter()
            .find(|range| range.position == position)
            .map_or(position, CorruptRange::end_position)
    }

    /// Position of the batch holding `offset`, or `None` when the segment
    /// ends before it. Starts from the offset index and walks batch headers,
    /// stepping over fenced ranges.
    ///
    /// # Errors
    ///
    /// I/O errors while reading headers; `InvalidData` when a header on the
    /// way is damaged.
    pub fn position_of(&self, offset: u64) -> io::Result<Option<u64>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        let mut position = self
            .index
            .lookup(relative)
            .map_or(0, |(_, pos)| u64::from(pos));
        while position < self.size {
            position = self.skip_fenced(position);
            if position >= self.size {
                break;
            }
            let header = self.read_header_at(position)?;
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// The first batch whose max timestamp is `>= timestamp`, with its bytes,
    /// checked against its CRC.
    ///
    /// # Errors
    ///
    /// I/O errors while reading; `InvalidData` when a batch on the way is damaged.
    pub fn find_batch_by_timestamp(&self, timestamp: i64) -> io::Result<Option<Bytes>> {
        if self.max_timestamp.is_none_or(|max| max < timestamp) {
            return Ok(None);
        }
        let mut position = self
            .time_index
            .lookup_before(timestamp)
            .and_then(|relative| self.index.lookup(relative))
            .map_or(0, |(_, pos)| u64::from(pos));
        while position < self.size {
            position = self.skip_fenced(position);
            if position >= self.size {
                break;
            }
            let header = self.read_header_at(position)?;
            if header.max_timestamp >= timestamp {
                if position + header.total_bytes() as u64 > self.size {
                    return Err(invalid_data(BatchError::Incomplete));
                }
                let mut buf = BytesMut::zeroed(header.total_bytes());
                self.file.read_exact_at(&mut buf, position)?;
                batch::validate(&buf).map_err(invalid_data)?;
                return Ok(Some(buf.freeze()));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Validates the tail of the segment, starting at the last index entry
    /// that points at a valid batch. Damage followed by a valid batch that
    /// continues the offsets is fenced and kept; everything after the last
    /// valid batch (a torn tail) is cut, the cut synced. Sets `next_offset` and
    /// `max_timestamp` from what it finds.
    ///
    /// # Errors
    ///
    /// I/O errors; damage is not an error but is cut or fenced.
    pub fn recover(&mut self) -> io::Result<Recovery> {
        let checkpoint = self.last_valid_checkpoint()?;
        self.reset_to_checkpoint(&checkpoint)?;
        let mut recovery = Recovery::default();
        let mut position = checkpoint.position;
        while position < self.size {
            if let Some(header) = self.continuing_batch_at(position)? {
                self.index_batch(&header, position)?;
                recovery.batches_scanned += 1;
                position += header.total_bytes() as u64;
                continue;
            }
            let Some((resume, header)) = self.find_next_valid_batch(position + 1)? else {
                break;
            };
            let range = CorruptRange {
                segment_base_offset: self.base_offset,
                position,
                bytes: resume - position,
                first_offset: self.next_offset,
                end_offset: header.base_offset,
            };
            self.fenced.push(range);
            recovery.fenced.push(range);
            // The damaged offsets stay taken: the batch after them keeps its own.
            self.next_offset = header.base_offset;
            position = resume;
        }
        recovery.truncated_from_offset = self.next_offset;
        recovery.truncated_at_position = position;
        recovery.bytes_truncated = self.size - position;
        if recovery.bytes_truncated > 0 {
            recovery.truncated_claimed_last_offset = self
                .read_header_at(position)
                .ok()
                .map(|header| header.last_offset());
            self.file.set_len(position)?;
            self.size = position;
            self.file.sync_data()?;
        }
        self.first_batch_timestamp = self
            .read_header_at(0)
            .ok()
            .map(|header| header.max_timestamp);
        Ok(recovery)
    }

    /// Forgets everything learnt after `checkpoint`: index entries, fenced
    /// ranges, the next offset and the max timestamp, to be found again by
    /// scanning from it.
    fn reset_to_checkpoint(&mut self, checkpoint: &Checkpoint) -> io::Result<()> {
        // Entries after the checkpoint were never validated: drop them and
        // index the scanned batches afresh, as Kafka's recovery does.
        self.index.keep_first(checkpoint.trusted_entries)?;
        // The time entry of the checkpoint batch itself stays: it covers
        // the batches before the checkpoint, which are not scanned again.
        let checkpoint_relative = (checkpoint.offset - self.base_offset) as u32;
        let after_checkpoint = if checkpoint.trusted_entries == 0 {
            0
        } else {
            checkpoint_relative + 1
        };
        self.time_index.truncate(after_checkpoint)?;
        self.fenced
            .retain(|range| range.position < checkpoint.position);
        self.max_timestamp = self.time_index.max_timestamp();
        self.next_offset = checkpoint.offset;
        self.bytes_since_index_entry = 0;
        Ok(())
    }

    /// The header of the batch at `position` if it is whole, passes its CRC
    /// and continues the offsets.
    fn continuing_batch_at(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        let Some(header) = self.valid_batch_at(position)? else {
            return Ok(None);
        };
        // Offsets have no gaps, and the base offset is outside the CRC.
        let continues =
            header.base_offset == self.next_offset && self.can_hold(header.last_offset());
        Ok(continues.then_some(header))
    }

    /// The first position at or after `from` where a whole batch with a
    /// matching CRC starts whose offsets lie at or after the segment's next
    /// offset: where valid data resumes after damage.
    fn find_next_valid_batch(&self, from: u64) -> io::Result<Option<(u64, BatchHeader)>> {
        find_valid_batch(self.file.as_ref(), from, self.size, |header, position| {
            header.base_offset >= self.next_offset
                && self.can_hold(header.last_offset())
                && position + header.total_bytes() as u64 <= self.size
        })
    }

    fn crc_matches(&self, header: &BatchHeader, position: u64) -> io::Result<bool> {
        crc_matches(self.file.as_ref(), header, position)
    }

    /// The last index entry that points at a valid batch, with how many
    /// entries up to it point at batch starts; the segment start when none does.
    fn last_valid_checkpoint(&self) -> io::Result<Checkpoint> {
        let entries = self.index.entries();
        let mut plausible = 0;
        for &(relative, position) in entries {
            let at_batch_start = self
                .read_header_at(u64::from(position))
                .is_ok_and(|header| header.base_offset == self.base_offset + u64::from(relative));
            if !at_batch_start {
                break;
            }
            plausible += 1;
        }
        for count in (1..=plausible).rev() {
            let (relative, position) = entries[count - 1];
            if self.valid_batch_at(u64::from(position))?.is_some() {
                return Ok(Checkpoint {
                    position: u64::from(position),
                    offset: self.base_offset + u64::from(relative),
                    trusted_entries: count,
                });
            }
        }
        Ok(Checkpoint {
            position: 0,
            offset: self.base_offset,
            trusted_entries: 0,
        })
    }

    /// The header of the batch at `position` if the whole batch is present
    /// and its CRC matches. The length is checked against the file before
    /// anything is read, so a damaged length allocates nothing.
    fn valid_batch_at(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        if position + HEADER_BYTES as u64 > self.size {
            return Ok(None);
        }
        let Ok(header) = self.read_header_at(position) else {
            return Ok(None);
        };
        if position + header.total_bytes() as u64 > self.size || header.records_count < 0 {
            return Ok(None);
        }
        let valid = self.crc_matches(&header, position)?
            && header.records_count as u64 <= header.offset_count();
        Ok(valid.then_some(header))
    }

    /// Fences the damage starting at `position` (see
    /// [`crate::Log::fence_damage`]): its first offset is the end of the
    /// valid batch before it, its end where a valid batch continuing the
    /// offsets resumes, or the end of the segment.
    ///
    /// # Errors
    ///
    /// I/O errors reading the segment.
    pub fn fence_damage_at(&mut self, position: u64) -> io::Result<Option<CorruptRange>> {
        let inside_fence = self
            .fenced
            .iter()
            .any(|range| (range.position..range.end_position()).contains(&position));
        if position >= self.size || inside_fence {
            return Ok(None);
        }
        let Some(first_offset) = self.offset_at_position(position)? else {
            return Ok(None);
        };
        let valid_here = self
            .valid_batch_at(position)?
            .is_some_and(|header| header.base_offset == first_offset);
        if valid_here {
            return Ok(None);
        }
        let segment_end = self.next_offset;
        let resume =
            find_valid_batch(self.file.as_ref(), position + 1, self.size, |header, at| {
                header.base_offset >= first_offset
                    && header.last_offset() < segment_end
                    && at + header.total_bytes() as u64 <= self.size
            })?;
        let (end_position, end_offset) = resume.map_or((self.size, segment_end), |(at, header)| {
            (at, header.base_offset)
        });
        let range = CorruptRange {
            segment_base_offset: self.base_offset,
            position,
            bytes: end_position - position,
            first_offset,
            end_offset,
        };
        self.fence(range);
        Ok(Some(range))
    }

    /// The offset the batch at `position` must start at, found by walking
    /// headers from the last index entry before it; `None` when `position`
    /// is not where a batch starts on that walk.
    fn offset_at_position(&self, position: u64) -> io::Result<Option<u64>> {
        let (mut at, mut offset) = self
            .index
            .entries()
            .iter()
            .rev()
            .find(|&&(_, entry)| u64::from(entry) <= position)
            .map_or((0, self.base_offset), |&(relative, entry)| {
                (u64::from(entry), self.base_offset + u64::from(relative))
            });
        while at < position {
            if let Some(range) = self.fenced.iter().find(|range| range.position == at) {
                (at, offset) = (range.end_position(), range.end_offset);
                continue;
            }
            let Ok(header) = self.read_header_at(at) else {
                return Ok(None);
            };
            at += header.total_bytes() as u64;
            offset = header.last_offset() + 1;
        }
        Ok((at == position).then_some(offset))
    }

    /// Cuts every batch holding an offset at or after `offset` (and fenced
    /// ranges from there on), with their index entries, syncs the cut, and
    /// rescans from the last index entry before it. Returns the bytes cut.
    /// The segment's new end is `offset`, or the base of the batch holding
    /// it when `offset` falls inside a batch.
    ///
    /// # Errors
    ///
    /// I/O errors; the segment must then not be written.
    pub fn truncate_to(&mut self, offset: u64) -> io::Result<u64> {
        if offset >= self.next_offset {
            return Ok(0);
        }
        let cut = match self.fenced_range_of(offset) {
            Some(range) => range.position,
            None => self.position_of(offset)?.unwrap_or(self.size),
        };
        let cut = self
            .fenced
            .iter()
            .filter(|range| range.end_offset > offset)
            .map(|range| range.position)
            .fold(cut, u64::min);
        let bytes_cut = self.size - cut;
        self.index.truncate_from_position(cut)?;
        self.file.set_len(cut)?;
        // Track the cut before syncing it: a failed sync leaves the file
        // cut, and the next attempt must start from there.
        self.size = cut;
        self.fenced.retain(|range| range.end_position() <= cut);
        self.file.sync_data()?;
        let fenced = std::mem::take(&mut self.fenced);
        // Rebuild the counters from what is left, as after a crash.
        let recovery = self.recover()?;
        debug_assert_eq!(recovery.bytes_truncated, 0, "the cut ends at a batch");
        for range in fenced {
            self.fence(range);
        }
        Ok(bytes_cut)
    }

    /// Cuts whatever a failed write may have left past the segment's end in
    /// the `.log` file and both indexes, and syncs the `.log` file.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn cut_stray_bytes(&mut self) -> io::Result<()> {
        if self.file.len()? != self.size {
            self.file.set_len(self.size)?;
        }
        self.file.sync_data()?;
        self.index.keep_first(self.index.len())?;
        self.time_index.keep_first(self.time_index.len())
    }

    /// Makes the segment read-only in spirit: records its final max
    /// timestamp in the time index and forces data and indexes to disk.
    ///
    /// # Errors
    ///
    /// The fsync error.
    pub fn seal(&mut self) -> io::Result<()> {
        self.record_final_timestamp().map_err(|error| match error {
            AppendError::RolledBack(error) | AppendError::Unknown { write: error, .. } => error,
        })?;
        self.sync_all()
    }

    /// The first half of [`Segment::seal`]: the final time-index entry,
    /// undone if its write fails.
    ///
    /// # Errors
    ///
    /// As [`Segment::append`].
    pub fn record_final_timestamp(&mut self) -> Result<(), AppendError> {
        let Some(max_timestamp) = self.max_timestamp else {
            return Ok(());
        };
        let relative = self.relative_offset_of_last_batch();
        let entries = self.time_index.len();
        match self.time_index.maybe_append(max_timestamp, relative) {
            Ok(()) => Ok(()),
            Err(error) => match self.time_index.keep_first(entries) {
                Ok(()) => Err(AppendError::RolledBack(error)),
                Err(undo) => Err(AppendError::Unknown { write: error, undo }),
            },
        }
    }

    /// Forces data and both indexes to disk.
    ///
    /// # Errors
    ///
    /// The fsync error.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_data()?;
        self.index.sync()?;
        self.time_index.sync()
    }

    /// Removes the segment's files.
    ///
    /// # Errors
    ///
    /// Any I/O error other than a file already gone.
    pub fn delete(self) -> io::Result<()> {
        let stem = Segment::file_stem(self.base_offset);
        for extension in ["log", "index", "timeindex"] {
            remove_if_present(
                self.storage.as_ref(),
                &self.dir.join(format!("{stem}.{extension}")),
            )?;
        }
        Ok(())
    }

    fn relative_offset_of_last_batch(&self) -> u32 {
        // The time index only needs an offset inside the last batch; its
        // last offset is as good as its base for "records up to here".
        (self.next_offset.saturating_sub(1).max(self.base_offset) - self.base_offset) as u32
    }
}

/// Why [`Segment::append`] failed.
#[derive(Debug)]
pub enum AppendError {
    /// The write failed and was undone: the segment is as before.
    RolledBack(io::Error),
    /// The write failed and undoing it failed too: the file's state is unknown.
    Unknown {
        /// The write's error.
        write: io::Error,
        /// The error undoing it.
        undo: io::Error,
    },
}

fn invalid_data(error: BatchError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}
