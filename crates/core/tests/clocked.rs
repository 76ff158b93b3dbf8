//! The broker's timeouts driven by a manual clock: committed offsets and
//! their retention (by commit time, and counted from when a group emptied),
//! and transaction timeouts. Time moves only when a test advances it, so
//! hours of retention take milliseconds.

use std::time::Duration;

use bytes::Bytes;
use weir_core::group::JoinRequest;
use weir_core::{Broker, BrokerConfig, Clock, CoreError, OffsetCommit, Replication, TopicConfig};

const RETENTION: Duration = Duration::from_secs(2 * 3600);
const GROUP: &str = "g";

/// A broker on a manual clock with topic "t" of two partitions; offsets
/// are retained for two hours and new groups rebalance at once.
fn broker(dir: &tempfile::TempDir) -> (Broker, Clock) {
    let clock = Clock::manual();
    let mut config = BrokerConfig::new(dir.path());
    config.clock = clock.clone();
    config.offsets_retention = RETENTION;
    config.groups.initial_rebalance_delay = Duration::ZERO;
    let broker = Broker::open(config).expect("open");
    broker
        .create_topic(
            "t",
            Some(2),
            Replication::Default,
            TopicConfig::default(),
            false,
            &weir_core::Principal::internal(),
        )
        .expect("create");
    (broker, clock)
}

fn commit(partition: i32, offset: i64) -> OffsetCommit {
    OffsetCommit {
        partition: ("t".to_string(), partition),
        offset,
        leader_epoch: -1,
        metadata: Some(format!("at {offset}")),
    }
}

/// The group's committed offset of each partition of "t".
fn committed(broker: &Broker) -> Vec<Option<i64>> {
    let wanted = vec![("t".to_string(), 0), ("t".to_string(), 1)];
    broker
        .fetch_offsets(GROUP, Some(wanted))
        .into_iter()
        .map(|(_, committed)| committed.map(|c| c.offset))
        .collect()
}

#[tokio::test]
async fn standalone_commits_are_fetched_and_expire_each_by_its_commit_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, clock) = broker(&dir);
    let results = broker
        .commit_offsets(GROUP, -1, "", None, vec![commit(0, 5)])
        .await
        .expect("commit");
    assert!(results.iter().all(|(_, result)| result.is_ok()));
    let fetched = broker.fetch_offsets(GROUP, None);
    assert_eq!(fetched.len(), 1);
    let (key, value) = &fetched[0];
    let value = value.as_ref().expect("committed");
    assert_eq!(key, &("t".to_string(), 0));
    assert_eq!(
        (
            value.offset,
            value.metadata.as_str(),
            value.commit_timestamp_ms
        ),
        (5, "at 5", clock.now_ms())
    );
    let unknown = broker
        .commit_offsets(GROUP, -1, "", None, vec![commit(7, 1)])
        .await
        .expect("commit");
    assert!(matches!(
        unknown[0].1,
        Err(CoreError::UnknownTopicOrPartition)
    ));

    clock.advance(Duration::from_secs(3600));
    broker
        .commit_offsets(GROUP, -1, "", None, vec![commit(1, 9)])
        .await
        .expect("commit");
    assert_eq!(committed(&broker), vec![Some(5), Some(9)]);
    clock.advance(Duration::from_secs(3600));
    broker.expire_offsets().await;
    assert_eq!(
        committed(&broker),
        vec![Some(5), Some(9)],
        "exactly the retention is kept"
    );
    clock.advance(Duration::from_millis(1));
    broker.expire_offsets().await;
    assert_eq!(committed(&broker), vec![None, Some(9)]);
    clock.advance(Duration::from_secs(3600));
    broker.expire_offsets().await;
    assert_eq!(committed(&broker), vec![None, None]);
}

#[tokio::test]
async fn a_groups_offsets_live_while_it_has_members_and_expire_together_once_it_empties() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, clock) = broker(&dir);
    let groups = broker
        .group_coordinator()
        .expect("a single node coordinates every group");
    let joined = groups
        .join(JoinRequest {
            group_id: GROUP.to_string(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".to_string(),
            protocols: vec![("range".to_string(), Bytes::from_static(b""))],
            require_known_member_id: false,
            supports_skip_assignment: true,
        })
        .await
        .expect("join");
    let member = joined.member_id.clone();
    groups
        .sync(GROUP, 1, &member, None, (None, None), Vec::new())
        .await
        .expect("sync");
    let refused = broker
        .commit_offsets(GROUP, 0, &member, None, vec![commit(0, 1)])
        .await;
    assert!(matches!(refused, Err(CoreError::IllegalGeneration)));
    broker
        .commit_offsets(GROUP, 1, &member, None, vec![commit(0, 3)])
        .await
        .expect("commit");

    // Heartbeats keep the member; its offsets outlive the retention.
    for _ in 0..(3 * 3600 / 5) {
        clock.advance(Duration::from_secs(5));
        groups.tick();
        groups
            .heartbeat(GROUP, 1, &member, None)
            .expect("heartbeat");
    }
    broker
        .commit_offsets(GROUP, 1, &member, None, vec![commit(1, 4)])
        .await
        .expect("commit");
    broker.expire_offsets().await;
    assert_eq!(committed(&broker), vec![Some(3), Some(4)]);

    // Once the group is empty, both expire together, counted from then.
    let left = groups.leave(GROUP, &[(member, None)]);
    assert!(left.iter().all(Result::is_ok));
    clock.advance(RETENTION);
    broker.expire_offsets().await;
    assert_eq!(committed(&broker), vec![Some(3), Some(4)]);
    clock.advance(Duration::from_millis(1));
    broker.expire_offsets().await;
    assert_eq!(committed(&broker), vec![None, None]);
}

#[tokio::test]
async fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, clock) = broker(&dir);
    let (producer_id, epoch) = broker
        .init_transactional_producer("tx", 1_000)
        .await
        .expect("init");
    let partitions = vec![("t".to_string(), 0)];
    broker
        .add_partitions_to_transaction("tx", producer_id, epoch, partitions.clone())
        .await
        .expect("add partitions");
    clock.advance(Duration::from_millis(1_000));
    broker.expire_transactions().await;
    broker
        .add_partitions_to_transaction("tx", producer_id, epoch, partitions.clone())
        .await
        .expect("exactly the timeout is not past it");
    clock.advance(Duration::from_millis(1));
    broker.expire_transactions().await;
    assert!(matches!(
        broker
            .add_partitions_to_transaction("tx", producer_id, epoch, partitions)
            .await,
        Err(CoreError::ProducerFenced)
    ));
}
