//! Topics and their partitions.
//!
//! On disk a topic is `topics/<name>/` holding one directory per
//! partition, `0/`, `1/`, …, each a [`weir_log::Log`]. What the topic is
//! (id, partition count, config overrides) is metadata: it lives in the
//! metadata log ([`crate::metadata`]), and the topic is opened from its
//! [`TopicImage`]. A new topic is assembled under the broker's staging
//! directory and renamed into `topics/` whole.
//!
//! Before the metadata log, each topic directory held a `topic.json` with
//! its id, count and overrides; the broker reads those once, to build the
//! metadata log's first snapshot, and then removes them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use uuid::Uuid;
use weir_log::checkpoint::sync_dir;
use weir_log::{Log, LogOffsets, SharedLog};

use crate::config::{TopicConfig, TopicDefaults};
use crate::error::{CoreError, Result};
use crate::metadata::{Leadership, TopicImage};
use crate::metrics::Metrics;
use crate::producer::{AbortedTransaction, ProducerStates};
use crate::replica::ReplicaState;
use crate::write_queue::WriteQueue;

/// The file that described a topic before the metadata log.
pub(crate) const LEGACY_TOPIC_FILE: &str = "topic.json";

/// What `topic.json` held.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LegacyTopicRecord {
    id: Uuid,
    partitions: u32,
    config: TopicConfig,
}

/// One partition: a shared log plus the leadership facts replication will need.
#[derive(Debug)]
pub struct Partition {
    index: u32,
    dir: PathBuf,
    log: Arc<SharedLog>,
    /// 0 on a single node; in a cluster the epoch the metadata gives.
    leader_epoch: std::sync::atomic::AtomicI32,
    last_flush: parking_lot::Mutex<Instant>,
    producers: parking_lot::Mutex<ProducerStates>,
    /// Log end covered by the last producer snapshot written.
    snapshot_end: std::sync::atomic::AtomicU64,
    /// Appends, run in order off the async threads.
    writes: Arc<WriteQueue>,
    /// Whether this node leads the partition: always on a single node; in
    /// a cluster as the metadata says (crate::broker::cluster). Nothing is
    /// appended to or read from a partition this node does not lead.
    leader_here: std::sync::atomic::AtomicBool,
    /// In a cluster: the leadership and the followers' progress.
    replica: parking_lot::Mutex<ReplicaState>,
    /// Read-held through every append, written when the leadership
    /// changes: an append checked as the leader's (or a follower's) lands
    /// before this node's role moves, never after.
    role_gate: RwLock<()>,
    /// Moves whenever the leadership applied here changes (wakes
    /// producers waiting for replication).
    leadership_changes: tokio::sync::watch::Sender<u64>,
    /// Whether a task copies this partition from its leader.
    fetcher_running: std::sync::atomic::AtomicBool,
}

impl Partition {
    fn open(
        dir: &Path,
        index: u32,
        config: &TopicConfig,
        defaults: &TopicDefaults,
        clean: bool,
        metrics: &Arc<Metrics>,
    ) -> Result<Partition> {
        let dir = dir.join(index.to_string());
        let log = Arc::new(
            SharedLog::new(Log::open(&dir, config.log_config(defaults), clean)?)
                .observing_syncs(Arc::clone(metrics)),
        );
        let producers = ProducerStates::rebuild(&dir, &log)?;
        Ok(Partition {
            index,
            dir,
            log,
            leader_epoch: std::sync::atomic::AtomicI32::new(0),
            last_flush: parking_lot::Mutex::new(Instant::now()),
            producers: parking_lot::Mutex::new(producers),
            snapshot_end: std::sync::atomic::AtomicU64::new(0),
            writes: Arc::new(WriteQueue::default()),
            leader_here: std::sync::atomic::AtomicBool::new(true),
            replica: parking_lot::Mutex::new(ReplicaState::default()),
            role_gate: RwLock::new(()),
            leadership_changes: tokio::sync::watch::Sender::new(0),
            fetcher_running: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether this node leads the partition (and may append and serve it).
    pub fn is_leader_here(&self) -> bool {
        self.leader_here.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records whether this node leads the partition.
    pub(crate) fn set_leader_here(&self, leads: bool) {
        self.leader_here
            .store(leads, std::sync::atomic::Ordering::Release);
    }

    /// Runs `job` (a write to this partition's log) on the blocking pool
    /// after every write submitted before it; see [`crate::write_queue`].
    pub(crate) fn submit_write<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<T> {
        self.writes.submit(job)
    }

    /// Partition number within its topic.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The partition's log.
    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// The same log, shared (queues over the topic hold it).
    pub fn shared_log(&self) -> &Arc<SharedLog> {
        &self.log
    }

    /// Current leader epoch (constant on a single broker).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The partition's leadership as this node applied it last (`None` on
    /// a single node).
    pub fn leadership(&self) -> Option<Leadership> {
        self.replica.lock().leadership().cloned()
    }

    /// Whether this node leads the partition with fewer replicas in sync
    /// than assigned.
    pub fn is_under_replicated(&self) -> bool {
        self.is_leader_here() && self.replica.lock().is_under_replicated()
    }

    /// How many replicas are in sync (1 on a single node).
    pub fn in_sync_count(&self) -> usize {
        self.replica.lock().leadership().map_or(1, |l| l.isr.len())
    }

    /// Applies the cluster's leadership of this partition on node `me`.
    /// Returns whether `me` is a follower that should copy the leader.
    pub(crate) fn apply_leadership(
        &self,
        me: u64,
        replicas: &[u64],
        leadership: Leadership,
    ) -> bool {
        use std::sync::atomic::Ordering;
        let leads = leadership.leader == Some(me);
        let follows = !leads && replicas.contains(&me);
        let _role = self.role_gate.write();
        let mut replica = self.replica.lock();
        if replica.leadership() == Some(&leadership) {
            return follows;
        }
        if replica.leadership().is_none() {
            // The first leadership since the log opened: everything it
            // recovered counts as durable here, but a crash may have left
            // a tail that no other replica holds (and that a new leader
            // replaces), so readers see only what replication commits.
            self.log
                .lower_high_watermark(self.log.offsets().log_start_offset);
        }
        let log_end = self.log.offsets().log_end_offset;
        replica.set(me, replicas, leadership.clone(), replica_now(), log_end);
        self.leader_epoch.store(leadership.epoch, Ordering::Release);
        self.set_leader_here(leads);
        match replica.floor(me) {
            Some(floor) => self.log.set_replica_floor(floor),
            // A follower's high watermark follows its leader's from here.
            None => self
                .log
                .set_replica_floor(self.log.offsets().high_watermark),
        }
        drop(replica);
        self.leadership_changes.send_modify(|changes| *changes += 1);
        follows
    }

    /// A follower fetched with everything below `durable_end` on its disk.
    pub(crate) fn follower_fetched(&self, me: u64, follower: u64, durable_end: u64) {
        let log_end = self.log.offsets().log_end_offset;
        let mut replica = self.replica.lock();
        replica.fetched(follower, durable_end, log_end, replica_now());
        if let Some(floor) = replica.floor(me) {
            self.log.set_replica_floor(floor);
        }
    }

    /// The in-sync set this leader should propose (see
    /// [`ReplicaState::wanted_isr`]) with the version it replaces; the
    /// caller proposes it, and until the outcome is applied the high
    /// watermark waits for the replicas it adds. Without the followers
    /// that lag first, and only when none does, with those that caught up
    /// (Kafka shrinks and expands in separate steps too).
    ///
    /// Both in one step, a follower that keeps fetching but cannot append
    /// (its disk is full) would leave and come straight back: the high
    /// watermark it holds back is its own log end, so it "holds everything
    /// below the high watermark". It would never leave, and `acks=all`
    /// would wait on it for good. Once its removal is committed, the high
    /// watermark moves past it until it really catches up.
    pub(crate) fn wanted_isr(
        &self,
        me: u64,
        lag_max: std::time::Duration,
    ) -> Option<(u32, Vec<u64>)> {
        let high_watermark = self.log.offsets().high_watermark;
        let mut replica = self.replica.lock();
        let now = replica_now();
        // No follower reaches offset u64::MAX: removals only.
        let wanted = replica
            .wanted_isr(me, u64::MAX, now, lag_max)
            .or_else(|| replica.wanted_isr(me, high_watermark, now, lag_max));
        if let Some(floor) = replica.floor(me) {
            self.log.set_replica_floor(floor);
        }
        wanted
    }

    /// Forgets this leader's in-sync set proposal from `version`, which
    /// the controller refused (see [`ReplicaState::forget_proposal`]).
    pub(crate) fn forget_isr_proposal(&self, me: u64, version: u32) {
        let mut replica = self.replica.lock();
        replica.forget_proposal(version);
        if let Some(floor) = replica.floor(me) {
            self.log.set_replica_floor(floor);
        }
    }

    /// Waits until the high watermark reaches `end_offset` (an `acks=all`
    /// append made in leader epoch `epoch`), with at least `min_insync`
    /// replicas in sync.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotLeaderOrFollower`] when leadership moved since the
    /// append (it may be cut); [`CoreError::NotEnoughReplicasAfterAppend`]
    /// when the in-sync set shrank below `min_insync`;
    /// [`CoreError::RequestTimedOut`] after `timeout`.
    pub(crate) async fn wait_replicated(
        &self,
        end_offset: u64,
        epoch: i32,
        min_insync: usize,
        timeout: std::time::Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut high_watermark = self.log.watch_high_watermark();
        let mut changes = self.leadership_changes.subscribe();
        loop {
            if !self.is_leader_here() || self.leader_epoch() != epoch {
                return Err(CoreError::NotLeaderOrFollower);
            }
            if *high_watermark.borrow_and_update() >= end_offset {
                if self.in_sync_count() < min_insync {
                    return Err(CoreError::NotEnoughReplicasAfterAppend);
                }
                return Ok(());
            }
            tokio::select! {
                _ = high_watermark.changed() => {}
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => return Err(CoreError::RequestTimedOut),
            }
        }
    }

    /// Claims the job of copying this partition from its leader; false when
    /// a task does it already.
    pub(crate) fn claim_fetcher(&self) -> bool {
        !self
            .fetcher_running
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// The copying task ended.
    pub(crate) fn release_fetcher(&self) {
        self.fetcher_running
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Appends what the leader sent (see [`SharedLog::append_replicated`])
    /// and replays its idempotent batches into the producers' state, so
    /// that after a failover this node still recognizes their retries.
    ///
    /// # Errors
    ///
    /// Storage errors; [`weir_log::LogError::Replica`] for batches that do
    /// not continue the log.
    pub(crate) fn append_replicated(
        &self,
        records: bytes::Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<u64> {
        // A fetch answered by the previous leader must not land after
        // this node took over.
        let _role = self.role_gate.read();
        let still_following = self
            .replica
            .lock()
            .leadership()
            .is_some_and(|l| l.epoch == leader_epoch && !self.is_leader_here());
        if !still_following {
            return Err(CoreError::NotLeaderOrFollower);
        }
        let mut producers = self.producers.lock();
        let end = self.log.append_replicated(records.clone(), now_ms)?;
        for (header, bytes) in weir_log::batch::split_batches(records)? {
            producers.replay(&header, &bytes);
        }
        Ok(end)
    }

    /// Runs `append`, a write to this partition's log, while this node
    /// leads the partition (in leader epoch `expected`, when given), and
    /// passes it the leader epoch to stamp. Leadership cannot move until
    /// it returns: a write checked as the leader's but made after this
    /// node became a follower would sit in its log where the new leader
    /// has other data, and a follower's truncation would then cut it in an
    /// epoch that did not change, as if the disk had failed.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotLeaderOrFollower`] when this node does not lead the
    /// partition (in `expected`); `append`'s errors.
    pub(crate) fn append_as_leader<T>(
        &self,
        expected: Option<i32>,
        append: impl FnOnce(i32) -> Result<T>,
    ) -> Result<T> {
        let _role = self.role_gate.read();
        let epoch = self.leader_epoch();
        if !self.is_leader_here() || expected.is_some_and(|expected| expected != epoch) {
            return Err(CoreError::NotLeaderOrFollower);
        }
        append(epoch)
    }

    /// Waits until `written`, appended as leader in `epoch`, is on this
    /// node's disk.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotLeaderOrFollower`] when a follower's truncation cut
    /// it (another leader took over, not a fault of this node's storage);
    /// [`CoreError::Storage`] when the log failed before it was durable.
    pub(crate) async fn wait_durable(&self, written: weir_log::Written, epoch: i32) -> Result<()> {
        match self.log.wait_durable(written).await {
            Err(weir_log::LogError::Truncated { .. }) if self.leader_epoch() != epoch => {
                Err(CoreError::NotLeaderOrFollower)
            }
            result => Ok(result?),
        }
    }

    /// Whether this node follows the partition in leader epoch `epoch`
    /// (what a follower's truncation, decided on a leader's answer in that
    /// epoch, requires once it happens).
    fn follows_in(&self, epoch: i32) -> bool {
        self.leader_epoch() == epoch && !self.is_leader_here()
    }

    /// Empties the log and starts it at `offset`, the leader's log start
    /// (a follower of leader epoch `epoch` that fell behind the leader's
    /// retention).
    ///
    /// # Errors
    ///
    /// [`CoreError::NotLeaderOrFollower`] when this node no longer follows
    /// epoch `epoch` (nothing changed); storage errors.
    pub(crate) async fn restart_at(&self, offset: u64, epoch: i32) -> Result<()> {
        if !self
            .log
            .restart_at_if(offset, || self.follows_in(epoch))
            .await?
        {
            return Err(CoreError::NotLeaderOrFollower);
        }
        let states = ProducerStates::rebuild(&self.dir, &self.log)?;
        *self.producers.lock() = states;
        Ok(())
    }

    /// Cuts the log back to `offset` (a follower's truncation, in leader
    /// epoch `epoch`) and rebuilds the idempotent producers' state, which
    /// may have seen the cut batches. A node that leads (or follows a newer
    /// epoch) by the time the log is locked cuts nothing: its log may hold
    /// writes it acknowledged since.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotLeaderOrFollower`] when this node no longer follows
    /// epoch `epoch` (nothing changed); storage errors.
    pub(crate) async fn truncate_to(&self, offset: u64, epoch: i32) -> Result<()> {
        if !self
            .log
            .truncate_to_if(offset, || self.follows_in(epoch))
            .await?
        {
            return Err(CoreError::NotLeaderOrFollower);
        }
        let states = ProducerStates::rebuild(&self.dir, &self.log)?;
        *self.producers.lock() = states;
        Ok(())
    }

    /// Offsets and size now.
    pub fn offsets(&self) -> LogOffsets {
        self.log.offsets()
    }

    /// Writes the idempotent producers' state next to the log if the log
    /// grew since the last snapshot.
    pub(crate) fn snapshot_producers(&self) {
        use std::sync::atomic::Ordering;
        let mut producers = self.producers.lock();
        producers.advance_to(self.log.offsets().log_end_offset);
        let end = producers.end_offset();
        if self.snapshot_end.load(Ordering::Relaxed) == end {
            return;
        }
        match producers.snapshot(&self.dir) {
            Ok(()) => self.snapshot_end.store(end, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "producer snapshot failed; the next start reads more of the log")
            }
        }
    }

    /// First offset a read_committed consumer may not read yet.
    pub fn last_stable_offset(&self) -> u64 {
        self.producers
            .lock()
            .last_stable_offset(self.log.offsets().high_watermark)
    }

    /// Aborted transactions overlapping `[start, end)`.
    pub fn aborted_between(&self, start: u64, end: u64) -> Vec<AbortedTransaction> {
        let mut producers = self.producers.lock();
        producers.forget_before(self.log.offsets().log_start_offset);
        producers.aborted_between(start, end)
    }

    /// The idempotent producers' state, locked around check-and-append.
    pub(crate) fn producers(&self) -> parking_lot::MutexGuard<'_, ProducerStates> {
        self.producers.lock()
    }

    /// Syncs the log if its `flush.ms` interval has passed.
    pub(crate) async fn flush_if_due(&self) -> Result<()> {
        let Some(interval) = self.log.flush_interval() else {
            return Ok(());
        };
        {
            let mut last = self.last_flush.lock();
            if last.elapsed() < interval {
                return Ok(());
            }
            *last = Instant::now();
        }
        self.log.flush().await?;
        Ok(())
    }
}

/// The time replication measures followers' lag with: tokio's clock,
/// which is the system's monotonic clock unless a test paused it (a
/// simulation then drives the lag with virtual time, as it drives fetch
/// waits and replication timeouts).
fn replica_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A named set of partitions with shared settings.
#[derive(Debug)]
pub struct Topic {
    name: String,
    id: Uuid,
    dir: PathBuf,
    state: RwLock<TopicState>,
    /// Set when the topic is deleted, for holders of the `Arc` (queues
    /// over it) that must stop using it.
    deleted: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct TopicState {
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// Creates the directory of the topic `image` describes at `dir` all at
    /// once: its empty partition directories are made and synced under
    /// `staging_dir`, then `commit` (the metadata log's append) runs, then
    /// the directory is renamed into place, so a crash leaves the whole
    /// directory or none of it, and a failure before the commit (a full
    /// disk, most likely while making thousands of directories) leaves no
    /// trace in the metadata log. The partitions' logs are opened where
    /// they finally live.
    ///
    /// # Errors
    ///
    /// I/O errors, or `commit`'s; the directory is then absent (removed).
    pub(crate) fn create(
        dir: PathBuf,
        staging_dir: &Path,
        name: &str,
        image: &TopicImage,
        defaults: &TopicDefaults,
        metrics: &Arc<Metrics>,
        commit: impl FnOnce() -> Result<()>,
    ) -> Result<Topic> {
        let staged = staging_dir.join(Uuid::new_v4().to_string());
        fs::create_dir_all(&staged)?;
        let staged_ok = (|| -> Result<()> {
            for index in 0..image.partitions {
                fs::create_dir(staged.join(index.to_string()))?;
            }
            // Makes the partition directories' entries durable.
            sync_dir(&staged)?;
            commit()?;
            // Fails if `dir` exists and is not empty: a directory left at a
            // topic's name is never overwritten.
            fs::rename(&staged, &dir)?;
            sync_dir(staging_dir)?;
            sync_dir(dir.parent().unwrap_or(staging_dir))?;
            Ok(())
        })();
        if let Err(error) = staged_ok {
            remove_dir_if_present(&staged);
            return Err(error);
        }
        Topic::open(dir.clone(), name, image, defaults, false, metrics).inspect_err(|_| {
            // Opened partitions are closed on drop; whatever was created
            // goes, so the failed creation leaves no topic behind.
            remove_dir_if_present(&dir);
            if let Some(parent) = dir.parent() {
                let _ = sync_dir(parent);
            }
        })
    }

    /// Opens the topic `image` describes from its directory `dir`.
    pub(crate) fn open(
        dir: PathBuf,
        name: &str,
        image: &TopicImage,
        defaults: &TopicDefaults,
        clean: bool,
        metrics: &Arc<Metrics>,
    ) -> Result<Topic> {
        let config = image.config();
        let partitions = (0..image.partitions)
            .map(|index| {
                Partition::open(&dir, index, &config, defaults, clean, metrics).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            name: name.to_string(),
            id: image.id,
            dir,
            state: RwLock::new(TopicState { config, partitions }),
            deleted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's id (Kafka's topic id).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Whether the topic was deleted (its logs are gone).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The topic's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All partitions, by index.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.state.read().partitions.clone()
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.state.read().partitions.len() as u32
    }

    /// One partition.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`] when out of range.
    pub fn partition(&self, index: i32) -> Result<Arc<Partition>> {
        let state = self.state.read();
        usize::try_from(index)
            .ok()
            .and_then(|i| state.partitions.get(i))
            .cloned()
            .ok_or(CoreError::UnknownTopicOrPartition)
    }

    /// The topic's overrides.
    pub fn config(&self) -> TopicConfig {
        self.state.read().config.clone()
    }

    /// Grows the topic to `total` partitions. The new partitions are
    /// opened first and `commit` (the metadata log's append) runs after
    /// them; only when it succeeds do they join the topic. A crash or an
    /// error in between leaves the old count, and the directories of
    /// partitions it does not name are removed before they are made again.
    pub(crate) fn add_partitions(
        &self,
        total: u32,
        defaults: &TopicDefaults,
        metrics: &Arc<Metrics>,
        commit: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut state = self.state.write();
        let current = state.partitions.len() as u32;
        let mut added = Vec::with_capacity(total.saturating_sub(current) as usize);
        let opened = (|| -> Result<()> {
            for index in current..total {
                remove_dir_if_present(&self.dir.join(index.to_string()));
                let partition =
                    Partition::open(&self.dir, index, &state.config, defaults, false, metrics)?;
                added.push(Arc::new(partition));
            }
            // The new directories' entries are durable before the count
            // that names them.
            sync_dir(&self.dir)?;
            commit()
        })();
        if let Err(error) = opened {
            drop(added);
            for index in current..total {
                remove_dir_if_present(&self.dir.join(index.to_string()));
            }
            return Err(error);
        }
        state.partitions.extend(added);
        Ok(())
    }

    /// Replaces the overrides (already durable in the metadata log) and
    /// applies them to every partition's log.
    pub(crate) fn set_config(&self, config: TopicConfig, defaults: &TopicDefaults) {
        let mut state = self.state.write();
        let log_config = config.log_config(defaults);
        state.config = config;
        for partition in &state.partitions {
            partition.log.set_config(log_config.clone());
        }
    }

    /// Closes every partition's log for a clean shutdown; false if any
    /// failed (the next start must then recover rather than trust checkpoints).
    pub(crate) fn close(&self) -> bool {
        let mut all_closed = true;
        for partition in self.state.read().partitions.iter() {
            partition.snapshot_producers();
            if let Err(error) = partition.log.close() {
                tracing::error!(topic = %self.name, partition = partition.index, %error, "close failed; the next start recovers");
                all_closed = false;
            }
        }
        all_closed
    }
}

/// Removes a directory tree that holds nothing acknowledged (a failed or
/// interrupted creation); a failure only leaves litter, so it is logged.
fn remove_dir_if_present(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove a partly created directory");
        }
        _ => {}
    }
}

/// Reads the `topic.json` a topic directory held before the metadata log,
/// as the image the metadata log keeps. A missing or unparsable file is
/// `InvalidData` naming the path: the topic itself is bad.
pub(crate) fn read_legacy_record(dir: &Path) -> std::io::Result<TopicImage> {
    let path = dir.join(LEGACY_TOPIC_FILE);
    let invalid = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let text = fs::read(&path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => invalid("missing".to_owned()),
        _ => error,
    })?;
    let record: LegacyTopicRecord =
        serde_json::from_slice(&text).map_err(|error| invalid(error.to_string()))?;
    Ok(TopicImage::new(
        record.id,
        record.partitions,
        record.config.overrides().clone(),
    ))
}

/// Removes the `topic.json` of a topic the metadata log describes: a copy
/// that is no longer kept up to date would only mislead.
///
/// # Errors
///
/// The removal's error; a missing file is no error.
pub(crate) fn remove_legacy_record(dir: &Path) -> std::io::Result<bool> {
    match fs::remove_file(dir.join(LEGACY_TOPIC_FILE)) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// The file that marks a directory moved into `topics/` to become a topic
/// (a stream queue's log stored by an older release): its [`TopicImage`],
/// committed to the metadata log when the broker next opens if the move
/// was not yet, removed once it is.
pub(crate) const ADOPTION_FILE: &str = "adopting.json";

/// Writes the adoption marker into `dir` (synced).
pub(crate) fn write_adoption(dir: &Path, image: &TopicImage) -> Result<()> {
    let json = serde_json::to_vec_pretty(image).map_err(std::io::Error::other)?;
    weir_log::checkpoint::write_atomically(&dir.join(ADOPTION_FILE), &json)?;
    Ok(())
}

/// The adoption marker in `dir`, if there is one.
///
/// # Errors
///
/// Reading errors; an unparsable marker is `InvalidData` naming it.
pub(crate) fn read_adoption(dir: &Path) -> std::io::Result<Option<TopicImage>> {
    let path = dir.join(ADOPTION_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {error}", path.display()),
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Removes the adoption marker of a topic the metadata log names.
///
/// # Errors
///
/// The removal's error; a missing file is no error.
pub(crate) fn remove_adoption(dir: &Path) -> std::io::Result<()> {
    match fs::remove_file(dir.join(ADOPTION_FILE)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
