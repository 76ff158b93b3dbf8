//! One segment of a partition log: `<base_offset>.log` with its `.index` and
//! `.timeindex` (formats in [`crate::index`]).
//!
//! The `.log` file is a plain concatenation of RecordBatch v2 batches
//! ([`crate::batch`]), each stamped with its final offsets. Positions are
//! `u32`, so a segment never exceeds 2 GiB ([`SEGMENT_BYTES_MAX`]).
//!
//! Concurrency: `&mut self` methods are called by the owning log under its
//! lock. Reads go through [`Segment::file`], an `Arc<File>` read with `pread`
//! outside the lock: bytes below `size()` never change while the segment is
//! open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::error::BatchError;
use crate::index::{OffsetIndex, TimeIndex};

/// Largest segment a `u32` position can address; Kafka caps `segment.bytes` the same way.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// Bytes read per `pread` when scanning batch headers.
const HEADER_PROBE_BYTES: usize = HEADER_BYTES;

/// A `.log` file and its two indexes.
#[derive(Debug)]
pub struct Segment {
    base_offset: u64,
    dir: PathBuf,
    file: Arc<File>,
    size: u64,
    next_offset: u64,
    max_timestamp: Option<i64>,
    first_batch_timestamp: Option<i64>,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    index_interval_bytes: u64,
}

/// Where recovery may start scanning: a batch known to be valid.
struct Checkpoint {
    position: u64,
    offset: u64,
    trusted_entries: usize,
}

/// Result of scanning a segment's tail on recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Valid batches found in the scanned range.
    pub batches_scanned: u64,
    /// Bytes cut from the end of the file (a torn or corrupt tail).
    pub bytes_truncated: u64,
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
        let mut segment = Segment::open(dir, base_offset, index_interval_bytes)?;
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
        let stem = Segment::file_stem(base_offset);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(dir.join(format!("{stem}.log")))?;
        let size = file.metadata()?.len();
        let index = OffsetIndex::open(&dir.join(format!("{stem}.index")))?;
        let time_index = TimeIndex::open(&dir.join(format!("{stem}.timeindex")))?;
        let max_timestamp = time_index.max_timestamp();
        let mut segment = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            size,
            next_offset: base_offset,
            max_timestamp,
            first_batch_timestamp: None,
            index,
            time_index,
            bytes_since_index_entry: 0,
            index_interval_bytes,
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
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Whether a batch with these offsets fits the `u32` relative offsets of
    /// the indexes.
    pub fn can_hold(&self, last_offset: u64) -> bool {
        last_offset - self.base_offset <= u64::from(u32::MAX)
    }

    /// Appends a validated batch, writing `header`'s base offset and leader
    /// epoch over the ones in `bytes`. The caller checks that it fits.
    ///
    /// # Errors
    ///
    /// Any I/O error; the segment is then in an unknown state and the owner
    /// must stop writing to it.
    pub fn append(&mut self, header: &BatchHeader, bytes: &[u8]) -> io::Result<()> {
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
        let position = self.size;
        // Index entries are written before the batch: after a crash between
        // the two, the entry points at the end of the file and recovery drops it.
        self.index_batch(header, position)?;
        let prefix =
            batch::stamped_prefix(bytes, header.base_offset, header.partition_leader_epoch);
        write_all_vectored(&self.file, &prefix, &bytes[batch::STAMPED_PREFIX_BYTES..])?;
        if position == 0 {
            self.first_batch_timestamp = Some(header.max_timestamp);
        }
        self.size += bytes.len() as u64;
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

    /// Position of the batch holding `offset`, or `None` when the segment
    /// ends before it. Starts from the offset index and walks batch headers.
    ///
    /// # Errors
    ///
    /// I/O errors while reading headers.
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
            let header = self.read_header_at(position)?;
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// The first batch whose max timestamp is `>= timestamp`, with its bytes.
    ///
    /// # Errors
    ///
    /// I/O errors while reading.
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
            let header = self.read_header_at(position)?;
            if header.max_timestamp >= timestamp {
                let mut buf = BytesMut::zeroed(header.total_bytes());
                self.file.read_exact_at(&mut buf, position)?;
                return Ok(Some(buf.freeze()));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Validates the tail of the segment, starting at the last index entry
    /// that points at a valid batch, and cuts everything after the last
    /// valid batch. Sets `next_offset` and `max_timestamp` from what it finds.
    ///
    /// # Errors
    ///
    /// I/O errors; a corrupt tail is not an error but is truncated.
    pub fn recover(&mut self) -> io::Result<Recovery> {
        let checkpoint = self.last_valid_checkpoint()?;
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
        self.max_timestamp = self.time_index.max_timestamp();
        self.next_offset = checkpoint.offset;
        self.bytes_since_index_entry = 0;
        let mut position = checkpoint.position;
        let mut batches_scanned = 0;
        while position < self.size {
            let Some(header) = self.valid_batch_at(position)? else {
                break;
            };
            // Offsets have no gaps, and the base offset is outside the CRC.
            if header.base_offset != self.next_offset || !self.can_hold(header.last_offset()) {
                break;
            }
            self.index_batch(&header, position)?;
            batches_scanned += 1;
            position += header.total_bytes() as u64;
        }
        let bytes_truncated = self.size - position;
        if bytes_truncated > 0 {
            self.file.set_len(position)?;
            self.file.sync_data()?;
            self.size = position;
        }
        self.first_batch_timestamp = self
            .read_header_at(0)
            .ok()
            .map(|header| header.max_timestamp);
        Ok(Recovery {
            batches_scanned,
            bytes_truncated,
        })
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
    /// and its CRC matches.
    fn valid_batch_at(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        if position + HEADER_BYTES as u64 > self.size {
            return Ok(None);
        }
        let Ok(header) = self.read_header_at(position) else {
            return Ok(None);
        };
        if position + header.total_bytes() as u64 > self.size {
            return Ok(None);
        }
        let mut buf = vec![0u8; header.total_bytes()];
        self.file.read_exact_at(&mut buf, position)?;
        Ok(batch::validate(&buf).ok())
    }

    /// Makes the segment read-only in spirit: records its final max
    /// timestamp in the time index and forces data and indexes to disk.
    ///
    /// # Errors
    ///
    /// The fsync error.
    pub fn seal(&mut self) -> io::Result<()> {
        if let Some(max_timestamp) = self.max_timestamp {
            let relative = self.relative_offset_of_last_batch();
            self.time_index.maybe_append(max_timestamp, relative)?;
        }
        self.sync_all()
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
            match fs::remove_file(self.dir.join(format!("{stem}.{extension}"))) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    fn relative_offset_of_last_batch(&self) -> u32 {
        // The time index only needs an offset inside the last batch; its
        // last offset is as good as its base for "records up to here".
        (self.next_offset.saturating_sub(1).max(self.base_offset) - self.base_offset) as u32
    }
}

/// Writes `first` then `second` with as few syscalls as the kernel allows.
fn write_all_vectored(mut file: &File, first: &[u8], second: &[u8]) -> io::Result<()> {
    let (mut first, mut second) = (first, second);
    while !first.is_empty() || !second.is_empty() {
        let written = file.write_vectored(&[IoSlice::new(first), IoSlice::new(second)])?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_first = written.min(first.len());
        first = &first[from_first..];
        second = &second[written - from_first..];
    }
    Ok(())
}

/// Reads whole batches from `file` starting at `position`, up to `max_bytes`
/// but at least one batch, stopping before the first batch that reaches
/// `end_offset` (exclusive upper bound of what may be read). `size` is the
/// file length when the read was planned: bytes below it do not change.
pub(crate) fn read_batches(
    file: &File,
    size: u64,
    position: u64,
    max_bytes: usize,
    end_offset: u64,
) -> io::Result<Bytes> {
    let available = size.saturating_sub(position) as usize;
    if available < HEADER_BYTES {
        return Ok(Bytes::new());
    }
    let mut probe = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut probe, position)?;
    let first = BatchHeader::parse(&probe).map_err(invalid_data)?;
    if first.last_offset() >= end_offset {
        return Ok(Bytes::new());
    }
    let want = max_bytes.max(first.total_bytes()).min(available);
    let mut buf = BytesMut::zeroed(want);
    file.read_exact_at(&mut buf, position)?;
    let mut whole = 0;
    while whole + HEADER_BYTES <= buf.len() {
        let header = BatchHeader::parse(&buf[whole..]).map_err(invalid_data)?;
        if header.last_offset() >= end_offset || whole + header.total_bytes() > buf.len() {
            break;
        }
        whole += header.total_bytes();
    }
    buf.truncate(whole);
    Ok(buf.freeze())
}

fn invalid_data(error: BatchError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}
