//! DescribeGroups.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use crate::api::text;
use crate::dispatch::Answer;
use crate::server::Context;

/// Describes each group; an unknown one is "Dead", as Kafka answers before v6.
pub fn handle(
    context: &Arc<Context>,
    request: DescribeGroupsRequest,
    version: i16,
) -> Answer<DescribeGroupsResponse> {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            let Some(group) = context.broker.describe_group(group_id.0.as_str()) else {
                return described.with_group_state(text("Dead"));
            };
            let members = group
                .members
                .into_iter()
                .map(|m| {
                    let member = DescribedGroupMember::default()
                        .with_member_id(text(m.member_id))
                        .with_client_id(text(m.client_id))
                        .with_client_host(text(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if version >= 4 {
                        member.with_group_instance_id(m.group_instance_id.map(text))
                    } else {
                        member
                    }
                })
                .collect();
            described
                .with_group_state(text(group.state.name()))
                .with_protocol_type(text(group.protocol_type))
                .with_protocol_data(text(group.protocol_name))
                .with_members(members)
        })
        .collect();
    Answer::Now(DescribeGroupsResponse::default().with_groups(groups))
}
