"""Durability across restarts: a clean stop (SIGTERM/SIGINT) keeps
everything; a kill -9 in the middle of an acks=all produce loop loses no
acknowledged message and leaves no gap or corruption before it.
"""

from __future__ import annotations

import hashlib
import random
import signal
import time
from collections import defaultdict

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, ResourceType

from helpers import (
    Record,
    assert_delivered,
    consume_exactly,
    create_topic,
    make_admin,
    make_consumer,
    make_producer,
    produce_all,
    read_at,
    topic_partition_count,
    unique,
    watermarks,
)


def consume_range(broker, topic, partition, start, end):
    """Records start..end-1 of one partition, where `end` is its high
    watermark: exactly those, nothing after."""
    consumer = make_consumer(broker)
    consumer.assign([TopicPartition(topic, partition, start)])
    records = [Record.of(m) for m in consume_exactly(consumer, end - start)] if end > start else []
    consumer.close()
    return records


@pytest.mark.timeout(180)
def test_clean_restart_keeps_everything(broker):
    topic = unique("restart")
    admin = make_admin(broker)
    create_topic(admin, topic, 3, config={"segment.bytes": "16384", "retention.ms": "-1"})
    admin.create_partitions([NewPartitions(topic, 4)], operation_timeout=10)[topic].result(15)

    messages = [
        {"key": f"k{i % 31}".encode(), "value": f"before restart {i}".encode() * (1 + i % 7),
         "headers": [("n", str(i).encode())]}
        for i in range(3000)
    ]
    reports = produce_all(make_producer(broker), topic, messages)
    assert_delivered(reports)
    expected = {
        (p, o): Record(p, o, m["key"], m["value"], tuple(m["headers"]), ts)
        for m, (_, p, o, ts) in zip(messages, reports)
    }
    counts = defaultdict(int)
    for _, p, _, _ in reports:
        counts[p] += 1
    # A timestamp lookup to repeat after each restart (the time index).
    stamps = sorted((o, ts) for _, p, o, ts in reports if p == 0)
    probe = stamps[len(stamps) // 2][1]
    probe_answer = min(o for o, ts in stamps if ts >= probe)

    # State that must survive too: a dynamic config change, a deleted topic.
    resource = ConfigResource(
        ResourceType.TOPIC, topic,
        incremental_configs=[ConfigEntry("retention.bytes", "987654321", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([resource])[resource].result(15)
    gone = unique("gone")
    create_topic(admin, gone, 2)
    assert_delivered(produce_all(make_producer(broker), gone, [{"value": b"doomed", "partition": 1}]))
    admin.delete_topics([gone], operation_timeout=10)[gone].result(15)

    for sig in (signal.SIGTERM, signal.SIGINT):
        assert broker.restart(sig) == 0, f"exit code after {sig.name}"

        admin = make_admin(broker)
        names = admin.list_topics(timeout=10).topics
        assert gone not in names, "a deleted topic came back after a restart"
        assert topic_partition_count(admin, topic) == 4
        resource = ConfigResource(ResourceType.TOPIC, topic)
        configs = admin.describe_configs([resource])[resource].result(15)
        assert (configs["segment.bytes"].value, configs["retention.bytes"].value) == ("16384", "987654321")

        consumer = make_consumer(broker)
        for p in range(4):
            assert watermarks(consumer, topic, p) == (0, counts[p]), f"partition {p}"
        [answer] = consumer.offsets_for_times([TopicPartition(topic, 0, probe)], timeout=10)
        assert answer.offset == probe_answer
        consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
        got = {}
        for message in consume_exactly(consumer, len(messages)):
            record = Record.of(message)
            got[(record.partition, record.offset)] = record
        consumer.close()
        assert got == expected

    # New messages continue after the old ones, on every partition.
    more = [{"value": f"after restart {p}".encode(), "partition": p} for p in range(4)]
    reports = produce_all(make_producer(broker), topic, more)
    assert [(r[0], r[1], r[2]) for r in reports] == [(None, p, counts[p]) for p in range(4)]
    for p in range(4):
        assert consume_range(broker, topic, p, counts[p], counts[p] + 1)[0].value == more[p]["value"]


def crash_value(seq: int) -> bytes:
    """Self-checking payload: its sequence number and a digest-derived body."""
    digest = hashlib.sha256(str(seq).encode()).hexdigest().encode()
    return f"{seq:010d}|".encode() + digest * (1 + seq % 4)


def parse_crash_value(value: bytes) -> int:
    seq = int(value[:10])
    assert value == crash_value(seq), f"corrupt value at seq {seq}: {value[:80]!r}"
    return seq


@pytest.mark.timeout(300)
def test_kill_9_loses_no_acknowledged_message(broker):
    topic = unique("crash")
    partitions = 2
    create_topic(make_admin(broker), topic, partitions, config={"segment.bytes": "65536", "retention.ms": "-1"})

    acked: dict[tuple[int, int], bytes] = {}
    failed = 0
    seq = 0

    def on_delivery(error, message):
        nonlocal failed
        if error is None:
            key = (message.partition(), message.offset())
            assert key not in acked, f"offset {key} acknowledged twice"
            acked[key] = message.value()
        else:
            failed += 1

    for round_number in range(3):
        producer = make_producer(
            broker, **{"linger.ms": 1, "queue.buffering.max.messages": 5000, "reconnect.backoff.ms": 50}
        )
        target = len(acked) + 2000
        while len(acked) < target:
            value = crash_value(seq)
            try:
                producer.produce(topic, key=b"k%d" % (seq % 50), value=value, on_delivery=on_delivery)
                seq += 1
            except BufferError:
                producer.poll(0.01)
            producer.poll(0)
        # A burst without waiting, then the kill: requests are in flight and
        # more are queued.
        for _ in range(1000):
            try:
                producer.produce(topic, key=b"k%d" % (seq % 50), value=crash_value(seq), on_delivery=on_delivery)
                seq += 1
            except BufferError:
                break
        time.sleep(0.002)
        unanswered_at_kill = seq - len(acked) - failed
        assert broker.kill() == -signal.SIGKILL
        assert unanswered_at_kill > 0, "nothing was in flight at the kill"
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            try:
                producer.produce(topic, key=b"k%d" % (seq % 50), value=crash_value(seq), on_delivery=on_delivery)
                seq += 1
            except BufferError:
                pass
            producer.poll(0.01)
        broker.start()
        # The producer reconnects to the restarted broker and gets an answer
        # (or a failure) for everything it still holds.
        assert producer.flush(60) == 0, f"round {round_number}: undelivered messages"
        print(f"round {round_number}: {unanswered_at_kill} unanswered at the kill; "
              f"now {len(acked)} acked, {failed} failed of {seq} sent")

    assert len(acked) >= 6000
    consumer = make_consumer(broker)
    high = {p: watermarks(consumer, topic, p) for p in range(partitions)}
    consumer.close()
    print(f"watermarks after the last restart: {high}")
    for p in range(partitions):
        top_acked = max((o for (q, o) in acked if q == p), default=-1)
        assert high[p][0] == 0, f"partition {p} lost its start: {high[p]}"
        assert high[p][1] > top_acked, f"partition {p}: high watermark {high[p][1]} <= acked offset {top_acked}"

    for p in range(partitions):
        records = consume_range(broker, topic, p, 0, high[p][1])
        assert [r.offset for r in records] == list(range(high[p][1])), f"partition {p} has gaps"
        by_offset = {}
        for record in records:
            seq_of_record = parse_crash_value(record.value)
            assert record.key == b"k%d" % (seq_of_record % 50)
            by_offset[record.offset] = record.value
        for (q, offset), value in acked.items():
            if q == p:
                assert by_offset[offset] == value, f"acknowledged ({p}, {offset}) reads back different"

    # Random reads land exactly (the offset index survived the crashes).
    rng = random.Random(7)
    for p, offset in rng.sample(sorted(acked), 20):
        record = Record.of(read_at(broker, topic, p, offset), with_timestamp=False)
        assert (record.offset, record.value) == (offset, acked[(p, offset)])

