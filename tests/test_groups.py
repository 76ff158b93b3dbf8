"""Consumer groups and committed offsets, as Kafka clients see them.

subscribe() with one and with several members (range, roundrobin,
cooperative-sticky), take-over when a member leaves or dies, committed
offsets across broker restarts and kill -9, static membership and fencing,
kafka-python's and librdkafka's group admin calls, kcat's balanced consumer,
and offsets of deleted topics. Every check is on what the client got:
which partitions, which (partition, offset, value) records, how many times.
At the end, hand-built requests check the error codes that clients retry
silently, and the offsets log is crashed, torn and compacted. Last, three
consumers starting together form one generation thanks to the initial
rebalance delay.

A member only sees a rebalance while it is polled, so the tests "pump" all
live members of a group in turn. Groups use a 6 s session timeout (Kafka's
group.min.session.timeout.ms) and 500 ms heartbeats so that rebalances and
expiries take seconds; the broker's group.initial.rebalance.delay.ms is 0
(conftest.py) except where a test sets it.
"""

from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import ConfigResource, NewPartitions, ResourceType
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaPythonTopicPartition
from kafka import errors as kafka_python_errors
from kafka.admin import MemberToRemove
from kafka.structs import OffsetAndMetadata

import kafka_wire as wire
from helpers import (
    assert_delivered,
    call_within,
    committed_partitions,
    client_config,
    create_topic,
    kafka_error_code,
    make_admin,
    make_consumer,
    make_producer,
    produce_all,
    unique,
    wait_until,
)

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500

# Settings of every subscribe()d librdkafka consumer here. Commits are the
# test's own (after processing); a group without a committed offset starts
# at the beginning, so a lost commit shows up as a re-delivery.
GROUP_CONSUMER_CONFIG = {
    "session.timeout.ms": SESSION_TIMEOUT_MS,
    "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
}

COMMIT_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 15.0


# --- a group member ------------------------------------------------------------

class Member:
    """One subscribe()d confluent-kafka consumer and everything it received.

    `records` holds (partition, offset, value) in delivery order;
    `rebalances` holds ("assign" | "revoke" | "lost", partitions) as the
    rebalance callbacks saw them; `client_errors` what error_cb got, and
    `consume_errors` the error events consume() returned. A strict member
    fails the test on the first error event.
    """

    def __init__(self, broker, group: str, topics, strict: bool = True, **overrides):
        self.group = group
        self.strict = strict
        self.records: list[tuple[int, int, bytes]] = []
        self.rebalances: list[tuple[str, frozenset]] = []
        self.client_errors: list[KafkaError] = []
        self.consume_errors: list[KafkaError] = []
        self.closed = False
        config = {"group.id": group, **GROUP_CONSUMER_CONFIG, "error_cb": self.client_errors.append}
        config.update(overrides)
        self.consumer = Consumer(client_config(broker, **config))
        self.consumer.subscribe(
            list(topics),
            on_assign=self._recorder("assign"),
            on_revoke=self._recorder("revoke"),
            on_lost=self._recorder("lost"),
        )

    def _recorder(self, kind: str):
        def callback(_consumer, partitions):
            self.rebalances.append((kind, frozenset(p.partition for p in partitions)))

        return callback

    def partitions(self) -> frozenset:
        """The partition numbers of the current assignment."""
        return frozenset(tp.partition for tp in self.consumer.assignment())

    def pump(self, timeout: float = 0.05, commit: bool = True) -> list:
        """One consume() call (which also serves rebalances); with `commit`,
        a synchronous commit of what it returned, after "processing" it."""
        batch = []
        for message in self.consumer.consume(1000, timeout):
            error = message.error()
            if error is None:
                batch.append(message)
            else:
                self.consume_errors.append(error)
                if self.strict:
                    raise AssertionError(f"consumer error in group {self.group}: {error!r}")
        self.records.extend((m.partition(), m.offset(), m.value()) for m in batch)
        if batch and commit:
            self.commit()
        return batch

    def commit(self) -> list:
        """consumer.commit(asynchronous=False) of the consumed positions;
        fails on any partition error. Returns what commit() returned."""
        committed = call_within(lambda: self.consumer.commit(asynchronous=False), COMMIT_TIMEOUT_S, "commit")
        failed = [(tp.topic, tp.partition, tp.error) for tp in committed if tp.error is not None]
        assert not failed, f"commit failed for {failed}"
        return committed

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        if not self.closed:
            self.closed = True
            call_within(self.consumer.close, timeout, "consumer close")


@pytest.fixture
def members():
    """Factory: `members(broker, group, topics, strict=True, **config) -> Member`.

    Members the test did not close are closed at teardown (before the
    broker fixture kills the broker, as it was requested first).
    """
    made: list[Member] = []

    def make(broker, group, topics, strict=True, **overrides) -> Member:
        member = Member(broker, group, topics, strict=strict, **overrides)
        made.append(member)
        return member

    yield make
    for member in made:
        try:
            member.close(timeout=15)
        except (AssertionError, KafkaException, RuntimeError):
            pass  # the test's own result says what went wrong


def pump_until(group_members, check, timeout: float, what: str, commit: bool = True):
    """Pump every member in turn until `check()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        for member in group_members:
            member.pump(commit=commit)
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            state = [(member.group, sorted(member.partitions()), len(member.records)) for member in group_members]
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; (group, assignment, records) per member: {state}"
            )


def pump_for(group_members, seconds: float, commit: bool = True) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for member in group_members:
            member.pump(commit=commit)


def balanced(group_members, partitions: int, per_member: int) -> bool:
    """Each member holds `per_member` partitions; together all, none twice."""
    sets = [member.partitions() for member in group_members]
    return (
        all(len(s) == per_member for s in sets)
        and sum(len(s) for s in sets) == partitions
        and frozenset().union(*sets) == frozenset(range(partitions))
    )


# --- producing and checking --------------------------------------------------------

def produce_numbered(broker, topic: str, partitions: int, per_partition: int, tag: str) -> dict:
    """`per_partition` messages to each partition; {(partition, offset): value}."""
    messages = [
        {"partition": p, "value": f"{tag} p{p} n{n}".encode()}
        for n in range(per_partition)
        for p in range(partitions)
    ]
    reports = produce_all(make_producer(broker), topic, messages)
    assert_delivered(reports)
    return {(p, offset): m["value"] for m, (_, p, offset, _) in zip(messages, reports)}


def assert_exactly_once(records, expected: dict, what: str = "records") -> None:
    """`records` ((partition, offset, value) as delivered) are exactly the
    `expected` ones, each once, with the values produced."""
    counts = Counter((p, o) for p, o, _ in records)
    duplicates = sorted(key for key, n in counts.items() if n > 1)
    missing = sorted(set(expected) - set(counts))
    unexpected = sorted(set(counts) - set(expected))
    assert not (duplicates or missing or unexpected), (
        f"{what}: {len(duplicates)} delivered more than once (first {duplicates[:5]}), "
        f"{len(missing)} missing (first {missing[:5]}), {len(unexpected)} unexpected (first {unexpected[:5]})"
    )
    wrong = [(p, o, v) for p, o, v in records if expected[(p, o)] != v]
    assert not wrong, f"{what}: wrong values, first {wrong[:5]}"


def committed_offsets(broker, group: str, topic: str, partitions: int) -> list:
    """[(partition, offset, metadata)] from OffsetFetch by a consumer that
    never joins `group`."""
    answer = committed_partitions(broker, group, topic, partitions, CLOSE_TIMEOUT_S)
    # Kafka answers "" for no metadata; librdkafka may show that as None.
    return sorted((tp.partition, tp.offset, tp.metadata or "") for tp in answer)


def group_offsets(admin, group: str, partitions=None) -> list:
    """[(topic, partition, offset)] from AdminClient.list_consumer_group_offsets;
    all committed offsets of the group when `partitions` is None."""
    request = ConsumerGroupTopicPartitions(group, partitions)
    result = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result(ADMIN_TIMEOUT_S)
    assert result.group_id == group
    errors = [(tp.topic, tp.partition, tp.error) for tp in result.topic_partitions if tp.error is not None]
    assert not errors, f"list_consumer_group_offsets partition errors: {errors}"
    return sorted((tp.topic, tp.partition, tp.offset) for tp in result.topic_partitions)


def listed_groups(admin, **filters) -> dict:
    """{group id: ConsumerGroupListing} from AdminClient.list_consumer_groups."""
    result = admin.list_consumer_groups(request_timeout=10, **filters).result(ADMIN_TIMEOUT_S)
    assert not result.errors, f"list_consumer_groups errors: {result.errors}"
    return {listing.group_id: listing for listing in result.valid}


def refusal_code(future) -> int | None:
    """The error of an alter_consumer_group_offsets future: raised for the
    group, or the one error every partition carries; None if it succeeded."""
    try:
        result = future.result(ADMIN_TIMEOUT_S)
    except KafkaException as exception:
        return kafka_error_code(exception)
    codes = [tp.error.code() if tp.error is not None else None for tp in result.topic_partitions]
    assert len(set(codes)) == 1, f"partitions answered differently: {result.topic_partitions}"
    return codes[0]


def broker_node_id(admin) -> int:
    [node_id] = admin.list_topics(timeout=10).brokers
    return node_id


# --- 1. one member ------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_subscribe_commit_and_resume(broker, members):
    """One subscriber gets all 4 partitions and every message once; its
    synchronous commit is what committed() returns; the next member of the
    group starts after it, and another group starts at the beginning."""
    topic = unique("groups")
    create_topic(make_admin(broker), topic, 4)
    first_batch = produce_numbered(broker, topic, 4, 50, "first")
    group = unique("group")

    first = members(broker, group, [topic])
    pump_until([first], lambda: len(first.records) >= 200, 30, "200 messages", commit=False)
    pump_for([first], 1.0, commit=False)
    assert first.partitions() == {0, 1, 2, 3}
    assert first.rebalances == [("assign", frozenset({0, 1, 2, 3}))]
    assert_exactly_once(first.records, first_batch, "first member")

    committed = first.commit()
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in committed) == [(topic, p, 50) for p in range(4)]
    answer = call_within(
        lambda: first.consumer.committed([TopicPartition(topic, p) for p in range(4)], timeout=10), 30, "committed()"
    )
    assert sorted((tp.partition, tp.offset, tp.error) for tp in answer) == [(p, 50, None) for p in range(4)]
    first.close()
    assert committed_offsets(broker, group, topic, 4) == [(p, 50, "") for p in range(4)]

    second_batch = produce_numbered(broker, topic, 4, 10, "second")
    assert sorted({offset for _, offset in second_batch}) == list(range(50, 60))
    resumed = members(broker, group, [topic])
    pump_until([resumed], lambda: len(resumed.records) >= 40, 30, "40 new messages", commit=False)
    pump_for([resumed], 1.0, commit=False)
    assert_exactly_once(resumed.records, second_batch, "member resuming after the commit")
    resumed.close()

    other = members(broker, unique("other-group"), [topic])
    pump_until([other], lambda: len(other.records) >= 240, 30, "all 240 messages", commit=False)
    pump_for([other], 1.0, commit=False)
    assert_exactly_once(other.records, {**first_batch, **second_batch}, "member of another group")


@pytest.mark.timeout(60)
def test_auto_commit_commits_what_was_consumed(broker, members):
    """enable.auto.commit: what the application was given is committed on
    the interval and at close, and the next member starts after it."""
    topic = unique("auto-commit")
    create_topic(make_admin(broker), topic, 2)
    batch = produce_numbered(broker, topic, 2, 25, "auto")
    group = unique("auto-commit")
    config = {"enable.auto.commit": True, "auto.commit.interval.ms": 200}
    first = members(broker, group, [topic], **config)
    pump_until([first], lambda: len(first.records) >= 50, 30, "50 messages", commit=False)
    assert_exactly_once(first.records, batch)
    wait_until(lambda: committed_offsets(broker, group, topic, 2) == [(0, 25, ""), (1, 25, "")], 10,
               "auto-committed offsets", interval=0.3)
    more = produce_numbered(broker, topic, 2, 5, "auto more")
    pump_until([first], lambda: len(first.records) >= 60, 30, "60 messages", commit=False)
    first.close()  # commits what it consumed since the last interval
    assert committed_offsets(broker, group, topic, 2) == [(0, 30, ""), (1, 30, "")]
    after = members(broker, group, [topic], **config)
    pump_for([after], 2.0, commit=False)
    assert after.partitions() == {0, 1} and after.records == []
    assert_exactly_once(first.records, {**batch, **more})


# --- 2. three members, three assignors ----------------------------------------------

# librdkafka's assignors over members sorted by id: range gives contiguous
# blocks, roundrobin deals partitions out in turn. Which member gets which
# block depends on the member ids, so the splits are compared as sets.
ASSIGNOR_SPLITS = {
    "range": ([[0, 1], [2, 3], [4, 5]], [[0, 1, 2], [3, 4, 5]]),
    "roundrobin": ([[0, 3], [1, 4], [2, 5]], [[0, 2, 4], [1, 3, 5]]),
    "cooperative-sticky": (None, None),
}


def split_of(group_members) -> list:
    return sorted(sorted(member.partitions()) for member in group_members)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", list(ASSIGNOR_SPLITS))
def test_three_members_share_partitions_and_take_over(broker, members, strategy):
    topic = unique(f"share-{strategy}")
    create_topic(make_admin(broker), topic, 6)
    group = unique("trio")
    trio = [
        members(broker, group, [topic], **{"partition.assignment.strategy": strategy, "client.id": f"member-{i}"})
        for i in range(3)
    ]
    pump_until(trio, lambda: balanced(trio, 6, 2), 40, "three members with two partitions each")
    stable = [member.partitions() for member in trio]
    pump_for(trio, 1.5)
    assert [member.partitions() for member in trio] == stable, "the assignment changed in a stable group"
    split_before, split_after = ASSIGNOR_SPLITS[strategy]
    if split_before is not None:
        assert split_of(trio) == split_before

    batch = produce_numbered(broker, topic, 6, 60, "shared")
    pump_until(trio, lambda: sum(len(m.records) for m in trio) >= 360, 30, "360 messages")
    pump_for(trio, 1.0)
    assert_exactly_once([r for m in trio for r in m.records], batch, "three members")
    for member, owned in zip(trio, stable):
        assert {p for p, _, _ in member.records} <= owned, "a member got messages of partitions it does not own"

    leaving, survivors = trio[0], trio[1:]
    leaving.close()
    pump_until(survivors, lambda: balanced(survivors, 6, 3), 30, "two members with three partitions each")
    after = [member.partitions() for member in survivors]
    pump_for(survivors, 1.5)
    assert [member.partitions() for member in survivors] == after, "the assignment changed in a stable group"
    if split_after is not None:
        assert split_of(survivors) == split_after
    else:
        for member, before, now in zip(survivors, stable[1:], after):
            assert before <= now, f"sticky assignor moved partitions away: {sorted(before)} -> {sorted(now)}"

    more = produce_numbered(broker, topic, 6, 20, "after-leave")
    pump_until(survivors, lambda: sum(len(m.records) for m in trio) >= 480, 30, "120 more messages")
    pump_for(survivors, 1.0)
    assert_exactly_once([r for m in trio for r in m.records], {**batch, **more}, "after the take-over")


# --- 3. a member that dies -------------------------------------------------------------

# A consumer in its own process, so that SIGKILL stops its heartbeats without
# a LeaveGroup. It prints one JSON line per event.
DOOMED_CONSUMER = r"""
import json, sys
from confluent_kafka import Consumer

config, topic = json.loads(sys.argv[1]), sys.argv[2]

def say(**event):
    print(json.dumps(event), flush=True)

consumer = Consumer(config)
consumer.subscribe([topic])
assigned = None
while True:
    messages = consumer.consume(500, 0.1)
    now = sorted(tp.partition for tp in consumer.assignment())
    if now != assigned:
        assigned = now
        say(event="assignment", partitions=now)
    good = []
    for message in messages:
        if message.error() is None:
            good.append(message)
        else:
            say(event="error", error=str(message.error()))
    if good:
        consumer.commit(asynchronous=False)
        say(event="committed", records=[[m.partition(), m.offset(), m.value().decode()] for m in good])
"""


class DoomedConsumer:
    """The consumer process above, with its events collected by a thread."""

    def __init__(self, broker, group, topic, workdir):
        config = {
            "bootstrap.servers": broker.bootstrap,
            "broker.address.family": "v4",
            "group.id": group,
            "client.id": "doomed",
            **GROUP_CONSUMER_CONFIG,
        }
        self.stderr_path = workdir / "doomed-consumer.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", DOOMED_CONSUMER, json.dumps(config), topic],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.events: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def partitions(self) -> frozenset:
        assignments = [e["partitions"] for e in list(self.events) if e["event"] == "assignment"]
        return frozenset(assignments[-1]) if assignments else frozenset()

    def records(self) -> list:
        return [(p, o, v.encode()) for e in list(self.events) if e["event"] == "committed" for p, o, v in e["records"]]

    def errors(self) -> list:
        return [e["error"] for e in list(self.events) if e["event"] == "error"]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.mark.timeout(90)
def test_member_killed_without_leaving_loses_its_partitions_after_the_session_timeout(broker, members, tmp_path):
    topic = unique("doomed")
    create_topic(make_admin(broker), topic, 4)
    group = unique("survivor")
    survivor = members(broker, group, [topic], **{"client.id": "survivor"})
    doomed = DoomedConsumer(broker, group, topic, tmp_path)
    try:
        def split():
            mine, theirs = survivor.partitions(), doomed.partitions()
            return len(mine) == len(theirs) == 2 and mine | theirs == {0, 1, 2, 3}

        pump_until([survivor], split, 40, "survivor and doomed process with two partitions each")
        pump_for([survivor], 1.0)
        assert split(), "the assignment changed in a stable group"
        mine, theirs = survivor.partitions(), doomed.partitions()

        batch = produce_numbered(broker, topic, 4, 100, "before-kill")
        pump_until([survivor], lambda: len(survivor.records) + len(doomed.records()) >= 400, 30, "400 messages")
        pump_for([survivor], 1.0)
        assert not doomed.errors(), doomed.errors()
        assert_exactly_once(survivor.records + doomed.records(), batch, "before the kill")
        assert {p for p, _, _ in doomed.records()} == theirs

        doomed.kill()
        killed_at = time.monotonic()
        pump_until([survivor], lambda: survivor.partitions() == {0, 1, 2, 3}, 30, "survivor holding all partitions")
        waited = time.monotonic() - killed_at
        # The dead member's last heartbeat was at most one interval before the
        # kill; its session runs SESSION_TIMEOUT_MS from there. A dropped TCP
        # connection is not a LeaveGroup.
        assert waited >= SESSION_TIMEOUT_MS / 1000 - 2, f"partitions moved {waited:.1f}s after the kill"

        more = produce_numbered(broker, topic, 4, 25, "after-kill")
        expected = {key: value for key, value in batch.items() if key[0] in mine} | more
        pump_until([survivor], lambda: len(survivor.records) >= len(expected), 30, f"{len(expected)} records")
        pump_for([survivor], 1.0)
        assert_exactly_once(survivor.records, expected, "survivor (resuming at the dead member's commits)")
    finally:
        doomed.kill()


# --- 4. committed offsets across restarts ------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_committed_offsets_survive_restart(broker, members, stop_signal):
    admin = make_admin(broker)
    topic = unique("durable")
    create_topic(admin, topic, 3)
    batch = produce_numbered(broker, topic, 3, 30, "before-restart")

    group = unique("durable-group")
    member = members(broker, group, [topic])
    pump_until([member], lambda: len(member.records) >= 90, 30, "90 messages")
    pump_for([member], 0.5)
    assert_exactly_once(member.records, batch)
    member.close()

    # Many commits of one group, offsets going up on partition 0 and down on
    # partition 1: the last commit wins, not the largest.
    rewritten = unique("rewritten")
    writer = make_consumer(broker, **{"group.id": rewritten})
    for i in range(1, 31):
        offsets = [TopicPartition(topic, 0, i, f"up {i}"), TopicPartition(topic, 1, 31 - i, f"down {i}")]
        answer = call_within(lambda: writer.commit(offsets=offsets, asynchronous=False), COMMIT_TIMEOUT_S, "commit")
        assert [tp.error for tp in answer] == [None, None]
    call_within(writer.close, CLOSE_TIMEOUT_S, "consumer close")

    # A deleted group stays deleted.
    deleted = unique("deleted")
    writer = make_consumer(broker, **{"group.id": deleted})
    call_within(
        lambda: writer.commit(offsets=[TopicPartition(topic, 2, 17)], asynchronous=False), COMMIT_TIMEOUT_S, "commit"
    )
    call_within(writer.close, CLOSE_TIMEOUT_S, "consumer close")
    assert group_offsets(admin, deleted) == [(topic, 2, 17)]
    admin.delete_consumer_groups([deleted], request_timeout=10)[deleted].result(ADMIN_TIMEOUT_S)
    assert group_offsets(admin, deleted) == []

    code = broker.stop(stop_signal)
    assert code == (-signal.SIGKILL if stop_signal == signal.SIGKILL else 0), f"exit code after {stop_signal.name}"
    broker.start()

    admin = make_admin(broker)
    assert committed_offsets(broker, group, topic, 3) == [(p, 30, "") for p in range(3)]
    assert committed_offsets(broker, rewritten, topic, 3) == [(0, 30, "up 30"), (1, 1, "down 30"), (2, OFFSET_INVALID, "")]
    assert group_offsets(admin, deleted) == []
    listed = listed_groups(admin)
    # A group that had members stays a "consumer" group when Empty; one that
    # only ever had offsets committed for it is a simple group.
    assert (listed[group].state, listed[group].is_simple_consumer_group) == (ConsumerGroupState.EMPTY, False)
    assert (listed[rewritten].state, listed[rewritten].is_simple_consumer_group) == (ConsumerGroupState.EMPTY, True)
    assert deleted not in listed

    more = produce_numbered(broker, topic, 3, 10, "after-restart")
    resumed = members(broker, group, [topic])
    pump_until([resumed], lambda: len(resumed.records) >= 30, 30, "30 new messages")
    pump_for([resumed], 1.0)
    assert_exactly_once(resumed.records, more, "member resuming after the restart")


@pytest.mark.timeout(90)
def test_live_member_carries_on_across_a_broker_kill(broker, members):
    """A member that stays up while the broker is killed and restarted goes
    on from its commits: nothing lost, nothing delivered twice. Kafka keeps
    the group's membership in its offsets log, so the member is neither
    rebalanced nor refused a commit after the restart."""
    topic = unique("carry-on")
    create_topic(make_admin(broker), topic, 2)
    group = unique("carry-on")
    member = members(broker, group, [topic], strict=False)
    batch = produce_numbered(broker, topic, 2, 20, "before")
    pump_until([member], lambda: len(member.records) >= 40, 30, "40 messages")
    pump_for([member], 0.5)
    rebalances = list(member.rebalances)

    broker.kill()
    broker.start()
    more = produce_numbered(broker, topic, 2, 20, "after")
    pump_until([member], lambda: len(member.records) >= 80, 40, "80 messages")
    pump_for([member], 1.0)
    assert_exactly_once(member.records, {**batch, **more}, "across the kill")
    assert member.rebalances == rebalances, "the restart caused a rebalance"
    admin = make_admin(broker)  # kept referenced: a collected AdminClient never resolves its futures
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(ADMIN_TIMEOUT_S)
    assert description.state == ConsumerGroupState.STABLE
    assert [m.member_id for m in description.members] == [member.consumer.memberid()]


@pytest.mark.timeout(60)
def test_member_restored_after_a_restart_but_never_back_is_expired(broker, members, tmp_path):
    """Both members are restored with the group; the one whose process died
    with the broker never heartbeats again and loses its partitions once its
    session, restarted with the broker, runs out."""
    topic = unique("restored")
    create_topic(make_admin(broker), topic, 4)
    group = unique("restored")
    survivor = members(broker, group, [topic])
    doomed = DoomedConsumer(broker, group, topic, tmp_path)
    try:
        pump_until([survivor], lambda: len(survivor.partitions()) == len(doomed.partitions()) == 2, 40,
                   "two partitions each")
        mine = survivor.partitions()
        batch = produce_numbered(broker, topic, 4, 10, "before")
        pump_until([survivor], lambda: len(survivor.records) + len(doomed.records()) >= 40, 30, "40 messages")
        doomed.kill()
        broker.kill()
        broker.start()
        restarted_at = time.monotonic()
        pump_until([survivor], lambda: survivor.partitions() == {0, 1, 2, 3}, 30, "the survivor holding all")
        waited = time.monotonic() - restarted_at
        assert waited >= SESSION_TIMEOUT_MS / 1000 - 2, f"partitions moved {waited:.1f}s after the restart"
        more = produce_numbered(broker, topic, 4, 5, "after")
        expected = {key: value for key, value in batch.items() if key[0] in mine} | more
        pump_until([survivor], lambda: len(survivor.records) >= len(expected), 30, f"{len(expected)} records")
        pump_for([survivor], 1.0)
        assert_exactly_once(survivor.records, expected, "survivor")
    finally:
        doomed.kill()


@pytest.mark.timeout(60)
def test_member_dead_during_a_rebalance_is_dropped_at_its_session_timeout(broker, members, tmp_path):
    """A member dies, then a new one joins: the rebalance waits for the dead
    member only until its session times out (not for the 5 minute rebalance
    timeout), then completes with the two live members."""
    topic = unique("dead-in-rebalance")
    create_topic(make_admin(broker), topic, 4)
    group = unique("dead-in-rebalance")
    first = members(broker, group, [topic])
    doomed = DoomedConsumer(broker, group, topic, tmp_path)
    try:
        pump_until([first], lambda: len(first.partitions()) == len(doomed.partitions()) == 2, 40,
                   "two partitions each")
        batch = produce_numbered(broker, topic, 4, 10, "before")
        pump_until([first], lambda: len(first.records) + len(doomed.records()) >= 40, 30, "40 messages")
        doomed.kill()
        killed_at = time.monotonic()
        newcomer = members(broker, group, [topic])
        both = [first, newcomer]
        pump_until(both, lambda: balanced(both, 4, 2), 40, "the live members with two partitions each")
        waited = time.monotonic() - killed_at
        assert waited >= SESSION_TIMEOUT_MS / 1000 - 2, f"rebalance done {waited:.1f}s after the kill"
        more = produce_numbered(broker, topic, 4, 5, "after")
        pump_until(both, lambda: len(first.records) + len(newcomer.records) + len(doomed.records()) >= 60, 30,
                   "60 records")
        pump_for(both, 1.0)
        assert_exactly_once(first.records + newcomer.records + doomed.records(), {**batch, **more})
    finally:
        doomed.kill()


@pytest.mark.timeout(60)
def test_partitions_added_to_a_subscribed_topic_are_assigned(broker, members):
    """CreatePartitions on a topic a group reads: the leader sees the new
    partitions in metadata and rejoins the Stable group, which rebalances."""
    admin = make_admin(broker)
    topic = unique("growing")
    create_topic(admin, topic, 2)
    group = unique("growing")
    config = {"topic.metadata.refresh.interval.ms": 1000}
    pair = [members(broker, group, [topic], **config) for _ in range(2)]
    pump_until(pair, lambda: balanced(pair, 2, 1), 30, "one partition each")
    admin.create_partitions([NewPartitions(topic, 4)], operation_timeout=10)[topic].result(ADMIN_TIMEOUT_S)
    pump_until(pair, lambda: balanced(pair, 4, 2), 30, "two partitions each after growing to 4")
    batch = produce_numbered(broker, topic, 4, 10, "grown")
    pump_until(pair, lambda: sum(len(m.records) for m in pair) >= 40, 30, "40 messages")
    pump_for(pair, 1.0)
    assert_exactly_once([r for m in pair for r in m.records], batch)


# --- 5. kafka-python ---------------------------------------------------------------------

def kafka_python_consumer(broker, group, topic, **config) -> KafkaConsumer:
    settings = {
        "bootstrap_servers": broker.bootstrap,
        "group_id": group,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
    }
    settings.update(config)
    return KafkaConsumer(topic, **settings)


def kafka_python_poll_exactly(consumer, count, timeout=30.0) -> list:
    """(partition, offset, value) of exactly `count` records, then nothing
    more for a second."""
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"kafka-python consumed {len(records)} of {count} in {timeout}s"
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend((r.partition, r.offset, r.value) for r in batch)
    extra = [r for batch in consumer.poll(timeout_ms=1000).values() for r in batch]
    assert not extra, f"more than {count} records: {extra[:3]}"
    return records


@pytest.mark.timeout(90)
def test_kafka_python_group_round_trip_and_admin(broker):
    topic = unique("kp-group")
    create_topic(make_admin(broker), topic, 3)
    batch = produce_numbered(broker, topic, 3, 20, "kafka-python")
    group = unique("kp-group")
    partitions = [KafkaPythonTopicPartition(topic, p) for p in range(3)]

    consumer = kafka_python_consumer(broker, group, topic, client_id="kp-first")
    assert_exactly_once(kafka_python_poll_exactly(consumer, 60), batch, "kafka-python member")
    assert consumer.assignment() == set(partitions)
    consumer.commit()
    assert [consumer.committed(tp) for tp in partitions] == [20, 20, 20]
    consumer.close(autocommit=False)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    consumer = None
    try:
        # Offsets of a topic the group does not read, committed while it is
        # Empty: OffsetCommit v8 with metadata up to offset.metadata.max.bytes
        # (4096) and a leader epoch, both given back by OffsetFetch.
        unread = unique("kp-unread")
        create_topic(make_admin(broker), unread, 2)
        unread_partitions = [KafkaPythonTopicPartition(unread, p) for p in range(2)]
        answer = admin.alter_group_offsets(group, {
            unread_partitions[0]: OffsetAndMetadata(7, "x" * 4096, 3),
            unread_partitions[1]: OffsetAndMetadata(8, "y" * 4097, -1),
        })
        assert answer == {unread_partitions[0]: kafka_python_errors.NoError,
                          unread_partitions[1]: kafka_python_errors.OffsetMetadataTooLargeError}
        [stored] = [o for tp, o in admin.list_group_offsets(group)[group].items() if tp.topic == unread]
        assert (stored.offset, stored.metadata, stored.leader_epoch) == (7, "x" * 4096, 3)

        more = produce_numbered(broker, topic, 3, 5, "kafka-python more")
        consumer = kafka_python_consumer(broker, group, topic, client_id="kp-second")
        assert_exactly_once(kafka_python_poll_exactly(consumer, 15), more, "kafka-python member resuming")
        consumer.commit()

        [listing] = [g for g in admin.list_groups() if g["group_id"] == group]
        assert listing["protocol_type"] == "consumer"

        described = admin.describe_groups([group])[group]
        assert described["error"] is None
        assert (described["group_state"], described["protocol_type"], described["protocol_data"]) == (
            "Stable", "consumer", "range")
        [member] = described["members"]
        assert member["client_id"] == "kp-second"
        assert member["member_metadata"]["topics"] == [topic]
        assignment = member["member_assignment"]["assigned_partitions"]
        assert [(a["topic"], sorted(a["partitions"])) for a in assignment] == [(topic, [0, 1, 2])]

        offsets = admin.list_group_offsets(group)
        assert {tp: o.offset for tp, o in offsets[group].items()} == {
            **{tp: 25 for tp in partitions}, unread_partitions[0]: 7}
        assert all(offsets[group][tp].metadata == "" for tp in partitions)

        assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}
        # OffsetDelete in a live group: the offsets of the topic it reads
        # stay, those of a topic it does not read go.
        assert admin.delete_group_offsets(group, [partitions[0], unread_partitions[0]]) == {
            partitions[0]: kafka_python_errors.GroupSubscribedToTopicError,
            unread_partitions[0]: kafka_python_errors.NoError}
        assert sorted(admin.list_group_offsets(group)[group]) == partitions

        consumer.close(autocommit=False)  # LeaveGroup
        wait_until(lambda: admin.describe_groups([group])[group]["group_state"] == "Empty", 10, "group Empty")
        assert admin.delete_group_offsets(group, [partitions[0]]) == {partitions[0]: kafka_python_errors.NoError}
        assert sorted(admin.list_group_offsets(group)[group]) == partitions[1:]

        assert admin.delete_groups([group]) == {group: "OK"}
        assert admin.list_group_offsets(group) == {group: {}}
        assert group not in [g["group_id"] for g in admin.list_groups()]
        assert admin.delete_groups([group]) == {group: "GroupIdNotFoundError"}
    finally:
        admin.close()
        if consumer is not None:
            consumer.close(autocommit=False)


# --- 6. confluent AdminClient -------------------------------------------------------------

@pytest.mark.timeout(90)
def test_confluent_admin_group_operations(broker, members):
    admin = make_admin(broker)
    topic = unique("admin-groups")
    create_topic(admin, topic, 3)
    never_committed = unique("never-committed")
    create_topic(admin, never_committed, 1)
    batch = produce_numbered(broker, topic, 3, 10, "admin")

    active_group, idle_group = unique("active"), unique("idle")
    active = members(broker, active_group, [topic], **{"client.id": "admin-test-active"})
    pump_until([active], lambda: len(active.records) >= 30, 30, "30 messages")
    idle = members(broker, idle_group, [topic])
    pump_until([idle], lambda: len(idle.records) >= 30, 30, "30 messages")
    idle.close()  # LeaveGroup: the group is Empty and keeps its offsets
    pump_for([active], 0.5)
    assert_exactly_once(active.records, batch)

    listed = listed_groups(admin)
    assert (listed[active_group].state, listed[active_group].is_simple_consumer_group) == (
        ConsumerGroupState.STABLE, False)
    assert (listed[idle_group].state, listed[idle_group].is_simple_consumer_group) == (
        ConsumerGroupState.EMPTY, False)
    stable_only = listed_groups(admin, states={ConsumerGroupState.STABLE})
    assert active_group in stable_only and idle_group not in stable_only

    futures = admin.describe_consumer_groups([active_group, idle_group], request_timeout=10)
    description = futures[active_group].result(ADMIN_TIMEOUT_S)
    assert description.group_id == active_group
    assert description.state == ConsumerGroupState.STABLE
    assert not description.is_simple_consumer_group
    assert description.partition_assignor == "range"
    coordinator = description.coordinator
    assert (coordinator.id, coordinator.host, coordinator.port) == (broker_node_id(admin), broker.host, broker.port)
    [member] = description.members
    assert member.member_id == active.consumer.memberid()
    assert member.client_id == "admin-test-active"
    assert "127.0.0.1" in member.host
    assert member.group_instance_id is None
    assert sorted((tp.topic, tp.partition) for tp in member.assignment.topic_partitions) == [
        (topic, p) for p in range(3)]
    idle_description = futures[idle_group].result(ADMIN_TIMEOUT_S)
    assert (idle_description.state, idle_description.members) == (ConsumerGroupState.EMPTY, [])

    assert group_offsets(admin, active_group) == [(topic, p, 10) for p in range(3)]
    asked = [TopicPartition(topic, 1), TopicPartition(never_committed, 0)]
    assert group_offsets(admin, active_group, asked) == sorted(
        [(topic, 1, 10), (never_committed, 0, OFFSET_INVALID)])

    with pytest.raises(KafkaException) as raised:
        admin.delete_consumer_groups([active_group], request_timeout=10)[active_group].result(ADMIN_TIMEOUT_S)
    assert kafka_error_code(raised.value) == KafkaError.NON_EMPTY_GROUP

    # Offsets of a group with members belong to its members.
    refused = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(active_group, [TopicPartition(topic, 0, 3)])], request_timeout=10)
    assert refusal_code(refused[active_group]) == KafkaError.UNKNOWN_MEMBER_ID
    assert group_offsets(admin, active_group) == [(topic, p, 10) for p in range(3)]

    new_offsets = {0: 2, 1: 5, 2: 10}
    altered = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(idle_group, [TopicPartition(topic, p, o) for p, o in new_offsets.items()])],
        request_timeout=10,
    )[idle_group].result(ADMIN_TIMEOUT_S)
    assert sorted((tp.topic, tp.partition, tp.offset, tp.error) for tp in altered.topic_partitions) == [
        (topic, p, o, None) for p, o in new_offsets.items()]
    assert group_offsets(admin, idle_group) == [(topic, p, o) for p, o in new_offsets.items()]
    rejoined = members(broker, idle_group, [topic])
    expected = {(p, o): v for (p, o), v in batch.items() if o >= new_offsets[p]}
    pump_until([rejoined], lambda: len(rejoined.records) >= len(expected), 30, f"{len(expected)} messages")
    pump_for([rejoined], 1.0)
    assert_exactly_once(rejoined.records, expected, "member starting at altered offsets")
    rejoined.close()

    # Offsets altered for a group that never had a member make a "simple" group.
    simple_group = unique("simple")
    admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(simple_group, [TopicPartition(topic, 0, 7)])], request_timeout=10
    )[simple_group].result(ADMIN_TIMEOUT_S)
    listing = listed_groups(admin)[simple_group]
    assert (listing.state, listing.is_simple_consumer_group) == (ConsumerGroupState.EMPTY, True)

    deleted = admin.delete_consumer_groups([idle_group, simple_group], request_timeout=10)
    for group_id, future in deleted.items():
        assert future.result(ADMIN_TIMEOUT_S) is None, group_id
    listed = listed_groups(admin)
    assert idle_group not in listed and simple_group not in listed and active_group in listed
    assert group_offsets(admin, idle_group) == []
    assert group_offsets(admin, idle_group, [TopicPartition(topic, p) for p in range(3)]) == [
        (topic, p, OFFSET_INVALID) for p in range(3)]
    with pytest.raises(KafkaException) as raised:
        admin.delete_consumer_groups([idle_group], request_timeout=10)[idle_group].result(ADMIN_TIMEOUT_S)
    assert kafka_error_code(raised.value) == KafkaError.GROUP_ID_NOT_FOUND

    # Deleted groups stay deleted after a crash; the live one is still there.
    broker.kill()
    broker.start()
    admin = make_admin(broker)
    listed = listed_groups(admin)
    assert idle_group not in listed and simple_group not in listed
    assert listed[active_group].state == ConsumerGroupState.STABLE
    assert group_offsets(admin, idle_group) == []


# --- 7. static membership -----------------------------------------------------------------

@pytest.mark.timeout(90)
def test_static_member_restart_keeps_its_partitions_without_a_rebalance(broker, members):
    """librdkafka's static member sends no LeaveGroup on close; a new consumer
    with its group.instance.id, joining within the session timeout, gets the
    same partitions and the other member sees no rebalance, then or when the
    old session would have expired."""
    topic = unique("static")
    create_topic(make_admin(broker), topic, 4)
    group = unique("static")
    first = members(broker, group, [topic], **{"group.instance.id": "instance-a", "client.id": "a"})
    other = members(broker, group, [topic], **{"group.instance.id": "instance-b", "client.id": "b"})
    pump_until([first, other], lambda: balanced([first, other], 4, 2), 40, "two partitions each")
    pump_for([first, other], 1.0)
    assert balanced([first, other], 4, 2), "the assignment changed in a stable group"
    first_partitions, other_partitions = first.partitions(), other.partitions()
    other_rebalances = len(other.rebalances)

    batch = produce_numbered(broker, topic, 4, 10, "static")
    pump_until([first, other], lambda: len(first.records) + len(other.records) >= 40, 30, "40 messages")

    first.close()
    closed_at = time.monotonic()
    pump_for([other], 2.0)
    assert other.partitions() == other_partitions
    assert other.rebalances[other_rebalances:] == [], "a static member's close caused a rebalance"

    restarted = members(broker, group, [topic], **{"group.instance.id": "instance-a", "client.id": "a2"})
    pump_until([restarted, other], lambda: restarted.partitions(), 20, "the restarted static member's assignment")
    assert time.monotonic() - closed_at < SESSION_TIMEOUT_MS / 1000, "rejoined too late to test a static rejoin"
    assert restarted.partitions() == first_partitions
    pump_for([restarted, other], closed_at + SESSION_TIMEOUT_MS / 1000 + 2.0 - time.monotonic())
    assert (restarted.partitions(), other.partitions()) == (first_partitions, other_partitions)
    assert other.rebalances[other_rebalances:] == [], "the other member was rebalanced"
    assert restarted.rebalances == [("assign", first_partitions)]

    more = produce_numbered(broker, topic, 4, 5, "static more")
    everyone = [first, other, restarted]
    pump_until([restarted, other], lambda: sum(len(m.records) for m in everyone) >= 60, 30, "20 more messages")
    pump_for([restarted, other], 1.0)
    assert_exactly_once([r for m in everyone for r in m.records], {**batch, **more}, "static members")
    assert {p for p, _, _ in restarted.records} <= first_partitions


def fenced(member: Member) -> bool:
    """librdkafka raised its fatal error for FENCED_INSTANCE_ID: error_cb
    gets the underlying code, consume() a _FATAL event naming it."""
    return any(
        error.code() == KafkaError.FENCED_INSTANCE_ID
        or (error.code() == KafkaError._FATAL and "fenced" in error.str().lower())
        for error in member.client_errors + member.consume_errors
    )


@pytest.mark.timeout(60)
def test_second_consumer_with_the_same_instance_id_fences_the_first(broker, members):
    admin = make_admin(broker)
    topic = unique("fenced")
    create_topic(admin, topic, 2)
    group = unique("fenced")
    older = members(broker, group, [topic], strict=False, **{"group.instance.id": "twin", "client.id": "older"})
    pump_until([older], lambda: older.partitions() == {0, 1}, 30, "the first twin's assignment")
    assert not older.consume_errors

    newer = members(broker, group, [topic], **{"group.instance.id": "twin", "client.id": "newer"})
    pump_until([older, newer], lambda: fenced(older) and newer.partitions() == {0, 1}, 30,
               "the older twin fenced and the newer one assigned")
    assert not fenced(newer)

    [member] = admin.describe_consumer_groups([group], request_timeout=10)[group].result(ADMIN_TIMEOUT_S).members
    assert (member.member_id, member.group_instance_id, member.client_id) == (
        newer.consumer.memberid(), "twin", "newer")

    batch = produce_numbered(broker, topic, 2, 10, "twin")
    pump_until([newer], lambda: len(newer.records) >= 20, 30, "20 messages")
    pump_for([older, newer], 1.0)
    assert_exactly_once(newer.records, batch, "the newer twin")
    assert older.records == [], "a fenced consumer received messages"


@pytest.mark.timeout(60)
def test_static_member_removed_by_admin_leaves_at_once(broker, members):
    """LeaveGroup v3+ naming a static member by its group.instance.id (what
    the Java AdminClient's removeMembersFromConsumerGroup sends): its
    partitions move now, not after the session timeout."""
    topic = unique("remove-static")
    create_topic(make_admin(broker), topic, 2)
    group = unique("remove-static")
    gone = members(broker, group, [topic], **{"group.instance.id": "gone"})
    stays = members(broker, group, [topic])
    pump_until([gone, stays], lambda: balanced([gone, stays], 2, 1), 30, "one partition each")
    gone.close()  # a static member: no LeaveGroup
    pump_for([stays], 1.0)
    assert len(stays.partitions()) == 1

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        removed_at = time.monotonic()
        assert admin.remove_group_members(group, [MemberToRemove(group_instance_id="gone")]) == {
            "gone": kafka_python_errors.NoError}
        pump_until([stays], lambda: stays.partitions() == {0, 1}, 10, "the remaining member holding both partitions")
        assert time.monotonic() - removed_at < SESSION_TIMEOUT_MS / 1000 - 1
        assert admin.remove_group_members(group, [MemberToRemove(group_instance_id="gone")]) == {
            "gone": kafka_python_errors.UnknownMemberIdError}
        # A group that does not exist: the member is unknown (not the call).
        assert admin.remove_group_members(unique("no-such-group"), [MemberToRemove(group_instance_id="gone")]) == {
            "gone": kafka_python_errors.UnknownMemberIdError}
    finally:
        admin.close()


def join_errors(member: Member) -> set:
    return {error.code() for error in member.consume_errors + member.client_errors}


@pytest.mark.timeout(60)
def test_join_refusals_reach_the_client(broker, members):
    """Session timeouts outside group.min/max.session.timeout.ms (6 s,
    30 min) and a member with no assignor in common with the group are
    refused at JoinGroup, and the group's member sees no rebalance."""
    topic = unique("refused")
    create_topic(make_admin(broker), topic, 2)
    group = unique("refused")
    too_short = members(broker, group, [topic], strict=False, **{"session.timeout.ms": 5999})
    pump_until([too_short], lambda: KafkaError.INVALID_SESSION_TIMEOUT in join_errors(too_short), 20,
               "INVALID_SESSION_TIMEOUT")
    too_long = members(broker, group, [topic], strict=False, **{"session.timeout.ms": 1_800_001, "max.poll.interval.ms": 1_800_001})
    pump_until([too_long], lambda: KafkaError.INVALID_SESSION_TIMEOUT in join_errors(too_long), 20,
               "INVALID_SESSION_TIMEOUT")
    assert too_short.partitions() == too_long.partitions() == frozenset()
    too_short.close()
    too_long.close()

    ranged = members(broker, group, [topic], **{"partition.assignment.strategy": "range"})
    pump_until([ranged], lambda: ranged.partitions() == {0, 1}, 30, "the range member's assignment")
    rebalances = len(ranged.rebalances)
    other = members(broker, group, [topic], strict=False, **{"partition.assignment.strategy": "roundrobin"})
    pump_until([ranged, other], lambda: KafkaError.INCONSISTENT_GROUP_PROTOCOL in join_errors(other), 20,
               "INCONSISTENT_GROUP_PROTOCOL")
    pump_for([ranged, other], 1.0)
    assert other.partitions() == frozenset()
    assert ranged.partitions() == {0, 1} and ranged.rebalances[rebalances:] == []


class KafkaPythonMember:
    """A kafka-python KafkaConsumer with the Member interface pump_until uses."""

    def __init__(self, broker, group, topic, **config):
        self.group = group
        self.consumer = kafka_python_consumer(broker, group, topic, **config)
        self.records: list[tuple[int, int, bytes]] = []
        self.closed = False

    def partitions(self) -> frozenset:
        return frozenset(tp.partition for tp in self.consumer.assignment())

    def pump(self, timeout: float = 0.05, commit: bool = True) -> list:
        batch = [r for records in self.consumer.poll(timeout_ms=int(timeout * 1000)).values() for r in records]
        self.records.extend((r.partition, r.offset, r.value) for r in batch)
        if batch and commit:
            self.consumer.commit()
        return batch

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close(autocommit=False)


@pytest.mark.timeout(60)
def test_librdkafka_and_kafka_python_members_share_a_group(broker, members):
    """Both clients speak the same "consumer" protocol: whichever leads, the
    other reads its assignment, and each takes over from the other's commits."""
    topic = unique("mixed")
    create_topic(make_admin(broker), topic, 4)
    group = unique("mixed")
    librdkafka = members(broker, group, [topic], **{"partition.assignment.strategy": "range"})
    kafka_python = KafkaPythonMember(broker, group, topic)
    try:
        both = [librdkafka, kafka_python]
        pump_until(both, lambda: balanced(both, 4, 2), 40, "two partitions each")
        assert split_of(both) == [[0, 1], [2, 3]]
        batch = produce_numbered(broker, topic, 4, 20, "mixed")
        pump_until(both, lambda: len(librdkafka.records) + len(kafka_python.records) >= 80, 30, "80 messages")
        pump_for(both, 1.0)
        assert_exactly_once(librdkafka.records + kafka_python.records, batch, "mixed group")

        kafka_python.close()
        pump_until([librdkafka], lambda: librdkafka.partitions() == {0, 1, 2, 3}, 30, "librdkafka holding all")
        more = produce_numbered(broker, topic, 4, 5, "mixed more")
        pump_until([librdkafka], lambda: len(librdkafka.records) + len(kafka_python.records) >= 100, 30,
                   "100 messages")
        pump_for([librdkafka], 1.0)
        assert_exactly_once(librdkafka.records + kafka_python.records, {**batch, **more}, "after the take-over")
    finally:
        kafka_python.close()


# --- 8. kcat -G ------------------------------------------------------------------------------

def kcat_group_consume(broker, group: str, topic: str, count: int) -> list:
    """`kcat -G group` until `count` messages (kcat commits them on exit);
    (partition, offset, value) per message."""
    command = [
        "kcat", "-b", broker.bootstrap, "-G", group, "-c", str(count), "-q",
        "-X", "auto.offset.reset=earliest", "-X", "broker.address.family=v4",
        "-f", r"%p %o %s\n", topic,
    ]
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode == 0, (
        f"kcat exited {result.returncode}\nstderr:\n{result.stderr.decode(errors='replace')}")
    rows = [line.split(" ", 2) for line in result.stdout.decode().splitlines()]
    return [(int(p), int(o), value.encode()) for p, o, value in rows]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (scripts/test.sh installs it)")
@pytest.mark.timeout(120)
def test_kcat_balanced_consumer(broker):
    admin = make_admin(broker)
    topic = unique("kcat-group")
    create_topic(admin, topic, 3)
    batch = produce_numbered(broker, topic, 3, 40, "kcat")
    group = unique("kcat-group")

    assert_exactly_once(kcat_group_consume(broker, group, topic, 120), batch, "kcat -G")
    assert group_offsets(admin, group) == [(topic, p, 40) for p in range(3)]

    more = produce_numbered(broker, topic, 3, 10, "kcat more")
    assert_exactly_once(kcat_group_consume(broker, group, topic, 30), more, "kcat -G resuming")
    assert group_offsets(admin, group) == [(topic, p, 50) for p in range(3)]


# --- 9. offsets of deleted topics ---------------------------------------------------------------

@pytest.mark.timeout(90)
def test_offsets_of_a_deleted_topic_are_dropped(broker):
    admin = make_admin(broker)
    doomed, kept = unique("doomed-topic"), unique("kept-topic")
    create_topic(admin, doomed, 2)
    create_topic(admin, kept, 2)
    group = unique("topic-deleted")
    writer = make_consumer(broker, **{"group.id": group})
    offsets = [TopicPartition(doomed, 0, 5), TopicPartition(doomed, 1, 6),
               TopicPartition(kept, 0, 7), TopicPartition(kept, 1, 8)]
    answer = call_within(lambda: writer.commit(offsets=offsets, asynchronous=False), COMMIT_TIMEOUT_S, "commit")
    assert [tp.error for tp in answer] == [None] * 4
    call_within(writer.close, CLOSE_TIMEOUT_S, "consumer close")
    assert group_offsets(admin, group) == sorted([(doomed, 0, 5), (doomed, 1, 6), (kept, 0, 7), (kept, 1, 8)])
    kept_only = sorted([(kept, 0, 7), (kept, 1, 8)])

    admin.delete_topics([doomed], operation_timeout=10)[doomed].result(ADMIN_TIMEOUT_S)
    wait_until(lambda: doomed not in admin.list_topics(timeout=10).topics, 10, "topic gone from metadata")
    wait_until(lambda: group_offsets(admin, group) == kept_only, 10, "the deleted topic's offsets gone")

    # OffsetCommit for a topic that does not exist.
    refused = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(doomed, 0, 9)])], request_timeout=10)
    assert refusal_code(refused[group]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert group_offsets(admin, group) == kept_only

    # A new topic of the same name starts without the old offsets, also
    # after a crash.
    create_topic(admin, doomed, 2)
    assert committed_offsets(broker, group, doomed, 2) == [(0, OFFSET_INVALID, ""), (1, OFFSET_INVALID, "")]
    broker.kill()
    broker.start()
    admin = make_admin(broker)
    assert group_offsets(admin, group) == kept_only
    assert committed_offsets(broker, group, doomed, 2) == [(0, OFFSET_INVALID, ""), (1, OFFSET_INVALID, "")]


# --- the group protocol by hand ---------------------------------------------------------------
#
# Clients retry most group errors silently, so the error codes themselves are
# checked here with hand-built requests (non-flexible versions, encoded from
# https://kafka.apache.org/protocol.html with kafka_wire's primitives).

API_OFFSET_COMMIT, API_OFFSET_FETCH, API_JOIN_GROUP, API_HEARTBEAT, API_LEAVE_GROUP, API_SYNC_GROUP = 8, 9, 11, 12, 13, 14
ERROR_ILLEGAL_GENERATION = 22
ERROR_UNKNOWN_MEMBER_ID = 25
ERROR_REBALANCE_IN_PROGRESS = 27
ERROR_MEMBER_ID_REQUIRED = 79
ERROR_FENCED_INSTANCE_ID = 82


def wire_bytes(data: bytes) -> bytes:
    return wire.int32(len(data)) + data


def join_group_v5(conn, group, member_id, metadata=b"", instance_id=None, protocols=("range",), wait=True):
    """JoinGroup v5 (protocol type "consumer"); the decoded answer, or the
    correlation id to read it with `read_join_group_v5` when not `wait`."""
    body = (
        wire.string(group) + wire.int32(SESSION_TIMEOUT_MS) + wire.int32(10_000) + wire.string(member_id)
        + wire.string(instance_id) + wire.string("consumer")
        + wire.array(list(protocols), lambda name: wire.string(name) + wire_bytes(metadata))
    )
    correlation_id = conn.send_request(API_JOIN_GROUP, 5, body)
    return read_join_group_v5(conn, correlation_id) if wait else correlation_id


def read_join_group_v5(conn, correlation_id, timeout=10.0) -> dict:
    r = conn.response(correlation_id, timeout=timeout)
    answer = {"throttle_time_ms": r.int32(), "error_code": r.int16(), "generation_id": r.int32(),
              "protocol_name": r.string(), "leader": r.string(), "member_id": r.string()}
    answer["members"] = sorted(r.array(lambda m: (m.string(), m.string(), m.bytes_())))
    r.done()
    return answer


def join_group_v9(conn, group, member_id, metadata=b"", instance_id=None) -> dict:
    """JoinGroup v9 (flexible, with SkipAssignment), protocol "range"."""
    def compact_bytes(data: bytes) -> bytes:
        return wire.uvarint(len(data) + 1) + data

    protocol = wire.compact_string("range") + compact_bytes(metadata) + wire.NO_TAGGED_FIELDS
    body = (
        wire.compact_string(group) + wire.int32(SESSION_TIMEOUT_MS) + wire.int32(10_000)
        + wire.compact_string(member_id) + wire.compact_string(instance_id) + wire.compact_string("consumer")
        + wire.uvarint(2) + protocol + wire.compact_string(None) + wire.NO_TAGGED_FIELDS
    )
    r = conn.response(conn.send_request(API_JOIN_GROUP, 9, body, flexible=True), flexible_header=True)

    def member(m):
        entry = (m.compact_string(), m.compact_string(), m._take(m.uvarint() - 1))
        m.tagged_fields()
        return entry

    answer = {"throttle_time_ms": r.int32(), "error_code": r.int16(), "generation_id": r.int32(),
              "protocol_type": r.compact_string(), "protocol_name": r.compact_string(), "leader": r.compact_string(),
              "skip_assignment": bool(r.int8()), "member_id": r.compact_string()}
    answer["members"] = sorted(r.compact_array(member) or [])
    r.tagged_fields()
    r.done()
    return answer


def sync_group_v3(conn, group, generation, member_id, assignments=(), instance_id=None, wait=True):
    body = (
        wire.string(group) + wire.int32(generation) + wire.string(member_id) + wire.string(instance_id)
        + wire.array(list(assignments), lambda a: wire.string(a[0]) + wire_bytes(a[1]))
    )
    correlation_id = conn.send_request(API_SYNC_GROUP, 3, body)
    return read_sync_group_v3(conn, correlation_id) if wait else correlation_id


def read_sync_group_v3(conn, correlation_id, timeout=10.0) -> tuple[int, bytes]:
    r = conn.response(correlation_id, timeout=timeout)
    r.int32()
    answer = (r.int16(), r.bytes_())
    r.done()
    return answer


def heartbeat_v3(conn, group, generation, member_id, instance_id=None) -> int:
    body = wire.string(group) + wire.int32(generation) + wire.string(member_id) + wire.string(instance_id)
    r = conn.response(conn.send_request(API_HEARTBEAT, 3, body))
    r.int32()
    code = r.int16()
    r.done()
    return code


def leave_group_v3(conn, group, members) -> tuple[int, list]:
    """`members`: (member_id, instance_id) pairs; (error, [(member, instance, error)])."""
    body = wire.string(group) + wire.array(list(members), lambda m: wire.string(m[0]) + wire.string(m[1]))
    r = conn.response(conn.send_request(API_LEAVE_GROUP, 3, body))
    r.int32()
    answer = (r.int16(), r.array(lambda m: (m.string(), m.string(), m.int16())))
    r.done()
    return answer


def offset_commit_v7(conn, group, generation, member_id, offsets, instance_id=None, wait=True):
    """`offsets`: {(topic, partition): (offset, metadata)}; {(topic, partition): error}."""
    by_topic = {}
    for (topic, partition), (offset, metadata) in offsets.items():
        by_topic.setdefault(topic, []).append((partition, offset, metadata))
    body = (
        wire.string(group) + wire.int32(generation) + wire.string(member_id) + wire.string(instance_id)
        + wire.array(list(by_topic.items()), lambda t: wire.string(t[0]) + wire.array(
            t[1], lambda p: wire.int32(p[0]) + wire.int64(p[1]) + wire.int32(-1) + wire.string(p[2])))
    )
    correlation_id = conn.send_request(API_OFFSET_COMMIT, 7, body)
    return read_offset_commit_v7(conn, correlation_id) if wait else correlation_id


def read_offset_commit_v7(conn, correlation_id, timeout=10.0) -> dict:
    r = conn.response(correlation_id, timeout=timeout)
    r.int32()
    topics = r.array(lambda t: (t.string(), t.array(lambda p: (p.int32(), p.int16()))))
    r.done()
    return {(topic, partition): code for topic, partitions in topics for partition, code in partitions}


def offset_fetch_v5(conn, group, partitions=None) -> tuple[int, dict]:
    """(error, {(topic, partition): (offset, metadata, error)}); all of the
    group's offsets when `partitions` is None."""
    by_topic = None
    if partitions is not None:
        by_topic = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        by_topic = list(by_topic.items())
    body = wire.string(group) + wire.array(
        by_topic, lambda t: wire.string(t[0]) + wire.array(t[1], wire.int32))
    r = conn.response(conn.send_request(API_OFFSET_FETCH, 5, body))
    r.int32()
    topics = r.array(lambda t: (t.string(), t.array(
        lambda p: (p.int32(), p.int64(), p.int32(), p.string(), p.int16()))))
    error = r.int16()
    r.done()
    return error, {(topic, partition): (offset, metadata, code)
                   for topic, partitions in topics for partition, offset, _, metadata, code in partitions}


def answered_within(conn, seconds: float) -> bool:
    """Whether any response bytes arrive on `conn` within `seconds`."""
    readable, _, _ = select.select([conn.sock], [], [], seconds)
    return bool(readable)


@pytest.mark.timeout(60)
def test_group_protocol_error_codes_by_hand(broker):
    """MEMBER_ID_REQUIRED, parked joins and syncs, REBALANCE_IN_PROGRESS,
    ILLEGAL_GENERATION and UNKNOWN_MEMBER_ID where Kafka answers them, and
    commits fenced by generation and membership."""
    topic = unique("by-hand")
    create_topic(make_admin(broker), topic, 2)
    group = unique("by-hand")
    with wire.Connection(broker) as first, wire.Connection(broker) as second:
        answer = join_group_v5(first, group, "", b"meta-1")
        assert answer["error_code"] == ERROR_MEMBER_ID_REQUIRED and answer["member_id"], answer
        m1 = answer["member_id"]
        answer = join_group_v5(first, group, m1, b"meta-1")
        assert (answer["error_code"], answer["generation_id"], answer["protocol_name"], answer["leader"],
                answer["member_id"], answer["members"]) == (0, 1, "range", m1, m1, [(m1, None, b"meta-1")])
        assert sync_group_v3(first, group, 1, m1, [(m1, b"assignment-1")]) == (0, b"assignment-1")
        assert heartbeat_v3(first, group, 1, m1) == 0
        assert heartbeat_v3(first, group, 2, m1) == ERROR_ILLEGAL_GENERATION
        assert heartbeat_v3(first, group, 1, "nobody") == ERROR_UNKNOWN_MEMBER_ID
        assert offset_commit_v7(first, group, 1, m1, {(topic, 0): (5, "first")}) == {(topic, 0): 0}
        assert offset_commit_v7(first, group, 0, m1, {(topic, 0): (6, "stale")}) == {
            (topic, 0): ERROR_ILLEGAL_GENERATION}
        # A commit from outside a group that has members.
        assert offset_commit_v7(first, group, -1, "", {(topic, 0): (7, "outsider")}) == {
            (topic, 0): ERROR_UNKNOWN_MEMBER_ID}

        # A second member: its join waits for the first to rejoin, which
        # learns of the rebalance from its heartbeat.
        m2 = join_group_v5(second, group, "", b"meta-2")["member_id"]
        parked_join = join_group_v5(second, group, m2, b"meta-2", wait=False)
        assert not answered_within(second, 0.5), "JoinGroup answered before every member rejoined"
        assert heartbeat_v3(first, group, 1, m1) == ERROR_REBALANCE_IN_PROGRESS
        leader = join_group_v5(first, group, m1, b"meta-1b")
        follower = read_join_group_v5(second, parked_join)
        assert (leader["error_code"], leader["generation_id"], leader["leader"]) == (0, 2, m1)
        assert leader["members"] == sorted([(m1, None, b"meta-1b"), (m2, None, b"meta-2")])
        assert (follower["error_code"], follower["generation_id"], follower["leader"], follower["members"]) == (
            0, 2, m1, [])
        # The follower's SyncGroup waits for the leader's assignment.
        parked_sync = sync_group_v3(second, group, 2, m2, wait=False)
        assert not answered_within(second, 0.5), "SyncGroup answered before the leader's assignment"
        assert sync_group_v3(first, group, 2, m1, [(m1, b"for-1"), (m2, b"for-2")]) == (0, b"for-1")
        assert read_sync_group_v3(second, parked_sync) == (0, b"for-2")

        assert offset_commit_v7(first, group, 1, m1, {(topic, 0): (8, "old generation")}) == {
            (topic, 0): ERROR_ILLEGAL_GENERATION}
        assert offset_commit_v7(second, group, 2, m2, {(topic, 1): (9, None)}) == {(topic, 1): 0}
        assert offset_fetch_v5(first, group, [(topic, 0), (topic, 1)]) == (
            0, {(topic, 0): (5, "first", 0), (topic, 1): (9, "", 0)})

        assert leave_group_v3(second, group, [(m2, None)]) == (0, [(m2, None, 0)])
        assert heartbeat_v3(second, group, 2, m2) == ERROR_UNKNOWN_MEMBER_ID
        assert heartbeat_v3(first, group, 2, m1) == ERROR_REBALANCE_IN_PROGRESS
        answer = join_group_v5(first, group, m1, b"meta-1c")
        assert (answer["error_code"], answer["generation_id"], answer["members"]) == (0, 3, [(m1, None, b"meta-1c")])
        assert sync_group_v3(first, group, 3, m1, [(m1, b"alone")]) == (0, b"alone")
        assert leave_group_v3(first, group, [(m1, None)]) == (0, [(m1, None, 0)])
        # Gone members' commits are refused; the Empty group takes outside commits.
        assert offset_commit_v7(first, group, 3, m1, {(topic, 0): (10, "departed")}) == {
            (topic, 0): ERROR_UNKNOWN_MEMBER_ID}
        assert offset_commit_v7(first, group, -1, "", {(topic, 0): (11, "admin")}) == {(topic, 0): 0}
        assert offset_fetch_v5(first, group) == (0, {(topic, 0): (11, "admin", 0), (topic, 1): (9, "", 0)})


@pytest.mark.timeout(60)
def test_static_rejoin_and_fencing_by_hand(broker):
    """KIP-345 as Kafka answers it: a static member rejoining with a new
    member id in a Stable group gets its old assignment at the same
    generation, is not made leader (the old leader id comes back, so it
    computes no assignment), and the replaced id is FENCED_INSTANCE_ID."""
    topic = unique("static-by-hand")
    create_topic(make_admin(broker), topic, 1)
    group = unique("static-by-hand")
    with wire.Connection(broker) as conn:
        answer = join_group_v5(conn, group, "", b"meta", instance_id="instance")
        assert answer["error_code"] == 0, "a static member needs no MEMBER_ID_REQUIRED round"
        old_id = answer["member_id"]
        assert (answer["generation_id"], answer["leader"], answer["members"]) == (1, old_id, [(old_id, "instance", b"meta")])
        assert sync_group_v3(conn, group, 1, old_id, [(old_id, b"kept")], instance_id="instance") == (0, b"kept")

        answer = join_group_v5(conn, group, "", b"meta", instance_id="instance")
        new_id = answer["member_id"]
        assert answer["error_code"] == 0 and new_id != old_id
        assert (answer["generation_id"], answer["leader"], answer["members"]) == (1, old_id, [])
        assert sync_group_v3(conn, group, 1, new_id, instance_id="instance") == (0, b"kept")
        assert heartbeat_v3(conn, group, 1, new_id, "instance") == 0
        assert heartbeat_v3(conn, group, 1, old_id, "instance") == ERROR_FENCED_INSTANCE_ID
        assert offset_commit_v7(conn, group, 1, old_id, {(topic, 0): (1, None)}, instance_id="instance") == {
            (topic, 0): ERROR_FENCED_INSTANCE_ID}
        assert offset_commit_v7(conn, group, 1, new_id, {(topic, 0): (2, None)}, instance_id="instance") == {
            (topic, 0): 0}

        # From v9 (KIP-814) the rejoined leader is told it leads, with the
        # members, and to skip the assignment.
        answer = join_group_v9(conn, group, "", b"meta", instance_id="instance")
        newest_id = answer["member_id"]
        assert (answer["error_code"], answer["generation_id"], answer["protocol_type"], answer["protocol_name"]) == (
            0, 1, "consumer", "range")
        assert (answer["leader"], answer["skip_assignment"], answer["members"]) == (
            newest_id, True, [(newest_id, "instance", b"meta")])
        assert sync_group_v3(conn, group, 1, newest_id, instance_id="instance") == (0, b"kept")
        assert heartbeat_v3(conn, group, 1, new_id, "instance") == ERROR_FENCED_INSTANCE_ID


@pytest.mark.timeout(120)
def test_kill_9_during_pipelined_commits_keeps_every_acknowledged_one(broker):
    """Commits stream in, pipelined, for two groups; the broker is killed
    with some in flight. After the restart each group's offsets are those of
    one whole commit (one OffsetCommit's partitions are written together)
    no older than the last one answered. A garbage tail on the offsets log
    (a torn write) is cut on the next start, losing nothing before it."""
    topic = unique("commit-crash")
    create_topic(make_admin(broker), topic, 4)
    groups = [unique("commit-crash-a"), unique("commit-crash-b")]
    in_flight_max = 64
    answered_target = 2000
    sent: dict[int, tuple[str, int]] = {}
    last_sent = {group: 0 for group in groups}
    last_answered = {group: 0 for group in groups}
    number = 0

    def commit_body(group, n):
        return (wire.string(group) + wire.int32(-1) + wire.string("") + wire.string(None)
                + wire.array([topic], lambda name: wire.string(name) + wire.array(
                    list(range(4)), lambda p: wire.int32(p) + wire.int64(n * 10 + p) + wire.int32(-1)
                    + wire.string(f"commit {n}"))))

    conn = wire.Connection(broker)
    try:
        def send_next():
            nonlocal number
            number += 1
            group = groups[number % 2]
            sent[conn.send_request(API_OFFSET_COMMIT, 7, commit_body(group, number))] = (group, number)
            last_sent[group] = number

        for _ in range(in_flight_max):
            send_next()
        answered = 0
        started = time.monotonic()
        while answered < answered_target:
            correlation_id = min(sent)
            group, n = sent.pop(correlation_id)
            r = conn.response(correlation_id, timeout=20)
            r.int32()
            codes = [code for _, partitions in r.array(lambda t: (t.string(), t.array(lambda p: (p.int32(), p.int16()))))
                     for _, code in partitions]
            assert codes == [0, 0, 0, 0], f"commit {n} answered {codes}"
            last_answered[group] = n
            answered += 1
            send_next()
        commits_per_s = answered / (time.monotonic() - started)
        assert broker.kill() == -signal.SIGKILL
    finally:
        conn.close()
    broker.start()

    def offsets_after_restart():
        state = {}
        with wire.Connection(broker) as check:
            for group in groups:
                error, offsets = offset_fetch_v5(check, group)
                assert error == 0
                state[group] = offsets
        return state

    state = offsets_after_restart()
    for group in groups:
        offsets = state[group]
        assert sorted(offsets) == [(topic, p) for p in range(4)], offsets
        n = offsets[(topic, 0)][0] // 10
        assert offsets == {(topic, p): (n * 10 + p, f"commit {n}", 0) for p in range(4)}, (
            f"{group}: not one whole commit: {offsets}")
        assert last_answered[group] <= n <= last_sent[group], (
            f"{group}: commit {n} after the restart; answered up to {last_answered[group]}, "
            f"sent up to {last_sent[group]} ({commits_per_s:.0f} commits/s)")

    # A torn write at the end of the offsets log.
    broker.stop(signal.SIGKILL)
    segments = sorted((broker.data_dir / "__consumer_offsets").glob("*.log"))
    assert segments, f"no offsets log segments under {broker.data_dir / '__consumer_offsets'}"
    with open(segments[-1], "ab") as segment:
        segment.write(bytes(range(256)) * 3)
    broker.start()
    assert offsets_after_restart() == state
    with wire.Connection(broker) as conn:
        assert offset_commit_v7(conn, groups[0], -1, "", {(topic, 0): (123_456, "after the tear")}) == {(topic, 0): 0}
    broker.stop(signal.SIGTERM)
    broker.start()
    after = offsets_after_restart()
    assert after[groups[0]][(topic, 0)] == (123_456, "after the tear", 0)
    assert after[groups[1]] == state[groups[1]]


def offsets_log_bytes(broker) -> int:
    return sum(path.stat().st_size for path in (broker.data_dir / "__consumer_offsets").glob("*.log"))


@pytest.mark.timeout(120)
def test_offsets_log_compaction_keeps_live_offsets_only(weir_broker, members):
    """Over 16 MiB of commits (4 KiB of metadata each) make the broker
    rewrite the live offsets and drop the rest of its offsets log: a group
    committed once at the very start, the last of many commits, a deleted
    group's absence and a live member's membership all survive that, a
    kill -9 and a restart."""
    broker = weir_broker(args=["--log-retention-check-interval-ms", "500"])
    topic = unique("compaction")
    partitions = 64
    create_topic(make_admin(broker), topic, partitions)
    # A live member whose group's membership must survive the compaction.
    read_topic = unique("compaction-read")
    create_topic(make_admin(broker), read_topic, 2)
    live = members(broker, unique("live"), [read_topic], strict=False)
    batch = produce_numbered(broker, read_topic, 2, 10, "before")
    pump_until([live], lambda: len(live.records) >= 20, 30, "20 messages")
    rebalances = list(live.rebalances)
    steady, churn, deleted = unique("steady"), unique("churn"), unique("deleted")
    padding = "p" * 4000
    with wire.Connection(broker) as conn:
        assert offset_commit_v7(conn, steady, -1, "", {(topic, 3): (33, "steady")}) == {(topic, 3): 0}
        assert offset_commit_v7(conn, deleted, -1, "", {(topic, 4): (44, "deleted")}) == {(topic, 4): 0}
        pending = []
        for n in range(1, 81):
            offsets = {(topic, p): (n * 100 + p, f"{n} {padding}") for p in range(partitions)}
            pending.append(offset_commit_v7(conn, churn, -1, "", offsets, wait=False))
            if len(pending) >= 8 or n == 80:
                for correlation_id in pending:
                    assert set(read_offset_commit_v7(conn, correlation_id).values()) == {0}
                pending = []
                live.pump()
    admin = make_admin(broker)
    admin.delete_consumer_groups([deleted], request_timeout=10)[deleted].result(ADMIN_TIMEOUT_S)
    # Over 20 MiB were answered as durable, so a log under 12 MiB was
    # compacted, possibly while the commits came in (what came after stays
    # until the log reaches 16 MiB again).
    deadline = time.monotonic() + 20
    while offsets_log_bytes(broker) >= 12 << 20:
        assert time.monotonic() < deadline, f"offsets log still {offsets_log_bytes(broker)} bytes after 20 s"
        pump_for([live], 0.5)

    churn_expected = {(topic, p): (80 * 100 + p, f"80 {padding}", 0) for p in range(partitions)}

    def check():
        with wire.Connection(broker) as conn:
            assert offset_fetch_v5(conn, steady) == (0, {(topic, 3): (33, "steady", 0)})
            assert offset_fetch_v5(conn, churn) == (0, churn_expected)
            assert offset_fetch_v5(conn, deleted) == (0, {})
        assert deleted not in listed_groups(make_admin(broker))

    check()
    broker.kill()
    broker.start()
    check()
    more = produce_numbered(broker, read_topic, 2, 10, "after")
    pump_until([live], lambda: len(live.records) >= 40, 30, "40 messages")
    pump_for([live], 1.0)
    assert_exactly_once(live.records, {**batch, **more}, "live member across compaction and kill")
    assert live.rebalances == rebalances, "the live member was rebalanced"
    live.close()
    with wire.Connection(broker) as conn:
        assert offset_commit_v7(conn, steady, -1, "", {(topic, 3): (34, "after")}) == {(topic, 3): 0}
    broker.stop(signal.SIGTERM)
    broker.start()
    with wire.Connection(broker) as conn:
        assert offset_fetch_v5(conn, steady) == (0, {(topic, 3): (34, "after", 0)})
        assert offset_fetch_v5(conn, churn) == (0, churn_expected)


# --- 10. the initial rebalance delay --------------------------------------------------------
#
# Every other test's broker runs with group.initial.rebalance.delay.ms 0
# (conftest.py). These check what the delay is for: consumers that start
# together form one generation instead of one each.

INITIAL_DELAY_MS = 2000


def start_together(broker, members, group: str, topic: str) -> list:
    return [members(broker, group, [topic], **{"client.id": f"member-{i}"}) for i in range(3)]


def heartbeat_codes(broker, group: str, generation: int, group_members) -> list:
    """Each member's Heartbeat error code for `generation`, sent by hand
    with its member id: 0 only in the group's current generation."""
    with wire.Connection(broker) as conn:
        return [heartbeat_v3(conn, group, generation, m.consumer.memberid()) for m in group_members]


@pytest.mark.timeout(90)
def test_three_consumers_starting_together_form_one_generation(weir_broker, members):
    """With the delay, the first member's JoinGroup waits for the others:
    one generation (1) with all three, each assigned once and never revoked,
    no sooner than the delay after the consumers started."""
    broker = weir_broker(env={"WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS": str(INITIAL_DELAY_MS)})
    admin = make_admin(broker)
    resource = ConfigResource(ResourceType.BROKER, str(broker_node_id(admin)))
    configs = admin.describe_configs([resource])[resource].result(ADMIN_TIMEOUT_S)
    assert configs["group.initial.rebalance.delay.ms"].value == str(INITIAL_DELAY_MS)
    topic = unique("initial-delay")
    create_topic(admin, topic, 6)
    group = unique("together")
    started = time.monotonic()
    trio = start_together(broker, members, group, topic)
    pump_until(trio, lambda: balanced(trio, 6, 2), 40, "three members with two partitions each")
    # The broker's delay starts at the first JoinGroup, which came after `started`.
    waited = time.monotonic() - started
    assert waited >= INITIAL_DELAY_MS / 1000, f"assigned {waited:.2f}s after the start"
    pump_for(trio, 1.0)
    for member in trio:
        assert member.rebalances == [("assign", member.partitions())], member.rebalances
    assert heartbeat_codes(broker, group, 1, trio) == [0, 0, 0]


@pytest.mark.timeout(90)
def test_without_the_initial_delay_the_first_member_forms_a_generation_alone(broker, members):
    """With the delay at 0 (the fixture's), the first JoinGroup completes a
    generation at once with that member alone, so the three end up in a
    later one. How many generations it takes depends on timing: not checked."""
    topic = unique("no-initial-delay")
    create_topic(make_admin(broker), topic, 6)
    group = unique("one-by-one")
    trio = start_together(broker, members, group, topic)
    pump_until(trio, lambda: balanced(trio, 6, 2), 40, "three members with two partitions each")
    assert heartbeat_codes(broker, group, 1, trio) == [ERROR_ILLEGAL_GENERATION] * 3
