//! DescribeCluster: this broker as the whole cluster.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use crate::api::text;
use crate::dispatch::Answer;
use crate::server::Context;

/// Lists the one broker and the cluster id.
pub fn handle(
    context: &Arc<Context>,
    _request: DescribeClusterRequest,
    _version: i16,
) -> Answer<DescribeClusterResponse> {
    let broker = &context.broker;
    let node = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.node_id()))
        .with_host(text(context.config.advertised_host.clone()))
        .with_port(i32::from(context.config.advertised_port));
    Answer::Now(
        DescribeClusterResponse::default()
            .with_cluster_id(text(broker.cluster_id()))
            .with_controller_id(BrokerId(broker.node_id()))
            .with_brokers(vec![node]),
    )
}
