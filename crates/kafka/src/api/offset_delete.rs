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
        let (top, each) = match &result {
            Err(error @ weir_core::CoreError::GroupSubscribedToTopic) => (0, errors::code(error)),
            Err(error) => (errors::code(error), 0),
            Ok(()) => (0, 0),
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
                            .with_error_code(each)
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
