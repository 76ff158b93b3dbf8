//! Metadata as commands: every change to the broker's metadata (topics and
//! their configs, partitions, virtual hosts, exchanges, queues, bindings,
//! the nodes of a cluster; later users, ACLs, leaders and ISR) is one
//! [`MetadataCommand`],
//! validated against the current [`MetadataState`] and applied by a
//! deterministic state machine that reads neither the clock nor the disk.
//! On one node the commands go to the metadata log below ([`MetadataStore`]);
//! in a cluster the controller quorum (`weir-cluster`, on openraft)
//! replicates the same commands.
//!
//! Topics are wired through it (crate::broker); the AMQP definitions still
//! live in each vhost's `definitions.json` and have only their commands and
//! image here so far.
//!
//! # On disk: `<data>/metadata/`
//!
//! ```text
//! snapshot-<I>.snap   the state after command I (20 digits, zero-padded)
//! commands-<F>.log    commands F, F+1, … appended in order
//! *.tmp               a snapshot or commands file being written; removed on start
//! ```
//!
//! Both kinds of file start with a 24-byte header: magic (`WEIRMSNP` or
//! `WEIRMLOG`), format version (u32 LE, 1), an index (u64 LE: the
//! snapshot's last command, or the commands file's first) and the CRC32C
//! of those 20 bytes (u32 LE). Then come records, each framed as
//!
//! ```text
//! length  u32 LE   payload bytes, 1 to 1 MiB (1 GiB for a snapshot)
//! crc     u32 LE   CRC32C of the 4 length bytes and the payload
//! payload          JSON
//! ```
//!
//! A commands file's payloads are `{"index": n, "command": {"command":
//! "create_topic", …}}` with indexes contiguous from the header's; a
//! snapshot has exactly one record, `{"last_index": I, "state": {…}}`.
//! JSON keeps the files readable with a hex dump and lets new command
//! variants be added without a new format version.
//!
//! Why not a [`weir_log::Log`] of RecordBatches: a partition log keeps
//! going past damage (it fences it and serves the rest), which is right for
//! data and wrong for a state machine, where skipping one command changes
//! the meaning of every later one; and metadata needs neither offsets
//! indexes, retention nor group commit. The pieces that matter are reused:
//! CRC32C, and [`weir_log::checkpoint::write_atomically`] for every file
//! that must appear whole.
//!
//! # Durability and recovery
//!
//! A command is appended and `fdatasync`ed before it is applied and before
//! the caller is answered. A failed write (a full disk) is cut back and the
//! command refused; a failed sync poisons the store (no further command is
//! accepted until a restart, fjall's rule), since what reached the disk is
//! then unknown. Every
//! `snapshot_interval_commands` commands (1024 by default) the state is
//! written as a new snapshot (written aside, synced, renamed), a new empty
//! commands file starts after it, and then the superseded snapshot and
//! commands file are deleted: that is the log's truncation.
//!
//! Recovery reads the newest snapshot, then the newest commands file,
//! applying the commands after the snapshot. Bad bytes at the end with no
//! valid record after them are a *torn tail* (an append a crash
//! interrupted, never acknowledged): they are cut, the cut synced and
//! logged. Anything else — damage followed by a valid record, a record out
//! of sequence, a command that does not apply, a damaged snapshot or
//! header — is a [`MetadataError::Corrupt`] naming the file and byte: the
//! broker does not start on metadata it cannot trust, and nothing is
//! silently dropped. [`inspect`] does the same reading without repairing,
//! for `weir data check`.

mod command;
mod error;
mod file;
mod leadership;
mod nodes;
mod state;
mod store;

pub use crate::metadata::command::{
    ArgumentValue, Arguments, BindingDestination, BindingSpec, ConfigUpdate, ExchangeType,
    MetadataCommand,
};
pub use crate::metadata::error::MetadataError;
pub use crate::metadata::file::{
    inspect, Inspection, TornTail, COMMAND_BYTES_MAX, SNAPSHOT_BYTES_MAX,
};
pub use crate::metadata::leadership::Leadership;
pub use crate::metadata::nodes::{NodeImage, NodeRegistration, NODE_ID_MAX};
pub use crate::metadata::state::{
    BindingImage, ExchangeImage, MetadataState, QueueImage, TopicImage, VhostImage, NAME_BYTES_MAX,
    PARTITIONS_PER_TOPIC_MAX, STANDARD_EXCHANGES,
};
pub use crate::metadata::store::{MetadataOptions, MetadataStore, Recovery};
