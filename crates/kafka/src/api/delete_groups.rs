//! DeleteGroups.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Deletes each group that has no members, with its offsets.
pub fn handle(
    context: &Arc<Context>,
    request: DeleteGroupsRequest,
    _version: i16,
) -> Answer<DeleteGroupsResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let mut results = Vec::with_capacity(request.groups_names.len());
        for group_id in request.groups_names {
            let result = context.broker.delete_group(group_id.0.as_str()).await;
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(result.err().map_or(0, |error| errors::code(&error))),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }))
}
