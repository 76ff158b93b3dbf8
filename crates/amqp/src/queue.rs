//! `queue.*`: declare, bind, unbind, purge, delete.

use amq_protocol::protocol::{queue, AMQPClass};
use weir_core::queues::Destination;

use crate::connection::{short, Connection};
use crate::errors::*;
use crate::frames::put_method;

impl Connection {
    /// The queue a method names; "" means the channel's last declared queue.
    fn queue_name(&self, channel: u16, name: &str) -> AmqpResult<String> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        let last = &self.channels[&channel].last_queue;
        if last.is_empty() {
            return Err(AmqpError::connection(
                NOT_ALLOWED,
                "no previously declared queue",
            ));
        }
        Ok(last.clone())
    }

    pub(crate) fn queue_method(&mut self, channel: u16, method: queue::AMQPMethod) -> AmqpResult {
        let vhost = self.vhost();
        let (reply, nowait) = match method {
            queue::AMQPMethod::Declare(declare) => {
                let declared = vhost.declare_queue(
                    declare.queue.as_str(),
                    declare.passive,
                    declare.durable,
                    declare.exclusive,
                    declare.auto_delete,
                    declare.arguments,
                    &self.principal,
                )?;
                self.channels
                    .get_mut(&channel)
                    .expect("open channel")
                    .last_queue = declared.name.clone();
                let ok = queue::DeclareOk {
                    queue: short(&declared.name),
                    message_count: declared.message_count.min(u64::from(u32::MAX)) as u32,
                    consumer_count: declared.consumer_count,
                };
                (queue::AMQPMethod::DeclareOk(ok), declare.nowait)
            }
            queue::AMQPMethod::Bind(bind) => {
                let name = self.queue_name(channel, bind.queue.as_str())?;
                vhost.bind(
                    bind.exchange.as_str(),
                    Destination::Queue(name),
                    bind.routing_key.as_str(),
                    bind.arguments,
                    &self.principal,
                )?;
                (queue::AMQPMethod::BindOk(queue::BindOk {}), bind.nowait)
            }
            queue::AMQPMethod::Unbind(unbind) => {
                let name = self.queue_name(channel, unbind.queue.as_str())?;
                vhost.unbind(
                    unbind.exchange.as_str(),
                    Destination::Queue(name),
                    unbind.routing_key.as_str(),
                    &unbind.arguments,
                    &self.principal,
                )?;
                (queue::AMQPMethod::UnbindOk(queue::UnbindOk {}), false)
            }
            queue::AMQPMethod::Purge(purge) => {
                let name = self.queue_name(channel, purge.queue.as_str())?;
                let count = vhost.queue(&name, &self.principal)?.purge()?;
                let ok = queue::PurgeOk {
                    message_count: count.min(u64::from(u32::MAX)) as u32,
                };
                (queue::AMQPMethod::PurgeOk(ok), purge.nowait)
            }
            queue::AMQPMethod::Delete(delete) => {
                let name = self.queue_name(channel, delete.queue.as_str())?;
                let count = vhost.delete_queue(
                    &name,
                    delete.if_unused,
                    delete.if_empty,
                    &self.principal,
                )?;
                let ok = queue::DeleteOk {
                    message_count: count.min(u64::from(u32::MAX)) as u32,
                };
                (queue::AMQPMethod::DeleteOk(ok), delete.nowait)
            }
            _ => {
                return Err(AmqpError::connection(
                    COMMAND_INVALID,
                    "unexpected queue method",
                ))
            }
        };
        if !nowait {
            put_method(&mut self.out, channel, AMQPClass::Queue(reply));
        }
        Ok(())
    }
}
