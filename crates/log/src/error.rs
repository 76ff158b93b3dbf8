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
    /// An earlier fsync (or a write that could not be undone, or a roll)
    /// failed: the log refuses writes and syncs until it heals by cutting
    /// back to its durable end, which [`crate::SharedLog`] attempts at the
    /// next append or sync (at most once per [`crate::HEAL_RETRY_INTERVAL`]).
    /// Retriable.
    #[error("log is poisoned after an I/O failure and accepts no writes until it heals")]
    Poisoned,
    /// The log was closed or deleted.
    #[error("log is closed")]
    Closed,
    /// Batches from a leader that do not continue this log; nothing was
    /// written.
    #[error("replicated batches refused: {0}")]
    Replica(String),
    /// An I/O error from the file system. From a write, it means the write
    /// could not be undone and the log must be healed before the next one
    /// ([`crate::SharedLog`] poisons itself and heals).
    #[error("log I/O error: {0}")]
    Io(#[from] io::Error),
    /// A write failed (a full disk: `StorageFull`; `EIO`; a short write) and
    /// was undone: the log is exactly as before the call and the next append
    /// may succeed. Answer the client with a retriable storage error.
    #[error("write failed and was rolled back: {0}")]
    WriteRolledBack(#[source] io::Error),
    /// The stored data at `offset` is damaged (its CRC does not match, its
    /// header is impossible, or it lies in a range fenced at recovery). Never
    /// served; Kafka's `CORRUPT_MESSAGE`. Reads at later offsets still work.
    #[error("stored data at offset {offset} is corrupt (segment {segment_base_offset}, byte {position})")]
    Corrupt {
        /// The offset asked for.
        offset: u64,
        /// Base offset of the segment holding the damage.
        segment_base_offset: u64,
        /// Byte position of the damage in the segment's `.log` file.
        position: u64,
    },
    /// The write ending at `end_offset` was cut when the log healed after a
    /// failed sync: it was never durable and never acknowledged. The
    /// producer must send it again.
    #[error("writes below offset {end_offset} were cut after a failed sync and are not durable")]
    Truncated {
        /// The end offset the caller waited for.
        end_offset: u64,
    },
}

/// Result alias of the log crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
