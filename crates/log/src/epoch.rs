//! The leader-epoch cache: for every leader epoch, the first offset written
//! under it. Replication uses it to find where a follower's log diverges.
//!
//! On-disk format of `leader-epoch-checkpoint`, as Kafka's:
//!
//! ```text
//! 0                   version
//! N                   number of entries
//! <epoch> <offset>    N lines, epochs and offsets increasing
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::{write_atomically_in, StdStorage, Storage};

const FILE_NAME: &str = "leader-epoch-checkpoint";

/// Epoch → start offset entries of one partition, persisted on every change.
#[derive(Debug)]
pub struct LeaderEpochCache {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    entries: Vec<(i32, u64)>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint in `dir`, or starts empty when there is none.
    /// A malformed file is ignored (and rewritten on the next change):
    /// the cache is an optimisation for replication, not a source of data.
    ///
    /// # Errors
    ///
    /// I/O errors other than a missing file.
    pub fn open(dir: &Path) -> io::Result<LeaderEpochCache> {
        LeaderEpochCache::open_in(StdStorage::shared(), dir)
    }

    /// As [`LeaderEpochCache::open`], through `storage`.
    ///
    /// # Errors
    ///
    /// I/O errors other than a missing file.
    pub fn open_in(storage: Arc<dyn Storage>, dir: &Path) -> io::Result<LeaderEpochCache> {
        let path = dir.join(FILE_NAME);
        let entries = match storage.read(&path) {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(parse)
                .unwrap_or_default(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        Ok(LeaderEpochCache {
            storage,
            path,
            entries,
        })
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than the
    /// latest epoch known.
    ///
    /// # Errors
    ///
    /// Any I/O error writing the checkpoint; the cache is then unchanged.
    pub fn assign(&mut self, epoch: i32, start_offset: u64) -> io::Result<()> {
        if self
            .entries
            .last()
            .is_some_and(|&(latest, _)| latest >= epoch)
        {
            return Ok(());
        }
        self.entries.push((epoch, start_offset));
        let persisted = self.persist();
        if persisted.is_err() {
            // A full disk must not leave an epoch that no batch carries.
            self.entries.pop();
        }
        persisted
    }

    /// Drops epochs that start at or after `end_offset` (the log was cut there).
    ///
    /// # Errors
    ///
    /// Any I/O error writing the checkpoint.
    pub fn truncate_from(&mut self, end_offset: u64) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|&(_, start)| start < end_offset);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.persist()?;
        }
        Ok(())
    }

    /// The latest epoch, if any batch was written.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// The largest epoch at or below `epoch` and where it ends: the start
    /// of the next epoch, or `log_end` for the latest. `None` when every
    /// epoch is newer (or none was written).
    pub fn end_offset_for(&self, epoch: i32, log_end: u64) -> Option<(i32, u64)> {
        let at = self.entries.partition_point(|&(known, _)| known <= epoch);
        let (found, _) = *self.entries.get(at.checked_sub(1)?)?;
        let end = self.entries.get(at).map_or(log_end, |&(_, start)| start);
        Some((found, end))
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[(i32, u64)] {
        &self.entries
    }

    fn persist(&self) -> io::Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            text.push_str(&format!("{epoch} {offset}\n"));
        }
        write_atomically_in(self.storage.as_ref(), &self.path, text.as_bytes())
    }
}

fn parse(text: &str) -> Option<Vec<(i32, u64)>> {
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let entries = lines
        .map(|line| {
            let (epoch, offset) = line.split_once(' ')?;
            Some((epoch.parse().ok()?, offset.parse().ok()?))
        })
        .collect::<Option<Vec<(i32, u64)>>>()?;
    (entries.len() == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_persist_and_truncate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = LeaderEpochCache::open(dir.path()).expect("open");
        cache.assign(0, 0).expect("assign");
        cache.assign(0, 10).expect("same epoch: no entry");
        cache.assign(3, 25).expect("assign");
        let mut reopened = LeaderEpochCache::open(dir.path()).expect("reopen");
        assert_eq!(reopened.entries(), &[(0, 0), (3, 25)]);
        assert_eq!(reopened.end_offset_for(0, 40), Some((0, 25)));
        assert_eq!(reopened.end_offset_for(2, 40), Some((0, 25)));
        assert_eq!(reopened.end_offset_for(3, 40), Some((3, 40)));
        assert_eq!(reopened.end_offset_for(9, 40), Some((3, 40)));
        assert_eq!(reopened.end_offset_for(-1, 40), None);
        reopened.truncate_from(20).expect("truncate");
        assert_eq!(reopened.latest_epoch(), Some(0));
    }
}
