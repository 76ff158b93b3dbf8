//! `tx.*`: publishes, acks and rejects of a transactional channel are held
//! until `tx.commit` (applied, then confirmed once durable) or dropped by
//! `tx.rollback`.

use amq_protocol::protocol::{tx, AMQPClass};
use weir_core::queues::Message;

use crate::connection::Connection;
use crate::errors::*;
use crate::frames::put_method;

/// An ack (`requeue` = None) or reject/nack held by a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settle {
    /// `basic.ack`.
    Ack { tag: u64, multiple: bool },
    /// `basic.reject` / `basic.nack`.
    Reject {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

/// What a transactional channel did since its last commit or rollback.
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    pub(crate) publishes: Vec<(Message, bool)>,
    pub(crate) settles: Vec<Settle>,
}

impl Connection {
    pub(crate) async fn tx_method(&mut self, channel: u16, method: tx::AMQPMethod) -> AmqpResult {
        let open = self.channels.get_mut(&channel).expect("open channel");
        let not_transactional = || {
            AmqpError::channel(
                PRECONDITION_FAILED,
                "PRECONDITION_FAILED - channel is not transactional",
            )
        };
        let reply = match method {
            tx::AMQPMethod::Select(_) => {
                if open.confirm_sequence.is_some() {
                    return Err(AmqpError::channel(
                        PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
                    ));
                }
                open.transaction.get_or_insert_with(Transaction::default);
                tx::AMQPMethod::SelectOk(tx::SelectOk {})
            }
            tx::AMQPMethod::Commit(_) => {
                let transaction =
                    std::mem::take(open.transaction.as_mut().ok_or_else(not_transactional)?);
                let vhost = self.vhost();
                let mut routed = Vec::with_capacity(transaction.publishes.len());
                for (message, mandatory) in &transaction.publishes {
                    let queues = vhost.route(&message.exchange, message, &self.principal)?;
                    if *mandatory && queues.is_empty() {
                        self.put_return(channel, message);
                    }
                    routed.push((queues, message));
                }
                let syncs = vhost.store(&routed, &self.principal)?.syncs;
                for settle in transaction.settles {
                    self.settle_now(channel, settle)?;
                }
                self.flush_staged()?;
                for (log, written) in syncs {
                    log.wait_committed(written)
                        .await
                        .map_err(|e| AmqpError::connection(INTERNAL_ERROR, e.to_string()))?;
                }
                tx::AMQPMethod::CommitOk(tx::CommitOk {})
            }
            tx::AMQPMethod::Rollback(_) => {
                *open.transaction.as_mut().ok_or_else(not_transactional)? = Transaction::default();
                tx::AMQPMethod::RollbackOk(tx::RollbackOk {})
            }
            _ => {
                return Err(AmqpError::connection(
                    COMMAND_INVALID,
                    "unexpected tx method",
                ))
            }
        };
        put_method(&mut self.out, channel, AMQPClass::Tx(reply));
        Ok(())
    }
}
