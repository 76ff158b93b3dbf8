//! AddPartitionsToTxn (client versions 0–3).

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use crate::api::topic_name;
use crate::dispatch::Answer;
use crate::errors;
use crate::server::Context;

/// Adds the partitions to the producer's transaction.
pub fn handle(
    context: &Arc<Context>,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> Answer<AddPartitionsToTxnResponse> {
    let context = Arc::clone(context);
    Answer::Later(Box::pin(async move {
        let partitions: Vec<(String, i32)> = request
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
            .collect();
        let outcome = context
            .broker
            .add_partitions_to_transaction(
                request.v3_and_below_transactional_id.0.as_str(),
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
                partitions.clone(),
            )
            .await;
        let codes: Vec<i16> = match &outcome {
            Ok(results) => results
                .iter()
                .map(|(_, r)| {
                    r.as_ref()
                        .err()
                        .map_or(0, |e| errors::transactional_code(e, version))
                })
                .collect(),
            Err(error) => vec![errors::transactional_code(error, version); partitions.len()],
        };
        let mut results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
        for ((topic, partition), code) in partitions.into_iter().zip(codes) {
            let result = AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(partition)
                .with_partition_error_code(code);
            match results.iter_mut().find(|r| r.name.0.as_str() == topic) {
                Some(existing) => existing.results_by_partition.push(result),
                None => results.push(
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(topic_name(&topic))
                        .with_results_by_partition(vec![result]),
                ),
            }
        }
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
    }))
}
