//! AddOffsetsToTxn.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Adds the group to the producer's transaction.
pub fn handle(
    context: &Arc<Context>,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> Answer<AddOffsetsToTxnResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let result = context
            .broker
            .add_offsets_to_transaction(
                request.transactional_id.0.as_str(),
                request.producer_id.0,
                request.producer_epoch,
                request.group_id.0.as_str(),
            )
            .await;
        AddOffsetsToTxnResponse::default().with_error_code(
            result
                .err()
                .map_or(0, |error| errors::transactional_code(&error, version)),
        )
    }))
}
