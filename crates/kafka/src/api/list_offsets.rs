//! ListOffsets: earliest, latest, or the first offset at a timestamp.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use weir_core::{Isolation, OffsetSpec};

use crate::dispatch::{Answer, Client};
use crate::errors;
use crate::server::Context;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// Answers every requested partition.
pub fn handle(
    context: &Arc<Context>,
    request: ListOffsetsRequest,
    version: i16,
    client: &Client,
) -> Answer<ListOffsetsResponse> {
    let broker = &context.broker;
    let isolation = if request.isolation_level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    };
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let found = broker.topic(topic.name.0.as_str());
            let partitions = topic
                .partitions
                .into_iter()
                .map(|wanted| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(wanted.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let spec = match wanted.timestamp {
                        LATEST => OffsetSpec::Latest,
                        EARLIEST => OffsetSpec::Earliest,
                        timestamp if timestamp >= 0 => OffsetSpec::Timestamp(timestamp),
                        // -3 (max timestamp) and later specials need versions not advertised.
                        _ => return response.with_error_code(ResponseError::InvalidRequest.code()),
                    };
                    let partition = match found
                        .as_ref()
                        .map_err(|_| weir_core::CoreError::UnknownTopicOrPartition)
                        .and_then(|topic| broker.served_partition(topic, wanted.partition_index))
                    {
                        Ok(partition) => partition,
                        Err(error) => return response.with_error_code(errors::code(&error)),
                    };
                    // Leader epochs travel from v4; older versions must leave the default.
                    let response = if version >= 4 {
                        response.with_leader_epoch(partition.leader_epoch())
                    } else {
                        response
                    };
                    match broker.list_offset(&partition, spec, isolation, &client.principal) {
                        Ok(Some((offset, timestamp))) => response
                            .with_offset(offset as i64)
                            .with_timestamp(timestamp),
                        Ok(None) => response,
                        Err(error) => response.with_error_code(errors::code(&error)),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    Answer::Now(ListOffsetsResponse::default().with_topics(topics))
}
