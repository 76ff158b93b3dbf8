//! DescribeConfigs for topics and for the broker.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use weir_core::{ConfigEntry, ConfigKind, ConfigSource, CoreError};

use crate::api::{text, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Kafka's `ConfigSource` code.
pub(crate) fn source_code(source: ConfigSource) -> i8 {
    match source {
        ConfigSource::Topic => 1,   // DYNAMIC_TOPIC_CONFIG
        ConfigSource::Broker => 4,  // STATIC_BROKER_CONFIG
        ConfigSource::Default => 5, // DEFAULT_CONFIG
    }
}

fn type_code(kind: ConfigKind) -> i8 {
    match kind {
        ConfigKind::Boolean => 1,
        ConfigKind::String => 2,
        ConfigKind::Int => 3,
        ConfigKind::Long => 5,
    }
}

/// Describes each resource, filtered by the keys asked for.
pub fn handle(
    context: &Arc<Context>,
    request: DescribeConfigsRequest,
    version: i16,
    client: &Client,
) -> Answer<DescribeConfigsResponse> {
    let broker = &context.broker;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.as_str().to_string();
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => broker.describe_topic_config(&name, &client.principal),
                RESOURCE_BROKER if name.is_empty() || name == broker.node_id().to_string() => {
                    Ok(broker.config().entries())
                }
                RESOURCE_BROKER => Err(CoreError::InvalidRequest(format!("no broker '{name}'"))),
                other => Err(CoreError::InvalidRequest(format!(
                    "resource type {other} is not supported"
                ))),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match entries {
                Ok(entries) => {
                    let keys = resource.configuration_keys;
                    let configs = entries
                        .into_iter()
                        .filter(|entry| {
                            keys.as_ref()
                                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == entry.name))
                        })
                        .map(|entry| describe(entry, version, request.include_documentation))
                        .collect();
                    result.with_configs(configs)
                }
                Err(error) => result
                    .with_error_code(errors::code(&error))
                    .with_error_message(Some(text(error.to_string()))),
            }
        })
        .collect();
    Answer::Now(DescribeConfigsResponse::default().with_results(results))
}

fn describe(
    entry: ConfigEntry,
    version: i16,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let result = DescribeConfigsResourceResult::default()
        .with_name(text(entry.name))
        .with_value(Some(text(entry.value)))
        .with_read_only(entry.read_only)
        .with_config_source(source_code(entry.source));
    if version < 3 {
        return result;
    }
    result
        .with_config_type(type_code(entry.kind))
        .with_documentation(include_documentation.then(|| text(entry.documentation)))
}
