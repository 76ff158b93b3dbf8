//! A queue: its lanes (logs with cursor state), its consumers, and the
//! rules that decide which message goes to whom.
//!
//! All state sits under one mutex; a dispatcher task per queue hands ready
//! messages to consumers with room whenever something changes (a publish, an
//! ack, a new consumer) and is woken through [`Queue::wake`]. Dead letters
//! leave through a channel to the virtual host, which routes them without
//! any queue lock held (a queue may dead-letter into itself).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use weir_log::batch::NewRecord;
use weir_log::{LogConfig, SharedLog, Written};

use crate::broker::now_ms;
use crate::logging::Escaped;
use crate::metrics::Metrics;
use crate::queues::args::{Overflow, QueueArguments, QueueType};
use crate::queues::consumer::{
    ChannelHandle, Consumer, ConsumerSpec, Delivery, MessageId, StreamCursor, StreamStart,
};
use crate::queues::dead_letter::{DeadLetter, DeathReason};
use crate::queues::error::QueueError;
use crate::queues::lane::Lane;
use crate::queues::message::Message;
use crate::queues::topic_source::{
    append_records, append_to_topic, follow, read_committed, start_offset, ReadError,
};
use crate::topic::Topic;

/// How a queue was declared.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Its name.
    pub name: String,
    /// Its virtual host.
    pub vhost: String,
    /// Survives a restart (with its persistent messages).
    pub durable: bool,
    /// Owned by this connection; deleted when it closes.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// The arguments as declared (for equivalence checks).
    pub arguments: FieldTable,
    /// The same, parsed.
    pub parsed: QueueArguments,
}

/// The outcome of putting messages into a queue.
#[derive(Debug)]
pub struct Enqueued {
    /// Per message: stored (false: refused by `x-overflow` reject-publish).
    pub accepted: Vec<bool>,
    /// Logs that must be durable up to an offset before the persistent
    /// messages among them are confirmed.
    pub syncs: Vec<(Arc<SharedLog>, Written)>,
}

/// A message taken from the queue, with whether it was delivered before.
struct Taken {
    id: MessageId,
    message: Message,
    redelivered: bool,
}

#[derive(Debug)]
struct InFlight {
    /// Consumer that holds it (connection, channel, tag); `None` for basic.get.
    holder: Option<(u64, u16, Arc<str>)>,
    bytes: u64,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Lane per priority level, opened on first use.
    lanes: Vec<Option<Lane>>,
    in_flight: HashMap<MessageId, InFlight>,
    consumers: Vec<Consumer>,
    round_robin: usize,
    /// Lane a queue over a topic takes from first next time.
    lane_turn: usize,
    /// Ready messages (not in flight, not settled).
    ready: u64,
    /// Body bytes of ready messages (kept when `x-max-length-bytes` is set).
    ready_bytes: u64,
    deleted: bool,
    had_consumer: bool,
    last_used_ms: i64,
}

/// A queue (classic, quorum or stream).
#[derive(Debug)]
pub struct Queue {
    spec: QueueSpec,
    dir: PathBuf,
    log_config: LogConfig,
    /// The topic a stream queue is, or a queue over a topic reads.
    topic: Option<Arc<Topic>>,
    /// Partition of the next keyless message appended to the topic.
    round_robin: AtomicU32,
    state: Mutex<QueueState>,
    wake: Notify,
    dead_letters: mpsc::UnboundedSender<DeadLetter>,
    /// The node's metrics: deliveries are counted, lane logs report syncs.
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Opens a queue and starts its dispatcher. A classic or quorum queue
    /// keeps its lanes under `dir`; a stream queue is `topic`; a queue over
    /// a topic reads `topic` and keeps only its settlement state under `dir`.
    ///
    /// # Errors
    ///
    /// Storage errors opening its logs.
    pub fn open(
        spec: QueueSpec,
        dir: PathBuf,
        log_config: LogConfig,
        topic: Option<Arc<Topic>>,
        dead_letters: mpsc::UnboundedSender<DeadLetter>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Queue>, QueueError> {
        std::fs::create_dir_all(&dir)?;
        let mut state = QueueState {
            last_used_ms: now_ms(),
            ..QueueState::default()
        };
        if topic.is_none() {
            let lanes = usize::from(spec.parsed.max_priority.unwrap_or(0)) + 1;
            state.lanes.resize_with(lanes, || None);
            for index in 0..lanes {
                let lane_dir = dir.join(index.to_string());
                if index == 0 || lane_dir.exists() {
                    let lane = Lane::open(&lane_dir, log_config.clone(), &metrics)?;
                    state.ready += lane.unsettled();
                    state.lanes[index] = Some(lane);
                }
            }
        }
        let queue = Arc::new(Queue {
            spec,
            dir,
            log_config,
            topic,
            round_robin: AtomicU32::new(0),
            state: Mutex::new(state),
            wake: Notify::new(),
            dead_letters,
            metrics,
        });
        if let Some(topic) = &queue.topic {
            let fresh = std::fs::read_dir(&queue.dir)?.next().is_none();
            let mut state = queue.state.lock();
            if !queue.is_stream() {
                let start = if fresh {
                    Some(queue.spec.parsed.source_offset.unwrap_or(StreamStart::Next))
                } else {
                    None
                };
                queue.open_source_lanes(&mut state, start)?;
            }
            for partition in topic.partitions() {
                follow(Arc::downgrade(&queue), &partition);
            }
        }
        if queue.spec.parsed.max_length_bytes.is_some() && queue.topic.is_none() {
            queue.count_ready_bytes()?;
        }
        tokio::spawn(run_dispatcher(Arc::clone(&queue)));
        Ok(queue)
    }

    /// Opens a lane for each partition of the source topic that has none
    /// yet (all of them at first, then those a topic grew by), starting
    /// fresh ones at `start` (`None`: at the partition's beginning), and
    /// recounts the ready messages.
    fn open_source_lanes(
        self: &Arc<Queue>,
        state: &mut QueueState,
        start: Option<StreamStart>,
    ) -> Result<(), QueueError> {
        let Some(topic) = &self.topic else {
            return Ok(());
        };
        let partitions = topic.partitions();
        for partition in partitions.iter().skip(state.lanes.len()) {
            let dir = self.dir.join(partition.index().to_string());
            let lane = Lane::over(Arc::clone(partition), &dir, start)?;
            if !state.lanes.is_empty() {
                // A partition added since the queue opened.
                follow(Arc::downgrade(self), partition);
            }
            state.lanes.push(Some(lane));
        }
        recount_ready(state);
        Ok(())
    }

    /// How it was declared.
    pub fn spec(&self) -> &QueueSpec {
        &self.spec
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Directory of its lanes.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn is_stream(&self) -> bool {
        self.spec.parsed.queue_type == QueueType::Stream
    }

    /// Whether its topic (a stream queue's, or a source's) was deleted.
    pub fn topic_deleted(&self) -> bool {
        self.topic.as_ref().is_some_and(|topic| topic.is_deleted())
    }

    /// Whether it is a queue over a topic (`x-source-topic`).
    fn reads_topic(&self) -> bool {
        self.topic.is_some() && !self.is_stream()
    }

    /// The topic a stream queue is, or a queue over a topic reads.
    pub fn topic(&self) -> Option<&Arc<Topic>> {
        self.topic.as_ref()
    }

    /// Messages retention removed from the source topic before the queue
    /// settled them (queues over a topic; 0 for others).
    pub fn lost_to_retention(&self) -> u64 {
        self.state
            .lock()
            .lanes
            .iter()
            .flatten()
            .map(|lane| lane.lost)
            .sum()
    }

    /// Asks the dispatcher to look for work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ready messages (RabbitMQ's `message_count`); for a stream, every
    /// message stored. A queue over a topic counts records produced to the
    /// topic when its dispatcher wakes for them.
    pub fn message_count(&self) -> u64 {
        if let (true, Some(topic)) = (self.is_stream(), &self.topic) {
            return topic
                .partitions()
                .iter()
                .map(|partition| {
                    let offsets = partition.offsets();
                    offsets.high_watermark - offsets.log_start_offset.min(offsets.high_watermark)
                })
                .sum();
        }
        self.state.lock().ready
    }

    /// Delivered, not yet acknowledged messages.
    pub fn unacked_count(&self) -> u64 {
        self.state.lock().in_flight.len() as u64
    }

    /// Consumers attached.
    pub fn consumer_count(&self) -> u32 {
        self.state.lock().consumers.len() as u32
    }

    /// Whether the queue was deleted.
    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Notes a use (declare, get, consume) for `x-expires`.
    pub fn touch(&self) {
        self.state.lock().last_used_ms = now_ms();
    }

    /// Stores messages in order, applying `x-max-length` /
    /// `x-max-length-bytes`: one write per lane for the whole batch.
    ///
    /// # Errors
    ///
    /// Storage errors; then none of the messages is stored.
    pub fn enqueue_many(&self, messages: &[&Message]) -> Result<Enqueued, QueueError> {
        let mut state = self.state.lock();
        let mut enqueued = Enqueued {
            accepted: vec![true; messages.len()],
            syncs: Vec::new(),
        };
        if state.deleted {
            // Deleted after routing: dropped, as an unroutable message would be.
            return Ok(enqueued);
        }
        if let Some(topic) = &self.topic {
            enqueued.syncs = append_to_topic(topic, &self.round_robin, messages)?;
            drop(state);
            self.wake();
            return Ok(enqueued);
        }
        let parsed = &self.spec.parsed;
        let over = |state: &QueueState, extra: u64, extra_bytes: u64| {
            parsed
                .max_length
                .is_some_and(|max| state.ready + extra > max)
                || parsed
                    .max_length_bytes
                    .is_some_and(|max| state.ready_bytes + extra_bytes > max)
        };
        let mut lanes: Vec<(Vec<NewRecord>, bool)> = (0..state.lanes.len())
            .map(|_| (Vec::new(), false))
            .collect();
        for (index, message) in messages.iter().enumerate() {
            if parsed.overflow != Overflow::DropHead && over(&state, 1, message.body_bytes()) {
                if parsed.overflow == Overflow::RejectPublishDlx {
                    self.dead_letter((*message).clone(), DeathReason::MaxLength);
                }
                enqueued.accepted[index] = false;
                continue;
            }
            let lane = usize::from(message.priority()).min(state.lanes.len() - 1);
            lanes[lane].0.push(message.to_record());
            lanes[lane].1 |= self.spec.durable && message.is_persistent();
            state.ready += 1;
            state.ready_bytes += message.body_bytes();
        }
        for (index, (records, needs_sync)) in lanes.into_iter().enumerate() {
            if records.is_empty() {
                continue;
            }
            let lane = self.lane(&mut state, index)?;
            let written = append_records(&lane.log, &records, 0)?;
            if needs_sync {
                enqueued.syncs.push((Arc::clone(&lane.log), written));
            }
        }
        while over(&state, 0, 0) {
            let Some(taken) = self.take_next(&mut state, false)? else {
                break;
            };
            self.settle(&mut state, taken.id)?;
            self.dead_letter(taken.message, DeathReason::MaxLength);
        }
        let has_consumers = !state.consumers.is_empty();
        drop(state);
        if has_consumers {
            self.wake();
        }
        Ok(enqueued)
    }

    /// Adds a consumer.
    ///
    /// # Errors
    ///
    /// [`QueueError::AccessRefused`] when an exclusive consumer is in the way.
    pub fn consume(&self, spec: ConsumerSpec) -> Result<(), QueueError> {
        let mut state = self.state.lock();
        if state.deleted {
            return Err(self.not_found());
        }
        let exclusive_in_use = state.consumers.iter().any(|c| c.spec.exclusive);
        if exclusive_in_use || (spec.exclusive && !state.consumers.is_empty()) {
            return Err(QueueError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.spec.name, self.spec.vhost
            )));
        }
        if self.is_stream() {
            self.check_stream_consumer(&spec)?;
        }
        let mut stream = StreamCursor::default();
        if let (true, Some(topic)) = (self.is_stream(), &self.topic) {
            let start = spec.stream_start.unwrap_or(StreamStart::Next);
            for partition in topic.partitions() {
                stream.next.push(start_offset(partition.log(), start)?);
            }
        }
        state.consumers.push(Consumer {
            spec,
            unacked: 0,
            stream,
        });
        state.had_consumer = true;
        state.last_used_ms = now_ms();
        drop(state);
        self.wake();
        Ok(())
    }

    /// Removes a consumer; true when the queue is auto-delete and this was
    /// its last consumer (the caller deletes it).
    pub fn cancel(&self, connection_id: u64, channel: u16, tag: &str) -> bool {
        let mut state = self.state.lock();
        let before = state.consumers.len();
        state
            .consumers
            .retain(|c| !c.is(connection_id, channel, tag));
        let removed = state.consumers.len() != before;
        state.last_used_ms = now_ms();
        let now_unused =
            removed && state.consumers.is_empty() && self.spec.auto_delete && !state.deleted;
        drop(state);
        self.wake();
        now_unused
    }

    /// `basic.get`: takes the oldest ready message; returns it with the
    /// count of messages still ready.
    ///
    /// # Errors
    ///
    /// Storage errors reading the log.
    pub fn get(
        self: &Arc<Queue>,
        channel: &ChannelHandle,
        no_ack: bool,
    ) -> Result<Option<(Delivery, u64)>, QueueError> {
        let mut state = self.state.lock();
        state.last_used_ms = now_ms();
        if self.is_stream() {
            return Err(QueueError::NotImplemented(format!(
                "basic.get not supported by stream queues queue '{}' in vhost '{}'",
                self.spec.name, self.spec.vhost
            )));
        }
        self.open_source_lanes(&mut state, None)?;
        let Some(taken) = self.take_next(&mut state, true)? else {
            return Ok(None);
        };
        write_delivered_marks(&mut state)?;
        if no_ack {
            self.settle(&mut state, taken.id)?;
        } else {
            let bytes = taken.message.body_bytes();
            state.in_flight.insert(
                taken.id,
                InFlight {
                    holder: None,
                    bytes,
                },
            );
        }
        let remaining = state.ready;
        self.metrics
            .count_delivery(&self.spec.vhost, &self.spec.name);
        let delivery = Delivery {
            channel: channel.channel,
            consumer_tag: Arc::from(""),
            queue: Arc::clone(self),
            id: taken.id,
            redelivered: taken.redelivered,
            needs_ack: !no_ack,
            message: taken.message,
        };
        Ok(Some((delivery, remaining)))
    }

    /// Settles delivered messages (`basic.ack`).
    ///
    /// # Errors
    ///
    /// I/O errors writing the settlement state.
    pub fn ack(&self, ids: &[MessageId]) -> Result<(), QueueError> {
        let mut state = self.state.lock();
        for &id in ids {
            if self.release_in_flight(&mut state, id).is_some() && !self.is_stream() {
                self.settle(&mut state, id)?;
            }
        }
        drop(state);
        self.wake();
        Ok(())
    }

    /// `basic.reject` / `basic.nack`, and unacknowledged deliveries of a
    /// closed channel (`requeue` = true): back to their original position
    /// with `redelivered`, or settled and dead-lettered.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn reject(&self, ids: &[MessageId], requeue: bool) -> Result<(), QueueError> {
        let mut state = self.state.lock();
        for &id in ids {
            let Some(bytes) = self.release_in_flight(&mut state, id) else {
                continue;
            };
            if self.is_stream() {
                continue;
            }
            if requeue && !state.deleted {
                if self.spec.parsed.queue_type == QueueType::Quorum {
                    self.requeue_at_back(&mut state, id)?;
                    continue;
                }
                if let Some(lane) = state.lanes[id.lane as usize].as_mut() {
                    lane.requeue(id.offset);
                }
                state.ready += 1;
                state.ready_bytes += bytes;
                continue;
            }
            self.settle(&mut state, id)?;
            if self.spec.parsed.dead_letter_exchange.is_some() {
                if let Some(lane) = state.lanes[id.lane as usize].as_mut() {
                    // A message retention already took cannot be dead-lettered.
                    if let Some(message) = lane.read(id.offset)? {
                        self.dead_letter(message, DeathReason::Rejected);
                    }
                }
            }
        }
        drop(state);
        self.wake();
        Ok(())
    }

    /// Drops every ready message; returns how many (`queue.purge`).
    ///
    /// # Errors
    ///
    /// I/O errors writing the settlement state.
    pub fn purge(self: &Arc<Queue>) -> Result<u64, QueueError> {
        let mut state = self.state.lock();
        if self.is_stream() {
            return Ok(0);
        }
        self.open_source_lanes(&mut state, None)?;
        let mut purged = 0;
        for lane in state.lanes.iter_mut().flatten() {
            purged += lane.take_all_ready()?;
        }
        state.ready = 0;
        state.ready_bytes = 0;
        Ok(purged)
    }

    /// The file half of [`Queue::maintain`]: syncs settlement state,
    /// notices or deletes settled segments; returns the queue's own logs,
    /// to be synced next.
    fn settle_and_trim(&self) -> Result<Vec<Arc<SharedLog>>, QueueError> {
        let mut state = self.state.lock();
        let mut lost = 0;
        for lane in state.lanes.iter_mut().flatten() {
            lane.settlement.sync()?;
            if lane.source.is_some() {
                // The topic's retention decides; the queue only notices.
                lost += lane.settle_removed()?;
            } else {
                lane.log
                    .delete_segments_below(lane.settlement.settled_below())?;
            }
        }
        if self.reads_topic() {
            recount_ready(&mut state);
        }
        if lost > 0 {
            tracing::warn!(queue = %Escaped(&self.spec.name), lost, "retention removed messages of the source topic before they were settled");
        }
        Ok(state
            .lanes
            .iter()
            .flatten()
            .filter(|lane| lane.source.is_none())
            .map(|lane| Arc::clone(&lane.log))
            .collect())
    }

    /// Periodic work: syncs settlement state and transient writes, applies
    /// stream retention and deletes fully settled segments; returns true
    /// when `x-expires` says the queue should go. The file work runs on the
    /// blocking pool: a settlement fsync or a segment deletion must not
    /// stall an async thread.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn maintain(self: &Arc<Self>, now: i64) -> Result<bool, QueueError> {
        let queue = Arc::clone(self);
        let logs = tokio::task::spawn_blocking(move || queue.settle_and_trim())
            .await
            .map_err(|error| QueueError::Internal(error.to_string()))??;
        for log in logs {
            let offsets = log.offsets();
            if offsets.high_watermark < offsets.log_end_offset {
                log.flush().await?;
            }
        }
        let state = self.state.lock();
        if state.ready > 0 {
            // Expiry happens at the head of the queue, also with nobody consuming.
            self.wake();
        }
        let expired = self.spec.parsed.expires_ms.is_some_and(|ttl| {
            state.consumers.is_empty() && now - state.last_used_ms >= ttl as i64
        });
        Ok(expired && !state.deleted)
    }

    /// Marks the queue deleted and cancels its consumers; returns how many
    /// ready messages it held. The caller removes its files with
    /// [`Queue::remove_files`].
    pub fn close_for_delete(&self) -> u64 {
        let mut state = self.state.lock();
        state.deleted = true;
        for consumer in state.consumers.drain(..) {
            consumer
                .spec
                .channel
                .send_cancel(Arc::clone(&consumer.spec.tag));
        }
        let count = state.ready;
        drop(state);
        self.wake();
        count
    }

    /// Deletes the logs of a deleted queue.
    ///
    /// # Errors
    ///
    /// I/O errors removing files.
    pub fn remove_files(&self) -> Result<(), QueueError> {
        let mut state = self.state.lock();
        for lane in state.lanes.iter_mut().filter_map(Option::take) {
            if lane.source.is_none() {
                lane.log.delete()?;
            }
        }
        drop(state);
        match std::fs::remove_dir_all(&self.dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// Syncs and closes the logs for a clean shutdown.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn close(&self) -> Result<(), QueueError> {
        let mut state = self.state.lock();
        for lane in state.lanes.iter_mut().flatten() {
            lane.settlement.sync()?;
            if lane.source.is_none() {
                lane.log.close()?;
            }
        }
        Ok(())
    }

    /// Quorum queues put a requeued message at the back with its
    /// `x-delivery-count` raised (RabbitMQ 3.10's behaviour): the copy is
    /// appended, the original settled.
    fn requeue_at_back(&self, state: &mut QueueState, id: MessageId) -> Result<(), QueueError> {
        let lane = self.lane(state, id.lane as usize)?;
        let Some(stored) = lane.read(id.offset)? else {
            return Ok(());
        };
        let count = delivery_count(&stored).unwrap_or(0) + 1;
        let copy = stored.with_header(DELIVERY_COUNT, AMQPValue::LongLongInt(count))?;
        append_records(&lane.log, &[copy.to_record()], 0)?;
        lane.settlement.settle(id.offset, id.offset + 1)?;
        state.ready += 1;
        state.ready_bytes += copy.body_bytes();
        Ok(())
    }

    /// Stream consumers must set a prefetch and acknowledge (RabbitMQ's rules).
    fn check_stream_consumer(&self, spec: &ConsumerSpec) -> Result<(), QueueError> {
        let queue = format!("queue '{}' in vhost '{}'", self.spec.name, self.spec.vhost);
        if spec.no_ack {
            return Err(QueueError::NotImplemented(format!(
                "automatic acknowledgement not supported by stream queues {queue}"
            )));
        }
        if spec.prefetch == 0
            && spec
                .channel
                .global_prefetch
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
        {
            return Err(QueueError::PreconditionFailed(format!(
                "consumer prefetch count is not set for '{queue}'"
            )));
        }
        Ok(())
    }

    fn not_found(&self) -> QueueError {
        QueueError::NotFound(format!(
            "no queue '{}' in vhost '{}'",
            self.spec.name, self.spec.vhost
        ))
    }

    fn lane<'a>(
        &self,
        state: &'a mut QueueState,
        index: usize,
    ) -> Result<&'a mut Lane, QueueError> {
        if state.lanes[index].is_none() {
            state.lanes[index] = Some(Lane::open(
                &self.dir.join(index.to_string()),
                self.log_config.clone(),
                &self.metrics,
            )?);
        }
        Ok(state.lanes[index].as_mut().expect("opened above"))
    }

    fn dead_letter(&self, message: Message, reason: DeathReason) {
        let Some(exchange) = self.spec.parsed.dead_letter_exchange.clone() else {
            return;
        };
        let letter = DeadLetter {
            message,
            reason,
            queue: self.spec.name.clone(),
            exchange,
            routing_key: self.spec.parsed.dead_letter_routing_key.clone(),
            time_ms: now_ms(),
        };
        let _vhost_gone_means_broker_stopping = self.dead_letters.send(letter);
    }

    /// The oldest ready message of the highest-priority lane, with expired
    /// and lost messages settled (and dead-lettered) on the way.
    fn take_next(
        &self,
        state: &mut QueueState,
        count_as_delivery: bool,
    ) -> Result<Option<Taken>, QueueError> {
        let now = now_ms();
        let count = state.lanes.len();
        // Priority lanes from the highest; a topic's partitions in turn.
        let order: Vec<usize> = if self.reads_topic() {
            state.lane_turn = (state.lane_turn + 1) % count.max(1);
            (0..count)
                .map(|step| (state.lane_turn + step) % count)
                .collect()
        } else {
            (0..count).rev().collect()
        };
        for index in order {
            loop {
                let durable = self.spec.durable;
                let queue_ttl = self.spec.parsed.message_ttl_ms;
                let Some(lane) = state.lanes[index].as_mut() else {
                    break;
                };
                let Some((offset, message)) = lane.pop()? else {
                    break;
                };
                let id = MessageId {
                    lane: index as u32,
                    offset,
                };
                let redelivered = offset < lane.settlement.delivered_below();
                if count_as_delivery {
                    lane.settlement.mark_delivered(offset + 1);
                }
                state.ready = state.ready.saturating_sub(1);
                state.ready_bytes = state.ready_bytes.saturating_sub(message.body_bytes());
                // A topic's records are durable whatever their properties say.
                let lost = durable
                    && lane.source.is_none()
                    && !message.is_persistent()
                    && offset < lane.opened_end;
                let expired = is_expired(&message, queue_ttl, now);
                if lost || expired {
                    lane.settlement.settle(offset, offset + 1)?;
                    if expired && !lost {
                        self.dead_letter(message, DeathReason::Expired);
                    }
                    continue;
                }
                if self.spec.parsed.queue_type == QueueType::Quorum {
                    return Ok(Some(quorum_delivery(id, message, redelivered)?));
                }
                return Ok(Some(Taken {
                    id,
                    message,
                    redelivered,
                }));
            }
        }
        Ok(None)
    }

    fn settle(&self, state: &mut QueueState, id: MessageId) -> Result<(), QueueError> {
        if let Some(lane) = state.lanes[id.lane as usize].as_mut() {
            lane.settlement.settle(id.offset, id.offset + 1)?;
        }
        Ok(())
    }

    /// Forgets an in-flight message and gives its consumer the credit back;
    /// its body size, or `None` if it was not in flight.
    fn release_in_flight(&self, state: &mut QueueState, id: MessageId) -> Option<u64> {
        let in_flight = state.in_flight.remove(&id)?;
        if let Some((connection, channel, tag)) = &in_flight.holder {
            if let Some(consumer) = state
                .consumers
                .iter_mut()
                .find(|c| c.is(*connection, *channel, tag))
            {
                consumer.unacked = consumer.unacked.saturating_sub(1);
            }
        }
        Some(in_flight.bytes)
    }

    /// Hands ready messages to consumers with room until one side runs out.
    fn dispatch(self: &Arc<Queue>) -> Result<(), QueueError> {
        let mut state = self.state.lock();
        if state.deleted {
            return Ok(());
        }
        if self.is_stream() {
            return self.dispatch_stream(&mut state);
        }
        self.open_source_lanes(&mut state, None)?;
        if state.consumers.is_empty() {
            // Expire from the head even with nobody consuming, as RabbitMQ does.
            if state.ready > 0 {
                self.expire_head(&mut state)?;
            }
            return Ok(());
        }
        while let Some(index) = self.pick_consumer(&mut state) {
            let consumer = &state.consumers[index];
            let needs_ack = !consumer.spec.no_ack;
            let Some(claim) = consumer.spec.channel.claim(needs_ack) else {
                // Another queue took the channel's last slot since the pick:
                // look again, as other consumers may have room.
                self.wake();
                break;
            };
            let Some(taken) = self.take_next(&mut state, true)? else {
                break;
            };
            let consumer = &mut state.consumers[index];
            let channel = Arc::clone(&consumer.spec.channel);
            let tag = Arc::clone(&consumer.spec.tag);
            if needs_ack {
                consumer.unacked += 1;
                let holder = Some((channel.connection_id, channel.channel, Arc::clone(&tag)));
                state.in_flight.insert(
                    taken.id,
                    InFlight {
                        holder,
                        bytes: taken.message.body_bytes(),
                    },
                );
            } else {
                self.settle(&mut state, taken.id)?;
            }
            self.metrics
                .count_delivery(&self.spec.vhost, &self.spec.name);
            let delivery = Delivery {
                channel: channel.channel,
                consumer_tag: tag,
                queue: Arc::clone(self),
                id: taken.id,
                redelivered: taken.redelivered,
                needs_ack,
                message: taken.message,
            };
            if !claim.send(delivery) && needs_ack {
                // The connection is gone: its channel close requeues the rest.
                if let Some(bytes) = self.release_in_flight(&mut state, taken.id) {
                    if let Some(lane) = state.lanes[taken.id.lane as usize].as_mut() {
                        lane.requeue(taken.id.offset);
                    }
                    state.ready += 1;
                    state.ready_bytes += bytes;
                }
            }
        }
        write_delivered_marks(&mut state)
    }

    /// Settles expired messages at the head of each lane.
    fn expire_head(&self, state: &mut QueueState) -> Result<(), QueueError> {
        let now = now_ms();
        let queue_ttl = self.spec.parsed.message_ttl_ms;
        for index in 0..state.lanes.len() {
            while let Some(lane) = state.lanes[index].as_mut() {
                let Some((offset, message)) = lane.peek()? else {
                    break;
                };
                if !is_expired(&message, queue_ttl, now) {
                    break;
                }
                lane.take(offset);
                lane.settlement.settle(offset, offset + 1)?;
                state.ready = state.ready.saturating_sub(1);
                state.ready_bytes = state.ready_bytes.saturating_sub(message.body_bytes());
                self.dead_letter(message, DeathReason::Expired);
            }
        }
        Ok(())
    }

    /// The consumer to serve next: single-active → the first one; else the
    /// highest priority with room, round-robin among equals.
    fn pick_consumer(&self, state: &mut QueueState) -> Option<usize> {
        let count = state.consumers.len();
        if count == 0 || state.ready == 0 {
            return None;
        }
        if self.spec.parsed.single_active_consumer {
            return state.consumers[0].has_room().then_some(0);
        }
        let mut best: Option<usize> = None;
        for step in 0..count {
            let index = (state.round_robin + step) % count;
            let consumer = &state.consumers[index];
            if consumer.has_room()
                && best.is_none_or(|b| consumer.spec.priority > state.consumers[b].spec.priority)
            {
                best = Some(index);
            }
        }
        if let Some(index) = best {
            state.round_robin = (index + 1) % count;
        }
        best
    }

    /// Streams: each consumer reads from its own offsets; acks only return
    /// credit.
    fn dispatch_stream(self: &Arc<Queue>, state: &mut QueueState) -> Result<(), QueueError> {
        let Some(topic) = self.topic.as_ref() else {
            return Ok(());
        };
        let partitions = topic.partitions();
        let multi_partition = partitions.len() > 1;
        for index in 0..state.consumers.len() {
            while state.consumers[index].has_room() {
                let consumer = &mut state.consumers[index];
                let needs_ack = !consumer.spec.no_ack;
                let Some(claim) = consumer.spec.channel.claim(needs_ack) else {
                    self.wake();
                    break;
                };
                let Some((partition, record)) =
                    next_stream_record(&mut consumer.stream, &partitions)?
                else {
                    break;
                };
                let id = MessageId {
                    lane: partition,
                    offset: record.offset,
                };
                let mut message = Message::from_record(record)?
                    .with_header("x-stream-offset", AMQPValue::LongLongInt(id.offset as i64))?;
                if multi_partition {
                    message = message
                        .with_header("x-stream-partition", AMQPValue::LongInt(partition as i32))?;
                }
                let channel = Arc::clone(&consumer.spec.channel);
                let tag = Arc::clone(&consumer.spec.tag);
                if needs_ack {
                    consumer.unacked += 1;
                    let holder = Some((channel.connection_id, channel.channel, Arc::clone(&tag)));
                    state.in_flight.insert(id, InFlight { holder, bytes: 0 });
                }
                self.metrics
                    .count_delivery(&self.spec.vhost, &self.spec.name);
                let delivery = Delivery {
                    channel: channel.channel,
                    consumer_tag: tag,
                    queue: Arc::clone(self),
                    id,
                    redelivered: false,
                    needs_ack,
                    message,
                };
                if !claim.send(delivery) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn count_ready_bytes(&self) -> Result<(), QueueError> {
        let mut state = self.state.lock();
        let mut total = 0;
        for lane in state.lanes.iter_mut().flatten() {
            total += lane.ready_body_bytes()?;
        }
        state.ready_bytes = total;
        Ok(())
    }
}

/// Sets a queue over a topic's ready count from its lanes (the topic's
/// producers do not tell the queue what they append).
fn recount_ready(state: &mut QueueState) {
    let unsettled: u64 = state.lanes.iter().flatten().map(Lane::unsettled).sum();
    state.ready = unsettled.saturating_sub(state.in_flight.len() as u64);
}

/// Bytes a stream consumer reads ahead from one partition at a time.
const STREAM_READ_AHEAD_BYTES: usize = 256 * 1024;

/// A stream consumer's next record and its partition: from what it read
/// ahead, else read from the partitions in turn (new partitions of a grown
/// topic from their start; past what retention removed).
fn next_stream_record(
    cursor: &mut StreamCursor,
    partitions: &[Arc<crate::topic::Partition>],
) -> Result<Option<(u32, weir_log::batch::StoredRecord)>, QueueError> {
    if let Some(next) = cursor.read_ahead.pop_front() {
        return Ok(Some(next));
    }
    for partition in partitions.iter().skip(cursor.next.len()) {
        cursor.next.push(partition.offsets().log_start_offset);
    }
    for _ in 0..partitions.len() {
        let index = cursor.turn % partitions.len();
        cursor.turn = cursor.turn.wrapping_add(1);
        let read = loop {
            match read_committed(
                &partitions[index],
                cursor.next[index],
                STREAM_READ_AHEAD_BYTES,
            ) {
                Ok(read) => break read,
                Err(ReadError::Removed { log_start_offset }) => {
                    cursor.next[index] = log_start_offset;
                }
                Err(ReadError::Failed(error)) => return Err(error),
            }
        };
        cursor.next[index] = read.next_offset;
        cursor.read_ahead.extend(
            read.records
                .into_iter()
                .map(|record| (index as u32, record)),
        );
        if let Some(next) = cursor.read_ahead.pop_front() {
            return Ok(Some(next));
        }
    }
    Ok(None)
}

/// Whether a message's TTL (the queue's or its own `expiration`, whichever
/// is shorter) has passed.
fn is_expired(message: &Message, queue_ttl_ms: Option<u64>, now_ms: i64) -> bool {
    let ttl = match (queue_ttl_ms, message.expiration_ms()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    ttl.is_some_and(|ttl| message.timestamp_ms.saturating_add(ttl as i64) <= now_ms)
}

/// Writes each lane's delivered mark once for the messages just taken (a
/// write per dispatch round, not per message: a crash within the round can
/// only cost a redelivered message its `redelivered` flag).
fn write_delivered_marks(state: &mut QueueState) -> Result<(), QueueError> {
    for lane in state.lanes.iter_mut().flatten() {
        lane.settlement.write_delivered()?;
    }
    Ok(())
}

/// Header where quorum queues count deliveries.
const DELIVERY_COUNT: &str = "x-delivery-count";

fn delivery_count(message: &Message) -> Option<i64> {
    message
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(DELIVERY_COUNT)
        .and_then(crate::queues::args::integer)
}

/// A quorum queue's delivery: `x-delivery-count` present (0 the first
/// time), and redelivered when it was delivered before.
fn quorum_delivery(
    id: MessageId,
    message: Message,
    redelivered: bool,
) -> Result<Taken, QueueError> {
    if let Some(count) = delivery_count(&message) {
        return Ok(Taken {
            id,
            message,
            redelivered: redelivered || count > 0,
        });
    }
    let message = message.with_header(DELIVERY_COUNT, AMQPValue::LongLongInt(0))?;
    Ok(Taken {
        id,
        message,
        redelivered,
    })
}

/// Runs [`Queue::dispatch`] whenever the queue is woken, until it is deleted.
async fn run_dispatcher(queue: Arc<Queue>) {
    loop {
        if let Err(error) = queue.dispatch() {
            tracing::error!(queue = %Escaped(&queue.spec.name), %error, "dispatch failed");
        }
        if queue.is_deleted() {
            return;
        }
        queue.wake.notified().await;
    }
}
