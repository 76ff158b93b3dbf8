//! Errors of the storage layer.

use std::io;

/// Why a batch was refused or a stored batch is unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than the batch claims to hold.
    #[error("incomplete record batch")]
    Incomplete,
    /// A record format other than v2.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// The stored CRC does not match the bytes.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC found in the batch.
        stored: u32,
        /// CRC of the bytes as received.
        computed: u32,
    },
    /// A header field is impossible.
    #[error("corrupt record batch: {0}")]
    Corrupt(&'static str),
}

/// Errors of a partition log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A batch failed validation; nothing was written.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A batch is larger than the log's `max_message_bytes`.
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Size of the refused batch.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The requested offset is outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// First offset still stored.
        log_start_offset: u64,
        /// Next offset to be written.
        log_end_offset: u64,
    },
    /// An earlier write or fsync failed; the log refuses all writes since,
    /// because it can no longer tell what is durable.
    #[error("log is poisoned after an I/O failure and accepts no writes")]
    Poisoned,
    /// The log was closed or deleted.
    #[error("log is closed")]
    Closed,
    /// An I/O error from the file system.
    #[error("log I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Result alias of the log crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
