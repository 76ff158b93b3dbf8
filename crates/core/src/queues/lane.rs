//! One log of a queue with its cursor state: a classic queue has one lane,
//! a priority queue one per priority level (as RabbitMQ's classic priority
//! queues keep one backing queue per priority).
//!
//! A lane's messages are the log's records. Below `cursor` every offset is
//! settled, in flight, or in `requeued` (ready again, at its original
//! position); from `cursor` on, offsets not settled are ready. Memory is
//! bounded by the in-flight and requeued sets and the read-ahead buffer,
//! never by the depth of the queue.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use weir_log::batch::{decode_records, split_batches};
use weir_log::{Log, LogConfig, SharedLog};

use crate::queues::error::QueueError;
use crate::queues::message::Message;
use crate::queues::settlement::Settlement;

/// Bytes read from the log at a time to refill the read-ahead buffer.
const READ_AHEAD_BYTES: usize = 256 * 1024;

/// A queue log and its cursor state.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) log: Arc<SharedLog>,
    pub(crate) settlement: Settlement,
    /// Next offset never taken since the lane opened.
    pub(crate) cursor: u64,
    /// Offsets below `cursor` that are ready again.
    pub(crate) requeued: BTreeSet<u64>,
    /// Messages read from `cursor` on, not yet taken.
    read_ahead: VecDeque<(u64, Message)>,
    /// Log end when the lane opened: non-persistent messages below it did
    /// not survive the restart.
    pub(crate) opened_end: u64,
}

impl Lane {
    /// Opens the lane in `dir` (created if missing).
    ///
    /// # Errors
    ///
    /// Storage errors of the log or the settlement state.
    pub(crate) fn open(dir: &Path, config: LogConfig) -> Result<Lane, QueueError> {
        std::fs::create_dir_all(dir)?;
        let log = Log::open(dir, config, false)?;
        let end = log.log_end_offset();
        let start = log.log_start_offset();
        let mut settlement = Settlement::open(dir)?;
        // Settled entries past the end of the log describe records a power
        // loss took back; new records will reuse those offsets.
        settlement.clamp(end)?;
        let cursor = settlement.next_unsettled(start);
        Ok(Lane {
            log: Arc::new(SharedLog::new(log)),
            settlement,
            cursor,
            requeued: BTreeSet::new(),
            read_ahead: VecDeque::new(),
            opened_end: end,
        })
    }

    /// Offsets not settled (ready or in flight).
    pub(crate) fn unsettled(&self) -> u64 {
        let end = self.log.offsets().log_end_offset;
        end.saturating_sub(self.settlement.settled_below())
            .saturating_sub(self.settlement.settled_above())
    }

    /// The oldest ready message without taking it: the first requeued one,
    /// else the one at the cursor.
    ///
    /// # Errors
    ///
    /// Storage errors reading the log.
    pub(crate) fn peek(&mut self) -> Result<Option<(u64, Message)>, QueueError> {
        if let Some(&offset) = self.requeued.first() {
            return Ok(Some((offset, self.read(offset)?)));
        }
        self.fill()?;
        Ok(self.read_ahead.front().cloned())
    }

    /// Takes the oldest ready message (as [`Lane::peek`] would show it).
    ///
    /// # Errors
    ///
    /// Storage errors reading the log.
    pub(crate) fn pop(&mut self) -> Result<Option<(u64, Message)>, QueueError> {
        if let Some(offset) = self.requeued.pop_first() {
            return Ok(Some((offset, self.read(offset)?)));
        }
        self.fill()?;
        let popped = self.read_ahead.pop_front();
        if let Some((offset, _)) = &popped {
            self.cursor = offset + 1;
        }
        Ok(popped)
    }

    /// Takes the message [`Lane::peek`] returned.
    pub(crate) fn take(&mut self, offset: u64) {
        if self.requeued.remove(&offset) {
            return;
        }
        if self
            .read_ahead
            .front()
            .is_some_and(|(front, _)| *front == offset)
        {
            self.read_ahead.pop_front();
            self.cursor = offset + 1;
        }
    }

    /// Puts an in-flight message back at its position.
    pub(crate) fn requeue(&mut self, offset: u64) {
        if offset < self.cursor {
            self.requeued.insert(offset);
        }
    }

    /// Takes every ready message at once (purge): returns how many.
    ///
    /// # Errors
    ///
    /// I/O errors writing the settlement state.
    pub(crate) fn take_all_ready(&mut self) -> Result<u64, QueueError> {
        let end = self.log.offsets().log_end_offset;
        let mut count = 0;
        let mut offset = self.settlement.next_unsettled(self.cursor);
        // Count unsettled offsets between the cursor and the end, range by range.
        while offset < end {
            let next_settled = self.settlement.next_settled(offset).unwrap_or(end).min(end);
            count += next_settled - offset;
            offset = self.settlement.next_unsettled(next_settled);
        }
        self.settlement.settle(self.cursor, end)?;
        for offset in std::mem::take(&mut self.requeued) {
            self.settlement.settle(offset, offset + 1)?;
            count += 1;
        }
        self.cursor = end;
        self.read_ahead.clear();
        Ok(count)
    }

    /// Refills the read-ahead buffer from the cursor, skipping settled offsets.
    fn fill(&mut self) -> Result<(), QueueError> {
        while self.read_ahead.is_empty() {
            self.cursor = self.settlement.next_unsettled(self.cursor);
            let bytes = self.log.read_unsynced(self.cursor, READ_AHEAD_BYTES)?;
            if bytes.is_empty() {
                return Ok(());
            }
            let mut last = self.cursor;
            for (_, batch) in split_batches(bytes)? {
                for record in decode_records(&batch)? {
                    last = last.max(record.offset + 1);
                    if record.offset >= self.cursor && !self.settlement.is_settled(record.offset) {
                        let offset = record.offset;
                        self.read_ahead
                            .push_back((offset, Message::from_record(record)?));
                    }
                }
            }
            if self.read_ahead.is_empty() {
                self.cursor = last;
            }
        }
        Ok(())
    }

    /// Body bytes of every unsettled message (a scan of the log, for
    /// queues with `x-max-length-bytes` when they open).
    ///
    /// # Errors
    ///
    /// Storage errors reading the log.
    pub(crate) fn ready_body_bytes(&self) -> Result<u64, QueueError> {
        let end = self.log.offsets().log_end_offset;
        let mut offset = self.settlement.next_unsettled(self.cursor);
        let mut total = 0;
        while offset < end {
            let bytes = self.log.read_unsynced(offset, READ_AHEAD_BYTES)?;
            if bytes.is_empty() {
                break;
            }
            for (_, batch) in split_batches(bytes)? {
                for record in decode_records(&batch)? {
                    if record.offset >= offset && !self.settlement.is_settled(record.offset) {
                        total += record.value.as_ref().map_or(0, |v| v.len() as u64);
                    }
                    offset = offset.max(record.offset + 1);
                }
            }
        }
        Ok(total)
    }

    /// Reads the message at `offset`.
    ///
    /// # Errors
    ///
    /// Storage errors; [`QueueError::Internal`] if it is not in the log.
    pub(crate) fn read(&self, offset: u64) -> Result<Message, QueueError> {
        let bytes = self.log.read_unsynced(offset, 1)?;
        for (_, batch) in split_batches(bytes)? {
            for record in decode_records(&batch)? {
                if record.offset == offset {
                    return Message::from_record(record);
                }
            }
        }
        Err(QueueError::Internal(format!(
            "message {offset} missing from its queue log"
        )))
    }
}
