//! Metadata: brokers, topics and partition leaders; may auto-create topics.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use weir_core::{summary, validate_topic_name, CoreError, Topic};

use crate::api::{kafka_nodes, text, topic_name};
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
    let brokers = kafka_nodes(context)
        .into_iter()
        .map(|node| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node.id))
                .with_host(text(node.host))
                .with_port(node.port)
        })
        .collect();
    Answer::Now(
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(text(broker.kafka_cluster_id())))
            .with_controller_id(BrokerId(broker.controller_node()))
            .with_topics(topics),
    )
}

fn describe(context: &Context, topic: &Topic) -> MetadataResponseTopic {
    let broker = &context.broker;
    let facts = summary(topic);
    let partitions = facts
        .leader_epochs
        .iter()
        .enumerate()
        .map(|(index, &epoch)| {
            let replicas: Vec<BrokerId> = broker
                .partition_replicas(&facts.name, index as u32)
                .into_iter()
                .map(BrokerId)
                .collect();
            let answer = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_epoch(epoch)
                .with_replica_nodes(replicas);
            let isr = broker
                .partition_isr(&facts.name, index as u32)
                .into_iter()
                .map(BrokerId)
                .collect();
            match broker.partition_leader(&facts.name, index as u32) {
                Some(leader) => answer.with_leader_id(BrokerId(leader)).with_isr_nodes(isr),
                None => answer
                    .with_leader_id(BrokerId(-1))
                    .with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&facts.name)))
        .with_topic_id(facts.id)
        .with_is_internal(broker.is_internal_topic(&facts.name))
        .with_partitions(partitions)
}

fn failed(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(code)
}
