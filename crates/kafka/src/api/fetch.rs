//! Fetch: read stored batches, long-polling until `min_bytes` or `max_wait_ms`.
//!
//! Weir creates no incremental fetch sessions (KIP-227 lets a broker
//! decline): every answer carries session id 0, so clients send full
//! requests. A request naming a session it was never given is refused with
//! FETCH_SESSION_ID_NOT_FOUND so the client starts over.

use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use tokio::sync::watch;
use tokio::time::Instant;
use weir_core::{CoreError, Isolation, Partition};

use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

/// Longest wait honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
/// Isolation level that hides uncommitted transactional data.
const READ_COMMITTED: i8 = 1;

struct Target {
    topic: kafka_protocol::messages::TopicName,
    index: i32,
    offset: i64,
    max_bytes: usize,
    leader_epoch: i32,
    partition: Result<Arc<Partition>, CoreError>,
}

/// Reads now if enough is there, otherwise waits for the high watermark of
/// any requested partition to move, or for the deadline.
pub fn handle(
    context: &Arc<Context>,
    request: FetchRequest,
    version: i16,
    client: &Client,
) -> Answer<FetchResponse> {
    if version >= 7 && (request.session_id != 0 || request.session_epoch > 0) {
        return Answer::Now(
            FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code()),
        );
    }
    let broker = &context.broker;
    let targets: Vec<Target> = request
        .topics
        .into_iter()
        .flat_map(|topic| {
            let found = broker.topic(topic.topic.0.as_str());
            topic.partitions.into_iter().map(move |partition| Target {
                topic: topic.topic.clone(),
                index: partition.partition,
                offset: partition.fetch_offset,
                max_bytes: usize::try_from(partition.partition_max_bytes).unwrap_or(0),
                leader_epoch: partition.current_leader_epoch,
                partition: found
                    .as_ref()
                    .map_err(|_| CoreError::UnknownTopicOrPartition)
                    .and_then(|t| broker.served_partition(t, partition.partition)),
            })
        })
        .collect();
    let limits = Limits {
        max_bytes: if version >= 3 {
            usize::try_from(request.max_bytes).unwrap_or(0)
        } else {
            usize::MAX
        },
        min_bytes: usize::try_from(request.min_bytes).unwrap_or(0),
        max_wait: Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0))
            .min(MAX_WAIT_CAP),
        read_committed: request.isolation_level == READ_COMMITTED,
        principal: client.principal.clone(),
    };
    let context = Arc::clone(context);
    Answer::Later(Box::pin(long_poll(context, targets, limits)))
}

struct Limits {
    max_bytes: usize,
    min_bytes: usize,
    max_wait: Duration,
    read_committed: bool,
    /// Who reads (kept for the long poll's later reads).
    principal: weir_core::Principal,
}

async fn long_poll(context: Arc<Context>, targets: Vec<Target>, limits: Limits) -> FetchResponse {
    let deadline = Instant::now() + limits.max_wait;
    let mut watchers: Vec<watch::Receiver<u64>> = targets
        .iter()
        .filter_map(|target| target.partition.as_ref().ok())
        .map(|partition| partition.log().watch_high_watermark())
        .collect();
    loop {
        for watcher in &mut watchers {
            watcher.borrow_and_update();
        }
        let (response, bytes, failed) = read_all(&context, &targets, &limits);
        if bytes >= limits.min_bytes || failed || watchers.is_empty() || Instant::now() >= deadline
        {
            count_fetched(context.broker.metrics(), &response);
            return response;
        }
        let changed = select_all(
            watchers
                .iter_mut()
                .map(|watcher| Box::pin(watcher.changed())),
        );
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Counts the records a fetch answers with, per topic, for `/metrics`.
fn count_fetched(metrics: &weir_core::metrics::Metrics, response: &FetchResponse) {
    for topic in &response.responses {
        let records: u64 = topic
            .partitions
            .iter()
            .filter_map(|data| data.records.as_ref())
            .map(|records| weir_core::metrics::count_records(records))
            .sum();
        if records > 0 {
            metrics.message_out(
                weir_core::metrics::Protocol::Kafka,
                topic.topic.0.as_str(),
                records,
            );
        }
    }
}

/// Reads every target once: the response, the record bytes in it, and
/// whether any partition failed (which answers at once, as Kafka does).
fn read_all(
    context: &Context,
    targets: &[Target],
    limits: &Limits,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut failed = false;
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for target in targets {
        let remaining = limits.max_bytes.saturating_sub(total);
        let data = read_one(context, target, remaining, limits);
        total += data.records.as_ref().map_or(0, |records| records.len());
        failed |= data.error_code != 0;
        match topics.last_mut() {
            Some(last) if last.topic == target.topic => last.partitions.push(data),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(target.topic.clone())
                    .with_partitions(vec![data]),
            ),
        }
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        failed,
    )
}

fn read_one(
    context: &Context,
    target: &Target,
    remaining: usize,
    limits: &Limits,
) -> PartitionData {
    let read_committed = limits.read_committed;
    let data = PartitionData::default()
        .with_partition_index(target.index)
        .with_preferred_read_replica(BrokerId(-1))
        .with_aborted_transactions(read_committed.then(Vec::new));
    let partition = match &target.partition {
        Ok(partition) => partition,
        Err(error) => return failed(data, errors::code(error)),
    };
    if target.leader_epoch >= 0 && target.leader_epoch != partition.leader_epoch() {
        let error = if target.leader_epoch < partition.leader_epoch() {
            ResponseError::FencedLeaderEpoch
        } else {
            ResponseError::UnknownLeaderEpoch
        };
        return failed(data, error.code());
    }
    let isolation = if read_committed {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    let max_bytes = if remaining == 0 {
        0
    } else {
        target.max_bytes.min(remaining)
    };
    match context.broker.read(
        partition,
        target.offset,
        max_bytes,
        isolation,
        &limits.principal,
    ) {
        Ok(read) => {
            let aborted = read
                .aborted
                .iter()
                .map(|a| {
                    AbortedTransaction::default()
                        .with_producer_id(ProducerId(a.producer_id))
                        .with_first_offset(a.first_offset as i64)
                })
                .collect();
            let records = if remaining == 0 {
                bytes::Bytes::new()
            } else {
                read.records
            };
            data.with_high_watermark(read.high_watermark as i64)
                .with_last_stable_offset(read.last_stable_offset as i64)
                .with_log_start_offset(read.log_start_offset as i64)
                .with_aborted_transactions(read_committed.then_some(aborted))
                .with_records(Some(records))
        }
        Err(error) => {
            let offsets = partition.offsets();
            data.with_error_code(errors::code(&error))
                .with_high_watermark(offsets.high_watermark as i64)
                .with_last_stable_offset(partition.last_stable_offset() as i64)
                .with_log_start_offset(offsets.log_start_offset as i64)
                .with_records(Some(bytes::Bytes::new()))
        }
    }
}

fn failed(data: PartitionData, code: i16) -> PartitionData {
    data.with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(bytes::Bytes::new()))
}
