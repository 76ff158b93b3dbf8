//! The transaction coordinator: Kafka's transactional producers.
//!
//! A `transactional.id` maps to a producer id and epoch. Each transaction
//! moves `Empty/Complete* → Ongoing → Prepare{Commit,Abort} →
//! Complete{Commit,Abort}`; every state is persisted in the coordinator log
//! (see [`crate::group::offsets`]) before it is acted on. Ending a
//! transaction writes a COMMIT or ABORT marker to each of its partitions and,
//! on commit, makes its offsets (TxnOffsetCommit) the groups' committed
//! offsets. A transaction left open past its timeout is aborted with the
//! epoch bumped, which fences the producer that left it. After a restart,
//! transactions found in a Prepare state are completed; open ones time out.
//!
//! In a cluster the group coordinator (the leader of the replicated offsets
//! topic) is the transaction coordinator too: its records replicate with
//! the groups', a new coordinator replays them and completes what its
//! predecessor left prepared, and each marker goes to its partition's
//! leader, wherever that is ([`ReplicaRequest::WriteMarker`]), and counts
//! once every in-sync replica has it.
//!
//! Operations are serialised by one async lock: a transaction's steps are
//! few and short (one or two fsyncs each).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::broker::{now_ms, Broker, ReplicaReply, ReplicaRequest};
use crate::consumer_groups::OffsetCommit;
use crate::error::{CoreError, Result};
use crate::group::TopicPartition;
use crate::logging::Escaped;
use crate::topic::Partition;

/// Longest transaction timeout accepted (Kafka's `transaction.max.timeout.ms`).
pub const TRANSACTION_TIMEOUT_MAX_MS: i64 = 900_000;
/// How long a coordinator keeps retrying a marker whose partition has no
/// reachable leader before it leaves the transaction prepared (the periodic
/// [`Broker::expire_transactions`] completes it later).
const MARKER_RETRY_MAX: Duration = Duration::from_secs(10);
/// Pause between two attempts at a marker.
const MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionState {
    /// No transaction since the producer started.
    Empty,
    /// Partitions or offsets were added; records may be in the logs.
    Ongoing,
    /// Commit decided; markers being written.
    PrepareCommit,
    /// Abort decided; markers being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

/// One offset committed inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingOffset {
    topic: String,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
}

/// A transactional id's state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Transaction {
    producer_id: i64,
    producer_epoch: i16,
    timeout_ms: i64,
    state: TransactionState,
    started_ms: i64,
    partitions: BTreeSet<TopicPartition>,
    /// Group → offsets to commit with the transaction.
    offsets: BTreeMap<String, Vec<PendingOffset>>,
}

/// The coordinator's state, behind [`Broker`].
#[derive(Debug, Default)]
pub(crate) struct Transactions {
    by_id: tokio::sync::Mutex<HashMap<String, Transaction>>,
    /// Producer id → partitions of its open transaction, for checking
    /// transactional writes on the produce path without the async lock.
    open_partitions: parking_lot::Mutex<HashMap<i64, BTreeSet<TopicPartition>>>,
}

impl Transactions {
    /// The transactions persisted in the coordinator log.
    pub(crate) fn restore(records: HashMap<String, serde_json::Value>) -> Transactions {
        let by_id: HashMap<String, Transaction> = records
            .into_iter()
            .filter_map(|(id, value)| match serde_json::from_value::<Transaction>(value) {
                Ok(transaction) => Some((id, transaction)),
                Err(error) => {
                    tracing::error!(transactional_id = %Escaped(&id), %error, "unreadable transaction record; dropped");
                    None
                }
            })
            .collect();
        let open_partitions = by_id
            .values()
            .filter(|t| t.state == TransactionState::Ongoing)
            .map(|t| (t.producer_id, t.partitions.clone()))
            .collect();
        Transactions {
            by_id: tokio::sync::Mutex::new(by_id),
            open_partitions: parking_lot::Mutex::new(open_partitions),
        }
    }

    /// Keeps `open_partitions` in step with a transaction's state.
    fn note(&self, transaction: &Transaction) {
        let mut open = self.open_partitions.lock();
        if transaction.state == TransactionState::Ongoing {
            open.insert(transaction.producer_id, transaction.partitions.clone());
        } else {
            open.remove(&transaction.producer_id);
        }
    }

    /// Whether `producer_id` may write transactional records to the
    /// partition: it was added to the producer's open transaction (as
    /// Kafka 3.6+ verifies; a write outside would hold the partition's last
    /// stable offset forever, since no marker would end it).
    pub(crate) fn allows(&self, producer_id: i64, partition: &TopicPartition) -> bool {
        self.open_partitions
            .lock()
            .get(&producer_id)
            .is_some_and(|partitions| partitions.contains(partition))
    }
}

/// The transaction of `transactional_id`, if `producer_id` and
/// `producer_epoch` are its current producer's.
fn producer_transaction<'a>(
    transactions: &'a mut HashMap<String, Transaction>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<&'a mut Transaction> {
    let transaction = transactions
        .get_mut(transactional_id)
        .ok_or(CoreError::InvalidProducerIdMapping)?;
    if transaction.producer_id != producer_id {
        return Err(CoreError::InvalidProducerIdMapping);
    }
    if producer_epoch < transaction.producer_epoch {
        return Err(CoreError::ProducerFenced);
    }
    if producer_epoch > transaction.producer_epoch {
        return Err(CoreError::InvalidProducerEpoch);
    }
    Ok(transaction)
}

/// Moves a transaction to Ongoing, for adding partitions or offsets;
/// a new one starts its timeout at `now_ms`.
fn begin_or_continue(transaction: &mut Transaction, now_ms: i64) -> Result<()> {
    match transaction.state {
        TransactionState::Ongoing => Ok(()),
        TransactionState::PrepareCommit | TransactionState::PrepareAbort => {
            Err(CoreError::ConcurrentTransactions)
        }
        TransactionState::Empty
        | TransactionState::CompleteCommit
        | TransactionState::CompleteAbort => {
            transaction.state = TransactionState::Ongoing;
            transaction.started_ms = now_ms;
            transaction.partitions.clear();
            transaction.offsets.clear();
            Ok(())
        }
    }
}

impl Broker {
    /// InitProducerId with a transactional id: finishes what the previous
    /// producer with this id left open (aborting an open transaction), bumps
    /// the epoch — fencing that producer — and returns `(producer_id, epoch)`.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidTransactionTimeout`], storage errors;
    /// [`CoreError::NotCoordinator`] on a node of a cluster that does not
    /// coordinate.
    pub async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<(i64, i16)> {
        if transactional_id.is_empty() {
            return Err(CoreError::InvalidRequest(
                "an empty transactional id".into(),
            ));
        }
        let timeout_ms = i64::from(timeout_ms);
        if timeout_ms <= 0 || timeout_ms > TRANSACTION_TIMEOUT_MAX_MS {
            return Err(CoreError::InvalidTransactionTimeout);
        }
        let state = self.transaction_state(transactional_id)?;
        let mut transactions = state.by_id.lock().await;
        let transaction = match transactions.remove(transactional_id) {
            None => Transaction {
                producer_id: self.new_producer_id()?,
                producer_epoch: 0,
                timeout_ms,
                state: TransactionState::Empty,
                started_ms: self.config().clock.now_ms(),
                partitions: BTreeSet::new(),
                offsets: BTreeMap::new(),
            },
            Some(mut previous) => {
                self.finish_open(transactional_id, &mut previous).await?;
                let (producer_id, producer_epoch) = if previous.producer_epoch >= i16::MAX - 1 {
                    (self.new_producer_id()?, 0)
                } else {
                    (previous.producer_id, previous.producer_epoch + 1)
                };
                Transaction {
                    producer_id,
                    producer_epoch,
                    timeout_ms,
                    state: TransactionState::Empty,
                    started_ms: self.config().clock.now_ms(),
                    partitions: BTreeSet::new(),
                    offsets: BTreeMap::new(),
                }
            }
        };
        self.persist_transaction(transactional_id, &transaction)
            .await?;
        let answer = (transaction.producer_id, transaction.producer_epoch);
        transactions.insert(transactional_id.to_string(), transaction);
        Ok(answer)
    }

    /// AddPartitionsToTxn: the partitions the producer will write in this transaction.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidProducerIdMapping`], [`CoreError::ProducerFenced`],
    /// [`CoreError::ConcurrentTransactions`]; per partition
    /// [`CoreError::UnknownTopicOrPartition`].
    pub async fn add_partitions_to_transaction(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        let state = self.transaction_state(transactional_id)?;
        let mut transactions = state.by_id.lock().await;
        let transaction = producer_transaction(
            &mut transactions,
            transactional_id,
            producer_id,
            producer_epoch,
        )?;
        let unknown: Vec<bool> = partitions
            .iter()
            .map(|(topic, index)| self.topic(topic).and_then(|t| t.partition(*index)).is_err())
            .collect();
        if unknown.iter().any(|&u| u) {
            // As Kafka: nothing is added when one partition is unknown.
            return Ok(partitions
                .into_iter()
                .zip(unknown)
                .map(|(key, unknown)| {
                    let result = if unknown {
                        Err(CoreError::UnknownTopicOrPartition)
                    } else {
                        Err(CoreError::OperationNotAttempted)
                    };
                    (key, result)
                })
                .collect());
        }
        begin_or_continue(transaction, self.config().clock.now_ms())?;
        transaction.partitions.extend(partitions.iter().cloned());
        let snapshot = transaction.clone();
        self.persist_transaction(transactional_id, &snapshot)
            .await?;
        Ok(partitions.into_iter().map(|key| (key, Ok(()))).collect())
    }

    /// AddOffsetsToTxn: the group whose offsets the transaction will commit.
    ///
    /// # Errors
    ///
    /// As [`Broker::add_partitions_to_transaction`].
    pub async fn add_offsets_to_transaction(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
    ) -> Result<()> {
        let state = self.transaction_state(transactional_id)?;
        let mut transactions = state.by_id.lock().await;
        let transaction = producer_transaction(
            &mut transactions,
            transactional_id,
            producer_id,
            producer_epoch,
        )?;
        begin_or_continue(transaction, self.config().clock.now_ms())?;
        transaction.offsets.entry(group_id.to_string()).or_default();
        let snapshot = transaction.clone();
        self.persist_transaction(transactional_id, &snapshot).await
    }

    /// TxnOffsetCommit: offsets that become the group's when the transaction commits.
    ///
    /// # Errors
    ///
    /// As [`Broker::add_partitions_to_transaction`];
    /// [`CoreError::InvalidTxnState`] when the group was not added; the
    /// group errors of a commit when `member` (generation, member id,
    /// instance id) is not a current member.
    pub async fn commit_offsets_in_transaction(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
        member: Option<(i32, &str, Option<&str>)>,
        commits: Vec<OffsetCommit>,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        // KIP-447: offsets sent with a member's group metadata are only
        // accepted from a current member of the current generation.
        if let Some((generation, member_id, instance_id)) = member {
            self.coordinating(group_id)?.check_commit(
                group_id,
                generation,
                member_id,
                instance_id,
            )?;
        }
        let state = self.transaction_state(transactional_id)?;
        let mut transactions = state.by_id.lock().await;
        let transaction = producer_transaction(
            &mut transactions,
            transactional_id,
            producer_id,
            producer_epoch,
        )?;
        if transaction.state != TransactionState::Ongoing {
            return Err(CoreError::InvalidTxnState);
        }
        let pending = transaction
            .offsets
            .get_mut(group_id)
            .ok_or(CoreError::InvalidTxnState)?;
        let mut results = Vec::with_capacity(commits.len());
        for commit in commits {
            let (topic, partition) = commit.partition.clone();
            let check = self
                .topic(&topic)
                .and_then(|t| t.partition(partition))
                .map(|_| ());
            if check.is_ok() {
                pending.retain(|p| (p.topic.as_str(), p.partition) != (topic.as_str(), partition));
                pending.push(PendingOffset {
                    topic,
                    partition,
                    offset: commit.offset,
                    leader_epoch: commit.leader_epoch,
                    metadata: commit.metadata,
                });
            }
            results.push((commit.partition, check));
        }
        let snapshot = transaction.clone();
        self.persist_transaction(transactional_id, &snapshot)
            .await?;
        Ok(results)
    }

    /// Partitions of `group_id` whose offsets an open transaction has yet to
    /// commit (OffsetFetch with `require_stable`).
    pub async fn offsets_pending_in_transactions(
        &self,
        group_id: &str,
    ) -> std::collections::HashSet<TopicPartition> {
        let state = Arc::clone(&self.transactions.read());
        let transactions = state.by_id.lock().await;
        transactions
            .values()
            .filter(|t| {
                matches!(
                    t.state,
                    TransactionState::Ongoing | TransactionState::PrepareCommit
                )
            })
            .filter_map(|t| t.offsets.get(group_id))
            .flat_map(|pending| pending.iter().map(|p| (p.topic.clone(), p.partition)))
            .collect()
    }

    /// EndTxn: commits or aborts the open transaction. A retry of an
    /// ending that already completed succeeds.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidProducerIdMapping`], [`CoreError::ProducerFenced`],
    /// [`CoreError::InvalidTxnState`], storage errors.
    pub async fn end_transaction(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<()> {
        let state = self.transaction_state(transactional_id)?;
        let mut transactions = state.by_id.lock().await;
        let transaction = producer_transaction(
            &mut transactions,
            transactional_id,
            producer_id,
            producer_epoch,
        )?;
        match (transaction.state, commit) {
            (TransactionState::Ongoing, _) => {}
            (TransactionState::CompleteCommit, true) | (TransactionState::CompleteAbort, false) => {
                return Ok(())
            }
            // A retry after markers failed: finish what was decided.
            (TransactionState::PrepareCommit, true) | (TransactionState::PrepareAbort, false) => {
                let mut decided = transaction.clone();
                let result = self.complete(transactional_id, &mut decided).await;
                *transaction = decided;
                return result;
            }
            _ => return Err(CoreError::InvalidTxnState),
        }
        transaction.state = if commit {
            TransactionState::PrepareCommit
        } else {
            TransactionState::PrepareAbort
        };
        let mut decided = transaction.clone();
        self.persist_transaction(transactional_id, &decided).await?;
        self.complete(transactional_id, &mut decided).await?;
        *transaction = decided;
        Ok(())
    }

    /// Aborts transactions open past their timeout, bumping the epoch so the
    /// producer that left them is fenced; completes transactions a restart
    /// left in a Prepare state.
    pub async fn expire_transactions(&self) {
        if self.group_coordinator().is_none() {
            return;
        }
        let state = Arc::clone(&self.transactions.read());
        let mut transactions = state.by_id.lock().await;
        let now = self.config().clock.now_ms();
        for (id, transaction) in transactions.iter_mut() {
            let result = match transaction.state {
                TransactionState::Ongoing
                    if now - transaction.started_ms > transaction.timeout_ms =>
                {
                    tracing::info!(transactional_id = %Escaped(id), "transaction timed out; aborting it");
                    transaction.producer_epoch = transaction.producer_epoch.saturating_add(1);
                    transaction.state = TransactionState::PrepareAbort;
                    let mut decided = transaction.clone();
                    let result = match self.persist_transaction(id, &decided).await {
                        Ok(()) => self.complete(id, &mut decided).await,
                        Err(error) => Err(error),
                    };
                    *transaction = decided;
                    result
                }
                TransactionState::PrepareCommit | TransactionState::PrepareAbort => {
                    let mut decided = transaction.clone();
                    let result = self.complete(id, &mut decided).await;
                    *transaction = decided;
                    result
                }
                _ => Ok(()),
            };
            if let Err(error) = result {
                tracing::error!(transactional_id = %Escaped(id), %error, "completing a transaction failed; retrying later");
            }
        }
    }

    /// Before a new producer takes over an id: aborts its open transaction,
    /// completes a prepared one.
    async fn finish_open(
        &self,
        transactional_id: &str,
        transaction: &mut Transaction,
    ) -> Result<()> {
        match transaction.state {
            TransactionState::Ongoing => {
                // As Kafka: the abort markers carry a bumped epoch, fencing
                // the old producer in every partition it wrote to.
                transaction.producer_epoch = transaction.producer_epoch.saturating_add(1);
                transaction.state = TransactionState::PrepareAbort;
                self.persist_transaction(transactional_id, transaction)
                    .await?;
                self.complete(transactional_id, transaction).await
            }
            TransactionState::PrepareCommit | TransactionState::PrepareAbort => {
                self.complete(transactional_id, transaction).await
            }
            _ => Ok(()),
        }
    }

    /// Writes the markers (and, on commit, the offsets) of a prepared
    /// transaction, then records it complete.
    async fn complete(&self, transactional_id: &str, transaction: &mut Transaction) -> Result<()> {
        let commit = match transaction.state {
            TransactionState::PrepareCommit => true,
            TransactionState::PrepareAbort => false,
            _ => return Ok(()),
        };
        for (topic, partition) in &transaction.partitions {
            self.write_marker(
                topic,
                *partition,
                transaction.producer_id,
                transaction.producer_epoch,
                commit,
            )
            .await?;
        }
        if commit {
            for (group, pending) in &transaction.offsets {
                let changes = pending
                    .iter()
                    .map(|p| {
                        let committed = crate::group::CommittedOffset {
                            offset: p.offset,
                            leader_epoch: p.leader_epoch,
                            metadata: p.metadata.clone().unwrap_or_default(),
                            commit_timestamp_ms: self.config().clock.now_ms(),
                        };
                        ((p.topic.clone(), p.partition), Some(committed))
                    })
                    .collect();
                self.coordinating(group)?
                    .store()
                    .write(group, changes)
                    .await?;
            }
        }
        transaction.state = if commit {
            TransactionState::CompleteCommit
        } else {
            TransactionState::CompleteAbort
        };
        transaction.partitions.clear();
        transaction.offsets.clear();
        self.persist_transaction(transactional_id, transaction)
            .await
    }

    /// Writes a COMMIT or ABORT marker for `producer_id` to a partition:
    /// here when this node leads it, else through its leader, retrying
    /// while it has none for up to [`MARKER_RETRY_MAX`]. A partition deleted
    /// meanwhile needs none.
    async fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<()> {
        let Ok(index) = u32::try_from(partition) else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + MARKER_RETRY_MAX;
        loop {
            let outcome = match (
                self.partition_leader(topic, index),
                self.replica_transport(),
            ) {
                (Some(leader), Some(transport)) if leader != self.node_id() => {
                    let request = ReplicaRequest::WriteMarker {
                        topic: topic.to_owned(),
                        partition: index,
                        producer_id,
                        producer_epoch,
                        commit,
                    };
                    match transport.call(leader as u64, request).await {
                        Ok(ReplicaReply::MarkerWritten) => Ok(()),
                        Ok(other) => Err(CoreError::Storage(weir_log::LogError::Replica(format!(
                            "node {leader} did not write the marker: {other:?}"
                        )))),
                        Err(error) => Err(CoreError::Io(error)),
                    }
                }
                _ => {
                    self.write_marker_here(topic, partition, producer_id, producer_epoch, commit)
                        .await
                }
            };
            match outcome {
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(topic = %Escaped(topic), partition, %error, "marker not written yet; retrying");
                    tokio::time::sleep(MARKER_RETRY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    /// Appends a COMMIT or ABORT marker for `producer_id` to a partition
    /// this node leads and waits until it is durable (in a cluster: on
    /// every in-sync replica). A partition deleted meanwhile needs none.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotLeaderOrFollower`] when this node does not lead the
    /// partition (or stopped leading it); storage and replication errors.
    pub(crate) async fn write_marker_here(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<()> {
        let Ok(found) = self.topic(topic) else {
            return Ok(());
        };
        let Ok(partition) = found.partition(partition) else {
            return Ok(());
        };
        let epoch = partition.leader_epoch();
        let marker =
            weir_log::batch::encode_marker(producer_id, producer_epoch, commit, 0, now_ms());
        let batches = weir_log::batch::split_batches(marker)?;
        // Queued behind the partition's other writes, off the async threads.
        let writer: Arc<Partition> = Arc::clone(&partition);
        let written = partition
            .submit_write(move || -> Result<weir_log::Written> {
                writer.append_as_leader(Some(epoch), |epoch| {
                    let mut producers = writer.producers();
                    let info = writer.log().append(&batches, epoch, now_ms())?;
                    producers.record_marker(&batches[0].0, info.base_offset, commit);
                    Ok(info.written())
                })
            })
            .await
            .map_err(|_| {
                CoreError::Storage(weir_log::LogError::Io(std::io::Error::other(
                    crate::write_queue::JobPanicked,
                )))
            })??;
        partition.wait_durable(written, epoch).await?;
        if self.quorum().is_some() {
            partition
                .wait_replicated(
                    written.end_offset,
                    epoch,
                    self.min_insync(&found),
                    self.config().replication_timeout,
                )
                .await?;
        }
        Ok(())
    }

    /// The transaction coordinator's state, when this node coordinates
    /// `transactional_id`.
    ///
    /// # Errors
    ///
    /// [`CoreError::NotCoordinator`].
    fn transaction_state(&self, transactional_id: &str) -> Result<Arc<Transactions>> {
        self.coordinating(transactional_id)?;
        Ok(Arc::clone(&self.transactions.read()))
    }

    async fn persist_transaction(
        &self,
        transactional_id: &str,
        transaction: &Transaction,
    ) -> Result<()> {
        self.transactions.read().note(transaction);
        let value = serde_json::to_value(transaction).map_err(std::io::Error::other)?;
        let store = Arc::clone(self.coordinating(transactional_id)?.store());
        let written = store.append_transaction(transactional_id, Some(value))?;
        store.wait(written).await
    }
}
