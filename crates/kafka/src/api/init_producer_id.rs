//! InitProducerId for idempotent producers. Transactional ids are refused
//! until transactions exist.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Gives the producer a fresh id at epoch 0.
pub fn handle(
    context: &Arc<Context>,
    request: InitProducerIdRequest,
    _version: i16,
) -> Answer<InitProducerIdResponse> {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        tracing::info!(
            "refused InitProducerId with a transactional id: transactions are not supported yet"
        );
        return Answer::Now(response.with_error_code(ResponseError::InvalidRequest.code()));
    }
    // A fresh id also serves a producer that asks to bump its epoch (KIP-360):
    // the old id's sequences can no longer collide with the new one's.
    match context.broker.new_producer_id() {
        Ok(id) => Answer::Now(
            response
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
        ),
        Err(error) => Answer::Now(response.with_error_code(errors::code(&error))),
    }
}
