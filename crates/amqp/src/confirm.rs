//! `confirm.select` and the `basic.ack` / `basic.nack` confirms it enables.

use amq_protocol::protocol::{basic, confirm, AMQPClass};

use crate::connection::Connection;
use crate::errors::*;
use crate::frames::put_method;

impl Connection {
    pub(crate) fn confirm_method(
        &mut self,
        channel: u16,
        method: confirm::AMQPMethod,
    ) -> AmqpResult {
        let confirm::AMQPMethod::Select(select) = method else {
            return Err(AmqpError::connection(
                COMMAND_INVALID,
                "unexpected confirm method",
            ));
        };
        let open = self.channels.get_mut(&channel).expect("open channel");
        if open.transaction.is_some() {
            return Err(AmqpError::channel(
                PRECONDITION_FAILED,
                "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
            ));
        }
        open.confirm_sequence.get_or_insert(0);
        if !select.nowait {
            put_method(
                &mut self.out,
                channel,
                AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
            );
        }
        Ok(())
    }
}

/// Appends a confirm: `basic.ack` or `basic.nack` for `tag` (and every
/// earlier one with `multiple`).
pub(crate) fn put_confirm(out: &mut Vec<u8>, channel: u16, tag: u64, multiple: bool, ack: bool) {
    let method = if ack {
        basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple,
        })
    } else {
        basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: tag,
            multiple,
            requeue: false,
        })
    };
    put_method(out, channel, AMQPClass::Basic(method));
}
