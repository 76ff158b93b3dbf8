//! Settings of one partition log (Kafka's topic-level log configs).

use std::time::Duration;

/// How a partition log rolls, retains and syncs. Cheap to clone; the owner
/// swaps it when a topic's configuration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before the active one exceeds this (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch is older than this (`segment.ms`).
    pub segment_ms: u64,
    /// Delete sealed segments whose newest record is older than this; `None` keeps them (`retention.ms`).
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log is larger than this; `None` keeps them (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Largest batch accepted (`max.message.bytes`).
    pub max_message_bytes: usize,
    /// Bytes of log between two sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// `None`: a write is durable (and acknowledged) only after `fdatasync`.
    /// `Some(interval)`: a write is acknowledged when written, and synced at
    /// most `interval` later (`flush.ms`).
    pub flush_interval: Option<Duration>,
    /// Least time between two syncs of this log: a writer that finds the
    /// last sync more recent waits for the rest of it, so a burst of small
    /// writes shares fewer syncs (group commit with a commit delay, as
    /// PostgreSQL's `commit_delay`). `None`: sync at once.
    pub sync_spacing: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            flush_interval: None,
            sync_spacing: None,
        }
    }
}
