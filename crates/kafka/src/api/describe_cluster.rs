//! DescribeCluster: the live nodes, the controller and the cluster id.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use crate::api::{kafka_nodes, text};
use crate::dispatch::Answer;
use crate::server::Context;

/// Lists the nodes clients may use (this broker alone on a single node).
pub fn handle(
    context: &Arc<Context>,
    _request: DescribeClusterRequest,
    _version: i16,
) -> Answer<DescribeClusterResponse> {
    let broker = &context.broker;
    let brokers = kafka_nodes(context)
        .into_iter()
        .map(|node| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(node.id))
                .with_host(text(node.host))
                .with_port(node.port)
        })
        .collect();
    Answer::Now(
        DescribeClusterResponse::default()
            .with_cluster_id(text(broker.kafka_cluster_id()))
            .with_controller_id(BrokerId(broker.controller_node()))
            .with_brokers(brokers),
    )
}
