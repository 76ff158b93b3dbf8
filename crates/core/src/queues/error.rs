//! Errors of queue, exchange and binding operations, in the terms AMQP
//! clients expect: each carries RabbitMQ's reply text; the front-end adds
//! the reply code and decides whether it closes the channel or the
//! connection.

/// What went wrong with a queue or exchange operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// 404: no such queue or exchange ("no queue 'q' in vhost '/'").
    #[error("NOT_FOUND - {0}")]
    NotFound(String),
    /// 405: an exclusive queue of another connection, or a single-active /
    /// exclusive consumer conflict.
    #[error("RESOURCE_LOCKED - {0}")]
    ResourceLocked(String),
    /// 406: inequivalent arguments, unknown delivery tag, in use, not empty…
    #[error("PRECONDITION_FAILED - {0}")]
    PreconditionFailed(String),
    /// 403: an operation on a reserved name or an internal exchange.
    #[error("ACCESS_REFUSED - {0}")]
    AccessRefused(String),
    /// 530: not allowed on this connection (e.g. an unknown vhost).
    #[error("NOT_ALLOWED - {0}")]
    NotAllowed(String),
    /// 540: a feature the broker does not implement.
    #[error("NOT_IMPLEMENTED - {0}")]
    NotImplemented(String),
    /// 541: storage failed; the operation did not happen.
    #[error("INTERNAL_ERROR - {0}")]
    Internal(String),
}

impl From<weir_log::LogError> for QueueError {
    fn from(error: weir_log::LogError) -> QueueError {
        QueueError::Internal(error.to_string())
    }
}

impl From<std::io::Error> for QueueError {
    fn from(error: std::io::Error) -> QueueError {
        QueueError::Internal(error.to_string())
    }
}

impl From<weir_log::BatchError> for QueueError {
    fn from(error: weir_log::BatchError) -> QueueError {
        QueueError::Internal(error.to_string())
    }
}
