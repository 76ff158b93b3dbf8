//! Committed offsets and group memberships, durable in an internal log.
//!
//! Every commit appends one record per partition to `data/__consumer_offsets/`
//! (a [`SharedLog`] like any partition's): key `["group","topic",partition]`,
//! value the [`CommittedOffset`] as JSON, or no value for a deletion. A
//! group's membership (generation, members, assignments) is a record with
//! key `["group"]` and a [`StoredGroup`] value, written when a rebalance
//! completes, so members carry on across a broker restart as with Kafka.
//! Transactions' states (key `{"transaction": id}`) live here too, so one
//! internal log holds all coordinator state.
//! A commit is answered only once its record is durable. On start the log is
//! replayed into memory. When the log grows well past what is live, the live
//! entries are written again at its end and the segments before them are
//! deleted, so the log stays proportional to the live offsets.
//!
//! In a cluster the same records go to partition 0 of the replicated
//! internal topic `__consumer_offsets` instead ([`OffsetStore::replicated`]):
//! the node that leads it replays it and coordinates every group, a write
//! is answered once every in-sync replica has it, and when leadership
//! moves the new leader replays the same log, so groups and their offsets
//! survive the death of their coordinator.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_log::batch::{self, NewRecord};
use weir_log::{Log, LogConfig, SharedLog, Written};

use crate::error::{CoreError, Result};
use crate::metrics::Metrics;
use crate::topic::Partition;

/// Directory of the offsets log inside the data directory; in a cluster,
/// the name of the internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Bytes read at a time while replaying.
const REPLAY_CHUNK_BYTES: usize = 1 << 20;
/// Records per batch when rewriting the live entries.
const SNAPSHOT_BATCH_RECORDS: usize = 1000;
/// The log is compacted once it is this large and four times the live size.
const COMPACT_BYTES_MIN: u64 = 16 << 20;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommittedOffset {
    /// Next offset the group will read.
    pub offset: i64,
    /// Leader epoch of the last record consumed, or -1.
    pub leader_epoch: i32,
    /// Free text the client attached.
    pub metadata: String,
    /// When it was committed (ms since the epoch); retention counts from it.
    pub commit_timestamp_ms: i64,
}

/// A topic partition.
pub type TopicPartition = (String, i32);

type GroupOffsets = BTreeMap<TopicPartition, CommittedOffset>;

/// A group's membership as persisted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredGroup {
    /// Generation.
    pub generation: i32,
    /// Protocol type, once a member joined.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader: Option<String>,
    /// Members with their assignments.
    pub members: Vec<StoredMember>,
    /// When the group last became empty (ms since the epoch); offsets
    /// expiry counts from here (KIP-211).
    #[serde(default)]
    pub emptied_at_ms: Option<i64>,
}

/// A member as persisted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: u64,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: u64,
    /// Protocol type.
    pub protocol_type: String,
    /// Protocols with their metadata.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Current assignment.
    pub assignment: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    offsets: HashMap<String, GroupOffsets>,
    memberships: HashMap<String, StoredGroup>,
    /// The transaction coordinator's records, opaque here.
    transactions: HashMap<String, serde_json::Value>,
}

/// All groups' committed offsets and memberships.
#[derive(Debug)]
pub struct OffsetStore {
    log: Arc<SharedLog>,
    /// In a cluster: the partition this store writes to, while led here.
    replicated: Option<Replicated>,
    state: Mutex<State>,
}

/// The offsets partition of a cluster, as led here in one leader epoch.
#[derive(Debug)]
struct Replicated {
    partition: Arc<Partition>,
    epoch: i32,
    min_insync: usize,
    timeout: Duration,
}

impl OffsetStore {
    /// Opens the offsets log in `data_dir` and replays it.
    ///
    /// # Errors
    ///
    /// I/O errors, or a record that is not an offset commit.
    pub fn open(data_dir: &Path, clean: bool, metrics: &Arc<Metrics>) -> Result<OffsetStore> {
        let config = LogConfig {
            segment_bytes: 64 << 20,
            retention_ms: None,
            retention_bytes: None,
            max_message_bytes: 64 << 20,
            ..LogConfig::default()
        };
        let log = SharedLog::new(Log::open(&data_dir.join(OFFSETS_TOPIC), config, clean)?)
            .observing_syncs(Arc::clone(metrics));
        let store = OffsetStore {
            log: Arc::new(log),
            replicated: None,
            state: Mutex::new(State::default()),
        };
        store.replay()?;
        Ok(store)
    }

    /// The store of a cluster: partition 0 of [`OFFSETS_TOPIC`], led here
    /// in leader epoch `epoch`, replayed to its end (what an earlier leader
    /// wrote and this node copied included). Writes wait for `min_insync`
    /// in-sync replicas, at most `timeout`; once leadership moves they
    /// fail with [`CoreError::NotCoordinator`].
    ///
    /// # Errors
    ///
    /// Storage errors, or a record that is not an offsets record.
    pub fn replicated(
        partition: Arc<Partition>,
        epoch: i32,
        min_insync: usize,
        timeout: Duration,
    ) -> Result<OffsetStore> {
        let store = OffsetStore {
            log: Arc::clone(partition.shared_log()),
            replicated: Some(Replicated {
                partition,
                epoch,
                min_insync,
                timeout,
            }),
            state: Mutex::new(State::default()),
        };
        store.replay()?;
        Ok(store)
    }

    /// The leader epoch of the partition this store writes to, in a cluster.
    pub fn leader_epoch(&self) -> Option<i32> {
        self.replicated.as_ref().map(|replicated| replicated.epoch)
    }

    fn replay(&self) -> Result<()> {
        let mut offset = self.log.offsets().log_start_offset;
        let mut state = self.state.lock();
        loop {
            // To the log's end: a new leader's log is the truth, even the
            // part not yet on every replica.
            let chunk = match self.log.read_unsynced(offset, REPLAY_CHUNK_BYTES) {
                Err(weir_log::LogError::Corrupt { offset: at, .. }) => {
                    // Commits in damaged batches are lost; later ones (each
                    // group's newest) still replay over them.
                    let Some(after) = self.log.offset_after_damage(at) else {
                        return Ok(());
                    };
                    tracing::error!(
                        from = at,
                        to = after,
                        "skipping damaged batches of the committed-offsets log"
                    );
                    offset = after;
                    continue;
                }
                other => other?,
            };
            if chunk.is_empty() {
                return Ok(());
            }
            let mut buf = chunk;
            while !buf.is_empty() {
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
                    .map_err(|error| corrupt(&error.to_string()))?;
                for record in set.records {
                    apply(&mut state, record.key.as_ref(), record.value.as_ref())?;
                    offset = record.offset as u64 + 1;
                }
            }
        }
    }

    /// Durably records `offsets` for `group` (a `None` deletes the entry).
    ///
    /// # Errors
    ///
    /// Storage errors; nothing is answered as committed then.
    pub async fn write(
        &self,
        group: &str,
        offsets: Vec<(TopicPartition, Option<CommittedOffset>)>,
    ) -> Result<()> {
        let written = self.append_changes(group, offsets)?;
        self.wait(written).await
    }

    /// Appends `changes` for `group` and applies them in memory, without
    /// waiting for durability; returns the offset to wait for.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn append_changes(
        &self,
        group: &str,
        changes: Vec<(TopicPartition, Option<CommittedOffset>)>,
    ) -> Result<Written> {
        if changes.is_empty() {
            return Ok(Written::default());
        }
        let records: Vec<NewRecord> = changes
            .iter()
            .map(|((topic, partition), value)| encode(&(group, topic, *partition), value.as_ref()))
            .collect::<Result<_>>()?;
        // Memory changes in log order, under one lock, so the last write
        // for a key wins in memory as it does on replay.
        let mut state = self.state.lock();
        let end = self.append(&records)?;
        let groups = &mut state.offsets;
        let entries = groups.entry(group.to_string()).or_default();
        for (key, value) in changes {
            match value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
        if entries.is_empty() {
            groups.remove(group);
        }
        Ok(end)
    }

    /// Records a group's membership (`None` forgets it), without waiting
    /// for durability; returns the offset to wait for.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn append_membership(
        &self,
        group: &str,
        membership: Option<StoredGroup>,
    ) -> Result<Written> {
        let record = encode(&(group,), membership.as_ref())?;
        let mut state = self.state.lock();
        let end = self.append(&[record])?;
        match membership {
            Some(membership) => state.memberships.insert(group.to_string(), membership),
            None => state.memberships.remove(group),
        };
        Ok(end)
    }

    /// Waits until a write is durable: on this node's disk, and in a
    /// cluster on every in-sync replica's.
    ///
    /// # Errors
    ///
    /// Storage errors; in a cluster [`CoreError::NotCoordinator`] once
    /// leadership moved, the errors of replication otherwise
    /// ([`CoreError::NotEnoughReplicasAfterAppend`],
    /// [`CoreError::RequestTimedOut`]).
    pub async fn wait(&self, written: Written) -> Result<()> {
        let Some(replicated) = &self.replicated else {
            return Ok(self.log.wait_durable(written).await?);
        };
        let partition = &replicated.partition;
        let outcome = match partition.wait_durable(written, replicated.epoch).await {
            Ok(()) => {
                partition
                    .wait_replicated(
                        written.end_offset,
                        replicated.epoch,
                        replicated.min_insync,
                        replicated.timeout,
                    )
                    .await
            }
            Err(error) => Err(error),
        };
        outcome.map_err(as_coordinator_error)
    }

    /// Records a transaction's state (`None` forgets it), without waiting
    /// for durability; returns the offset to wait for.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn append_transaction(
        &self,
        transactional_id: &str,
        record: Option<serde_json::Value>,
    ) -> Result<Written> {
        let key = TransactionKey {
            transaction: transactional_id.to_string(),
        };
        let encoded = encode(&key, record.as_ref())?;
        let mut state = self.state.lock();
        let end = self.append(&[encoded])?;
        match record {
            Some(record) => state.transactions.insert(key.transaction, record),
            None => state.transactions.remove(&key.transaction),
        };
        Ok(end)
    }

    /// The transactions read back on start.
    pub fn transactions(&self) -> HashMap<String, serde_json::Value> {
        self.state.lock().transactions.clone()
    }

    /// The memberships read back on start.
    pub fn memberships(&self) -> HashMap<String, StoredGroup> {
        self.state.lock().memberships.clone()
    }

    fn append(&self, records: &[NewRecord]) -> Result<Written> {
        let bytes = batch::encode_batch(records);
        let batches = batch::split_batches(bytes)?;
        let append = |epoch| Ok(self.log.append(&batches, epoch, crate::now_ms())?.written());
        match &self.replicated {
            None => append(0),
            Some(replicated) => replicated
                .partition
                .append_as_leader(Some(replicated.epoch), append)
                .map_err(as_coordinator_error),
        }
    }

    /// The offsets of one group.
    pub fn group(&self, group: &str) -> GroupOffsets {
        self.state
            .lock()
            .offsets
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Names of the groups that have offsets.
    pub fn group_names(&self) -> Vec<String> {
        self.state.lock().offsets.keys().cloned().collect()
    }

    /// Every (group, partition) whose offsets match `predicate`.
    pub fn select(
        &self,
        mut predicate: impl FnMut(&str, &TopicPartition, &CommittedOffset) -> bool,
    ) -> Vec<(String, TopicPartition)> {
        let state = self.state.lock();
        let mut selected = Vec::new();
        for (group, entries) in state.offsets.iter() {
            for (key, value) in entries {
                if predicate(group, key, value) {
                    selected.push((group.clone(), key.clone()));
                }
            }
        }
        selected
    }

    /// Rewrites the live entries at the log's end and deletes what came
    /// before, when the log has grown well past them. Returns whether it did.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn compact_if_needed(&self) -> Result<bool> {
        let size = self.log.offsets().size_bytes;
        if size < COMPACT_BYTES_MIN {
            return Ok(false);
        }
        let (start, written) = {
            let state = self.state.lock();
            let offsets = state.offsets.iter().flat_map(|(group, entries)| {
                entries.iter().map(move |((topic, partition), value)| {
                    encode(&(group, topic, *partition), Some(value))
                })
            });
            let memberships = state
                .memberships
                .iter()
                .map(|(group, membership)| encode(&(group,), Some(membership)));
            let transactions = state.transactions.iter().map(|(id, record)| {
                encode(
                    &TransactionKey {
                        transaction: id.clone(),
                    },
                    Some(record),
                )
            });
            let live: Vec<NewRecord> = offsets
                .chain(memberships)
                .chain(transactions)
                .collect::<Result<_>>()?;
            let live_bytes: u64 = live
                .iter()
                .map(|r| r.key.as_ref().map_or(0, Bytes::len) as u64 + 64)
                .sum();
            if size < live_bytes * 4 {
                return Ok(false);
            }
            self.log.roll()?;
            let start = self.log.offsets().log_end_offset;
            let mut written = Written::default();
            for chunk in live.chunks(SNAPSHOT_BATCH_RECORDS) {
                written = self.append(chunk)?;
            }
            (start, written)
        };
        self.wait(written).await?;
        let deleted = self.log.delete_segments_below(start)?;
        tracing::info!(deleted, size_before = size, "compacted the offsets log");
        Ok(true)
    }

    /// Syncs and checkpoints the offsets log for a clean shutdown (in a
    /// cluster the topic closes its partition's log).
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn close(&self) -> Result<()> {
        if self.replicated.is_some() {
            return Ok(());
        }
        Ok(self.log.close()?)
    }
}

/// A record with a JSON key and, unless it deletes, a JSON value.
/// A write of the coordinator's that failed because the offsets partition
/// moved to another leader: the coordinator moved with it.
fn as_coordinator_error(error: CoreError) -> CoreError {
    match error {
        CoreError::NotLeaderOrFollower => CoreError::NotCoordinator,
        other => other,
    }
}

fn encode<K: serde::Serialize, V: serde::Serialize>(
    key: &K,
    value: Option<&V>,
) -> Result<NewRecord> {
    let key = serde_json::to_vec(key).map_err(|e| corrupt(&e.to_string()))?;
    let value = value
        .map(serde_json::to_vec)
        .transpose()
        .map_err(|e| corrupt(&e.to_string()))?;
    Ok(NewRecord {
        timestamp: crate::now_ms(),
        key: Some(Bytes::from(key)),
        value: value.map(Bytes::from),
        headers: Vec::new(),
    })
}

/// Key of a transaction's record: a JSON object, unlike the array keys.
#[derive(serde::Serialize, serde::Deserialize)]
struct TransactionKey {
    transaction: String,
}

/// The three kinds of key in the offsets log.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Key {
    Offset(String, String, i32),
    Membership((String,)),
    Transaction(TransactionKey),
}

fn apply(state: &mut State, key: Option<&Bytes>, value: Option<&Bytes>) -> Result<()> {
    let key = key.ok_or_else(|| corrupt("an offsets record without a key"))?;
    let key: Key = serde_json::from_slice(key).map_err(|e| corrupt(&e.to_string()))?;
    match (key, value) {
        (Key::Offset(group, topic, partition), Some(value)) => {
            let value: CommittedOffset =
                serde_json::from_slice(value).map_err(|e| corrupt(&e.to_string()))?;
            state
                .offsets
                .entry(group)
                .or_default()
                .insert((topic, partition), value);
        }
        (Key::Offset(group, topic, partition), None) => {
            if let Some(entries) = state.offsets.get_mut(&group) {
                entries.remove(&(topic, partition));
                if entries.is_empty() {
                    state.offsets.remove(&group);
                }
            }
        }
        (Key::Membership((group,)), Some(value)) => {
            let value: StoredGroup =
                serde_json::from_slice(value).map_err(|e| corrupt(&e.to_string()))?;
            state.memberships.insert(group, value);
        }
        (Key::Membership((group,)), None) => {
            state.memberships.remove(&group);
        }
        (Key::Transaction(key), Some(value)) => {
            let value = serde_json::from_slice(value).map_err(|e| corrupt(&e.to_string()))?;
            state.transactions.insert(key.transaction, value);
        }
        (Key::Transaction(key), None) => {
            state.transactions.remove(&key.transaction);
        }
    }
    Ok(())
}

fn corrupt(why: &str) -> CoreError {
    CoreError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("offsets log: {why}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp_ms: 1,
        })
    }

    #[tokio::test]
    async fn commits_survive_reopen_with_and_without_a_clean_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = ("t".to_string(), 0);
        {
            let store = OffsetStore::open(dir.path(), false, &Arc::default()).expect("open");
            store
                .write("g", vec![(key.clone(), committed(5))])
                .await
                .expect("commit");
            store
                .write("g", vec![(key.clone(), committed(9))])
                .await
                .expect("commit");
            store
                .write("h", vec![(key.clone(), committed(1))])
                .await
                .expect("commit");
            store
                .write("h", vec![(key.clone(), None)])
                .await
                .expect("delete");
        }
        let store =
            OffsetStore::open(dir.path(), false, &Arc::default()).expect("reopen after a crash");
        assert_eq!(store.group("g").get(&key).map(|c| c.offset), Some(9));
        assert!(store.group("h").is_empty());
        store.close().expect("close");
        let store = OffsetStore::open(dir.path(), true, &Arc::default())
            .expect("reopen after a clean close");
        assert_eq!(store.group_names(), vec!["g".to_string()]);
    }
}
