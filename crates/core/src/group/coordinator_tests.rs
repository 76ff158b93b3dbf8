//! The coordinator's state machine under a manual clock: joins, syncs,
//! heartbeats, session and rebalance timeouts, the initial rebalance delay
//! and static membership. Time moves only when a test advances it, and
//! JoinGroup/SyncGroup calls are polled by hand, so every check sees
//! exactly when the coordinator answers, in milliseconds of real time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::*;

const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
const GROUP: &str = "g";

struct Fixture {
    clock: Clock,
    coordinator: GroupCoordinator,
    _dir: tempfile::TempDir,
}

fn fixture(initial_delay_ms: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(OffsetStore::open(dir.path(), false, &Arc::default()).expect("offsets store"));
    let clock = Clock::manual();
    let settings = GroupSettings {
        initial_rebalance_delay: Duration::from_millis(initial_delay_ms),
        ..GroupSettings::default()
    };
    Fixture {
        coordinator: GroupCoordinator::new(settings, clock.clone(), store),
        clock,
        _dir: dir,
    }
}

impl Fixture {
    /// Moves time on and lets the coordinator act on it, as the server's
    /// tick does.
    fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        self.coordinator.tick();
    }

    fn state(&self) -> GroupState {
        self.coordinator.describe(GROUP).expect("group").state
    }

    fn heartbeat(&self, generation: i32, member_id: &str) -> Result<()> {
        self.coordinator
            .heartbeat(GROUP, generation, member_id, None)
    }

    /// Starts a JoinGroup; the coordinator acts on it at once.
    fn join(&self, request: JoinRequest) -> Call<'_, Joined> {
        Call::new(Box::pin(self.coordinator.join(request)))
    }

    /// Starts a SyncGroup of a dynamic member.
    fn sync<'a>(
        &'a self,
        generation: i32,
        member_id: &'a str,
        assignments: Vec<(String, Bytes)>,
    ) -> Call<'a, Synced> {
        Call::new(Box::pin(self.coordinator.sync(
            GROUP,
            generation,
            member_id,
            None,
            (None, None),
            assignments,
        )))
    }
}

/// A JoinGroup of a dynamic member (`member_id` empty on a first join).
fn request(member_id: &str, client_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: GROUP.to_string(),
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: client_id.to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), Bytes::from_static(b"meta"))],
        require_known_member_id: false,
        supports_skip_assignment: true,
    }
}

/// A JoinGroup or SyncGroup call, polled by hand (with a waker that does
/// nothing) so that a test sees whether it has been answered yet without
/// depending on a runtime's scheduling.
struct Call<'a, T> {
    future: Option<Pin<Box<dyn Future<Output = Result<T>> + 'a>>>,
    answer: Option<Result<T>>,
}

impl<'a, T> Call<'a, T> {
    /// Polls the call once, so the coordinator acts on it at once.
    fn new(future: Pin<Box<dyn Future<Output = Result<T>> + 'a>>) -> Call<'a, T> {
        let mut call = Call {
            future: Some(future),
            answer: None,
        };
        call.poll();
        call
    }

    fn poll(&mut self) {
        let Some(future) = self.future.as_mut() else {
            return;
        };
        if let Poll::Ready(answer) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            self.answer = Some(answer);
            self.future = None;
        }
    }

    /// Whether the call is still waiting for its answer.
    fn waiting(&mut self) -> bool {
        self.poll();
        self.answer.is_none()
    }

    /// The answer, which must have come by now.
    fn answer(mut self) -> Result<T> {
        self.poll();
        self.answer.expect("the call is still waiting")
    }

    /// The answer, which must have come by now and be a success.
    fn ok(self) -> T {
        self.answer().expect("the call failed")
    }

    /// Waits for the answer on the runtime (for waits on the disk).
    async fn wait(mut self) -> Result<T> {
        match (self.answer.take(), self.future.take()) {
            (Some(answer), _) => answer,
            (None, Some(future)) => future.await,
            (None, None) => unreachable!("a call has a future or an answer"),
        }
    }
}

/// One member alone in a Stable group at generation 1: its member id.
async fn lone_stable_member(fixture: &Fixture) -> String {
    let joined = fixture.join(request("", "one")).ok();
    let id = joined.member_id.clone();
    assert_eq!(
        (joined.generation, joined.leader.as_str()),
        (1, id.as_str())
    );
    let assignment = vec![(id.clone(), Bytes::from_static(b"all"))];
    fixture.sync(1, &id, assignment).wait().await.expect("sync");
    id
}

#[tokio::test]
async fn two_members_join_sync_and_heartbeat() {
    let fixture = fixture(0);
    let first = lone_stable_member(&fixture).await;
    assert_eq!(fixture.state(), GroupState::Stable);
    fixture.heartbeat(1, &first).expect("heartbeat");
    assert!(matches!(
        fixture.heartbeat(2, &first),
        Err(CoreError::IllegalGeneration)
    ));
    assert!(matches!(
        fixture.heartbeat(1, "nobody"),
        Err(CoreError::UnknownMemberId)
    ));

    // A second member: its join waits until the first rejoins, which
    // learns of the rebalance from its heartbeat.
    let mut second_join = fixture.join(request("", "two"));
    assert!(second_join.waiting());
    assert_eq!(fixture.state(), GroupState::PreparingRebalance);
    assert!(matches!(
        fixture.heartbeat(1, &first),
        Err(CoreError::RebalanceInProgress)
    ));
    let leader = fixture.join(request(&first, "one")).ok();
    let follower = second_join.ok();
    let second = follower.member_id.clone();
    assert_eq!((leader.generation, follower.generation), (2, 2));
    assert_eq!((&leader.leader, &follower.leader), (&first, &first));
    let mut seen: Vec<&str> = leader
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    seen.sort_unstable();
    let mut expected = vec![first.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(seen, expected);
    assert!(
        follower.members.is_empty(),
        "only the leader gets the members"
    );
    assert_eq!(fixture.state(), GroupState::CompletingRebalance);

    // The follower's SyncGroup waits for the leader's assignment.
    let mut follower_sync = fixture.sync(2, &second, Vec::new());
    assert!(follower_sync.waiting());
    let assignments = vec![
        (first.clone(), Bytes::from_static(b"for-one")),
        (second.clone(), Bytes::from_static(b"for-two")),
    ];
    let mine = fixture
        .sync(2, &first, assignments)
        .wait()
        .await
        .expect("sync");
    assert_eq!(mine.assignment, Bytes::from_static(b"for-one"));
    assert_eq!(
        follower_sync.ok().assignment,
        Bytes::from_static(b"for-two")
    );
    assert_eq!(fixture.state(), GroupState::Stable);
    fixture.heartbeat(2, &first).expect("heartbeat");
    fixture.heartbeat(2, &second).expect("heartbeat");
    fixture
        .coordinator
        .check_commit(GROUP, 2, &second, None)
        .expect("a member commits in its generation");
    assert!(matches!(
        fixture.coordinator.check_commit(GROUP, 1, &second, None),
        Err(CoreError::IllegalGeneration)
    ));
}

/// Two members in generation 2 after the second joined: their ids.
/// Neither has synced.
fn two_members(fixture: &Fixture, first: &str) -> String {
    let second_join = fixture.join(request("", "two"));
    let leader = fixture.join(request(first, "one")).ok();
    assert_eq!(leader.generation, 2);
    second_join.ok().member_id
}

#[tokio::test]
async fn a_member_silent_past_its_session_timeout_is_removed() {
    let fixture = fixture(0);
    let first = lone_stable_member(&fixture).await;
    let second = two_members(&fixture, &first);
    fixture
        .sync(2, &first, Vec::new())
        .wait()
        .await
        .expect("sync");

    // The first member heartbeats, the second falls silent.
    for _ in 0..4 {
        fixture.advance_ms(2_500);
        fixture.heartbeat(2, &first).expect("heartbeat");
    }
    assert_eq!(
        fixture.state(),
        GroupState::Stable,
        "exactly the session timeout is not past it"
    );
    fixture.advance_ms(1);
    assert_eq!(fixture.state(), GroupState::PreparingRebalance);
    assert!(matches!(
        fixture.heartbeat(2, &second),
        Err(CoreError::UnknownMemberId)
    ));
    assert!(matches!(
        fixture.heartbeat(2, &first),
        Err(CoreError::RebalanceInProgress)
    ));
    let alone = fixture.join(request(&first, "one")).ok();
    assert_eq!((alone.generation, alone.members.len()), (3, 1));
}

#[tokio::test]
async fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed() {
    let fixture = fixture(0);
    let first = lone_stable_member(&fixture).await;
    let second = two_members(&fixture, &first);
    fixture
        .sync(2, &first, Vec::new())
        .wait()
        .await
        .expect("sync");

    // A third member starts a rebalance; the first rejoins, the second
    // keeps heartbeating (so its session lives) but never rejoins.
    let mut third_join = fixture.join(request("", "three"));
    let mut first_join = fixture.join(request(&first, "one"));
    for _ in 0..5 {
        fixture.advance_ms(5_000);
        assert!(matches!(
            fixture.heartbeat(2, &second),
            Err(CoreError::RebalanceInProgress)
        ));
    }
    fixture.advance_ms(4_999);
    assert!(
        third_join.waiting(),
        "answered before the rebalance timeout"
    );
    assert!(first_join.waiting());
    fixture.advance_ms(1);
    let leader = first_join.ok();
    assert_eq!(third_join.ok().generation, 3);
    assert_eq!(leader.generation, 3);
    let members: Vec<&str> = leader
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(!members.contains(&second.as_str()), "{members:?}");
    assert!(matches!(
        fixture.heartbeat(3, &second),
        Err(CoreError::UnknownMemberId)
    ));
}

#[tokio::test]
async fn a_leader_that_does_not_sync_within_the_rebalance_timeout_is_removed() {
    let fixture = fixture(0);
    let first = lone_stable_member(&fixture).await;
    let second = two_members(&fixture, &first);
    // The follower syncs and waits longer than its session timeout, which
    // does not expire it (Kafka keeps members awaiting sync alive); the
    // leader heartbeats but never syncs.
    let mut second_sync = fixture.sync(2, &second, Vec::new());
    assert!(second_sync.waiting());
    for _ in 0..5 {
        fixture.advance_ms(5_000);
        fixture.heartbeat(2, &first).expect("heartbeat");
    }
    fixture.advance_ms(4_999);
    assert_eq!(fixture.state(), GroupState::CompletingRebalance);
    assert!(second_sync.waiting());
    fixture.advance_ms(1);
    assert!(matches!(
        second_sync.answer(),
        Err(CoreError::RebalanceInProgress)
    ));
    assert!(matches!(
        fixture.heartbeat(2, &first),
        Err(CoreError::UnknownMemberId)
    ));
    let alone = fixture.join(request(&second, "two")).ok();
    assert_eq!((alone.generation, alone.leader), (3, second));
}

#[test]
fn a_lone_first_member_waits_exactly_the_initial_delay() {
    let fixture = fixture(3_000);
    let mut first = fixture.join(request("", "one"));
    assert!(first.waiting());
    assert_eq!(fixture.state(), GroupState::PreparingRebalance);
    fixture.advance_ms(2_999);
    assert!(first.waiting());
    fixture.advance_ms(1);
    let joined = first.ok();
    assert_eq!((joined.generation, joined.members.len()), (1, 1));
}

#[test]
fn three_members_joining_within_the_initial_delay_form_one_generation() {
    let fixture = fixture(3_000);
    let mut calls = vec![fixture.join(request("", "one"))];
    fixture.advance_ms(1_000);
    calls.push(fixture.join(request("", "two")));
    fixture.advance_ms(1_000);
    calls.push(fixture.join(request("", "three")));
    // Every member has joined, yet more may come: the delay runs on. Its
    // window ends at 3 s with new members in it, so one more starts.
    fixture.advance_ms(1_000);
    assert!(calls.iter_mut().all(Call::waiting));
    fixture.advance_ms(2_999);
    assert!(calls.iter_mut().all(Call::waiting));
    fixture.advance_ms(1);
    let answers: Vec<Joined> = calls.into_iter().map(Call::ok).collect();
    assert!(answers.iter().all(|joined| joined.generation == 1));
    let leader = answers
        .iter()
        .find(|joined| joined.leader == joined.member_id)
        .expect("a leader");
    assert_eq!(leader.members.len(), 3);
}

#[tokio::test]
async fn a_join_late_in_the_initial_delay_extends_it_and_later_rebalances_do_not_wait() {
    let fixture = fixture(3_000);
    let mut first = fixture.join(request("", "one"));
    fixture.advance_ms(2_500);
    let mut second = fixture.join(request("", "two"));
    fixture.advance_ms(500);
    assert!(second.waiting(), "the delay was not extended");
    fixture.advance_ms(2_999);
    assert!(first.waiting());
    fixture.advance_ms(1);
    let leader = first.ok();
    let follower = second.ok();
    assert_eq!((leader.generation, follower.generation), (1, 1));
    assert_eq!(leader.members.len(), 2);
    let leader_id = leader.member_id;
    let follower_id = follower.member_id;
    fixture
        .sync(1, &leader_id, Vec::new())
        .wait()
        .await
        .expect("sync");
    fixture.sync(1, &follower_id, Vec::new()).ok();

    // The group is not new any more: a third member's rebalance completes
    // as soon as everyone has rejoined.
    let third = fixture.join(request("", "three"));
    let leader_rejoin = fixture.join(request(&leader_id, "one"));
    let follower_rejoin = fixture.join(request(&follower_id, "two"));
    assert_eq!(third.ok().generation, 2);
    assert_eq!(leader_rejoin.ok().generation, 2);
    assert_eq!(follower_rejoin.ok().generation, 2);
}

#[test]
fn the_initial_delay_is_capped_by_the_rebalance_timeout() {
    let fixture = fixture(3_000);
    let short = |client: &str| JoinRequest {
        rebalance_timeout_ms: 5_000,
        ..request("", client)
    };
    // A member joins every second, so every window has a new member.
    let mut calls = vec![fixture.join(short("m0"))];
    for i in 1..5 {
        fixture.advance_ms(1_000);
        calls.push(fixture.join(short(&format!("m{i}"))));
        assert!(calls[0].waiting());
    }
    fixture.advance_ms(999);
    assert!(calls[0].waiting());
    fixture.advance_ms(1);
    let answers: Vec<Joined> = calls.into_iter().map(Call::ok).collect();
    assert!(answers.iter().all(|joined| joined.generation == 1));
}

#[test]
fn a_new_group_whose_only_member_leaves_during_the_delay_is_empty_again() {
    let fixture = fixture(3_000);
    let first = fixture.join(request("", "one"));
    let id = fixture.coordinator.describe(GROUP).expect("group").members[0]
        .member_id
        .clone();
    let left = fixture.coordinator.leave(GROUP, &[(id, None)]);
    assert!(left.iter().all(Result::is_ok));
    assert!(matches!(first.answer(), Err(CoreError::UnknownMemberId)));
    assert_eq!(fixture.state(), GroupState::Empty);
    assert_eq!(
        fixture.coordinator.offset_expiry().get(GROUP),
        Some(&OffsetExpiry::EmptySince(fixture.clock.now_ms()))
    );
}

#[tokio::test]
async fn a_restarted_static_member_takes_over_and_fences_its_old_id() {
    let fixture = fixture(0);
    let static_request = |member_id: &str| JoinRequest {
        group_instance_id: Some("instance".to_string()),
        ..request(member_id, "static")
    };
    let old_id = fixture.join(static_request("")).ok().member_id;
    let assignment = vec![(old_id.clone(), Bytes::from_static(b"kept"))];
    fixture
        .sync(1, &old_id, assignment)
        .wait()
        .await
        .expect("sync");

    // The same instance comes back with a new member id: no rebalance.
    let rejoined = fixture.join(static_request("")).ok();
    let new_id = rejoined.member_id.clone();
    assert_ne!(new_id, old_id);
    assert_eq!(rejoined.generation, 1);
    assert!(
        rejoined.skip_assignment,
        "the returning leader must not assign again"
    );
    assert_eq!(fixture.state(), GroupState::Stable);
    let synced = fixture
        .coordinator
        .sync(
            GROUP,
            1,
            &new_id,
            Some("instance"),
            (None, None),
            Vec::new(),
        )
        .await
        .expect("sync");
    assert_eq!(synced.assignment, Bytes::from_static(b"kept"));
    let coordinator = &fixture.coordinator;
    coordinator
        .heartbeat(GROUP, 1, &new_id, Some("instance"))
        .expect("heartbeat");
    assert!(matches!(
        coordinator.heartbeat(GROUP, 1, &old_id, Some("instance")),
        Err(CoreError::FencedInstanceId)
    ));
    assert!(matches!(
        coordinator.check_commit(GROUP, 1, &old_id, Some("instance")),
        Err(CoreError::FencedInstanceId)
    ));
    assert!(matches!(
        fixture.join(static_request(&old_id)).answer(),
        Err(CoreError::FencedInstanceId)
    ));
}
