//! CreatePartitions.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::api::text;
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Grows each named topic to its requested count.
pub fn handle(
    context: &Arc<Context>,
    request: CreatePartitionsRequest,
    _version: i16,
    client: &Client,
) -> Answer<CreatePartitionsResponse> {
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let assignment: Option<Vec<Vec<i32>>> = topic.assignments.map(|all| {
                all.into_iter()
                    .map(|a| a.broker_ids.into_iter().map(|id| id.0).collect())
                    .collect()
            });
            let result = context.broker.create_partitions(
                topic.name.0.as_str(),
                topic.count,
                assignment.as_deref(),
                request.validate_only,
                &client.principal,
            );
            let response = CreatePartitionsTopicResult::default().with_name(topic.name);
            match result {
                Ok(()) => response,
                Err(error) => response
                    .with_error_code(errors::code(&error))
                    .with_error_message(Some(text(error.to_string()))),
            }
        })
        .collect();
    Answer::Now(CreatePartitionsResponse::default().with_results(results))
}
