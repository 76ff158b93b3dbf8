//! Topics and their partitions.
//!
//! On disk a topic is `topics/<name>/` holding `topic.json` (id, partition
//! count, config overrides) and one directory per partition, `0/`, `1/`, …,
//! each a [`weir_log::Log`]. `topic.json` is replaced atomically, after the
//! partition directories it names exist.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use uuid::Uuid;
use weir_log::checkpoint::write_atomically;
use weir_log::{Log, LogOffsets, SharedLog};

use crate::config::{TopicConfig, TopicDefaults};
use crate::error::{CoreError, Result};
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
    log: SharedLog,
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
    ) -> Result<Partition> {
        let dir = dir.join(index.to_string());
        let log = SharedLog::new(Log::open(&dir, config.log_config(defaults), clean)?);
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
}

#[derive(Debug)]
struct TopicState {
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// Creates the topic's directory, partitions and `topic.json`.
    pub(crate) fn create(
        dir: PathBuf,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        defaults: &TopicDefaults,
    ) -> Result<Topic> {
        fs::create_dir_all(&dir)?;
        let topic = Topic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            dir,
            state: RwLock::new(TopicState {
                config,
                partitions: Vec::new(),
            }),
        };
        topic.add_partitions(partitions, defaults)?;
        Ok(topic)
    }

    /// Opens a topic from its directory.
    pub(crate) fn open(
        dir: PathBuf,
        name: &str,
        defaults: &TopicDefaults,
        clean: bool,
    ) -> Result<Topic> {
        let text = fs::read(dir.join(TOPIC_FILE))?;
        let record: TopicRecord = serde_json::from_slice(&text)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
        let partitions = (0..record.partitions)
            .map(|index| {
                Partition::open(&dir, index, &record.config, defaults, clean).map(Arc::new)
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

    /// Grows the topic to `total` partitions.
    pub(crate) fn add_partitions(&self, total: u32, defaults: &TopicDefaults) -> Result<()> {
        let mut state = self.state.write();
        let current = state.partitions.len() as u32;
        for index in current..total {
            let partition = Partition::open(&self.dir, index, &state.config, defaults, false)?;
            state.partitions.push(Arc::new(partition));
        }
        self.persist(&state)
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
        let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.join(TOPIC_FILE), &json)?;
        Ok(())
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
