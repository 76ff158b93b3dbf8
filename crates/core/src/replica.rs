//! One replicated partition's replication state on this node: its
//! leadership as the cluster's metadata last said, and — while this node
//! leads it — how far each follower has durably copied the log.
//!
//! The leader moves the high watermark to the least durable end among the
//! in-sync replicas ([`ReplicaState::floor`]) and wants a follower out of
//! the in-sync set once it has not caught up for `replica.lag.time.max.ms`,
//! back in once it holds everything below the high watermark
//! ([`ReplicaState::wanted_isr`]) and everything below where its own epoch
//! began: a new leader's high watermark may lag what the previous one
//! committed, and a replica that joined below that would be electable
//! without it (Kafka's `leaderEpochStartOffset` rule). It only *proposes*
//! such changes: the in-sync set changes when the controller commits them,
//! so a leader cut off from the controller can never shrink it to
//! acknowledge alone.
//!
//! A change it proposed and has not seen the outcome of may already be
//! committed — and one of the replicas it adds already elected leader, at
//! the preferred replica's return — so until a newer leadership arrives
//! the high watermark waits for the proposed replicas too (Kafka's
//! "maximal ISR", KIP-497): no write is acknowledged that a replica the
//! controller may name leader lacks.
//!
//! Caught up is Kafka's rule (`Replica.updateFetchState`): a follower is
//! caught up at a fetch that reaches the leader's log end, or at its
//! previous fetch if this one reaches the log end that fetch saw.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::metadata::Leadership;

/// What a leader knows of one follower.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Every offset below is durable on the follower.
    durable_end: u64,
    last_fetch: Instant,
    last_caught_up: Instant,
    /// The leader's log end when the follower last fetched.
    log_end_at_last_fetch: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct ReplicaState {
    replicas: Vec<u64>,
    leadership: Option<Leadership>,
    /// While this node leads: since when, and the followers heard from.
    leading_since: Option<Instant>,
    /// While this node leads: its log end when its epoch began.
    epoch_start: u64,
    followers: BTreeMap<u64, Progress>,
    /// The in-sync set this leader proposed last, with the version it
    /// replaces, until a newer leadership is applied (see the module docs).
    proposed: Option<(u32, Vec<u64>)>,
}

impl ReplicaState {
    /// The leadership as applied here.
    pub(crate) fn leadership(&self) -> Option<&Leadership> {
        self.leadership.as_ref()
    }

    /// Fewer replicas in sync than assigned.
    pub(crate) fn is_under_replicated(&self) -> bool {
        self.leadership
            .as_ref()
            .is_some_and(|leadership| leadership.isr.len() < self.replicas.len())
    }

    /// Applies the metadata's view; forgets followers' progress when this
    /// node starts leading (a new epoch: they fetch again). `log_end` is
    /// this node's log end now.
    pub(crate) fn set(
        &mut self,
        me: u64,
        replicas: &[u64],
        leadership: Leadership,
        now: Instant,
        log_end: u64,
    ) {
        let leads = leadership.leader == Some(me);
        let epoch_changed = self
            .leadership
            .as_ref()
            .is_none_or(|old| old.epoch != leadership.epoch || old.leader != leadership.leader);
        if !leads {
            self.leading_since = None;
            self.followers.clear();
        } else if epoch_changed {
            self.leading_since = Some(now);
            self.epoch_start = log_end;
            self.followers.clear();
        }
        // Any change applied is a newer version: the proposal, if any, is
        // decided (committed, or refused for good).
        self.proposed = None;
        self.replicas = replicas.to_vec();
        self.leadership = Some(leadership);
    }

    /// Records a follower's fetch: everything below `durable_end` is
    /// durable there; `log_end` is the leader's log end now.
    pub(crate) fn fetched(&mut self, replica: u64, durable_end: u64, log_end: u64, now: Instant) {
        let since = self.leading_since.unwrap_or(now);
        let progress = self.followers.entry(replica).or_insert(Progress {
            durable_end,
            last_fetch: since,
            last_caught_up: since,
            log_end_at_last_fetch: 0,
        });
        if durable_end >= log_end {
            progress.last_caught_up = now;
        } else if durable_end >= progress.log_end_at_last_fetch {
            progress.last_caught_up = progress.last_caught_up.max(progress.last_fetch);
        }
        progress.durable_end = durable_end;
        progress.last_fetch = now;
        progress.log_end_at_last_fetch = log_end;
    }

    /// The bound replication puts on the high watermark while this node
    /// leads: the least durable end among the other in-sync replicas and
    /// the replicas a pending proposal adds (`u64::MAX` when it is the
    /// only one). Not leading: `None`.
    pub(crate) fn floor(&self, me: u64) -> Option<u64> {
        let leadership = self.leadership.as_ref()?;
        if leadership.leader != Some(me) {
            return None;
        }
        let proposed = self.proposed.iter().flat_map(|(_, isr)| isr);
        Some(
            leadership
                .isr
                .iter()
                .chain(proposed)
                .filter(|node| **node != me)
                .map(|node| self.followers.get(node).map_or(0, |p| p.durable_end))
                .min()
                .unwrap_or(u64::MAX),
        )
    }

    /// Forgets the proposal from `version`: the controller refused it for
    /// good (another change came first), so it can no longer commit.
    pub(crate) fn forget_proposal(&mut self, version: u32) {
        if self
            .proposed
            .as_ref()
            .is_some_and(|(proposed, _)| *proposed == version)
        {
            self.proposed = None;
        }
    }

    /// The in-sync set this leader should propose, when it differs from the
    /// current one: without followers that have not caught up within
    /// `lag_max`, with replicas that fetched recently and hold everything
    /// below `high_watermark` and below where this leader's epoch began. A
    /// proposal not yet answered is proposed again as it was (its outcome
    /// may be unknown: the controller was unreachable), so that it is
    /// decided rather than left pending. The caller proposes what this
    /// returns: it counts as pending from now.
    pub(crate) fn wanted_isr(
        &mut self,
        me: u64,
        high_watermark: u64,
        now: Instant,
        lag_max: Duration,
    ) -> Option<(u32, Vec<u64>)> {
        let leadership = self.leadership.as_ref()?;
        let since = self.leading_since?;
        if leadership.leader != Some(me) {
            return None;
        }
        if let Some(proposed) = &self.proposed {
            return Some(proposed.clone());
        }
        let recent = |at: Instant| now.saturating_duration_since(at) <= lag_max;
        let mut isr: Vec<u64> = leadership
            .isr
            .iter()
            .copied()
            .filter(|node| {
                *node == me || recent(self.followers.get(node).map_or(since, |p| p.last_caught_up))
            })
            .collect();
        for replica in &self.replicas {
            if isr.contains(replica) {
                continue;
            }
            if let Some(progress) = self.followers.get(replica) {
                let holds = high_watermark.max(self.epoch_start);
                if progress.durable_end >= holds && recent(progress.last_fetch) {
                    isr.push(*replica);
                }
            }
        }
        if isr == leadership.isr {
            return None;
        }
        self.proposed = Some((leadership.version, isr.clone()));
        Some((leadership.version, isr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leadership(leader: u64, isr: Vec<u64>) -> Leadership {
        Leadership {
            leader: Some(leader),
            epoch: 1,
            isr,
            version: 3,
        }
    }

    #[test]
    fn the_floor_is_the_least_durable_in_sync_follower() {
        let now = Instant::now();
        let mut state = ReplicaState::default();
        state.set(1, &[1, 2, 3], leadership(1, vec![1, 2, 3]), now, 0);
        assert_eq!(state.floor(1), Some(0), "nobody fetched yet");
        state.fetched(2, 10, 12, now);
        state.fetched(3, 7, 12, now);
        assert_eq!(state.floor(1), Some(7));
        assert_eq!(state.floor(2), None, "only a leader has a floor");
        state.set(1, &[1, 2, 3], leadership(1, vec![1, 2]), now, 0);
        assert_eq!(state.floor(1), Some(10), "3 left the in-sync set");
        state.set(1, &[1, 2, 3], leadership(1, vec![1]), now, 0);
        assert_eq!(state.floor(1), Some(u64::MAX));
    }

    #[test]
    fn a_lagging_follower_is_dropped_and_a_caught_up_one_returns() {
        let start = Instant::now();
        let lag = Duration::from_secs(10);
        let mut state = ReplicaState::default();
        state.set(1, &[1, 2, 3], leadership(1, vec![1, 2, 3]), start, 0);
        assert_eq!(state.wanted_isr(1, 0, start, lag), None);
        // 2 keeps up; 3 never fetches.
        let later = start + Duration::from_secs(11);
        state.fetched(2, 50, 50, later);
        assert_eq!(state.wanted_isr(1, 50, later, lag), Some((3, vec![1, 2])));
        state.set(1, &[1, 2, 3], leadership(1, vec![1, 2]), later, 0);
        // 3 fetches but is behind the high watermark: not yet.
        state.fetched(3, 20, 50, later);
        assert_eq!(state.wanted_isr(1, 50, later, lag), None);
        state.fetched(3, 50, 50, later);
        assert_eq!(
            state.wanted_isr(1, 50, later, lag),
            Some((3, vec![1, 2, 3]))
        );
    }

    #[test]
    fn a_proposed_replica_holds_the_high_watermark_until_the_answer() {
        let now = Instant::now();
        let lag = Duration::from_secs(10);
        let mut state = ReplicaState::default();
        state.set(1, &[1, 2, 3], leadership(1, vec![1, 2]), now, 0);
        state.fetched(2, 40, 40, now);
        state.fetched(3, 30, 30, now);
        assert_eq!(state.floor(1), Some(40));
        // 3 caught up with the high watermark: proposed back in.
        assert_eq!(state.wanted_isr(1, 30, now, lag), Some((3, vec![1, 2, 3])));
        // The controller may have committed it and made 3 leader already:
        // nothing 3 lacks is acknowledged.
        assert_eq!(state.floor(1), Some(30));
        assert_eq!(
            state.wanted_isr(1, 30, now, lag),
            Some((3, vec![1, 2, 3])),
            "unanswered: proposed again as it was"
        );
        state.forget_proposal(2);
        assert_eq!(state.floor(1), Some(30), "not that proposal");
        // Refused for good: 3 can no longer be elected through it.
        state.forget_proposal(3);
        assert_eq!(state.floor(1), Some(40));
        assert_eq!(state.wanted_isr(1, 30, now, lag), Some((3, vec![1, 2, 3])));
        // Refused (another change came first): the leadership applied
        // decides alone again.
        let newer = Leadership {
            version: 4,
            ..leadership(1, vec![1, 2])
        };
        state.set(1, &[1, 2, 3], newer, now, 0);
        state.fetched(2, 40, 40, now);
        assert_eq!(state.floor(1), Some(40));
    }

    #[test]
    fn a_replica_joins_only_with_everything_before_the_leaders_epoch() {
        let now = Instant::now();
        let lag = Duration::from_secs(10);
        let mut state = ReplicaState::default();
        // Leading from offset 70 on, with a high watermark still at 20 (it
        // lags what the previous leader committed).
        state.set(1, &[1, 2, 3], leadership(1, vec![1, 2]), now, 70);
        state.fetched(2, 70, 70, now);
        state.fetched(3, 20, 70, now);
        assert_eq!(state.wanted_isr(1, 20, now, lag), None, "3 lacks 20..70");
        state.fetched(3, 70, 70, now);
        assert_eq!(state.wanted_isr(1, 20, now, lag), Some((3, vec![1, 2, 3])));
    }

    #[test]
    fn a_follower_fetching_behind_but_keeping_pace_stays_caught_up() {
        let start = Instant::now();
        let mut state = ReplicaState::default();
        state.set(1, &[1, 2], leadership(1, vec![1, 2]), start, 0);
        let step = Duration::from_secs(4);
        // Each fetch reaches the log end the previous fetch saw, never the current one.
        state.fetched(2, 0, 10, start);
        state.fetched(2, 10, 20, start + step);
        state.fetched(2, 20, 30, start + step * 2);
        state.fetched(2, 30, 40, start + step * 3);
        assert_eq!(
            state.wanted_isr(1, 30, start + step * 3, Duration::from_secs(10)),
            None
        );
    }
}
