//! The metadata commands: every change to the broker's metadata is one
//! [`MetadataCommand`] value.
//!
//! Commands are stored (in the metadata log, and later replicated by the
//! controller quorum), so their serialized form is a format: each command
//! is a JSON object tagged by `"command"` (`"create_topic"`, …). A new kind
//! of change is a new variant with a new tag; existing tags and fields keep
//! their meaning forever, and a reader meeting a tag it does not know
//! refuses the record rather than skipping it.
//!
//! Everything a command needs is inside it, ids included: applying one
//! reads neither the clock, the disk nor a random source.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::nodes::NodeRegistration;

/// One change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MetadataCommand {
    /// A new topic with empty partitions.
    CreateTopic {
        /// Its name (Kafka's naming rules).
        name: String,
        /// Its id, chosen by whoever proposes the command.
        id: Uuid,
        /// Partition count, at least 1.
        partitions: u32,
        /// Overrides of the broker's topic defaults (`retention.ms`, …).
        configs: BTreeMap<String, String>,
        /// In a cluster, each partition's replicas (node ids, the leader
        /// first); empty on a single node.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<Vec<u64>>,
    },
    /// Removes a topic; the id guards against deleting a namesake created since.
    DeleteTopic {
        /// The topic's name.
        name: String,
        /// The topic's id.
        id: Uuid,
    },
    /// Grows a topic to `total` partitions (counts never shrink).
    CreatePartitions {
        /// The topic's name.
        name: String,
        /// The new partition count, larger than the current one.
        total: u32,
        /// In a cluster, the replicas of each new partition; empty on a
        /// single node.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<Vec<u64>>,
    },
    /// Changes some overrides of a topic, in order, all or nothing.
    AlterTopicConfig {
        /// The topic's name.
        name: String,
        /// The changes, applied in order.
        changes: Vec<ConfigUpdate>,
    },
    /// Replaces all overrides of a topic (Kafka's legacy AlterConfigs).
    ReplaceTopicConfig {
        /// The topic's name.
        name: String,
        /// The new overrides; everything else falls back to the defaults.
        configs: BTreeMap<String, String>,
    },
    /// A new AMQP virtual host, with the standard `amq.*` exchanges.
    CreateVhost {
        /// Its name.
        name: String,
    },
    /// Removes a virtual host with everything declared in it.
    DeleteVhost {
        /// Its name.
        name: String,
    },
    /// Declares a durable exchange; declaring an identical one again changes nothing.
    DeclareExchange {
        /// The virtual host.
        vhost: String,
        /// The exchange's name.
        name: String,
        /// Its routing rule.
        kind: ExchangeType,
        /// Deleted when its last binding goes.
        auto_delete: bool,
        /// Takes messages only from other exchanges.
        internal: bool,
        /// Arguments as declared.
        arguments: Arguments,
    },
    /// Deletes an exchange, its bindings and the bindings to it.
    DeleteExchange {
        /// The virtual host.
        vhost: String,
        /// The exchange's name.
        name: String,
    },
    /// Declares a durable queue; declaring an identical one again changes nothing.
    DeclareQueue {
        /// The virtual host.
        vhost: String,
        /// The queue's name.
        name: String,
        /// Names the queue's storage; unique among all queues.
        id: Uuid,
        /// Deleted when its last consumer goes.
        auto_delete: bool,
        /// Arguments as declared (`x-queue-type`, `x-max-length`, …).
        arguments: Arguments,
    },
    /// Deletes a queue and the bindings to it.
    DeleteQueue {
        /// The virtual host.
        vhost: String,
        /// The queue's name.
        name: String,
    },
    /// Binds a queue or an exchange to a source exchange; binding again changes nothing.
    Bind {
        /// The virtual host.
        vhost: String,
        /// The binding.
        binding: BindingSpec,
    },
    /// Removes a binding; an auto-delete source left without bindings goes too.
    Unbind {
        /// The virtual host.
        vhost: String,
        /// The binding.
        binding: BindingSpec,
    },
    /// Names the cluster, once: the first controller leader proposes it,
    /// and a node whose data directory knows another id refuses to start.
    InitializeCluster {
        /// The cluster's id.
        id: Uuid,
    },
    /// A node starts (a new incarnation) with its endpoints; it is unfenced.
    RegisterNode {
        /// What the node says about itself.
        node: NodeRegistration,
    },
    /// A replicated partition's leader and in-sync replicas change (see
    /// [`crate::metadata::Leadership`]): proposed by the controller's
    /// elections and by a leader shrinking or growing its in-sync set.
    ChangeLeadership {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The leadership version this change replaces.
        version: u32,
        /// The new leader, one of `isr`; `None` while none is live.
        leader: Option<u64>,
        /// The new in-sync replicas.
        isr: Vec<u64>,
    },
    /// A node missed its heartbeats for the session timeout.
    FenceNode {
        /// The node.
        id: u64,
        /// The incarnation the controller last heard from.
        incarnation: Uuid,
    },
    /// A fenced node heartbeats again.
    UnfenceNode {
        /// The node.
        id: u64,
        /// Its current incarnation.
        incarnation: Uuid,
    },
    /// Moves a replicated partition to the replicas `target` (`weir topic
    /// reassign`), Kafka's KIP-455 way: until the move completes the
    /// partition's replicas are the targets followed by the replicas that
    /// leave, so the targets copy the log as followers while the old
    /// replicas keep the in-sync set; the leadership's version moves, so
    /// the leader starts counting the new followers.
    ReassignPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The replicas it moves to, the preferred leader first.
        target: Vec<u64>,
    },
    /// Every target of a reassignment is in sync: the replicas become the
    /// targets, the others leave the in-sync set, and `leader` (a target
    /// in sync) leads; proposed by the controller's elections.
    CompleteReassignment {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The leadership version this change replaces.
        version: u32,
        /// The leader from now on: the current one if it stays, else a
        /// live target (a new leader epoch).
        leader: u64,
    },
    /// A node takes the next block of producer ids, `first` up to
    /// `first + count`, so that no two nodes ever hand out the same id
    /// (Kafka's KIP-730). `first` must be the state's next free id: a node
    /// that lost a race proposes again from the new one.
    AllocateProducerIds {
        /// The node taking the block.
        node: u64,
        /// First id of the block.
        first: u64,
        /// How many ids.
        count: u64,
    },
}

impl MetadataCommand {
    /// A short name for logs and errors (the serialized tag).
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataCommand::CreateTopic { .. } => "create_topic",
            MetadataCommand::DeleteTopic { .. } => "delete_topic",
            MetadataCommand::CreatePartitions { .. } => "create_partitions",
            MetadataCommand::AlterTopicConfig { .. } => "alter_topic_config",
            MetadataCommand::ReplaceTopicConfig { .. } => "replace_topic_config",
            MetadataCommand::CreateVhost { .. } => "create_vhost",
            MetadataCommand::DeleteVhost { .. } => "delete_vhost",
            MetadataCommand::DeclareExchange { .. } => "declare_exchange",
            MetadataCommand::DeleteExchange { .. } => "delete_exchange",
            MetadataCommand::DeclareQueue { .. } => "declare_queue",
            MetadataCommand::DeleteQueue { .. } => "delete_queue",
            MetadataCommand::Bind { .. } => "bind",
            MetadataCommand::Unbind { .. } => "unbind",
            MetadataCommand::InitializeCluster { .. } => "initialize_cluster",
            MetadataCommand::RegisterNode { .. } => "register_node",
            MetadataCommand::ChangeLeadership { .. } => "change_leadership",
            MetadataCommand::FenceNode { .. } => "fence_node",
            MetadataCommand::UnfenceNode { .. } => "unfence_node",
            MetadataCommand::AllocateProducerIds { .. } => "allocate_producer_ids",
            MetadataCommand::ReassignPartition { .. } => "reassign_partition",
            MetadataCommand::CompleteReassignment { .. } => "complete_reassignment",
        }
    }
}

/// One change to one topic config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigUpdate {
    /// Kafka's name of the setting.
    pub name: String,
    /// The new value; `None` removes the override.
    pub value: Option<String>,
}

/// The routing rule of an exchange, as stored in metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeType {
    /// Routing key equals binding key.
    Direct,
    /// Every binding.
    Fanout,
    /// Binding key is a pattern of words.
    Topic,
    /// Binding arguments match message headers.
    Headers,
}

/// Where a binding sends what matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingDestination {
    /// A queue, by name.
    Queue(String),
    /// An exchange, by name (exchange-to-exchange binding).
    Exchange(String),
}

/// A binding: source exchange, destination, key and arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingSpec {
    /// The exchange messages come from.
    pub source: String,
    /// Where matching messages go.
    pub destination: BindingDestination,
    /// Binding key (a pattern for topic exchanges).
    pub routing_key: String,
    /// Binding arguments (headers exchanges match on them).
    pub arguments: Arguments,
}

/// Declaration arguments, protocol-neutral: a table of typed values.
pub type Arguments = BTreeMap<String, ArgumentValue>;

/// A typed argument value. The variants keep every distinction a protocol
/// draws (integer widths, short vs long strings) so that converting to the
/// neutral form and back gives the same value, which argument equivalence
/// checks rely on. Floats are stored as their IEEE bits: every value,
/// NaN included, then compares and serializes exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgumentValue {
    /// A boolean.
    Bool(bool),
    /// An 8-bit signed integer.
    I8(i8),
    /// An 8-bit unsigned integer.
    U8(u8),
    /// A 16-bit signed integer.
    I16(i16),
    /// A 16-bit unsigned integer.
    U16(u16),
    /// A 32-bit signed integer.
    I32(i32),
    /// A 32-bit unsigned integer.
    U32(u32),
    /// A 64-bit signed integer.
    I64(i64),
    /// A 32-bit float, as its bits.
    F32Bits(u32),
    /// A 64-bit float, as its bits.
    F64Bits(u64),
    /// A decimal: `value` × 10^-`scale`.
    Decimal {
        /// Digits after the point.
        scale: u8,
        /// The unscaled value.
        value: u32,
    },
    /// A short string (at most 255 bytes in AMQP).
    ShortString(String),
    /// A long string that is valid UTF-8.
    Text(String),
    /// A long string that is not valid UTF-8.
    TextBytes(Vec<u8>),
    /// An array of values.
    List(Vec<ArgumentValue>),
    /// Milliseconds or seconds since the epoch, as the protocol says.
    Timestamp(u64),
    /// A nested table.
    Table(Arguments),
    /// Opaque bytes.
    Bytes(Vec<u8>),
    /// No value.
    Void,
}
