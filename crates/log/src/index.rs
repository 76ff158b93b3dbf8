//! Sparse indexes of a segment.
//!
//! On-disk formats (big-endian, entries appended in order, no header):
//!
//! * `.index` — 8-byte entries `relative_offset: u32, position: u32`: the batch
//!   whose base offset is `segment_base + relative_offset` starts at byte
//!   `position` of the `.log` file. Offsets and positions strictly increase.
//! * `.timeindex` — 12-byte entries `max_timestamp: i64, relative_offset: u32`:
//!   every record before the batch at `relative_offset` (inclusive) has a
//!   timestamp `<= max_timestamp`. Timestamps strictly increase.
//!
//! An entry is added at most once per `index_interval_bytes` of log, so both
//! stay small. The index is not trusted blindly on recovery: the caller checks
//! that the batch an entry points to is valid before using it.
//!
//! Not thread-safe by itself: the owning segment serialises access.

use std::io;
use std::path::Path;

use crate::storage::{FileHandle, StdStorage, Storage};

/// Bytes of one offset index entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of one time index entry.
pub const TIME_ENTRY_BYTES: usize = 12;

/// Offset → position entries of one segment, kept in memory and appended to a file.
#[derive(Debug)]
pub struct OffsetIndex {
    file: FileHandle,
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Opens (or creates) an index file and loads its well-formed prefix:
    /// a torn last entry and any entry that does not strictly increase are
    /// dropped, and the file is cut to match.
    ///
    /// # Errors
    ///
    /// Any I/O error opening, reading or truncating the file.
    pub fn open(path: &Path) -> io::Result<OffsetIndex> {
        OffsetIndex::open_in(&StdStorage, path)
    }

    /// As [`OffsetIndex::open`], through `storage`.
    ///
    /// # Errors
    ///
    /// Any I/O error opening, reading or truncating the file.
    pub fn open_in(storage: &dyn Storage, path: &Path) -> io::Result<OffsetIndex> {
        let (file, bytes) = open_and_read(storage, path)?;
        let mut entries: Vec<(u32, u32)> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_BYTES);
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let relative = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if let Some(&(last_relative, last_position)) = entries.last() {
                if relative <= last_relative || position <= last_position {
                    break;
                }
            }
            entries.push((relative, position));
        }
        let mut index = OffsetIndex { file, entries };
        index.sync_file_length()?;
        Ok(index)
    }

    /// Appends an entry; it must lie after every existing one.
    ///
    /// # Errors
    ///
    /// Any I/O error writing the file.
    pub fn append(&mut self, relative_offset: u32, position: u32) -> io::Result<()> {
        if let Some(&(last_relative, last_position)) = self.entries.last() {
            assert!(
                relative_offset > last_relative && position > last_position,
                "offset index entries must increase"
            );
        }
        let mut entry = [0u8; OFFSET_ENTRY_BYTES];
        entry[..4].copy_from_slice(&relative_offset.to_be_bytes());
        entry[4..].copy_from_slice(&position.to_be_bytes());
        self.file.append(&[&entry])?;
        self.entries.push((relative_offset, position));
        Ok(())
    }

    /// The entry with the largest relative offset `<= relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> Option<(u32, u32)> {
        let after = self
            .entries
            .partition_point(|&(rel, _)| rel <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the entries of batches starting at or after byte `position`.
    ///
    /// # Errors
    ///
    /// Any I/O error truncating the file.
    pub fn truncate_from_position(&mut self, position: u64) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|&(_, pos)| u64::from(pos) < position);
        self.keep_first(keep)
    }

    /// Keeps the first `count` entries and cuts the file to match.
    ///
    /// # Errors
    ///
    /// Any I/O error truncating the file.
    pub fn keep_first(&mut self, count: usize) -> io::Result<()> {
        self.entries.truncate(count);
        self.sync_file_length()
    }

    /// Forces the index to disk.
    ///
    /// # Errors
    ///
    /// The fsync error.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_file_length(&mut self) -> io::Result<()> {
        let length = (self.entries.len() * OFFSET_ENTRY_BYTES) as u64;
        self.file.set_len(length)
    }
}

/// Max-timestamp → offset entries of one segment.
#[derive(Debug)]
pub struct TimeIndex {
    file: FileHandle,
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Opens (or creates) a time index and loads its well-formed prefix, as
    /// [`OffsetIndex::open`] does.
    ///
    /// # Errors
    ///
    /// Any I/O error opening, reading or truncating the file.
    pub fn open(path: &Path) -> io::Result<TimeIndex> {
        TimeIndex::open_in(&StdStorage, path)
    }

    /// As [`TimeIndex::open`], through `storage`.
    ///
    /// # Errors
    ///
    /// Any I/O error opening, reading or truncating the file.
    pub fn open_in(storage: &dyn Storage, path: &Path) -> io::Result<TimeIndex> {
        let (file, bytes) = open_and_read(storage, path)?;
        let mut entries: Vec<(i64, u32)> = Vec::with_capacity(bytes.len() / TIME_ENTRY_BYTES);
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&chunk[..8]);
            let timestamp = i64::from_be_bytes(timestamp);
            let relative = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if let Some(&(last_timestamp, last_relative)) = entries.last() {
                if timestamp <= last_timestamp || relative < last_relative {
                    break;
                }
            }
            entries.push((timestamp, relative));
        }
        let mut index = TimeIndex { file, entries };
        index.sync_file_length()?;
        Ok(index)
    }

    /// Appends an entry if `max_timestamp` is larger than the last one's.
    ///
    /// # Errors
    ///
    /// Any I/O error writing the file.
    pub fn maybe_append(&mut self, max_timestamp: i64, relative_offset: u32) -> io::Result<()> {
        if let Some(&(last_timestamp, last_relative)) = self.entries.last() {
            if max_timestamp <= last_timestamp {
                return Ok(());
            }
            assert!(
                relative_offset >= last_relative,
                "time index offsets must not go back"
            );
        }
        let mut entry = [0u8; TIME_ENTRY_BYTES];
        entry[..8].copy_from_slice(&max_timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&relative_offset.to_be_bytes());
        self.file.append(&[&entry])?;
        self.entries.push((max_timestamp, relative_offset));
        Ok(())
    }

    /// The relative offset of the batch after which every record may be at or
    /// after `timestamp`: the last entry whose max timestamp is `< timestamp`
    /// (scanning may start from that batch), or `None` to scan from the start.
    pub fn lookup_before(&self, timestamp: i64) -> Option<u32> {
        let after = self.entries.partition_point(|&(ts, _)| ts < timestamp);
        after.checked_sub(1).map(|i| self.entries[i].1)
    }

    /// The largest timestamp recorded, if any.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(ts, _)| ts)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps the first `count` entries and cuts the file to match.
    ///
    /// # Errors
    ///
    /// Any I/O error truncating the file.
    pub fn keep_first(&mut self, count: usize) -> io::Result<()> {
        self.entries.truncate(count);
        self.sync_file_length()
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[(i64, u32)] {
        &self.entries
    }

    /// Drops entries at or after `relative_offset`.
    ///
    /// # Errors
    ///
    /// Any I/O error truncating the file.
    pub fn truncate(&mut self, relative_offset: u32) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|&(_, rel)| rel < relative_offset);
        self.entries.truncate(keep);
        self.sync_file_length()
    }

    /// Forces the index to disk.
    ///
    /// # Errors
    ///
    /// The fsync error.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_file_length(&mut self) -> io::Result<()> {
        let length = (self.entries.len() * TIME_ENTRY_BYTES) as u64;
        self.file.set_len(length)
    }
}

fn open_and_read(storage: &dyn Storage, path: &Path) -> io::Result<(FileHandle, Vec<u8>)> {
    let file = storage.open(path)?;
    let mut bytes = vec![0u8; file.len()? as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok((file, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_survives_reopen_and_drops_a_torn_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.index");
        {
            let mut index = OffsetIndex::open(&path).expect("open");
            index.append(10, 4096).expect("append");
            index.append(20, 8192).expect("append");
        }
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0, 0, 0]);
        std::fs::write(&path, &bytes).expect("write torn entry");
        let index = OffsetIndex::open(&path).expect("reopen");
        assert_eq!(index.entries(), &[(10, 4096), (20, 8192)]);
        assert_eq!(index.lookup(15), Some((10, 4096)));
        assert_eq!(index.lookup(5), None);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 16);
    }

    #[test]
    fn time_index_lookup_finds_the_last_entry_strictly_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = TimeIndex::open(&dir.path().join("0.timeindex")).expect("open");
        index.maybe_append(100, 0).expect("append");
        index.maybe_append(100, 5).expect("not larger: skipped");
        index.maybe_append(200, 10).expect("append");
        assert_eq!(index.lookup_before(100), None);
        assert_eq!(index.lookup_before(150), Some(0));
        assert_eq!(index.lookup_before(201), Some(10));
        assert_eq!(index.max_timestamp(), Some(200));
    }
}
