//! SyncGroup: relays the leader's assignment to each member.

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use crate::api::{owned, text};
use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Answers with the member's assignment once the leader has sent them all.
pub fn handle(
    context: &Arc<Context>,
    request: SyncGroupRequest,
    version: i16,
) -> Answer<SyncGroupResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let assignments = request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect();
        let instance = owned(request.group_instance_id.as_ref());
        let protocol_type = owned(request.protocol_type.as_ref());
        let protocol_name = owned(request.protocol_name.as_ref());
        let group_id = request.group_id.0.as_str();
        let result = match context.broker.coordinating(group_id) {
            Ok(groups) => {
                groups
                    .sync(
                        group_id,
                        request.generation_id,
                        request.member_id.as_str(),
                        instance.as_deref(),
                        (protocol_type.as_deref(), protocol_name.as_deref()),
                        assignments,
                    )
                    .await
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(synced) => {
                let response = SyncGroupResponse::default().with_assignment(synced.assignment);
                if version >= 5 {
                    response
                        .with_protocol_type(synced.protocol_type.map(text))
                        .with_protocol_name(synced.protocol_name.map(text))
                } else {
                    response
                }
            }
            Err(error) => SyncGroupResponse::default().with_error_code(errors::code(&error)),
        }
    }))
}
