//! openraft's own conformance suite run against the controller's durable
//! raft log and state machine, plus what the suite cannot see: that what
//! was appended, voted and truncated is still so after reopening, and
//! that a torn tail is cut while damage in the middle is refused.

use std::fs::OpenOptions;
use std::io::Write;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, StorageError, Vote};
use tempfile::TempDir;
use weir_cluster::log_store::LogStore;
use weir_cluster::state_machine::StateMachine;
use weir_cluster::{NodeId, TypeConfig};
use weir_core::metadata::MetadataCommand;

struct DiskStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for DiskStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().expect("temporary directory");
        let log = LogStore::open(dir.path()).expect("open log");
        let machine = StateMachine::open(dir.path()).expect("open state machine");
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    Suite::test_all(DiskStores).expect("every openraft storage test passes");
}

fn entry(term: u64, index: u64, vhost: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(MetadataCommand::CreateVhost { name: vhost.into() }),
    }
}

async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    log.blocking_append(entries).await.expect("append");
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(0..)
        .await
        .expect("read")
        .iter()
        .map(|entry| entry.log_id.index)
        .collect()
}

#[tokio::test]
async fn appends_votes_truncations_and_purges_survive_reopening() {
    let dir = TempDir::new().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        append(&mut log, (1..=5).map(|i| entry(1, i, "v")).collect()).await;
        log.save_vote(&Vote::new(2, 3)).await.unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
            .await
            .unwrap();
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 1))
            .await
            .unwrap();
        append(&mut log, vec![entry(2, 4, "w")]).await;
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![2, 3, 4]);
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(1));
    assert_eq!(
        state.last_log_id.map(|id| (id.leader_id.term, id.index)),
        Some((2, 4))
    );
    let mut machine = StateMachine::open(dir.path()).unwrap();
    assert_eq!(machine.applied_state().await.unwrap().0, None);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_damage_before_valid_entries_is_refused() {
    let dir = TempDir::new().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        append(&mut log, (0..3).map(|i| entry(1, i, "v")).collect()).await;
    }
    let path = dir.path().join("raft-log");
    let whole = std::fs::read(&path).unwrap();
    // Half a frame at the end: an append a crash interrupted.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&whole[..whole.len() / 3 / 2])
        .unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![0, 1, 2]);
    assert_eq!(std::fs::read(&path).unwrap(), whole, "the torn tail is cut");
    drop(log);
    // One flipped byte inside the first entry, with valid entries after it.
    let mut damaged = whole.clone();
    damaged[12] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    let Err(error) = LogStore::open(dir.path()) else {
        panic!("damage is refused");
    };
    assert!(error.to_string().contains("corrupt at byte 0"), "{error}");
}
