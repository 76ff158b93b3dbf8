//! InitProducerId: a fresh id for an idempotent producer, or the id and a
//! bumped epoch for a transactional one (which fences its predecessor).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Answers `(producer_id, epoch)`.
pub fn handle(
    context: &Arc<Context>,
    request: InitProducerIdRequest,
    _version: i16,
) -> Answer<InitProducerIdResponse> {
    let respond = |result: Result<(i64, i16), weir_core::CoreError>| match result {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(error) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_error_code(errors::code(&error)),
    };
    match request.transactional_id {
        // A fresh id also serves an idempotent producer that asks to bump
        // its epoch (KIP-360): the old id's sequences cannot collide with it.
        None => Answer::Now(respond(context.broker.new_producer_id().map(|id| (id, 0)))),
        Some(transactional_id) => {
            let context = Arc::clone(context);
            Answer::Later(Box::pin(async move {
                respond(
                    context
                        .broker
                        .init_transactional_producer(
                            transactional_id.0.as_str(),
                            request.transaction_timeout_ms,
                        )
                        .await,
                )
            }))
        }
    }
}
