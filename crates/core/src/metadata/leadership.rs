//! Who leads each replicated partition, in which leader epoch, with which
//! in-sync replicas — and the elections that change it.
//!
//! A partition's [`Leadership`] changes only through a
//! [`MetadataCommand::ChangeLeadership`] that names the version it was
//! computed from, so two changes computed from the same state cannot both
//! apply (Kafka's partition epoch in AlterPartition). The leader epoch
//! moves whenever the leader changes, or its node restarts: followers
//! truncate against it (KIP-101) and clients are fenced by it (KIP-320).
//!
//! The controller leader computes elections with [`MetadataState::elections`],
//! a pure function of the state: a partition whose leader is fenced gets
//! the first live in-sync replica (never one outside the in-sync set), a
//! fenced follower leaves the in-sync set (unless it is the last member,
//! whose data no one else has), and leadership goes back to the preferred
//! replica (the first) when it is live and in sync.
//!
//! A partition moves to other replicas (`weir topic reassign`) in two
//! commands, as in Kafka's KIP-455: [`MetadataCommand::ReassignPartition`]
//! makes the replicas the targets followed by those that leave, so the
//! targets copy the log as followers and join the in-sync set like any
//! follower; once every target is in sync the elections propose
//! [`MetadataCommand::CompleteReassignment`], which drops the others.
//! Data is never moved by the controller, and the in-sync set never holds
//! fewer replicas than before the move while it runs.

use serde::{Deserialize, Serialize};

use crate::metadata::command::MetadataCommand;
use crate::metadata::error::MetadataError;
use crate::metadata::state::{MetadataState, TopicImage};

/// One replicated partition's leader, leader epoch and in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// The leader; `None` while no in-sync replica is live.
    pub leader: Option<u64>,
    /// Moves with every change of leader (and restart of the leader's node).
    pub epoch: i32,
    /// The in-sync replicas, the leader among them.
    pub isr: Vec<u64>,
    /// Moves with every change; a change names the version it replaces.
    pub version: u32,
}

impl TopicImage {
    /// Partition `partition`'s leadership: `None` on a single node (no
    /// replicas) or past the partition count. A partition never changed
    /// since it was created is led by its first replica, all in sync.
    pub fn leadership(&self, partition: u32) -> Option<Leadership> {
        let index = partition as usize;
        if let Some(leadership) = self.leadership.get(index) {
            return Some(leadership.clone());
        }
        let replicas = self.replicas.get(index)?;
        Some(Leadership {
            leader: replicas.first().copied(),
            epoch: 0,
            isr: replicas.clone(),
            version: 0,
        })
    }

    /// Sets partition `partition`'s leadership, materializing the implicit
    /// ones before it.
    pub(crate) fn set_leadership(&mut self, partition: u32, leadership: Leadership) {
        while self.leadership.len() <= partition as usize {
            let next = self.leadership.len() as u32;
            let implicit = self.leadership(next).expect("a partition with replicas");
            self.leadership.push(implicit);
        }
        self.leadership[partition as usize] = leadership;
    }
}

impl MetadataState {
    pub(crate) fn validate_change_leadership(
        &self,
        topic: &str,
        partition: u32,
        version: u32,
        leader: Option<u64>,
        isr: &[u64],
    ) -> Result<(), MetadataError> {
        let image = self
            .topic(topic)
            .ok_or_else(|| MetadataError::UnknownTopic(topic.to_owned()))?;
        let current = image.leadership(partition).ok_or_else(|| {
            MetadataError::InvalidPartitions(format!(
                "topic {topic} has no replicated partition {partition}"
            ))
        })?;
        if current.version != version {
            return Err(MetadataError::NotAllowed(format!(
                "{topic}-{partition} is at version {}, not {version}",
                current.version
            )));
        }
        let replicas = &image.replicas[partition as usize];
        let mut seen = std::collections::BTreeSet::new();
        if isr.is_empty()
            || !isr
                .iter()
                .all(|node| replicas.contains(node) && seen.insert(*node))
        {
            return Err(MetadataError::InvalidPartitions(format!(
                "{topic}-{partition}: in-sync replicas {isr:?} must be distinct replicas of {replicas:?}"
            )));
        }
        if leader.is_some_and(|leader| !isr.contains(&leader)) {
            return Err(MetadataError::InvalidPartitions(format!(
                "{topic}-{partition}: leader {leader:?} is not in sync"
            )));
        }
        Ok(())
    }

    pub(crate) fn apply_change_leadership(
        &mut self,
        topic: &str,
        partition: u32,
        leader: Option<u64>,
        isr: &[u64],
    ) {
        let image = self.topic_mut(topic);
        let current = image.leadership(partition).expect("validated");
        let epoch = if current.leader == leader {
            current.epoch
        } else {
            current.epoch + 1
        };
        image.set_leadership(
            partition,
            Leadership {
                leader,
                epoch,
                isr: isr.to_vec(),
                version: current.version + 1,
            },
        );
    }

    pub(crate) fn validate_reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        target: &[u64],
    ) -> Result<(), MetadataError> {
        let image = self
            .topic(topic)
            .ok_or_else(|| MetadataError::UnknownTopic(topic.to_owned()))?;
        if image.replicas.get(partition as usize).is_none() {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic {topic} has no replicated partition {partition}"
            )));
        }
        if image.reassigning.contains_key(&partition) {
            return Err(MetadataError::NotAllowed(format!(
                "{topic}-{partition} is being moved already; wait until that move completes"
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        if target.is_empty() || !target.iter().all(|node| seen.insert(*node)) {
            return Err(MetadataError::InvalidPartitions(format!(
                "{topic}-{partition}: target replicas {target:?} are empty or repeat a node"
            )));
        }
        if let Some(unknown) = target.iter().find(|node| !self.nodes().contains_key(node)) {
            return Err(MetadataError::InvalidPartitions(format!(
                "{topic}-{partition}: node {unknown} has never joined the cluster"
            )));
        }
        Ok(())
    }

    pub(crate) fn apply_reassign_partition(&mut self, topic: &str, partition: u32, target: &[u64]) {
        let image = self.topic_mut(topic);
        let index = partition as usize;
        let mut replicas = target.to_vec();
        replicas.extend(
            image.replicas[index]
                .iter()
                .filter(|node| !target.contains(node)),
        );
        let mut leadership = image.leadership(partition).expect("validated");
        leadership.version += 1;
        image.set_leadership(partition, leadership);
        image.replicas[index] = replicas;
        image.reassigning.insert(partition, target.to_vec());
    }

    pub(crate) fn validate_complete_reassignment(
        &self,
        topic: &str,
        partition: u32,
        version: u32,
        leader: u64,
    ) -> Result<(), MetadataError> {
        let image = self
            .topic(topic)
            .ok_or_else(|| MetadataError::UnknownTopic(topic.to_owned()))?;
        let target = image.reassigning.get(&partition).ok_or_else(|| {
            MetadataError::NotAllowed(format!("{topic}-{partition} is not being moved"))
        })?;
        let current = image
            .leadership(partition)
            .expect("a moving partition is replicated");
        if current.version != version {
            return Err(MetadataError::NotAllowed(format!(
                "{topic}-{partition} is at version {}, not {version}",
                current.version
            )));
        }
        if !target.iter().all(|node| current.isr.contains(node)) {
            return Err(MetadataError::NotAllowed(format!(
                "{topic}-{partition}: not every target of {target:?} is in sync ({:?})",
                current.isr
            )));
        }
        if !target.contains(&leader) {
            return Err(MetadataError::InvalidPartitions(format!(
                "{topic}-{partition}: leader {leader} is not among the targets {target:?}"
            )));
        }
        Ok(())
    }

    pub(crate) fn apply_complete_reassignment(&mut self, topic: &str, partition: u32, leader: u64) {
        let image = self.topic_mut(topic);
        let target = image.reassigning.remove(&partition).expect("validated");
        let current = image.leadership(partition).expect("validated");
        let epoch = if current.leader == Some(leader) {
            current.epoch
        } else {
            current.epoch + 1
        };
        let isr = current
            .isr
            .iter()
            .copied()
            .filter(|node| target.contains(node))
            .collect();
        image.set_leadership(
            partition,
            Leadership {
                leader: Some(leader),
                epoch,
                isr,
                version: current.version + 1,
            },
        );
        image.replicas[partition as usize] = target;
    }

    /// A node restarted (registered with a new incarnation): every
    /// partition it leads gets a new leader epoch, so followers that
    /// fetched what its crash lost truncate it (the old epoch ends where
    /// the restarted log ends).
    pub(crate) fn restart_leaderships(&mut self, node: u64) {
        let names: Vec<String> = self.topics().keys().cloned().collect();
        for name in names {
            let image = self.topic_mut(&name);
            for partition in 0..image.replicas.len() as u32 {
                let Some(mut leadership) = image.leadership(partition) else {
                    continue;
                };
                if leadership.leader == Some(node) {
                    leadership.epoch += 1;
                    leadership.version += 1;
                    image.set_leadership(partition, leadership);
                }
            }
        }
    }

    /// The leadership changes the controller should propose now (see the
    /// module docs), each computed from the current version.
    pub fn elections(&self) -> Vec<MetadataCommand> {
        let live = |node: &u64| self.nodes().get(node).is_some_and(|image| !image.fenced);
        let mut changes = Vec::new();
        for (name, image) in self.topics() {
            for partition in 0..image.replicas.len() as u32 {
                let current = image.leadership(partition).expect("a replicated partition");
                if let Some(target) = image.reassigning.get(&partition) {
                    if let Some(leader) = completed_move_leader(target, &current, live) {
                        changes.push(MetadataCommand::CompleteReassignment {
                            topic: name.clone(),
                            partition,
                            version: current.version,
                            leader,
                        });
                        continue;
                    }
                }
                let replicas = &image.replicas[partition as usize];
                let mut isr: Vec<u64> = current.isr.iter().copied().filter(live).collect();
                if isr.is_empty() {
                    // No live replica is in sync: keep the last members,
                    // whose data nobody else has, and wait for one.
                    isr = current.isr.clone();
                }
                let preferred = replicas
                    .iter()
                    .copied()
                    .find(|node| live(node) && isr.contains(node));
                let leader = match current.leader {
                    Some(leader) if live(&leader) && Some(leader) != preferred => {
                        // Back to the preferred replica once it is in sync.
                        if replicas.first() == preferred.as_ref() {
                            preferred
                        } else {
                            Some(leader)
                        }
                    }
                    Some(leader) if live(&leader) => Some(leader),
                    _ => preferred,
                };
                if let Some(leader) = leader {
                    if !isr.contains(&leader) {
                        isr.push(leader);
                    }
                }
                if leader != current.leader || isr != current.isr {
                    changes.push(MetadataCommand::ChangeLeadership {
                        topic: name.clone(),
                        partition,
                        version: current.version,
                        leader,
                        isr,
                    });
                }
            }
        }
        changes
    }
}

/// The leader a partition moving to `target` has once the move completes,
/// when it can complete: every target in sync, and a live one to lead (the
/// current leader if it is a target, so that leadership moves only when
/// it must).
fn completed_move_leader(
    target: &[u64],
    current: &Leadership,
    live: impl Fn(&u64) -> bool,
) -> Option<u64> {
    if !target.iter().all(|node| current.isr.contains(node)) {
        return None;
    }
    match current.leader {
        Some(leader) if live(&leader) && target.contains(&leader) => Some(leader),
        _ => target.iter().copied().find(|node| live(node)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::metadata::NodeRegistration;

    fn cluster(nodes: u64, replicas: Vec<Vec<u64>>) -> MetadataState {
        let mut state = MetadataState::new();
        for id in 1..=nodes {
            state
                .apply(&MetadataCommand::RegisterNode {
                    node: NodeRegistration {
                        id,
                        incarnation: Uuid::from_u128(u128::from(id)),
                        kafka: None,
                        amqp: None,
                        http: None,
                    },
                })
                .unwrap();
        }
        state
            .apply(&MetadataCommand::CreateTopic {
                name: "t".into(),
                id: Uuid::from_u128(99),
                partitions: replicas.len() as u32,
                configs: BTreeMap::new(),
                replicas,
            })
            .unwrap();
        state
    }

    fn fence(state: &mut MetadataState, id: u64) {
        state
            .apply(&MetadataCommand::FenceNode {
                id,
                incarnation: Uuid::from_u128(u128::from(id)),
            })
            .unwrap();
    }

    fn unfence(state: &mut MetadataState, id: u64) {
        state
            .apply(&MetadataCommand::UnfenceNode {
                id,
                incarnation: Uuid::from_u128(u128::from(id)),
            })
            .unwrap();
    }

    fn elect(state: &mut MetadataState) {
        for change in state.elections() {
            state.apply(&change).unwrap();
        }
    }

    fn leadership(state: &MetadataState) -> Leadership {
        state.topic("t").unwrap().leadership(0).unwrap()
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_isr_and_comes_back_preferred() {
        let mut state = cluster(3, vec![vec![1, 2, 3]]);
        assert!(state.elections().is_empty(), "nothing to change");
        fence(&mut state, 1);
        elect(&mut state);
        let after = leadership(&state);
        assert_eq!(
            (after.leader, after.epoch, after.isr.clone()),
            (Some(2), 1, vec![2, 3])
        );
        // Back, but not in sync yet: it stays a follower.
        unfence(&mut state, 1);
        assert!(state.elections().is_empty());
        // The leader added it to the ISR: leadership returns to it.
        state
            .apply(&MetadataCommand::ChangeLeadership {
                topic: "t".into(),
                partition: 0,
                version: after.version,
                leader: Some(2),
                isr: vec![2, 3, 1],
            })
            .unwrap();
        elect(&mut state);
        assert_eq!(leadership(&state).leader, Some(1));
        assert_eq!(leadership(&state).epoch, 2);
    }

    #[test]
    fn the_last_in_sync_replica_is_waited_for_never_replaced_uncleanly() {
        let mut state = cluster(3, vec![vec![1, 2, 3]]);
        let start = leadership(&state);
        state
            .apply(&MetadataCommand::ChangeLeadership {
                topic: "t".into(),
                partition: 0,
                version: start.version,
                leader: Some(1),
                isr: vec![1],
            })
            .unwrap();
        fence(&mut state, 1);
        elect(&mut state);
        let offline = leadership(&state);
        assert_eq!((offline.leader, offline.isr.clone()), (None, vec![1]));
        unfence(&mut state, 1);
        elect(&mut state);
        assert_eq!(leadership(&state).leader, Some(1));
    }

    #[test]
    fn stale_changes_are_refused() {
        let mut state = cluster(3, vec![vec![1, 2, 3]]);
        let change = |isr: Vec<u64>| MetadataCommand::ChangeLeadership {
            topic: "t".into(),
            partition: 0,
            version: 0,
            leader: Some(1),
            isr,
        };
        state.apply(&change(vec![1, 2])).unwrap();
        assert!(
            state.apply(&change(vec![1, 3])).is_err(),
            "version 0 is gone"
        );
        let bad = |leader, isr| MetadataCommand::ChangeLeadership {
            topic: "t".into(),
            partition: 0,
            version: 1,
            leader,
            isr,
        };
        assert!(
            state.apply(&bad(Some(3), vec![1, 2])).is_err(),
            "leader out of sync"
        );
        assert!(
            state.apply(&bad(Some(1), vec![1, 4])).is_err(),
            "not a replica"
        );
        assert!(state.apply(&bad(Some(1), vec![1, 1])).is_err(), "repeated");
        assert!(state.apply(&bad(None, vec![])).is_err(), "empty");
    }

    #[test]
    fn a_restarted_leader_gets_a_new_epoch() {
        let mut state = cluster(3, vec![vec![1, 2, 3], vec![2, 3, 1]]);
        state
            .apply(&MetadataCommand::RegisterNode {
                node: NodeRegistration {
                    id: 1,
                    incarnation: Uuid::from_u128(100),
                    kafka: None,
                    amqp: None,
                    http: None,
                },
            })
            .unwrap();
        let topic = state.topic("t").unwrap();
        assert_eq!(topic.leadership(0).unwrap().epoch, 1);
        assert_eq!(topic.leadership(1).unwrap().epoch, 0);
    }

    fn change_isr(state: &mut MetadataState, leader: u64, isr: Vec<u64>) {
        let version = leadership(state).version;
        state
            .apply(&MetadataCommand::ChangeLeadership {
                topic: "t".into(),
                partition: 0,
                version,
                leader: Some(leader),
                isr,
            })
            .unwrap();
    }

    fn reassign(target: Vec<u64>) -> MetadataCommand {
        MetadataCommand::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            target,
        }
    }

    #[test]
    fn a_moved_partition_keeps_its_replicas_until_every_target_is_in_sync() {
        let mut state = cluster(4, vec![vec![1, 2, 3]]);
        let before = leadership(&state);
        state.apply(&reassign(vec![4, 2, 3])).unwrap();
        let topic = state.topic("t").unwrap();
        assert_eq!(
            topic.replicas[0],
            vec![4, 2, 3, 1],
            "targets first, then who leaves"
        );
        let moving = leadership(&state);
        assert_eq!(
            (moving.leader, moving.epoch, moving.version),
            (Some(1), before.epoch, before.version + 1),
            "the version moves so the leader counts node 4; the epoch does not"
        );
        assert!(
            state.apply(&reassign(vec![2, 3])).is_err(),
            "one move at a time"
        );
        assert!(state.elections().is_empty(), "node 4 is not in sync yet");

        change_isr(&mut state, 1, vec![1, 2, 3, 4]);
        // Node 4 is preferred and in sync: the completion makes it leader.
        let elections = state.elections();
        assert!(
            matches!(
                elections.as_slice(),
                [MetadataCommand::CompleteReassignment { leader: 4, .. }]
            ),
            "{elections:?}"
        );
        elect(&mut state);
        let after = leadership(&state);
        let topic = state.topic("t").unwrap();
        assert_eq!(topic.replicas[0], vec![4, 2, 3]);
        assert!(topic.reassigning.is_empty());
        assert_eq!(
            (after.leader, after.epoch, after.isr),
            (Some(4), before.epoch + 1, vec![2, 3, 4])
        );
        assert!(state.elections().is_empty(), "settled");
    }

    #[test]
    fn a_move_that_keeps_the_leader_keeps_its_epoch_and_skips_dead_targets_as_leader() {
        let mut state = cluster(4, vec![vec![1, 2, 3]]);
        state.apply(&reassign(vec![2, 1, 4])).unwrap();
        change_isr(&mut state, 1, vec![1, 2, 3, 4]);
        // Node 2 is preferred, but the move completes first, keeping node 1.
        elect(&mut state);
        let topic = state.topic("t").unwrap();
        assert_eq!(topic.replicas[0], vec![2, 1, 4]);
        assert_eq!(leadership(&state).isr, vec![1, 2, 4]);
        // Then the preferred replica takes over, as after any election.
        elect(&mut state);
        assert_eq!(leadership(&state).leader, Some(2));

        let mut state = cluster(4, vec![vec![1, 2, 3]]);
        state.apply(&reassign(vec![4, 3])).unwrap();
        change_isr(&mut state, 1, vec![1, 2, 3, 4]);
        fence(&mut state, 4);
        let epoch = leadership(&state).epoch;
        elect(&mut state);
        let after = leadership(&state);
        assert_eq!(
            (after.leader, after.epoch),
            (Some(3), epoch + 1),
            "node 4 is fenced"
        );
        assert!(
            state
                .apply(&MetadataCommand::ReassignPartition {
                    topic: "t".into(),
                    partition: 0,
                    target: vec![5],
                })
                .is_err(),
            "node 5 never joined"
        );
    }

    proptest! {
        /// Whatever nodes fail and return, in any order: a leader is always
        /// live and in sync, the in-sync set only ever loses members by
        /// election (never gains one), and epochs never go back.
        #[test]
        fn elections_keep_leaders_in_sync(events in proptest::collection::vec((1u64..=3, any::<bool>()), 0..40)) {
            let mut state = cluster(3, vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
            for (node, up) in events {
                let fenced = state.nodes()[&node].fenced;
                match (up, fenced) {
                    (false, false) => fence(&mut state, node),
                    (true, true) => unfence(&mut state, node),
                    _ => {}
                }
                let before: Vec<Leadership> = (0..3).map(|p| state.topic("t").unwrap().leadership(p).unwrap()).collect();
                elect(&mut state);
                for (p, old) in before.iter().enumerate() {
                    let new = state.topic("t").unwrap().leadership(p as u32).unwrap();
                    prop_assert!(new.epoch >= old.epoch);
                    prop_assert!(new.isr.iter().all(|n| old.isr.contains(n)), "{old:?} -> {new:?}");
                    prop_assert!(!new.isr.is_empty());
                    if let Some(leader) = new.leader {
                        prop_assert!(new.isr.contains(&leader));
                        prop_assert!(!state.nodes()[&leader].fenced);
                    } else {
                        prop_assert!(new.isr.iter().all(|n| state.nodes()[n].fenced));
                    }
                }
                prop_assert!(state.elections().is_empty(), "elections settle in one round");
            }
        }
    }
}
