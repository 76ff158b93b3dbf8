//! ListGroups.

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use crate::api::text;
use crate::dispatch::Answer;
use crate::server::Context;

/// Lists every group, filtered by state when asked (v4+).
pub fn handle(
    context: &Arc<Context>,
    request: ListGroupsRequest,
    version: i16,
) -> Answer<ListGroupsResponse> {
    let groups = context
        .broker
        .list_groups()
        .into_iter()
        .filter(|group| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|state| state.as_str().eq_ignore_ascii_case(group.state.name()))
        })
        .map(|group| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(text(group.group_id)))
                .with_protocol_type(text(group.protocol_type));
            if version >= 4 {
                listed.with_group_state(text(group.state.name()))
            } else {
                listed
            }
        })
        .collect();
    Answer::Now(ListGroupsResponse::default().with_groups(groups))
}
