"""The namespace harness itself: a weir node in one namespace serves a
Kafka client in another namespace and one in the test process; an nftables
cut stops the traffic and healing restores it; writes cut off time out as
`unknown`; teardown leaves nothing, and a crashed run's leftovers are
removed by the next run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from conftest import WEIR_BIN
from faults.checker import assert_valid, check
from faults.fixtures import require_root_and_tools
from faults.history import UNKNOWN, History
from faults.kafka_client import ProduceRecorder, kafka_config, read_back
from faults.netns import HOST, Network, namespace_names, root_link_names, run_command
from faults.node import KAFKA_PORT
from faults.partitions import Partitions
from helpers import create_topic, unique, wait_until

# A producer and a reader run inside another namespace: a delivery timeout
# and the values from argv; prints the offsets acknowledged and the values
# read back, as JSON.
PRODUCE_AND_READ = """
import json, sys
from confluent_kafka import Consumer, Producer, TopicPartition
bootstrap, topic, timeout_s, *values = sys.argv[1:]
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "message.timeout.ms": int(float(timeout_s) * 1000)})
offsets = []
for value in values:
    producer.produce(topic, value=value.encode(), partition=0,
                     on_delivery=lambda error, message: offsets.append(None if error else message.offset()))
assert producer.flush(float(timeout_s) + 5) == 0 and None not in offsets, "undelivered"
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ns-reader", "enable.auto.commit": False})
consumer.assign([TopicPartition(topic, 0, 0)])
read = []
while len(read) < max(offsets) + 1:
    message = consumer.poll(10)
    assert message is not None and message.error() is None, message and message.error()
    read.append(message.value().decode())
consumer.close()
print(json.dumps({"offsets": offsets, "read": read}))
"""


def produce_and_read_from(
    network: Network, node: str, bootstrap: str, topic: str, values: list[str], timeout_s: float = 20.0
) -> dict:
    argv = [sys.executable, "-c", PRODUCE_AND_READ, bootstrap, topic, str(timeout_s), *values]
    output = network.run_in(node, argv, timeout=timeout_s + 40)
    return json.loads(output)


def produce_from_host(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = Producer(kafka_config(bootstrap, acks="all"))
    for value in values:
        producer.produce(topic, value=value.encode(), partition=0)
    assert producer.flush(20) == 0, "messages undelivered from the test process"


@pytest.mark.timeout(90)
def test_cut_and_heal_between_namespaces(fault_network, fault_node):
    network = fault_network(2)
    node = fault_node(network, "n1")
    address = network.address("n1")
    assert node.bootstrap == f"{address}:{KAFKA_PORT}"
    # `ip netns exec` must exec weir, not wait for it as a child: signals
    # sent to the process the test started have to reach weir itself.
    assert Path(f"/proc/{node.proc.pid}/exe").resolve() == WEIR_BIN.resolve()
    topic = unique("faults-net")
    create_topic(AdminClient(kafka_config(node.bootstrap)), topic, 1)

    first = produce_and_read_from(network, "n2", node.bootstrap, topic, ["a", "b"])
    assert first == {"offsets": [0, 1], "read": ["a", "b"]}
    produce_from_host(node.bootstrap, topic, ["c"])

    partitions = Partitions(network)
    partitions.cut("n1", "n2")
    assert not network.connects("n2", address, KAFKA_PORT), "n2 still reaches n1 through the cut"
    assert network.connects(HOST, address, KAFKA_PORT), "a cut between n1 and n2 must not hide n1 from the clients"
    with pytest.raises(AssertionError, match="undelivered"):
        produce_and_read_from(network, "n2", node.bootstrap, topic, ["lost in the cut"], timeout_s=3)

    partitions.heal("n1", "n2")
    assert network.connects("n2", address, KAFKA_PORT), "n2 does not reach n1 after the heal"
    again = produce_and_read_from(network, "n2", node.bootstrap, topic, ["d"])
    assert again == {"offsets": [3], "read": ["a", "b", "c", "d"]}, "the write cut off should never have arrived"

    partitions.isolate("n1", from_clients=True)
    assert not network.connects(HOST, address, KAFKA_PORT), "the test process still reaches an isolated n1"
    assert not network.connects("n2", address, KAFKA_PORT)
    partitions.heal_all()
    assert network.connects(HOST, address, KAFKA_PORT) and network.connects("n2", address, KAFKA_PORT)
    assert [read.value for read in read_back(node.bootstrap, topic, 1)][-1] == "d"


@pytest.mark.timeout(90)
def test_isolate_cuts_one_node_from_every_other_node_only(fault_network, fault_node):
    """The cluster's "leader cut off from its peers while its clients still
    reach it": the other nodes still reach each other."""
    network = fault_network(3)
    fault_node(network, "n1")
    fault_node(network, "n3")
    n1, n3 = network.address("n1"), network.address("n3")
    partitions = Partitions(network)

    partitions.isolate("n1")
    assert not network.connects("n2", n1, KAFKA_PORT)
    assert not network.connects("n3", n1, KAFKA_PORT)
    assert network.connects(HOST, n1, KAFKA_PORT), "isolate() must leave the clients connected"
    assert network.connects("n2", n3, KAFKA_PORT), "isolating n1 must not cut n2 from n3"
    partitions.heal_all()
    assert network.connects("n2", n1, KAFKA_PORT) and network.connects("n3", n1, KAFKA_PORT)


def test_teardown_leaves_nothing_behind():
    require_root_and_tools()
    with Network(3) as network:
        Partitions(network).isolate("n2", from_clients=True)
        namespaces = [network.namespace(node) for node in network.nodes] + [network.hub]
        assert set(namespaces) <= set(namespace_names())
        assert network.root_link in root_link_names()
        assert "inet weir_faults" in run_command(["ip", "netns", "exec", namespaces[1], "nft", "list", "tables"])
    assert not set(namespaces) & set(namespace_names()), f"namespaces left: {namespace_names()}"
    assert network.root_link not in root_link_names(), root_link_names()
    assert "weir_faults" not in run_command(["nft", "list", "tables"]), "an nft table leaked into the root namespace"
    assert network.host_address not in run_command(["ip", "-4", "-o", "addr", "show"])


def test_a_crashed_runs_leftovers_are_removed_by_the_next_run():
    require_root_and_tools()
    crashed = subprocess.Popen(["true"])
    crashed.wait()
    leftover_namespace = f"weirf{crashed.pid}-hub"
    leftover_link = f"weirf{crashed.pid}h"
    run_command(["ip", "netns", "add", leftover_namespace])
    run_command(["ip", "link", "add", leftover_link, "type", "veth", "peer", "name", f"wfpeer{crashed.pid}"])
    orphan = subprocess.Popen(["ip", "netns", "exec", leftover_namespace, "sleep", "300"])
    try:
        wait_until(lambda: str(orphan.pid) in run_command(["ip", "netns", "pids", leftover_namespace]).split(),
                   10, "the orphan to enter the leftover namespace")
        with Network(1) as network:
            assert set(network.own_namespaces()) == {network.namespace("n1"), network.hub}
            assert leftover_namespace not in namespace_names()
            assert leftover_link not in root_link_names()
            assert f"wfpeer{crashed.pid}" not in root_link_names()
            assert orphan.wait(10) == -9, "a process left in a crashed run's namespace was not killed"
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
        for command in (["ip", "netns", "delete", leftover_namespace], ["ip", "link", "delete", leftover_link]):
            subprocess.run(command, capture_output=True)


@pytest.mark.timeout(90)
def test_writes_timing_out_in_a_partition_are_unknown(fault_network, fault_node):
    """The recorder's third outcome, from a real partition: writes that time
    out while the clients are cut from the node are `unknown`, and the
    history stays valid whether or not they arrived."""
    network = fault_network(1)
    node = fault_node(network, "n1")
    topic = unique("faults-unknown")
    create_topic(AdminClient(kafka_config(node.bootstrap)), topic, 2)
    history = History()
    recorder = ProduceRecorder(node.bootstrap, topic, 2, history, config={"message.timeout.ms": 2000}).start()
    partitions = Partitions(network)
    try:
        recorder.wait_for_acknowledgements(100, timeout_s=20)
        partitions.cut("n1", HOST)
        wait_until(lambda: history.counts()[UNKNOWN] >= 10, 20, "writes to time out during the cut")
        partitions.heal_all()
        recorder.wait_for_acknowledgements(100, timeout_s=30)
    finally:
        recorder.stop()
    result = check(history.writes, read_back(node.bootstrap, topic, 2))
    assert_valid(result)
    assert result.counts["unknown"] >= 10
    assert not recorder.fatal_errors, recorder.fatal_errors
