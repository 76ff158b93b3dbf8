//! Idempotent producers: producer ids, and per partition the epoch and the
//! last batches' sequence numbers of every producer, so a retried batch is
//! answered with its first offsets instead of being appended twice.
//!
//! The state survives restarts: it is snapshotted next to the partition's
//! log (`producer-snapshot.json`, on clean close and periodically) and, on
//! open, rebuilt from the snapshot plus the batches appended after it, read
//! back from the log — so a retry that crosses a crash is still recognised.
//! Transactional producers are refused until transactions exist.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use weir_log::batch::BatchHeader;
use weir_log::checkpoint::write_atomically;
use weir_log::SharedLog;

use crate::error::{CoreError, Result};

/// Batches remembered per producer and partition, as Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence (5).
pub const REMEMBERED_BATCHES: usize = 5;
/// Producer ids reserved on disk at a time; a crash skips at most this many.
const ID_BLOCK: i64 = 1000;
pub(crate) const ID_FILE: &str = "producer-id-block";

/// Hands out producer ids that are never reused, even after a crash: the
/// end of the current block is persisted before any id from it is given.
#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    range: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// Loads the persisted block end from `data_dir`.
    ///
    /// # Errors
    ///
    /// I/O errors other than a missing file.
    pub fn open(data_dir: &Path) -> io::Result<ProducerIds> {
        let path = data_dir.join(ID_FILE);
        let next = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad producer id block"))?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        Ok(ProducerIds {
            path,
            range: Mutex::new((next, next)),
        })
    }

    /// A fresh producer id.
    ///
    /// # Errors
    ///
    /// I/O errors persisting a new block.
    pub fn next(&self) -> io::Result<i64> {
        let mut range = self.range.lock();
        if range.0 == range.1 {
            let end = range.1 + ID_BLOCK;
            write_atomically(&self.path, end.to_string().as_bytes())?;
            range.1 = end;
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct RememberedBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<RememberedBatch>,
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Next in sequence: append it.
    Append,
    /// Already appended: answer with its offsets.
    Duplicate {
        /// First offset it got.
        base_offset: u64,
        /// Last offset it got.
        last_offset: u64,
    },
}

/// The producers of one partition.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Log end offset the state covers.
    end_offset: u64,
    /// First offset of each producer's open transaction in this partition.
    #[serde(default)]
    ongoing: HashMap<i64, u64>,
    /// Aborted transactions, by the offset of their ABORT marker.
    #[serde(default)]
    aborted: Vec<AbortedTransaction>,
}

/// A transaction that was aborted in a partition: read_committed consumers
/// drop this producer's records from `first_offset` up to the marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbortedTransaction {
    /// The producer.
    pub producer_id: i64,
    /// Its first record in the transaction.
    pub first_offset: u64,
    /// Offset of the ABORT marker.
    pub marker_offset: u64,
}

const SNAPSHOT_FILE: &str = "producer-snapshot.json";
/// Bytes read at a time while rebuilding from the log.
const REBUILD_CHUNK_BYTES: usize = 1 << 20;

fn last_sequence(header: &BatchHeader) -> i32 {
    // Sequences wrap from i32::MAX to 0, as Kafka's DefaultRecordBatch.incrementSequence.
    ((i64::from(header.base_sequence) + i64::from(header.last_offset_delta))
        % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerStates {
    /// The state of the partition whose log is `log` in `dir`: the snapshot,
    /// if it is usable, then every idempotent batch after it.
    ///
    /// # Errors
    ///
    /// I/O errors reading the log.
    pub fn rebuild(dir: &Path, log: &SharedLog) -> Result<ProducerStates> {
        let offsets = log.offsets();
        let snapshot = fs::read(dir.join(SNAPSHOT_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<ProducerStates>(&bytes).ok())
            .filter(|s| {
                (offsets.log_start_offset..=offsets.log_end_offset).contains(&s.end_offset)
            });
        let mut states = snapshot.unwrap_or_else(|| ProducerStates {
            end_offset: offsets.log_start_offset,
            ..ProducerStates::default()
        });
        while states.end_offset < offsets.log_end_offset {
            let chunk = match log.read(states.end_offset, REBUILD_CHUNK_BYTES) {
                Err(weir_log::LogError::Corrupt { offset, .. }) => {
                    // Damaged batches cannot be replayed: their producers'
                    // sequences are forgotten, the rest of the log is not.
                    let Some(after) = log.offset_after_damage(offset) else {
                        break;
                    };
                    tracing::warn!(dir = %dir.display(), from = offset, to = after, "skipping damaged batches while rebuilding idempotent producer state");
                    states.end_offset = after;
                    continue;
                }
                other => other?,
            };
            if chunk.is_empty() {
                break;
            }
            for (header, bytes) in weir_log::batch::split_batches(chunk)? {
                states.replay(&header, &bytes);
            }
        }
        Ok(states)
    }

    /// Takes in one stored batch, as written (on open, and on a follower
    /// copying its leader).
    pub fn replay(&mut self, header: &BatchHeader, bytes: &[u8]) {
        if header.is_control() {
            if let Some(commit) = weir_log::batch::marker_commits(bytes) {
                self.record_marker(header, header.base_offset, commit);
            }
        } else if header.producer_id >= 0 {
            self.record(header, header.base_offset);
        }
        self.end_offset = header.last_offset() + 1;
    }

    /// Writes the state next to the log. Not synced: a lost or stale
    /// snapshot only means more of the log is read back on open.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn snapshot(&self, dir: &Path) -> io::Result<()> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        let temporary = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        fs::write(&temporary, json)?;
        fs::rename(temporary, dir.join(SNAPSHOT_FILE))
    }

    /// Log end offset the state covers.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// Notes that the log now ends at `end_offset` (appends without producer ids).
    pub fn advance_to(&mut self, end_offset: u64) {
        self.end_offset = self.end_offset.max(end_offset);
    }

    /// Checks an idempotent batch against what the producer sent before.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidProducerEpoch`] for an older epoch;
    /// [`CoreError::OutOfOrderSequence`] for a gap or a new epoch not starting at 0.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck> {
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(CoreError::InvalidProducerEpoch);
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(CoreError::OutOfOrderSequence(format!(
                    "a new producer epoch must start at sequence 0, not {}",
                    header.base_sequence
                )))
            };
        }
        let last = last_sequence(header);
        if let Some(seen) = entry
            .batches
            .iter()
            .find(|seen| seen.first_sequence == header.base_sequence && seen.last_sequence == last)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: seen.base_offset,
                last_offset: seen.last_offset,
            });
        }
        let expected = entry.batches.back().map_or(0, |latest| {
            if latest.last_sequence == i32::MAX {
                0
            } else {
                latest.last_sequence + 1
            }
        });
        if header.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(CoreError::OutOfOrderSequence(format!(
                "expected sequence {expected}, got {}",
                header.base_sequence
            )))
        }
    }

    /// Records a transaction marker appended at `offset`: the producer's
    /// transaction ends here, and its epoch may have been bumped (fencing).
    pub fn record_marker(&mut self, header: &BatchHeader, offset: u64, commit: bool) {
        self.end_offset = self.end_offset.max(offset + 1);
        if let Some(first_offset) = self.ongoing.remove(&header.producer_id) {
            if !commit {
                self.aborted.push(AbortedTransaction {
                    producer_id: header.producer_id,
                    first_offset,
                    marker_offset: offset,
                });
            }
        }
        self.entry_at_epoch(header);
    }

    /// The first offset a read_committed consumer may not read yet: the
    /// start of the oldest open transaction, or `high_watermark`.
    pub fn last_stable_offset(&self, high_watermark: u64) -> u64 {
        self.ongoing
            .values()
            .copied()
            .min()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Aborted transactions that overlap `[start, end)`.
    pub fn aborted_between(&self, start: u64, end: u64) -> Vec<AbortedTransaction> {
        self.aborted
            .iter()
            .filter(|a| a.marker_offset >= start && a.first_offset < end)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly before `log_start` (retention).
    pub fn forget_before(&mut self, log_start: u64) {
        self.aborted.retain(|a| a.marker_offset >= log_start);
    }

    /// The batch's producer, moved to the batch's epoch if it is newer (a
    /// new epoch forgets the old epoch's sequences).
    fn entry_at_epoch(&mut self, header: &BatchHeader) -> &mut ProducerEntry {
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert(ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
            });
        if header.producer_epoch > entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry
    }

    /// Remembers a batch just appended at `base_offset`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: u64) {
        self.end_offset = self
            .end_offset
            .max(base_offset + u64::from(header.last_offset_delta) + 1);
        if header.is_transactional() {
            self.ongoing
                .entry(header.producer_id)
                .or_insert(base_offset);
        }
        let entry = self.entry_at_epoch(header);
        if entry.batches.len() == REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(RememberedBatch {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            base_offset,
            last_offset: base_offset + u64::from(header.last_offset_delta),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: u32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: records as i32,
        }
    }

    #[test]
    fn a_retry_is_a_duplicate_and_a_gap_is_refused() {
        let mut states = ProducerStates::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(states.check(&first).expect("first"), SequenceCheck::Append);
        states.record(&first, 100);
        assert_eq!(
            states.check(&first).expect("retry"),
            SequenceCheck::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        assert!(matches!(
            states.check(&header(7, 0, 5, 1)),
            Err(CoreError::OutOfOrderSequence(_))
        ));
        assert_eq!(
            states.check(&header(7, 0, 3, 1)).expect("next"),
            SequenceCheck::Append
        );
        assert!(matches!(
            states.check(&header(7, 1, 4, 1)),
            Err(CoreError::OutOfOrderSequence(_))
        ));
        states.record(&header(7, 1, 0, 1), 103);
        assert!(matches!(
            states.check(&header(7, 0, 3, 1)),
            Err(CoreError::InvalidProducerEpoch)
        ));
    }

    #[test]
    fn producer_ids_are_not_reused_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ProducerIds::open(dir.path())
            .expect("open")
            .next()
            .expect("id");
        let second = ProducerIds::open(dir.path())
            .expect("reopen")
            .next()
            .expect("id");
        assert!(second > first);
    }
}
