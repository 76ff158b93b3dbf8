//! OffsetFetch: one group (v1–v7) or several (v8). With `require_stable`,
//! a partition whose offset a transaction has yet to commit answers
//! UNSTABLE_OFFSET_COMMIT, so the consumer waits instead of rewinding.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use weir_core::group::{CommittedOffset, TopicPartition};

use crate::api::{text, topic_name};
use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// A partition's answer: offset, leader epoch, metadata, error code.
type PartitionAnswer = (i32, i64, i32, String, i16);

/// Answers the committed offsets asked for (all of a group's when no topics are named).
pub fn handle(
    context: &Arc<Context>,
    request: OffsetFetchRequest,
    version: i16,
) -> Answer<OffsetFetchResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        if version >= 8 {
            let mut groups = Vec::with_capacity(request.groups.len());
            for group in request.groups {
                if let Err(error) = context.broker.coordinating(group.group_id.0.as_str()) {
                    groups.push(
                        OffsetFetchResponseGroup::default()
                            .with_group_id(group.group_id)
                            .with_error_code(errors::code(&error)),
                    );
                    continue;
                }
                let wanted = group.topics.map(|topics| {
                    wanted_partitions(topics.into_iter().map(|t| (t.name, t.partition_indexes)))
                });
                let topics = answer(
                    &context,
                    group.group_id.0.as_str(),
                    wanted,
                    request.require_stable,
                )
                .await
                .into_iter()
                .map(|(name, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|(index, offset, epoch, metadata, code)| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(index)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(text(metadata)))
                                .with_error_code(code)
                        })
                        .collect();
                    OffsetFetchResponseTopics::default()
                        .with_name(topic_name(&name))
                        .with_partitions(partitions)
                })
                .collect();
                groups.push(
                    OffsetFetchResponseGroup::default()
                        .with_group_id(group.group_id)
                        .with_topics(topics),
                );
            }
            return OffsetFetchResponse::default().with_groups(groups);
        }
        if let Err(error) = context.broker.coordinating(request.group_id.0.as_str()) {
            // v1 has no group-level code: each partition asked for carries it.
            let code = errors::code(&error);
            let topics = request
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|topic| {
                    let partitions = topic
                        .partition_indexes
                        .iter()
                        .map(|&index| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(-1)
                                .with_error_code(code)
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(topic.name)
                        .with_partitions(partitions)
                })
                .collect();
            return OffsetFetchResponse::default()
                .with_error_code(code)
                .with_topics(topics);
        }
        let wanted = request.topics.map(|topics| {
            wanted_partitions(topics.into_iter().map(|t| (t.name, t.partition_indexes)))
        });
        let topics = answer(
            &context,
            request.group_id.0.as_str(),
            wanted,
            request.require_stable,
        )
        .await
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, offset, epoch, metadata, code)| {
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_metadata(Some(text(metadata)))
                        .with_error_code(code);
                    if version >= 5 {
                        partition.with_committed_leader_epoch(epoch)
                    } else {
                        partition
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }))
}

fn wanted_partitions(topics: impl Iterator<Item = (TopicName, Vec<i32>)>) -> Vec<TopicPartition> {
    topics
        .flat_map(|(name, partitions)| {
            let name = name.0.to_string();
            partitions.into_iter().map(move |p| (name.clone(), p))
        })
        .collect()
}

/// The group's offsets by topic, marking those a transaction holds when
/// `require_stable` asks for it.
async fn answer(
    context: &Context,
    group_id: &str,
    wanted: Option<Vec<TopicPartition>>,
    require_stable: bool,
) -> Vec<(String, Vec<PartitionAnswer>)> {
    let unstable: HashSet<TopicPartition> = if require_stable {
        context
            .broker
            .offsets_pending_in_transactions(group_id)
            .await
    } else {
        HashSet::new()
    };
    let mut topics: Vec<(String, Vec<PartitionAnswer>)> = Vec::new();
    for ((topic, partition), committed) in context.broker.fetch_offsets(group_id, wanted) {
        let answer = if unstable.contains(&(topic.clone(), partition)) {
            (
                partition,
                -1,
                -1,
                String::new(),
                ResponseError::UnstableOffsetCommit.code(),
            )
        } else {
            let (offset, epoch, metadata) = fields(committed);
            (partition, offset, epoch, metadata, 0)
        };
        match topics.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, partitions)) => partitions.push(answer),
            None => topics.push((topic, vec![answer])),
        }
    }
    topics
}

/// Offset, leader epoch and metadata; -1/-1/"" when nothing was committed.
fn fields(committed: Option<CommittedOffset>) -> (i64, i32, String) {
    committed.map_or((-1, -1, String::new()), |c| {
        (c.offset, c.leader_epoch, c.metadata)
    })
}
