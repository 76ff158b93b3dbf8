//! IncrementalAlterConfigs: set or delete individual topic settings.

use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use weir_core::{ConfigChange, CoreError};

use crate::api::alter_configs::static_resource;
use crate::api::{text, RESOURCE_TOPIC};
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

const SET: i8 = 0;
const DELETE: i8 = 1;

/// Applies each resource's changes, all or nothing per resource.
pub fn handle(
    context: &Arc<Context>,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
    client: &Client,
) -> Answer<IncrementalAlterConfigsResponse> {
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = if resource.resource_type == RESOURCE_TOPIC {
                let changes: Result<Vec<(String, ConfigChange)>, CoreError> = resource
                    .configs
                    .iter()
                    .map(|config| {
                        let change = match (config.config_operation, &config.value) {
                            (SET, Some(value)) => ConfigChange::Set(value.to_string()),
                            (SET, None) => {
                                return Err(CoreError::InvalidConfig(format!(
                                    "{}: a null value cannot be set",
                                    config.name.as_str()
                                )))
                            }
                            (DELETE, _) => ConfigChange::Delete,
                            (operation, _) => {
                                // APPEND and SUBTRACT apply to list settings; Weir's
                                // only list setting (cleanup.policy) has one valid value.
                                return Err(CoreError::InvalidConfig(format!(
                                    "{}: operation {operation} is not supported; use SET or DELETE",
                                    config.name.as_str()
                                )));
                            }
                        };
                        Ok((config.name.to_string(), change))
                    })
                    .collect();
                changes.and_then(|changes| {
                    context.broker.alter_topic_config(
                        resource.resource_name.as_str(),
                        &changes,
                        request.validate_only,
                        &client.principal,
                    )
                })
            } else {
                Err(static_resource(resource.resource_type))
            };
            let (code, message) = errors::code_and_message(&result);
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(message.map(text))
        })
        .collect();
    Answer::Now(IncrementalAlterConfigsResponse::default().with_responses(responses))
}
