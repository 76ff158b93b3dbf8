//! A node of a cluster brings its disk in line with the cluster's
//! metadata: what the cluster created appears with the cluster's id, what
//! it deleted goes, a local topic whose name the cluster gives another is
//! quarantined — never deleted on a guess — one the cluster does not name
//! is kept unserved, and only partitions this node leads take writes.

use std::collections::BTreeSet;

use bytes::Bytes;
use uuid::Uuid;
use weir_core::metadata::{MetadataCommand, MetadataState, NodeRegistration};
use weir_core::{Acks, Broker, BrokerConfig, CoreError, Principal, Replication, TopicConfig};
use weir_log::batch::{encode_batch, NewRecord};

fn register(state: &mut MetadataState, id: u64) {
    state
        .apply(&MetadataCommand::RegisterNode {
            node: NodeRegistration {
                id,
                incarnation: Uuid::from_u128(u128::from(id)),
                kafka: Some(format!("127.0.0.1:{}", 9090 + id)),
                amqp: None,
                http: None,
            },
        })
        .expect("registers");
}

fn one_record() -> Bytes {
    let record = NewRecord {
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Vec::new(),
        timestamp: 0,
    };
    encode_batch(&[record])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_creates_deletes_and_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path().to_owned());
    config.node_id = 1;
    let broker = Broker::open(config).unwrap();
    let anyone = Principal::anonymous(weir_core::NO_CONNECTION);
    // Topics this node had before it joined: the cluster never knew them.
    for name in ["stray", "unnamed"] {
        broker
            .create_topic(
                name,
                Some(1),
                Replication::Default,
                TopicConfig::default(),
                false,
                &anyone,
            )
            .unwrap();
    }

    let mut state = MetadataState::new();
    register(&mut state, 1);
    register(&mut state, 2);
    let id = Uuid::from_u128(42);
    state
        .apply(&MetadataCommand::CreateTopic {
            name: "orders".into(),
            id,
            partitions: 2,
            configs: Default::default(),
            replicas: vec![vec![1], vec![2]],
        })
        .unwrap();
    let namesake = Uuid::from_u128(43);
    state
        .apply(&MetadataCommand::CreateTopic {
            name: "stray".into(),
            id: namesake,
            partitions: 1,
            configs: Default::default(),
            replicas: vec![vec![2]],
        })
        .unwrap();
    broker.reconcile(&state, &BTreeSet::new()).unwrap();
    let orders = broker.topic("orders").expect("created here");
    assert_eq!(orders.id(), id);
    assert_eq!(broker.topic("stray").unwrap().id(), namesake);
    let unnamed = broker.topic("unnamed").expect("kept");
    assert!(matches!(
        broker.served_partition(&unnamed, 0),
        Err(CoreError::NotLeaderOrFollower)
    ));
    let quarantined = std::fs::read_dir(dir.path().join("quarantine").join("topics"))
        .unwrap()
        .filter_map(|entry| entry.ok())
        .any(|entry| entry.file_name().to_string_lossy().starts_with("stray."));
    assert!(quarantined, "the stray topic's data is kept aside");

    // Partition 0 is led here, partition 1 by node 2.
    assert!(broker.served_partition(&orders, 0).is_ok());
    assert!(matches!(
        broker.served_partition(&orders, 1),
        Err(CoreError::NotLeaderOrFollower)
    ));
    let written = broker
        .append("orders", 0, one_record(), Acks::All, &anyone)
        .unwrap()
        .written()
        .await
        .unwrap();
    written.durable().await.unwrap();
    assert!(matches!(
        broker.append("orders", 1, one_record(), Acks::All, &anyone),
        Err(CoreError::NotLeaderOrFollower)
    ));

    // Reconciling the same state again changes nothing.
    broker.reconcile(&state, &BTreeSet::new()).unwrap();
    assert_eq!(broker.topic("orders").unwrap().id(), id);

    // The cluster deletes it: gone, not quarantined.
    state
        .apply(&MetadataCommand::DeleteTopic {
            name: "orders".into(),
            id,
        })
        .unwrap();
    broker.reconcile(&state, &BTreeSet::from([id])).unwrap();
    assert!(broker.topic("orders").is_err());
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("quarantine").join("topics"))
        .unwrap()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.iter().all(|name| name.starts_with("stray.")),
        "{kept:?}"
    );
}
