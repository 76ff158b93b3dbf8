//! Metadata: brokers, topics and partition leaders; may auto-create topics.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use weir_core::{summary, validate_topic_name, CoreError, Topic};

use crate::api::{text, topic_name};
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Describes the requested topics (all of them when none are named).
pub fn handle(
    context: &Arc<Context>,
    request: MetadataRequest,
    version: i16,
    client: &Client,
) -> Answer<MetadataResponse> {
    let broker = &context.broker;
    // v0 asks for every topic with an empty list; later versions with null.
    let all_topics = request
        .topics
        .as_ref()
        .is_none_or(|topics| version == 0 && topics.is_empty());
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    let topics = if all_topics {
        broker
            .topics()
            .iter()
            .map(|topic| describe(context, topic))
            .collect()
    } else {
        request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => {
                    let name = name.0.as_str();
                    let found = validate_topic_name(name).and_then(|()| {
                        broker.topic_or_create(name, allow_create, &client.principal)
                    });
                    match found {
                        Ok(topic) => describe(context, &topic),
                        Err(error) => failed(name, errors::code(&error)),
                    }
                }
                None => match broker.topic_by_id(wanted.topic_id) {
                    Ok(topic) => describe(context, &topic),
                    Err(CoreError::UnknownTopicOrPartition) => MetadataResponseTopic::default()
                        .with_topic_id(wanted.topic_id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                    Err(error) => failed("", errors::code(&error)),
                },
            })
            .collect()
    };
    let node = MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.node_id()))
        .with_host(text(context.config.advertised_host.clone()))
        .with_port(i32::from(context.config.advertised_port));
    Answer::Now(
        MetadataResponse::default()
            .with_brokers(vec![node])
            .with_cluster_id(Some(text(broker.cluster_id())))
            .with_controller_id(BrokerId(broker.node_id()))
            .with_topics(topics),
    )
}

fn describe(context: &Context, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(context.broker.node_id());
    let facts = summary(topic);
    let partitions = facts
        .leader_epochs
        .iter()
        .enumerate()
        .map(|(index, &epoch)| {
            MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(node)
                .with_leader_epoch(epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&facts.name)))
        .with_topic_id(facts.id)
        .with_partitions(partitions)
}

fn failed(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(code)
}
