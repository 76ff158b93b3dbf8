"""Partition data replicated across three real `weir` nodes on loopback
(issue 12): topics with replication factor 3, followers copying their
leaders, the high watermark over the in-sync replicas, `acks=all` waiting
for it, `min.insync.replicas` enforced, and leaders elected from the
in-sync set when a node dies — checked with librdkafka (confluent-kafka)
and the fault harness's history checker: no acknowledged record lost,
changed, duplicated or reordered.

The same under network faults, in namespaces, is tests/test_cluster_faults.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from faults.checker import assert_valid, check
from faults.history import History
from faults.kafka_client import ProduceRecorder, TailReader, read_back
from conftest import WEIR_BIN, free_port
from http_helpers import Http
from test_cluster import agreed, cluster_args, node_states, start_cluster, wait_until

ALL_ACTIVE = {1: "active", 2: "active", 3: "active"}


def partitions_of(node, topic: str) -> list[dict]:
    """The partitions as `node` has them; empty while it has no such topic."""
    answer = Http(node.http_url).call("GET", f"/api/topics/{topic}", timeout=5)
    return answer.json()["partitions"] if answer.status == 200 else []


def fully_in_sync(nodes, topic: str, count: int):
    """Every node names the same leader for each partition, each with all
    three replicas in sync; returns the partitions as node 1 has them."""
    views = [partitions_of(node, topic) for node in nodes.values() if node.alive()]
    first = views[0]
    if len(first) != count:
        return None
    for view in views:
        for mine, theirs in zip(first, view):
            if mine["leader"] != theirs["leader"] or sorted(theirs["isr"]) != [1, 2, 3]:
                return None
    return first


def create_replicated(nodes, topic: str, partitions: int, min_insync: int = 2):
    admin = AdminClient({"bootstrap.servers": nodes[1].bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=3,
                   config={"min.insync.replicas": str(min_insync)})
    admin.create_topics([new])[topic].result(30)
    return wait_until(f"{topic} fully in sync on every node", lambda: fully_in_sync(nodes, topic, partitions))


def bootstrap_of(nodes) -> str:
    return ",".join(node.bootstrap for node in nodes.values())


def test_acknowledged_writes_survive_the_death_of_their_leader(weir_broker, tmp_path):
    nodes = start_cluster(weir_broker)
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == ALL_ACTIVE))
    placed = create_replicated(nodes, "orders", 3)
    assert sorted(p["leader"] for p in placed) == [1, 2, 3], "leaders spread over the nodes"
    cli = subprocess.run([str(WEIR_BIN), "cluster", "status", "--api", nodes[3].http_url],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    # The orders partitions, and the offsets topic's once it exists.
    assert re.search(r"partitions: [34] \(0 under-replicated\)", cli.stdout), cli.stdout
    rows = [line.split() for line in cli.stdout.splitlines() if line.startswith("orders ")]
    assert [row[1] for row in rows] == ["0", "1", "2"], cli.stdout
    assert all(row[-2:] == ["in", "sync"] for row in rows), cli.stdout
    described = AdminClient({"bootstrap.servers": nodes[2].bootstrap}).list_topics("orders", timeout=30)
    for partition in described.topics["orders"].partitions.values():
        assert sorted(partition.replicas) == [1, 2, 3]
        assert sorted(partition.isrs) == [1, 2, 3]

    history = History()
    recorder = ProduceRecorder(bootstrap_of(nodes), "orders", 3, history).start()
    tail = TailReader(bootstrap_of(nodes), "orders", 3).start()
    try:
        recorder.wait_for_acknowledgements(600, timeout_s=60)
        victim = placed[0]["leader"]
        nodes[victim].kill()
        survivors = {i: n for i, n in nodes.items() if i != victim}
        moved = wait_until(
            "partition 0 led by a survivor",
            lambda: (lambda p: p if p["leader"] not in (None, victim) else None)(
                partitions_of(survivors[min(survivors)], "orders")[0]),
        )
        assert victim not in moved["isr"], moved
        status = Http(survivors[min(survivors)].http_url).ok("GET", "/api/cluster")
        assert [p["under_replicated"] for p in status["partitions"] if p["topic"] == "orders"] == [True] * 3, status
        assert moved["leader_epoch"] > placed[0]["leader_epoch"]
        recorder.wait_for_acknowledgements(600, timeout_s=60)
        nodes[victim].start()
        wait_until("the restarted node is back in every in-sync set",
                   lambda: fully_in_sync(nodes, "orders", 3), timeout=60)
        recorder.wait_for_acknowledgements(300, timeout_s=60)
    finally:
        recorder.stop()
        tail.stop()
    assert recorder.fatal_errors == []
    reads = read_back(bootstrap_of(nodes), "orders", 3)
    history.save(tmp_path / "history.json")
    assert_valid(check(history.writes, reads, tail.observed), tmp_path / "history.json")
    # Every replica holds the same log: the restarted node copied what it missed.
    ends = [[p["high_watermark"] for p in partitions_of(node, "orders")] for node in nodes.values()]
    wait_until("every replica at the same high watermark",
               lambda: len({tuple(p["log_end_offset"] for p in partitions_of(node, "orders"))
                            for node in nodes.values()}) == 1)
    assert all(end > 0 for end in ends[0])


def weir_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(WEIR_BIN), *args], capture_output=True, text=True, timeout=30)


def moved(nodes, topic: str, target: list[int], count: int):
    """The partitions once every live node has them on `target` only,
    all in sync and led by the preferred replica; else None."""
    views = [partitions_of(node, topic) for node in nodes.values() if node.alive()]
    done = all(
        len(view) == count and all(
            p["replicas"] == target and sorted(p["isr"]) == sorted(target)
            and p["moving_to"] is None and p["leader"] == target[0]
            for p in view)
        for view in views)
    return views[0] if done else None


def test_a_new_node_takes_partitions_moved_to_it_while_producers_write(weir_broker, tmp_path):
    """`weir topic reassign` moves live partitions from node 1 to a node
    that joins later: it copies them as a follower, and once it is in sync
    it replaces node 1, which can then die without a write lost."""
    ports = {node_id: free_port() for node_id in range(1, 5)}
    nodes = {i: weir_broker(args=cluster_args(i, ports), start=False) for i in ports}
    first_three = {i: nodes[i] for i in (1, 2, 3)}
    for node in first_three.values():
        node.start()
    wait_until("three of four voters registered",
               lambda: agreed(first_three, lambda s: node_states(s) == ALL_ACTIVE))
    create_replicated(first_three, "moving", 2)

    history = History()
    recorder = ProduceRecorder(bootstrap_of(first_three), "moving", 2, history).start()
    tail = TailReader(bootstrap_of(first_three), "moving", 2).start()
    try:
        recorder.wait_for_acknowledgements(400, timeout_s=60)
        nodes[4].start()
        wait_until("node 4 registered",
                   lambda: agreed(first_three, lambda s: node_states(s) == {**ALL_ACTIVE, 4: "active"}))
        api = ("--api", nodes[2].http_url)
        refused = weir_cli("topic", "reassign", "moving", "--replicas", "4,4", *api)
        assert refused.returncode != 0 and "repeat" in refused.stderr, refused
        refused = weir_cli("topic", "reassign", "moving", "--replicas", "4,9", *api)
        assert refused.returncode != 0 and "9" in refused.stderr, refused

        started = weir_cli("topic", "reassign", "moving", "--replicas", "4,2,3", "--output", "json", *api)
        assert started.returncode == 0, started
        answer = json.loads(started.stdout)
        assert [p["moving_to"] for p in answer["partitions"]] == [[4, 2, 3]] * 2, answer
        assert [p["replicas"][:3] for p in answer["partitions"]] == [[4, 2, 3]] * 2, answer
        again = weir_cli("topic", "reassign", "moving", "--replicas", "2,3,4", *api)
        assert again.returncode != 0 and "being moved" in again.stderr, again

        wait_until("both partitions moved to nodes 4, 2, 3 and led by node 4",
                   lambda: moved(nodes, "moving", [4, 2, 3], 2), timeout=60)
        status = weir_cli("cluster", "status", *api)
        rows = [line.split() for line in status.stdout.splitlines() if line.startswith("moving ")]
        assert [row[-2:] for row in rows] == [["in", "sync"]] * 2, status.stdout
        recorder.wait_for_acknowledgements(400, timeout_s=60)

        # Node 1 holds no replica any more: its death changes nothing.
        nodes[1].kill()
        recorder.wait_for_acknowledgements(400, timeout_s=60)
    finally:
        recorder.stop()
        tail.stop()
    assert recorder.fatal_errors == []
    survivors = {i: nodes[i] for i in (2, 3, 4)}
    reads = read_back(bootstrap_of(survivors), "moving", 2)
    history.save(tmp_path / "history.json")
    assert_valid(check(history.writes, reads, tail.observed), tmp_path / "history.json")
    wait_until("nodes 2, 3 and 4 hold the same logs",
               lambda: len({tuple(p["log_end_offset"] for p in partitions_of(node, "moving"))
                            for node in survivors.values()}) == 1)


def test_min_insync_replicas_refuses_acks_all_but_not_acks_1(weir_broker):
    nodes = start_cluster(weir_broker)
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == ALL_ACTIVE))
    placed = create_replicated(nodes, "strict", 1, min_insync=3)
    leader = placed[0]["leader"]
    follower = next(i for i in nodes if i != leader)
    nodes[follower].kill()
    wait_until("the dead follower left the in-sync set",
               lambda: sorted(partitions_of(nodes[leader], "strict")[0]["isr"]) == sorted(
                   i for i in nodes if i != follower))

    def produce(acks: str):
        producer = Producer({"bootstrap.servers": nodes[leader].bootstrap, "acks": acks,
                             "message.timeout.ms": 10_000, "retries": 0})
        outcome = []
        producer.produce("strict", value=b"x", partition=0,
                         on_delivery=lambda error, message: outcome.append(error))
        producer.flush(20)
        return outcome

    refused = produce("all")
    assert len(refused) == 1 and refused[0] is not None
    assert refused[0].code() == 19, refused[0]  # NOT_ENOUGH_REPLICAS
    assert produce("1") == [None]


def test_a_replication_factor_above_the_live_nodes_is_refused(weir_broker):
    nodes = start_cluster(weir_broker)
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == ALL_ACTIVE))
    admin = AdminClient({"bootstrap.servers": nodes[1].bootstrap})
    future = admin.create_topics([NewTopic("wide", num_partitions=1, replication_factor=4)])["wide"]
    with pytest.raises(KafkaException) as failure:
        future.result(30)
    assert failure.value.args[0].code() == 38, failure.value  # INVALID_REPLICATION_FACTOR


def test_amqp_confirms_on_a_replicated_stream_survive_its_leaders_death(weir_broker):
    """A stream queue declared through AMQP in a cluster is a topic with
    three replicas; a publisher confirm means the message is on every
    in-sync replica, so the leader's kill -9 right after the confirms loses
    none of them."""
    import pika
    from confluent_kafka import Consumer, TopicPartition

    nodes = start_cluster(weir_broker)
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == ALL_ACTIVE))
    declarer = pika.BlockingConnection(nodes[1].amqp_params())
    declarer.channel().queue_declare("audit", durable=True, arguments={"x-queue-type": "stream"})
    declarer.close()
    placed = wait_until("the stream is fully in sync", lambda: fully_in_sync(nodes, "audit", 1))
    leader = placed[0]["leader"]
    assert sorted(placed[0]["replicas"]) == [1, 2, 3]

    publisher = pika.BlockingConnection(nodes[leader].amqp_params())
    channel = publisher.channel()
    channel.confirm_delivery()
    bodies = [f"entry-{i}".encode() for i in range(300)]
    for body in bodies:
        channel.basic_publish("", "audit", body, pika.BasicProperties(delivery_mode=2))
    publisher.close()
    nodes[leader].kill()

    survivor = next(node for i, node in nodes.items() if i != leader)
    wait_until("a survivor leads the stream",
               lambda: partitions_of(survivor, "audit")[0]["leader"] not in (None, leader))
    consumer = Consumer({"bootstrap.servers": ",".join(n.bootstrap for i, n in nodes.items() if i != leader),
                         "group.id": "audit-check", "enable.auto.commit": False})
    consumer.assign([TopicPartition("audit", 0, 0)])
    read = []
    deadline = time.monotonic() + 60
    while len(read) < len(bodies) and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            read.append(message.value())
    consumer.close()
    assert read == bodies
