//! Channels: `channel.*` methods, per-channel state (delivery tags,
//! unacknowledged deliveries, consumers, a publish being assembled from its
//! frames, confirm and transaction mode), and routing each method to its
//! class's handler. A channel exception closes only its channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, AMQPClass};
use bytes::{Bytes, BytesMut};
use weir_core::queues::{ChannelHandle, Delivery, Message, MessageId, Queue, VirtualHost};
use weir_core::Escaped;

use crate::connection::{short, Connection};
use crate::errors::*;
use crate::frames::{self, put_content, put_method, BASIC_CLASS};
use crate::tx::Transaction;

/// A `basic.publish` waiting for its content header and body.
#[derive(Debug)]
pub(crate) struct PendingPublish {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) mandatory: bool,
    /// Raw properties, decoded properties and announced body size, once the
    /// header frame arrived.
    pub(crate) header: Option<(Bytes, AMQPProperties, u64)>,
    pub(crate) body: BytesMut,
}

/// State of one open channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) handle: Arc<ChannelHandle>,
    /// The broker sent `channel.close`; everything but close(-ok) is ignored.
    pub(crate) closing: bool,
    next_delivery_tag: u64,
    /// Unacknowledged deliveries by tag.
    pub(crate) unacked: BTreeMap<u64, (Arc<Queue>, MessageId)>,
    /// Consumers by tag.
    pub(crate) consumers: HashMap<String, Arc<Queue>>,
    /// `basic.qos` prefetch for consumers created from now on (global=false).
    pub(crate) consumer_prefetch: u32,
    /// The last queue declared on the channel (the "" queue name).
    pub(crate) last_queue: String,
    pub(crate) pending: Option<PendingPublish>,
    /// Confirm mode: the sequence number of the last publish.
    pub(crate) confirm_sequence: Option<u64>,
    pub(crate) transaction: Option<Transaction>,
}

impl Channel {
    fn new(handle: Arc<ChannelHandle>) -> Channel {
        Channel {
            handle,
            closing: false,
            next_delivery_tag: 1,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            consumer_prefetch: 0,
            last_queue: String::new(),
            pending: None,
            confirm_sequence: None,
            transaction: None,
        }
    }

    /// The next delivery tag.
    pub(crate) fn next_tag(&mut self) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        tag
    }

    /// Writes `basic.deliver` and the content; remembers the tag.
    pub(crate) fn write_delivery(
        &mut self,
        out: &mut Vec<u8>,
        delivery: Delivery,
        frame_bytes_max: usize,
    ) {
        let tag = self.next_tag();
        let message = &delivery.message;
        let deliver = basic::Deliver {
            consumer_tag: short(&delivery.consumer_tag),
            delivery_tag: tag,
            redelivered: delivery.redelivered,
            exchange: short(&message.exchange),
            routing_key: short(&message.routing_key),
        };
        put_method(
            out,
            delivery.channel,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)),
        );
        put_content(
            out,
            delivery.channel,
            &message.raw_properties,
            &message.body,
            frame_bytes_max,
        );
        if delivery.needs_ack {
            self.unacked.insert(tag, (delivery.queue, delivery.id));
        }
    }

    /// Wakes the queues this channel consumes from (credit came back).
    pub(crate) fn wake_consumed_queues(&self) {
        for queue in self.consumers.values() {
            queue.wake();
        }
    }

    /// Takes the unacknowledged deliveries with tag `tag` (all up to it with
    /// `multiple`; all with `multiple` and tag 0), grouped by queue.
    pub(crate) fn take_unacked(
        &mut self,
        tag: u64,
        multiple: bool,
    ) -> Option<Vec<(Arc<Queue>, Vec<MessageId>)>> {
        let taken: Vec<(Arc<Queue>, MessageId)> = if multiple {
            let upper = if tag == 0 { u64::MAX } else { tag };
            let keys: Vec<u64> = self.unacked.range(..=upper).map(|(&k, _)| k).collect();
            if keys.is_empty() && tag != 0 {
                return None;
            }
            keys.into_iter()
                .filter_map(|k| self.unacked.remove(&k))
                .collect()
        } else {
            vec![self.unacked.remove(&tag)?]
        };
        self.handle
            .unacked
            .fetch_sub(taken.len() as u32, Ordering::Relaxed);
        Some(group_by_queue(taken))
    }

    /// Requeues everything unacknowledged and removes every consumer
    /// (channel or connection closing).
    pub(crate) fn release(&mut self, vhost: Option<&VirtualHost>) {
        self.closing = true;
        self.pending = None;
        let all = std::mem::take(&mut self.unacked).into_values().collect();
        for (queue, ids) in group_by_queue(all) {
            if let Err(error) = queue.reject(&ids, true) {
                tracing::error!(queue = %Escaped(queue.name()), error = %Escaped(&error), "requeue on channel close failed");
            }
        }
        self.handle.unacked.store(0, Ordering::Relaxed);
        for (tag, queue) in self.consumers.drain() {
            if queue.cancel(self.handle.connection_id, self.handle.channel, &tag) {
                if let Some(vhost) = vhost {
                    if let Err(error) = vhost.auto_delete(&queue) {
                        tracing::error!(queue = %Escaped(queue.name()), error = %Escaped(&error), "auto-delete failed");
                    }
                }
            }
        }
    }
}

/// Deliveries grouped by their queue, in tag order within each.
pub(crate) fn group_by_queue(
    deliveries: Vec<(Arc<Queue>, MessageId)>,
) -> Vec<(Arc<Queue>, Vec<MessageId>)> {
    let mut groups: Vec<(Arc<Queue>, Vec<MessageId>)> = Vec::new();
    for (queue, id) in deliveries {
        match groups.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &queue)) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((queue, vec![id])),
        }
    }
    groups
}

impl Connection {
    /// Routes a method on channel `number` to its class's handler; a channel
    /// exception closes that channel only.
    pub(crate) async fn channel_method(&mut self, number: u16, method: AMQPClass) -> AmqpResult {
        let class_id = method.get_amqp_class_id();
        let method_id = method.get_amqp_method_id();
        if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = method {
            return self.open_channel(number);
        }
        let Some(open) = self.channels.get_mut(&number) else {
            return Err(AmqpError::connection(
                CHANNEL_ERROR,
                "expected 'channel.open'",
            ));
        };
        if open.closing {
            match method {
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&number);
                }
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    self.channels.remove(&number);
                    put_method(
                        &mut self.out,
                        number,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                }
                _ => {}
            }
            return Ok(());
        }
        if open.pending.is_some() {
            return Err(AmqpError::connection(
                UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
            ));
        }
        let result = match method {
            AMQPClass::Channel(method) => self.channel_class(number, method),
            AMQPClass::Exchange(method) => self.exchange_method(number, method),
            AMQPClass::Queue(method) => self.queue_method(number, method),
            AMQPClass::Basic(method) => self.basic_method(number, method).await,
            AMQPClass::Confirm(method) => self.confirm_method(number, method),
            AMQPClass::Tx(method) => self.tx_method(number, method).await,
            AMQPClass::Access(_) => {
                let ok = amq_protocol::protocol::access::RequestOk {};
                put_method(
                    &mut self.out,
                    number,
                    AMQPClass::Access(amq_protocol::protocol::access::AMQPMethod::RequestOk(ok)),
                );
                Ok(())
            }
            AMQPClass::Connection(_) => Err(AmqpError::connection(
                COMMAND_INVALID,
                "connection method on a channel other than 0",
            )),
        };
        match result {
            Err(error) if !error.connection => {
                self.close_channel(number, error, class_id, method_id);
                Ok(())
            }
            other => other,
        }
    }

    fn open_channel(&mut self, number: u16) -> AmqpResult {
        if self.channels.contains_key(&number) {
            return Err(AmqpError::connection(
                CHANNEL_ERROR,
                "second 'channel.open' seen",
            ));
        }
        if number > self.channel_max() {
            return Err(AmqpError::connection(
                CHANNEL_ERROR,
                format!(
                    "channel number {number} exceeds channel_max {}",
                    self.channel_max()
                ),
            ));
        }
        let handle = Arc::new(ChannelHandle::new(
            self.id,
            number,
            self.outbound_sender.clone(),
        ));
        self.channels.insert(number, Channel::new(handle));
        put_method(
            &mut self.out,
            number,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        );
        Ok(())
    }

    /// Sends `channel.close` for a channel exception and releases the channel.
    fn close_channel(&mut self, number: u16, error: AmqpError, class_id: u16, method_id: u16) {
        tracing::info!(connection = self.id, channel = number, code = error.code, text = %Escaped(&error.text), "AMQP channel error");
        let close = channel::Close {
            reply_code: error.code,
            reply_text: short(&error.text),
            class_id,
            method_id,
        };
        put_method(
            &mut self.out,
            number,
            AMQPClass::Channel(channel::AMQPMethod::Close(close)),
        );
        let vhost = self.vhost.clone();
        if let Some(open) = self.channels.get_mut(&number) {
            open.release(vhost.as_deref());
        }
    }

    fn channel_class(&mut self, number: u16, method: channel::AMQPMethod) -> AmqpResult {
        match method {
            channel::AMQPMethod::Close(_) => {
                let vhost = self.vhost.clone();
                if let Some(mut open) = self.channels.remove(&number) {
                    open.release(vhost.as_deref());
                }
                put_method(
                    &mut self.out,
                    number,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            channel::AMQPMethod::Flow(flow) => {
                let open = self
                    .channels
                    .get_mut(&number)
                    .expect("checked by the caller");
                open.handle
                    .flow_active
                    .store(flow.active, Ordering::Relaxed);
                if flow.active {
                    open.wake_consumed_queues();
                }
                let ok = channel::FlowOk {
                    active: flow.active,
                };
                put_method(
                    &mut self.out,
                    number,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(ok)),
                );
                Ok(())
            }
            channel::AMQPMethod::FlowOk(_) | channel::AMQPMethod::CloseOk(_) => Ok(()),
            channel::AMQPMethod::Open(_) | channel::AMQPMethod::OpenOk(_) => Err(
                AmqpError::connection(COMMAND_INVALID, "unexpected channel method"),
            ),
        }
    }

    /// A content header or body frame of the publish being assembled.
    pub(crate) async fn content_frame(
        &mut self,
        number: u16,
        kind: u8,
        payload: Bytes,
    ) -> AmqpResult {
        let message_bytes_max = self.config.message_bytes_max;
        let Some(open) = self.channels.get_mut(&number) else {
            return Err(AmqpError::connection(
                CHANNEL_ERROR,
                "expected 'channel.open'",
            ));
        };
        if open.closing {
            return Ok(());
        }
        let unexpected = || {
            AmqpError::connection(
                UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            )
        };
        let pending = open.pending.as_mut().ok_or_else(unexpected)?;
        match (kind, &pending.header) {
            (frames::HEADER, None) => {
                let header = match parse_content_header(&payload[..]) {
                    Ok((rest, header)) if rest.is_empty() && header.class_id == BASIC_CLASS => {
                        header
                    }
                    _ => {
                        return Err(AmqpError::connection(
                            SYNTAX_ERROR,
                            "cannot decode content header",
                        ))
                    }
                };
                if header.body_size > message_bytes_max {
                    open.pending = None;
                    let text = format!(
                        "PRECONDITION_FAILED - message size {} is larger than configured max size {message_bytes_max}",
                        header.body_size
                    );
                    let error = AmqpError::channel(PRECONDITION_FAILED, text);
                    self.close_channel(number, error, BASIC_CLASS, 40);
                    return Ok(());
                }
                pending.header = Some((payload.slice(12..), header.properties, header.body_size));
                pending.body.reserve(header.body_size.min(1 << 20) as usize);
            }
            (frames::BODY, Some((_, _, size))) => {
                if pending.body.len() + payload.len() > *size as usize {
                    return Err(AmqpError::connection(
                        FRAME_ERROR,
                        "body frames exceed the announced body size",
                    ));
                }
                pending.body.extend_from_slice(&payload);
            }
            _ => return Err(unexpected()),
        }
        let complete =
            matches!(&pending.header, Some((_, _, size)) if pending.body.len() as u64 == *size);
        if !complete {
            return Ok(());
        }
        let pending = open.pending.take().expect("checked above");
        let (raw_properties, properties, _) = pending.header.expect("complete implies a header");
        let message = Message::new(
            pending.exchange,
            pending.routing_key,
            raw_properties,
            properties,
            pending.body.freeze(),
            weir_core::now_ms(),
        );
        let result = self.publish(number, message, pending.mandatory).await;
        match result {
            Err(error) if !error.connection => {
                self.close_channel(number, error, BASIC_CLASS, 40);
                Ok(())
            }
            other => other,
        }
    }
}
