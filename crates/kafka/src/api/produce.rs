//! Produce: append batches, answer once they are durable as `acks` asks.
//!
//! Each partition's batch is queued for writing while the request is read
//! (so a connection's requests are written in order); the write itself
//! runs off the async threads, and the answer waits for it and then for
//! durability.

use std::sync::Arc;

use futures::StreamExt;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use weir_core::{Acks, CoreError, PendingAppend};

use crate::api::{text, topic_name};
use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Queues every partition's batches now (keeping the connection's order)
/// and answers when all are written and durable.
pub fn handle(
    context: &Arc<Context>,
    request: ProduceRequest,
    version: i16,
    client: &Client,
) -> Answer<ProduceResponse> {
    let acks = match request.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let mut appends: Vec<(String, Vec<PartitionOutcome>)> =
        Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let partitions = topic
            .partition_data
            .into_iter()
            .map(|partition| {
                let outcome = match (acks, partition.records) {
                    (None, _) => Err(Failure::of(ResponseError::InvalidRequiredAcks)),
                    (Some(_), None) => {
                        Err(Failure::from(&CoreError::CorruptMessage(missing_records())))
                    }
                    (Some(acks), Some(records)) => {
                        let count = weir_core::metrics::count_records(&records);
                        context
                            .broker
                            .append(&name, partition.index, records, acks, &client.principal)
                            .map(|pending| Queued {
                                pending,
                                topic: name.clone(),
                                count,
                                metrics: std::sync::Arc::clone(context.broker.metrics()),
                            })
                            .map_err(|error| Failure::from(&error))
                    }
                };
                (partition.index, outcome)
            })
            .collect();
        appends.push((name, partitions));
    }
    if acks == Some(Acks::None) {
        // No answer, but the records are counted once written.
        let outcomes: Vec<PartitionOutcome> = appends
            .into_iter()
            .flat_map(|(_, partitions)| partitions)
            .collect();
        tokio::spawn(async move {
            for (_, outcome) in outcomes {
                if let Ok(queued) = outcome {
                    let _ = queued.written().await;
                }
            }
        });
        return Answer::Nothing;
    }
    Answer::Later(Box::pin(async move {
        // Every partition's log syncs on its own: wait for them together (a
        // request naming 1,000 partitions would otherwise take 1,000 fsyncs
        // in a row), in request order, a bounded number at a time.
        let shape: Vec<(String, usize)> = appends
            .iter()
            .map(|(name, partitions)| (name.clone(), partitions.len()))
            .collect();
        let outcomes = appends.into_iter().flat_map(|(_, partitions)| partitions);
        let mut waited =
            futures::stream::iter(outcomes.map(wait_durable)).buffered(SYNCS_IN_PARALLEL_MAX);
        let mut responses = Vec::with_capacity(shape.len());
        for (name, count) in shape {
            let mut partition_responses = Vec::with_capacity(count);
            for _ in 0..count {
                let Some((index, result)) = waited.next().await else {
                    break;
                };
                partition_responses.push(partition_response(index, result, version));
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic_name(&name))
                    .with_partition_responses(partition_responses),
            );
        }
        ProduceResponse::default().with_responses(responses)
    }))
}

/// Waits until one partition's append is written and durable; its base
/// offset and log start offset, or why not.
async fn wait_durable((index, outcome): PartitionOutcome) -> (i32, Result<(u64, u64), Failure>) {
    let result = match outcome {
        Ok(queued) => match queued.written().await {
            Ok(appended) => appended
                .durable()
                .await
                .map(|()| (appended.base_offset, appended.log_start_offset))
                .map_err(|error| Failure::from(&error)),
            Err(error) => Err(Failure::from(&error)),
        },
        Err(failure) => Err(failure),
    };
    (index, result)
}

/// A partition's batch queued for writing, and what to count once written.
struct Queued {
    pending: PendingAppend,
    topic: String,
    count: u64,
    metrics: std::sync::Arc<weir_core::metrics::Metrics>,
}

impl Queued {
    /// Waits for the write and counts its records.
    async fn written(self) -> weir_core::Result<weir_core::Appended> {
        let appended = self.pending.written().await?;
        self.metrics
            .message_in(weir_core::metrics::Protocol::Kafka, &self.topic, self.count);
        Ok(appended)
    }
}

/// Partition logs waited for at once by one produce request.
const SYNCS_IN_PARALLEL_MAX: usize = 64;

/// A partition index and its queued append, or why it was refused.
type PartitionOutcome = (i32, Result<Queued, Failure>);

/// A partition's error code and the message that explains it.
struct Failure {
    code: i16,
    message: String,
}

impl Failure {
    fn of(error: ResponseError) -> Failure {
        Failure {
            code: error.code(),
            message: error.to_string(),
        }
    }

    fn from(error: &CoreError) -> Failure {
        Failure {
            code: errors::code(error),
            message: error.to_string(),
        }
    }
}

/// The answer for one partition: its base offset and log start offset, or
/// why not.
fn partition_response(
    index: i32,
    result: Result<(u64, u64), Failure>,
    version: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1);
    match result {
        Ok((base_offset, log_start_offset)) => response
            .with_base_offset(base_offset as i64)
            .with_log_start_offset(log_start_offset as i64),
        Err(Failure { code, message }) => {
            let response = response
                .with_error_code(code)
                .with_base_offset(-1)
                .with_log_start_offset(-1);
            if version >= 8 {
                response.with_error_message(Some(text(message)))
            } else {
                response
            }
        }
    }
}

fn missing_records() -> weir_core::BatchError {
    weir_core::BatchError::Corrupt("the partition's records are null")
}
