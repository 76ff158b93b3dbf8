//! OffsetCommit: answered once the offsets are durable.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use weir_core::OffsetCommit;

use crate::api::owned;
use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Commits every partition's offset for the group member.
pub fn handle(
    context: &Arc<Context>,
    request: OffsetCommitRequest,
    _version: i16,
) -> Answer<OffsetCommitResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let mut commits = Vec::new();
        for topic in &request.topics {
            for partition in &topic.partitions {
                commits.push(OffsetCommit {
                    partition: (topic.name.0.to_string(), partition.partition_index),
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata: owned(partition.committed_metadata.as_ref()),
                });
            }
        }
        let instance = owned(request.group_instance_id.as_ref());
        let outcome = context
            .broker
            .commit_offsets(
                request.group_id.0.as_str(),
                request.generation_id_or_member_epoch,
                request.member_id.as_str(),
                instance.as_deref(),
                commits,
            )
            .await;
        let code_of = |index: usize| match &outcome {
            Err(error) => errors::code(error),
            Ok(results) => results[index].1.as_ref().err().map_or(0, errors::code),
        };
        let mut index = 0;
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let response = OffsetCommitResponsePartition::default()
                            .with_partition_index(partition.partition_index)
                            .with_error_code(code_of(index));
                        index += 1;
                        response
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }))
}
