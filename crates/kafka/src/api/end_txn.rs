//! EndTxn: commit or abort.

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Ends the producer's transaction; answers once every marker is durable.
pub fn handle(
    context: &Arc<Context>,
    request: EndTxnRequest,
    version: i16,
) -> Answer<EndTxnResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let result = context
            .broker
            .end_transaction(
                request.transactional_id.0.as_str(),
                request.producer_id.0,
                request.producer_epoch,
                request.committed,
            )
            .await;
        EndTxnResponse::default().with_error_code(
            result
                .err()
                .map_or(0, |error| errors::transactional_code(&error, version)),
        )
    }))
}
