"""Three real `weir` processes on loopback form a controller quorum.

What is checked here is the first part of the cluster (issue 12): the
controller quorum on openraft, node registration, heartbeats and fencing,
`weir cluster status` and `/api/cluster`, and the start-up checks that
refuse an inconsistent node. Partition replication is in
tests/test_replication.py, faults in network namespaces in
tests/test_cluster_faults.py.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from conftest import WEIR_BIN, Broker, free_port
from http_helpers import Http

CONVERGE_S = 20.0


def cluster_args(node_id: int, ports: dict[int, int], voters: str | None = None) -> list[str]:
    voters = voters or ",".join(f"{i}@127.0.0.1:{port}" for i, port in sorted(ports.items()))
    return [
        "--node-id", str(node_id),
        "--controller-listen", f"127.0.0.1:{ports[node_id]}",
        "--controller-quorum-voters", voters,
    ]


def start_cluster(weir_broker, size: int = 3) -> dict[int, Broker]:
    ports = {node_id: free_port() for node_id in range(1, size + 1)}
    nodes = {
        node_id: weir_broker(args=cluster_args(node_id, ports), start=False)
        for node_id in ports
    }
    for node in nodes.values():
        node.start()
    return nodes


def status(node: Broker) -> dict:
    return Http(node.http_url).ok("GET", "/api/cluster")


def wait_until(what: str, check, timeout: float = CONVERGE_S):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as error:  # a node still starting
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting until {what}; last: {last!r}")


def agreed(nodes: dict[int, Broker], expect) -> dict | None:
    """The status of every node when they all agree on the leader and the
    cluster id and `expect(status)` holds on each; else None."""
    statuses = [status(node) for node in nodes.values()]
    first = statuses[0]
    same = all(
        s["controller_leader"] == first["controller_leader"] and s["cluster_id"] == first["cluster_id"]
        for s in statuses
    )
    if same and first["controller_leader"] is not None and all(expect(s) for s in statuses):
        return first
    return None


def node_states(status: dict) -> dict[int, str]:
    return {node["id"]: "fenced" if node["fenced"] else "active" for node in status["nodes"]}


def test_three_nodes_elect_a_leader_fence_a_dead_one_and_take_it_back(weir_broker):
    nodes = start_cluster(weir_broker)
    all_active = {1: "active", 2: "active", 3: "active"}
    first = wait_until(
        "all three registered under one leader",
        lambda: agreed(nodes, lambda s: node_states(s) == all_active and s["cluster_id"]),
    )
    leader = first["controller_leader"]
    assert {v["id"] for v in first["voters"]} == {1, 2, 3}
    for node_status in first["nodes"]:
        node = nodes[node_status["id"]]
        assert node_status["kafka"] == node.bootstrap
        assert node_status["amqp"] == f"127.0.0.1:{node.amqp_port}"
        assert node_status["http"] == f"127.0.0.1:{node.http_port}"

    cli = subprocess.run(
        [str(WEIR_BIN), "cluster", "status", "--api", nodes[1].http_url],
        capture_output=True, text=True, timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"controller leader: node {leader} (term " in cli.stdout
    assert f"cluster:           {first['cluster_id']}" in cli.stdout
    rows = {line.split()[0]: line.split() for line in cli.stdout.splitlines() if line[:1].isdigit()}
    assert sorted(rows) == ["1", "2", "3"], cli.stdout
    assert rows[str(leader)][1:3] == ["active", "leader"], cli.stdout

    # kill -9 of the controller leader: the other two elect another and fence it.
    nodes[leader].kill()
    survivors = {i: node for i, node in nodes.items() if i != leader}
    after = wait_until(
        "a new leader fenced the dead one",
        lambda: agreed(
            survivors,
            lambda s: s["controller_leader"] != leader and node_states(s)[leader] == "fenced",
        ),
    )
    assert after["cluster_id"] == first["cluster_id"]
    assert after["term"] > first["term"]

    # It comes back on its data directory: registered anew, unfenced, same cluster.
    nodes[leader].start()
    back = wait_until(
        "the restarted node is active again everywhere",
        lambda: agreed(nodes, lambda s: node_states(s) == all_active),
    )
    assert back["cluster_id"] == first["cluster_id"]
    assert status(nodes[leader])["applied_index"] >= after["applied_index"]


def test_a_node_without_cluster_flags_has_no_cluster_api(broker):
    answer = Http(broker.http_url).get("/api/cluster")
    assert answer.status == 404, answer
    assert "--controller-quorum-voters" in answer.json()["error"]


def refused(args: list[str], workdir, expect: str) -> None:
    node = Broker(workdir, args=args)
    with pytest.raises(Exception) as failure:
        node.start(timeout=15)
    log = node.log_text()
    node.teardown()
    assert expect in log, f"{failure.value}\n{log[-3000:]}"


def test_inconsistent_cluster_settings_refuse_to_start(tmp_path):
    ports = {1: free_port(), 2: free_port(), 3: free_port()}
    voters = ",".join(f"{i}@127.0.0.1:{port}" for i, port in ports.items())
    refused(["--node-id", "1"], tmp_path / "alone", "needs all of --node-id")
    refused(cluster_args(4, {**ports, 4: free_port()}, voters), tmp_path / "stranger",
            "does not include this node's id 4")
    refused(cluster_args(1, ports, f"{voters},1@127.0.0.1:{free_port()}"), tmp_path / "twice",
            "node id 1 is listed twice")
    refused(cluster_args(1, ports, voters.replace(f":{ports[1]}", f":{free_port()}")),
            tmp_path / "elsewhere", "but --controller-listen is")


def test_a_data_directory_is_refused_to_another_node_and_to_a_second_process(weir_broker, tmp_path):
    ports = {1: free_port(), 2: free_port(), 3: free_port()}
    first = weir_broker(args=cluster_args(1, ports))
    # The same directory, a second process: refused while the first runs.
    twin = Broker(first.workdir, args=cluster_args(1, ports))
    twin.log_path = tmp_path / "twin.log"
    with pytest.raises(Exception):
        twin.start(timeout=15)
    twin.teardown()
    assert "in use by another weir process" in twin.log_text(), twin.log_text()[-3000:]
    first.stop()
    # The directory of node 1, started as node 2: refused.
    impostor = Broker(first.workdir, args=cluster_args(2, ports))
    impostor.log_path = tmp_path / "impostor.log"
    with pytest.raises(Exception):
        impostor.start(timeout=15)
    impostor.teardown()
    assert "this data directory belongs to node 1, not node 2" in impostor.log_text()


def test_nodes_with_different_voter_lists_never_talk(weir_broker):
    ports = {1: free_port(), 2: free_port(), 3: free_port(), 4: free_port()}
    three = ",".join(f"{i}@127.0.0.1:{ports[i]}" for i in (1, 2, 3))
    four = ",".join(f"{i}@127.0.0.1:{ports[i]}" for i in (1, 2, 3, 4))
    one = weir_broker(args=cluster_args(1, ports, three))
    two = weir_broker(args=cluster_args(2, ports, four))
    wait_until(
        "both logged the refused handshake",
        lambda: all(
            "every node must be started with the same --controller-quorum-voters" in node.log_text()
            for node in (one, two)
        ),
    )
    # Two of three voters are up, but they never formed a quorum.
    assert status(one)["controller_leader"] is None
    assert status(two)["controller_leader"] is None


def test_topics_are_cluster_metadata_and_clients_follow_the_leaders(weir_broker):
    """A topic created through one node exists on all three; its partitions
    lead on different nodes; librdkafka produces through one node and reads
    through another, each record from its partition's leader; a node that
    does not lead a partition refuses it with NOT_LEADER_OR_FOLLOWER."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    import kafka_wire

    nodes = start_cluster(weir_broker)
    all_active = {1: "active", 2: "active", 3: "active"}
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == all_active))

    admin = AdminClient({"bootstrap.servers": nodes[1].bootstrap})
    admin.create_topics([NewTopic("spread", num_partitions=6, replication_factor=1)])["spread"].result(30)
    refused = admin.create_topics([NewTopic("quadruple", num_partitions=1, replication_factor=4)])["quadruple"]
    with pytest.raises(KafkaException) as failure:
        refused.result(30)
    assert failure.value.args[0].code() == 38, failure.value  # INVALID_REPLICATION_FACTOR
    assert "larger than available brokers: 3" in failure.value.args[0].str()

    # Every node applies the command (the proposer before it answered).
    for node in nodes.values():
        wait_until(
            f"node {node.bootstrap} has the topic",
            lambda node=node: [
                t["partitions"] for t in Http(node.http_url).ok("GET", "/api/topics") if t["name"] == "spread"
            ] == [6],
        )

    described = AdminClient({"bootstrap.servers": nodes[3].bootstrap}).list_topics("spread", timeout=30)
    assert sorted(b.id for b in described.brokers.values()) == [1, 2, 3]
    leaders = {p.id: p.leader for p in described.topics["spread"].partitions.values()}
    assert sorted(leaders) == list(range(6))
    assert sorted(set(leaders.values())) == [1, 2, 3], leaders

    producer = Producer({"bootstrap.servers": nodes[2].bootstrap, "acks": "all",
                         "enable.idempotence": True})
    acked: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(6)}
    errors = []

    def delivered(error, message):
        if error is not None:
            errors.append(error)
        else:
            acked[message.partition()].append((message.offset(), message.value()))

    for i in range(600):
        producer.produce("spread", key=f"k{i % 37}".encode(), value=f"v{i}".encode(),
                         on_delivery=delivered)
    assert producer.flush(60) == 0
    assert errors == []
    assert sum(len(records) for records in acked.values()) == 600

    consumer = Consumer({"bootstrap.servers": nodes[3].bootstrap, "group.id": "cluster-readers",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition("spread", p, 0) for p in range(6)])
    read: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(6)}
    deadline = time.monotonic() + 60
    while sum(len(records) for records in read.values()) < 600 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            read[message.partition()].append((message.offset(), message.value()))
    consumer.close()
    assert read == acked

    # A node that does not lead partition 0 refuses it; its leader takes it.
    leader = leaders[0]
    other = next(node_id for node_id in nodes if node_id != leader)
    batch = kafka_wire.record_batch([(b"k", b"raw", ())], base_timestamp=int(time.time() * 1000))
    with kafka_wire.Connection(nodes[other]) as conn:
        assert kafka_wire.produce_v3(conn, "spread", 0, batch)[0] == 6  # NOT_LEADER_OR_FOLLOWER
        metadata = kafka_wire.metadata_v4(conn, ["spread"], False)
        assert metadata["topics"]["spread"]["partitions"][0]["leader"] == leader
    with kafka_wire.Connection(nodes[leader]) as conn:
        assert kafka_wire.produce_v3(conn, "spread", 0, batch) == (0, len(acked[0]))

    # Deleting through any node deletes it everywhere.
    deleter = AdminClient({"bootstrap.servers": nodes[other].bootstrap})
    deleter.delete_topics(["spread"])["spread"].result(30)
    for node in nodes.values():
        wait_until(
            f"topic gone from node {node.bootstrap}",
            lambda node=node: "spread" not in {t["name"] for t in Http(node.http_url).ok("GET", "/api/topics")},
        )


def init_producer_id(node: Broker) -> int:
    """InitProducerId v0 for an idempotent (non-transactional) producer."""
    import kafka_wire

    with kafka_wire.Connection(node) as conn:
        body = kafka_wire.string(None) + kafka_wire.int32(60_000)
        reply = conn.response(conn.send_request(22, 0, body))
        reply.int32()  # throttle_time_ms
        assert reply.int16() == 0
        producer_id = reply.int64()
        assert reply.int16() == 0  # epoch
        reply.done()
        return producer_id


def test_producer_ids_are_unique_across_nodes_and_restarts(weir_broker):
    """Each node takes blocks of producer ids through the controller, so an
    idempotent producer's id is never another's, whichever node it asked."""
    nodes = start_cluster(weir_broker)
    all_active = {1: "active", 2: "active", 3: "active"}
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == all_active))
    ids = [init_producer_id(node) for node in nodes.values() for _ in range(3)]
    nodes[1].kill()
    nodes[1].start()
    wait_until("node 1 is back", lambda: agreed(nodes, lambda s: node_states(s) == all_active))
    ids += [init_producer_id(nodes[1]) for _ in range(3)]
    assert len(set(ids)) == len(ids), ids


def test_a_stream_queue_is_served_by_its_partition_leader_only(weir_broker):
    """AMQP is not forwarded between nodes yet: a stream queue (a topic) is
    published to through its partition's leader; another node nacks the
    publish instead of keeping a copy that would diverge from the leader's."""
    import pika
    from confluent_kafka import Consumer, TopicPartition

    nodes = start_cluster(weir_broker)
    all_active = {1: "active", 2: "active", 3: "active"}
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == all_active))
    declarer = pika.BlockingConnection(nodes[1].amqp_params())
    declarer.channel().queue_declare("events", durable=True, arguments={"x-queue-type": "stream"})
    declarer.close()
    leader = wait_until(
        "the stream's partition has a leader",
        lambda: Http(nodes[2].http_url).call("GET", "/api/topics/events").status == 200
        and Http(nodes[2].http_url).ok("GET", "/api/topics/events")["partitions"][0]["leader"],
    )
    other = next(node_id for node_id in nodes if node_id != leader)

    refused = pika.BlockingConnection(nodes[other].amqp_params())
    channel = refused.channel()
    channel.confirm_delivery()
    # Not stored, and the publisher is told so: the confirm is a nack.
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "events", b"misdirected", pika.BasicProperties(delivery_mode=2))
    refused.close()
    assert "led by another node of the cluster" in nodes[other].log_text()

    accepted = pika.BlockingConnection(nodes[leader].amqp_params())
    channel = accepted.channel()
    channel.confirm_delivery()
    channel.basic_publish("", "events", b"through-the-leader", pika.BasicProperties(delivery_mode=2))
    accepted.close()

    consumer = Consumer({"bootstrap.servers": nodes[other].bootstrap, "group.id": "stream-check"})
    consumer.assign([TopicPartition("events", 0, 0)])
    values = []
    deadline = time.monotonic() + 30
    while not values and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.close()
    assert values == [b"through-the-leader"]


def find_coordinator(node: Broker, group: str) -> int | None:
    """FindCoordinator v0: the coordinator's node id as `node` answers,
    None while it answers COORDINATOR_NOT_AVAILABLE (15)."""
    import kafka_wire

    with kafka_wire.Connection(node) as conn:
        reply = conn.response(conn.send_request(10, 0, kafka_wire.string(group)))
        error = reply.int16()
        coordinator = reply.int32()
        reply.string()  # host
        reply.int32()  # port
        reply.done()
        if error == 15:
            return None
        assert error == 0, error
        return coordinator


def heartbeat_error(node: Broker, group: str) -> int:
    """Heartbeat v0 of an unknown member: the error code `node` answers."""
    import kafka_wire

    with kafka_wire.Connection(node) as conn:
        body = kafka_wire.string(group) + kafka_wire.int32(1) + kafka_wire.string("nobody")
        reply = conn.response(conn.send_request(12, 0, body))
        code = reply.int16()
        reply.done()
        return code


def one_coordinator(nodes: dict[int, Broker], group: str) -> int | None:
    """The coordinator every live node names, once they agree."""
    named = {find_coordinator(node, group) for node in nodes.values()}
    return named.pop() if len(named) == 1 and None not in named else None


def consume_with_commits(bootstrap: str, group: str, want: int, quiet_s: float = 8) -> list[bytes]:
    """Reads `want` records (or, with want 0, whatever comes within
    `quiet_s`) as a member of `group`, committing each synchronously."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["work"])
    values = []
    deadline = time.monotonic() + (45 if want else quiet_s)
    while time.monotonic() < deadline and (len(values) < want or not want):
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
            consumer.commit(message, asynchronous=False)
    consumer.close()
    return values


def test_groups_have_one_coordinator_and_survive_its_kill(weir_broker):
    """Every node names the same coordinator (the leader of the replicated
    offsets topic); the others answer NOT_COORDINATOR. A group commits
    through one node; the coordinator is killed -9; the group, through
    another node, resumes exactly at its committed offsets on the new
    coordinator: nothing read twice, nothing skipped."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    nodes = start_cluster(weir_broker)
    all_active = {1: "active", 2: "active", 3: "active"}
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == all_active))
    coordinator = wait_until("one coordinator named by every node", lambda: one_coordinator(nodes, "readers"))
    for node_id, node in nodes.items():
        # 25 UNKNOWN_MEMBER_ID from the coordinator, 16 NOT_COORDINATOR elsewhere.
        assert heartbeat_error(node, "readers") == (25 if node_id == coordinator else 16)
    offsets_topic = status(nodes[1])
    assert any(p["topic"] == "__consumer_offsets" and len(p["replicas"]) == 3
               for p in offsets_topic["partitions"]), offsets_topic

    admin = AdminClient({"bootstrap.servers": nodes[1].bootstrap})
    admin.create_topics([NewTopic("work", num_partitions=3, replication_factor=3)])["work"].result(30)
    producer = Producer({"bootstrap.servers": nodes[1].bootstrap, "acks": "all"})
    for i in range(30):
        producer.produce("work", value=f"job-{i}".encode())
    assert producer.flush(30) == 0

    survivors = [node_id for node_id in nodes if node_id != coordinator]
    first = consume_with_commits(nodes[survivors[0]].bootstrap, "readers", 30)
    assert sorted(first) == sorted(f"job-{i}".encode() for i in range(30))
    for i in range(30, 45):
        producer.produce("work", value=f"job-{i}".encode())
    assert producer.flush(30) == 0

    nodes[coordinator].kill()
    alive = {node_id: nodes[node_id] for node_id in survivors}
    wait_until("a new coordinator", lambda: one_coordinator(alive, "readers") in survivors)
    # The same group through another node resumes from the committed offsets.
    rest = consume_with_commits(nodes[survivors[1]].bootstrap, "readers", 15)
    assert sorted(rest) == sorted(f"job-{i}".encode() for i in range(30, 45))
    assert consume_with_commits(nodes[survivors[1]].bootstrap, "readers", 0) == []


TXN_TOPIC = "ledger"
TXN_INPUT = "ledger-input"
TXN_GROUP = "ledger-relay"
TXN_COUNT = 10
TXN_CALL_TIMEOUT_S = 30.0
# The transactions sending the group's offsets: one committed, one aborted.
TXN_OFFSETS = {5: {0: 4, 1: 7, 2: 9}, 7: {0: 10, 1: 10, 2: 10}}


def txn_aborted(txn: int) -> bool:
    """Transactions 1, 4 and 7 are aborted, the seven others committed."""
    return txn % 3 == 1


def txn_records(txn: int, partition: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) records transaction `txn` writes to `partition`:
    one to three of them, with binary payloads of up to 800 bytes."""
    records = []
    for index in range((txn + partition) % 3 + 1):
        payload = bytes((txn * 31 + partition * 7 + index + n) % 256 for n in range(400 * index))
        records.append((f"t{txn}".encode(), f"t{txn}-p{partition}-r{index}|".encode() + payload))
    return records


def in_sync_everywhere(nodes: dict[int, Broker], topic: str, partitions: int) -> list[dict] | None:
    """The topic's partitions when every node names the same leader for
    each and has all three replicas in sync; else None."""
    views = []
    for node in nodes.values():
        answer = Http(node.http_url).call("GET", f"/api/topics/{topic}", timeout=5)
        views.append(answer.json()["partitions"] if answer.status == 200 else [])
    first = views[0]
    if len(first) != partitions:
        return None
    for view in views:
        for mine, theirs in zip(first, view):
            if mine["leader"] is None or mine["leader"] != theirs["leader"] or sorted(theirs["isr"]) != [1, 2, 3]:
                return None
    return first


def stable_ends(bootstrap: str, topic: str, partitions: int) -> list[int] | None:
    """Each partition's end when its last stable offset (what
    read_committed sees) is its high watermark: every transaction's
    markers written; else None."""
    from confluent_kafka import Consumer, TopicPartition

    ends = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ledger-ends-{isolation}",
                             "isolation.level": isolation})
        try:
            ends[isolation] = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                               for p in range(partitions)]
        finally:
            consumer.close()
    return ends["read_committed"] if ends["read_committed"] == ends["read_uncommitted"] else None


def read_partitions(bootstrap: str, topic: str, partitions: int, isolation: str, ends: list[int]) -> dict:
    """{partition: [(offset, key, value), ...]}: every record a consumer
    with `isolation` finds from offset 0 up to the `ends`."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ledger-reader-{isolation}",
                         "enable.auto.commit": False, "isolation.level": isolation, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    read: dict[int, list] = {p: [] for p in range(partitions)}
    done = {p for p in range(partitions) if ends[p] == 0}
    deadline = time.monotonic() + 60
    try:
        while len(done) < partitions:
            assert time.monotonic() < deadline, f"{isolation} read of {topic} stuck: {read}"
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is None:
                    read[message.partition()].append((message.offset(), message.key(), message.value()))
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"{isolation} read of {topic}: {error!r}")
                elif message.offset() >= ends[message.partition()]:
                    done.add(message.partition())
    finally:
        consumer.close()
    return read


@pytest.mark.timeout(120)
def test_transactions_commit_or_abort_across_partitions_led_by_three_nodes(weir_broker):
    """A transactional producer bootstrapped through a node that is not its
    coordinator runs ten transactions, each writing to all three
    partitions of a topic (RF 3, min.insync.replicas 2, one partition led
    by each node): seven committed, three aborted, one committed and one
    aborted of them also sending a consumer group's offsets. A
    read_committed consumer then reads exactly the committed records, byte
    for byte, once each, in each partition in the order produced, at the
    offsets their deliveries named; a read_uncommitted one reads every
    record; each transaction leaves one marker offset per partition; and
    the group's committed offsets are those of the committed transaction."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    nodes = start_cluster(weir_broker)
    all_active = {1: "active", 2: "active", 3: "active"}
    wait_until("all three registered", lambda: agreed(nodes, lambda s: node_states(s) == all_active))
    admin = AdminClient({"bootstrap.servers": nodes[1].bootstrap})
    config = {"min.insync.replicas": "2"}
    created = admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=3, config=config)
                                   for name in (TXN_TOPIC, TXN_INPUT)])
    for future in created.values():
        future.result(30)
    placed = wait_until(f"{TXN_TOPIC} in sync on every node", lambda: in_sync_everywhere(nodes, TXN_TOPIC, 3))
    assert sorted(p["leader"] for p in placed) == [1, 2, 3], placed
    wait_until(f"{TXN_INPUT} in sync on every node", lambda: in_sync_everywhere(nodes, TXN_INPUT, 3))
    coordinator = wait_until("one coordinator named by every node", lambda: one_coordinator(nodes, TXN_GROUP))
    entry = nodes[next(node_id for node_id in nodes if node_id != coordinator)]

    # What the group "consumed": ten records in each input partition.
    feeder = Producer({"bootstrap.servers": entry.bootstrap, "acks": "all"})
    for i in range(30):
        feeder.produce(TXN_INPUT, value=f"in-{i}".encode(), partition=i % 3)
    assert feeder.flush(30) == 0
    relay = Consumer({"bootstrap.servers": entry.bootstrap, "group.id": TXN_GROUP, "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
    relay.assign([TopicPartition(TXN_INPUT, p, 0) for p in range(3)])

    producer = Producer({"bootstrap.servers": entry.bootstrap, "transactional.id": "ledger-writer",
                         "linger.ms": 5})
    producer.init_transactions(TXN_CALL_TIMEOUT_S)
    delivered: dict[int, list] = {}
    for txn in range(TXN_COUNT):
        producer.begin_transaction()
        reports = []
        for partition in range(3):
            for key, value in txn_records(txn, partition):
                producer.produce(TXN_TOPIC, key=key, value=value, partition=partition,
                                 on_delivery=lambda error, message, into=reports: into.append((error, message)))
        # Flushed before the end, so that an aborted transaction's records
        # are in the log too (for the read_uncommitted consumer).
        assert producer.flush(TXN_CALL_TIMEOUT_S) == 0
        assert [error for error, _ in reports if error is not None] == [], txn
        delivered[txn] = [(m.partition(), m.offset(), m.key(), m.value()) for _, m in reports]
        if txn in TXN_OFFSETS:
            positions = [TopicPartition(TXN_INPUT, p, offset) for p, offset in TXN_OFFSETS[txn].items()]
            producer.send_offsets_to_transaction(positions, relay.consumer_group_metadata(), TXN_CALL_TIMEOUT_S)
        if txn_aborted(txn):
            producer.abort_transaction(TXN_CALL_TIMEOUT_S)
        else:
            producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    assert not txn_aborted(5) and txn_aborted(7)

    every = {p: [(o, k, v) for txn in range(TXN_COUNT) for (q, o, k, v) in delivered[txn] if q == p] for p in range(3)}
    committed = {p: [(o, k, v) for txn in range(TXN_COUNT) if not txn_aborted(txn)
                     for (q, o, k, v) in delivered[txn] if q == p] for p in range(3)}
    for p in range(3):
        # What each partition was sent, in order, and by whom.
        assert [(k, v) for _, k, v in every[p]] == [r for txn in range(TXN_COUNT) for r in txn_records(txn, p)]
    # Markers are written after EndTxn is answered: wait for the last ones.
    # Each transaction's marker takes one offset in each partition.
    ends = wait_until("every partition's last stable offset at its high watermark",
                      lambda: stable_ends(entry.bootstrap, TXN_TOPIC, 3))
    assert ends == [len(every[p]) + TXN_COUNT for p in range(3)], ends

    assert read_partitions(entry.bootstrap, TXN_TOPIC, 3, "read_committed", ends) == committed
    assert read_partitions(nodes[coordinator].bootstrap, TXN_TOPIC, 3, "read_uncommitted", ends) == every

    relay.close()
    reader = Consumer({"bootstrap.servers": entry.bootstrap, "group.id": TXN_GROUP,
                       "isolation.level": "read_committed"})
    try:
        wanted = [(TXN_INPUT, p, offset, None) for p, offset in TXN_OFFSETS[5].items()]
        wait_until(
            "the group's offsets are those of the committed transaction",
            lambda: [(tp.topic, tp.partition, tp.offset, tp.error)
                     for tp in reader.committed([TopicPartition(TXN_INPUT, p) for p in range(3)], timeout=15)]
            == wanted,
        )
    finally:
        reader.close()
