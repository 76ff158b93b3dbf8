//! OffsetDelete.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Deletes some committed offsets of a group without members.
pub fn handle(
    context: &Arc<Context>,
    request: OffsetDeleteRequest,
    _version: i16,
) -> Answer<OffsetDeleteResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let partitions = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index))
            })
            .collect();
        let result = context
            .broker
            .delete_group_offsets(request.group_id.0.as_str(), partitions)
            .await;
        let top = result.as_ref().err().map_or(0, errors::code);
        let code_of = |topic: &str, partition: i32| match &result {
            Ok(results) => results
                .iter()
                .find(|((t, p), _)| t == topic && *p == partition)
                .and_then(|(_, r)| r.as_ref().err())
                .map_or(0, errors::code),
            Err(_) => 0,
        };
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code_of(topic.name.0.as_str(), p.partition_index))
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default()
            .with_error_code(top)
            .with_topics(topics)
    }))
}
