//! Queues whose messages are a topic's records: stream queues (the topic of
//! the same name) and work queues over a topic (`x-source-topic`).
//!
//! Both read what a `read_committed` Kafka consumer would see: records below
//! the partition's last stable offset, without transaction markers and
//! without aborted transactions. Both write through the topic: an AMQP
//! publish appends one record batch per partition (the key's partition, as
//! Kafka's default partitioner picks it; round robin without a key), so the
//! message is stored once and every reader of the topic sees it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use weir_log::batch::{decode_records, encode_batch, split_batches, NewRecord, StoredRecord};
use weir_log::{LogError, SharedLog, Written};

use crate::partitioner::partition_for_key;
use crate::queues::consumer::StreamStart;
use crate::queues::error::QueueError;
use crate::queues::message::Message;
use crate::queues::queue::Queue;
use crate::topic::{Partition, Topic};

/// Largest batch written for a queue (many messages share one batch and
/// one write; a single larger message gets its own batch).
const QUEUE_BATCH_BYTES_MAX: usize = 1 << 20;

/// Appends records in batches of about [`QUEUE_BATCH_BYTES_MAX`]; returns
/// the write to wait for.
///
/// # Errors
///
/// Storage errors; nothing is appended then.
pub(crate) fn append_records(
    log: &SharedLog,
    records: &[NewRecord],
    leader_epoch: i32,
) -> Result<Written, QueueError> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, record) in records.iter().enumerate() {
        bytes += record.value.as_ref().map_or(0, |v| v.len()) + 64;
        if bytes >= QUEUE_BATCH_BYTES_MAX || index + 1 == records.len() {
            batches.extend(split_batches(encode_batch(&records[start..=index]))?);
            start = index + 1;
            bytes = 0;
        }
    }
    let now = records.last().map_or(0, |record| record.timestamp);
    Ok(log.append(&batches, leader_epoch, now)?.written())
}

/// Appends messages to a topic, each to its routing key's partition (the
/// partition Kafka's default partitioner gives the same key; round robin
/// for an empty key). Returns, per partition written, the log and the
/// write that must be committed ([`SharedLog::wait_committed`]: durable,
/// and replicated to the in-sync replicas) before the messages are
/// confirmed.
///
/// # Errors
///
/// Storage errors; [`QueueError::NotFound`] when the topic was deleted.
pub(crate) fn append_to_topic(
    topic: &Topic,
    round_robin: &AtomicU32,
    messages: &[&Message],
) -> Result<Vec<(Arc<SharedLog>, Written)>, QueueError> {
    let partitions = topic.partitions();
    if topic.is_deleted() || partitions.is_empty() {
        return Err(QueueError::NotFound(format!(
            "topic '{}' was deleted",
            topic.name()
        )));
    }
    let count = partitions.len() as u32;
    let mut by_partition: Vec<Vec<NewRecord>> = vec![Vec::new(); partitions.len()];
    for message in messages {
        let key = message.routing_key.as_bytes();
        let index = if count == 1 {
            0
        } else if key.is_empty() {
            round_robin.fetch_add(1, Ordering::Relaxed) % count
        } else {
            partition_for_key(key, count)
        };
        by_partition[index as usize].push(message.to_topic_record());
    }
    if let Some((partition, _)) = partitions
        .iter()
        .zip(&by_partition)
        .find(|(partition, records)| !records.is_empty() && !partition.is_leader_here())
    {
        return Err(not_led_here(partition));
    }
    let mut syncs = Vec::new();
    for (partition, records) in partitions.iter().zip(by_partition) {
        if !records.is_empty() {
            let written = append_records(partition.log(), &records, partition.leader_epoch())?;
            syncs.push((Arc::clone(partition.shared_log()), written));
        }
    }
    Ok(syncs)
}

/// A topic partition another node of the cluster leads: AMQP clients are
/// not forwarded there yet, and a copy here would diverge from the leader's.
fn not_led_here(partition: &Partition) -> QueueError {
    QueueError::PreconditionFailed(format!(
        "partition {} of the stream is led by another node of the cluster; \
         connect to that node (AMQP requests are not forwarded between nodes yet)",
        partition.index()
    ))
}

/// Records read from a partition.
#[derive(Debug, Default)]
pub(crate) struct TopicRead {
    /// Committed data records at or after the offset asked for, in order.
    pub(crate) records: Vec<StoredRecord>,
    /// Where the next read starts (past markers and aborted batches too).
    pub(crate) next_offset: u64,
}

/// What went wrong reading a partition for a queue.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Retention removed the offset asked for; the log now starts here.
    Removed { log_start_offset: u64 },
    /// Anything else.
    Failed(QueueError),
}

impl From<QueueError> for ReadError {
    fn from(error: QueueError) -> ReadError {
        ReadError::Failed(error)
    }
}

impl From<weir_log::BatchError> for ReadError {
    fn from(error: weir_log::BatchError) -> ReadError {
        ReadError::Failed(error.into())
    }
}

/// Reads committed records from `offset`, about `max_bytes` of batches (at
/// least one), as a `read_committed` Kafka consumer would see them.
///
/// # Errors
///
/// [`ReadError::Removed`] below the log start; storage errors.
pub(crate) fn read_committed(
    partition: &Partition,
    offset: u64,
    max_bytes: usize,
) -> Result<TopicRead, ReadError> {
    if !partition.is_leader_here() {
        return Err(ReadError::Failed(not_led_here(partition)));
    }
    let stable = partition.last_stable_offset();
    let bytes = match partition.log().read_below(offset, max_bytes, stable) {
        Ok(bytes) => bytes,
        Err(LogError::OffsetOutOfRange {
            log_start_offset, ..
        }) if offset < log_start_offset => return Err(ReadError::Removed { log_start_offset }),
        Err(error) => return Err(ReadError::Failed(error.into())),
    };
    let mut read = TopicRead {
        records: Vec::new(),
        next_offset: offset,
    };
    let batches = split_batches(bytes)?;
    let aborted = match (batches.first(), batches.last()) {
        (Some((first, _)), Some((last, _)))
            if batches.iter().any(|(h, _)| h.is_transactional()) =>
        {
            partition.aborted_between(first.base_offset, last.last_offset() + 1)
        }
        _ => Vec::new(),
    };
    for (header, batch) in batches {
        read.next_offset = read.next_offset.max(header.last_offset() + 1);
        let is_aborted = header.is_transactional()
            && aborted.iter().any(|transaction| {
                transaction.producer_id == header.producer_id
                    && transaction.first_offset <= header.base_offset
                    && header.base_offset < transaction.marker_offset
            });
        if header.is_control() || is_aborted {
            continue;
        }
        read.records.extend(
            decode_records(&batch)?
                .into_iter()
                .filter(|record| record.offset >= offset),
        );
    }
    Ok(read)
}

/// The offset a reader starting at `start` begins with in `log`.
///
/// # Errors
///
/// Storage errors reading the time index.
pub(crate) fn start_offset(log: &SharedLog, start: StreamStart) -> Result<u64, QueueError> {
    let offsets = log.offsets();
    let (first, end) = (offsets.log_start_offset, offsets.high_watermark);
    Ok(match start {
        StreamStart::First => first,
        StreamStart::Last => end.saturating_sub(1).max(first),
        StreamStart::Next => end,
        // An offset not yet written: from there on, as RabbitMQ.
        StreamStart::Offset(offset) => offset.max(first),
        StreamStart::Timestamp(ms) => match log.batch_at_or_after_timestamp(ms)? {
            Some(batch) => decode_records(&batch)?
                .into_iter()
                .find(|record| record.timestamp >= ms)
                .map_or(end, |record| record.offset),
            None => end,
        },
    })
}

/// Wakes `queue` whenever the partition's high watermark moves (a Kafka
/// producer, or another queue, appended), until the queue or the topic is
/// gone.
pub(crate) fn follow(queue: Weak<Queue>, partition: &Partition) {
    let mut high_watermark = partition.log().watch_high_watermark();
    tokio::spawn(async move {
        while high_watermark.changed().await.is_ok() {
            let Some(queue) = queue.upgrade() else { return };
            if queue.is_deleted() {
                return;
            }
            queue.wake();
        }
    });
}
