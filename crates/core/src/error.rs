//! Errors of the broker core. Front-ends map each variant to their
//! protocol's own code; nothing here knows those codes.

use weir_log::{BatchError, LogError};

use crate::metadata::MetadataError;

/// What went wrong with a core operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// No such topic, or no such partition in it.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// The topic name breaks the naming rules.
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    /// A topic of that name exists already.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// A partition count that cannot be honoured.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// A request whose parts contradict each other.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A manual replica assignment naming brokers that do not exist.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// A replication factor that this cluster cannot honour.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// An unknown config name or an unacceptable value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The request is well-formed but the broker's policy forbids it.
    #[error("policy violation: {0}")]
    PolicyViolation(String),
    /// The topic is in use (a queue reads it) and cannot be deleted.
    #[error("topic in use: {0}")]
    TopicInUse(String),
    /// This node does not lead the partition; the metadata names the node that does.
    #[error("this node is not the leader of the partition")]
    NotLeaderOrFollower,
    /// This node does not coordinate the group or transactional id; the
    /// client asks FindCoordinator again.
    #[error("this node is not the coordinator of the group")]
    NotCoordinator,
    /// The coordinator could not make a write durable on enough replicas
    /// (in a cluster); the client retries.
    #[error("the coordinator could not replicate the write")]
    CoordinatorNotAvailable,
    /// The controller quorum has no leader or did not commit in time.
    #[error("the cluster's controller is unavailable: {0}")]
    ClusterUnavailable(String),
    /// `acks=all` while fewer replicas are in sync than `min.insync.replicas`.
    #[error("not enough in-sync replicas for acks=all")]
    NotEnoughReplicas,
    /// An `acks=all` append was written, but the in-sync set shrank below
    /// `min.insync.replicas` before it was replicated.
    #[error("the in-sync replicas shrank below min.insync.replicas after the append")]
    NotEnoughReplicasAfterAppend,
    /// An `acks=all` append was not replicated in time; the producer retries
    /// (idempotent producers without duplicating).
    #[error("the append was not replicated in time")]
    RequestTimedOut,
    /// An idempotent batch that does not follow the producer's last one.
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// An idempotent batch from an epoch older than the producer's latest.
    #[error("producer epoch is older than the latest seen")]
    InvalidProducerEpoch,
    /// A produce request with more than one batch for a partition.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// The member id is not (or no longer) in the group.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The request names a generation the group has left behind.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing; the member must rejoin.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// A new member must join again with the member id it was given.
    #[error("member id required")]
    MemberIdRequired(String),
    /// Another member with the same `group.instance.id` replaced this one.
    #[error("fenced by another member with the same group.instance.id")]
    FencedInstanceId,
    /// The member's protocols share nothing with the group's.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// A session timeout outside the broker's bounds.
    #[error("session timeout {0} ms is outside the allowed range")]
    InvalidSessionTimeout(i32),
    /// An empty group id.
    #[error("invalid group id")]
    InvalidGroupId,
    /// No such group.
    #[error("group not found")]
    GroupIdNotFound,
    /// The group still has members.
    #[error("the group is not empty")]
    NonEmptyGroup,
    /// The group's members still consume the topic.
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// Commit metadata longer than allowed.
    #[error("offset metadata is too large")]
    OffsetMetadataTooLarge,
    /// The producer id is not the one of this transactional id.
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    /// A newer producer with the same transactional id took over.
    #[error("fenced by a newer producer with the same transactional id")]
    ProducerFenced,
    /// The transaction is being completed; retry.
    #[error("another operation on this transaction is in progress")]
    ConcurrentTransactions,
    /// The operation does not fit the transaction's state.
    #[error("invalid transaction state")]
    InvalidTxnState,
    /// A transaction timeout outside (0, transaction.max.timeout.ms].
    #[error("invalid transaction timeout")]
    InvalidTransactionTimeout,
    /// Not attempted because another part of the request failed.
    #[error("operation not attempted")]
    OperationNotAttempted,
    /// A batch larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    MessageTooLarge {
        /// Size of the refused batch.
        size: usize,
        /// The topic's limit.
        limit: usize,
    },
    /// A batch that fails validation (CRC, lengths).
    #[error("corrupt record batch: {0}")]
    CorruptMessage(BatchError),
    /// A record format older than v2.
    #[error("record batch magic {0} is not supported; v2 is required")]
    UnsupportedMessageFormat(i8),
    /// A read before the log start or after the log end.
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// First offset stored.
        log_start_offset: u64,
        /// Next offset to be written.
        log_end_offset: u64,
    },
    /// Free disk space is below the broker's limit; nothing was written.
    /// Retriable: writes resume once space returns.
    #[error("free disk space is below the broker's limit (disk alarm); retry later")]
    DiskFull,
    /// Stored data at the offset asked for is damaged; it is never served.
    /// Later offsets still read.
    #[error("{0}")]
    StoredDataCorrupt(#[source] LogError),
    /// The partition's log failed and refuses writes.
    #[error("storage error: {0}")]
    Storage(#[source] LogError),
    /// A file of the broker's own metadata could not be read or written.
    #[error("metadata I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<LogError> for CoreError {
    fn from(error: LogError) -> CoreError {
        match error {
            LogError::Batch(BatchError::UnsupportedMagic(magic)) => {
                CoreError::UnsupportedMessageFormat(magic)
            }
            LogError::Batch(error) => CoreError::CorruptMessage(error),
            LogError::BatchTooLarge { size, limit } => CoreError::MessageTooLarge { size, limit },
            LogError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            } => CoreError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            },
            corrupt @ LogError::Corrupt { .. } => CoreError::StoredDataCorrupt(corrupt),
            // A log closed under an append belongs to a topic just deleted.
            LogError::Closed => CoreError::UnknownTopicOrPartition,
            other => CoreError::Storage(other),
        }
    }
}

impl From<MetadataError> for CoreError {
    fn from(error: MetadataError) -> CoreError {
        match error {
            MetadataError::InvalidTopic(why) => CoreError::InvalidTopic(why),
            MetadataError::TopicAlreadyExists(name) => CoreError::TopicAlreadyExists(name),
            MetadataError::UnknownTopic(_) => CoreError::UnknownTopicOrPartition,
            MetadataError::InvalidPartitions(why) => CoreError::InvalidPartitions(why),
            MetadataError::InvalidConfig(why) => CoreError::InvalidConfig(why),
            refusal if refusal.is_refusal() => CoreError::InvalidRequest(refusal.to_string()),
            // The log failed or is damaged: the broker's own metadata.
            failure => CoreError::Io(std::io::Error::other(failure)),
        }
    }
}

impl From<BatchError> for CoreError {
    fn from(error: BatchError) -> CoreError {
        CoreError::from(LogError::Batch(error))
    }
}

/// Result alias of the core.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
