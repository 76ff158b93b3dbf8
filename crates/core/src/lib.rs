//! Weir's broker core: topics, partitions and every rule about what happens
//! to them. Protocol front-ends call these operations and translate the
//! answers; nothing here knows a wire format.

pub mod alarm;
mod broker;
pub mod clock;
mod config;
pub mod connections;
mod consumer_groups;
pub mod data_check;
mod data_lock;
pub mod descriptors;
mod error;
pub mod group;
pub mod listener;
pub mod logging;
pub mod metadata;
pub mod metrics;
mod offset_reset;
pub mod partitioner;
mod principal;
mod producer;
pub mod quarantine;
pub mod queues;
mod replica;
mod topic;
mod transactions;
mod write_queue;

pub use crate::broker::{
    now_ms, summary, validate_topic_name, Acks, Appended, Broker, ClusterView, Isolation,
    KafkaNode, MetadataQuorum, OffsetSpec, PendingAppend, ReadResult, ReplicaCall, ReplicaRefusal,
    ReplicaReply, ReplicaRequest, ReplicaTransport, Replication, TopicSummary,
    TOPIC_NAME_BYTES_MAX,
};
pub use crate::clock::Clock;
pub use crate::config::{
    BrokerConfig, ConfigChange, ConfigEntry, ConfigKind, ConfigSource, TopicConfig, TopicDefaults,
};
pub use crate::consumer_groups::{OffsetCommit, PartitionLag, OFFSET_METADATA_BYTES_MAX};
pub use crate::error::{CoreError, Result};
pub use crate::logging::Escaped;
pub use crate::offset_reset::{PlannedReset, ResetTarget};
pub use crate::principal::{ConnectionId, Principal, NO_CONNECTION};
pub use crate::producer::AbortedTransaction;
pub use crate::topic::{Partition, Topic};
pub use crate::transactions::{TransactionState, TRANSACTION_TIMEOUT_MAX_MS};
pub use weir_log::{BatchError, LogOffsets, SharedLog};
