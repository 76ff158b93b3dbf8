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

use weir_log::batch::{decode_records, split_batches, StoredRecord};
use weir_log::{Log, LogConfig, SharedLog};

use crate::metrics::Metrics;
use crate::queues::consumer::StreamStart;
use crate::queues::error::QueueError;
use crate::queues::message::Message;
use crate::queues::settlement::Settlement;
use crate::queues::topic_source::{read_committed, start_offset, ReadError};
use crate::topic::Partition;

/// Bytes read from the log at a time to refill the read-ahead buffer.
const READ_AHEAD_BYTES: usize = 256 * 1024;

/// A queue log and its cursor state.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) log: Arc<SharedLog>,
    /// For a queue over a topic: the partition whose log `log` is. The
    /// lane then reads only committed records, never writes, closes or
    /// deletes the log, and counts what retention removed unsettled.
    pub(crate) source: Option<Arc<Partition>>,
    /// Unsettled messages retention removed from the topic (source lanes).
    pub(crate) lost: u64,
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
    pub(crate) fn open(
        dir: &Path,
        config: LogConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Lane, QueueError> {
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
            log: Arc::new(SharedLog::new(log).observing_syncs(Arc::clone(metrics))),
            source: None,
            lost: 0,
            settlement,
            cursor,
            requeued: BTreeSet::new(),
            read_ahead: VecDeque::new(),
            opened_end: end,
        })
    }

    /// Opens the lane of a queue over a topic that reads `partition`, with
    /// its settlement state in `dir`. A lane opened for the first time
    /// starts at `start` (everything before counts as settled; `None`: the
    /// partition's first record).
    ///
    /// # Errors
    ///
    /// Storage errors of the settlement state.
    pub(crate) fn over(
        partition: Arc<Partition>,
        dir: &Path,
        start: Option<StreamStart>,
    ) -> Result<Lane, QueueError> {
        std::fs::create_dir_all(dir)?;
        let fresh = !Settlement::exists(dir);
        let log = Arc::clone(partition.shared_log());
        let mut settlement = Settlement::open(dir)?;
        let offsets = log.offsets();
        if fresh {
            let first = match start {
                Some(start) => start_offset(&log, start)?,
                None => offsets.log_start_offset,
            };
            settlement.settle(0, first)?;
            // Durable before the queue is: a restart must not start over.
            settlement.sync()?;
        }
        // Settled entries past the end describe records a power loss took
        // back (never delivered: only durable records are read).
        settlement.clamp(offsets.log_end_offset)?;
        let cursor = settlement.next_unsettled(offsets.log_start_offset);
        Ok(Lane {
            log,
            source: Some(partition),
            lost: 0,
            settlement,
            cursor,
            requeued: BTreeSet::new(),
            read_ahead: VecDeque::new(),
            opened_end: offsets.log_end_offset,
        })
    }

    /// Offsets not settled (ready or in flight).
    pub(crate) fn unsettled(&self) -> u64 {
        let offsets = self.log.offsets();
        let end = match &self.source {
            Some(_) => offsets.high_watermark,
            None => offsets.log_end_offset,
        };
        end.saturating_sub(self.settlement.settled_below())
            .saturating_sub(self.settlement.settled_above())
    }

    /// Source lanes: settles what retention removed before it was settled,
    /// and counts it in `lost`; returns how many. Messages in flight are
    /// not counted (they were delivered; an ack still settles them, a
    /// requeue finds them gone and counts them then).
    ///
    /// # Errors
    ///
    /// I/O errors writing the settlement state.
    pub(crate) fn settle_removed(&mut self) -> Result<u64, QueueError> {
        if self.source.is_none() {
            return Ok(0);
        }
        let log_start = self.log.offsets().log_start_offset;
        // Below the cursor every unsettled offset is in flight or requeued;
        // from it on, unsettled means never taken.
        let mut lost = self.count_unsettled(self.cursor, log_start);
        let requeued_lost: Vec<u64> = self.requeued.range(..log_start).copied().collect();
        for offset in requeued_lost {
            self.requeued.remove(&offset);
            lost += 1;
        }
        if self.settlement.next_unsettled(0) < log_start {
            self.settlement.settle(0, log_start)?;
        }
        self.lost += lost;
        if self.cursor < log_start {
            self.cursor = log_start;
            self.read_ahead.clear();
        }
        Ok(lost)
    }

    /// Unsettled offsets in `[from, to)`, range by range.
    fn count_unsettled(&self, from: u64, to: u64) -> u64 {
        let mut count = 0;
        let mut offset = self.settlement.next_unsettled(from);
        while offset < to {
            let next_settled = self.settlement.next_settled(offset).unwrap_or(to).min(to);
            count += next_settled - offset;
            offset = self.settlement.next_unsettled(next_settled);
        }
        count
    }

    /// The oldest ready message without taking it: the first requeued one,
    /// else the one at the cursor.
    ///
    /// # Errors
    ///
    /// Storage errors reading the log.
    pub(crate) fn peek(&mut self) -> Result<Option<(u64, Message)>, QueueError> {
        if let Some(requeued) = self.peek_requeued()? {
            return Ok(Some(requeued));
        }
        self.fill()?;
        Ok(self.read_ahead.front().cloned())
    }

    /// The first requeued message still stored.
    fn peek_requeued(&mut self) -> Result<Option<(u64, Message)>, QueueError> {
        while let Some(&offset) = self.requeued.first() {
            match self.read(offset)? {
                Some(message) => return Ok(Some((offset, message))),
                // Retention took it: settled and counted, with any other
                // requeued message it took.
                None => {
                    self.settle_removed()?;
                }
            }
        }
        Ok(None)
    }

    /// Takes the oldest ready message (as [`Lane::peek`] would show it).
    ///
    /// # Errors
    ///
    /// Storage errors reading the log.
    pub(crate) fn pop(&mut self) -> Result<Option<(u64, Message)>, QueueError> {
        if let Some((offset, message)) = self.peek_requeued()? {
            self.requeued.remove(&offset);
            return Ok(Some((offset, message)));
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
        let offsets = self.log.offsets();
        let end = match &self.source {
            Some(_) => offsets.high_watermark,
            None => offsets.log_end_offset,
        };
        let mut count = self.count_unsettled(self.cursor, end);
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
            let Some((records, next_offset)) = self.read_from(self.cursor)? else {
                return Ok(());
            };
            for record in records {
                if record.offset >= self.cursor && !self.settlement.is_settled(record.offset) {
                    let offset = record.offset;
                    self.read_ahead
                        .push_back((offset, Message::from_record(record)?));
                }
            }
            if self.read_ahead.is_empty() {
                self.cursor = next_offset;
            }
        }
        Ok(())
    }

    /// Records from `offset` on (about [`READ_AHEAD_BYTES`]) and the offset
    /// after them; `None` at the end. A source lane whose cursor retention
    /// passed settles what was removed and reads on from the log start.
    fn read_from(&mut self, offset: u64) -> Result<Option<(Vec<StoredRecord>, u64)>, QueueError> {
        let Some(partition) = &self.source else {
            let bytes = self.log.read_unsynced(offset, READ_AHEAD_BYTES)?;
            if bytes.is_empty() {
                return Ok(None);
            }
            let mut records = Vec::new();
            for (_, batch) in split_batches(bytes)? {
                records.extend(decode_records(&batch)?);
            }
            let next = records.last().map_or(offset, |r| r.offset + 1).max(offset);
            return Ok(Some((records, next)));
        };
        match read_committed(partition, offset, READ_AHEAD_BYTES) {
            Ok(read) if read.next_offset == offset => Ok(None),
            Ok(read) => Ok(Some((read.records, read.next_offset))),
            Err(ReadError::Removed { .. }) => {
                self.settle_removed()?;
                Ok(Some((Vec::new(), self.cursor)))
            }
            Err(ReadError::Failed(error)) => Err(error),
        }
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

    /// Reads the message at `offset`; `None` when retention removed it
    /// from the topic a source lane reads.
    ///
    /// # Errors
    ///
    /// Storage errors; [`QueueError::Internal`] if it is not in the log.
    pub(crate) fn read(&self, offset: u64) -> Result<Option<Message>, QueueError> {
        let records = match &self.source {
            None => {
                let mut records = Vec::new();
                for (_, batch) in split_batches(self.log.read_unsynced(offset, 1)?)? {
                    records.extend(decode_records(&batch)?);
                }
                records
            }
            Some(partition) => match read_committed(partition, offset, 1) {
                Ok(read) => read.records,
                Err(ReadError::Removed { .. }) => return Ok(None),
                Err(ReadError::Failed(error)) => return Err(error),
            },
        };
        match records.into_iter().find(|record| record.offset == offset) {
            Some(record) => Message::from_record(record).map(Some),
            None => Err(QueueError::Internal(format!(
                "message {offset} missing from its queue log"
            ))),
        }
    }
}
