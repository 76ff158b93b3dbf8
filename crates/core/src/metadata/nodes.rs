//! The nodes of a cluster as metadata knows them: who registered with which
//! endpoints, and who is fenced.
//!
//! A node registers when it starts (a new *incarnation*, a random id per
//! process start) and then heartbeats the controller. Heartbeats are not
//! commands — they would flood the log — but their absence is: the
//! controller leader fences a node that missed its heartbeats for the
//! session timeout, and unfences it when it heartbeats again. The
//! incarnation in every fence and unfence makes a late command about an
//! earlier process of the same node a refusal instead of a mistake.
//!
//! On one node none of this is used: the image stays empty and is not
//! even serialized, so single-node metadata files keep their bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::error::MetadataError;

/// Largest node id: Kafka's broker ids are 32-bit signed integers.
pub const NODE_ID_MAX: u64 = i32::MAX as u64;

/// What a node says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// The node's id (`--node-id`), at most [`NODE_ID_MAX`].
    pub id: u64,
    /// Random per process start, so commands about an earlier run are told apart.
    pub incarnation: Uuid,
    /// Where Kafka clients reach it (`host:port`), if it listens for them.
    pub kafka: Option<String>,
    /// Where AMQP clients reach it.
    pub amqp: Option<String>,
    /// Where the HTTP API is.
    pub http: Option<String>,
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeImage {
    /// The process start it registered with last.
    pub incarnation: Uuid,
    /// Kafka endpoint, `host:port`.
    pub kafka: Option<String>,
    /// AMQP endpoint.
    pub amqp: Option<String>,
    /// HTTP endpoint.
    pub http: Option<String>,
    /// Missed its heartbeats: it leads nothing and clients are not sent to it.
    pub fenced: bool,
}

type Outcome = Result<(), MetadataError>;

/// Validation and application of the node commands, over the node map.
pub(crate) fn validate_register(
    nodes: &BTreeMap<u64, NodeImage>,
    node: &NodeRegistration,
) -> Outcome {
    if node.id > NODE_ID_MAX {
        return Err(MetadataError::InvalidName(format!(
            "node id {} is larger than {NODE_ID_MAX}",
            node.id
        )));
    }
    match nodes.get(&node.id) {
        Some(known) if known.incarnation == node.incarnation => Err(MetadataError::AlreadyExists(
            format!("node {} incarnation {}", node.id, node.incarnation),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn apply_register(nodes: &mut BTreeMap<u64, NodeImage>, node: &NodeRegistration) {
    nodes.insert(
        node.id,
        NodeImage {
            incarnation: node.incarnation,
            kafka: node.kafka.clone(),
            amqp: node.amqp.clone(),
            http: node.http.clone(),
            fenced: false,
        },
    );
}

/// A fence (`fence = true`) or unfence applies to the node's current
/// incarnation, and only when it changes something.
pub(crate) fn validate_fencing(
    nodes: &BTreeMap<u64, NodeImage>,
    id: u64,
    incarnation: Uuid,
    fence: bool,
) -> Outcome {
    let node = nodes
        .get(&id)
        .filter(|node| node.incarnation == incarnation)
        .ok_or_else(|| MetadataError::NotFound(format!("node {id} incarnation {incarnation}")))?;
    if node.fenced == fence {
        let state = if fence { "fenced" } else { "unfenced" };
        return Err(MetadataError::NotAllowed(format!(
            "node {id} is {state} already"
        )));
    }
    Ok(())
}

pub(crate) fn apply_fencing(nodes: &mut BTreeMap<u64, NodeImage>, id: u64, fence: bool) {
    if let Some(node) = nodes.get_mut(&id) {
        node.fenced = fence;
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use crate::metadata::{MetadataCommand, MetadataState, NodeRegistration};

    fn register(id: u64, incarnation: Uuid) -> MetadataCommand {
        MetadataCommand::RegisterNode {
            node: NodeRegistration {
                id,
                incarnation,
                kafka: Some("127.0.0.1:9092".into()),
                amqp: None,
                http: None,
            },
        }
    }

    #[test]
    fn fencing_follows_the_current_incarnation_only() {
        let mut state = MetadataState::new();
        let first = Uuid::from_u128(1);
        let second = Uuid::from_u128(2);
        state.apply(&register(1, first)).unwrap();
        assert!(
            state.apply(&register(1, first)).is_err(),
            "same incarnation twice"
        );
        let fence = |incarnation| MetadataCommand::FenceNode { id: 1, incarnation };
        let unfence = |incarnation| MetadataCommand::UnfenceNode { id: 1, incarnation };
        assert!(state.apply(&unfence(first)).is_err(), "not fenced");
        state.apply(&fence(first)).unwrap();
        assert!(state.nodes()[&1].fenced);
        assert!(state.apply(&fence(first)).is_err(), "fenced already");
        // The node restarts: registering unfences it, and a late fence of
        // the earlier process is refused.
        state.apply(&register(1, second)).unwrap();
        assert!(!state.nodes()[&1].fenced);
        assert!(state.apply(&fence(first)).is_err(), "stale incarnation");
        state.apply(&fence(second)).unwrap();
        state.apply(&unfence(second)).unwrap();
        assert!(!state.nodes()[&1].fenced);
        assert!(state.apply(&register(u64::from(u32::MAX), first)).is_err());
    }

    #[test]
    fn producer_id_blocks_are_taken_in_order_once() {
        let mut state = MetadataState::new();
        let take = |first, count| MetadataCommand::AllocateProducerIds {
            node: 1,
            first,
            count,
        };
        state.apply(&take(0, 1000)).unwrap();
        assert!(state.apply(&take(0, 1000)).is_err(), "the same block twice");
        assert!(state.apply(&take(1000, 0)).is_err(), "an empty block");
        assert!(state.apply(&take(1000, u64::MAX)).is_err(), "past i64::MAX");
        state.apply(&take(1000, 1000)).unwrap();
        assert_eq!(state.next_producer_id(), 2000);
    }

    #[test]
    fn single_node_state_serializes_without_cluster_fields() {
        let state = MetadataState::new();
        let text = serde_json::to_string(&state).unwrap();
        assert!(
            !text.contains("nodes") && !text.contains("cluster_id"),
            "{text}"
        );
        let mut named = MetadataState::new();
        named
            .apply(&MetadataCommand::InitializeCluster {
                id: Uuid::from_u128(7),
            })
            .unwrap();
        assert!(named
            .apply(&MetadataCommand::InitializeCluster {
                id: Uuid::from_u128(8)
            })
            .is_err());
        let back: MetadataState =
            serde_json::from_str(&serde_json::to_string(&named).unwrap()).unwrap();
        assert_eq!(back, named);
    }
}
