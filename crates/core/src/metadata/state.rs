//! The metadata image and the deterministic state machine that changes it.
//!
//! [`MetadataState::validate`] decides whether a command applies to the
//! current image; [`MetadataState::apply`] validates and then applies it.
//! Neither reads the clock, the disk or a random source, and every map is
//! ordered, so the same commands from the same image always give the same
//! image, byte for byte when serialized: replaying the log from any
//! snapshot gives the state the node had.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{ConfigChange, TopicConfig};
use crate::metadata::command::{
    Arguments, BindingDestination, BindingSpec, ConfigUpdate, ExchangeType, MetadataCommand,
};
use crate::metadata::error::MetadataError;
use crate::metadata::leadership::Leadership;
use crate::metadata::nodes::{self, NodeImage};

/// Most partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 1_000_000;
/// Longest vhost, exchange, queue name or routing key (an AMQP short string).
pub const NAME_BYTES_MAX: usize = 255;

/// The exchanges every virtual host has, which can be neither declared nor deleted.
/// The default exchange ("") is implicit and takes no bindings.
pub const STANDARD_EXCHANGES: &[(&str, ExchangeType)] = &[
    ("amq.direct", ExchangeType::Direct),
    ("amq.fanout", ExchangeType::Fanout),
    ("amq.topic", ExchangeType::Topic),
    ("amq.headers", ExchangeType::Headers),
    ("amq.match", ExchangeType::Headers),
];

/// Everything the metadata says: the image commands are applied to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    topics: BTreeMap<String, TopicImage>,
    vhosts: BTreeMap<String, VhostImage>,
    /// Set in a cluster only; absent from single-node files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_id: Option<Uuid>,
    /// The registered nodes of a cluster; absent from single-node files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    nodes: BTreeMap<u64, NodeImage>,
    /// The first producer id no node has taken yet (in a cluster).
    #[serde(default, skip_serializing_if = "is_zero")]
    next_producer_id: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A topic as metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// The topic's id.
    pub id: Uuid,
    /// Partition count.
    pub partitions: u32,
    /// Overrides of the broker defaults, validated and normalized.
    pub configs: BTreeMap<String, String>,
    /// In a cluster, each partition's replicas (node ids, the leader
    /// first); empty on a single node, where this node holds them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<u64>>,
    /// Leadership of the first partitions that changed since creation (see
    /// [`TopicImage::leadership`]); empty on a single node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) leadership: Vec<Leadership>,
    /// The partitions being moved, with the replicas they move to (see
    /// [`MetadataCommand::ReassignPartition`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reassigning: BTreeMap<u32, Vec<u64>>,
}

impl TopicImage {
    /// A topic as this node's own catalog holds it (no replicas).
    pub fn new(id: Uuid, partitions: u32, configs: BTreeMap<String, String>) -> TopicImage {
        TopicImage {
            id,
            partitions,
            configs,
            replicas: Vec::new(),
            leadership: Vec::new(),
            reassigning: BTreeMap::new(),
        }
    }

    /// The overrides as a [`TopicConfig`].
    pub fn config(&self) -> TopicConfig {
        TopicConfig::from_validated(self.configs.clone())
    }
}

/// A virtual host's durable definitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostImage {
    /// Exchanges by name, the standard ones included.
    pub exchanges: BTreeMap<String, ExchangeImage>,
    /// Durable queues by name.
    pub queues: BTreeMap<String, QueueImage>,
}

/// A durable exchange and its bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeImage {
    /// Routing rule.
    pub kind: ExchangeType,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Takes messages only from other exchanges.
    pub internal: bool,
    /// Arguments as declared.
    pub arguments: Arguments,
    /// Bindings with this exchange as source, in the order they were made.
    pub bindings: Vec<BindingImage>,
}

/// One binding of a source exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingImage {
    /// Where matching messages go.
    pub destination: BindingDestination,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: Arguments,
}

/// A durable queue's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueImage {
    /// Names the queue's storage.
    pub id: Uuid,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Arguments as declared.
    pub arguments: Arguments,
}

type Outcome = Result<(), MetadataError>;

impl MetadataState {
    /// An empty image.
    pub fn new() -> MetadataState {
        MetadataState::default()
    }

    /// Topics by name.
    pub fn topics(&self) -> &BTreeMap<String, TopicImage> {
        &self.topics
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// Virtual hosts by name.
    pub fn vhosts(&self) -> &BTreeMap<String, VhostImage> {
        &self.vhosts
    }

    /// The cluster's id, once the first controller leader named it.
    pub fn cluster_id(&self) -> Option<Uuid> {
        self.cluster_id
    }

    /// Registered nodes by id.
    pub fn nodes(&self) -> &BTreeMap<u64, NodeImage> {
        &self.nodes
    }

    /// The first producer id no node of the cluster has taken yet.
    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    /// Whether `command` applies to this image.
    ///
    /// # Errors
    ///
    /// The refusal: a [`MetadataError`] for which
    /// [`MetadataError::is_refusal`] holds.
    pub fn validate(&self, command: &MetadataCommand) -> Outcome {
        match command {
            MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                configs,
                replicas,
            } => {
                self.validate_create_topic(name, *id, *partitions, configs)?;
                self.validate_replicas(name, *partitions as usize, replicas, !replicas.is_empty())
            }
            MetadataCommand::DeleteTopic { name, id } => match self.topics.get(name) {
                Some(topic) if topic.id == *id => Ok(()),
                _ => Err(MetadataError::UnknownTopic(format!("{name} (id {id})"))),
            },
            MetadataCommand::CreatePartitions {
                name,
                total,
                replicas,
            } => {
                self.validate_create_partitions(name, *total)?;
                let topic = self.existing_topic(name)?;
                let added = (*total - topic.partitions) as usize;
                self.validate_replicas(name, added, replicas, !topic.replicas.is_empty())
            }
            MetadataCommand::AlterTopicConfig { name, changes } => {
                altered_configs(self.existing_topic(name)?, changes).map(drop)
            }
            MetadataCommand::ReplaceTopicConfig { name, configs } => {
                self.existing_topic(name)?;
                normalized_configs(configs).map(drop)
            }
            MetadataCommand::CreateVhost { name } => self.validate_create_vhost(name),
            MetadataCommand::DeleteVhost { name } => self.existing_vhost(name).map(drop),
            MetadataCommand::DeclareExchange {
                vhost,
                name,
                kind,
                auto_delete,
                internal,
                arguments,
            } => {
                let exchange = ExchangeImage {
                    kind: *kind,
                    auto_delete: *auto_delete,
                    internal: *internal,
                    arguments: arguments.clone(),
                    bindings: Vec::new(),
                };
                self.validate_declare_exchange(vhost, name, &exchange)
            }
            MetadataCommand::DeleteExchange { vhost, name } => {
                let host = self.existing_vhost(vhost)?;
                check_not_standard(name)?;
                existing_exchange(host, vhost, name).map(drop)
            }
            MetadataCommand::DeclareQueue {
                vhost,
                name,
                id,
                auto_delete,
                arguments,
            } => {
                let queue = QueueImage {
                    id: *id,
                    auto_delete: *auto_delete,
                    arguments: arguments.clone(),
                };
                self.validate_declare_queue(vhost, name, &queue)
            }
            MetadataCommand::DeleteQueue { vhost, name } => {
                let host = self.existing_vhost(vhost)?;
                existing_queue(host, vhost, name).map(drop)
            }
            MetadataCommand::Bind { vhost, binding } => self.validate_bind(vhost, binding),
            MetadataCommand::Unbind { vhost, binding } => self.validate_unbind(vhost, binding),
            MetadataCommand::InitializeCluster { id } => match self.cluster_id {
                Some(named) => Err(MetadataError::AlreadyExists(format!(
                    "the cluster is named {named} already, not {id}"
                ))),
                None => Ok(()),
            },
            MetadataCommand::RegisterNode { node } => nodes::validate_register(&self.nodes, node),
            MetadataCommand::ChangeLeadership {
                topic,
                partition,
                version,
                leader,
                isr,
            } => self.validate_change_leadership(topic, *partition, *version, *leader, isr),
            MetadataCommand::FenceNode { id, incarnation } => {
                nodes::validate_fencing(&self.nodes, *id, *incarnation, true)
            }
            MetadataCommand::UnfenceNode { id, incarnation } => {
                nodes::validate_fencing(&self.nodes, *id, *incarnation, false)
            }
            MetadataCommand::ReassignPartition {
                topic,
                partition,
                target,
            } => self.validate_reassign_partition(topic, *partition, target),
            MetadataCommand::CompleteReassignment {
                topic,
                partition,
                version,
                leader,
            } => self.validate_complete_reassignment(topic, *partition, *version, *leader),
            MetadataCommand::AllocateProducerIds { first, count, .. } => {
                if *first != self.next_producer_id {
                    return Err(MetadataError::NotAllowed(format!(
                        "producer ids from {first} are taken; the next free one is {}",
                        self.next_producer_id
                    )));
                }
                match first.checked_add(*count) {
                    Some(end) if *count > 0 && end <= i64::MAX as u64 => Ok(()),
                    _ => Err(MetadataError::NotAllowed(format!(
                        "a block of {count} producer ids from {first}"
                    ))),
                }
            }
        }
    }

    /// Validates `command` and applies it. A refused command changes nothing.
    ///
    /// # Errors
    ///
    /// The refusal of [`MetadataState::validate`].
    pub fn apply(&mut self, command: &MetadataCommand) -> Outcome {
        self.validate(command)?;
        self.apply_valid(command);
        debug_assert_eq!(self.check_invariants(), Ok(()), "after {command:?}");
        Ok(())
    }

    fn apply_valid(&mut self, command: &MetadataCommand) {
        match command {
            MetadataCommand::CreateVhost { .. }
            | MetadataCommand::DeleteVhost { .. }
            | MetadataCommand::DeclareExchange { .. }
            | MetadataCommand::DeleteExchange { .. }
            | MetadataCommand::DeclareQueue { .. }
            | MetadataCommand::DeleteQueue { .. }
            | MetadataCommand::Bind { .. }
            | MetadataCommand::Unbind { .. } => self.apply_valid_vhost(command),
            MetadataCommand::InitializeCluster { id } => self.cluster_id = Some(*id),
            MetadataCommand::RegisterNode { node } => {
                if self.nodes.contains_key(&node.id) {
                    self.restart_leaderships(node.id);
                }
                nodes::apply_register(&mut self.nodes, node);
            }
            MetadataCommand::ChangeLeadership {
                topic,
                partition,
                leader,
                isr,
                ..
            } => self.apply_change_leadership(topic, *partition, *leader, isr),
            MetadataCommand::FenceNode { id, .. } => {
                nodes::apply_fencing(&mut self.nodes, *id, true)
            }
            MetadataCommand::UnfenceNode { id, .. } => {
                nodes::apply_fencing(&mut self.nodes, *id, false)
            }
            MetadataCommand::AllocateProducerIds { first, count, .. } => {
                self.next_producer_id = first + count;
            }
            MetadataCommand::ReassignPartition {
                topic,
                partition,
                target,
            } => self.apply_reassign_partition(topic, *partition, target),
            MetadataCommand::CompleteReassignment {
                topic,
                partition,
                leader,
                ..
            } => self.apply_complete_reassignment(topic, *partition, *leader),
            MetadataCommand::CreateTopic {
                name,
                id,
                partitions,
                configs,
                replicas,
            } => {
                let configs = normalized_configs(configs).expect("validated");
                let topic = TopicImage {
                    id: *id,
                    partitions: *partitions,
                    configs,
                    replicas: replicas.clone(),
                    leadership: Vec::new(),
                    reassigning: BTreeMap::new(),
                };
                self.topics.insert(name.clone(), topic);
            }
            MetadataCommand::DeleteTopic { name, .. } => {
                self.topics.remove(name);
            }
            MetadataCommand::CreatePartitions {
                name,
                total,
                replicas,
            } => {
                let topic = self.topic_mut(name);
                topic.partitions = *total;
                topic.replicas.extend(replicas.iter().cloned());
            }
            MetadataCommand::AlterTopicConfig { name, changes } => {
                let topic = self.topic_mut(name);
                topic.configs = altered_configs(topic, changes).expect("validated");
            }
            MetadataCommand::ReplaceTopicConfig { name, configs } => {
                self.topic_mut(name).configs = normalized_configs(configs).expect("validated");
            }
        }
    }

    fn apply_valid_vhost(&mut self, command: &MetadataCommand) {
        match command {
            MetadataCommand::CreateTopic { .. }
            | MetadataCommand::DeleteTopic { .. }
            | MetadataCommand::CreatePartitions { .. }
            | MetadataCommand::AlterTopicConfig { .. }
            | MetadataCommand::ReplaceTopicConfig { .. }
            | MetadataCommand::InitializeCluster { .. }
            | MetadataCommand::RegisterNode { .. }
            | MetadataCommand::ChangeLeadership { .. }
            | MetadataCommand::FenceNode { .. }
            | MetadataCommand::UnfenceNode { .. }
            | MetadataCommand::AllocateProducerIds { .. }
            | MetadataCommand::ReassignPartition { .. }
            | MetadataCommand::CompleteReassignment { .. } => {
                unreachable!("only vhost commands are applied here")
            }
            MetadataCommand::CreateVhost { name } => {
                self.vhosts
                    .insert(name.clone(), VhostImage::with_standard());
            }
            MetadataCommand::DeleteVhost { name } => {
                self.vhosts.remove(name);
            }
            MetadataCommand::DeclareExchange {
                vhost,
                name,
                kind,
                auto_delete,
                internal,
                arguments,
            } => {
                self.vhost_mut(vhost)
                    .exchanges
                    .entry(name.clone())
                    .or_insert_with(|| ExchangeImage {
                        kind: *kind,
                        auto_delete: *auto_delete,
                        internal: *internal,
                        arguments: arguments.clone(),
                        bindings: Vec::new(),
                    });
            }
            MetadataCommand::DeleteExchange { vhost, name } => {
                let host = self.vhost_mut(vhost);
                host.exchanges.remove(name);
                host.remove_bindings_to(BindingDestination::Exchange(name.clone()));
            }
            MetadataCommand::DeclareQueue {
                vhost,
                name,
                id,
                auto_delete,
                arguments,
            } => {
                self.vhost_mut(vhost)
                    .queues
                    .entry(name.clone())
                    .or_insert_with(|| QueueImage {
                        id: *id,
                        auto_delete: *auto_delete,
                        arguments: arguments.clone(),
                    });
            }
            MetadataCommand::DeleteQueue { vhost, name } => {
                let host = self.vhost_mut(vhost);
                host.queues.remove(name);
                host.remove_bindings_to(BindingDestination::Queue(name.clone()));
            }
            MetadataCommand::Bind { vhost, binding } => {
                let image = binding_image(binding);
                let source = self.exchange_mut(vhost, &binding.source);
                if !source.bindings.contains(&image) {
                    source.bindings.push(image);
                }
            }
            MetadataCommand::Unbind { vhost, binding } => self.unbind(vhost, binding),
        }
    }

    /// Checks every invariant of the image; the first broken one is described.
    ///
    /// # Errors
    ///
    /// A description of the broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut topic_ids = BTreeSet::new();
        for (name, topic) in &self.topics {
            crate::broker::validate_topic_name(name).map_err(|error| error.to_string())?;
            if topic.id.is_nil() || !topic_ids.insert(topic.id) {
                return Err(format!(
                    "topic {name}: id {} is nil or not unique",
                    topic.id
                ));
            }
            check_partition_count(topic.partitions).map_err(|e| format!("topic {name}: {e}"))?;
            if !topic.replicas.is_empty() && topic.replicas.len() != topic.partitions as usize {
                return Err(format!(
                    "topic {name}: {} replica lists for {} partitions",
                    topic.replicas.len(),
                    topic.partitions
                ));
            }
            if topic.leadership.len() > topic.replicas.len() {
                return Err(format!("topic {name}: leadership of partitions it lacks"));
            }
            if let Some((partition, _)) = topic
                .reassigning
                .iter()
                .find(|(partition, _)| **partition as usize >= topic.replicas.len())
            {
                return Err(format!(
                    "topic {name}: partition {partition} it lacks is being moved"
                ));
            }
            match normalized_configs(&topic.configs) {
                Ok(normal) if normal == topic.configs => {}
                Ok(_) => return Err(format!("topic {name}: configs are not normalized")),
                Err(error) => return Err(format!("topic {name}: {error}")),
            }
        }
        let mut queue_ids = BTreeSet::new();
        for (vhost_name, host) in &self.vhosts {
            check_name("vhost", vhost_name).map_err(|e| e.to_string())?;
            host.check_invariants(vhost_name, &mut queue_ids)
                .map_err(|why| format!("vhost {vhost_name}: {why}"))?;
        }
        Ok(())
    }

    fn validate_create_topic(
        &self,
        name: &str,
        id: Uuid,
        partitions: u32,
        configs: &BTreeMap<String, String>,
    ) -> Outcome {
        crate::broker::validate_topic_name(name)
            .map_err(|error| MetadataError::InvalidTopic(reason(error)))?;
        if self.topics.contains_key(name) {
            return Err(MetadataError::TopicAlreadyExists(name.to_owned()));
        }
        if id.is_nil() {
            return Err(MetadataError::DuplicateId(
                "the nil id names no topic".into(),
            ));
        }
        if let Some((other, _)) = self.topics.iter().find(|(_, topic)| topic.id == id) {
            return Err(MetadataError::DuplicateId(format!(
                "{id} is the id of topic {other}"
            )));
        }
        check_partition_count(partitions)?;
        normalized_configs(configs).map(drop)
    }

    fn validate_create_partitions(&self, name: &str, total: u32) -> Outcome {
        let current = self.existing_topic(name)?.partitions;
        if total <= current {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic currently has {current} partitions, which is higher than the requested {total}"
            )));
        }
        check_partition_count(total)
    }

    /// A cluster topic (`clustered`) names the replicas of each of its
    /// `count` new partitions: distinct registered nodes, at least one; a
    /// single-node topic names none.
    fn validate_replicas(
        &self,
        name: &str,
        count: usize,
        replicas: &[Vec<u64>],
        clustered: bool,
    ) -> Outcome {
        if !clustered {
            return Ok(());
        }
        if replicas.len() != count {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic {name}: {} replica lists for {count} partitions",
                replicas.len()
            )));
        }
        for list in replicas {
            let distinct: BTreeSet<&u64> = list.iter().collect();
            if list.is_empty() || distinct.len() != list.len() {
                return Err(MetadataError::InvalidPartitions(format!(
                    "topic {name}: replicas {list:?} are empty or repeat a node"
                )));
            }
            if let Some(unknown) = list.iter().find(|id| !self.nodes.contains_key(id)) {
                return Err(MetadataError::InvalidPartitions(format!(
                    "topic {name}: replica {unknown} is not a registered node"
                )));
            }
        }
        Ok(())
    }

    fn validate_create_vhost(&self, name: &str) -> Outcome {
        check_name("vhost", name)?;
        if self.vhosts.contains_key(name) {
            return Err(MetadataError::AlreadyExists(format!("vhost '{name}'")));
        }
        Ok(())
    }

    fn validate_unbind(&self, vhost: &str, binding: &BindingSpec) -> Outcome {
        let host = self.existing_vhost(vhost)?;
        let source = existing_exchange(host, vhost, &binding.source)?;
        if !source.bindings.contains(&binding_image(binding)) {
            return Err(MetadataError::NotFound(format!(
                "binding of '{}' to {:?} with key '{}' in vhost '{vhost}'",
                binding.source, binding.destination, binding.routing_key
            )));
        }
        Ok(())
    }

    fn validate_declare_exchange(
        &self,
        vhost: &str,
        name: &str,
        exchange: &ExchangeImage,
    ) -> Outcome {
        let host = self.existing_vhost(vhost)?;
        check_name("exchange", name)?;
        check_not_standard(name)?;
        if name.starts_with("amq.") {
            return Err(MetadataError::NotAllowed(format!(
                "exchange name '{name}' has the reserved prefix 'amq.'"
            )));
        }
        check_arguments(&exchange.arguments)?;
        match host.exchanges.get(name) {
            None => Ok(()),
            Some(existing) if existing.same_declaration(exchange) => Ok(()),
            Some(_) => Err(MetadataError::AlreadyExists(format!(
                "exchange '{name}' in vhost '{vhost}' with another definition"
            ))),
        }
    }

    fn validate_declare_queue(&self, vhost: &str, name: &str, queue: &QueueImage) -> Outcome {
        let host = self.existing_vhost(vhost)?;
        check_name("queue", name)?;
        if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
            return Err(MetadataError::NotAllowed(format!(
                "queue name '{name}' has the reserved prefix 'amq.'"
            )));
        }
        check_arguments(&queue.arguments)?;
        if let Some(existing) = host.queues.get(name) {
            return match existing == queue {
                true => Ok(()),
                false => Err(MetadataError::AlreadyExists(format!(
                    "queue '{name}' in vhost '{vhost}' with another definition"
                ))),
            };
        }
        if queue.id.is_nil() {
            return Err(MetadataError::DuplicateId(
                "the nil id names no queue".into(),
            ));
        }
        for (other_vhost, other_host) in &self.vhosts {
            if let Some((other, _)) = other_host.queues.iter().find(|(_, q)| q.id == queue.id) {
                return Err(MetadataError::DuplicateId(format!(
                    "{} is the id of queue '{other}' in vhost '{other_vhost}'",
                    queue.id
                )));
            }
        }
        Ok(())
    }

    fn validate_bind(&self, vhost: &str, binding: &BindingSpec) -> Outcome {
        let host = self.existing_vhost(vhost)?;
        if binding.source.is_empty() {
            return Err(MetadataError::NotAllowed(
                "the default exchange takes no bindings".into(),
            ));
        }
        existing_exchange(host, vhost, &binding.source)?;
        match &binding.destination {
            BindingDestination::Queue(queue) if !host.queues.contains_key(queue) => Err(
                MetadataError::NotFound(format!("queue '{queue}' in vhost '{vhost}'")),
            ),
            BindingDestination::Exchange(exchange) if exchange.is_empty() => Err(
                MetadataError::NotAllowed("the default exchange takes no bindings".into()),
            ),
            BindingDestination::Exchange(exchange) => {
                existing_exchange(host, vhost, exchange).map(drop)
            }
            BindingDestination::Queue(_) => Ok(()),
        }?;
        if binding.routing_key.len() > NAME_BYTES_MAX {
            return Err(MetadataError::InvalidName(format!(
                "routing key of {} bytes; the limit is {NAME_BYTES_MAX}",
                binding.routing_key.len()
            )));
        }
        check_arguments(&binding.arguments)
    }

    /// Removes a binding; an auto-delete source left without any goes too.
    fn unbind(&mut self, vhost: &str, binding: &BindingSpec) {
        let image = binding_image(binding);
        let source = self.exchange_mut(vhost, &binding.source);
        source.bindings.retain(|existing| existing != &image);
        if source.auto_delete && source.bindings.is_empty() {
            let host = self.vhost_mut(vhost);
            host.exchanges.remove(&binding.source);
            host.remove_bindings_to(BindingDestination::Exchange(binding.source.clone()));
        }
    }

    fn existing_topic(&self, name: &str) -> Result<&TopicImage, MetadataError> {
        self.topics
            .get(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_owned()))
    }

    fn existing_vhost(&self, name: &str) -> Result<&VhostImage, MetadataError> {
        self.vhosts
            .get(name)
            .ok_or_else(|| MetadataError::NotFound(format!("vhost '{name}'")))
    }

    pub(crate) fn topic_mut(&mut self, name: &str) -> &mut TopicImage {
        self.topics.get_mut(name).expect("validated")
    }

    fn vhost_mut(&mut self, name: &str) -> &mut VhostImage {
        self.vhosts.get_mut(name).expect("validated")
    }

    fn exchange_mut(&mut self, vhost: &str, name: &str) -> &mut ExchangeImage {
        self.vhost_mut(vhost)
            .exchanges
            .get_mut(name)
            .expect("validated")
    }
}

impl VhostImage {
    fn with_standard() -> VhostImage {
        let exchanges = STANDARD_EXCHANGES
            .iter()
            .map(|&(name, kind)| (name.to_owned(), ExchangeImage::standard(kind)))
            .collect();
        VhostImage {
            exchanges,
            queues: BTreeMap::new(),
        }
    }

    /// Removes every binding to `destination`; an auto-delete exchange left
    /// without bindings goes too, and so on for the bindings to it.
    fn remove_bindings_to(&mut self, destination: BindingDestination) {
        let mut gone = vec![destination];
        while let Some(destination) = gone.pop() {
            let mut emptied = Vec::new();
            for (name, exchange) in &mut self.exchanges {
                let before = exchange.bindings.len();
                exchange
                    .bindings
                    .retain(|binding| binding.destination != destination);
                if exchange.auto_delete && before > 0 && exchange.bindings.is_empty() {
                    emptied.push(name.clone());
                }
            }
            for name in emptied {
                self.exchanges.remove(&name);
                gone.push(BindingDestination::Exchange(name));
            }
        }
    }

    fn check_invariants(&self, vhost: &str, queue_ids: &mut BTreeSet<Uuid>) -> Result<(), String> {
        for &(name, kind) in STANDARD_EXCHANGES {
            match self.exchanges.get(name) {
                Some(exchange) if exchange.kind == kind && !exchange.auto_delete => {}
                _ => return Err(format!("standard exchange {name} missing or changed")),
            }
        }
        for (name, queue) in &self.queues {
            check_name("queue", name).map_err(|e| e.to_string())?;
            if queue.id.is_nil() || !queue_ids.insert(queue.id) {
                return Err(format!(
                    "queue {name}: id {} is nil or not unique",
                    queue.id
                ));
            }
        }
        for (name, exchange) in &self.exchanges {
            check_name("exchange", name).map_err(|e| e.to_string())?;
            for (index, binding) in exchange.bindings.iter().enumerate() {
                let present = match &binding.destination {
                    BindingDestination::Queue(queue) => self.queues.contains_key(queue),
                    BindingDestination::Exchange(other) => self.exchanges.contains_key(other),
                };
                if !present {
                    return Err(format!(
                        "exchange {name} is bound to the missing {:?} in {vhost}",
                        binding.destination
                    ));
                }
                if exchange.bindings[..index].contains(binding) {
                    return Err(format!("exchange {name} holds a binding twice"));
                }
            }
        }
        Ok(())
    }
}

impl ExchangeImage {
    fn standard(kind: ExchangeType) -> ExchangeImage {
        ExchangeImage {
            kind,
            auto_delete: false,
            internal: false,
            arguments: Arguments::new(),
            bindings: Vec::new(),
        }
    }

    fn same_declaration(&self, other: &ExchangeImage) -> bool {
        self.kind == other.kind
            && self.auto_delete == other.auto_delete
            && self.internal == other.internal
            && self.arguments == other.arguments
    }
}

fn existing_exchange<'a>(
    host: &'a VhostImage,
    vhost: &str,
    name: &str,
) -> Result<&'a ExchangeImage, MetadataError> {
    host.exchanges
        .get(name)
        .ok_or_else(|| MetadataError::NotFound(format!("exchange '{name}' in vhost '{vhost}'")))
}

fn existing_queue<'a>(
    host: &'a VhostImage,
    vhost: &str,
    name: &str,
) -> Result<&'a QueueImage, MetadataError> {
    host.queues
        .get(name)
        .ok_or_else(|| MetadataError::NotFound(format!("queue '{name}' in vhost '{vhost}'")))
}

fn binding_image(binding: &BindingSpec) -> BindingImage {
    BindingImage {
        destination: binding.destination.clone(),
        routing_key: binding.routing_key.clone(),
        arguments: binding.arguments.clone(),
    }
}

fn check_partition_count(partitions: u32) -> Outcome {
    if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(MetadataError::InvalidPartitions(format!(
            "{partitions} partitions; a topic has 1 to {PARTITIONS_PER_TOPIC_MAX}"
        )));
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> Outcome {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(MetadataError::InvalidName(format!(
            "a {what} name has 1 to {NAME_BYTES_MAX} bytes, not {}",
            name.len()
        )));
    }
    Ok(())
}

fn check_not_standard(name: &str) -> Outcome {
    if name.is_empty()
        || STANDARD_EXCHANGES
            .iter()
            .any(|(standard, _)| *standard == name)
    {
        return Err(MetadataError::NotAllowed(format!(
            "the standard exchange '{name}' can be neither declared nor deleted"
        )));
    }
    Ok(())
}

/// Arguments nest; a bound on depth keeps recursive code (serialization,
/// equality) from exhausting the stack on a hostile declaration.
const ARGUMENT_DEPTH_MAX: usize = 16;

fn check_arguments(arguments: &Arguments) -> Outcome {
    use crate::metadata::command::ArgumentValue;
    fn depth(value: &ArgumentValue) -> usize {
        match value {
            ArgumentValue::List(values) => 1 + values.iter().map(depth).max().unwrap_or(0),
            ArgumentValue::Table(table) => 1 + table.values().map(depth).max().unwrap_or(0),
            _ => 1,
        }
    }
    match arguments.values().map(depth).max().unwrap_or(0) {
        levels if levels > ARGUMENT_DEPTH_MAX => Err(MetadataError::NotAllowed(format!(
            "arguments nested {levels} deep; the limit is {ARGUMENT_DEPTH_MAX}"
        ))),
        _ => Ok(()),
    }
}

/// The overrides as the topic config stores them (validated, trimmed).
fn normalized_configs(
    configs: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, MetadataError> {
    TopicConfig::from_pairs(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map(|config| config.overrides().clone())
        .map_err(|error| MetadataError::InvalidConfig(reason(error)))
}

fn altered_configs(
    topic: &TopicImage,
    changes: &[ConfigUpdate],
) -> Result<BTreeMap<String, String>, MetadataError> {
    let mut config = topic.config();
    for update in changes {
        let change = match &update.value {
            Some(value) => ConfigChange::Set(value.clone()),
            None => ConfigChange::Delete,
        };
        config
            .apply(&update.name, &change)
            .map_err(|error| MetadataError::InvalidConfig(reason(error)))?;
    }
    Ok(config.overrides().clone())
}

/// The reason inside a core error, without the kind its message starts
/// with: the metadata error names its own kind.
fn reason(error: crate::error::CoreError) -> String {
    match error {
        crate::error::CoreError::InvalidConfig(why)
        | crate::error::CoreError::InvalidTopic(why) => why,
        other => other.to_string(),
    }
}
