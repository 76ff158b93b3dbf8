//! Errors of the metadata layer: a command refused by validation, or the
//! metadata log failing on disk.

use std::path::PathBuf;

/// What went wrong with a metadata command or the metadata log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The topic name breaks Kafka's naming rules.
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    /// A topic of that name exists already.
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// No topic of that name (or not with that id).
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// A partition count that cannot be honoured.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// An unknown topic config or an unacceptable value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// An id already used by another topic or queue.
    #[error("duplicate id: {0}")]
    DuplicateId(String),
    /// A vhost, exchange or queue name that is empty or too long.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// A vhost, exchange or queue exists already with another definition.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// No such vhost, exchange or queue.
    #[error("not found: {0}")]
    NotFound(String),
    /// The change is well-formed but not allowed (standard exchanges, the
    /// default exchange).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// A command too large to be a record of the metadata log.
    #[error("command of {bytes} bytes exceeds the metadata record limit of {limit} bytes")]
    CommandTooLarge {
        /// Size of the serialized command.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Reading or writing a file of the metadata log failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of the metadata log is damaged where it cannot be a torn
    /// tail (valid data follows, or it is a snapshot): never skipped.
    #[error("{}: corrupt at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or sync of the metadata log failed: nothing more is
    /// appended until a restart recovers the log from what is durable.
    #[error("the metadata log refuses changes after an earlier failure ({0}); restart the broker")]
    Poisoned(String),
}

impl MetadataError {
    /// Whether the command was refused by validation (as opposed to the
    /// log failing): nothing changed and nothing was written.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            MetadataError::Io { .. } | MetadataError::Corrupt { .. } | MetadataError::Poisoned(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> MetadataError {
        MetadataError::Io {
            path: path.into(),
            source,
        }
    }
}
