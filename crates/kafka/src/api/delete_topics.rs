//! DeleteTopics, by name (v1–v5) or by name or id (v6).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use weir_core::CoreError;

use crate::api::{text, topic_name};
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Deletes each named topic.
pub fn handle(
    context: &Arc<Context>,
    request: DeleteTopicsRequest,
    version: i16,
    client: &Client,
) -> Answer<DeleteTopicsResponse> {
    let broker = &context.broker;
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|topic| (topic.name.map(|name| name.0.to_string()), topic.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| (Some(name.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let (name, id, result) = match name {
                Some(name) => {
                    let id = broker.topic(&name).map(|topic| topic.id()).unwrap_or(id);
                    let result = broker.delete_topic(&name, &client.principal);
                    (
                        Some(name),
                        id,
                        result.map_err(|error| (errors::code(&error), error.to_string())),
                    )
                }
                None => match broker.topic_by_id(id) {
                    Ok(topic) => {
                        let name = topic.name().to_string();
                        let result = broker
                            .delete_topic(&name, &client.principal)
                            .map_err(|error| (errors::code(&error), error.to_string()));
                        (Some(name), id, result)
                    }
                    Err(CoreError::UnknownTopicOrPartition) => (
                        None,
                        id,
                        Err((
                            ResponseError::UnknownTopicId.code(),
                            format!("no topic with id {id}"),
                        )),
                    ),
                    Err(error) => (None, id, Err((errors::code(&error), error.to_string()))),
                },
            };
            let response = DeletableTopicResult::default()
                .with_name(name.as_deref().map(topic_name))
                .with_topic_id(id);
            match result {
                Ok(()) => response,
                Err((code, message)) => response
                    .with_error_code(code)
                    .with_error_message((version >= 5).then(|| text(message))),
            }
        })
        .collect();
    Answer::Now(DeleteTopicsResponse::default().with_responses(responses))
}
