//! The broker's consumer-group operations: membership is the coordinator's,
//! committed offsets the offset store's; this file ties them to topics
//! (validation, deleted topics, lag) and is what front-ends call. A node of
//! a cluster that does not coordinate groups (see
//! [`Broker::group_coordinator`]) knows of none.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker::Broker;
use crate::error::{CoreError, Result};
use crate::group::{
    CommittedOffset, GroupCoordinator, GroupDescription, GroupState, OffsetExpiry, OffsetStore,
    TopicPartition, OFFSETS_TOPIC,
};
use crate::logging::Escaped;
use crate::transactions::Transactions;

/// Longest commit metadata accepted (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// One partition's offset to commit.
#[derive(Debug, Clone)]
pub struct OffsetCommit {
    /// Topic and partition.
    pub partition: TopicPartition,
    /// Next offset to read.
    pub offset: i64,
    /// Leader epoch of the last record read, or -1.
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: Option<String>,
}

/// Committed offset, log end and lag of one partition of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic and partition.
    pub partition: TopicPartition,
    /// The group's committed offset.
    pub committed: i64,
    /// The partition's high watermark.
    pub log_end: i64,
    /// Messages the group has yet to read.
    pub lag: i64,
}

impl Broker {
    /// The group coordinator (JoinGroup, SyncGroup, Heartbeat,
    /// LeaveGroup, committed offsets): always on a single node; in a
    /// cluster while this node leads the offsets partition.
    pub fn group_coordinator(&self) -> Option<Arc<GroupCoordinator>> {
        self.groups.read().clone()
    }

    /// The group coordinator, for a group (or transactional id) this node
    /// coordinates: every one on a single node, and in a cluster every one
    /// while this node leads the offsets partition (one partition holds
    /// them all, so the id does not decide yet).
    ///
    /// # Errors
    ///
    /// [`CoreError::NotCoordinator`].
    pub fn coordinating(&self, _group_id: &str) -> Result<Arc<GroupCoordinator>> {
        self.group_coordinator().ok_or(CoreError::NotCoordinator)
    }

    /// Makes this node the group coordinator of a cluster while it leads
    /// partition 0 of [`OFFSETS_TOPIC`], and no longer once it does not:
    /// a new leader (or a new leader epoch) replays the partition into a
    /// new coordinator; the groups of the old one are dropped (their
    /// members find the new coordinator and join it again).
    pub(crate) fn refresh_group_coordinator(&self) {
        let led = self
            .topic(OFFSETS_TOPIC)
            .and_then(|topic| Ok((topic.partition(0)?, topic)))
            .ok()
            .filter(|(partition, _)| partition.is_leader_here());
        let Some((partition, topic)) = led else {
            if self.groups.write().take().is_some() {
                *self.transactions.write() = Arc::default();
                tracing::info!("no longer the group and transaction coordinator");
            }
            return;
        };
        let epoch = partition.leader_epoch();
        let current = self.group_coordinator();
        if current.is_some_and(|current| current.store().leader_epoch() == Some(epoch)) {
            return;
        }
        let store = OffsetStore::replicated(
            partition,
            epoch,
            self.min_insync(&topic),
            self.config().replication_timeout,
        );
        let coordinator = match store {
            Ok(store) => {
                tracing::info!(epoch, "this node is the group and transaction coordinator");
                // Transactions left prepared are completed by the next
                // `expire_transactions`.
                *self.transactions.write() = Arc::new(Transactions::restore(store.transactions()));
                Some(Arc::new(GroupCoordinator::new(
                    self.config().groups.clone(),
                    self.config().clock.clone(),
                    Arc::new(store),
                )))
            }
            Err(error) => {
                tracing::error!(%error, "loading the groups from the offsets partition failed; not coordinating");
                None
            }
        };
        *self.groups.write() = coordinator;
        // Offsets of topics deleted while another node coordinated.
        self.forget_topic_offsets(|topic| self.topic(topic).is_ok());
    }

    /// Commits offsets for a group member (or standalone, with generation
    /// -1 and no member, while the group has no members). Answers once
    /// durable. The outer error is the group's; the inner ones per partition.
    ///
    /// # Errors
    ///
    /// Group errors of [`GroupCoordinator::check_commit`].
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        commits: Vec<OffsetCommit>,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        let coordinator = self.coordinating(group_id)?;
        coordinator.check_commit(group_id, generation, member_id, instance_id)?;
        let now = self.config().clock.now_ms();
        let mut results = Vec::with_capacity(commits.len());
        let mut accepted = Vec::new();
        for commit in commits {
            let (topic, partition) = &commit.partition;
            let check = if commit
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
            {
                Err(CoreError::OffsetMetadataTooLarge)
            } else {
                self.topic(topic)
                    .and_then(|t| t.partition(*partition))
                    .map(|_| ())
            };
            if check.is_ok() {
                let value = CommittedOffset {
                    offset: commit.offset,
                    leader_epoch: commit.leader_epoch,
                    metadata: commit.metadata.unwrap_or_default(),
                    commit_timestamp_ms: now,
                };
                accepted.push((commit.partition.clone(), Some(value)));
            }
            results.push((commit.partition, check));
        }
        if let Err(error) = coordinator.store().write(group_id, accepted).await {
            tracing::error!(group = %Escaped(group_id), %error, "offset commit failed");
            // As Kafka: a coordinator that moved or could not replicate
            // says so, and the client retries.
            let failure = || match error {
                CoreError::NotCoordinator => CoreError::NotCoordinator,
                CoreError::NotEnoughReplicasAfterAppend | CoreError::RequestTimedOut => {
                    CoreError::CoordinatorNotAvailable
                }
                _ => CoreError::Storage(weir_log::LogError::Poisoned),
            };
            for (_, result) in results.iter_mut().filter(|(_, r)| r.is_ok()) {
                *result = Err(failure());
            }
        }
        Ok(results)
    }

    /// Committed offsets of a group: of the partitions asked for (`None`
    /// for a partition without one), or all of them.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<TopicPartition>>,
    ) -> Vec<(TopicPartition, Option<CommittedOffset>)> {
        let committed = self
            .group_coordinator()
            .map(|coordinator| coordinator.store().group(group_id))
            .unwrap_or_default();
        match wanted {
            Some(wanted) => wanted
                .into_iter()
                .map(|key| {
                    let value = committed.get(&key).cloned();
                    (key, value)
                })
                .collect(),
            None => committed
                .into_iter()
                .map(|(key, value)| (key, Some(value)))
                .collect(),
        }
    }

    /// Every group: those with members, and those with only offsets (Empty).
    pub fn list_groups(&self) -> Vec<GroupDescription> {
        let Some(coordinator) = self.group_coordinator() else {
            return Vec::new();
        };
        let mut groups: BTreeMap<String, GroupDescription> = coordinator
            .list()
            .into_iter()
            .map(|g| (g.group_id.clone(), g))
            .collect();
        for name in coordinator.store().group_names() {
            groups
                .entry(name.clone())
                .or_insert_with(|| empty_group(&name));
        }
        groups.into_values().collect()
    }

    /// One group, if it has members or offsets.
    pub fn describe_group(&self, group_id: &str) -> Option<GroupDescription> {
        let coordinator = self.group_coordinator()?;
        coordinator.describe(group_id).or_else(|| {
            (!coordinator.store().group(group_id).is_empty()).then(|| empty_group(group_id))
        })
    }

    /// Deletes a group without members, with its offsets.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotCoordinator`], [`CoreError::NonEmptyGroup`],
    /// [`CoreError::GroupIdNotFound`], storage errors.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let coordinator = self.coordinating(group_id)?;
        if self.describe_group(group_id).is_none() {
            return Err(CoreError::GroupIdNotFound);
        }
        coordinator.remove_if_empty(group_id)?;
        let store = coordinator.store();
        let tombstones = store
            .group(group_id)
            .into_keys()
            .map(|key| (key, None))
            .collect();
        store.write(group_id, tombstones).await
    }

    /// Deletes some committed offsets of a group, except those of topics
    /// its members subscribe to.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotCoordinator`], [`CoreError::GroupIdNotFound`] for
    /// the whole call; per partition [`CoreError::GroupSubscribedToTopic`];
    /// storage errors.
    pub async fn delete_group_offsets(
        &self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        let coordinator = self.coordinating(group_id)?;
        if self.describe_group(group_id).is_none() {
            return Err(CoreError::GroupIdNotFound);
        }
        let has_members = coordinator.has_members(group_id);
        let subscribed = coordinator.subscribed_topics(group_id);
        let mut results = Vec::with_capacity(partitions.len());
        let mut tombstones = Vec::new();
        for key in partitions {
            let in_use = subscribed
                .as_ref()
                .is_none_or(|topics| topics.contains(&key.0));
            if in_use && has_members {
                results.push((key, Err(CoreError::GroupSubscribedToTopic)));
            } else {
                tombstones.push((key.clone(), None));
                results.push((key, Ok(())));
            }
        }
        coordinator.store().write(group_id, tombstones).await?;
        Ok(results)
    }

    /// For each partition the group committed: committed offset, log end
    /// (high watermark) and lag.
    pub fn group_lag(&self, group_id: &str) -> Vec<PartitionLag> {
        let Some(coordinator) = self.group_coordinator() else {
            return Vec::new();
        };
        coordinator
            .store()
            .group(group_id)
            .into_iter()
            .filter_map(|(key, committed)| {
                let partition = self.topic(&key.0).and_then(|t| t.partition(key.1)).ok()?;
                let log_end = partition.offsets().high_watermark as i64;
                Some(PartitionLag {
                    partition: key,
                    committed: committed.offset,
                    log_end,
                    lag: (log_end - committed.offset).max(0),
                })
            })
            .collect()
    }

    /// Deletes the offsets of groups without members that were committed
    /// longer ago than `offsets.retention.minutes`, then compacts the
    /// offsets log if it grew well past what is live.
    pub async fn expire_offsets(&self) {
        let Some(coordinator) = self.group_coordinator() else {
            return;
        };
        let retention_ms = self.config().offsets_retention.as_millis() as i64;
        let cutoff = self.config().clock.now_ms().saturating_sub(retention_ms);
        // Read first: the coordinator must not be locked inside the store's lock.
        let expiry = coordinator.offset_expiry();
        let store = coordinator.store();
        let expired = store.select(|group, _, value| match expiry.get(group) {
            Some(OffsetExpiry::Never) => false,
            Some(OffsetExpiry::EmptySince(since)) => *since < cutoff,
            Some(OffsetExpiry::ByCommitTime) | None => value.commit_timestamp_ms < cutoff,
        });
        delete_offsets_of(store, expired);
        if let Err(error) = store.compact_if_needed().await {
            tracing::error!(%error, "compacting the offsets log failed");
        }
    }

    /// Drops every group's offsets of a topic (it was deleted, or is gone
    /// after a restart). Durable with the next sync of the offsets log.
    pub(crate) fn forget_topic_offsets(&self, topic_exists: impl Fn(&str) -> bool) {
        if let Some(coordinator) = self.group_coordinator() {
            let store = coordinator.store();
            delete_offsets_of(store, store.select(|_, (topic, _), _| !topic_exists(topic)));
        }
    }
}

fn delete_offsets_of(store: &OffsetStore, entries: Vec<(String, TopicPartition)>) {
    let mut by_group: BTreeMap<String, Vec<(TopicPartition, Option<CommittedOffset>)>> =
        BTreeMap::new();
    for (group, key) in entries {
        by_group.entry(group).or_default().push((key, None));
    }
    for (group, tombstones) in by_group {
        if let Err(error) = store.append_changes(&group, tombstones) {
            tracing::error!(group = %Escaped(&group), %error, "deleting offsets failed");
        }
    }
}

fn empty_group(group_id: &str) -> GroupDescription {
    GroupDescription {
        group_id: group_id.to_string(),
        state: GroupState::Empty,
        // Offsets without membership: a "simple" group in Kafka's terms.
        protocol_type: String::new(),
        protocol_name: String::new(),
        members: Vec::new(),
    }
}
