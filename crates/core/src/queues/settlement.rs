//! Which messages of a queue log are settled (acknowledged, dropped, expired
//! or dead-lettered), persisted next to the log so that a restart never
//! redelivers a settled message and always redelivers an unsettled one.
//!
//! On-disk format of `settled.state`: a sequence of 17-byte entries, each
//! `kind: u8, a: u64, b: u64` (big-endian):
//!
//! ```text
//! kind 1  offsets [a, b) are settled
//! kind 2  every offset below a has been delivered at least once (b unused)
//! ```
//!
//! Entries are appended with `write` (so they survive a crash of the
//! process at once) and synced by [`Settlement::sync`], which the broker
//! calls periodically: after a power loss an acknowledged message may be
//! delivered again, never lost. A torn last entry is ignored. When the file
//! grows past [`COMPACT_BYTES`], it is rewritten (atomically) as the
//! current ranges. Not safe for concurrent use: the queue holds it under
//! its lock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use weir_log::checkpoint::write_atomically;

const ENTRY_BYTES: usize = 17;
const KIND_SETTLED: u8 = 1;
const KIND_DELIVERED: u8 = 2;
/// Rewrite the file once it holds this many bytes of history.
pub const COMPACT_BYTES: u64 = 4 << 20;
const FILE_NAME: &str = "settled.state";

/// Settled offsets of one queue log, and the delivered mark.
#[derive(Debug)]
pub struct Settlement {
    path: PathBuf,
    file: File,
    file_bytes: u64,
    /// Every offset below this is settled.
    settled_below: u64,
    /// Settled ranges `[start, end)` above `settled_below`, disjoint, not adjacent.
    ranges: BTreeMap<u64, u64>,
    /// Offsets in `ranges`.
    settled_above: u64,
    /// Every offset below this has been delivered at least once.
    delivered_below: u64,
    /// The delivered mark last written to the file.
    delivered_written: u64,
    dirty: bool,
}

impl Settlement {
    /// Whether `dir` holds settlement state (a lane opened before).
    pub fn exists(dir: &Path) -> bool {
        dir.join(FILE_NAME).exists()
    }

    /// Opens (or creates) the state in `dir`, replaying its entries.
    ///
    /// # Errors
    ///
    /// I/O errors reading or creating the file.
    pub fn open(dir: &Path) -> io::Result<Settlement> {
        let path = dir.join(FILE_NAME);
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&path) {
            file.read_to_end(&mut bytes)?;
        }
        let whole = bytes.len() - bytes.len() % ENTRY_BYTES;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if whole != bytes.len() {
            // A torn entry from a crash mid-write: cut it so appends stay aligned.
            file.set_len(whole as u64)?;
        }
        let mut settlement = Settlement {
            path,
            file,
            file_bytes: whole as u64,
            settled_below: 0,
            ranges: BTreeMap::new(),
            settled_above: 0,
            delivered_below: 0,
            delivered_written: 0,
            dirty: false,
        };
        for entry in bytes[..whole].chunks_exact(ENTRY_BYTES) {
            let a = u64::from_be_bytes(entry[1..9].try_into().expect("8 bytes"));
            let b = u64::from_be_bytes(entry[9..17].try_into().expect("8 bytes"));
            match entry[0] {
                KIND_SETTLED if a < b => settlement.insert(a, b),
                KIND_DELIVERED => settlement.delivered_below = settlement.delivered_below.max(a),
                _ => {}
            }
        }
        settlement.delivered_written = settlement.delivered_below;
        Ok(settlement)
    }

    /// Every offset below this is settled.
    pub fn settled_below(&self) -> u64 {
        self.settled_below
    }

    /// Offsets at or above [`Settlement::settled_below`] that are settled.
    pub fn settled_above(&self) -> u64 {
        self.settled_above
    }

    /// Whether `offset` is settled.
    pub fn is_settled(&self, offset: u64) -> bool {
        offset < self.settled_below
            || self
                .ranges
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, &end)| offset < end)
    }

    /// The first offset at or after `offset` that is not settled.
    pub fn next_unsettled(&self, offset: u64) -> u64 {
        let offset = offset.max(self.settled_below);
        match self.ranges.range(..=offset).next_back() {
            Some((_, &end)) if offset < end => end,
            _ => offset,
        }
    }

    /// The first settled offset at or after `offset` above the low
    /// watermark, if any.
    pub fn next_settled(&self, offset: u64) -> Option<u64> {
        if offset < self.settled_below {
            return Some(offset);
        }
        if let Some((_, &end)) = self.ranges.range(..=offset).next_back() {
            if offset < end {
                return Some(offset);
            }
        }
        self.ranges.range(offset..).next().map(|(&start, _)| start)
    }

    /// Forgets settled offsets at or past `end` (records a power loss took
    /// back) and rewrites the file if anything changed.
    ///
    /// # Errors
    ///
    /// I/O errors of the rewrite.
    pub fn clamp(&mut self, end: u64) -> io::Result<()> {
        let beyond = self.settled_below > end
            || self
                .ranges
                .range(..)
                .next_back()
                .is_some_and(|(_, &e)| e > end);
        if !beyond {
            return Ok(());
        }
        self.settled_below = self.settled_below.min(end);
        let kept: Vec<(u64, u64)> = self
            .ranges
            .iter()
            .filter(|(&start, _)| start < end)
            .map(|(&start, &range_end)| (start, range_end.min(end)))
            .collect();
        self.ranges = kept.into_iter().collect();
        self.settled_above = self.ranges.iter().map(|(s, e)| e - s).sum();
        self.delivered_below = self.delivered_below.min(end);
        self.compact()
    }

    /// Every offset below this has been delivered at least once.
    pub fn delivered_below(&self) -> u64 {
        self.delivered_below
    }

    /// Marks offsets `[start, end)` settled and writes that down.
    ///
    /// # Errors
    ///
    /// I/O errors of the write; the state in memory is updated regardless.
    pub fn settle(&mut self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        self.insert(start, end);
        self.append(KIND_SETTLED, start, end)
    }

    /// Notes that every offset below `end` has been delivered; written by
    /// the next [`Settlement::write_delivered`].
    pub fn mark_delivered(&mut self, end: u64) {
        self.delivered_below = self.delivered_below.max(end);
    }

    /// Writes the delivered mark if it moved since the last write (one
    /// entry per dispatch round, not per message).
    ///
    /// # Errors
    ///
    /// I/O errors of the write.
    pub fn write_delivered(&mut self) -> io::Result<()> {
        if self.delivered_below <= self.delivered_written {
            return Ok(());
        }
        self.delivered_written = self.delivered_below;
        self.append(KIND_DELIVERED, self.delivered_below, 0)
    }

    /// Syncs what was written since the last sync; compacts a long file.
    ///
    /// # Errors
    ///
    /// I/O errors of the sync or the rewrite.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.file_bytes > COMPACT_BYTES {
            return self.compact();
        }
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn insert(&mut self, mut start: u64, mut end: u64) {
        start = start.max(self.settled_below);
        if start >= end {
            return;
        }
        // Merge with every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, &range_end)| range_end >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (range_start, range_end) in touching {
            self.ranges.remove(&range_start);
            self.settled_above -= range_end - range_start;
            start = start.min(range_start);
            end = end.max(range_end);
        }
        if start == self.settled_below {
            self.settled_below = end;
        } else {
            self.ranges.insert(start, end);
            self.settled_above += end - start;
        }
    }

    fn append(&mut self, kind: u8, a: u64, b: u64) -> io::Result<()> {
        let mut entry = [0u8; ENTRY_BYTES];
        entry[0] = kind;
        entry[1..9].copy_from_slice(&a.to_be_bytes());
        entry[9..17].copy_from_slice(&b.to_be_bytes());
        self.file.write_all(&entry)?;
        self.file_bytes += ENTRY_BYTES as u64;
        self.dirty = true;
        Ok(())
    }

    fn compact(&mut self) -> io::Result<()> {
        let mut bytes = Vec::with_capacity((self.ranges.len() + 2) * ENTRY_BYTES);
        let mut push = |kind: u8, a: u64, b: u64| {
            bytes.push(kind);
            bytes.extend_from_slice(&a.to_be_bytes());
            bytes.extend_from_slice(&b.to_be_bytes());
        };
        if self.settled_below > 0 {
            push(KIND_SETTLED, 0, self.settled_below);
        }
        for (&start, &end) in &self.ranges {
            push(KIND_SETTLED, start, end);
        }
        push(KIND_DELIVERED, self.delivered_below, 0);
        self.delivered_written = self.delivered_below;
        write_atomically(&self.path, &bytes)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.file_bytes = bytes.len() as u64;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_advance_the_low_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = Settlement::open(dir.path()).expect("open");
        state.settle(5, 7).expect("settle");
        state.settle(2, 3).expect("settle");
        assert_eq!(state.settled_below(), 0);
        assert_eq!(state.settled_above(), 3);
        assert!(state.is_settled(6) && !state.is_settled(7) && !state.is_settled(4));
        assert_eq!(state.next_unsettled(5), 7);
        state.settle(0, 2).expect("settle");
        assert_eq!(state.settled_below(), 3);
        state.settle(3, 5).expect("settle");
        assert_eq!(state.settled_below(), 7);
        assert_eq!(state.settled_above(), 0);
        state.mark_delivered(9);
        state.write_delivered().expect("mark");

        let reopened = Settlement::open(dir.path()).expect("reopen");
        assert_eq!(reopened.settled_below(), 7);
        assert_eq!(reopened.delivered_below(), 9);
    }

    #[test]
    fn a_torn_entry_is_cut_and_compaction_keeps_the_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = Settlement::open(dir.path()).expect("open");
        state.settle(0, 10).expect("settle");
        state.settle(20, 30).expect("settle");
        drop(state);
        let path = dir.path().join(FILE_NAME);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open file");
        file.write_all(&[KIND_SETTLED, 0, 0]).expect("torn write");
        drop(file);
        let mut state = Settlement::open(dir.path()).expect("reopen");
        assert_eq!((state.settled_below(), state.settled_above()), (10, 10));
        state.compact().expect("compact");
        state.settle(10, 12).expect("settle after compaction");
        let state = Settlement::open(dir.path()).expect("reopen");
        assert_eq!((state.settled_below(), state.settled_above()), (12, 10));
        assert!(state.is_settled(25) && !state.is_settled(15));
    }
}
