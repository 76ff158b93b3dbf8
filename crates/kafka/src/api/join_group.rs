//! JoinGroup: waits for the rebalance, then gives the leader the members.

use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use weir_core::group::JoinRequest;
use weir_core::CoreError;

use crate::api::{owned, text};
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Joins (or rejoins) the member and answers when the group has a generation.
pub fn handle(
    context: &Arc<Context>,
    request: JoinGroupRequest,
    version: i16,
    client: &Client,
) -> Answer<JoinGroupResponse> {
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: owned(request.group_instance_id.as_ref()),
        client_id: client.client_id.clone(),
        client_host: format!("/{}", client.client_host),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let response = JoinGroupResponse::default().with_generation_id(-1);
        let joined = match context.broker.coordinating(&join.group_id) {
            Ok(groups) => groups.join(join).await,
            Err(error) => Err(error),
        };
        match joined {
            Ok(joined) => {
                let members = joined
                    .members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(text(m.member_id))
                            .with_group_instance_id(m.group_instance_id.map(text))
                            .with_metadata(m.metadata)
                    })
                    .collect();
                let response = response
                    .with_generation_id(joined.generation)
                    .with_protocol_name(joined.protocol_name.map(text))
                    .with_leader(text(joined.leader))
                    .with_member_id(text(joined.member_id))
                    .with_skip_assignment(joined.skip_assignment)
                    .with_members(members);
                if version >= 7 {
                    response.with_protocol_type(joined.protocol_type.map(text))
                } else {
                    response
                }
            }
            Err(CoreError::MemberIdRequired(member_id)) => response
                .with_error_code(errors::code(&CoreError::MemberIdRequired(String::new())))
                .with_member_id(text(member_id)),
            Err(error) => response.with_error_code(errors::code(&error)),
        }
    }))
}
