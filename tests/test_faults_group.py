"""A consumer-group member killed with kill -9 (twice, once while the
broker itself is crashed and restarted) resumes exactly at its committed
offsets: no record skipped, none committed and then delivered again."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from faults.checker import assert_valid, check
from faults.group_check import check_group
from faults.group_member import GroupMember, read_events
from faults.history import History
from faults.kafka_client import ProduceRecorder, kafka_config, read_back
from helpers import create_topic, unique

PARTITIONS = 3
COMMITS_PER_SESSION = 5


@pytest.mark.timeout(150)
def test_group_member_killed_resumes_from_committed_offsets(fault_network, fault_node, tmp_path):
    network = fault_network(1)
    node = fault_node(network, "n1")
    topic = unique("faults-group")
    create_topic(AdminClient(kafka_config(node.bootstrap)), topic, PARTITIONS)
    history = History()
    recorder = ProduceRecorder(node.bootstrap, topic, PARTITIONS, history, interval_s=0.005).start()
    member = GroupMember(node.bootstrap, topic, unique("faults-group"), tmp_path / "group-events.jsonl")
    try:
        member.start()
        member.wait_for_commits(COMMITS_PER_SESSION, timeout_s=30)
        member.kill()
        member.start()
        member.wait_for_commits(COMMITS_PER_SESSION, timeout_s=30)
        assert node.kill() == -9
        node.start()
        member.wait_for_commits(2 * COMMITS_PER_SESSION, timeout_s=30)
        member.kill()
        recorder.wait_for_acknowledgements(100, timeout_s=30)
    finally:
        recorder.stop()
        member.stop()
    member.start(idle_exit_s=3.0)
    member.wait_until_drained(timeout_s=60)

    reads = read_back(node.bootstrap, topic, PARTITIONS)
    assert_valid(check(history.writes, reads))
    result = check_group(read_events(member.events_path), reads)
    assert_valid(result)
    assert result.counts["sessions"] == 3
