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
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use weir_log::batch::{decode_records, encode_batch, split_batches, NewRecord};
use weir_log::{LogConfig, SharedLog};

use crate::broker::now_ms;
use crate::logging::Escaped;
use crate::queues::args::{Overflow, QueueArguments, QueueType};
use crate::queues::consumer::{
    ChannelHandle, Consumer, ConsumerSpec, Delivery, MessageId, StreamStart,
};
use crate::queues::dead_letter::{DeadLetter, DeathReason};
use crate::queues::error::QueueError;
use crate::queues::lane::Lane;
use crate::queues::message::Message;

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
    pub syncs: Vec<(Arc<SharedLog>, u64)>,
}

/// Largest batch written for a queue (many messages share one batch and
/// one write; a single larger message gets its own batch).
const QUEUE_BATCH_BYTES_MAX: usize = 1 << 20;

/// Appends records in batches of about [`QUEUE_BATCH_BYTES_MAX`]; returns
/// the offset after the last.
fn append_records(log: &SharedLog, records: &[NewRecord]) -> Result<u64, QueueError> {
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
    Ok(log.append(&batches, 0, now)?.last_offset + 1)
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
    state: Mutex<QueueState>,
    wake: Notify,
    dead_letters: mpsc::UnboundedSender<DeadLetter>,
}

impl Queue {
    /// Opens a queue whose lanes live under `dir` and starts its dispatcher.
    ///
    /// # Errors
    ///
    /// Storage errors opening its logs.
    pub fn open(
        spec: QueueSpec,
        dir: PathBuf,
        log_config: LogConfig,
        dead_letters: mpsc::UnboundedSender<DeadLetter>,
    ) -> Result<Arc<Queue>, QueueError> {
        std::fs::create_dir_all(&dir)?;
        let mut state = QueueState {
            last_used_ms: now_ms(),
            ..QueueState::default()
        };
        let lanes = usize::from(spec.parsed.max_priority.unwrap_or(0)) + 1;
        state.lanes.resize_with(lanes, || None);
        for index in 0..lanes {
            let lane_dir = dir.join(index.to_string());
            if index == 0 || lane_dir.exists() {
                let lane = Lane::open(&lane_dir, log_config.clone())?;
                state.ready += if spec.parsed.queue_type == QueueType::Stream {
                    let offsets = lane.log.offsets();
                    offsets.log_end_offset - offsets.log_start_offset
                } else {
                    lane.unsettled()
                };
                state.lanes[index] = Some(lane);
            }
        }
        let queue = Arc::new(Queue {
            spec,
            dir,
            log_config,
            state: Mutex::new(state),
            wake: Notify::new(),
            dead_letters,
        });
        if queue.spec.parsed.max_length_bytes.is_some()
            && queue.spec.parsed.queue_type != QueueType::Stream
        {
            queue.count_ready_bytes()?;
        }
        tokio::spawn(run_dispatcher(Arc::clone(&queue)));
        Ok(queue)
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

    /// Asks the dispatcher to look for work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ready messages (RabbitMQ's `message_count`).
    pub fn message_count(&self) -> u64 {
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
        let parsed = &self.spec.parsed;
        let over = |state: &QueueState, extra: u64, extra_bytes: u64| {
            parsed
                .max_length
                .is_some_and(|max| state.ready + extra > max)
                || parsed
                    .max_length_bytes
                    .is_some_and(|max| state.ready_bytes + extra_bytes > max)
        };
        let is_stream = self.is_stream();
        let mut lanes: Vec<(Vec<NewRecord>, bool)> = (0..state.lanes.len())
            .map(|_| (Vec::new(), false))
            .collect();
        for (index, message) in messages.iter().enumerate() {
            if !is_stream
                && parsed.overflow != Overflow::DropHead
                && over(&state, 1, message.body_bytes())
            {
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
            let end_offset = append_records(&lane.log, &records)?;
            if needs_sync {
                enqueued.syncs.push((Arc::clone(&lane.log), end_offset));
            }
        }
        if !is_stream {
            while over(&state, 0, 0) {
                let Some(taken) = self.take_next(&mut state, false)? else {
                    break;
                };
                self.settle(&mut state, taken.id)?;
                self.dead_letter(taken.message, DeathReason::MaxLength);
            }
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
        let stream_next = match spec.stream_start {
            Some(start) if self.is_stream() => self.stream_offset(&mut state, start)?,
            _ => 0,
        };
        state.consumers.push(Consumer {
            spec,
            unacked: 0,
            stream_next,
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
        crate::metrics::count_delivery(&self.spec.vhost, &self.spec.name);
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
                if let Some(lane) = state.lanes[usize::from(id.lane)].as_mut() {
                    lane.requeue(id.offset);
                }
                state.ready += 1;
                state.ready_bytes += bytes;
                continue;
            }
            self.settle(&mut state, id)?;
            if self.spec.parsed.dead_letter_exchange.is_some() {
                if let Some(lane) = state.lanes[usize::from(id.lane)].as_mut() {
                    let message = lane.read(id.offset)?;
                    self.dead_letter(message, DeathReason::Rejected);
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
    pub fn purge(&self) -> Result<u64, QueueError> {
        let mut state = self.state.lock();
        if self.is_stream() {
            return Ok(0);
        }
        let mut purged = 0;
        for lane in state.lanes.iter_mut().flatten() {
            purged += lane.take_all_ready()?;
        }
        state.ready = 0;
        state.ready_bytes = 0;
        Ok(purged)
    }

    /// Periodic work: syncs settlement state and transient writes, applies
    /// stream retention and deletes fully settled segments; returns true
    /// when `x-expires` says the queue should go.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn maintain(&self, now: i64) -> Result<bool, QueueError> {
        let logs: Vec<Arc<SharedLog>> = {
            let mut state = self.state.lock();
            let is_stream = self.is_stream();
            for lane in state.lanes.iter_mut().flatten() {
                lane.settlement.sync()?;
                if is_stream {
                    lane.log.apply_retention(now)?;
                } else {
                    lane.log
                        .delete_segments_below(lane.settlement.settled_below())?;
                }
            }
            state
                .lanes
                .iter()
                .flatten()
                .map(|lane| Arc::clone(&lane.log))
                .collect()
        };
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
            lane.log.delete()?;
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
            lane.log.close()?;
        }
        Ok(())
    }

    /// Quorum queues put a requeued message at the back with its
    /// `x-delivery-count` raised (RabbitMQ 3.10's behaviour): the copy is
    /// appended, the original settled.
    fn requeue_at_back(&self, state: &mut QueueState, id: MessageId) -> Result<(), QueueError> {
        let lane = self.lane(state, usize::from(id.lane))?;
        let stored = lane.read(id.offset)?;
        let count = delivery_count(&stored).unwrap_or(0) + 1;
        let copy = stored.with_header(DELIVERY_COUNT, AMQPValue::LongLongInt(count))?;
        append_records(&lane.log, &[copy.to_record()])?;
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
        for index in (0..state.lanes.len()).rev() {
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
                    lane: index as u8,
                    offset,
                };
                let redelivered = offset < lane.settlement.delivered_below();
                if count_as_delivery {
                    lane.settlement.mark_delivered(offset + 1);
                }
                state.ready = state.ready.saturating_sub(1);
                state.ready_bytes = state.ready_bytes.saturating_sub(message.body_bytes());
                let lost = durable && !message.is_persistent() && offset < lane.opened_end;
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
        if let Some(lane) = state.lanes[usize::from(id.lane)].as_mut() {
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
            crate::metrics::count_delivery(&self.spec.vhost, &self.spec.name);
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
                    if let Some(lane) = state.lanes[usize::from(taken.id.lane)].as_mut() {
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

    fn stream_offset(&self, state: &mut QueueState, start: StreamStart) -> Result<u64, QueueError> {
        let lane = self.lane(state, 0)?;
        let offsets = lane.log.offsets();
        let (first, end) = (offsets.log_start_offset, offsets.log_end_offset);
        Ok(match start {
            StreamStart::First => first,
            StreamStart::Last => end.saturating_sub(1).max(first),
            StreamStart::Next => end,
            // An offset not yet written: from there on, as RabbitMQ.
            StreamStart::Offset(offset) => offset.max(first),
            StreamStart::Timestamp(ms) => match lane.log.batch_at_or_after_timestamp(ms)? {
                Some(batch) => decode_records(&batch)
                    .map_err(|e| QueueError::Internal(e.to_string()))?
                    .into_iter()
                    .find(|record| record.timestamp >= ms)
                    .map_or(end, |record| record.offset),
                None => end,
            },
        })
    }

    /// Streams: each consumer reads from its own offset; acks only return credit.
    fn dispatch_stream(self: &Arc<Queue>, state: &mut QueueState) -> Result<(), QueueError> {
        let Some(log) = state.lanes[0].as_ref().map(|lane| Arc::clone(&lane.log)) else {
            return Ok(());
        };
        for index in 0..state.consumers.len() {
            while state.consumers[index].has_room() {
                let needs_ack = !state.consumers[index].spec.no_ack;
                let Some(claim) = state.consumers[index].spec.channel.claim(needs_ack) else {
                    self.wake();
                    break;
                };
                let offsets = log.offsets();
                let offset = state.consumers[index]
                    .stream_next
                    .max(offsets.log_start_offset);
                if offset >= offsets.log_end_offset {
                    break;
                }
                let bytes = log.read_unsynced(offset, 1)?;
                let record = split_batches(bytes)
                    .map_err(|e| QueueError::Internal(e.to_string()))?
                    .into_iter()
                    .flat_map(|(_, batch)| decode_records(&batch).unwrap_or_default())
                    .find(|record| record.offset >= offset);
                let Some(record) = record else { break };
                let id = MessageId {
                    lane: 0,
                    offset: record.offset,
                };
                let message = Message::from_record(record)?
                    .with_header("x-stream-offset", AMQPValue::LongLongInt(id.offset as i64))?;
                let consumer = &mut state.consumers[index];
                consumer.stream_next = id.offset + 1;
                let channel = Arc::clone(&consumer.spec.channel);
                let tag = Arc::clone(&consumer.spec.tag);
                if needs_ack {
                    consumer.unacked += 1;
                    let holder = Some((channel.connection_id, channel.channel, Arc::clone(&tag)));
                    state.in_flight.insert(id, InFlight { holder, bytes: 0 });
                }
                crate::metrics::count_delivery(&self.spec.vhost, &self.spec.name);
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
