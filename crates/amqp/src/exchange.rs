//! `exchange.*`: declare, delete, and exchange-to-exchange bind/unbind.

use amq_protocol::protocol::{exchange, AMQPClass};
use weir_core::queues::{Destination, ExchangeKind};

use crate::connection::Connection;
use crate::errors::*;
use crate::frames::put_method;

impl Connection {
    pub(crate) fn exchange_method(
        &mut self,
        channel: u16,
        method: exchange::AMQPMethod,
    ) -> AmqpResult {
        let vhost = self.vhost();
        let (reply, nowait) = match method {
            exchange::AMQPMethod::Declare(declare) => {
                let kind = match ExchangeKind::from_name(declare.kind.as_str()) {
                    Some(kind) => kind,
                    // A passive declare does not check the type.
                    None if declare.passive => ExchangeKind::Direct,
                    None => {
                        return Err(AmqpError::connection(
                            COMMAND_INVALID,
                            format!("unknown exchange type '{}'", declare.kind.as_str()),
                        ))
                    }
                };
                vhost.declare_exchange(
                    declare.exchange.as_str(),
                    kind,
                    declare.passive,
                    declare.durable,
                    declare.auto_delete,
                    declare.internal,
                    declare.arguments,
                )?;
                (
                    exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}),
                    declare.nowait,
                )
            }
            exchange::AMQPMethod::Delete(delete) => {
                vhost.delete_exchange(delete.exchange.as_str(), delete.if_unused)?;
                (
                    exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {}),
                    delete.nowait,
                )
            }
            exchange::AMQPMethod::Bind(bind) => {
                let destination = Destination::Exchange(bind.destination.as_str().to_owned());
                vhost.bind(
                    bind.source.as_str(),
                    destination,
                    bind.routing_key.as_str(),
                    bind.arguments,
                    &self.principal,
                )?;
                (
                    exchange::AMQPMethod::BindOk(exchange::BindOk {}),
                    bind.nowait,
                )
            }
            exchange::AMQPMethod::Unbind(unbind) => {
                let destination = Destination::Exchange(unbind.destination.as_str().to_owned());
                vhost.unbind(
                    unbind.source.as_str(),
                    destination,
                    unbind.routing_key.as_str(),
                    &unbind.arguments,
                    &self.principal,
                )?;
                (
                    exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}),
                    unbind.nowait,
                )
            }
            _ => {
                return Err(AmqpError::connection(
                    COMMAND_INVALID,
                    "unexpected exchange method",
                ))
            }
        };
        if !nowait {
            put_method(&mut self.out, channel, AMQPClass::Exchange(reply));
        }
        Ok(())
    }
}
