//! The group coordinator: membership and rebalances of consumer groups, as
//! Kafka's classic group protocol defines them.
//!
//! States: `Empty → PreparingRebalance → CompletingRebalance → Stable`, and
//! back to `PreparingRebalance` whenever a member joins, leaves, changes its
//! protocols or misses its session timeout. A rebalance completes when every
//! known member has rejoined or the longest rebalance timeout expires (the
//! members that did not rejoin are removed). The first rebalance out of
//! Empty instead waits `group.initial.rebalance.delay.ms` for more members,
//! as Kafka's InitialDelayedJoin does ([`InitialJoin`]), so that consumers
//! starting together form one generation rather than one each. The broker
//! picks the protocol (assignment strategy) every member supports, by the
//! members' votes, and relays the leader's assignment in SyncGroup:
//! assignment stays client-side.
//!
//! All state is in memory under one lock; waiting JoinGroup and SyncGroup
//! calls hold a oneshot sender in their member. [`GroupCoordinator::tick`]
//! drives the timeouts, and every deadline is read from the node's
//! [`Clock`], so unit tests drive time by hand. A group's membership is
//! persisted in the offsets log whenever a rebalance completes (and when
//! the group empties), and restored on start with every member's session
//! timer restarted, so a broker restart does not force consumers to
//! rebalance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::error::{CoreError, Result};
use crate::group::offsets::{OffsetStore, StoredGroup, StoredMember};
use crate::logging::Escaped;
use weir_log::Written;

/// Bounds and defaults of the group coordinator (Kafka's `group.*` configs).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_min: Duration,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_max: Duration,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of
    /// a group in Empty state waits for more members, extended while they
    /// keep joining, up to the rebalance timeout. Zero completes it at once.
    pub initial_rebalance_delay: Duration,
}

impl Default for GroupSettings {
    fn default() -> GroupSettings {
        GroupSettings {
            session_timeout_min: Duration::from_millis(6_000),
            session_timeout_max: Duration::from_millis(1_800_000),
            initial_rebalance_delay: Duration::from_millis(3_000),
        }
    }
}

/// A group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (there may be committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl GroupState {
    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup call.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The group.
    pub group_id: String,
    /// Empty on a first join.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// The client's id, a prefix of generated member ids.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Session timeout asked for.
    pub session_timeout_ms: i32,
    /// Rebalance timeout asked for.
    pub rebalance_timeout_ms: i32,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// Supported protocols with their metadata, preferred first.
    pub protocols: Vec<(String, Bytes)>,
    /// Whether a first join must first obtain a member id (JoinGroup v4+).
    pub require_known_member_id: bool,
    /// Whether the client understands `skip_assignment` (JoinGroup v9+, KIP-814).
    pub supports_skip_assignment: bool,
}

/// A member as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`, if static.
    pub group_instance_id: Option<String>,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// Every member, for the leader only.
    pub members: Vec<JoinedMember>,
    /// The leader must not compute an assignment (a static leader
    /// rejoining a stable group, KIP-814).
    pub skip_assignment: bool,
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone)]
pub struct Synced {
    /// The member's assignment.
    pub assignment: Bytes,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol_name: Option<String>,
}

/// When a group's committed offsets may expire (Kafka's KIP-211).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetExpiry {
    /// The group has members: never.
    Never,
    /// A consumer group without members: all together, counted from when
    /// it became empty.
    EmptySince(i64),
    /// Offsets committed without membership: each by its commit time.
    ByCommitTime,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`, if static.
    pub group_instance_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// The member's current assignment.
    pub assignment: Bytes,
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// The group.
    pub group_id: String,
    /// Its state.
    pub state: GroupState,
    /// Its protocol type ("" when it has no members).
    pub protocol_type: String,
    /// The chosen protocol ("" outside Stable/CompletingRebalance).
    pub protocol_name: String,
    /// Its members.
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    client_host: String,
    group_instance_id: Option<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<Result<Joined>>>,
    sync_waiter: Option<oneshot::Sender<Result<Synced>>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: HashSet<String>,
    /// `group.instance.id` → member id.
    static_members: HashMap<String, String>,
    deadline: Option<Instant>,
    /// Set while the first rebalance out of Empty waits for more members.
    initial_join: Option<InitialJoin>,
    /// When the group last became empty (ms since the epoch).
    emptied_at_ms: Option<i64>,
}

/// The join phase of a group that was Empty, as Kafka's InitialDelayedJoin:
/// it ends only when a window of `delay` passes without a new member (the
/// group's `deadline` is the window's end) or at `deadline_max`, never
/// because every member has joined, since more may be on their way.
#[derive(Debug, Clone, Copy)]
struct InitialJoin {
    /// Length of each window (`group.initial.rebalance.delay.ms`).
    delay: Duration,
    /// The phase ends by then at the latest: its start plus the rebalance
    /// timeout, or one window if that is longer.
    deadline_max: Instant,
    /// Whether a new member joined in the current window.
    member_added: bool,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashSet::new(),
            static_members: HashMap::new(),
            deadline: None,
            initial_join: None,
            emptied_at_ms: None,
        }
    }

    /// A group as it was persisted; its members' sessions restart now.
    fn restore(stored: StoredGroup, now: Instant) -> Group {
        let mut group = Group::new();
        group.generation = stored.generation;
        group.protocol_type = stored.protocol_type;
        group.protocol_name = stored.protocol_name;
        group.leader = stored.leader;
        group.emptied_at_ms = stored.emptied_at_ms;
        for member in stored.members {
            if let Some(instance) = &member.group_instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member.member_id.clone());
            }
            group.members.insert(
                member.member_id,
                Member {
                    client_id: member.client_id,
                    client_host: member.client_host,
                    group_instance_id: member.group_instance_id,
                    session_timeout: Duration::from_millis(member.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(member.rebalance_timeout_ms),
                    protocol_type: member.protocol_type,
                    protocols: member
                        .protocols
                        .into_iter()
                        .map(|(n, m)| (n, Bytes::from(m)))
                        .collect(),
                    assignment: Bytes::from(member.assignment),
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group
    }

    /// The group as it is persisted.
    fn stored(&self) -> StoredGroup {
        StoredGroup {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            emptied_at_ms: self.emptied_at_ms,
            members: self
                .members
                .iter()
                .map(|(id, m)| StoredMember {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocol_type: m.protocol_type.clone(),
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), b.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        }
    }

    /// Checks that `member_id` is a current member, and not one fenced by a
    /// newer member with the same instance id.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<()> {
        if let Some(instance) = instance_id {
            if let Some(current) = self.static_members.get(instance) {
                if current != member_id {
                    return Err(CoreError::FencedInstanceId);
                }
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(CoreError::UnknownMemberId)
        }
    }

    fn joined(&self, member_id: &str) -> Joined {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let chosen = self.protocol_name.as_deref().unwrap_or_default();
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .iter()
                    .map(|(id, member)| JoinedMember {
                        member_id: id.clone(),
                        group_instance_id: member.group_instance_id.clone(),
                        metadata: metadata_for(member, chosen),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    /// Starts a join phase; out of Empty, one that waits `initial_delay`
    /// for more members (none when it is zero).
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(Err(CoreError::RebalanceInProgress));
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.initial_join = None;
        self.deadline = Some(now + timeout);
        if self.state == GroupState::Empty && !initial_delay.is_zero() {
            self.initial_join = Some(InitialJoin {
                delay: initial_delay,
                deadline_max: now + timeout.max(initial_delay),
                member_added: false,
            });
            self.deadline = Some(now + initial_delay);
        }
        self.state = GroupState::PreparingRebalance;
    }

    /// Notes a member new to the group, for the initial join's windows.
    fn note_new_member(&mut self) {
        if let Some(initial) = self.initial_join.as_mut() {
            initial.member_added = true;
        }
    }

    /// Whether an initial join phase must go on waiting; when a window ends
    /// with new members in it, another one starts (up to `deadline_max`).
    fn initial_join_waits(&mut self, now: Instant) -> bool {
        let Some(initial) = self.initial_join.as_mut() else {
            return false;
        };
        if self.members.is_empty() {
            // Everyone left: nobody to wait for.
            return false;
        }
        if self.deadline.is_some_and(|deadline| now < deadline) {
            return true;
        }
        if initial.member_added && now < initial.deadline_max {
            initial.member_added = false;
            self.deadline = Some((now + initial.delay).min(initial.deadline_max));
            return true;
        }
        false
    }

    fn remove_member(&mut self, member_id: &str) {
        if let Some(member) = self.members.remove(member_id) {
            if let Some(instance) = &member.group_instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(instance);
                }
            }
            // Dropping the waiters answers UNKNOWN_MEMBER_ID to their calls.
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// Completes the join phase if every member rejoined or time is up
    /// (for an initial join: when its windows are over).
    fn maybe_complete_join(&mut self, now: Instant, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance || self.initial_join_waits(now) {
            return;
        }
        let initial = self.initial_join.take().is_some();
        let everyone_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let timed_out = self.deadline.is_some_and(|deadline| now >= deadline);
        if !initial && !everyone_joined && !timed_out {
            return;
        }
        let absent: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in absent {
            self.remove_member(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            // The protocol type stays: an emptied consumer group is still
            // a consumer group, not a "simple" one.
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            self.deadline = None;
            self.emptied_at_ms = Some(now_ms);
            return;
        }
        self.protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|leader| !self.members.contains_key(leader))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.deadline = Some(now + timeout);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let joined = self.joined(&id);
            if let Some(member) = self.members.get_mut(&id) {
                member.last_seen = now;
                if let Some(waiter) = member.join_waiter.take() {
                    let _ = waiter.send(Ok(joined));
                }
            }
        }
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect();
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|&name| (0, name)).collect();
        for member in self.members.values() {
            if let Some(preferred) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name.as_str()))
            {
                if let Some(vote) = votes.iter_mut().find(|(_, name)| *name == preferred.0) {
                    vote.0 += 1;
                }
            }
        }
        // Most votes wins; ties go to the earlier candidate.
        let best = votes.iter().map(|(count, _)| *count).max()?;
        votes
            .iter()
            .find(|(count, _)| *count == best)
            .map(|(_, name)| name.to_string())
    }

    /// Whether `protocol_type`/`protocols` can join this group.
    fn accepts(&self, member_id: &str, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != member_id)
            .map(|(_, m)| m)
            .collect();
        if others.is_empty() {
            return true;
        }
        others.iter().all(|m| m.protocol_type == protocol_type)
            && protocols.iter().any(|(name, _)| {
                others
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    fn describe(&self, group_id: &str) -> GroupDescription {
        let chosen = self.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            group_id: group_id.to_string(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: if matches!(
                self.state,
                GroupState::Stable | GroupState::CompletingRebalance
            ) {
                chosen.clone()
            } else {
                String::new()
            },
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: metadata_for(m, &chosen),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

fn metadata_for(member: &Member, protocol: &str) -> Bytes {
    member
        .protocols
        .iter()
        .find(|(name, _)| name == protocol)
        .map(|(_, metadata)| metadata.clone())
        .unwrap_or_default()
}

/// The topics of a consumer's subscription (Kafka's ConsumerProtocolSubscription:
/// a version, then the topic names; later versions only add fields).
fn subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]).clamp(0, 3);
    let _ = bytes::Buf::get_i16(&mut buf);
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

enum JoinStep {
    Done(Result<Joined>),
    Wait(oneshot::Receiver<Result<Joined>>),
}

/// Memberships of all groups.
#[derive(Debug)]
pub struct GroupCoordinator {
    settings: GroupSettings,
    clock: Clock,
    groups: Mutex<HashMap<String, Group>>,
    store: Arc<OffsetStore>,
}

impl GroupCoordinator {
    /// A coordinator with the memberships persisted in `store`, whose
    /// timeouts run by `clock`.
    pub fn new(settings: GroupSettings, clock: Clock, store: Arc<OffsetStore>) -> GroupCoordinator {
        let now = clock.now();
        let groups = store
            .memberships()
            .into_iter()
            .map(|(id, stored)| (id, Group::restore(stored, now)))
            .collect();
        GroupCoordinator {
            settings,
            clock,
            groups: Mutex::new(groups),
            store,
        }
    }

    /// The store of the groups' memberships and committed offsets.
    pub fn store(&self) -> &Arc<OffsetStore> {
        &self.store
    }

    /// Persists a group's membership without waiting; returns the write
    /// to wait for. A failure is logged: the group goes on in memory, and
    /// only a restart would lose its membership (the offsets log is then
    /// poisoned and commits fail loudly).
    fn persist(&self, group_id: &str, group: Option<&Group>) -> Option<Written> {
        match self
            .store
            .append_membership(group_id, group.map(Group::stored))
        {
            Ok(end) => Some(end),
            Err(error) => {
                tracing::error!(group = %Escaped(group_id), %error, "persisting group membership failed");
                None
            }
        }
    }

    /// Completes a pending rebalance if it can, persisting an emptied group.
    fn complete_join(&self, group_id: &str, group: &mut Group, now: Instant) {
        let before = group.state;
        group.maybe_complete_join(now, self.clock.now_ms());
        if group.state == GroupState::Empty && before != GroupState::Empty {
            self.persist(group_id, Some(group));
        }
    }

    /// JoinGroup: waits until the rebalance completes.
    ///
    /// # Errors
    ///
    /// The group errors of Kafka's JoinGroup ([`CoreError::MemberIdRequired`],
    /// [`CoreError::UnknownMemberId`], [`CoreError::FencedInstanceId`],
    /// [`CoreError::InconsistentGroupProtocol`], [`CoreError::InvalidSessionTimeout`]…).
    pub async fn join(&self, request: JoinRequest) -> Result<Joined> {
        match self.join_step(request) {
            JoinStep::Done(result) => result,
            JoinStep::Wait(receiver) => receiver.await.unwrap_or(Err(CoreError::UnknownMemberId)),
        }
    }

    fn join_step(&self, request: JoinRequest) -> JoinStep {
        if request.group_id.is_empty() {
            return JoinStep::Done(Err(CoreError::InvalidGroupId));
        }
        let session_timeout =
            Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0));
        if session_timeout < self.settings.session_timeout_min
            || session_timeout > self.settings.session_timeout_max
        {
            return JoinStep::Done(Err(CoreError::InvalidSessionTimeout(
                request.session_timeout_ms,
            )));
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return JoinStep::Done(Err(CoreError::InconsistentGroupProtocol));
        }
        let now = self.clock.now();
        let mut groups = self.groups.lock();
        let group = groups
            .entry(request.group_id.clone())
            .or_insert_with(Group::new);
        if !group.accepts(
            &request.member_id,
            &request.protocol_type,
            &request.protocols,
        ) {
            return JoinStep::Done(Err(CoreError::InconsistentGroupProtocol));
        }
        let previous_leader = group.leader.clone();
        let member_id = match identify(group, &request) {
            Ok(Identified::Member(id)) => id,
            Ok(Identified::StaticRejoin(id)) => {
                let Some(member) = group.members.get_mut(&id) else {
                    return JoinStep::Done(Err(CoreError::UnknownMemberId));
                };
                let unchanged = member.protocols == request.protocols;
                update_member(member, &request, session_timeout, now);
                if group.state == GroupState::Stable && unchanged {
                    // The member id changed without a rebalance: persist it.
                    self.persist(&request.group_id, Some(group));
                    // A returning leader must not compute an assignment a
                    // stable group would never hand out: from v9 it is told
                    // so (KIP-814); before, it gets the old leader id, as
                    // Kafka answers.
                    let mut joined = group.joined(&id);
                    if request.supports_skip_assignment
                        && group.leader.as_deref() == Some(id.as_str())
                    {
                        joined.skip_assignment = true;
                    } else {
                        joined.leader = previous_leader.unwrap_or_default();
                        joined.members.clear();
                    }
                    return JoinStep::Done(Ok(joined));
                }
                id
            }
            Err(error) => return JoinStep::Done(Err(error)),
        };
        if let Some(existing) = group.members.get_mut(&member_id) {
            let unchanged = existing.protocols == request.protocols;
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            if group.state == GroupState::Stable && unchanged && !is_leader {
                existing.last_seen = now;
                return JoinStep::Done(Ok(group.joined(&member_id)));
            }
        }
        if !group.members.contains_key(&member_id) {
            group.note_new_member();
        }
        let (sender, receiver) = oneshot::channel();
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                group_instance_id: None,
                session_timeout,
                rebalance_timeout: session_timeout,
                protocol_type: request.protocol_type.clone(),
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            });
        update_member(member, &request, session_timeout, now);
        member.join_waiter = Some(sender);
        if let Some(instance) = &request.group_instance_id {
            group.static_members.insert(instance.clone(), member_id);
        }
        if group.state != GroupState::PreparingRebalance {
            group.prepare_rebalance(now, self.settings.initial_rebalance_delay);
        }
        self.complete_join(&request.group_id, group, now);
        JoinStep::Wait(receiver)
    }

    /// SyncGroup: the leader hands out assignments; every member waits for its own.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownMemberId`], [`CoreError::FencedInstanceId`],
    /// [`CoreError::IllegalGeneration`], [`CoreError::RebalanceInProgress`],
    /// [`CoreError::InconsistentGroupProtocol`].
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Synced> {
        let (receiver, answers) = {
            let mut groups = self.groups.lock();
            let group = groups.get_mut(group_id).ok_or(CoreError::UnknownMemberId)?;
            group.check_member(member_id, instance_id)?;
            if generation != group.generation {
                return Err(CoreError::IllegalGeneration);
            }
            let (protocol_type, protocol_name) = protocol;
            if protocol_type.is_some_and(|t| Some(t) != group.protocol_type.as_deref())
                || protocol_name.is_some_and(|n| Some(n) != group.protocol_name.as_deref())
            {
                return Err(CoreError::InconsistentGroupProtocol);
            }
            let synced = |group: &Group, assignment: Bytes| Synced {
                assignment,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
            };
            match group.state {
                GroupState::Empty => return Err(CoreError::UnknownMemberId),
                GroupState::PreparingRebalance => return Err(CoreError::RebalanceInProgress),
                GroupState::Stable => {
                    let member = group
                        .members
                        .get_mut(member_id)
                        .ok_or(CoreError::UnknownMemberId)?;
                    member.last_seen = self.clock.now();
                    let assignment = member.assignment.clone();
                    return Ok(synced(group, assignment));
                }
                GroupState::CompletingRebalance => {}
            }
            let (sender, receiver) = oneshot::channel();
            let member = group
                .members
                .get_mut(member_id)
                .ok_or(CoreError::UnknownMemberId)?;
            member.last_seen = self.clock.now();
            member.sync_waiter = Some(sender);
            if group.leader.as_deref() != Some(member_id) {
                (receiver, None)
            } else {
                let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, member) in group.members.iter_mut() {
                    member.assignment = assignments.remove(id).unwrap_or_default();
                }
                group.state = GroupState::Stable;
                group.deadline = None;
                let durable_at = self.persist(group_id, Some(group));
                let waiting: Vec<(oneshot::Sender<Result<Synced>>, Bytes)> = group
                    .members
                    .values_mut()
                    .filter_map(|m| m.sync_waiter.take().map(|w| (w, m.assignment.clone())))
                    .collect();
                let answers: Vec<(oneshot::Sender<Result<Synced>>, Synced)> = waiting
                    .into_iter()
                    .map(|(waiter, assignment)| (waiter, synced(group, assignment)))
                    .collect();
                (receiver, Some((durable_at, answers)))
            }
        };
        if let Some((durable_at, answers)) = answers {
            // As Kafka: assignments are handed out once the membership is durable.
            if let Some(end) = durable_at {
                if let Err(error) = self.store.wait(end).await {
                    tracing::error!(group = %Escaped(group_id), %error, "group membership is not durable");
                }
            }
            for (waiter, synced) in answers {
                let _ = waiter.send(Ok(synced));
            }
        }
        receiver.await.unwrap_or(Err(CoreError::UnknownMemberId))
    }

    /// Heartbeat: keeps the member's session alive and tells it of rebalances.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownMemberId`], [`CoreError::FencedInstanceId`],
    /// [`CoreError::IllegalGeneration`], [`CoreError::RebalanceInProgress`].
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<()> {
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(CoreError::UnknownMemberId)?;
        group.check_member(member_id, instance_id)?;
        if generation != group.generation {
            return Err(CoreError::IllegalGeneration);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_seen = self.clock.now();
        }
        match group.state {
            GroupState::PreparingRebalance => Err(CoreError::RebalanceInProgress),
            GroupState::Empty => Err(CoreError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup for each `(member_id, instance_id)`; a static member may be
    /// named by its instance id alone. Each member gets its own result
    /// (UNKNOWN_MEMBER_ID for all of them in an unknown group, as Kafka).
    pub fn leave(&self, group_id: &str, members: &[(String, Option<String>)]) -> Vec<Result<()>> {
        let now = self.clock.now();
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return members
                .iter()
                .map(|_| Err(CoreError::UnknownMemberId))
                .collect();
        };
        let mut results = Vec::with_capacity(members.len());
        let mut left = false;
        for (member_id, instance_id) in members {
            let resolved = match (member_id.as_str(), instance_id) {
                ("", Some(instance)) => group
                    .static_members
                    .get(instance)
                    .cloned()
                    .ok_or(CoreError::UnknownMemberId),
                (id, instance) => group
                    .check_member(id, instance.as_deref())
                    .map(|()| id.to_string()),
            };
            results.push(resolved.map(|id| {
                group.remove_member(&id);
                left = true;
            }));
        }
        if left {
            if group.state != GroupState::PreparingRebalance {
                group.prepare_rebalance(now, Duration::ZERO);
            }
            self.complete_join(group_id, group, now);
        }
        results
    }

    /// Checks that a member may commit offsets for `generation`; a
    /// generation of -1 with no member id is a standalone commit, allowed
    /// while the group has no members.
    ///
    /// # Errors
    ///
    /// [`CoreError::UnknownMemberId`], [`CoreError::FencedInstanceId`],
    /// [`CoreError::IllegalGeneration`], [`CoreError::RebalanceInProgress`].
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<()> {
        if group_id.is_empty() {
            return Err(CoreError::InvalidGroupId);
        }
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(CoreError::IllegalGeneration)
            };
        };
        if generation < 0 && member_id.is_empty() && group.members.is_empty() {
            return Ok(());
        }
        group.check_member(member_id, instance_id)?;
        if generation != group.generation {
            return Err(CoreError::IllegalGeneration);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(CoreError::RebalanceInProgress);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_seen = self.clock.now();
        }
        Ok(())
    }

    /// The group's membership, if it has any state here.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        self.groups
            .lock()
            .get(group_id)
            .map(|group| group.describe(group_id))
    }

    /// Every group with membership state.
    pub fn list(&self) -> Vec<GroupDescription> {
        self.groups
            .lock()
            .iter()
            .map(|(id, group)| group.describe(id))
            .collect()
    }

    /// Topics the group's members subscribe to, read from their consumer
    /// protocol metadata; `None` when that cannot be read (treat as "all").
    pub fn subscribed_topics(&self, group_id: &str) -> Option<HashSet<String>> {
        let groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            return Some(HashSet::new());
        };
        let chosen = group.protocol_name.clone().unwrap_or_default();
        let mut topics = HashSet::new();
        for member in group.members.values() {
            topics.extend(subscription_topics(&metadata_for(member, &chosen))?);
        }
        Some(topics)
    }

    /// How the offsets of each group with membership state expire.
    pub fn offset_expiry(&self) -> HashMap<String, OffsetExpiry> {
        self.groups
            .lock()
            .iter()
            .map(|(id, group)| {
                let expiry = match group.emptied_at_ms {
                    _ if !group.members.is_empty() => OffsetExpiry::Never,
                    Some(since) => OffsetExpiry::EmptySince(since),
                    None => OffsetExpiry::ByCommitTime,
                };
                (id.clone(), expiry)
            })
            .collect()
    }

    /// Whether the group has members.
    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups
            .lock()
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// Forgets an empty group's membership state.
    ///
    /// # Errors
    ///
    /// [`CoreError::NonEmptyGroup`] while it has members.
    pub fn remove_if_empty(&self, group_id: &str) -> Result<()> {
        let mut groups = self.groups.lock();
        match groups.get(group_id) {
            Some(group) if !group.members.is_empty() => Err(CoreError::NonEmptyGroup),
            Some(_) => {
                groups.remove(group_id);
                self.persist(group_id, None);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Expires members that missed their session timeout and completes
    /// rebalances whose time is up. Call it every ~100 ms.
    pub fn tick(&self) {
        let now = self.clock.now();
        let mut groups = self.groups.lock();
        for (group_id, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    // As Kafka: a member parked in JoinGroup or SyncGroup
                    // is alive; the rebalance's own deadline bounds it.
                    m.join_waiter.is_none()
                        && m.sync_waiter.is_none()
                        && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %Escaped(group_id), member = %Escaped(id), "member missed its session timeout; removing it");
                group.remove_member(id);
            }
            let sync_timed_out = group.state == GroupState::CompletingRebalance
                && group.deadline.is_some_and(|deadline| now >= deadline);
            if sync_timed_out {
                let silent: Vec<String> = group
                    .members
                    .iter()
                    .filter(|(_, m)| m.sync_waiter.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &silent {
                    group.remove_member(id);
                }
            }
            if (!expired.is_empty() || sync_timed_out)
                && group.state != GroupState::PreparingRebalance
            {
                group.prepare_rebalance(now, Duration::ZERO);
            }
            self.complete_join(group_id, group, now);
        }
    }
}

enum Identified {
    Member(String),
    StaticRejoin(String),
}

/// Works out the member id of a join: a new id, a pending one, a known one,
/// or a static member's new id replacing its old one.
fn identify(group: &mut Group, request: &JoinRequest) -> Result<Identified> {
    if !request.member_id.is_empty() {
        if let Some(instance) = &request.group_instance_id {
            if group
                .static_members
                .get(instance)
                .is_some_and(|current| current != &request.member_id)
            {
                return Err(CoreError::FencedInstanceId);
            }
        }
        if !group.members.contains_key(&request.member_id)
            && !group.pending.remove(&request.member_id)
        {
            return Err(CoreError::UnknownMemberId);
        }
        return Ok(Identified::Member(request.member_id.clone()));
    }
    let member_id = new_member_id(&request.client_id);
    if let Some(instance) = &request.group_instance_id {
        if let Some(old_id) = group.static_members.get(instance).cloned() {
            // The same instance restarted: it takes over the old member and
            // its assignment; the old id is fenced from now on.
            if let Some(mut member) = group.members.remove(&old_id) {
                member.join_waiter = None;
                member.sync_waiter = None;
                group.members.insert(member_id.clone(), member);
            }
            if group.leader.as_deref() == Some(old_id.as_str()) {
                group.leader = Some(member_id.clone());
            }
            group
                .static_members
                .insert(instance.clone(), member_id.clone());
            if group.members.contains_key(&member_id) {
                return Ok(Identified::StaticRejoin(member_id));
            }
        }
        return Ok(Identified::Member(member_id));
    }
    if request.require_known_member_id {
        group.pending.insert(member_id.clone());
        return Err(CoreError::MemberIdRequired(member_id));
    }
    Ok(Identified::Member(member_id))
}

fn update_member(
    member: &mut Member,
    request: &JoinRequest,
    session_timeout: Duration,
    now: Instant,
) {
    member.client_id = request.client_id.clone();
    member.client_host = request.client_host.clone();
    member.group_instance_id = request.group_instance_id.clone();
    member.session_timeout = session_timeout;
    // JoinGroup v0 has no rebalance timeout: the session timeout serves.
    member.rebalance_timeout = match u64::try_from(request.rebalance_timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => session_timeout,
    };
    member.protocol_type = request.protocol_type.clone();
    member.protocols = request.protocols.clone();
    member.last_seen = now;
}

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod tests;
