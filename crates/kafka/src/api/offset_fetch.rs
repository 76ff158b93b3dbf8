//! OffsetFetch: one group (v1–v7) or several (v8).

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use weir_core::group::{CommittedOffset, TopicPartition};

use crate::api::{text, topic_name};
use crate::dispatch::Answer;
use crate::server::Context;

type Fetched = Vec<(TopicPartition, Option<CommittedOffset>)>;
/// One topic's partitions with their committed offsets.
type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

/// Answers the committed offsets asked for (all of a group's when no topics are named).
pub fn handle(
    context: &Arc<Context>,
    request: OffsetFetchRequest,
    version: i16,
) -> Answer<OffsetFetchResponse> {
    let broker = &context.broker;
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|group| {
                let wanted = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .flat_map(|t| {
                            let name = t.name.0.to_string();
                            t.partition_indexes
                                .into_iter()
                                .map(move |p| (name.clone(), p))
                        })
                        .collect()
                });
                let fetched = broker.fetch_offsets(group.group_id.0.as_str(), wanted);
                let topics = by_topic(fetched)
                    .into_iter()
                    .map(|(name, partitions)| {
                        let partitions = partitions
                            .into_iter()
                            .map(|(index, committed)| {
                                let (offset, epoch, metadata) = fields(committed);
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(text(metadata)))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(&name))
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id)
                    .with_topics(topics)
            })
            .collect();
        return Answer::Now(OffsetFetchResponse::default().with_groups(groups));
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partition_indexes
                    .into_iter()
                    .map(move |p| (name.clone(), p))
            })
            .collect()
    });
    let fetched = broker.fetch_offsets(request.group_id.0.as_str(), wanted);
    let topics = by_topic(fetched)
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, committed)| {
                    let (offset, epoch, metadata) = fields(committed);
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_metadata(Some(text(metadata)));
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
    Answer::Now(OffsetFetchResponse::default().with_topics(topics))
}

/// Offset, leader epoch and metadata; -1/-1/"" when nothing was committed.
fn fields(committed: Option<CommittedOffset>) -> (i64, i32, String) {
    committed.map_or((-1, -1, String::new()), |c| {
        (c.offset, c.leader_epoch, c.metadata)
    })
}

fn by_topic(fetched: Fetched) -> Vec<TopicOffsets> {
    let mut topics: Vec<TopicOffsets> = Vec::new();
    for ((topic, partition), committed) in fetched {
        match topics.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, partitions)) => partitions.push((partition, committed)),
            None => topics.push((topic, vec![(partition, committed)])),
        }
    }
    topics
}
