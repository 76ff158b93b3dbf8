"""A single weir node in a namespace, crashed and paused under a
continuous acks=all idempotent producer: the history checker must find
nothing acknowledged lost, changed, duplicated or reordered. The same
recorder and checker will run the cluster's failover scenarios.

A control experiment makes sure the whole pipeline can fail: a node
whose data directory is wiped between a kill and its restart must be
caught losing acknowledged writes."""

from __future__ import annotations

import shutil
import time

import pytest
from confluent_kafka.admin import AdminClient

from faults.checker import LOST, assert_valid, check
from faults.history import OK, History
from faults.kafka_client import ProduceRecorder, TailReader, kafka_config, read_back
from helpers import create_topic, unique

PARTITIONS = 3
KILLS = 5
PAUSE_S = 4.0
# Time for acknowledgements already on the wire when SIGSTOP lands.
PAUSE_SETTLE_S = 0.5
# Acknowledgements to wait for after each fault, so every restart is
# crashed while the producer is busy, not while it is still reconnecting.
ACKNOWLEDGEMENTS_BETWEEN_FAULTS = 150


@pytest.mark.timeout(150)
def test_kill_and_pause_lose_nothing_acknowledged(fault_network, fault_node, tmp_path):
    network = fault_network(1)
    node = fault_node(network, "n1")
    topic = unique("faults-crash")
    create_topic(AdminClient(kafka_config(node.bootstrap)), topic, PARTITIONS)
    history = History()
    recorder = ProduceRecorder(node.bootstrap, topic, PARTITIONS, history).start()
    tail = TailReader(node.bootstrap, topic, PARTITIONS).start()
    try:
        recorder.wait_for_acknowledgements(ACKNOWLEDGEMENTS_BETWEEN_FAULTS, timeout_s=20)
        for _ in range(KILLS):
            assert node.kill() == -9, "kill -9 did not reach weir itself"
            node.start()
            recorder.wait_for_acknowledgements(ACKNOWLEDGEMENTS_BETWEEN_FAULTS, timeout_s=30)
        node.pause()
        time.sleep(PAUSE_SETTLE_S)
        acknowledged_when_paused = history.counts()[OK]
        time.sleep(PAUSE_S)
        assert history.counts()[OK] == acknowledged_when_paused, "a SIGSTOPped node acknowledged writes"
        node.resume()
        recorder.wait_for_acknowledgements(ACKNOWLEDGEMENTS_BETWEEN_FAULTS, timeout_s=30)
    finally:
        recorder.stop()
        tail.stop()
    history_path = tmp_path / "history.jsonl"
    history.save(history_path)

    result = check(history.writes, read_back(node.bootstrap, topic, PARTITIONS), tail.observed)
    assert_valid(result, history_path)
    assert tail.observed, "the tailing consumer saw nothing during the run"
    assert not recorder.fatal_errors, f"the idempotent producer went fatal: {recorder.fatal_errors}"
    assert node.starts == KILLS + 1


@pytest.mark.timeout(90)
def test_a_node_that_forgets_acknowledged_writes_is_caught(fault_network, fault_node):
    network = fault_network(1)
    # No auto-creation, so the recreated topic has its 3 partitions, not
    # whatever the producer's next metadata request would create.
    node = fault_node(network, "n1", args=["--auto-create-topics", "false"])
    topic = unique("faults-forget")
    create_topic(AdminClient(kafka_config(node.bootstrap)), topic, PARTITIONS)
    history = History()
    recorder = ProduceRecorder(node.bootstrap, topic, PARTITIONS, history).start()
    try:
        recorder.wait_for_acknowledgements(ACKNOWLEDGEMENTS_BETWEEN_FAULTS, timeout_s=20)
        node.kill()
        shutil.rmtree(node.data_dir)
        node.start()
    finally:
        recorder.stop(flush_timeout_s=2)
    create_topic(AdminClient(kafka_config(node.bootstrap)), topic, PARTITIONS)

    result = check(history.writes, read_back(node.bootstrap, topic, PARTITIONS))
    assert LOST in result.by_kind(), result.report()
    with pytest.raises(AssertionError, match="lost: "):
        assert_valid(result)
