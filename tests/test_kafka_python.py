"""kafka-python (a pure-Python client with its own protocol code) against Weir."""

from __future__ import annotations

import time
from collections import defaultdict

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner import murmur2

from helpers import unique, wait_until

ERROR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERROR_INVALID_TOPIC = 17
ERROR_TOPIC_ALREADY_EXISTS = 36
ERROR_INVALID_PARTITIONS = 37


def admin_client(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)


def producer_for(broker, **config) -> KafkaProducer:
    settings = {"acks": "all", "linger_ms": 5, "enable_idempotence": False}
    settings.update(config)
    return KafkaProducer(bootstrap_servers=broker.bootstrap, **settings)


def consumer_for(broker) -> KafkaConsumer:
    """No group: assign() and seek() only, nothing committed."""
    return KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15000,
    )


def topic_errors(result) -> dict:
    """{topic name: error code} from a create/delete topics result dict."""
    return {t["name"]: t["error_code"] for t in result["topics"]}


def create(admin, topics: dict) -> dict:
    return topic_errors(admin.create_topics(topics, raise_errors=False))


def poll_exactly(consumer, count, timeout=60.0):
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"consumed {len(records)} of {count}"
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    extra = [r for batch in consumer.poll(timeout_ms=1000).values() for r in batch]
    assert not extra, f"more than {count} records: {extra[:3]}"
    return records


def round_trip(broker, producer_config):
    topic = unique("kp")
    admin = admin_client(broker)
    assert create(admin, {topic: {"num_partitions": 3, "replication_factor": 1}}) == {topic: 0}
    admin.close()

    base = int(time.time() * 1000) - 60_000
    messages = []
    for i in range(600):
        key = None if i % 50 == 7 else f"key-{i % 37}".encode()
        value = b"" if i % 61 == 5 else f"value {i} ".encode() * (i % 9) + bytes(range(i % 256))
        headers = [] if i % 4 == 0 else [("i", str(i).encode()), ("src", b"kafka-python")]
        messages.append({"key": key, "value": value, "headers": headers, "timestamp_ms": base + i})

    metadata = []
    for half, config in enumerate(producer_config):
        producer = producer_for(broker, **config)
        futures = [producer.send(topic, **m) for m in messages[half * 300:(half + 1) * 300]]
        producer.flush(timeout=60)
        metadata += [f.get(timeout=30) for f in futures]
        producer.close()

    by_key = {}
    offsets = defaultdict(list)
    for message, meta in zip(messages, metadata):
        assert meta.topic == topic
        key = message["key"]
        if key is not None:
            # kafka-python's default partitioner: Java's murmur2.
            assert meta.partition == (murmur2(key) & 0x7FFFFFFF) % 3
            assert by_key.setdefault(key, meta.partition) == meta.partition
        assert meta.timestamp == message["timestamp_ms"]
        offsets[meta.partition].append(meta.offset)
    for partition, got in offsets.items():
        assert got == list(range(len(got))), f"partition {partition}"

    consumer = consumer_for(broker)
    partitions = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(partitions)
    assert consumer.beginning_offsets(partitions) == {tp: 0 for tp in partitions}
    assert consumer.end_offsets(partitions) == {tp: len(offsets[tp.partition]) for tp in partitions}
    for tp in partitions:
        consumer.seek(tp, 0)
    records = poll_exactly(consumer, len(messages))
    consumer.close()

    expected = {
        (meta.partition, meta.offset): (m["key"], m["value"], m["headers"], m["timestamp_ms"])
        for m, meta in zip(messages, metadata)
    }
    seen = defaultdict(list)
    for record in records:
        assert record.topic == topic
        assert record.timestamp_type == 0  # CreateTime
        got = (record.key, record.value, [tuple(h) for h in record.headers], record.timestamp)
        assert got == expected[(record.partition, record.offset)], (record.partition, record.offset)
        seen[record.partition].append(record.offset)
    for partition in range(3):
        assert seen[partition] == offsets[partition]


def test_round_trip(broker):
    round_trip(broker, [{}, {"compression_type": "gzip"}])


def test_default_producer_is_idempotent_and_works(broker):
    """kafka-python 3's defaults: enable_idempotence=True (InitProducerId,
    producer id/epoch/sequence in every batch)."""
    topic = unique("kp-idem")
    admin = admin_client(broker)
    assert create(admin, {topic: {"num_partitions": 1, "replication_factor": 1}}) == {topic: 0}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    futures = [producer.send(topic, value=b"m%d" % i) for i in range(50)]
    producer.flush(timeout=60)
    assert [f.get(timeout=30).offset for f in futures] == list(range(50))
    producer.close()
    consumer = consumer_for(broker)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    assert [(r.offset, r.value) for r in poll_exactly(consumer, 50)] == [(i, b"m%d" % i) for i in range(50)]
    consumer.close()


def test_admin_create_and_delete_topics(broker):
    admin = admin_client(broker)
    first, second = unique("kp-admin"), unique("kp-admin")
    answer = create(
        admin,
        {
            first: {"num_partitions": 2, "replication_factor": 1},
            second: {"num_partitions": 1, "replication_factor": 1, "configs": {"retention.ms": "60000"}},
        },
    )
    assert answer == {first: 0, second: 0}
    assert {first, second} <= set(admin.list_topics())
    described = {t["name"]: t for t in admin.describe_topics([first, second])}
    assert sorted(p["partition_index"] for p in described[first]["partitions"]) == [0, 1]
    assert len(described[second]["partitions"]) == 1
    for topic in described.values():
        assert topic["error_code"] == 0
        for partition in topic["partitions"]:
            assert partition["error_code"] == 0
            assert partition["leader_id"] >= 0
            assert partition["replica_nodes"] == [partition["leader_id"]]
            assert partition["isr_nodes"] == [partition["leader_id"]]

    assert create(admin, {first: {"num_partitions": 2, "replication_factor": 1}}) == {first: ERROR_TOPIC_ALREADY_EXISTS}
    for partitions in (0, -2):
        name = unique("kp-bad")
        assert create(admin, {name: {"num_partitions": partitions, "replication_factor": 1}}) == {
            name: ERROR_INVALID_PARTITIONS
        }, partitions
    assert create(admin, {"no spaces please": {"num_partitions": 1, "replication_factor": 1}}) == {
        "no spaces please": ERROR_INVALID_TOPIC
    }

    answer = topic_errors(admin.delete_topics([first, second], raise_errors=False))
    assert answer == {first: 0, second: 0}
    wait_until(lambda: not {first, second} & set(admin.list_topics()), 10, "deleted topics gone")
    missing = unique("kp-missing")
    answer = topic_errors(admin.delete_topics([missing], raise_errors=False))
    assert answer == {missing: ERROR_UNKNOWN_TOPIC_OR_PARTITION}
    admin.close()
