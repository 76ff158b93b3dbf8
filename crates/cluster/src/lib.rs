//! Weir's cluster layer: the controller quorum.
//!
//! The controller voters (`--controller-quorum-voters`) replicate the
//! core's [`MetadataCommand`] log with **openraft**; each node applies the
//! committed commands, in order, to the same [`MetadataState`] the single
//! node keeps in its own metadata log. Nodes register with their endpoints
//! and heartbeat the leader, which fences a node that falls silent
//! (see [`controller`]).
//!
//! The controller leader also elects partition leaders from the in-sync
//! replicas ([`MetadataState::elections`]); the partition data itself is
//! copied by weir-core's replication, whose requests travel over this
//! crate's connections (the controller port carries both).
//!
//! # On disk: `<data>/controller/`
//!
//! ```text
//! node.json    which node id and voter list the directory belongs to
//! raft-log     the raft entries (crate::log_store)
//! raft-state   the vote and the last purged entry (crate::log_store)
//! snapshot     the latest snapshot of the metadata state (crate::state_machine)
//! ```

pub mod config;
pub mod controller;
mod error;
mod full_disk;
pub mod log_store;
pub mod state_machine;
mod transport;

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use weir_core::metadata::MetadataCommand;

pub use crate::config::{parse_voters, ClusterConfig};
pub use crate::controller::{
    check_identity, ClusterStatus, Controller, Endpoints, PartitionStatus,
};
pub use crate::error::ClusterError;

/// Node ids: Kafka's broker ids, as raft node ids.
pub type NodeId = u64;

/// What applying a committed command gave, returned to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The raft log index of the command.
    pub index: u64,
    /// Why the state refused it, if it did (then nothing changed).
    pub refusal: Option<String>,
}

openraft::declare_raft_types!(
    /// openraft's types for the controller: the commands are the core's
    /// metadata commands.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandOutcome,
        SnapshotData = Cursor<Vec<u8>>,
);
