//! Resetting a consumer group's committed offsets, as Kafka's
//! `kafka-consumer-groups.sh --reset-offsets`: plan (a dry run) or execute,
//! and only while the group has no members.

use std::collections::BTreeSet;

use crate::broker::{Broker, Isolation, OffsetSpec};
use crate::consumer_groups::OffsetCommit;
use crate::error::{CoreError, Result};
use crate::group::TopicPartition;
use crate::logging::Escaped;
use crate::principal::Principal;

/// Where the offsets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// The log start of each partition.
    Earliest,
    /// The high watermark of each partition.
    Latest,
    /// The first record at or after this time (ms since the epoch); the
    /// high watermark when there is none.
    Timestamp(i64),
    /// This offset, clamped to what the partition holds.
    Offset(i64),
    /// The committed offset (the log start without one) moved by this
    /// much, clamped to what the partition holds.
    ShiftBy(i64),
}

/// One partition's reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReset {
    /// Topic and partition.
    pub partition: TopicPartition,
    /// The committed offset now, if any.
    pub current: Option<i64>,
    /// The offset it is (or would be) reset to.
    pub target: i64,
}

impl Broker {
    /// Plans a reset of `group`'s offsets of `topics` (every partition of
    /// each), or of every topic it has committed offsets for; with
    /// `execute`, commits the plan.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownTopicOrPartition`] for an unknown topic;
    /// [`CoreError::GroupIdNotFound`] without `topics` for a group with no
    /// offsets; [`CoreError::NonEmptyGroup`] when executing while the group
    /// has members; storage errors.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topics: Option<&[String]>,
        target: ResetTarget,
        execute: bool,
    ) -> Result<Vec<PlannedReset>> {
        let plan = self.plan_offset_reset(group, topics, target)?;
        if !execute {
            return Ok(plan);
        }
        if self.coordinating(group)?.has_members(group) {
            return Err(CoreError::NonEmptyGroup);
        }
        let commits = plan
            .iter()
            .map(|reset| OffsetCommit {
                partition: reset.partition.clone(),
                offset: reset.target,
                leader_epoch: -1,
                metadata: None,
            })
            .collect();
        for (partition, outcome) in self.commit_offsets(group, -1, "", None, commits).await? {
            outcome.inspect_err(|error| {
                tracing::warn!(group = %Escaped(group), topic = %Escaped(&partition.0), partition = partition.1, error = %Escaped(error), "offset reset failed");
            })?;
        }
        tracing::info!(group = %Escaped(group), partitions = plan.len(), "reset committed offsets");
        Ok(plan)
    }

    fn plan_offset_reset(
        &self,
        group: &str,
        topics: Option<&[String]>,
        target: ResetTarget,
    ) -> Result<Vec<PlannedReset>> {
        let committed = self.fetch_offsets(group, None);
        let names: BTreeSet<String> = match topics {
            Some(topics) => topics.iter().cloned().collect(),
            None if committed.is_empty() => return Err(CoreError::GroupIdNotFound),
            None => committed
                .iter()
                .map(|((topic, _), _)| topic.clone())
                .collect(),
        };
        let mut plan = Vec::new();
        for name in names {
            let topic = self.topic(&name)?;
            for partition in topic.partitions() {
                let key = (name.clone(), partition.index() as i32);
                let current = committed
                    .iter()
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, value)| value.as_ref().map(|v| v.offset));
                let target = self.reset_target(&partition, current, target)?;
                plan.push(PlannedReset {
                    partition: key,
                    current,
                    target,
                });
            }
        }
        Ok(plan)
    }

    fn reset_target(
        &self,
        partition: &crate::Partition,
        current: Option<i64>,
        target: ResetTarget,
    ) -> Result<i64> {
        let offsets = partition.offsets();
        let start = offsets.log_start_offset as i64;
        let end = offsets.high_watermark as i64;
        Ok(match target {
            ResetTarget::Earliest => start,
            ResetTarget::Latest => end,
            ResetTarget::Timestamp(ms) => self
                .list_offset(
                    partition,
                    OffsetSpec::Timestamp(ms),
                    Isolation::ReadUncommitted,
                    &Principal::internal(),
                )?
                .map_or(end, |(offset, _)| offset as i64),
            ResetTarget::Offset(offset) => offset.clamp(start, end),
            ResetTarget::ShiftBy(delta) => current
                .unwrap_or(start)
                .saturating_add(delta)
                .clamp(start, end),
        })
    }
}
