//! TxnOffsetCommit: offsets that take effect when the transaction commits.

use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use weir_core::OffsetCommit;

use crate::api::owned;
use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Stashes the offsets in the producer's transaction.
pub fn handle(
    context: &Arc<Context>,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> Answer<TxnOffsetCommitResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let commits: Vec<OffsetCommit> = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| OffsetCommit {
                    partition: (t.name.0.to_string(), p.partition_index),
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: owned(p.committed_metadata.as_ref()),
                })
            })
            .collect();
        // v3+ carries the consumer's group metadata (KIP-447); -1 means none.
        let instance = owned(request.group_instance_id.as_ref());
        let member = (version >= 3 && request.generation_id >= 0).then(|| {
            (
                request.generation_id,
                request.member_id.as_str(),
                instance.as_deref(),
            )
        });
        let outcome = context
            .broker
            .commit_offsets_in_transaction(
                request.transactional_id.0.as_str(),
                request.producer_id.0,
                request.producer_epoch,
                request.group_id.0.as_str(),
                member,
                commits,
            )
            .await;
        let mut codes = match &outcome {
            Ok(results) => results
                .iter()
                .map(|(_, r)| {
                    r.as_ref()
                        .err()
                        .map_or(0, |e| errors::transactional_code(e, version))
                })
                .collect(),
            Err(error) => {
                vec![
                    errors::transactional_code(error, version);
                    request.topics.iter().map(|t| t.partitions.len()).sum()
                ]
            }
        }
        .into_iter();
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(codes.next().unwrap_or(0))
                    })
                    .collect();
                TxnOffsetCommitResponseTopic::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect();
        TxnOffsetCommitResponse::default().with_topics(topics)
    }))
}
