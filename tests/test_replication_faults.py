"""Replicated partitions under real faults: three `weir` nodes, each in its
own network namespace, one topic of three partitions with three replicas
and `min.insync.replicas=2`, written by an idempotent `acks=all` producer
that records every write (the fault harness's `ProduceRecorder`) and read
during the faults by a `TailReader`. After each fault scenario the topic is
read back and the history checked: no acknowledged record lost, changed,
duplicated or reordered, nothing a consumer saw taken back — and the
producer never went fatal (a broker that forgot its sequence numbers).

The faults hit the leader of partition 0: `kill -9` ten times in a row, a
SIGSTOP longer than the fencing timeout (the zombie must acknowledge
nothing once deposed), an nftables cut from the other nodes while its
clients still reach it, a rolling restart of every node, and a kill under
a consumer group that must resume at its committed offsets. After each
fault, partition 0 must take acknowledged writes again within a bound, and
the cut-off or restarted node must come back into every in-sync set. One
more fault hits a follower instead: its disk (a small loop-mounted file
system) fills up, it must leave every in-sync set while the leaders keep
acknowledging, and catch up once the space returns.

This is the data half of issue 12's fault scenarios; the controller half is
tests/test_cluster_faults.py, the same replication on loopback
tests/test_replication.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from faults.checker import CheckResult, assert_valid, check
from faults.group_check import check_group
from faults.group_member import GroupMember, read_events
from faults.history import OK, History
from faults.kafka_client import ProduceRecorder, TailReader, kafka_config, read_back, reading_consumer
from faults.partitions import Partitions
from faults.txn_check import COMMITTED, check_transactions
from faults.txn_process import TransactionalProducerProcess
from http_helpers import Http
from test_cluster_faults import agreed, all_registered, start_cluster, status, wait_until

TOPIC = "orders"
PARTITIONS = 3
# The node fencing timeout is ~3 s of missed heartbeats; a fault lasting
# this long outlives it, so the partition gets a new leader meanwhile.
FAULT_S = 8.0
# After a fault ends (or a leader dies), partition 0 must take
# acknowledged writes again within this long.
RECOVERY_S = 15.0
# A restarted node must be back in every in-sync set within this long.
REJOIN_S = 45.0
API_TIMEOUT_S = 3.0
# Commits a group member makes before each step of the group scenario.
COMMITS_PER_STEP = 5
# The broker's default replica.lag.time.max.ms: a follower that has not
# caught up for this long leaves the in-sync set.
REPLICA_LAG_TIME_MAX_S = 10.0
# On top of the lag time, until the leaders' in-sync set changes are
# committed (they propose every 0.5 s).
ISR_SHRINK_MARGIN_S = 5.0
# A controller leader that cannot write its raft log stops answering; the
# proposals forwarded to it meanwhile fail after this long (the
# controller's PROPOSE_TIMEOUT), then go to its successor.
PROPOSE_TIMEOUT_S = 10.0
# Each node's data directory is on a file system of this size: its
# partition logs, raft log and metadata snapshot fit many times over, far
# from the disk alarm's default 50 MiB, and filling one takes a moment.
NODE_DISK_BYTES = 128 << 20
# How long the disk stays full once the in-sync sets have shrunk, the
# leaders acknowledging with two replicas meanwhile.
FULL_AFTER_SHRINK_S = 5.0
# Topics created while a node's disk is full: each a raft entry of a few
# hundred bytes, together more than the last 1 KiB block of its raft log
# can still take, so that its raft log must grow on the full disk.
TOPICS_CREATED_WHILE_FULL = 8


def partitions_of(node, topic: str = TOPIC) -> list[dict]:
    """The partitions as `node` has them (empty while it has no such
    topic); an OSError while it does not answer."""
    answer = Http(node.http_url).call("GET", f"/api/topics/{topic}", timeout=API_TIMEOUT_S)
    return answer.json()["partitions"] if answer.status == 200 else []


def settled(nodes: dict) -> list[dict] | None:
    """The partitions when every node in `nodes` agrees on each one's
    leader and epoch, each is led by its preferred replica and has all
    three replicas in sync; else None."""
    views = [partitions_of(node) for node in nodes.values()]
    first = views[0]
    if len(first) != PARTITIONS:
        return None
    for view in views:
        for mine, theirs in zip(first, view):
            if (mine["leader"], mine["leader_epoch"]) != (theirs["leader"], theirs["leader_epoch"]):
                return None
            if sorted(theirs["isr"]) != [1, 2, 3] or theirs["leader"] != theirs["replicas"][0]:
                return None
    return first


def wait_settled(nodes: dict, what: str, timeout: float = REJOIN_S) -> list[dict]:
    """`settled(nodes)`, waited for; on a timeout the error shows how each
    node sees the partitions."""
    try:
        return wait_until(what, lambda: settled(nodes), timeout=timeout)
    except AssertionError as error:
        views = {}
        for node_id, node in nodes.items():
            try:
                views[node_id] = [
                    {key: p[key] for key in ("partition", "leader", "leader_epoch", "isr", "high_watermark",
                                             "log_end_offset") if key in p}
                    for p in partitions_of(node)
                ]
            except OSError as failure:
                views[node_id] = repr(failure)
        raise AssertionError(f"{error}\npartitions as each node sees them: {views}") from None


def caught_up(nodes: dict, node_id: int, high_watermarks: list[int]) -> bool:
    """Whether node `node_id` holds every partition up to the given high
    watermarks (its leaders' when it came back), in sync again."""
    mine = partitions_of(nodes[node_id])
    return len(mine) == PARTITIONS and all(
        p["log_end_offset"] >= watermark and node_id in p["isr"] for p, watermark in zip(mine, high_watermarks)
    )


def leaders_high_watermarks(nodes: dict, exclude: int) -> list[int]:
    """Each partition's high watermark as its leader reports it, read
    through the nodes other than `exclude`."""
    survivor = next(node for node_id, node in nodes.items() if node_id != exclude)
    watermarks = []
    for p in partitions_of(survivor):
        watermarks.append(partitions_of(nodes[p["leader"]])[p["partition"]]["high_watermark"])
    return watermarks


def moved_away(nodes: dict, partition: int, old: dict) -> dict | None:
    """Partition `partition` as the nodes in `nodes` all have it, once they
    agree that it is led by another node than `old`'s leader, in a higher
    leader epoch; else None."""
    views = [partitions_of(node)[partition] for node in nodes.values()]
    first = views[0]
    agree = all((view["leader"], view["leader_epoch"]) == (first["leader"], first["leader_epoch"]) for view in views)
    if agree and first["leader"] not in (None, old["leader"]) and first["leader_epoch"] > old["leader_epoch"]:
        return first
    return None


def same_logs(nodes: dict) -> list[tuple] | None:
    """Each partition's (log end, high watermark) when every replica has the
    same ones, and the high watermark is the log end: the followers copied
    everything and the leader committed it."""
    ends = {tuple((p["log_end_offset"], p["high_watermark"]) for p in partitions_of(node)) for node in nodes.values()}
    if len(ends) != 1:
        return None
    (only,) = ends
    return only if all(end == watermark for end, watermark in only) else None


def replicated_cluster(fault_network, fault_node):
    """Three nodes in namespaces with the topic created and settled: each
    partition led by its preferred replica, all in sync."""
    network, names, nodes = start_cluster(fault_network, fault_node)
    wait_until("one controller leader, all registered", lambda: agreed(nodes, all_registered))
    placed = create_settled_topic(nodes)
    assert sorted(p["leader"] for p in placed) == [1, 2, 3], "leaders spread over the nodes"
    return network, names, nodes


def create_settled_topic(nodes: dict, assignment: list[list[int]] | None = None) -> list[dict]:
    """Creates the topic, three replicas per partition and
    `min.insync.replicas=2`, placed by the broker or as `assignment` says
    (each partition's replicas, the preferred leader first); returns its
    partitions once settled on every node."""
    admin = AdminClient(kafka_config(bootstrap_of(nodes)))
    config = {"min.insync.replicas": "2"}
    if assignment is None:
        topic = NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3, config=config)
    else:
        # (confluent-kafka wants the partition count with an assignment too)
        topic = NewTopic(TOPIC, num_partitions=len(assignment), replica_assignment=assignment, config=config)
    admin.create_topics([topic])[TOPIC].result(30)
    placed = wait_settled(nodes, f"{TOPIC} settled on every node", timeout=30)
    if assignment is not None:
        assert [p["replicas"] for p in placed] == assignment, placed
    return placed


def bootstrap_of(nodes: dict) -> str:
    return ",".join(node.bootstrap for node in nodes.values())


class Workload:
    """The recorded producer and the tailing reader of one scenario, and
    the final check of what they saw against the read-back."""

    def __init__(self, nodes: dict, history_path: Path, producer_config: dict | None = None):
        self.nodes = nodes
        self.history = History()
        self.history_path = history_path
        self.recorder = ProduceRecorder(bootstrap_of(nodes), TOPIC, PARTITIONS, self.history, config=producer_config)
        self.tail = TailReader(bootstrap_of(nodes), TOPIC, PARTITIONS)
        self.stopped = False

    def __enter__(self) -> "Workload":
        self.recorder.start()
        self.tail.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.stop()
            return
        # The scenario failed: still check what was written, for the
        # report, without hiding the failure.
        self.stop(flush_timeout_s=10)
        try:
            print(f"history checked after the failure:\n{self.check_history().report()}")
        except Exception as error:  # noqa: BLE001 - the first failure is the one to report
            print(f"history not checked after the failure: {error!r}")

    def stop(self, flush_timeout_s: float = 40.0) -> None:
        """Stop writing and reading. The producer is closed too: the next
        test's network may get the same addresses, and a producer left to
        reconnect there would auto-create the topic before the test does."""
        if not self.stopped:
            self.stopped = True
            try:
                self.recorder.stop(flush_timeout_s)
                self.recorder.producer.close()
            finally:
                self.tail.stop()
                self.history.save(self.history_path)

    def acknowledged(self, partition: int) -> int:
        return sum(1 for write in list(self.history.writes) if write.partition == partition and write.outcome == OK)

    def mark(self, partition: int) -> tuple[float, int]:
        """Now, and how many writes to `partition` are acknowledged so far."""
        return time.monotonic(), self.acknowledged(partition)

    def wait_for_acks(self, partition: int, count: int, timeout_s: float, what: str, since=None) -> float:
        """Block until `count` more writes to `partition` were acknowledged
        than at `since` (a `mark()`; now by default); returns how long that
        took since then."""
        start, acknowledged = since or self.mark(partition)
        target = acknowledged + count
        while self.acknowledged(partition) < target:
            elapsed = time.monotonic() - start
            if elapsed > timeout_s:
                raise AssertionError(
                    f"{what}: fewer than {count} acknowledgements on partition {partition} within {timeout_s} s; "
                    f"history {self.history.counts()}, fatal errors {self.recorder.fatal_errors}"
                )
            time.sleep(0.05)
        return time.monotonic() - start

    def check_history(self) -> CheckResult:
        """Read everything back and check it against the history."""
        reads = read_back(bootstrap_of(self.nodes), TOPIC, PARTITIONS)
        return check(self.history.writes, reads, self.tail.observed)

    def check(self) -> None:
        """Stop, read everything back and check the history; then every
        replica must hold the same log."""
        self.stop()
        assert self.recorder.fatal_errors == []
        result = self.check_history()
        print(result.report())
        storage_errors = {node_id: storage_errors_answered(node) for node_id, node in self.nodes.items()}
        assert_valid(result, self.history_path)
        # Known and safe (a spurious failure, never a false ack): a deposed
        # leader whose unacknowledged tail was cut may still answer this
        # instead of NOT_LEADER_OR_FOLLOWER. Reported until that is fixed.
        for node_id, errors in storage_errors.items():
            if errors:
                print(f"node {node_id} answered KAFKA_STORAGE_ERROR {len(errors)} times, first: {errors[0]}")
        assert result.counts["ok"] > 0
        wait_until("every replica holds the same log, all of it committed", lambda: same_logs(self.nodes))


def storage_errors_answered(node) -> list[str]:
    """The KAFKA_STORAGE_ERROR answers in `node`'s log. No leader's disk
    fails in these tests (the one that fills is a follower's), so each one
    is a bug."""
    return [line for line in node.log_text().splitlines() if "Kafka error answered code=56" in line]


def survivors_of(nodes: dict, victim: int) -> dict:
    return {node_id: node for node_id, node in nodes.items() if node_id != victim}


@pytest.mark.timeout(240)
def test_ten_kills_of_a_partition_leader_lose_no_acknowledged_write(fault_network, fault_node, tmp_path):
    """kill -9 of partition 0's leader, ten times: each time a survivor
    leads in a higher epoch, without the dead node in its in-sync set, and
    acknowledges writes within the bound; the node restarts and is back in
    every in-sync set (and leading again, as preferred replica) before the
    next kill."""
    _, _, nodes = replicated_cluster(fault_network, fault_node)
    with Workload(nodes, tmp_path / "history.jsonl") as workload:
        workload.wait_for_acks(0, 100, timeout_s=30, what="before any fault")
        for round_number in range(10):
            before = settled(nodes)[0]
            victim = before["leader"]
            killed = workload.mark(0)
            assert nodes[victim].kill() == -9
            after = wait_until(
                f"round {round_number}: partition 0 led by a survivor",
                lambda: moved_away(survivors_of(nodes, victim), 0, before),
                timeout=RECOVERY_S,
            )
            assert victim not in after["isr"], after
            recovery_s = workload.wait_for_acks(
                0, 20, timeout_s=RECOVERY_S, what=f"round {round_number}: after killing node {victim}", since=killed
            )
            print(f"round {round_number}: killed node {victim}, epoch {before['leader_epoch']} -> "
                  f"{after['leader_epoch']} on node {after['leader']}, acks again after {recovery_s:.1f} s")
            nodes[victim].start()
            wait_settled(nodes, f"round {round_number}: node {victim} back in every in-sync set, leaders preferred")
        workload.wait_for_acks(0, 50, timeout_s=RECOVERY_S, what="after the last round")
        workload.check()


@pytest.mark.timeout(180)
def test_a_paused_leader_is_deposed_and_acknowledges_nothing_after(fault_network, fault_node, tmp_path):
    """SIGSTOP outlasting the fencing timeout: the others elect a new
    leader in a higher epoch meanwhile. When the zombie resumes it still
    believes it leads and has produce requests queued in its sockets; it
    must acknowledge none of them (a lost acknowledgement, for the
    checker), and step down."""
    _, _, nodes = replicated_cluster(fault_network, fault_node)
    with Workload(nodes, tmp_path / "history.jsonl") as workload:
        workload.wait_for_acks(0, 100, timeout_s=30, what="before the pause")
        before = settled(nodes)[0]
        victim = before["leader"]
        others = [p for p in range(PARTITIONS) if p != 0]
        paused_at = time.monotonic()
        marks = {p: workload.mark(p) for p in others}
        nodes[victim].pause()
        try:
            after = wait_until(
                "partition 0 led by another node in a higher epoch while its leader is paused",
                lambda: moved_away(survivors_of(nodes, victim), 0, before),
                timeout=FAULT_S,
            )
            assert victim not in after["isr"], after
            for p in others:
                workload.wait_for_acks(p, 20, timeout_s=FAULT_S, what="partitions led elsewhere, during the pause",
                                       since=marks[p])
            time.sleep(max(0.0, paused_at + FAULT_S - time.monotonic()))
        finally:
            nodes[victim].resume()
        recovery_s = workload.wait_for_acks(0, 20, timeout_s=RECOVERY_S, what="after the resume")
        print(f"paused node {victim}: epoch {before['leader_epoch']} -> {after['leader_epoch']} on node "
              f"{after['leader']}; acks on partition 0 {recovery_s:.1f} s after the resume")
        wait_settled(nodes, "the resumed node back in every in-sync set, leaders preferred")
        workload.wait_for_acks(0, 50, timeout_s=RECOVERY_S, what="after the resumed node rejoined")
        workload.check()


@pytest.mark.timeout(180)
def test_a_leader_cut_off_from_its_peers_but_not_its_clients_acknowledges_nothing(
    fault_network, fault_node, tmp_path
):
    """nftables cuts the leader of partition 0 from both other nodes while
    the clients still reach it, for longer than `replica.lag.time.max.ms`
    (10 s): its followers stop fetching, so its high watermark cannot move,
    and the in-sync set it then wants (itself alone) cannot commit without
    the controller. The majority elects another leader meanwhile. After
    the heal the old leader truncates its unacknowledged tail and follows."""
    network, names, nodes = replicated_cluster(fault_network, fault_node)
    cut_s = 12.0
    cuts = Partitions(network)
    with Workload(nodes, tmp_path / "history.jsonl") as workload:
        workload.wait_for_acks(0, 100, timeout_s=30, what="before the cut")
        before = settled(nodes)[0]
        victim = before["leader"]
        cut_at = time.monotonic()
        cuts.isolate(names[victim])
        try:
            after = wait_until(
                "partition 0 led by another node in a higher epoch on the majority side",
                lambda: moved_away(survivors_of(nodes, victim), 0, before),
                timeout=cut_s,
            )
            assert victim not in after["isr"], after
            time.sleep(max(0.0, cut_at + cut_s - time.monotonic()))
        finally:
            cuts.heal_all()
        recovery_s = workload.wait_for_acks(0, 20, timeout_s=RECOVERY_S, what="after the heal")
        print(f"cut off node {victim}: epoch {before['leader_epoch']} -> {after['leader_epoch']} on node "
              f"{after['leader']}; acks on partition 0 {recovery_s:.1f} s after the heal")
        wait_settled(nodes, "the healed node back in every in-sync set, leaders preferred")
        workload.wait_for_acks(0, 50, timeout_s=RECOVERY_S, what="after the healed node rejoined")
        workload.check()


@pytest.mark.timeout(180)
def test_a_rolling_restart_under_load_loses_no_acknowledged_write(fault_network, fault_node, tmp_path):
    """Each node in turn: SIGTERM (a clean exit), start again, and wait
    until every partition is fully in sync and led by its preferred
    replica before the next; every partition keeps taking writes."""
    _, _, nodes = replicated_cluster(fault_network, fault_node)
    with Workload(nodes, tmp_path / "history.jsonl") as workload:
        workload.wait_for_acks(0, 100, timeout_s=30, what="before the restarts")
        for node_id, node in nodes.items():
            marks = {p: workload.mark(p) for p in range(PARTITIONS)}
            assert node.stop() == 0, f"node {node_id} did not exit cleanly on SIGTERM"
            node.start()
            watermarks = leaders_high_watermarks(nodes, exclude=node_id)
            wait_until(f"node {node_id} caught up to {watermarks}", lambda: caught_up(nodes, node_id, watermarks),
                       timeout=REJOIN_S)
            for p in range(PARTITIONS):
                recovery_s = workload.wait_for_acks(
                    p, 20, timeout_s=RECOVERY_S, what=f"restart of node {node_id}", since=marks[p]
                )
                print(f"restart of node {node_id}: partition {p} acknowledged again within {recovery_s:.1f} s")
            wait_settled(nodes, f"node {node_id} back in every in-sync set, leaders preferred")
            for p in range(PARTITIONS):
                workload.wait_for_acks(p, 100, timeout_s=RECOVERY_S, what=f"load after node {node_id} rejoined")
        workload.wait_for_acks(0, 50, timeout_s=RECOVERY_S, what="after the last restart")
        workload.check()


def wait_out_of_every_isr(nodes: dict, node_id: int, bound_s: float, timeout_s: float) -> dict[int, float]:
    """Waits until the nodes other than `node_id` (which leads nothing)
    all see it in no in-sync set, and returns for each partition how long
    that took after the node fell behind there: since its log end last
    was its leader's. (A partition without new writes keeps the node in
    sync however full its disk; the producer's requests to one leader wait
    behind each other, so a partition can stay without writes while
    another one waits for its acknowledgements.) Fails when that took
    longer than `bound_s` for a partition, or all of it `timeout_s`."""
    others = survivors_of(nodes, node_id)
    behind_since: dict[int, float] = {}
    left_after: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(left_after) < PARTITIONS:
        if time.monotonic() > deadline:
            raise AssertionError(f"node {node_id} still in an in-sync set {timeout_s} s after its disk filled: "
                                 f"left {left_after}, behind since {behind_since}")
        now = time.monotonic()
        try:
            mine = partitions_of(nodes[node_id])
            views = [partitions_of(node) for node in others.values()]
        except OSError:
            time.sleep(0.25)
            continue
        for p in set(range(PARTITIONS)) - set(left_after):
            leader_end = max(view[p]["log_end_offset"] for view in views)
            if leader_end <= mine[p]["log_end_offset"]:
                behind_since.pop(p, None)
                continue
            behind_since.setdefault(p, now)
            if all(node_id not in view[p]["isr"] for view in views):
                left_after[p] = now - behind_since[p]
        time.sleep(0.25)
    slow = {p: round(after, 1) for p, after in left_after.items() if after > bound_s}
    assert not slow, f"node {node_id} left these in-sync sets later than {bound_s} s after it fell behind: {slow}"
    return left_after


def create_topics_meanwhile(nodes: dict, names: list[str], replica: int, timeout_s: float) -> None:
    """Creates one-partition topics kept by node `replica` alone, one at a
    time, through the nodes in `nodes`. A controller leader whose raft
    waits for disk space answers a proposal only when it times out: then
    the topic is asked for again, by a new client that learns the new
    controller (a topic that exists by then was created by the first try)."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            admin = AdminClient(kafka_config(bootstrap_of(nodes)))
            topic = NewTopic(name, num_partitions=1, replica_assignment=[[replica]])
            future = admin.create_topics([topic], request_timeout=PROPOSE_TIMEOUT_S + 5)[name]
            try:
                future.result()
                break
            except KafkaException as error:
                if error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {name} not created within {timeout_s} s: {error}") from error
            time.sleep(0.5)


def metadata_topics(node) -> set[str]:
    """The topics in the metadata as `node`'s controller applied it."""
    return {p["topic"] for p in status(node)["partitions"]}


def applied_everywhere(nodes: dict, index: int) -> bool:
    """Whether every node's controller has applied the metadata up to
    `index` (a node whose raft log stopped would stay behind)."""
    return all(status(node)["applied_index"] >= index for node in nodes.values())


def following_only(victim: int) -> list[list[int]]:
    """Replicas for the topic's partitions that make node `victim` follow
    every partition and lead none, the others leading: the fault is then a
    follower's alone, and every partition keeps a leader that can write."""
    first, second = sorted({1, 2, 3} - {victim})
    return [[first, victim, second], [second, first, victim], [first, second, victim]]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("controller_role", ["follower", "leader"])
def test_a_follower_with_a_full_disk_leaves_the_isr_and_catches_up_when_space_returns(
    fault_network, fault_node, loop_disk, tmp_path, controller_role
):
    """Every node's data directory (its partition logs and its raft log) is
    on a small file system of its own. One node follows every partition
    and leads none; it is a controller follower, or the controller leader.
    A filler file fills its disk while the producer writes: it cannot
    append what it fetches, so each leader drops it from the in-sync set
    within `replica.lag.time.max` (10 s) plus a margin of its falling
    behind there — when it is the controller leader, plus the proposal
    timeout: its raft waits for space, and the proposals for a successor.
    The leaders then acknowledge with the two replicas left
    (`min.insync.replicas=2`), and no partition changes leader (no healthy
    node is fenced). Topics created meanwhile make its raft log grow on the
    full disk. The node does not die: when the filler is deleted it heals
    without a restart, copies what it missed, is back in every in-sync
    set, and its controller applies the metadata committed meanwhile (the
    topics too). Nothing acknowledged is lost, and every replica ends with
    the same log."""
    disks = {node_id: loop_disk(f"n{node_id}-disk", NODE_DISK_BYTES) for node_id in (1, 2, 3)}
    _, _, nodes = start_cluster(
        fault_network, fault_node, data_dirs={node_id: disk.mount / "data" for node_id, disk in disks.items()}
    )
    controller = wait_until("one controller leader, all registered",
                            lambda: agreed(nodes, all_registered))["controller_leader"]
    victim = controller if controller_role == "leader" else min(set(nodes) - {controller})
    before = create_settled_topic(nodes, following_only(victim))
    created = [f"created-while-full-{index}" for index in range(TOPICS_CREATED_WHILE_FULL)]
    # A controller leader that cannot write is replaced; proposals to it
    # wait out their timeout first.
    shrink_s = REPLICA_LAG_TIME_MAX_S + ISR_SHRINK_MARGIN_S + (PROPOSE_TIMEOUT_S if controller_role == "leader" else 0)
    with Workload(nodes, tmp_path / "history.jsonl") as workload:
        for p in range(PARTITIONS):
            workload.wait_for_acks(p, 100, timeout_s=30, what="before the disk fills")
        leading = agreed(nodes, all_registered)
        leads = leading is not None and leading["controller_leader"] == victim
        assert leads == (controller_role == "leader"), f"node {victim} is no controller {controller_role}: {leading}"
        filled_at = time.monotonic()
        filler_bytes = disks[victim].fill()
        try:
            print(f"filled node {victim}'s disk (controller {controller_role}) with {filler_bytes >> 20} MiB")
            left_after = wait_out_of_every_isr(nodes, victim, bound_s=shrink_s,
                                               timeout_s=shrink_s + REPLICA_LAG_TIME_MAX_S)
            shrunk_at = time.monotonic()
            timings = {p: round(after, 1) for p, after in sorted(left_after.items())}
            print(f"node {victim} out of every in-sync set {shrunk_at - filled_at:.1f} s after its disk filled, "
                  f"per partition {timings} s after falling behind there")
            marks = {p: workload.mark(p) for p in range(PARTITIONS)}
            for p in range(PARTITIONS):
                workload.wait_for_acks(p, 50, timeout_s=RECOVERY_S, what="two replicas in sync, one disk full",
                                       since=marks[p])
            others = survivors_of(nodes, victim)
            creating = time.monotonic()
            create_topics_meanwhile(others, created, replica=min(others), timeout_s=2 * PROPOSE_TIMEOUT_S + 10)
            print(f"created {len(created)} topics in {time.monotonic() - creating:.1f} s")
            time.sleep(max(0.0, shrunk_at + FULL_AFTER_SHRINK_S - time.monotonic()))
            assert nodes[victim].alive(), f"node {victim} died of its full disk"
            behind = partitions_of(nodes[victim])
            ahead = leaders_high_watermarks(nodes, exclude=victim)
            stopped = all(p["log_end_offset"] < watermark for p, watermark in zip(behind, ahead))
            assert stopped, f"node {victim} kept copying with a full disk: {behind}, leaders at {ahead}"
        finally:
            disks[victim].free()
        freed_at = time.monotonic()
        watermarks = leaders_high_watermarks(nodes, exclude=victim)
        wait_until(f"node {victim} caught up to {watermarks}", lambda: caught_up(nodes, victim, watermarks),
                   timeout=REJOIN_S)
        print(f"node {victim} caught up and in every in-sync set {time.monotonic() - freed_at:.1f} s "
              f"after the space returned")
        after = wait_settled(nodes, f"node {victim} back in every in-sync set on every node")
        epochs = [p["leader_epoch"] for p in before]
        assert [p["leader_epoch"] for p in after] == epochs, f"a partition changed leader: {before} -> {after}"
        agreement = wait_until("one controller leader, no node fenced", lambda: agreed(nodes, all_registered))
        index = status(nodes[agreement["controller_leader"]])["applied_index"]
        wait_until(f"every controller applied the metadata up to {index}", lambda: applied_everywhere(nodes, index))
        missing = set(created) - metadata_topics(nodes[victim])
        assert not missing, f"node {victim} lacks the topics created while its disk was full: {sorted(missing)}"
        waited = "waits for space" in nodes[victim].log_text()
        print(f"node {victim}'s raft log {'waited' if waited else 'did not wait'} for space")
        for p in range(PARTITIONS):
            workload.wait_for_acks(p, 50, timeout_s=RECOVERY_S, what="after the space returned")
        workload.check()


def groups_known(nodes: dict, group: str) -> set[int]:
    """The nodes that have `group` (only its coordinator should)."""
    return {
        node_id for node_id, node in nodes.items()
        if Http(node.http_url).call("GET", f"/api/groups/{group}", timeout=API_TIMEOUT_S).status == 200
    }


def coordinator_of(nodes: dict) -> int | None:
    """The group coordinator every node in `nodes` names: the leader of
    the offsets topic, which holds every group's state."""
    leaders = set()
    for node in nodes.values():
        offsets = partitions_of(node, "__consumer_offsets")
        leaders.add(offsets[0]["leader"] if offsets else None)
    return leaders.pop() if len(leaders) == 1 else None


@pytest.mark.timeout(240)
def test_a_group_resumes_from_its_committed_offsets_across_its_coordinators_kill(
    fault_network, fault_node, tmp_path
):
    """A consumer group member reads the topic while its coordinator (the
    leader of the replicated offsets topic, and of some data partitions)
    is killed -9: the group moves to the new leader of the offsets topic,
    which replays the group's offsets; the member keeps reading, is itself
    killed -9 and restarted while the node is down, and must resume
    exactly at its committed offsets — no record skipped, none committed
    and delivered again — through the node's restart too. Then the writes
    are checked as in the other tests."""
    _, _, nodes = replicated_cluster(fault_network, fault_node)
    victim = wait_until("one group coordinator", lambda: coordinator_of(nodes), timeout=REJOIN_S)
    group = "faults-group"
    survivors = survivors_of(nodes, victim)
    member = GroupMember(bootstrap_of(nodes), TOPIC, group, tmp_path / "group-events.jsonl")
    with Workload(nodes, tmp_path / "history.jsonl") as workload:
        try:
            workload.wait_for_acks(0, 100, timeout_s=30, what="before the kill")
            member.start()
            member.wait_for_commits(COMMITS_PER_STEP, timeout_s=30)
            assert groups_known(nodes, group) == {victim}
            assert nodes[victim].kill() == -9
            coordinator = wait_until("the offsets topic led by a survivor",
                                     lambda: coordinator_of(survivors) in survivors and coordinator_of(survivors),
                                     timeout=RECOVERY_S)
            member.wait_for_commits(2 * COMMITS_PER_STEP, timeout_s=30)
            assert groups_known(survivors, group) == {coordinator}
            member.kill()
            member.start()
            member.wait_for_commits(COMMITS_PER_STEP, timeout_s=30)
            nodes[victim].start()
            wait_settled(nodes, f"node {victim} back in every in-sync set, leaders preferred")
            member.wait_for_commits(2 * COMMITS_PER_STEP, timeout_s=30)
            member.kill()
            workload.wait_for_acks(0, 50, timeout_s=RECOVERY_S, what="after the restart")
        finally:
            member.stop()
        workload.check()
    member.start(idle_exit_s=3.0)
    member.wait_until_drained(timeout_s=60)
    reads = read_back(bootstrap_of(nodes), TOPIC, PARTITIONS)
    result = check_group(read_events(member.events_path), reads)
    print(result.report())
    assert_valid(result)
    assert result.counts["sessions"] == 3


# Transactions committed in each step of the transaction scenario.
TXNS_PER_STEP = 10
# How long the killed coordinator stays down, the producer going on
# through its successor meanwhile.
COORDINATOR_DOWN_S = 15.0


def transactions_completed(bootstrap: str) -> list[int] | None:
    """Each partition's end once its last stable offset (where
    read_committed consumers stop) is its high watermark: every
    transaction's markers are written; else None."""
    ends = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = reading_consumer(bootstrap, **{"isolation.level": isolation})
        try:
            ends[isolation] = [
                consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10, cached=False)[1]
                for p in range(PARTITIONS)
            ]
        finally:
            consumer.close()
    return ends["read_committed"] if ends["read_committed"] == ends["read_uncommitted"] else None


@pytest.mark.timeout(300)
def test_transactions_through_a_coordinators_kill_are_seen_once_whole_or_not_at_all(
    fault_network, fault_node, tmp_path
):
    """Fault scenario 7: a transactional producer (a process of its own)
    writes transactions of three records to each partition, every fourth
    one aborted, while a read_committed consumer tails the topic. The
    transaction coordinator (the leader of the offsets topic, and of one
    data partition) is killed -9: a survivor takes the offsets topic over
    and the producer keeps committing through it — retrying, aborting, or
    starting over with the same transactional.id, as its errors say. The
    node comes back, everything settles, the producer stops after its
    current transaction. Then read_committed must show every transaction
    the producer saw committed exactly once and whole, none of an aborted
    one (not even during the run), a transaction whose commit failed
    without a definite answer whole or not at all, and each partition's
    values in the order produced; every replica ends with the same log."""
    _, _, nodes = replicated_cluster(fault_network, fault_node)
    victim = wait_until("one transaction coordinator", lambda: coordinator_of(nodes), timeout=REJOIN_S)
    survivors = survivors_of(nodes, victim)
    producer = TransactionalProducerProcess(bootstrap_of(nodes), TOPIC, PARTITIONS, "faults-txn",
                                            tmp_path / "txn-events.jsonl", tmp_path / "txn-producer.log")
    tail = TailReader(bootstrap_of(nodes), TOPIC, PARTITIONS).start()
    try:
        producer.start()
        producer.wait_until_ready(timeout_s=60)
        producer.wait_for_outcomes(COMMITTED, TXNS_PER_STEP, timeout_s=30, what="before the kill")
        killed = producer.mark(COMMITTED)
        killed_at = killed[0]
        assert nodes[victim].kill() == -9
        coordinator = wait_until("the offsets topic led by a survivor",
                                 lambda: coordinator_of(survivors) in survivors and coordinator_of(survivors),
                                 timeout=RECOVERY_S)
        recovery_s = producer.wait_for_outcomes(COMMITTED, 1, timeout_s=RECOVERY_S + 15,
                                                what="after the coordinator's kill", since=killed)
        print(f"killed coordinator node {victim}; node {coordinator} coordinates; a transaction committed "
              f"{recovery_s:.1f} s after the kill")
        producer.wait_for_outcomes(COMMITTED, 2 * TXNS_PER_STEP, timeout_s=COORDINATOR_DOWN_S,
                                   what="with the old coordinator down")
        time.sleep(max(0.0, killed_at + COORDINATOR_DOWN_S - time.monotonic()))
        nodes[victim].start()
        wait_settled(nodes, f"node {victim} back in every in-sync set, leaders preferred")
        producer.wait_for_outcomes(COMMITTED, TXNS_PER_STEP, timeout_s=RECOVERY_S, what="after the restart")
        producer.stop()
    finally:
        producer.kill()
        tail.stop()
    print(f"producer events {dict(producer.event_counts())}; replaced for {producer.replacements()}")
    wait_until("every transaction's markers written", lambda: transactions_completed(bootstrap_of(nodes)),
               timeout=REJOIN_S)
    reads = read_back(bootstrap_of(nodes), TOPIC, PARTITIONS)
    result = check_transactions(producer.transactions(), reads, tail.observed)
    print(result.report())
    assert_valid(result, producer.events_path)
    assert result.counts["committed"] >= 4 * TXNS_PER_STEP
    wait_until("every replica holds the same log, all of it committed", lambda: same_logs(nodes))
    storage_errors = {node_id: storage_errors_answered(node) for node_id, node in nodes.items()}
    for node_id, errors in storage_errors.items():
        if errors:
            # Known and safe (see Workload.check): reported, not failed on.
            print(f"node {node_id} answered KAFKA_STORAGE_ERROR {len(errors)} times, first: {errors[0]}")
