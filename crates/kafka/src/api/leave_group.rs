//! LeaveGroup: one member (v0–v2) or several, by id or instance id (v3+).

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use weir_core::CoreError;

use crate::api::owned;
use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Removes the members; the group rebalances.
pub fn handle(
    context: &Arc<Context>,
    request: LeaveGroupRequest,
    version: i16,
) -> Answer<LeaveGroupResponse> {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), owned(m.group_instance_id.as_ref())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let group_id = request.group_id.0.as_str();
    let results = match context.broker.coordinating(group_id) {
        Ok(groups) => groups.leave(group_id, &members),
        Err(_) => members
            .iter()
            .map(|_| Err(CoreError::NotCoordinator))
            .collect(),
    };
    let code = |result: Result<(), weir_core::CoreError>| {
        result.err().map_or(0, |error| errors::code(&error))
    };
    if version < 3 {
        let first = results.into_iter().next().unwrap_or(Ok(()));
        return Answer::Now(LeaveGroupResponse::default().with_error_code(code(first)));
    }
    let responses = request
        .members
        .into_iter()
        .zip(results)
        .map(|(member, result)| {
            MemberResponse::default()
                .with_member_id(member.member_id)
                .with_group_instance_id(member.group_instance_id)
                .with_error_code(code(result))
        })
        .collect();
    Answer::Now(LeaveGroupResponse::default().with_members(responses))
}
