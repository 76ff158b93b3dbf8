//! `basic.*`: qos, consume, cancel, publish (with returns and confirms),
//! get, ack, reject, nack, recover.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::FieldTable;
use weir_core::queues::args::integer;
use weir_core::queues::{ConsumerSpec, Message, StreamStart};

use crate::channel::PendingPublish;
use crate::connection::{short, Connection, StagedPublish};
use crate::errors::*;
use crate::frames::{put_content, put_method};
use crate::tx::Settle;

impl Connection {
    pub(crate) async fn basic_method(
        &mut self,
        channel: u16,
        method: basic::AMQPMethod,
    ) -> AmqpResult {
        match method {
            basic::AMQPMethod::Qos(qos) => {
                let open = self.channels.get_mut(&channel).expect("open channel");
                if qos.global {
                    open.handle
                        .global_prefetch
                        .store(u32::from(qos.prefetch_count), Ordering::Relaxed);
                    open.wake_consumed_queues();
                } else {
                    open.consumer_prefetch = u32::from(qos.prefetch_count);
                }
                self.reply(channel, basic::AMQPMethod::QosOk(basic::QosOk {}));
                Ok(())
            }
            basic::AMQPMethod::Consume(consume) => self.consume(channel, consume),
            basic::AMQPMethod::Cancel(cancel) => {
                let tag = cancel.consumer_tag.as_str().to_owned();
                let vhost = self.vhost();
                let open = self.channels.get_mut(&channel).expect("open channel");
                if let Some(queue) = open.consumers.remove(&tag) {
                    if queue.cancel(self.id, channel, &tag) {
                        vhost.auto_delete(&queue)?;
                    }
                }
                if !cancel.nowait {
                    self.reply(
                        channel,
                        basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: short(&tag),
                        }),
                    );
                }
                Ok(())
            }
            basic::AMQPMethod::Publish(publish) => {
                if publish.immediate {
                    return Err(AmqpError::connection(NOT_IMPLEMENTED, "immediate=true"));
                }
                let open = self.channels.get_mut(&channel).expect("open channel");
                open.pending = Some(PendingPublish {
                    exchange: publish.exchange.as_str().to_owned(),
                    routing_key: publish.routing_key.as_str().to_owned(),
                    mandatory: publish.mandatory,
                    header: None,
                    body: Default::default(),
                });
                Ok(())
            }
            basic::AMQPMethod::Get(get) => self.get(channel, get),
            basic::AMQPMethod::Ack(ack) => self.settle(
                channel,
                Settle::Ack {
                    tag: ack.delivery_tag,
                    multiple: ack.multiple,
                },
            ),
            basic::AMQPMethod::Reject(reject) => self.settle(
                channel,
                Settle::Reject {
                    tag: reject.delivery_tag,
                    multiple: false,
                    requeue: reject.requeue,
                },
            ),
            basic::AMQPMethod::Nack(nack) => self.settle(
                channel,
                Settle::Reject {
                    tag: nack.delivery_tag,
                    multiple: nack.multiple,
                    requeue: nack.requeue,
                },
            ),
            basic::AMQPMethod::Recover(recover) => {
                self.recover(channel, recover.requeue)?;
                self.reply(channel, basic::AMQPMethod::RecoverOk(basic::RecoverOk {}));
                Ok(())
            }
            basic::AMQPMethod::RecoverAsync(recover) => self.recover(channel, recover.requeue),
            _ => Err(AmqpError::connection(
                COMMAND_INVALID,
                "unexpected basic method",
            )),
        }
    }

    fn reply(&mut self, channel: u16, method: basic::AMQPMethod) {
        put_method(&mut self.out, channel, AMQPClass::Basic(method));
    }

    fn consume(&mut self, channel: u16, consume: basic::Consume) -> AmqpResult {
        let vhost = self.vhost();
        let name = match consume.queue.as_str() {
            "" => self.channels[&channel].last_queue.clone(),
            name => name.to_owned(),
        };
        let queue = vhost.queue(&name, &self.principal)?;
        let tag = match consume.consumer_tag.as_str() {
            "" => format!("amq.ctag-{}", uuid_like()),
            tag => tag.to_owned(),
        };
        let open = self.channels.get_mut(&channel).expect("open channel");
        if open.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(
                NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let spec = ConsumerSpec {
            tag: Arc::from(tag.as_str()),
            channel: Arc::clone(&open.handle),
            no_ack: consume.no_ack,
            exclusive: consume.exclusive,
            priority: consume
                .arguments
                .inner()
                .get("x-priority")
                .and_then(integer)
                .unwrap_or(0) as i32,
            prefetch: open.consumer_prefetch,
            stream_start: Some(stream_start(&consume.arguments)?),
        };
        queue.consume(spec)?;
        open.consumers.insert(tag.clone(), queue);
        if !consume.nowait {
            self.reply(
                channel,
                basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: short(&tag),
                }),
            );
        }
        Ok(())
    }

    fn get(&mut self, channel: u16, get: basic::Get) -> AmqpResult {
        let vhost = self.vhost();
        let name = match get.queue.as_str() {
            "" => self.channels[&channel].last_queue.clone(),
            name => name.to_owned(),
        };
        let queue = vhost.queue(&name, &self.principal)?;
        let open = self.channels.get_mut(&channel).expect("open channel");
        let Some((delivery, remaining)) = queue.get(&open.handle, get.no_ack)? else {
            self.reply(channel, basic::AMQPMethod::GetEmpty(basic::GetEmpty {}));
            return Ok(());
        };
        let tag = open.next_tag();
        let ok = basic::GetOk {
            delivery_tag: tag,
            redelivered: delivery.redelivered,
            exchange: short(&delivery.message.exchange),
            routing_key: short(&delivery.message.routing_key),
            message_count: remaining.min(u64::from(u32::MAX)) as u32,
        };
        put_method(
            &mut self.out,
            channel,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(ok)),
        );
        put_content(
            &mut self.out,
            channel,
            &delivery.message.raw_properties,
            &delivery.message.body,
            self.frame_bytes_max,
        );
        if delivery.needs_ack {
            open.handle.unacked.fetch_add(1, Ordering::Relaxed);
            open.unacked.insert(tag, (delivery.queue, delivery.id));
        }
        Ok(())
    }

    /// Acks, rejects and nacks: buffered in a transaction, else applied now.
    fn settle(&mut self, channel: u16, settle: Settle) -> AmqpResult {
        let open = self.channels.get_mut(&channel).expect("open channel");
        if let Some(transaction) = open.transaction.as_mut() {
            transaction.settles.push(settle);
            return Ok(());
        }
        self.settle_now(channel, settle)
    }

    /// Applies an ack, reject or nack.
    pub(crate) fn settle_now(&mut self, channel: u16, settle: Settle) -> AmqpResult {
        let open = self.channels.get_mut(&channel).expect("open channel");
        let (tag, multiple, requeue) = match settle {
            Settle::Ack { tag, multiple } => (tag, multiple, None),
            Settle::Reject {
                tag,
                multiple,
                requeue,
            } => (tag, multiple, Some(requeue)),
        };
        let Some(groups) = open.take_unacked(tag, multiple) else {
            return Err(AmqpError::channel(
                PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
            ));
        };
        let wake_all = open.handle.global_prefetch.load(Ordering::Relaxed) > 0;
        if wake_all {
            open.wake_consumed_queues();
        }
        for (queue, ids) in groups {
            match requeue {
                // Acks are applied with the others of this read (one write per queue).
                None => self.staged.acks.push((queue, ids)),
                Some(requeue) => queue.reject(&ids, requeue)?,
            }
        }
        Ok(())
    }

    fn recover(&mut self, channel: u16, requeue: bool) -> AmqpResult {
        if !requeue {
            return Err(AmqpError::connection(NOT_IMPLEMENTED, "requeue=false"));
        }
        let open = self.channels.get_mut(&channel).expect("open channel");
        for (queue, ids) in open.take_unacked(0, true).unwrap_or_default() {
            queue.reject(&ids, true)?;
        }
        Ok(())
    }

    /// A complete publish: buffered in a transaction, else routed now.
    pub(crate) async fn publish(
        &mut self,
        channel: u16,
        message: Message,
        mandatory: bool,
    ) -> AmqpResult {
        if let Some(user_id) = message.properties.user_id() {
            if user_id.as_str() != self.user {
                return Err(AmqpError::channel(
                    PRECONDITION_FAILED,
                    format!(
                        "PRECONDITION_FAILED - user_id property set to '{}' but authenticated user was '{}'",
                        user_id.as_str(),
                        self.user
                    ),
                ));
            }
        }
        self.has_published = true;
        let vhost = self.vhost();
        // Routing errors (a missing or internal exchange) come with the publish.
        let queues = vhost.route(&message.exchange, &message, &self.principal)?;
        let open = self.channels.get_mut(&channel).expect("open channel");
        if let Some(transaction) = open.transaction.as_mut() {
            transaction.publishes.push((message, mandatory));
            return Ok(());
        }
        let sequence = open.confirm_sequence.as_mut().map(|sequence| {
            *sequence += 1;
            *sequence
        });
        if mandatory && queues.is_empty() {
            self.put_return(channel, &message);
        }
        self.staged.publishes.push(StagedPublish {
            channel,
            sequence,
            queues,
            message,
        });
        Ok(())
    }

    /// `basic.return` of a mandatory message that reached no queue.
    pub(crate) fn put_return(&mut self, channel: u16, message: &Message) {
        let returned = basic::Return {
            reply_code: NO_ROUTE,
            reply_text: short("NO_ROUTE"),
            exchange: short(&message.exchange),
            routing_key: short(&message.routing_key),
        };
        put_method(
            &mut self.out,
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Return(returned)),
        );
        put_content(
            &mut self.out,
            channel,
            &message.raw_properties,
            &message.body,
            self.frame_bytes_max,
        );
    }
}

/// `x-stream-offset` of `basic.consume`: first, last, next, an offset or a
/// timestamp (default next, as RabbitMQ).
fn stream_start(arguments: &FieldTable) -> AmqpResult<StreamStart> {
    let Some(value) = arguments.inner().get("x-stream-offset") else {
        return Ok(StreamStart::Next);
    };
    weir_core::queues::args::stream_start(value, weir_core::now_ms()).ok_or_else(|| {
        AmqpError::channel(
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - Invalid x-stream-offset value".to_string(),
        )
    })
}

/// 22 URL-safe random characters for server-generated consumer tags.
fn uuid_like() -> String {
    let random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        ^ (std::process::id() as u128) << 64;
    let mixed = random.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..22)
        .map(|i| ALPHABET[((mixed >> (i * 5)) & 63) as usize] as char)
        .collect()
}
