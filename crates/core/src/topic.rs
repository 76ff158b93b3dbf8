//! Topics and their partitions.
//!
//! On disk a topic is `topics/<name>/` holding `topic.json` (id, partition
//! count, config overrides) and one directory per partition, `0/`, `1/`, …,
//! each a [`weir_log::Log`]. `topic.json` is replaced atomically, after the
//! partition directories it names exist. A new topic is assembled under the
//! broker's staging directory and renamed into `topics/` whole.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use uuid::Uuid;
use weir_log::checkpoint::{sync_dir, write_atomically};
use weir_log::{Log, LogOffsets, SharedLog};

use crate::config::{TopicConfig, TopicDefaults};
use crate::error::{CoreError, Result};
use crate::metrics::Metrics;
use crate::producer::{AbortedTransaction, ProducerStates};

const TOPIC_FILE: &str = "topic.json";

/// What `topic.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TopicRecord {
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
    leader_epoch: i32,
    last_flush: parking_lot::Mutex<Instant>,
    producers: parking_lot::Mutex<ProducerStates>,
    /// Log end covered by the last producer snapshot written.
    snapshot_end: std::sync::atomic::AtomicU64,
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
            leader_epoch: 0,
            last_flush: parking_lot::Mutex::new(Instant::now()),
            producers: parking_lot::Mutex::new(producers),
            snapshot_end: std::sync::atomic::AtomicU64::new(0),
        })
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
        self.leader_epoch
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
        let Some(interval) = self.log.config().flush_interval else {
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
    /// Creates the topic at `dir` all at once: its `topic.json` and empty
    /// partition directories are written and synced under `staging_dir`,
    /// then renamed into place, so a crash leaves the whole topic or none
    /// of it. The partitions' logs are opened where they finally live.
    ///
    /// # Errors
    ///
    /// I/O errors; the topic is then absent (its directory removed).
    pub(crate) fn create(
        dir: PathBuf,
        staging_dir: &Path,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        defaults: &TopicDefaults,
        metrics: &Arc<Metrics>,
    ) -> Result<Topic> {
        let staged = staging_dir.join(Uuid::new_v4().to_string());
        fs::create_dir_all(&staged)?;
        let record = TopicRecord {
            id: Uuid::new_v4(),
            partitions,
            config,
        };
        let staged_ok = (|| -> Result<()> {
            for index in 0..partitions {
                fs::create_dir(staged.join(index.to_string()))?;
            }
            // Syncs the staged directory too, making the partition
            // directories' entries durable with it.
            write_record(&staged, &record)?;
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
        Topic::open(dir.clone(), name, defaults, false, metrics).inspect_err(|_| {
            // Opened partitions are closed on drop; whatever was created
            // goes, so the failed creation leaves no topic behind.
            remove_dir_if_present(&dir);
            if let Some(parent) = dir.parent() {
                let _ = sync_dir(parent);
            }
        })
    }

    /// Makes `staged`, which holds one partition's log as `0/`, the topic
    /// `name` at `dir`: `topic.json` is written into `staged`, then `staged`
    /// is renamed to `dir`. A crash before the rename leaves `staged` as it
    /// was plus a `topic.json` (doing it again is harmless); after it, the
    /// topic is whole.
    ///
    /// # Errors
    ///
    /// I/O errors; `staged` is then where it was.
    pub(crate) fn adopt(
        staged: &Path,
        dir: PathBuf,
        name: &str,
        config: TopicConfig,
        defaults: &TopicDefaults,
        metrics: &Arc<Metrics>,
    ) -> Result<Topic> {
        let record = TopicRecord {
            id: Uuid::new_v4(),
            partitions: 1,
            config,
        };
        write_record(staged, &record)?;
        fs::rename(staged, &dir)?;
        if let Some(parent) = staged.parent() {
            sync_dir(parent)?;
        }
        sync_dir(dir.parent().unwrap_or(&dir))?;
        Topic::open(dir, name, defaults, false, metrics)
    }

    /// Opens a topic from its directory.
    pub(crate) fn open(
        dir: PathBuf,
        name: &str,
        defaults: &TopicDefaults,
        clean: bool,
        metrics: &Arc<Metrics>,
    ) -> Result<Topic> {
        let record = read_record(&dir)?;
        let partitions = (0..record.partitions)
            .map(|index| {
                Partition::open(&dir, index, &record.config, defaults, clean, metrics).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            name: name.to_string(),
            id: record.id,
            dir,
            state: RwLock::new(TopicState {
                config: record.config,
                partitions,
            }),
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
    /// opened first and `topic.json` is rewritten after them: a crash or an
    /// error in between leaves the old count, and the directories of
    /// partitions it does not name are removed before they are made again.
    pub(crate) fn add_partitions(
        &self,
        total: u32,
        defaults: &TopicDefaults,
        metrics: &Arc<Metrics>,
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
            let record = TopicRecord {
                id: self.id,
                partitions: total,
                config: state.config.clone(),
            };
            write_record(&self.dir, &record)
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

    /// Replaces the overrides and applies them to every partition's log.
    pub(crate) fn set_config(&self, config: TopicConfig, defaults: &TopicDefaults) -> Result<()> {
        let mut state = self.state.write();
        let log_config = config.log_config(defaults);
        let previous = std::mem::replace(&mut state.config, config);
        if let Err(error) = self.persist(&state) {
            state.config = previous;
            return Err(error);
        }
        for partition in &state.partitions {
            partition.log.set_config(log_config.clone());
        }
        Ok(())
    }

    fn persist(&self, state: &TopicState) -> Result<()> {
        let record = TopicRecord {
            id: self.id,
            partitions: state.partitions.len() as u32,
            config: state.config.clone(),
        };
        write_record(&self.dir, &record)
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

/// Writes `topic.json` into `dir` atomically (file and directory synced).
fn write_record(dir: &Path, record: &TopicRecord) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_atomically(&dir.join(TOPIC_FILE), &json)?;
    Ok(())
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

/// Reads `topic.json` in `dir`. A missing or unparsable file is
/// `InvalidData` naming the path: the topic itself is bad.
fn read_record(dir: &Path) -> std::io::Result<TopicRecord> {
    let path = dir.join(TOPIC_FILE);
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
    serde_json::from_slice(&text).map_err(|error| invalid(error.to_string()))
}

/// The partition count `topic.json` in `dir` names (for offline checks).
///
/// # Errors
///
/// As the topic's open would fail: a missing or unparsable `topic.json`.
pub(crate) fn read_partition_count(dir: &Path) -> std::io::Result<u32> {
    read_record(dir).map(|record| record.partitions)
}
