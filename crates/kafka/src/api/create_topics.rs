//! CreateTopics.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use weir_core::{CoreError, Replication, TopicConfig};

use crate::api::describe_configs::source_code;
use crate::api::text;
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Creates each topic independently; a name given twice fails both times.
pub fn handle(
    context: &Arc<Context>,
    request: CreateTopicsRequest,
    version: i16,
    client: &Client,
) -> Answer<CreateTopicsResponse> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_default() += 1;
    }
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let result = if seen[&name] > 1 {
                Err(CoreError::InvalidRequest(format!(
                    "topic '{name}' appears more than once in the request"
                )))
            } else {
                create(context, topic, request.validate_only, &client.principal)
            };
            respond(context, &name, result, version, &client.principal)
        })
        .collect();
    Answer::Now(CreateTopicsResponse::default().with_topics(topics))
}

fn create(
    context: &Context,
    topic: CreatableTopic,
    validate_only: bool,
    principal: &weir_core::Principal,
) -> Result<weir_core::TopicSummary, CoreError> {
    let mut pairs = Vec::with_capacity(topic.configs.len());
    for config in &topic.configs {
        let value = config.value.as_ref().ok_or_else(|| {
            CoreError::InvalidConfig(format!(
                "{}: a null value cannot be set",
                config.name.as_str()
            ))
        })?;
        pairs.push((config.name.as_str(), value.as_str()));
    }
    let config = TopicConfig::from_pairs(pairs)?;
    let replication = if !topic.assignments.is_empty() {
        let mut assignments = topic.assignments;
        assignments.sort_by_key(|assignment| assignment.partition_index);
        if assignments
            .iter()
            .enumerate()
            .any(|(i, a)| a.partition_index != i as i32)
        {
            return Err(CoreError::InvalidReplicaAssignment(
                "partition indexes must be 0, 1, 2, …".into(),
            ));
        }
        if topic.replication_factor != -1 {
            return Err(CoreError::InvalidRequest(
                "give either a replication factor or a replica assignment, not both".into(),
            ));
        }
        Replication::Assignment(
            assignments
                .into_iter()
                .map(|a| a.broker_ids.into_iter().map(|id| id.0).collect())
                .collect(),
        )
    } else if topic.replication_factor == -1 {
        Replication::Default
    } else {
        Replication::Factor(topic.replication_factor)
    };
    let partitions = (topic.num_partitions != -1).then_some(topic.num_partitions);
    context.broker.create_topic(
        topic.name.0.as_str(),
        partitions,
        replication,
        config,
        validate_only,
        principal,
    )
}

fn respond(
    context: &Context,
    name: &str,
    result: Result<weir_core::TopicSummary, CoreError>,
    version: i16,
    principal: &weir_core::Principal,
) -> CreatableTopicResult {
    let response = CreatableTopicResult::default().with_name(crate::api::topic_name(name));
    match result {
        Ok(summary) => {
            let response = response
                .with_topic_id(summary.id)
                .with_num_partitions(summary.partitions as i32)
                .with_replication_factor(1);
            if version < 5 {
                return response;
            }
            let configs = context
                .broker
                .describe_topic_config(name, principal)
                .unwrap_or_default();
            let configs = configs
                .into_iter()
                .map(|entry| {
                    CreatableTopicConfigs::default()
                        .with_name(text(entry.name))
                        .with_value(Some(text(entry.value)))
                        .with_read_only(entry.read_only)
                        .with_config_source(source_code(entry.source))
                })
                .collect();
            response.with_configs(Some(configs))
        }
        Err(error) => response
            .with_error_code(errors::code(&error))
            .with_error_message(Some(text(error.to_string())))
            .with_num_partitions(-1)
            .with_replication_factor(-1),
    }
}
