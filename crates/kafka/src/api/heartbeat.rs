//! Heartbeat.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::api::owned;
use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Keeps the member alive; tells it when the group rebalances.
pub fn handle(
    context: &Arc<Context>,
    request: HeartbeatRequest,
    _version: i16,
) -> Answer<HeartbeatResponse> {
    let instance = owned(request.group_instance_id.as_ref());
    let group_id = request.group_id.0.as_str();
    let result = context.broker.coordinating(group_id).and_then(|groups| {
        groups.heartbeat(
            group_id,
            request.generation_id,
            request.member_id.as_str(),
            instance.as_deref(),
        )
    });
    let code = result.err().map_or(0, |error| errors::code(&error));
    Answer::Now(HeartbeatResponse::default().with_error_code(code))
}
