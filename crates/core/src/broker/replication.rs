//! Partition data replication between the nodes of a cluster, Kafka style.
//!
//! Every replica that does not lead a partition runs a *fetcher*: it asks
//! the leader for records from its own log end ([`ReplicaRequest::Fetch`]),
//! appends them as they are (same offsets, same leader epochs), syncs them,
//! and asks again from the new end — so the offset of each fetch tells the
//! leader what is durable on the follower. The leader's high watermark is
//! the least such offset among the in-sync replicas (see
//! [`crate::replica`]); `acks=all` waits for it.
//!
//! When a follower starts following a leader epoch it first truncates
//! (KIP-101, KIP-279): it asks the leader where its own latest epoch ends
//! in the leader's log ([`ReplicaRequest::EpochEnd`]) and cuts everything
//! after that — a deposed leader's unacknowledged tail, or what a crash
//! took from the leader — so a follower's log is always a prefix of its
//! leader's.
//!
//! Every request carries the leader epoch the follower believes current;
//! a leader answers only requests of its own epoch, so a deposed leader
//! (paused, or cut off) that has not heard of its successor serves no
//! follower that has, and its high watermark cannot move.
//!
//! The bytes travel through a [`ReplicaTransport`] (the cluster crate's
//! connections); this module decides everything else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::broker::{now_ms, Broker};
use crate::error::CoreError;
use crate::metadata::MetadataCommand;
use crate::topic::Partition;

/// Most bytes one fetch returns (at least one batch).
const FETCH_BYTES_MAX: usize = 8 << 20;
/// How long a leader holds a fetch that is at its log end.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How long a fetcher waits after a refusal or a broken connection.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A follower's request to a leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Records from `fetch_offset`; everything below it is durable on the
    /// follower.
    Fetch {
        /// The follower.
        replica: u64,
        /// The topic, by name and id (a namesake created since is refused).
        topic: String,
        /// The topic's id.
        topic_id: uuid::Uuid,
        /// The partition.
        partition: u32,
        /// The leader epoch the follower follows.
        leader_epoch: i32,
        /// Where the follower's log ends.
        fetch_offset: u64,
    },
    /// Where epoch `epoch` ends in the leader's log (OffsetsForLeaderEpoch).
    EpochEnd {
        /// The topic.
        topic: String,
        /// The topic's id.
        topic_id: uuid::Uuid,
        /// The partition.
        partition: u32,
        /// The leader epoch the follower follows.
        leader_epoch: i32,
        /// The follower's latest epoch.
        epoch: i32,
    },
    /// A transaction coordinator's COMMIT or ABORT marker, for the leader
    /// to append and replicate (Kafka's WriteTxnMarkers).
    WriteMarker {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The transaction's producer.
        producer_id: i64,
        /// Its epoch.
        producer_epoch: i16,
        /// COMMIT, or ABORT.
        commit: bool,
    },
}

/// A leader's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaReply {
    /// Records (possibly none) and the leader's offsets.
    Fetched {
        /// The leader's high watermark.
        high_watermark: u64,
        /// Whole batches from the fetch offset; carried beside the reply by
        /// the transport, not serialized.
        #[serde(skip)]
        records: Bytes,
    },
    /// The largest epoch at or below the one asked for and where it ends
    /// in the leader's log; `None` when the leader has no such epoch.
    EpochEnd(Option<(i32, u64)>),
    /// The marker is on every in-sync replica.
    MarkerWritten,
    /// Why the leader did not answer.
    Refused(ReplicaRefusal),
}

/// Why a leader refuses a replica request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRefusal {
    /// This node does not lead the partition (or not in that epoch: the
    /// follower's epoch is newer than this node knows).
    NotLeader,
    /// The follower follows an older epoch: it learns the new leader from
    /// the metadata.
    FencedLeaderEpoch,
    /// No such topic or partition (or a topic of another id).
    UnknownTopicOrPartition,
    /// The fetch offset is outside the leader's log.
    OffsetOutOfRange {
        /// The leader's log start.
        log_start_offset: u64,
        /// The leader's log end.
        log_end_offset: u64,
    },
    /// The leader's log failed.
    Storage(String),
}

/// The future of a [`ReplicaTransport`] call.
pub type ReplicaCall = Pin<Box<dyn Future<Output = std::io::Result<ReplicaReply>> + Send>>;

/// Carries replica requests to other nodes (the cluster crate's
/// connections), so the core knows nothing of the network.
pub trait ReplicaTransport: Send + Sync + std::fmt::Debug {
    /// Sends `request` to node `leader` and returns its reply.
    fn call(&self, leader: u64, request: ReplicaRequest) -> ReplicaCall;
}

impl Broker {
    /// Answers a follower's request (the leader's side).
    pub async fn serve_replica(&self, request: ReplicaRequest) -> ReplicaReply {
        match request {
            ReplicaRequest::Fetch {
                replica,
                topic,
                topic_id,
                partition,
                leader_epoch,
                fetch_offset,
            } => {
                let partition = match self.led_partition(&topic, topic_id, partition, leader_epoch)
                {
                    Ok(partition) => partition,
                    Err(refusal) => return ReplicaReply::Refused(refusal),
                };
                self.serve_fetch(&partition, replica, leader_epoch, fetch_offset)
                    .await
            }
            ReplicaRequest::EpochEnd {
                topic,
                topic_id,
                partition,
                leader_epoch,
                epoch,
            } => match self.led_partition(&topic, topic_id, partition, leader_epoch) {
                Ok(partition) => ReplicaReply::EpochEnd(partition.log().epoch_end(epoch)),
                Err(refusal) => ReplicaReply::Refused(refusal),
            },
            ReplicaRequest::WriteMarker {
                topic,
                partition,
                producer_id,
                producer_epoch,
                commit,
            } => {
                let Ok(partition) = i32::try_from(partition) else {
                    return ReplicaReply::Refused(ReplicaRefusal::UnknownTopicOrPartition);
                };
                match self
                    .write_marker_here(&topic, partition, producer_id, producer_epoch, commit)
                    .await
                {
                    Ok(()) => ReplicaReply::MarkerWritten,
                    Err(CoreError::NotLeaderOrFollower) => {
                        ReplicaReply::Refused(ReplicaRefusal::NotLeader)
                    }
                    Err(error) => ReplicaReply::Refused(ReplicaRefusal::Storage(error.to_string())),
                }
            }
        }
    }

    /// The partition, when this node leads it in `leader_epoch`.
    fn led_partition(
        &self,
        topic: &str,
        topic_id: uuid::Uuid,
        partition: u32,
        leader_epoch: i32,
    ) -> std::result::Result<Arc<Partition>, ReplicaRefusal> {
        let partition = self
            .topic(topic)
            .ok()
            .filter(|topic| topic.id() == topic_id)
            .and_then(|topic| topic.partition(partition as i32).ok())
            .ok_or(ReplicaRefusal::UnknownTopicOrPartition)?;
        leads_in(&partition, leader_epoch)?;
        Ok(partition)
    }

    async fn serve_fetch(
        &self,
        partition: &Partition,
        replica: u64,
        leader_epoch: i32,
        fetch_offset: u64,
    ) -> ReplicaReply {
        let me = self.node_id() as u64;
        let offsets = partition.offsets();
        if fetch_offset < offsets.log_start_offset || fetch_offset > offsets.log_end_offset {
            return ReplicaReply::Refused(ReplicaRefusal::OffsetOutOfRange {
                log_start_offset: offsets.log_start_offset,
                log_end_offset: offsets.log_end_offset,
            });
        }
        partition.follower_fetched(me, replica, fetch_offset);
        if fetch_offset == offsets.log_end_offset {
            // Nothing new: hold the fetch until something is written (or
            // the high watermark moves, which the follower must hear).
            let mut log_end = partition.log().watch_log_end();
            let mut high_watermark = partition.log().watch_high_watermark();
            let _ = tokio::time::timeout(FETCH_WAIT, async {
                tokio::select! {
                    _ = log_end.wait_for(|end| *end > fetch_offset) => {}
                    _ = high_watermark.changed() => {}
                }
            })
            .await;
        }
        // Written but maybe not yet durable here: the follower's copy
        // counts only once both are durable (the high watermark is the
        // least durable end of all in-sync replicas, this one included).
        let read = partition.log().read_unsynced(fetch_offset, FETCH_BYTES_MAX);
        // Checked after the read: while the fetch was held, this node may
        // have lost the lead, truncated to its new leader's log and copied
        // other records to the offsets asked for — which must not reach a
        // follower of the old epoch. Epochs only move forward, so leading
        // in it now means leading in it throughout the read.
        if let Err(refusal) = leads_in(partition, leader_epoch) {
            return ReplicaReply::Refused(refusal);
        }
        match read {
            Ok(records) => ReplicaReply::Fetched {
                high_watermark: partition.offsets().high_watermark,
                records,
            },
            Err(weir_log::LogError::OffsetOutOfRange {
                log_start_offset,
                log_end_offset,
                ..
            }) => ReplicaReply::Refused(ReplicaRefusal::OffsetOutOfRange {
                log_start_offset,
                log_end_offset,
            }),
            Err(error) => ReplicaReply::Refused(ReplicaRefusal::Storage(error.to_string())),
        }
    }

    /// Starts copying `partition` of `topic` from its leader, unless a task
    /// does already. The task ends when this node stops following it.
    pub(crate) fn follow(&self, topic: &crate::topic::Topic, partition: &Arc<Partition>) {
        let (Some(transport), Ok(runtime)) = (
            self.replica_transport.get(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        if !partition.claim_fetcher() {
            return;
        }
        let fetcher = Fetcher {
            me: self.node_id() as u64,
            topic: topic.name().to_owned(),
            topic_id: topic.id(),
            partition: Arc::clone(partition),
            transport: Arc::clone(transport),
        };
        runtime.spawn(async move {
            fetcher.run().await;
            fetcher.partition.release_fetcher();
        });
    }

    /// Proposes the in-sync set changes the partitions this node leads
    /// want (see [`crate::replica`]). Called periodically.
    pub async fn maintain_isr(self: &Arc<Self>) {
        let Some(quorum) = self.quorum().cloned() else {
            return;
        };
        for command in self.wanted_isr_changes() {
            let MetadataCommand::ChangeLeadership {
                topic,
                partition,
                version,
                isr,
                ..
            } = &command
            else {
                continue;
            };
            tracing::info!(topic, partition, ?isr, "proposing a new in-sync set");
            let proposer = self
                .topic(topic)
                .and_then(|topic| topic.partition(*partition as i32));
            let version = *version;
            let quorum = Arc::clone(&quorum);
            match tokio::task::spawn_blocking(move || quorum.commit(command)).await {
                Ok(Ok(())) => {}
                Ok(Err(CoreError::InvalidRequest(why))) => {
                    // Refused by the state (another change came first): it
                    // will never commit, so it holds the high watermark no more.
                    tracing::debug!(%why, "in-sync set change refused");
                    if let Ok(partition) = proposer {
                        partition.forget_isr_proposal(self.node_id() as u64, version);
                    }
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "in-sync set change not committed; retrying")
                }
                Err(error) => tracing::warn!(%error, "in-sync set change task failed"),
            }
        }
    }

    /// The in-sync set changes the partitions this node leads want now,
    /// each naming the version it replaces: what [`Broker::maintain_isr`]
    /// proposes. Public for tests that play the controller themselves.
    #[doc(hidden)]
    pub fn wanted_isr_changes(&self) -> Vec<MetadataCommand> {
        let me = self.node_id() as u64;
        let lag_max = self.config.replica_lag_time_max;
        let mut changes = Vec::new();
        for topic in self.topics() {
            for partition in topic.partitions() {
                if let Some((version, isr)) = partition.wanted_isr(me, lag_max) {
                    changes.push(MetadataCommand::ChangeLeadership {
                        topic: topic.name().to_owned(),
                        partition: partition.index(),
                        version,
                        leader: Some(me),
                        isr,
                    });
                }
            }
        }
        changes
    }
}

/// Whether this node leads `partition` in `leader_epoch` (the epoch a
/// follower's request carries), or why not.
fn leads_in(partition: &Partition, leader_epoch: i32) -> std::result::Result<(), ReplicaRefusal> {
    let epoch = partition.leader_epoch();
    if leader_epoch < epoch {
        return Err(ReplicaRefusal::FencedLeaderEpoch);
    }
    if leader_epoch > epoch || !partition.is_leader_here() {
        return Err(ReplicaRefusal::NotLeader);
    }
    Ok(())
}

/// One partition's copying task on a follower.
struct Fetcher {
    me: u64,
    topic: String,
    topic_id: uuid::Uuid,
    partition: Arc<Partition>,
    transport: Arc<dyn ReplicaTransport>,
}

impl Fetcher {
    async fn run(&self) {
        let mut truncated_for: Option<i32> = None;
        loop {
            let Some(leadership) = self.partition.leadership() else {
                return;
            };
            if self.partition.log().is_closed() || leadership.leader == Some(self.me) {
                return;
            }
            let Some(leader) = leadership.leader else {
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            };
            let epoch = leadership.epoch;
            let step = if truncated_for == Some(epoch) {
                self.fetch(leader, epoch).await
            } else {
                self.truncate(leader, epoch)
                    .await
                    .map(|()| truncated_for = Some(epoch))
            };
            if let Err(why) = step {
                tracing::debug!(topic = %self.topic, partition = self.partition.index(), leader, epoch, %why, "replication paused");
                if matches!(why, Step::Refused(ReplicaRefusal::UnknownTopicOrPartition)) {
                    // The leader has not created it yet, or it is gone.
                    tokio::time::sleep(RETRY_BACKOFF * 5).await;
                }
                if matches!(why, Step::Diverged) {
                    truncated_for = None;
                }
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }

    /// Cuts this log to where it stops agreeing with the leader's (KIP-279).
    ///
    /// The leader answers with the largest epoch it has at or below this
    /// log's latest, and where that epoch ends in its log. When this log
    /// has that epoch too, the logs agree up to where the shorter one ends
    /// it. When it does not, everything from this log's next epoch on was
    /// written in epochs the leader never had: that goes, and the question
    /// is asked again for the epoch this log ends with then (what it holds
    /// of older epochs may still run past the leader's).
    async fn truncate(&self, leader: u64, leader_epoch: i32) -> std::result::Result<(), Step> {
        let log = self.partition.log();
        loop {
            let Some(latest) = log.latest_epoch() else {
                return Ok(());
            };
            let request = ReplicaRequest::EpochEnd {
                topic: self.topic.clone(),
                topic_id: self.topic_id,
                partition: self.partition.index(),
                leader_epoch,
                epoch: latest,
            };
            let (end, agreed) = match self.transport.call(leader, request).await? {
                ReplicaReply::EpochEnd(Some((epoch, leader_end))) => match log.epoch_end(epoch) {
                    Some((own, own_end)) if own == epoch => (leader_end.min(own_end), true),
                    // This log lacks `epoch`; its epochs after it, the
                    // leader lacks. `own_end` is where they start.
                    Some((_, own_end)) => (own_end, false),
                    // Every epoch of this log is one the leader lacks.
                    None => (log.offsets().log_start_offset, true),
                },
                ReplicaReply::EpochEnd(None) => (log.offsets().log_start_offset, true),
                ReplicaReply::Refused(refusal) => return Err(Step::Refused(refusal)),
                ReplicaReply::Fetched { .. } | ReplicaReply::MarkerWritten => {
                    return Err(Step::Unexpected)
                }
            };
            let log_end = log.offsets().log_end_offset;
            if end < log_end {
                tracing::info!(topic = %self.topic, partition = self.partition.index(), leader, epoch = leader_epoch, offset = end, "truncating to the leader's log");
                self.partition
                    .truncate_to(end, leader_epoch)
                    .await
                    .map_err(Step::from)?;
            }
            // Asking again only after a cut (the latest epoch is then an
            // older one), so a leader's odd answer cannot loop.
            if agreed || end >= log_end {
                return Ok(());
            }
        }
    }

    /// One fetch: appends what the leader sent, syncs it, and follows the
    /// leader's high watermark.
    async fn fetch(&self, leader: u64, leader_epoch: i32) -> std::result::Result<(), Step> {
        let log = self.partition.log();
        let log_end = log.offsets().log_end_offset;
        // The fetch offset vouches that everything below it is durable
        // here, whoever wrote it: a plain sync.
        if log.local_end_offset() < log_end {
            log.flush()
                .await
                .map_err(|error| Step::Local(error.to_string()))?;
        }
        let request = ReplicaRequest::Fetch {
            replica: self.me,
            topic: self.topic.clone(),
            topic_id: self.topic_id,
            partition: self.partition.index(),
            leader_epoch,
            fetch_offset: log_end,
        };
        match self.transport.call(leader, request).await? {
            ReplicaReply::Fetched {
                high_watermark,
                records,
            } => {
                if !records.is_empty() {
                    let partition = Arc::clone(&self.partition);
                    tokio::task::spawn_blocking(move || {
                        partition.append_replicated(records, leader_epoch, now_ms())
                    })
                    .await
                    .map_err(|error| Step::Local(error.to_string()))?
                    .map_err(|error| match error {
                        CoreError::Storage(weir_log::LogError::Replica(_)) => Step::Diverged,
                        CoreError::NotLeaderOrFollower => Step::Refused(ReplicaRefusal::NotLeader),
                        other => Step::Local(other.to_string()),
                    })?;
                }
                log.set_replica_floor(high_watermark);
                Ok(())
            }
            ReplicaReply::Refused(ReplicaRefusal::OffsetOutOfRange { log_end_offset, .. })
                if log_end_offset < log_end =>
            {
                // The leader's log is shorter in this very epoch (it lost
                // an unsynced tail): nothing past its end was ever
                // acknowledged, since the leader holds all that was.
                self.partition
                    .truncate_to(log_end_offset, leader_epoch)
                    .await
                    .map_err(Step::from)
            }
            ReplicaReply::Refused(ReplicaRefusal::OffsetOutOfRange {
                log_start_offset, ..
            }) if log_start_offset > log_end => {
                // The leader's retention deleted what this log still
                // lacks: start again where the leader's log starts.
                tracing::warn!(topic = %self.topic, partition = self.partition.index(), leader, offset = log_start_offset, "behind the leader's log start: starting over there");
                self.partition
                    .restart_at(log_start_offset, leader_epoch)
                    .await
                    .map_err(Step::from)
            }
            ReplicaReply::Refused(refusal) => Err(Step::Refused(refusal)),
            ReplicaReply::EpochEnd(_) | ReplicaReply::MarkerWritten => Err(Step::Unexpected),
        }
    }
}

/// Why a fetcher's step did not complete.
#[derive(Debug)]
enum Step {
    /// The connection to the leader failed.
    Unreachable(std::io::Error),
    /// The leader refused.
    Refused(ReplicaRefusal),
    /// This log does not continue the leader's: truncate again.
    Diverged,
    /// This node's log failed.
    Local(String),
    /// The leader answered something else.
    Unexpected,
}

impl From<std::io::Error> for Step {
    fn from(error: std::io::Error) -> Step {
        Step::Unreachable(error)
    }
}

impl From<CoreError> for Step {
    fn from(error: CoreError) -> Step {
        match error {
            // This node leads now, or follows a newer epoch.
            CoreError::NotLeaderOrFollower => Step::Refused(ReplicaRefusal::NotLeader),
            other => Step::Local(other.to_string()),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Unreachable(error) => write!(formatter, "leader unreachable: {error}"),
            Step::Refused(refusal) => write!(formatter, "refused: {refusal:?}"),
            Step::Diverged => write!(formatter, "the logs diverge"),
            Step::Local(error) => write!(formatter, "local log: {error}"),
            Step::Unexpected => write!(formatter, "unexpected reply"),
        }
    }
}
