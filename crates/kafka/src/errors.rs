//! Core errors as Kafka error codes.

use kafka_protocol::error::ResponseError;
use weir_core::CoreError;
use weir_core::Escaped;

/// The Kafka error code for a core error. Every error a client is told of
/// passes here once, so it is logged here, inside the connection's span.
pub fn code(error: &CoreError) -> i16 {
    let answer = response_error(error);
    match error {
        // The group protocol's routine signals: members act on them and retry.
        CoreError::RebalanceInProgress
        | CoreError::MemberIdRequired(_)
        | CoreError::UnknownMemberId
        | CoreError::IllegalGeneration => {
            tracing::debug!(code = answer.code(), error = %Escaped(error), "Kafka error answered")
        }
        _ => tracing::info!(code = answer.code(), error = %Escaped(error), "Kafka error answered"),
    }
    answer.code()
}

fn response_error(error: &CoreError) -> ResponseError {
    match error {
        CoreError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        CoreError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        CoreError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        CoreError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CoreError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        CoreError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        CoreError::InvalidRequest(_) => ResponseError::InvalidRequest,
        CoreError::InvalidConfig(_) => ResponseError::InvalidConfig,
        // Kafka has no "in use" code; its policies refuse deletes this way.
        CoreError::PolicyViolation(_) | CoreError::TopicInUse(_) => ResponseError::PolicyViolation,
        CoreError::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
        CoreError::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend,
        CoreError::RequestTimedOut => ResponseError::RequestTimedOut,
        // Clients refresh their metadata and go to the leader it names.
        CoreError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        CoreError::NotCoordinator => ResponseError::NotCoordinator,
        CoreError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        // What Kafka answers when its controller does not commit in time.
        CoreError::ClusterUnavailable(_) => ResponseError::RequestTimedOut,
        CoreError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        CoreError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
        CoreError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        CoreError::InvalidRecord(_) => ResponseError::InvalidRecord,
        CoreError::CorruptMessage(_) | CoreError::StoredDataCorrupt(_) => {
            ResponseError::CorruptMessage
        }
        // As Kafka's ProduceRequest.validateRecords: v3+ carries magic 2 only.
        CoreError::UnsupportedMessageFormat(_) => ResponseError::InvalidRecord,
        CoreError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // Retriable for clients: librdkafka and the Java client retry the
        // produce until the disk has room again.
        CoreError::Storage(_) | CoreError::DiskFull => ResponseError::KafkaStorageError,
        CoreError::UnknownMemberId => ResponseError::UnknownMemberId,
        CoreError::IllegalGeneration => ResponseError::IllegalGeneration,
        CoreError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        CoreError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        CoreError::FencedInstanceId => ResponseError::FencedInstanceId,
        CoreError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        CoreError::InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
        CoreError::InvalidGroupId => ResponseError::InvalidGroupId,
        CoreError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        CoreError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        CoreError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        CoreError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        CoreError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        CoreError::ProducerFenced => ResponseError::ProducerFenced,
        CoreError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        CoreError::InvalidTxnState => ResponseError::InvalidTxnState,
        CoreError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
        CoreError::OperationNotAttempted => ResponseError::OperationNotAttempted,
        _ => ResponseError::UnknownServerError,
    }
}

/// The error code and message for a per-item result.
pub fn code_and_message(result: &Result<(), CoreError>) -> (i16, Option<String>) {
    match result {
        Ok(()) => (0, None),
        Err(error) => (code(error), Some(error.to_string())),
    }
}

/// The code for an error of a transactional API at `version`: clients of
/// versions before 2 do not know PRODUCER_FENCED and get
/// INVALID_PRODUCER_EPOCH, as Apache Kafka answers them.
pub fn transactional_code(error: &CoreError, version: i16) -> i16 {
    match error {
        CoreError::ProducerFenced if version < 2 => ResponseError::InvalidProducerEpoch.code(),
        other => code(other),
    }
}
