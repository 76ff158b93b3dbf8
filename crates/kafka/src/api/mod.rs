//! One module per Kafka API: decode → call the core → encode.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;

use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;
use weir_core::KafkaNode;

use crate::server::Context;

/// Every API Weir answers, with the versions it handles in full. librdkafka
/// chooses wire behaviour from this list, so nothing is listed that is not
/// implemented. Floors are the oldest versions the codec supports (Kafka
/// 4.0 removed the older ones too).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::EndTxn, 0, 3),
];

/// Whether `version` of `api` is handled.
pub fn supports(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(key, min, max)| key == api && (min..=max).contains(&version))
}

/// A protocol string from any string.
pub(crate) fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// An optional protocol string as an owned string.
pub(crate) fn owned(value: Option<&StrBytes>) -> Option<String> {
    value.map(|v| v.as_str().to_string())
}

/// The nodes clients are told of: the cluster's live nodes, or this
/// broker's own listener on a single node.
pub(crate) fn kafka_nodes(context: &Context) -> Vec<KafkaNode> {
    context.broker.kafka_nodes().unwrap_or_else(|| {
        vec![KafkaNode {
            id: context.broker.node_id(),
            host: context.config.advertised_host.clone(),
            port: i32::from(context.config.advertised_port),
        }]
    })
}

/// A topic name for a response.
pub(crate) fn topic_name(value: &str) -> TopicName {
    TopicName(text(value))
}

/// Resource type of a topic in config APIs.
pub(crate) const RESOURCE_TOPIC: i8 = 2;
/// Resource type of a broker in config APIs.
pub(crate) const RESOURCE_BROKER: i8 = 4;
