//! FindCoordinator: this broker coordinates every group (and would every
//! transaction) — it is the whole cluster.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use crate::api::text;
use crate::dispatch::Answer;
use crate::server::Context;

/// Names this broker, for one key (v0–v3) or many (v4).
pub fn handle(
    context: &Arc<Context>,
    request: FindCoordinatorRequest,
    version: i16,
) -> Answer<FindCoordinatorResponse> {
    let node = BrokerId(context.broker.node_id());
    let host = text(context.config.advertised_host.clone());
    let port = i32::from(context.config.advertised_port);
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        return Answer::Now(FindCoordinatorResponse::default().with_coordinators(coordinators));
    }
    Answer::Now(
        FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
    )
}
