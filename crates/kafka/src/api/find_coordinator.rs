//! FindCoordinator: the node that coordinates groups and transactional
//! ids — this broker on a single node; in a cluster the leader of the
//! offsets topic, whichever node is asked.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use crate::api::{kafka_nodes, text};
use crate::dispatch::Answer;
use crate::server::Context;

/// Names the coordinator for one key (v0–v3) or many (v4).
pub fn handle(
    context: &Arc<Context>,
    request: FindCoordinatorRequest,
    version: i16,
) -> Answer<FindCoordinatorResponse> {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (error, node, host, port) = coordinator(context);
                Coordinator::default()
                    .with_key(key)
                    .with_error_code(error)
                    .with_node_id(node)
                    .with_host(host)
                    .with_port(port)
            })
            .collect();
        return Answer::Now(FindCoordinatorResponse::default().with_coordinators(coordinators));
    }
    let (error, node, host, port) = coordinator(context);
    Answer::Now(
        FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
    )
}

/// Error code, node id, host and port of the coordinator.
fn coordinator(context: &Context) -> (i16, BrokerId, StrBytes, i32) {
    let chosen = context
        .broker
        .coordinator_node()
        .and_then(|id| kafka_nodes(context).into_iter().find(|node| node.id == id));
    match chosen {
        Some(node) => (0, BrokerId(node.id), text(node.host), node.port),
        None => (
            ResponseError::CoordinatorNotAvailable.code(),
            BrokerId(-1),
            text(""),
            -1,
        ),
    }
}
