//! Three controllers in one process on loopback: they elect a leader,
//! commit commands proposed on any node, register and fence nodes, and a
//! controller restarted on its directory rejoins with everything it had.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use weir_cluster::{ClusterConfig, ClusterError, Controller, Endpoints};
use weir_core::metadata::MetadataCommand;

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(id: u64, voters: &BTreeMap<u64, SocketAddr>, root: &Path) -> ClusterConfig {
    let mut config =
        ClusterConfig::new(id, voters[&id], voters.clone(), root.join(format!("n{id}"))).unwrap();
    config.heartbeat_interval = Duration::from_millis(100);
    config.session_timeout = Duration::from_millis(800);
    config.election_timeout_min = Duration::from_millis(300);
    config.election_timeout_max = Duration::from_millis(600);
    config
}

async fn start(id: u64, voters: &BTreeMap<u64, SocketAddr>, root: &Path) -> Arc<Controller> {
    let endpoints = Endpoints {
        kafka: Some(format!("127.0.0.1:{}", 9000 + id)),
        ..Endpoints::default()
    };
    Controller::start(config(id, voters, root), endpoints, None)
        .await
        .expect("controller starts")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn vhosts(controller: &Controller) -> Vec<String> {
    controller.read(|state| state.vhosts().keys().cloned().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_commit_fence_and_recover() {
    let root = TempDir::new().unwrap();
    let voters: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_address())).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(id, &voters, root.path()).await);
    }
    eventually("every node is registered and the cluster named", || {
        nodes.values().all(|node| {
            let status = node.status();
            status.nodes.len() == 3 && status.cluster_id.is_some()
        })
    })
    .await;
    let leader = nodes[&1].leader().expect("a leader");
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // A command proposed on a follower is forwarded, committed, and
    // applied on the proposer before propose returns.
    nodes[&follower]
        .propose(MetadataCommand::CreateVhost {
            name: "orders".into(),
        })
        .await
        .expect("committed");
    assert!(vhosts(&nodes[&follower]).contains(&"orders".to_string()));
    eventually("every node applied it", || {
        nodes
            .values()
            .all(|node| vhosts(node).contains(&"orders".to_string()))
    })
    .await;
    // The state machine's refusal reaches the proposer, on every node alike.
    let refused = nodes[&follower]
        .propose(MetadataCommand::DeleteVhost {
            name: "nope".into(),
        })
        .await;
    assert!(
        matches!(refused, Err(ClusterError::Refused(_))),
        "{refused:?}"
    );

    // The leader dies: the others elect a new one, fence it, and go on.
    let dead = nodes.remove(&leader).unwrap();
    dead.shutdown().await;
    drop(dead);
    eventually("a new leader is elected and the dead node fenced", || {
        nodes.values().all(|node| {
            let status = node.status();
            status.controller_leader.is_some_and(|new| new != leader)
                && status.nodes.iter().any(|n| n.id == leader && n.fenced)
        })
    })
    .await;
    let survivor = nodes.keys().next().copied().unwrap();
    nodes[&survivor]
        .propose(MetadataCommand::CreateVhost {
            name: "after".into(),
        })
        .await
        .expect("two of three still commit");

    // It comes back on its directory: it has what it had, catches up,
    // registers anew and is unfenced.
    let back = start(leader, &voters, root.path()).await;
    eventually("the restarted node caught up and is unfenced", || {
        let status = back.status();
        vhosts(&back).contains(&"after".to_string())
            && status.nodes.iter().all(|n| !n.fenced)
            && nodes
                .values()
                .all(|node| node.status().nodes.iter().all(|n| !n.fenced))
    })
    .await;
    for node in nodes.values().chain([&back]) {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_directory_of_another_node_or_voter_list_is_refused() {
    let root = TempDir::new().unwrap();
    let voters: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_address())).collect();
    let node = start(1, &voters, root.path()).await;
    node.shutdown().await;
    drop(node);
    std::fs::rename(root.path().join("n1"), root.path().join("n2")).unwrap();
    let error = Controller::start(config(2, &voters, root.path()), Endpoints::default(), None)
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("belongs to node 1, not node 2"),
        "{error}"
    );
    std::fs::rename(root.path().join("n2"), root.path().join("n1")).unwrap();
    let mut other: BTreeMap<u64, SocketAddr> = voters.clone();
    other.insert(4, free_address());
    let error = Controller::start(config(1, &other, root.path()), Endpoints::default(), None)
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("made for the controller voters"),
        "{error}"
    );
}
