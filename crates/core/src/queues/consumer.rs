//! Consumers, the channels they deliver through, and what a queue sends to
//! a front-end.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::queues::message::Message;
use crate::queues::queue::Queue;

/// Deliveries a channel may have queued for its socket but not yet written.
/// Past it, queues stop dispatching to the channel (also for no-ack
/// consumers, whose deliveries have no prefetch bound), so a slow reader
/// never grows the broker's memory without limit.
pub const UNSENT_DELIVERIES_MAX: u32 = 2_000;

/// A message's place: its lane (priority level) and offset in that lane's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// Lane index: the priority level (0 for queues without priorities),
    /// or the partition for a queue over a topic and a stream.
    pub lane: u32,
    /// Offset in the lane's log.
    pub offset: u64,
}

/// What a queue asks a connection to send.
// Deliveries are nearly every value sent; boxing them would cost an
// allocation per message to shrink the rare Cancel.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outbound {
    /// A message for a consumer.
    Deliver(Delivery),
    /// The broker cancelled a consumer (its queue went away).
    Cancel {
        /// Channel of the consumer.
        channel: u16,
        /// The consumer's tag.
        consumer_tag: Arc<str>,
    },
}

/// A message handed to a consumer (or to `basic.get`).
#[derive(Debug)]
pub struct Delivery {
    /// Channel it goes out on.
    pub channel: u16,
    /// Tag of the consumer (empty for `basic.get`).
    pub consumer_tag: Arc<str>,
    /// Queue it came from (acks go back there).
    pub queue: Arc<Queue>,
    /// Its place in the queue.
    pub id: MessageId,
    /// Whether it may have been delivered before.
    pub redelivered: bool,
    /// Whether the consumer acknowledges (false: settled on sending).
    pub needs_ack: bool,
    /// The message.
    pub message: Message,
}

/// The delivery side of one channel, shared by the queues it consumes from.
#[derive(Debug)]
pub struct ChannelHandle {
    /// Connection it belongs to (for exclusive queues).
    pub connection_id: u64,
    /// Channel number.
    pub channel: u16,
    sink: mpsc::UnboundedSender<Outbound>,
    /// `channel.flow`: false stops deliveries.
    pub flow_active: AtomicBool,
    /// `basic.qos` with global=true: unacknowledged deliveries at most (0 = no limit).
    pub global_prefetch: AtomicU32,
    /// Unacknowledged deliveries on the channel.
    pub unacked: AtomicU32,
    /// Deliveries handed over but not yet written to the socket.
    pub unsent: AtomicU32,
}

impl ChannelHandle {
    /// A channel delivering into `sink`.
    pub fn new(
        connection_id: u64,
        channel: u16,
        sink: mpsc::UnboundedSender<Outbound>,
    ) -> ChannelHandle {
        ChannelHandle {
            connection_id,
            channel,
            sink,
            flow_active: AtomicBool::new(true),
            global_prefetch: AtomicU32::new(0),
            unacked: AtomicU32::new(0),
            unsent: AtomicU32::new(0),
        }
    }

    /// Whether the channel takes another delivery now.
    pub(crate) fn has_room(&self) -> bool {
        let global = self.global_prefetch.load(Ordering::Relaxed);
        self.flow_active.load(Ordering::Relaxed)
            && (global == 0 || self.unacked.load(Ordering::Relaxed) < global)
            && self.unsent.load(Ordering::Relaxed) < UNSENT_DELIVERIES_MAX
    }

    /// Claims room for one delivery. One that needs an ack is counted as
    /// unacknowledged at once, against the global prefetch, in one atomic
    /// step: queues dispatching to the channel at the same moment cannot
    /// both take its last slot. `None` when the channel is full.
    pub(crate) fn claim(self: &Arc<Self>, needs_ack: bool) -> Option<Claim> {
        if needs_ack {
            let global = self.global_prefetch.load(Ordering::Relaxed);
            self.unacked
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |unacked| {
                    (global == 0 || unacked < global).then_some(unacked + 1)
                })
                .ok()?;
        }
        Some(Claim {
            channel: Arc::clone(self),
            needs_ack,
            sent: false,
        })
    }

    /// Tells the client its consumer was cancelled.
    pub(crate) fn send_cancel(&self, consumer_tag: Arc<str>) {
        let _closed_connection_needs_no_notice = self.sink.send(Outbound::Cancel {
            channel: self.channel,
            consumer_tag,
        });
    }
}

/// Room claimed on a channel for one delivery ([`ChannelHandle::claim`]);
/// given back when dropped without sending.
#[derive(Debug)]
pub(crate) struct Claim {
    channel: Arc<ChannelHandle>,
    needs_ack: bool,
    sent: bool,
}

impl Claim {
    /// Hands the delivery over; false when the connection is gone.
    pub(crate) fn send(mut self, delivery: Delivery) -> bool {
        self.sent = true;
        self.channel.unsent.fetch_add(1, Ordering::Relaxed);
        self.channel.sink.send(Outbound::Deliver(delivery)).is_ok()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.needs_ack && !self.sent {
            self.channel.unacked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Where a stream consumer starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// The oldest message still stored.
    First,
    /// The last chunk written (here: the last message).
    Last,
    /// Only messages published from now on.
    Next,
    /// A given offset.
    Offset(u64),
    /// The first message at or after a time (ms since the epoch).
    Timestamp(i64),
}

/// What `basic.consume` asks for.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Consumer tag (unique on its channel).
    pub tag: Arc<str>,
    /// Channel that receives the deliveries.
    pub channel: Arc<ChannelHandle>,
    /// Deliveries are settled when sent (no acks).
    pub no_ack: bool,
    /// No other consumer may use the queue.
    pub exclusive: bool,
    /// `x-priority`: higher-priority consumers are served first.
    pub priority: i32,
    /// Unacknowledged deliveries at most (0 = no limit).
    pub prefetch: u32,
    /// Streams: where to start.
    pub stream_start: Option<StreamStart>,
}

/// A registered consumer.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) spec: ConsumerSpec,
    pub(crate) unacked: u32,
    /// Streams: where the consumer reads on.
    pub(crate) stream: StreamCursor,
}

/// A stream consumer's place in the topic: the next offset per partition,
/// and records read ahead but not yet delivered.
#[derive(Debug, Default)]
pub(crate) struct StreamCursor {
    /// Next offset to read, by partition.
    pub(crate) next: Vec<u64>,
    /// Partition read next (the consumer takes the partitions in turn).
    pub(crate) turn: usize,
    /// Records read and not yet delivered, with their partition.
    pub(crate) read_ahead: std::collections::VecDeque<(u32, weir_log::batch::StoredRecord)>,
}

impl Consumer {
    /// Whether it takes another delivery now.
    pub(crate) fn has_room(&self) -> bool {
        (self.spec.prefetch == 0 || self.unacked < self.spec.prefetch)
            && self.spec.channel.has_room()
    }

    /// Whether it is `spec`'s consumer (same channel and tag).
    pub(crate) fn is(&self, connection_id: u64, channel: u16, tag: &str) -> bool {
        self.spec.channel.connection_id == connection_id
            && self.spec.channel.channel == channel
            && &*self.spec.tag == tag
    }
}
