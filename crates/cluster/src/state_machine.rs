//! The controller's state machine: the core's [`MetadataState`], changed
//! only by committed [`MetadataCommand`]s, in log order, on every node
//! alike (openraft's [`RaftStateMachine`]).
//!
//! The state is in memory; what makes it durable is the raft log plus the
//! latest snapshot, `<data>/controller/snapshot` (JSON `{"meta": …,
//! "state": …}`, replaced atomically). On start the snapshot is loaded and
//! openraft re-applies the committed entries after it. A command the state
//! refuses when applied (a race between two proposers) changes nothing on
//! any node and answers its proposer with the refusal.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;
use weir_core::metadata::{MetadataCommand, MetadataState};
use weir_log::checkpoint::write_atomically;

use crate::error::ClusterError;
use crate::full_disk::retry_while_full;
use crate::{CommandOutcome, NodeId, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot";

/// Called after each batch of commands is applied (off the async threads,
/// before anyone waiting for those commands is woken) with the state and
/// the ids of the topics the batch deleted.
pub type AppliedHook = Arc<dyn Fn(&MetadataState, &BTreeSet<Uuid>) + Send + Sync>;

/// The metadata state machine; clones share one state.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Machine>>,
    hook: Arc<OnceLock<AppliedHook>>,
    /// The index of the last applied entry, for whoever waits on it.
    applied: watch::Sender<u64>,
    snapshot_path: PathBuf,
    /// Set by [`StateMachine::close`]: a snapshot waiting for space gives up.
    closing: Arc<AtomicBool>,
}

struct Machine {
    state: MetadataState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<SnapshotFile>,
}

/// A snapshot as stored and sent.
#[derive(Clone, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    state: MetadataState,
}

impl StateMachine {
    /// The state of the latest snapshot in `dir`, or an empty one.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Io`]; [`ClusterError::Corrupt`] for a snapshot that
    /// does not decode or breaks an invariant.
    pub fn open(dir: &Path) -> Result<StateMachine, ClusterError> {
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let corrupt = |reason: String| ClusterError::Corrupt {
                    path: snapshot_path.clone(),
                    position: 0,
                    reason,
                };
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(|error| corrupt(error.to_string()))?;
                file.state.check_invariants().map_err(corrupt)?;
                Some(file)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(ClusterError::io(snapshot_path, error)),
        };
        let machine = match &snapshot {
            Some(file) => Machine {
                state: file.state.clone(),
                last_applied: file.meta.last_log_id,
                membership: file.meta.last_membership.clone(),
                snapshot,
            },
            None => Machine {
                state: MetadataState::new(),
                last_applied: None,
                membership: StoredMembership::default(),
                snapshot: None,
            },
        };
        let (applied, _) = watch::channel(machine.last_applied.map_or(0, |id| id.index));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(machine)),
            hook: Arc::new(OnceLock::new()),
            applied,
            snapshot_path,
            closing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Makes a snapshot write that waits for disk space fail instead (the
    /// controller shuts down).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Sets the hook called after every applied batch, and calls it once
    /// now with the state as it is.
    ///
    /// # Panics
    ///
    /// When a hook is set already.
    pub fn set_hook(&self, hook: AppliedHook) {
        let state = self.read(MetadataState::clone);
        assert!(self.hook.set(Arc::clone(&hook)).is_ok(), "one hook");
        hook(&state, &BTreeSet::new());
    }

    /// Runs the hook, if any, on the blocking pool and waits for it.
    async fn run_hook(&self, state: MetadataState, deleted: BTreeSet<Uuid>) {
        let Some(hook) = self.hook.get().cloned() else {
            return;
        };
        if let Err(error) = tokio::task::spawn_blocking(move || hook(&state, &deleted)).await {
            tracing::error!(%error, "the applied-commands hook failed");
        }
    }

    /// Reads the current state.
    pub fn read<T>(&self, read: impl FnOnce(&MetadataState) -> T) -> T {
        read(&self.inner.lock().state)
    }

    /// Index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the entry at `index` is applied here.
    pub async fn wait_applied(&self, index: u64) {
        let mut applied = self.applied.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = applied.wait_for(|applied| *applied >= index).await;
    }

    /// Makes `file` the durable snapshot, off the async threads; while the
    /// disk is full, once there is space again.
    async fn persist(&self, file: &SnapshotFile) -> Result<(), StorageError<NodeId>> {
        let signature = file.meta.signature();
        let bytes = serde_json::to_vec(file)
            .map_err(|error| StorageIOError::write_snapshot(Some(signature.clone()), &error))?;
        let path = self.snapshot_path.clone();
        let closing = Arc::clone(&self.closing);
        tokio::task::spawn_blocking(move || {
            retry_while_full("raft snapshot", &closing, || {
                write_atomically(&path, &bytes)
            })
        })
        .await
        .map_err(io::Error::other)
        .and_then(|written| written)
        .map_err(|error| StorageIOError::write_snapshot(Some(signature), &error).into())
    }
}

fn apply_entry(
    machine: &mut Machine,
    entry: Entry<TypeConfig>,
    deleted: &mut BTreeSet<Uuid>,
) -> CommandOutcome {
    machine.last_applied = Some(entry.log_id);
    let refusal = match entry.payload {
        EntryPayload::Blank => None,
        EntryPayload::Normal(command) => {
            let refusal = apply_command(&mut machine.state, &command);
            if let (None, MetadataCommand::DeleteTopic { id, .. }) = (&refusal, &command) {
                deleted.insert(*id);
            }
            refusal
        }
        EntryPayload::Membership(membership) => {
            machine.membership = StoredMembership::new(Some(entry.log_id), membership);
            None
        }
    };
    CommandOutcome {
        index: entry.log_id.index,
        refusal,
    }
}

fn apply_command(state: &mut MetadataState, command: &MetadataCommand) -> Option<String> {
    match state.apply(command) {
        Ok(()) => None,
        Err(refusal) => {
            tracing::debug!(command = command.kind(), %refusal, "committed command refused");
            Some(refusal.to_string())
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let file = {
            let machine = self.inner.lock();
            let snapshot_id = match machine.last_applied {
                Some(id) => format!("{}-{}", id.leader_id, id.index),
                None => "empty".to_string(),
            };
            SnapshotFile {
                meta: SnapshotMeta {
                    last_log_id: machine.last_applied,
                    last_membership: machine.membership.clone(),
                    snapshot_id,
                },
                state: machine.state.clone(),
            }
        };
        self.persist(&file).await?;
        let data = serde_json::to_vec(&file.state)
            .map_err(|error| StorageIOError::read_state_machine(&error))?;
        let meta = file.meta.clone();
        self.inner.lock().snapshot = Some(file);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let machine = self.inner.lock();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut deleted = BTreeSet::new();
        let (outcomes, last, state) = {
            let mut machine = self.inner.lock();
            let outcomes: Vec<_> = entries
                .into_iter()
                .map(|entry| apply_entry(&mut machine, entry, &mut deleted))
                .collect();
            let state = self.hook.get().map(|_| machine.state.clone());
            (outcomes, machine.last_applied, state)
        };
        if let Some(state) = state {
            self.run_hook(state, deleted).await;
        }
        if let Some(last) = last {
            self.applied.send_replace(last.index);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let invalid = |reason: String| {
            StorageIOError::read_snapshot(
                Some(meta.signature()),
                &io::Error::new(io::ErrorKind::InvalidData, reason),
            )
        };
        let state: MetadataState = serde_json::from_slice(snapshot.get_ref())
            .map_err(|error| invalid(error.to_string()))?;
        state.check_invariants().map_err(invalid)?;
        let file = SnapshotFile {
            meta: meta.clone(),
            state,
        };
        self.persist(&file).await?;
        {
            let mut machine = self.inner.lock();
            machine.state = file.state.clone();
            machine.last_applied = meta.last_log_id;
            machine.membership = meta.last_membership.clone();
            machine.snapshot = Some(file.clone());
        }
        self.run_hook(file.state, BTreeSet::new()).await;
        self.applied
            .send_replace(meta.last_log_id.map_or(0, |id| id.index));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let machine = self.inner.lock();
        let Some(file) = &machine.snapshot else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&file.state)
            .map_err(|error| StorageIOError::read_state_machine(&error))?;
        Ok(Some(Snapshot {
            meta: file.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
