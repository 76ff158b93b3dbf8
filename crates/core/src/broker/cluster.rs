//! A broker that is a node of a cluster.
//!
//! The cluster's metadata is decided by the controller quorum (an
//! implementation of [`MetadataQuorum`], in `weir-cluster`): a topic change
//! is validated against the cluster's state, committed there, and then
//! applied on every node, which brings its own disk in line with it
//! ([`Broker::reconcile`]). The node's local metadata log stays what it is
//! on a single node — the catalog of what this node holds on disk — so
//! opening, recovery and migration work as they always did; the cluster's
//! state only drives it.
//!
//! Until partition data is replicated, every partition has one replica:
//! its leader. Every node keeps a (possibly empty) log for every partition
//! so that leadership can later move without a directory appearing, but
//! only the leader appends to it or serves it; the others answer
//! `NotLeaderOrFollower` and Kafka clients go to the leader the metadata
//! names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::broker::{summary, Broker, Replication, TopicSummary};
use crate::config::TopicConfig;
use crate::error::{CoreError, Result};
use crate::group::OFFSETS_TOPIC;
use crate::metadata::{Leadership, MetadataCommand, MetadataState, NodeImage, TopicImage};
use crate::topic::{Partition, Topic};

/// Producer ids a node takes from the cluster at once.
const PRODUCER_ID_BLOCK: u64 = 1000;
/// How often a node may lose the race for a block before it gives up.
const PRODUCER_ID_RACES_MAX: u32 = 8;

/// The controller quorum, as the broker core uses it.
pub trait MetadataQuorum: Send + Sync + std::fmt::Debug {
    /// Commits `command` and returns once this node has applied it (and so
    /// reconciled its disk with it). Blocks the calling thread.
    ///
    /// # Errors
    ///
    /// [`CoreError::ClusterUnavailable`] when no controller leader committed
    /// it in time (it may still commit later); [`CoreError::InvalidRequest`]
    /// when the state refused it at commit time (a concurrent change).
    fn commit(&self, command: MetadataCommand) -> Result<()>;

    /// The cluster's metadata as applied on this node.
    fn view(&self) -> Arc<ClusterView>;
}

/// What the cluster's metadata says about nodes and replicas, as this node
/// applied it last: cheap to read on every request.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Registered nodes by id.
    pub nodes: BTreeMap<u64, NodeImage>,
    /// The cluster's id, once named.
    pub cluster_id: Option<uuid::Uuid>,
    /// The controller leader, if any.
    pub controller: Option<u64>,
    /// How many controller voters the cluster has: the size it is meant
    /// to have, whoever has registered yet.
    pub voters: usize,
    /// The cluster's metadata state.
    pub state: MetadataState,
}

impl ClusterView {
    /// The view of `state`, in a cluster of `voters` controller voters.
    pub fn new(state: MetadataState, controller: Option<u64>, voters: usize) -> ClusterView {
        ClusterView {
            nodes: state.nodes().clone(),
            cluster_id: state.cluster_id(),
            controller,
            voters,
            state,
        }
    }

    /// Registered, unfenced nodes, by id.
    pub fn live_nodes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, node)| !node.fenced)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The replicas of a partition, the leader first.
    pub fn replicas(&self, topic: &str, partition: u32) -> Option<&[u64]> {
        self.state
            .topic(topic)?
            .replicas
            .get(partition as usize)
            .map(Vec::as_slice)
    }

    /// The partition's leadership.
    pub fn leadership(&self, topic: &str, partition: u32) -> Option<Leadership> {
        self.state.topic(topic)?.leadership(partition)
    }

    /// The partition's leader when it is registered and not fenced.
    pub fn leader(&self, topic: &str, partition: u32) -> Option<u64> {
        let leader = self.leadership(topic, partition)?.leader?;
        self.nodes
            .get(&leader)
            .filter(|node| !node.fenced)
            .map(|_| leader)
    }
}

/// A node as Kafka clients are told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaNode {
    /// Broker id.
    pub id: i32,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: i32,
}

impl Broker {
    /// The nodes Kafka clients may use: in a cluster every live node with a
    /// Kafka endpoint; `None` on a single node, whose front-end names its
    /// own listener.
    pub fn kafka_nodes(&self) -> Option<Vec<KafkaNode>> {
        let view = self.cluster_view()?;
        Some(
            view.nodes
                .iter()
                .filter(|(_, node)| !node.fenced)
                .filter_map(|(id, node)| {
                    let (host, port) = node.kafka.as_deref()?.rsplit_once(':')?;
                    Some(KafkaNode {
                        id: *id as i32,
                        host: host
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                        port: port.parse().ok()?,
                    })
                })
                .collect(),
        )
    }

    /// The node that coordinates groups and transactional ids: this node
    /// on a single node; in a cluster the leader of partition 0 of
    /// [`OFFSETS_TOPIC`], which holds their state (`None` until the topic
    /// exists and while its leader is down).
    pub fn coordinator_node(&self) -> Option<i32> {
        self.partition_leader(OFFSETS_TOPIC, 0)
    }

    /// Periodic work of a node of a cluster: in-sync set changes, and the
    /// offsets topic until it exists.
    pub async fn maintain_cluster(self: &Arc<Self>) {
        self.maintain_isr().await;
        self.create_offsets_topic().await;
    }

    /// Creates [`OFFSETS_TOPIC`] once enough nodes are live for its
    /// replicas (Kafka likewise waits for `offsets.topic.replication.factor`
    /// brokers): one partition on `default.replication.factor` nodes (at
    /// most the voters), at least two of them in sync for a write, nothing
    /// deleted by retention (the store compacts itself). Only the lowest
    /// live node proposes it. Until it exists, FindCoordinator answers
    /// COORDINATOR_NOT_AVAILABLE and clients retry.
    async fn create_offsets_topic(self: &Arc<Self>) {
        let Some(quorum) = self.quorum().cloned() else {
            return;
        };
        let view = quorum.view();
        let live = view.live_nodes();
        let factor =
            (self.config().default_replication_factor.max(1) as usize).min(view.voters.max(1));
        if view.state.topic(OFFSETS_TOPIC).is_some()
            || view.controller.is_none()
            || live.len() < factor
            || live.first() != Some(&(self.node_id() as u64))
        {
            return;
        }
        let replicas = match self.spread_replicas(OFFSETS_TOPIC, 0, 1, factor) {
            Ok(replicas) => replicas,
            Err(error) => {
                tracing::debug!(%error, "the offsets topic cannot be placed yet");
                return;
            }
        };
        let min_insync = factor.min(2).to_string();
        let configs = [
            ("min.insync.replicas", min_insync.as_str()),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        let command = MetadataCommand::CreateTopic {
            name: OFFSETS_TOPIC.to_owned(),
            id: uuid::Uuid::new_v4(),
            partitions: 1,
            configs,
            replicas,
        };
        match tokio::task::spawn_blocking(move || quorum.commit(command)).await {
            Ok(Ok(())) => tracing::info!(replication_factor = factor, "created the offsets topic"),
            Ok(Err(error)) => tracing::debug!(%error, "offsets topic not created; retrying"),
            Err(error) => tracing::warn!(%error, "creating the offsets topic failed"),
        }
    }

    /// The controller leader clients are told of (this node on a single
    /// node; -1 while a cluster has none).
    pub fn controller_node(&self) -> i32 {
        match self.cluster_view() {
            None => self.node_id(),
            Some(view) => view.controller.map_or(-1, |id| id as i32),
        }
    }

    /// The cluster id clients are told of: in a cluster, the one its first
    /// controller leader chose, the same on every node.
    pub fn kafka_cluster_id(&self) -> String {
        match self.cluster_view().and_then(|view| view.cluster_id) {
            Some(id) => id.simple().to_string(),
            None => self.cluster_id().to_owned(),
        }
    }

    /// Makes this broker a node of the cluster `quorum` decides for. Call
    /// it once, right after opening, before serving clients.
    ///
    /// # Panics
    ///
    /// When called twice.
    pub fn join_cluster(
        &self,
        quorum: Arc<dyn MetadataQuorum>,
        transport: Arc<dyn crate::broker::ReplicaTransport>,
    ) {
        assert!(
            self.cluster.set(quorum).is_ok() && self.replica_transport.set(transport).is_ok(),
            "a broker joins one cluster once"
        );
        // Groups are coordinated by the leader of the offsets topic; the
        // single node's offsets log is not used in a cluster.
        self.refresh_group_coordinator();
    }

    /// How followers and coordinators reach partition leaders, in a cluster.
    pub(crate) fn replica_transport(&self) -> Option<&Arc<dyn crate::broker::ReplicaTransport>> {
        self.replica_transport.get()
    }

    /// The controller quorum, when this broker is a node of a cluster.
    pub(crate) fn quorum(&self) -> Option<&Arc<dyn MetadataQuorum>> {
        self.cluster.get()
    }

    /// The cluster as this node knows it; `None` on a single node.
    pub fn cluster_view(&self) -> Option<Arc<ClusterView>> {
        self.quorum().map(|quorum| quorum.view())
    }

    /// The leader of a partition: this node on a single node; in a cluster
    /// the node the metadata names, if it is up.
    pub fn partition_leader(&self, topic: &str, partition: u32) -> Option<i32> {
        match self.cluster_view() {
            None => Some(self.node_id()),
            Some(view) => view.leader(topic, partition).map(|id| id as i32),
        }
    }

    /// The replicas of a partition (node ids, the leader first).
    pub fn partition_replicas(&self, topic: &str, partition: u32) -> Vec<i32> {
        match self.cluster_view() {
            None => vec![self.node_id()],
            Some(view) => view
                .replicas(topic, partition)
                .unwrap_or_default()
                .iter()
                .map(|id| *id as i32)
                .collect(),
        }
    }

    /// Where a partition is being moved (`weir topic reassign`): the
    /// target replicas, until every one of them is in sync.
    pub fn partition_reassignment(&self, topic: &str, partition: u32) -> Option<Vec<i32>> {
        let view = self.cluster_view()?;
        let target = view.state.topic(topic)?.reassigning.get(&partition)?;
        Some(target.iter().map(|id| *id as i32).collect())
    }

    /// Moves each of `partitions` of `topic` to the replicas `target` (the
    /// preferred leader first), Kafka's partition reassignment: the
    /// targets copy the log as followers, and once all of them are in
    /// sync the controller makes them the replicas and the others stop
    /// being. Each partition moves on its own; all are checked first.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidRequest`] on a single node or while a partition
    /// is being moved already; [`CoreError::UnknownTopicOrPartition`],
    /// [`CoreError::InvalidPartitions`] for a partition it lacks;
    /// [`CoreError::InvalidReplicaAssignment`] for targets that are empty,
    /// repeat a node or name one that is not live;
    /// [`CoreError::ClusterUnavailable`].
    pub fn reassign_partitions(
        &self,
        topic: &str,
        partitions: &[u32],
        target: &[i32],
        principal: &crate::Principal,
    ) -> Result<()> {
        let Some(quorum) = self.quorum() else {
            return Err(CoreError::InvalidRequest(
                "replicas move only in a cluster; a single node holds every partition".into(),
            ));
        };
        let count = self.topic(topic)?.partition_count();
        if let Some(missing) = partitions.iter().find(|partition| **partition >= count) {
            return Err(CoreError::InvalidPartitions(format!(
                "topic {topic} has no partition {missing} (it has {count})"
            )));
        }
        self.check_assignment(&[target.to_vec()])?;
        let commands: Vec<MetadataCommand> = partitions
            .iter()
            .map(|partition| MetadataCommand::ReassignPartition {
                topic: topic.to_owned(),
                partition: *partition,
                target: target.iter().map(|id| *id as u64).collect(),
            })
            .collect();
        let view = quorum.view();
        for command in &commands {
            view.state.validate(command)?;
        }
        for command in commands {
            quorum.commit(command)?;
        }
        tracing::info!(
            topic,
            ?partitions,
            ?target,
            user = principal.user_name(),
            connection = principal.connection(),
            "moving partitions to new replicas"
        );
        Ok(())
    }

    /// How many partitions this node leads with fewer replicas in sync
    /// than assigned (Kafka's UnderReplicatedPartitions).
    pub fn under_replicated_partitions(&self) -> usize {
        self.topics()
            .iter()
            .flat_map(|topic| topic.partitions())
            .filter(|partition| partition.is_under_replicated())
            .count()
    }

    /// The in-sync replicas of a partition (this node on a single node).
    pub fn partition_isr(&self, topic: &str, partition: u32) -> Vec<i32> {
        match self.cluster_view() {
            None => vec![self.node_id()],
            Some(view) => view
                .leadership(topic, partition)
                .map(|leadership| leadership.isr.iter().map(|id| *id as i32).collect())
                .unwrap_or_default(),
        }
    }

    /// Partition `index` of `topic`, when this node serves it: always on a
    /// single node, in a cluster when it leads the partition.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`], [`CoreError::NotLeaderOrFollower`].
    pub fn served_partition(&self, topic: &Topic, index: i32) -> Result<Arc<Partition>> {
        let partition = topic.partition(index)?;
        if partition.is_leader_here() {
            Ok(partition)
        } else {
            Err(CoreError::NotLeaderOrFollower)
        }
    }

    /// The live nodes a new partition may be placed on: this node alone on
    /// a single node.
    pub(crate) fn live_nodes(&self) -> Vec<i32> {
        match self.cluster_view() {
            None => vec![self.node_id()],
            Some(view) => view.live_nodes().into_iter().map(|id| id as i32).collect(),
        }
    }

    /// `factor` replicas per partition on distinct live nodes, the leaders
    /// spread from a starting node the topic's name picks (so that many
    /// topics of few partitions do not all lead on the same node).
    pub(crate) fn spread_replicas(
        &self,
        name: &str,
        first: u32,
        count: u32,
        factor: usize,
    ) -> Result<Vec<Vec<u64>>> {
        let live = self.live_nodes();
        if live.len() < factor || factor == 0 {
            return Err(CoreError::InvalidReplicationFactor(format!(
                "replication factor: {factor} larger than available brokers: {}",
                live.len()
            )));
        }
        let start = crate::partitioner::murmur2(name.as_bytes()) as usize;
        Ok((first..first + count)
            .map(|partition| {
                (0..factor)
                    .map(|replica| live[(start + partition as usize + replica) % live.len()] as u64)
                    .collect()
            })
            .collect())
    }

    /// `create_topic` on a node of a cluster: the replicas are placed, the
    /// command committed through the controller, and the topic is returned
    /// once this node has applied it.
    pub(crate) fn create_topic_in_cluster(
        &self,
        quorum: &Arc<dyn MetadataQuorum>,
        name: &str,
        partitions: u32,
        replication: Replication,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<TopicSummary> {
        let replicas = match replication {
            Replication::Assignment(assignment) => assignment
                .into_iter()
                .map(|replicas| replicas.into_iter().map(|id| id as u64).collect())
                .collect(),
            Replication::Default | Replication::Factor(-1) => {
                let factor = (self.config().default_replication_factor.max(1) as usize)
                    .min(self.live_nodes().len().max(1));
                self.spread_replicas(name, 0, partitions, factor)?
            }
            Replication::Factor(factor) => {
                self.spread_replicas(name, 0, partitions, factor as usize)?
            }
        };
        let command = MetadataCommand::CreateTopic {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions,
            configs: config.overrides().clone(),
            replicas,
        };
        quorum.view().state.validate(&command)?;
        if validate_only {
            return Ok(TopicSummary {
                name: name.to_string(),
                id: uuid::Uuid::nil(),
                partitions,
                leader_epochs: vec![0; partitions as usize],
            });
        }
        quorum.commit(command)?;
        Ok(summary(self.topic(name)?.as_ref()))
    }

    /// A producer id no node of the cluster handed out before: from this
    /// node's block, taking a new block through the controller when it is
    /// used up (a block is never given back, so ids are never reused, even
    /// across restarts).
    pub(crate) fn cluster_producer_id(&self, quorum: &Arc<dyn MetadataQuorum>) -> Result<i64> {
        loop {
            {
                let mut block = self.cluster_producer_ids.lock();
                if block.0 < block.1 {
                    block.0 += 1;
                    return Ok((block.0 - 1) as i64);
                }
            }
            // Not under the lock: committing waits on the network.
            let mut refused = 0;
            let first = loop {
                let first = quorum.view().state.next_producer_id();
                let command = MetadataCommand::AllocateProducerIds {
                    node: self.node_id() as u64,
                    first,
                    count: PRODUCER_ID_BLOCK,
                };
                match quorum.commit(command) {
                    Ok(()) => break first,
                    // Another node took that block first: try the next.
                    Err(CoreError::InvalidRequest(_)) if refused < PRODUCER_ID_RACES_MAX => {
                        refused += 1;
                    }
                    Err(error) => return Err(error),
                }
            };
            let mut block = self.cluster_producer_ids.lock();
            if block.0 == block.1 {
                *block = (first, first + PRODUCER_ID_BLOCK);
            }
        }
    }

    /// Applies the leadership of each partition of `topic`, and starts
    /// copying those this node follows.
    fn set_leaderships(&self, topic: &Topic, image: &TopicImage) {
        let me = self.node_id() as u64;
        for partition in topic.partitions() {
            let index = partition.index();
            let (Some(replicas), Some(leadership)) =
                (image.replicas.get(index as usize), image.leadership(index))
            else {
                partition.set_leader_here(false);
                continue;
            };
            if partition.apply_leadership(me, replicas, leadership) {
                self.follow(topic, &partition);
            }
        }
    }

    /// Brings this node's topics in line with the cluster's metadata:
    /// creates what it lacks (with the cluster's id, partitions and
    /// configs), grows and reconfigures. A topic the cluster no longer has
    /// is deleted when its id is among `deleted` (the cluster deleted it).
    /// One whose name the cluster gives another topic is a stray (a node
    /// that held topics before it joined, or missed a deletion in a
    /// snapshot) and is moved to `quarantine/`, never deleted on a guess;
    /// one the cluster does not name at all is kept unserved (a restarted
    /// node joins with the state of its last snapshot and applies the rest
    /// of the cluster's log afterwards). Idempotent: the same state twice changes
    /// nothing the second time. Runs after every applied batch of commands
    /// and once when the node joins.
    ///
    /// # Errors
    ///
    /// The first failure; the next reconcile tries again.
    pub fn reconcile(&self, state: &MetadataState, deleted: &BTreeSet<uuid::Uuid>) -> Result<()> {
        let local: Vec<(String, uuid::Uuid)> = self
            .topics()
            .iter()
            .map(|topic| (topic.name().to_owned(), topic.id()))
            .collect();
        for (name, id) in &local {
            match state.topic(name) {
                Some(image) if image.id == *id => {}
                _ if deleted.contains(id) => self.delete_local_topic(name)?,
                Some(_) => self.set_aside_stray_topic(name)?,
                None => {
                    // Not (or not yet: a restarted node applies the
                    // cluster's log again after joining) in the cluster's
                    // metadata: kept, but not served.
                    for partition in self.topic(name)?.partitions() {
                        partition.set_leader_here(false);
                    }
                }
            }
        }
        for (name, image) in state.topics() {
            self.reconcile_topic(name, image)?;
        }
        self.refresh_group_coordinator();
        Ok(())
    }

    fn reconcile_topic(&self, name: &str, image: &TopicImage) -> Result<()> {
        let topic = match self.topic(name) {
            Ok(topic) => topic,
            Err(_) => {
                let local = TopicImage::new(image.id, image.partitions, image.configs.clone());
                let mut metadata = self.metadata.lock();
                self.install_topic(&mut metadata, name, &local)?
            }
        };
        if topic.partition_count() < image.partitions {
            self.grow_local_topic(&topic, image.partitions)?;
        }
        self.set_leaderships(&topic, image);
        if topic.config().overrides() != &image.configs {
            self.configure_local_topic(
                name,
                MetadataCommand::ReplaceTopicConfig {
                    name: name.to_owned(),
                    configs: image.configs.clone(),
                },
            )?;
        }
        Ok(())
    }
}
