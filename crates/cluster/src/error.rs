//! Errors of the cluster layer.

use std::path::PathBuf;

/// What went wrong in the cluster layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Inconsistent cluster settings; the node refuses to start.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// This data directory belongs to another node or cluster.
    #[error("{}: {reason}", path.display())]
    ForeignDataDir {
        /// The controller directory.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// Reading or writing the controller's files failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A controller file is damaged where it cannot be a torn tail.
    #[error("{}: corrupt at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The controller quorum has no leader, or did not answer in time.
    #[error("the controller quorum is unavailable: {0}")]
    Unavailable(String),
    /// The metadata state refused the command; nothing changed.
    #[error("refused: {0}")]
    Refused(String),
    /// openraft failed (storage fatal, shut down).
    #[error("raft: {0}")]
    Raft(String),
}

impl ClusterError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ClusterError {
        ClusterError::Io {
            path: path.into(),
            source,
        }
    }
}
