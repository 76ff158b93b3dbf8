//! The broker core: the registry of topics and the one implementation of
//! every operation front-ends offer (create, delete, append, read, list
//! offsets, configure).
//!
//! Data directory layout:
//!
//! ```text
//! meta.json          cluster id and node id, written once
//! .clean-shutdown    present only between a clean stop and the next start
//! metadata/          the metadata log: which topics exist, with their ids,
//!                    partition counts and configs (crate::metadata)
//! topics/<name>/     one directory per topic: its partitions' logs (crate::topic)
//! staging/<uuid>/    a topic being created or deleted; emptied on every start
//! quarantine/        entities that could not be opened (crate::quarantine)
//! ```
//!
//! Every topic change (create, delete, grow, configure) is a metadata
//! command: validated against the metadata state, appended to the metadata
//! log and synced, applied, and only then made visible on disk, so the
//! metadata log is the one source of truth. What can be prepared out of
//! sight is prepared before the command (a new topic's partition
//! directories under `staging/`, new partitions' directories beyond the
//! count), so a full disk fails the change before it is in the log. Start-up
//! makes the directories agree with it: a topic the log names whose
//! directory is missing (a crash after the command, before the directory)
//! gets a new, empty one; a directory the log does not name is quarantined.
//! A data directory from before the metadata log is migrated on its first
//! start (see [`open_metadata`]).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use weir_log::batch::{self, BatchHeader};
use weir_log::checkpoint::{sync_dir, write_atomically};
use weir_log::Written;

use crate::alarm::DiskAlarm;
use crate::config::{BrokerConfig, ConfigChange, ConfigEntry, TopicConfig};
use crate::connections::Connections;
use crate::data_lock::DataDirLock;
use crate::descriptors::DescriptorBudget;
use crate::error::{CoreError, Result};
use crate::group::{GroupCoordinator, OffsetStore};
use crate::metadata::{MetadataCommand, MetadataOptions, MetadataState, MetadataStore};
use crate::metrics::Metrics;
use crate::principal::Principal;
use crate::producer::{AbortedTransaction, ProducerIds, SequenceCheck};
use crate::quarantine::{at_path, is_entity_fault, quarantine};
use crate::topic::{Partition, Topic};
use crate::transactions::Transactions;

mod cluster;
mod replication;

pub use self::cluster::{ClusterView, KafkaNode, MetadataQuorum};
pub use self::replication::{
    ReplicaCall, ReplicaRefusal, ReplicaReply, ReplicaRequest, ReplicaTransport,
};

const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
const META_FILE: &str = "meta.json";
/// Where topics are assembled before they appear under `topics/`.
const STAGING_DIR: &str = "staging";
/// The metadata log (crate::metadata).
pub(crate) const METADATA_DIR: &str = "metadata";
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    cluster_id: String,
    node_id: i32,
}

/// How much durability a producer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No answer is expected (Kafka `acks=0`).
    None,
    /// Durable on this broker (Kafka `acks=1`).
    Leader,
    /// Durable on every in-sync replica (Kafka `acks=all`).
    All,
}

/// Which offset [`Broker::list_offset`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset stored.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first record with a timestamp at or after this (ms since epoch).
    Timestamp(i64),
}

/// How a new topic's partitions are replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// The broker's default (one replica on a single broker).
    Default,
    /// This many replicas per partition.
    Factor(i16),
    /// Replica broker ids for each partition, in partition order.
    Assignment(Vec<Vec<i32>>),
}

/// An append that is written and may still be waiting to become durable.
#[derive(Debug)]
pub struct Appended {
    /// Offset of the first appended record.
    pub base_offset: u64,
    /// Log start offset when appended.
    pub log_start_offset: u64,
    partition: Arc<Partition>,
    written: Written,
    acks: Acks,
    /// The leader epoch the batch was appended in.
    leader_epoch: i32,
    /// For `acks=all`: replicas that must be in sync, and how long to wait.
    min_insync: usize,
    replication_timeout: std::time::Duration,
}

impl Appended {
    /// Waits until the append is durable as `acks` and the topic require:
    /// on this node's disk, and for `acks=all` on every in-sync replica's.
    ///
    /// # Errors
    ///
    /// [`CoreError::Storage`] when the log failed before the data was
    /// durable; for `acks=all` the errors of replication
    /// ([`CoreError::NotLeaderOrFollower`],
    /// [`CoreError::NotEnoughReplicasAfterAppend`],
    /// [`CoreError::RequestTimedOut`]).
    pub async fn durable(&self) -> Result<()> {
        if self.acks == Acks::None {
            return Ok(());
        }
        self.partition
            .wait_durable(self.written, self.leader_epoch)
            .await?;
        if self.acks == Acks::All {
            self.partition
                .wait_replicated(
                    self.written.end_offset,
                    self.leader_epoch,
                    self.min_insync,
                    self.replication_timeout,
                )
                .await?;
        }
        Ok(())
    }
}

/// An append queued behind earlier writes to its partition.
#[derive(Debug)]
#[must_use = "the write happens either way; await it to learn its offsets"]
pub struct PendingAppend {
    written: tokio::sync::oneshot::Receiver<Result<Appended>>,
}

impl PendingAppend {
    /// Waits until the batch is written (not yet durable).
    ///
    /// # Errors
    ///
    /// [`CoreError::OutOfOrderSequence`], [`CoreError::InvalidProducerEpoch`],
    /// [`CoreError::InvalidTxnState`] (idempotence and transactions, checked
    /// in write order), [`CoreError::MessageTooLarge`], storage errors.
    pub async fn written(self) -> Result<Appended> {
        self.written.await.unwrap_or_else(|_| {
            Err(CoreError::Storage(weir_log::LogError::Io(
                io::Error::other(crate::write_queue::JobPanicked),
            )))
        })
    }
}

/// Writes one validated batch to a partition's log, checking the
/// producer's sequence in write order; runs on the partition's write queue.
fn write_batch(
    partition: &Arc<Partition>,
    batches: &[(BatchHeader, Bytes)],
    in_transaction: bool,
    acks: Acks,
    (min_insync, replication_timeout): (usize, std::time::Duration),
) -> Result<Appended> {
    let header = batches[0].0;
    let (leader_epoch, base_offset, written) = partition.append_as_leader(None, |epoch| {
        if header.producer_id < 0 {
            let info = partition.log().append(batches, epoch, now_ms())?;
            return Ok((epoch, info.base_offset, info.written()));
        }
        let mut producers = partition.producers();
        let check = producers.check(&header)?;
        // After the epoch check, so a fenced producer hears it is fenced;
        // a retried batch gets its offsets even if its transaction has
        // ended since.
        if check == SequenceCheck::Append && header.is_transactional() && !in_transaction {
            return Err(CoreError::InvalidTxnState);
        }
        Ok(match check {
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } => (
                epoch,
                base_offset,
                partition.log().holding_below(last_offset + 1),
            ),
            SequenceCheck::Append => {
                let info = partition.log().append(batches, epoch, now_ms())?;
                producers.record(&header, info.base_offset);
                (epoch, info.base_offset, info.written())
            }
        })
    })?;
    Ok(Appended {
        base_offset,
        log_start_offset: partition.log().offsets().log_start_offset,
        written,
        partition: Arc::clone(partition),
        acks,
        leader_epoch,
        min_insync,
        replication_timeout,
    })
}

/// Records read from a partition, with the offsets a consumer needs.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole record batches, as stored.
    pub records: Bytes,
    /// End of what is durable and readable.
    pub high_watermark: u64,
    /// Start of the oldest open transaction (or the high watermark).
    pub last_stable_offset: u64,
    /// First offset stored.
    pub log_start_offset: u64,
    /// For read_committed reads: aborted transactions in the range read.
    pub aborted: Vec<AbortedTransaction>,
}

/// Which records a consumer may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything below the high watermark.
    ReadUncommitted,
    /// Only below the last stable offset; aborted transactions are listed.
    ReadCommitted,
}

/// Facts about a topic for metadata answers.
#[derive(Debug, Clone)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Topic id.
    pub id: uuid::Uuid,
    /// Partition count.
    pub partitions: u32,
    /// Leader epoch of each partition, by index.
    pub leader_epochs: Vec<i32>,
}

/// The broker core. Cheap to share (`Arc<Broker>`); every method takes `&self`.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    cluster_id: String,
    topics_dir: PathBuf,
    /// Where new topics are assembled before they are renamed into `topics_dir`.
    staging_dir: PathBuf,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    producer_ids: ProducerIds,
    /// The group coordinator: always on a single node; in a cluster while
    /// this node leads the offsets partition ([`Broker::refresh_group_coordinator`]).
    pub(crate) groups: RwLock<Option<Arc<GroupCoordinator>>>,
    /// The single node's offsets log (`data/__consumer_offsets/`), closed
    /// on shutdown; a cluster keeps its offsets in a replicated partition.
    local_offsets: Arc<OffsetStore>,
    /// The transaction coordinator's state: on a single node always; in a
    /// cluster that of the group coordinator, replayed with it.
    pub(crate) transactions: RwLock<Arc<Transactions>>,
    /// The metadata log and state. Its lock serialises every topic change,
    /// so a check, the command and the disk change are one step.
    metadata: Mutex<MetadataStore>,
    /// On while free disk space is below `disk_free_limit_bytes`: produces are refused.
    disk_alarm: DiskAlarm,
    /// This node's counters and histograms; its logs report their syncs here.
    metrics: Arc<Metrics>,
    /// This node's live client connections.
    connections: Arc<Connections>,
    /// Per topic, the queues that read it (`x-source-topic`): such a topic
    /// cannot be deleted under them.
    topic_readers: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Held while open: no second process may use this data directory.
    _data_lock: DataDirLock,
    /// The controller quorum, once this broker joined a cluster.
    cluster: std::sync::OnceLock<Arc<dyn MetadataQuorum>>,
    /// In a cluster, the producer ids this node took and has not handed
    /// out yet: `next..end`.
    cluster_producer_ids: Mutex<(u64, u64)>,
    /// In a cluster, how followers reach partition leaders.
    replica_transport: std::sync::OnceLock<Arc<dyn ReplicaTransport>>,
}

impl Broker {
    /// Opens the data directory, loading every topic. After a clean shutdown
    /// no log is scanned; otherwise each active segment's tail is validated.
    ///
    /// # Errors
    ///
    /// I/O errors reading metadata or logs.
    pub fn open(config: BrokerConfig) -> Result<Broker> {
        let topics_dir = config.data_dir.join("topics");
        fs::create_dir_all(&topics_dir).map_err(|error| at_path(&topics_dir, error))?;
        let data_lock = DataDirLock::acquire(&config.data_dir)?;
        let meta = load_or_create_meta(&config.data_dir, config.node_id)?;
        let marker = config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean = marker.exists();
        if clean {
            // Removed before anything is written, so a crash from here on is
            // never mistaken for a clean stop.
            fs::remove_file(&marker)
                .and_then(|()| sync_dir(&config.data_dir))
                .map_err(|error| at_path(&marker, error))?;
        }
        let staging_dir = config.data_dir.join(STAGING_DIR);
        clear_staging(&staging_dir)?;
        let mut metadata = open_metadata(&config, &topics_dir)?;
        let metrics = Arc::new(Metrics::new());
        let topics = open_topics(&config, &topics_dir, &mut metadata, clean, &metrics)?;
        tracing::info!(topics = topics.len(), clean, data_dir = %config.data_dir.display(), "broker core opened");
        let offsets = Arc::new(
            OffsetStore::open(&config.data_dir, clean, &metrics)
                .map_err(|error| at_path(&config.data_dir.join("__consumer_offsets"), error))?,
        );
        let disk_alarm = DiskAlarm::new(&config.data_dir, config.disk_free_limit_bytes);
        let broker = Broker {
            producer_ids: ProducerIds::open(&config.data_dir)
                .map_err(|error| at_path(&config.data_dir.join(crate::producer::ID_FILE), error))?,
            groups: RwLock::new(Some(Arc::new(GroupCoordinator::new(
                config.groups.clone(),
                config.clock.clone(),
                Arc::clone(&offsets),
            )))),
            transactions: RwLock::new(Arc::new(Transactions::restore(offsets.transactions()))),
            local_offsets: offsets,
            cluster_id: meta.cluster_id,
            config,
            topics_dir,
            staging_dir,
            topics: RwLock::new(topics),
            metadata: Mutex::new(metadata),
            disk_alarm,
            metrics,
            connections: Arc::default(),
            topic_readers: Mutex::new(HashMap::new()),
            _data_lock: data_lock,
            cluster: std::sync::OnceLock::new(),
            cluster_producer_ids: Mutex::new((0, 0)),
            replica_transport: std::sync::OnceLock::new(),
        };
        broker.disk_alarm.check();
        // Offsets of topics deleted while their tombstones were not yet durable.
        broker.forget_topic_offsets(|topic| broker.topics.read().contains_key(topic));
        Ok(broker)
    }

    /// Whether `name` is a topic of the broker's own (the offsets topic of
    /// a cluster): clients may read it, never write, delete or grow it.
    pub fn is_internal_topic(&self, name: &str) -> bool {
        self.quorum().is_some() && name == crate::group::OFFSETS_TOPIC
    }

    /// [`CoreError::InvalidTopic`] for an internal topic, as Kafka answers
    /// a client that writes to one.
    fn refuse_internal(&self, name: &str) -> Result<()> {
        if self.is_internal_topic(name) {
            return Err(CoreError::InvalidTopic(format!(
                "'{name}' is an internal topic of the broker"
            )));
        }
        Ok(())
    }

    /// How many replicas of `topic` must be in sync for an `acks=all` write.
    pub(crate) fn min_insync(&self, topic: &Topic) -> usize {
        usize::try_from(
            topic
                .config()
                .min_insync_replicas(&self.config.topic_defaults),
        )
        .unwrap_or(usize::MAX)
    }

    /// The settings the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// This node's metrics, shared with its front-ends and HTTP API.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// This node's registry of client connections.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// The disk alarm: the owner measures free space with
    /// [`DiskAlarm::check`] on an interval; while it is on, appends fail
    /// with [`CoreError::DiskFull`] and AMQP publishers are blocked.
    pub fn disk_alarm(&self) -> &DiskAlarm {
        &self.disk_alarm
    }

    /// This cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// A new id for an idempotent producer, never handed out before.
    ///
    /// # Errors
    ///
    /// I/O errors persisting the id block.
    pub fn new_producer_id(&self) -> Result<i64> {
        match self.quorum() {
            Some(quorum) => self.cluster_producer_id(quorum),
            None => Ok(self.producer_ids.next()?),
        }
    }

    /// A topic by name.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`].
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or(CoreError::UnknownTopicOrPartition)
    }

    /// A topic by id.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`].
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .values()
            .find(|topic| topic.id() == id)
            .cloned()
            .ok_or(CoreError::UnknownTopicOrPartition)
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.topics.read().values().cloned().collect();
        topics.sort_by(|a, b| a.name().cmp(b.name()));
        topics
    }

    /// The topic, created with the default settings if it does not exist and
    /// `allow_create` and the broker's `auto_create_topics` both allow it.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`] when it does not exist and may
    /// not be created; [`CoreError::InvalidTopic`] for a bad name.
    pub fn topic_or_create(
        &self,
        name: &str,
        allow_create: bool,
        principal: &Principal,
    ) -> Result<Arc<Topic>> {
        match self.topic(name) {
            Err(CoreError::UnknownTopicOrPartition)
                if allow_create && self.config.auto_create_topics =>
            {
                match self.create_topic(
                    name,
                    None,
                    Replication::Default,
                    TopicConfig::default(),
                    false,
                    principal,
                ) {
                    Ok(_) | Err(CoreError::TopicAlreadyExists(_)) => self.topic(name),
                    Err(error) => Err(error),
                }
            }
            other => other,
        }
    }

    /// Creates a topic. `partitions: None` takes the broker default.
    /// With `validate_only` nothing changes but every check runs.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidTopic`], [`CoreError::TopicAlreadyExists`],
    /// [`CoreError::InvalidPartitions`], I/O errors.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: Option<i32>,
        replication: Replication,
        config: TopicConfig,
        validate_only: bool,
        principal: &Principal,
    ) -> Result<TopicSummary> {
        validate_topic_name(name)?;
        self.refuse_internal(name)?;
        let partitions = match &replication {
            Replication::Default => partitions,
            Replication::Factor(factor) => {
                self.check_replication_factor(*factor)?;
                partitions
            }
            Replication::Assignment(assignment) => {
                if partitions.is_some_and(|n| n != -1) {
                    return Err(CoreError::InvalidRequest(
                        "give either a partition count or a replica assignment, not both".into(),
                    ));
                }
                self.check_assignment(assignment)?;
                Some(assignment.len() as i32)
            }
        };
        let partitions = match partitions {
            None | Some(-1) => self.config.default_partitions,
            Some(n) if n > 0 => n as u32,
            Some(n) => {
                return Err(CoreError::InvalidPartitions(format!(
                    "{n} partitions; it must be at least 1"
                )))
            }
        };
        check_descriptor_budget(u64::from(partitions))?;
        let created = match self.quorum() {
            Some(quorum) => self.create_topic_in_cluster(
                quorum,
                name,
                partitions,
                replication,
                config,
                validate_only,
            )?,
            None => self.create_local_topic(name, partitions, config, validate_only)?,
        };
        if !validate_only {
            tracing::info!(
                topic = name,
                partitions,
                user = principal.user_name(),
                connection = principal.connection(),
                "created topic"
            );
        }
        Ok(created)
    }

    /// `create_topic` on a single node.
    fn create_local_topic(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<TopicSummary> {
        let mut metadata = self.metadata.lock();
        let image = crate::metadata::TopicImage::new(
            uuid::Uuid::new_v4(),
            partitions,
            config.overrides().clone(),
        );
        metadata.state().validate(&creation(name, &image))?;
        if validate_only {
            return Ok(TopicSummary {
                name: name.to_string(),
                id: uuid::Uuid::nil(),
                partitions,
                leader_epochs: vec![0; partitions as usize],
            });
        }
        let topic = self.install_topic(&mut metadata, name, &image)?;
        Ok(summary(&topic))
    }

    /// Creates the topic `image` describes on this node: its directories
    /// (assembled aside), its command in the local metadata log, and its
    /// place in the registry.
    fn install_topic(
        &self,
        metadata: &mut MetadataStore,
        name: &str,
        image: &crate::metadata::TopicImage,
    ) -> Result<Arc<Topic>> {
        let mut committed = false;
        let created = Topic::create(
            self.topics_dir.join(name),
            &self.staging_dir,
            name,
            image,
            &self.config.topic_defaults,
            &self.metrics,
            || {
                metadata.commit(creation(name, image))?;
                committed = true;
                Ok(())
            },
        );
        let topic = match created {
            Ok(topic) => Arc::new(topic),
            Err(error) => {
                // Clients see only KAFKA_STORAGE_ERROR; the operator needs the cause.
                tracing::error!(topic = name, partitions = image.partitions, %error, "creating topic failed");
                if committed {
                    self.take_back_creation(metadata, name, image.id);
                }
                return Err(error);
            }
        };
        self.topics
            .write()
            .insert(name.to_string(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Removes from the metadata log a topic whose command is durable but
    /// whose directory could not be installed or opened. Should that fail
    /// too, the log names a topic this broker does not serve: the store is
    /// poisoned so nothing is decided on that difference, and the next
    /// start creates the directory the log names.
    fn take_back_creation(&self, metadata: &mut MetadataStore, name: &str, id: uuid::Uuid) {
        let undo = MetadataCommand::DeleteTopic {
            name: name.to_string(),
            id,
        };
        if let Err(error) = metadata.commit(undo) {
            metadata.poison(&format!(
                "the creation of topic {name} could not be taken back: {error}"
            ));
        }
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`], I/O errors.
    pub fn delete_topic(&self, name: &str, principal: &Principal) -> Result<()> {
        self.refuse_internal(name)?;
        if let Some(quorum) = self.quorum() {
            self.check_unread(name)?;
            let id = self.topic(name)?.id();
            quorum.commit(MetadataCommand::DeleteTopic {
                name: name.to_string(),
                id,
            })?;
        } else {
            let mut metadata = self.metadata.lock();
            self.check_unread(name)?;
            self.uninstall_topic(&mut metadata, name)?;
        }
        tracing::info!(
            topic = name,
            user = principal.user_name(),
            connection = principal.connection(),
            "deleted topic"
        );
        Ok(())
    }

    /// Refuses to delete a topic a queue reads.
    fn check_unread(&self, name: &str) -> Result<()> {
        match self.topic_readers.lock().get(name) {
            Some(readers) => {
                let readers: Vec<&str> = readers.iter().map(String::as_str).collect();
                Err(CoreError::TopicInUse(format!(
                    "topic '{name}' is read by {}; delete them first",
                    readers.join(", ")
                )))
            }
            None => Ok(()),
        }
    }

    /// Deletes a topic of this node: its command in the local metadata log,
    /// then its directory and logs.
    fn delete_local_topic(&self, name: &str) -> Result<()> {
        let mut metadata = self.metadata.lock();
        self.uninstall_topic(&mut metadata, name)
    }

    /// Takes a topic the cluster does not know off this node without
    /// deleting its data: out of the local metadata log, its directory
    /// moved to `quarantine/topics/`.
    fn set_aside_stray_topic(&self, name: &str) -> Result<()> {
        let mut metadata = self.metadata.lock();
        let topic = self.topic(name)?;
        metadata.commit(MetadataCommand::DeleteTopic {
            name: name.to_string(),
            id: topic.id(),
        })?;
        self.topics.write().remove(name);
        topic.mark_deleted();
        quarantine(
            &self.config.data_dir,
            "topics",
            topic.dir(),
            &"the cluster's metadata has no such topic",
        )?;
        Ok(())
    }

    fn uninstall_topic(&self, metadata: &mut MetadataStore, name: &str) -> Result<()> {
        let topic = self.topic(name)?;
        metadata.commit(MetadataCommand::DeleteTopic {
            name: name.to_string(),
            id: topic.id(),
        })?;
        self.topics.write().remove(name);
        topic.mark_deleted();
        // One rename takes the directory out of `topics/`; staging is
        // emptied on every start, so a crash from here on leaves nothing
        // the metadata log does not name.
        let doomed = self
            .staging_dir
            .join(format!("deleted-{}", uuid::Uuid::new_v4().simple()));
        fs::rename(topic.dir(), &doomed).map_err(|error| at_path(topic.dir(), error))?;
        sync_dir(&self.topics_dir)?;
        for partition in topic.partitions() {
            // Closes the log; its directory has moved, so nothing is
            // found to remove here.
            partition.log().delete()?;
        }
        fs::remove_dir_all(&doomed).map_err(|error| at_path(&doomed, error))?;
        self.forget_topic_offsets(|other| other != name);
        Ok(())
    }

    /// Records that `reader` (a queue, named for error messages) reads
    /// `topic`: until [`Broker::release_topic`], the topic cannot be deleted.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`] when there is no such topic.
    pub fn hold_topic(&self, topic: &str, reader: &str) -> Result<Arc<Topic>> {
        self.refuse_internal(topic)?;
        // Under the metadata lock, so a deletion cannot slip in between.
        let _metadata = self.metadata.lock();
        let found = self.topic(topic)?;
        self.topic_readers
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .insert(reader.to_owned());
        Ok(found)
    }

    /// Undoes [`Broker::hold_topic`].
    pub fn release_topic(&self, topic: &str, reader: &str) {
        let mut readers = self.topic_readers.lock();
        if let Some(set) = readers.get_mut(topic) {
            set.remove(reader);
            if set.is_empty() {
                readers.remove(topic);
            }
        }
    }

    /// Makes a topic of one partition whose log already exists (a stream
    /// queue stored by an older release): the directory `staged` holds the
    /// partition's log as `0/`. An adoption marker is written into it, it is
    /// renamed into `topics/<name>` whole, then the topic's command is
    /// committed and the marker removed. A crash after the rename is
    /// finished by the next start ([`open_topics`] commits what a marked
    /// directory describes); before it, `staged` is where it was.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidTopic`], [`CoreError::TopicAlreadyExists`], I/O errors.
    pub fn adopt_topic(
        &self,
        name: &str,
        staged: &Path,
        config: TopicConfig,
    ) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        let mut metadata = self.metadata.lock();
        let image =
            crate::metadata::TopicImage::new(uuid::Uuid::new_v4(), 1, config.overrides().clone());
        let command = creation(name, &image);
        metadata.state().validate(&command)?;
        let dir = self.topics_dir.join(name);
        crate::topic::write_adoption(staged, &image)?;
        fs::rename(staged, &dir).map_err(|error| at_path(staged, error))?;
        if let Some(parent) = staged.parent() {
            sync_dir(parent)?;
        }
        sync_dir(&self.topics_dir)?;
        metadata.commit(command)?;
        crate::topic::remove_adoption(&dir).map_err(|error| at_path(&dir, error))?;
        let topic = Arc::new(Topic::open(
            dir,
            name,
            &image,
            &self.config.topic_defaults,
            false,
            &self.metrics,
        )?);
        self.topics
            .write()
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, "adopted a stream queue's log as a topic");
        Ok(topic)
    }

    /// Grows a topic to `total` partitions.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`]; [`CoreError::InvalidPartitions`]
    /// when `total` is not larger than the current count.
    pub fn create_partitions(
        &self,
        name: &str,
        total: i32,
        assignment: Option<&[Vec<i32>]>,
        validate_only: bool,
        principal: &Principal,
    ) -> Result<()> {
        self.refuse_internal(name)?;
        let topic = self.topic(name)?;
        let current = topic.partition_count();
        if let Some(assignment) = assignment {
            if assignment.len() as i64 != i64::from(total) - i64::from(current) {
                return Err(CoreError::InvalidReplicaAssignment(format!(
                    "{} assignments for {} new partitions",
                    assignment.len(),
                    i64::from(total) - i64::from(current)
                )));
            }
            self.check_assignment(assignment)?;
        }
        if total <= current as i32 {
            return Err(CoreError::InvalidPartitions(format!(
                "topic currently has {current} partitions, which is higher than the requested {total}"
            )));
        }
        let total = total as u32;
        check_descriptor_budget(u64::from(total - current))?;
        if let Some(quorum) = self.quorum() {
            let replicas = match assignment {
                Some(assignment) => assignment
                    .iter()
                    .map(|replicas| replicas.iter().map(|id| *id as u64).collect())
                    .collect(),
                None => {
                    let factor = quorum.view().replicas(name, 0).map_or(1, <[u64]>::len);
                    self.spread_replicas(name, current, total - current, factor)?
                }
            };
            let command = MetadataCommand::CreatePartitions {
                name: name.to_string(),
                total,
                replicas,
            };
            quorum.view().state.validate(&command)?;
            if !validate_only {
                quorum.commit(command)?;
            }
        } else {
            let mut metadata = self.metadata.lock();
            metadata.state().validate(&growth(name, total))?;
            if !validate_only {
                self.grow_locked(&mut metadata, &topic, total)?;
            }
        }
        if !validate_only {
            tracing::info!(
                topic = name,
                partitions = total,
                user = principal.user_name(),
                connection = principal.connection(),
                "added partitions"
            );
        }
        Ok(())
    }

    /// Grows a topic of this node to `total` partitions.
    fn grow_local_topic(&self, topic: &Topic, total: u32) -> Result<()> {
        let mut metadata = self.metadata.lock();
        self.grow_locked(&mut metadata, topic, total)
    }

    fn grow_locked(&self, metadata: &mut MetadataStore, topic: &Topic, total: u32) -> Result<()> {
        // The new partitions' directories are made first and the command
        // committed after them: a failure before the commit removes them
        // again, and after it they are there.
        topic.add_partitions(total, &self.config.topic_defaults, &self.metrics, || {
            metadata
                .commit(growth(topic.name(), total))
                .map(drop)
                .map_err(CoreError::from)
        })
    }

    fn check_replication_factor(&self, factor: i16) -> Result<()> {
        let live = self.live_nodes().len();
        match factor {
            -1 => Ok(()),
            n if n < 1 => Err(CoreError::InvalidReplicationFactor(
                "replication factor must be larger than 0, or -1 to use the default".into(),
            )),
            n if n as usize > live => Err(CoreError::InvalidReplicationFactor(format!(
                "replication factor: {n} larger than available brokers: {live}"
            ))),
            _ => Ok(()),
        }
    }

    fn check_assignment(&self, assignment: &[Vec<i32>]) -> Result<()> {
        let live = self.live_nodes();
        for replicas in assignment {
            let distinct: BTreeSet<&i32> = replicas.iter().collect();
            if replicas.is_empty() || distinct.len() != replicas.len() {
                return Err(CoreError::InvalidReplicaAssignment(format!(
                    "replicas {replicas:?} are empty or repeat a broker"
                )));
            }
            if let Some(node) = replicas.iter().find(|node| !live.contains(node)) {
                return Err(CoreError::InvalidReplicaAssignment(format!(
                    "replica {node} is not a live broker (live: {live:?})"
                )));
            }
        }
        Ok(())
    }

    /// Every setting of a topic with its effective value.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`].
    pub fn describe_topic_config(
        &self,
        name: &str,
        _principal: &Principal,
    ) -> Result<Vec<ConfigEntry>> {
        Ok(self
            .topic(name)?
            .config()
            .entries(&self.config.topic_defaults))
    }

    /// Applies changes to a topic's settings, all or nothing.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`], [`CoreError::InvalidConfig`].
    pub fn alter_topic_config(
        &self,
        name: &str,
        changes: &[(String, ConfigChange)],
        validate_only: bool,
        principal: &Principal,
    ) -> Result<()> {
        let command = MetadataCommand::AlterTopicConfig {
            name: name.to_string(),
            changes: changes
                .iter()
                .map(|(key, change)| crate::metadata::ConfigUpdate {
                    name: key.clone(),
                    value: match change {
                        ConfigChange::Set(value) => Some(value.clone()),
                        ConfigChange::Delete => None,
                    },
                })
                .collect(),
        };
        self.change_topic_config(name, command, validate_only, principal)
    }

    /// Replaces all of a topic's overrides (Kafka's legacy AlterConfigs).
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`], [`CoreError::InvalidConfig`].
    pub fn replace_topic_config(
        &self,
        name: &str,
        pairs: &[(String, String)],
        validate_only: bool,
        principal: &Principal,
    ) -> Result<()> {
        let command = MetadataCommand::ReplaceTopicConfig {
            name: name.to_string(),
            configs: pairs.iter().cloned().collect(),
        };
        self.change_topic_config(name, command, validate_only, principal)
    }

    /// Validates, commits and installs a change of a topic's overrides.
    fn change_topic_config(
        &self,
        name: &str,
        command: MetadataCommand,
        validate_only: bool,
        principal: &Principal,
    ) -> Result<()> {
        self.topic(name)?;
        if let Some(quorum) = self.quorum() {
            quorum.view().state.validate(&command)?;
            if !validate_only {
                quorum.commit(command)?;
            }
        } else {
            let mut metadata = self.metadata.lock();
            metadata.state().validate(&command)?;
            if !validate_only {
                self.configure_locked(&mut metadata, name, command)?;
            }
        }
        if !validate_only {
            tracing::info!(
                topic = name,
                user = principal.user_name(),
                connection = principal.connection(),
                "changed topic config"
            );
        }
        Ok(())
    }

    /// Applies a config command to a topic of this node.
    fn configure_local_topic(&self, name: &str, command: MetadataCommand) -> Result<()> {
        let mut metadata = self.metadata.lock();
        self.configure_locked(&mut metadata, name, command)
    }

    fn configure_locked(
        &self,
        metadata: &mut MetadataStore,
        name: &str,
        command: MetadataCommand,
    ) -> Result<()> {
        let topic = self.topic(name)?;
        metadata.commit(command)?;
        let image = metadata
            .state()
            .topic(name)
            .expect("a configured topic is in the state");
        topic.set_config(image.config(), &self.config.topic_defaults);
        Ok(())
    }

    /// Validates a producer's batches for one partition and queues their
    /// write. The write runs off the async threads (it may roll a segment,
    /// which fsyncs), after every write to the partition queued before it,
    /// so appends keep the caller's order; await [`PendingAppend::written`],
    /// then [`Appended::durable`] before acknowledging.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`], [`CoreError::CorruptMessage`],
    /// [`CoreError::UnsupportedMessageFormat`], [`CoreError::MessageTooLarge`],
    /// [`CoreError::PolicyViolation`] (min.insync.replicas); the write's own
    /// errors come from [`PendingAppend::written`].
    pub fn append(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: Acks,
        principal: &Principal,
    ) -> Result<PendingAppend> {
        self.refuse_internal(topic)?;
        let topic = self.topic_or_create(topic, true, principal)?;
        let partition = self.served_partition(&topic, partition)?;
        if self.disk_alarm.is_on() {
            return Err(CoreError::DiskFull);
        }
        let min_insync = self.min_insync(&topic);
        if acks == Acks::All && partition.in_sync_count() < min_insync {
            return Err(CoreError::NotEnoughReplicas);
        }
        let replication = (min_insync, self.config.replication_timeout);
        let batches = batch::split_batches(records)?;
        // As Apache Kafka: a v2 produce carries exactly one batch per
        // partition, which keeps idempotence checks per batch simple.
        let [(header, _)] = batches.as_slice() else {
            return Err(CoreError::InvalidRecord(format!(
                "{} record batches for one partition; exactly one is allowed",
                batches.len()
            )));
        };
        // In a cluster the transaction coordinator is usually another
        // node: a partition leader takes a transactional batch unchecked,
        // as Kafka did before KIP-890.
        let in_transaction = header.producer_id >= 0
            && header.is_transactional()
            && (self.quorum().is_some()
                || self.transactions.read().allows(
                    header.producer_id,
                    &(topic.name().to_string(), partition.index() as i32),
                ));
        // An acks=0 write is made durable in the background, on this runtime.
        let runtime = tokio::runtime::Handle::try_current().ok();
        let writer = Arc::clone(&partition);
        let written = partition.submit_write(move || {
            let appended = write_batch(&writer, &batches, in_transaction, acks, replication)?;
            if let (Acks::None, Some(runtime)) = (acks, runtime) {
                // Nobody waits for this write, yet readers only see durable
                // data: make it durable in the background.
                let written = appended.written;
                runtime.spawn(async move {
                    if let Err(error) = writer.log().wait_durable(written).await {
                        tracing::error!(%error, "sync after an acks=0 append failed");
                    }
                });
            }
            Ok(appended)
        });
        Ok(PendingAppend { written })
    }

    /// Reads whole batches from `offset`, at most `max_bytes` (but at least
    /// one batch), never past the high watermark.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`], [`CoreError::OffsetOutOfRange`], storage errors.
    pub fn read(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
        _principal: &Principal,
    ) -> Result<ReadResult> {
        let offsets = partition.offsets();
        let offset = u64::try_from(offset).map_err(|_| CoreError::OffsetOutOfRange {
            offset: 0,
            log_start_offset: offsets.log_start_offset,
            log_end_offset: offsets.log_end_offset,
        })?;
        let last_stable_offset = partition.last_stable_offset();
        let end_offset = match isolation {
            Isolation::ReadUncommitted => u64::MAX,
            Isolation::ReadCommitted => last_stable_offset,
        };
        let records = partition
            .log()
            .read_below(offset, max_bytes, end_offset)
            .inspect_err(|error| {
                // The log fences and logs each damaged place once; this
                // counts every read it refused.
                if matches!(error, weir_log::LogError::Corrupt { .. }) {
                    self.metrics.corrupt_read();
                }
            })?;
        let aborted = match isolation {
            Isolation::ReadUncommitted => Vec::new(),
            Isolation::ReadCommitted => partition.aborted_between(offset, last_stable_offset),
        };
        Ok(ReadResult {
            records,
            high_watermark: offsets.high_watermark,
            last_stable_offset,
            log_start_offset: offsets.log_start_offset,
            aborted,
        })
    }

    /// Finds an offset by position or time: `(offset, timestamp)`, with
    /// timestamp -1 for the earliest and latest, and `None` when no record
    /// is at or after the timestamp.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn list_offset(
        &self,
        partition: &Partition,
        spec: OffsetSpec,
        isolation: Isolation,
        _principal: &Principal,
    ) -> Result<Option<(u64, i64)>> {
        let offsets = partition.offsets();
        match spec {
            OffsetSpec::Earliest => Ok(Some((offsets.log_start_offset, -1))),
            OffsetSpec::Latest => {
                let latest = match isolation {
                    Isolation::ReadUncommitted => offsets.high_watermark,
                    Isolation::ReadCommitted => partition.last_stable_offset(),
                };
                Ok(Some((latest, -1)))
            }
            OffsetSpec::Timestamp(timestamp) => {
                let Some(batch) = partition.log().batch_at_or_after_timestamp(timestamp)? else {
                    return Ok(None);
                };
                let found = first_record_at_or_after(batch, timestamp);
                // As Kafka: a read_committed consumer is not told of offsets
                // at or past the last stable offset.
                Ok(found.filter(|&(offset, _)| {
                    isolation == Isolation::ReadUncommitted
                        || offset < partition.last_stable_offset()
                }))
            }
        }
    }

    /// Applies retention to every partition now. Returns segments deleted.
    pub fn apply_retention(&self) -> usize {
        let now = now_ms();
        let mut deleted = 0;
        for topic in self.topics() {
            for partition in topic.partitions() {
                match partition.log().apply_retention(now) {
                    Ok(count) => deleted += count,
                    Err(error) => {
                        tracing::error!(topic = topic.name(), partition = partition.index(), %error, "retention failed")
                    }
                }
            }
        }
        deleted
    }

    /// Snapshots the idempotent producers' state of every partition that
    /// grew, so a restart after a crash reads back only the log's tail.
    pub fn snapshot_producer_states(&self) {
        for topic in self.topics() {
            for partition in topic.partitions() {
                partition.snapshot_producers();
            }
        }
    }

    /// Syncs every relaxed-durability (`flush.ms`) partition whose interval passed.
    pub async fn flush_due(&self) {
        for topic in self.topics() {
            for partition in topic.partitions() {
                if let Err(error) = partition.flush_if_due().await {
                    tracing::error!(topic = topic.name(), partition = partition.index(), %error, "periodic flush failed");
                }
            }
        }
    }

    /// Syncs and checkpoints every log and marks the shutdown clean.
    ///
    /// # Errors
    ///
    /// I/O errors writing the marker; a log that fails to close is logged
    /// and recovered on the next start.
    pub fn shutdown(&self) -> Result<()> {
        let mut all_closed = true;
        for topic in self.topics() {
            all_closed &= topic.close();
        }
        if let Err(error) = self.local_offsets.close() {
            tracing::error!(%error, "closing the offsets log failed; the next start recovers it");
            all_closed = false;
        }
        if !all_closed {
            return Err(CoreError::Io(io::Error::other(
                "some logs failed to close; the next start recovers them",
            )));
        }
        write_atomically(&self.config.data_dir.join(CLEAN_SHUTDOWN_MARKER), b"")?;
        tracing::info!("broker core closed cleanly");
        Ok(())
    }
}

/// Metadata facts about a topic.
pub fn summary(topic: &Topic) -> TopicSummary {
    let partitions = topic.partitions();
    TopicSummary {
        name: topic.name().to_string(),
        id: topic.id(),
        partitions: partitions.len() as u32,
        leader_epochs: partitions.iter().map(|p| p.leader_epoch()).collect(),
    }
}

/// Checks Kafka's topic naming rules.
///
/// # Errors
///
/// [`CoreError::InvalidTopic`] saying which rule is broken.
pub fn validate_topic_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(CoreError::InvalidTopic(format!(
            "'{name}' is not allowed as a topic name"
        )));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(CoreError::InvalidTopic(format!(
            "topic name is {} bytes; the limit is {TOPIC_NAME_BYTES_MAX}",
            name.len()
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(CoreError::InvalidTopic(format!(
            "'{name}' contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Offset and timestamp of the first record in `batch` at or after `timestamp`.
fn first_record_at_or_after(batch: Bytes, timestamp: i64) -> Option<(u64, i64)> {
    let header = BatchHeader::parse(&batch).ok()?;
    let mut buf = batch;
    match kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set
            .records
            .iter()
            .find(|record| record.timestamp >= timestamp)
            .map(|record| (record.offset as u64, record.timestamp)),
        Err(error) => {
            // Only the batch's own max timestamp is known; its first offset
            // is the earliest answer that is certainly not too late.
            tracing::warn!(%error, "cannot decode a stored batch; answering with its base offset");
            Some((header.base_offset, header.max_timestamp))
        }
    }
}

/// Opens the metadata log, or creates it from the topic directories of a
/// data directory that predates it.
///
/// Migration, when `metadata/` does not exist: every directory under
/// `topics/` with a readable `topic.json` becomes a topic of the first
/// snapshot (id, partition count and overrides as `topic.json` says); an
/// entry that is not a topic, or whose `topic.json` is missing, unreadable
/// or invalid, is quarantined as before. The snapshot is written into
/// `metadata.new/` and renamed to `metadata/` once durable, so a crash
/// before that repeats the migration and a crash after it finds the log.
/// The `topic.json` files are removed afterwards by [`open_topics`] (on
/// every start, so an interrupted removal is finished): the metadata log
/// is the only description of a topic from then on, and a stale copy could
/// only mislead.
///
/// # Errors
///
/// A metadata log that cannot be read or is corrupt (naming the file);
/// errors of the machine.
fn open_metadata(config: &BrokerConfig, topics_dir: &Path) -> Result<MetadataStore> {
    let dir = config.data_dir.join(METADATA_DIR);
    let options = MetadataOptions::default();
    if dir.exists() {
        let (store, recovery) = MetadataStore::open(&dir, options)?;
        tracing::info!(
            topics = store.state().topics().len(),
            last_index = store.last_index(),
            replayed = recovery.replayed,
            "metadata log opened"
        );
        return Ok(store);
    }
    let mut state = MetadataState::new();
    for entry in fs::read_dir(topics_dir).map_err(|error| at_path(topics_dir, error))? {
        let path = entry.map_err(|error| at_path(topics_dir, error))?.path();
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let described = match validate_topic_name(&name) {
            Ok(()) if path.is_dir() => crate::topic::read_legacy_record(&path)
                .map_err(CoreError::Io)
                .and_then(|image| {
                    state
                        .apply(&MetadataCommand::CreateTopic {
                            name: name.clone(),
                            id: image.id,
                            partitions: image.partitions,
                            configs: image.configs,
                            replicas: Vec::new(),
                        })
                        .map_err(CoreError::from)
                }),
            _ => Err(not_a_topic_directory()),
        };
        match described {
            Ok(()) => {}
            Err(error) if core_error_is_entity_fault(&error) => {
                quarantine(&config.data_dir, "topics", &path, &error)
                    .map_err(|moving| at_path(&path, moving))?;
            }
            Err(error) => return Err(CoreError::Io(at_path(&path, error))),
        }
    }
    let topics = state.topics().len();
    let store = MetadataStore::create(&dir, state, options)?;
    tracing::info!(
        topics,
        dir = %dir.display(),
        "created the metadata log from the topic directories (their topic.json files are no longer used)"
    );
    Ok(store)
}

fn not_a_topic_directory() -> CoreError {
    CoreError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        "not a topic directory (a topic is a directory named as Kafka allows)",
    ))
}

/// Opens every topic the metadata log names, making `topics_dir` agree
/// with it: a topic whose directory is missing (its creation was
/// interrupted after the command was durable) gets a new, empty one; an
/// entry the log does not name is quarantined; a topic whose files cannot
/// be opened is deleted from the metadata log and then quarantined (in
/// that order: a crash between the two leaves a directory the log does
/// not name, quarantined by the next start, never a topic recreated empty
/// over data that was moved aside).
///
/// # Errors
///
/// Errors of the machine (descriptors, memory, permissions), naming the
/// path; a metadata log that refuses the deletion.
fn open_topics(
    config: &BrokerConfig,
    topics_dir: &Path,
    metadata: &mut MetadataStore,
    clean: bool,
    metrics: &Arc<Metrics>,
) -> Result<HashMap<String, Arc<Topic>>> {
    for entry in fs::read_dir(topics_dir).map_err(|error| at_path(topics_dir, error))? {
        let path = entry.map_err(|error| at_path(topics_dir, error))?.path();
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if metadata.state().topic(&name).is_none() && path.is_dir() {
            if let Some(image) = adopted(&name, &path, metadata)? {
                tracing::info!(topic = %name, id = %image.id, "finished adopting a moved log as a topic");
                continue;
            }
        }
        let reason = match metadata.state().topic(&name) {
            Some(_) if path.is_dir() => continue,
            Some(_) => not_a_topic_directory(),
            None if validate_topic_name(&name).is_err() || !path.is_dir() => {
                not_a_topic_directory()
            }
            None => CoreError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "no topic of this name in the metadata log (a stray directory, or a topic whose deletion was interrupted)",
            )),
        };
        quarantine(&config.data_dir, "topics", &path, &reason)
            .map_err(|moving| at_path(&path, moving))?;
    }
    let mut topics = HashMap::new();
    let images: Vec<_> = metadata
        .state()
        .topics()
        .iter()
        .map(|(name, image)| (name.clone(), image.clone()))
        .collect();
    for (name, image) in images {
        let path = topics_dir.join(&name);
        if !path.exists() {
            tracing::warn!(topic = %name, "the metadata log names a topic without a directory (a creation interrupted by a crash); creating it empty");
        }
        let opened = fs::create_dir_all(&path)
            .map_err(CoreError::Io)
            .and_then(|()| {
                crate::topic::remove_legacy_record(&path).map_err(CoreError::Io)?;
                crate::topic::remove_adoption(&path).map_err(CoreError::Io)?;
                Topic::open(
                    path.clone(),
                    &name,
                    &image,
                    &config.topic_defaults,
                    clean,
                    metrics,
                )
            });
        match opened {
            Ok(topic) => {
                topics.insert(name, Arc::new(topic));
            }
            Err(error) if core_error_is_entity_fault(&error) => {
                metadata.commit(MetadataCommand::DeleteTopic {
                    name: name.clone(),
                    id: image.id,
                })?;
                quarantine(&config.data_dir, "topics", &path, &error)
                    .map_err(|moving| at_path(&path, moving))?;
            }
            Err(error) => return Err(CoreError::Io(at_path(&path, error))),
        }
    }
    Ok(topics)
}

/// Commits the topic an adoption marker in `path` describes (see
/// [`Broker::adopt_topic`]); `None` when there is no marker, or the log
/// refuses the topic (the directory is then quarantined as a stray).
fn adopted(
    name: &str,
    path: &Path,
    metadata: &mut MetadataStore,
) -> Result<Option<crate::metadata::TopicImage>> {
    let Some(image) = crate::topic::read_adoption(path).map_err(|error| at_path(path, error))?
    else {
        return Ok(None);
    };
    let command = creation(name, &image);
    if metadata.state().validate(&command).is_err() {
        return Ok(None);
    }
    metadata.commit(command)?;
    Ok(Some(image))
}

/// Whether an error opening a topic is the topic's own fault.
fn core_error_is_entity_fault(error: &CoreError) -> bool {
    match error {
        CoreError::Io(error) | CoreError::Storage(weir_log::LogError::Io(error)) => {
            is_entity_fault(error)
        }
        _ => true,
    }
}

/// Removes topics whose creation was interrupted before they were renamed
/// into place: nobody was told they exist.
fn clear_staging(staging_dir: &Path) -> Result<()> {
    if staging_dir.exists() {
        let leftovers = fs::read_dir(staging_dir)
            .map_err(|error| at_path(staging_dir, error))?
            .count();
        if leftovers > 0 {
            tracing::warn!(leftovers, dir = %staging_dir.display(), "removing topics whose creation was interrupted");
        }
        fs::remove_dir_all(staging_dir).map_err(|error| at_path(staging_dir, error))?;
    }
    fs::create_dir_all(staging_dir).map_err(|error| at_path(staging_dir, error))?;
    Ok(())
}

/// Refuses `partitions` new partitions when their files would not fit the
/// open-file limit.
fn check_descriptor_budget(partitions: u64) -> Result<()> {
    match DescriptorBudget::now().and_then(|budget| budget.refusal(partitions)) {
        Some(refusal) => Err(CoreError::PolicyViolation(refusal)),
        None => Ok(()),
    }
}

/// The command that creates the topic `image` describes.
fn creation(name: &str, image: &crate::metadata::TopicImage) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.to_string(),
        id: image.id,
        partitions: image.partitions,
        configs: image.configs.clone(),
        replicas: image.replicas.clone(),
    }
}

/// The command that grows a topic of this node to `total` partitions.
fn growth(name: &str, total: u32) -> MetadataCommand {
    MetadataCommand::CreatePartitions {
        name: name.to_string(),
        total,
        replicas: Vec::new(),
    }
}

fn load_or_create_meta(data_dir: &Path, node_id: i32) -> Result<Meta> {
    let path = data_dir.join(META_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|error| CoreError::Io(at_path(&path, error)))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let meta = Meta {
                cluster_id: new_cluster_id(),
                node_id,
            };
            let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
            write_atomically(&path, &json)?;
            Ok(meta)
        }
        Err(error) => Err(CoreError::Io(at_path(&path, error))),
    }
}

/// A cluster id in Kafka's style: 22 characters of URL-safe base64 of a UUID.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = uuid::Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
