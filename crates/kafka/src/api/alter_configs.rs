//! AlterConfigs (legacy): replaces all of a topic's overrides.

use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use weir_core::CoreError;

use crate::api::{text, RESOURCE_TOPIC};
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Replaces each topic's overrides with the given set.
pub fn handle(
    context: &Arc<Context>,
    request: AlterConfigsRequest,
    _version: i16,
    client: &Client,
) -> Answer<AlterConfigsResponse> {
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = if resource.resource_type == RESOURCE_TOPIC {
                let pairs: Result<Vec<(String, String)>, CoreError> = resource
                    .configs
                    .iter()
                    .map(|config| match &config.value {
                        Some(value) => Ok((config.name.to_string(), value.to_string())),
                        None => Err(CoreError::InvalidConfig(format!(
                            "{}: a null value cannot be set",
                            config.name.as_str()
                        ))),
                    })
                    .collect();
                pairs.and_then(|pairs| {
                    context.broker.replace_topic_config(
                        resource.resource_name.as_str(),
                        &pairs,
                        request.validate_only,
                        &client.principal,
                    )
                })
            } else {
                Err(static_resource(resource.resource_type))
            };
            respond(resource.resource_type, resource.resource_name, result)
        })
        .collect();
    Answer::Now(AlterConfigsResponse::default().with_responses(responses))
}

/// The error for altering anything but a topic: broker settings are static.
pub(crate) fn static_resource(resource_type: i8) -> CoreError {
    CoreError::InvalidRequest(format!(
        "resource type {resource_type} cannot be altered: only topic configs change at runtime"
    ))
}

fn respond(
    resource_type: i8,
    resource_name: kafka_protocol::protocol::StrBytes,
    result: Result<(), CoreError>,
) -> AlterConfigsResourceResponse {
    let (code, message) = errors::code_and_message(&result);
    AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(resource_name)
        .with_error_code(code)
        .with_error_message(message.map(text))
}
