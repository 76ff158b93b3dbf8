"""confluent-kafka (librdkafka) against Weir: produce/consume with every
compression codec, ListOffsets, and the admin APIs with their error codes.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections import defaultdict

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

import kafka_wire as wire
from helpers import (
    Record,
    assert_delivered,
    consume_exactly,
    create_topic,
    kafka_error_code,
    make_admin,
    make_consumer,
    make_producer,
    poll_one,
    produce_all,
    topic_partition_count,
    unique,
    wait_until,
    watermarks,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 4
MESSAGES = 20_000


def build_message(i: int, codec: str, base_timestamp: int) -> dict:
    """Message number i: a mix of keys, values and headers covering the edge
    cases (null and empty keys and values, duplicate header keys, null
    header values), all reproducible from i.
    """
    rng = random.Random(i)
    if i % 500 == 3:
        key = None
    elif i % 500 == 4:
        key = b""
    else:
        key = f"user-{i % 211}".encode()
    if i % 97 == 0:
        value = None
    elif i % 89 == 1:
        value = b""
    else:
        # Half compressible text, half random bytes, of varying length.
        value = f"message {i} ".encode() * rng.randint(0, 20) + rng.randbytes(rng.randint(0, 300))
    headers = []
    if i % 5:
        headers = [("idx", str(i).encode()), ("codec", codec.encode())]
        if i % 7 == 0:
            headers += [("dup", b"first"), ("dup", b"second")]
        if i % 11 == 0:
            headers.append(("null", None))
        if i % 13 == 0:
            headers.append(("empty", b""))
    message = {"key": key, "value": value, "timestamp": base_timestamp + i}
    if headers:
        message["headers"] = headers
    return message


@pytest.mark.timeout(300)
def test_every_codec_round_trip(broker):
    topic = unique("codecs")
    admin = make_admin(broker)
    create_topic(admin, topic, PARTITIONS)

    base_timestamp = int(time.time() * 1000) - 60_000
    per_codec = MESSAGES // len(CODECS)
    messages, reports = [], []
    for n, codec in enumerate(CODECS):
        batch = [build_message(i, codec, base_timestamp) for i in range(n * per_codec, (n + 1) * per_codec)]
        producer = make_producer(broker, **{"compression.type": codec})
        reports += produce_all(producer, topic, batch)
        messages += batch
    assert len(messages) == len(reports) == MESSAGES
    assert_delivered(reports)

    # Partitions: librdkafka's default partitioner (consistent_random) puts a
    # non-empty key on crc32(key) % partitions; null and empty keys anywhere.
    key_partition = {}
    for message, (_, partition, _, _) in zip(messages, reports):
        assert 0 <= partition < PARTITIONS
        key = message["key"]
        if key:
            assert partition == zlib.crc32(key) % PARTITIONS, (key, partition)
            assert key_partition.setdefault(key, partition) == partition

    # Offsets: per partition, in produce order, exactly 0, 1, 2, ...
    offsets_by_partition = defaultdict(list)
    for _, partition, offset, timestamp in reports:
        offsets_by_partition[partition].append(offset)
    for partition in range(PARTITIONS):
        offsets = offsets_by_partition[partition]
        assert offsets == list(range(len(offsets))), f"partition {partition} offsets not dense/in order"
    assert [ts for *_, ts in reports] == [m["timestamp"] for m in messages]

    expected = {}
    for message, (_, partition, offset, _) in zip(messages, reports):
        expected[(partition, offset)] = Record(
            partition=partition,
            offset=offset,
            key=message["key"],
            value=message["value"],
            headers=tuple(message.get("headers", ())),
            timestamp=message["timestamp"],
        )

    consumer = make_consumer(broker)
    for partition in range(PARTITIONS):
        high = len(offsets_by_partition[partition])
        assert watermarks(consumer, topic, partition) == (0, high)

    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    consumed = consume_exactly(consumer, MESSAGES)
    got_offsets = defaultdict(list)
    for message in consumed:
        assert message.topic() == topic
        assert message.timestamp() == (TIMESTAMP_CREATE_TIME, expected[(message.partition(), message.offset())].timestamp)
        record = Record.of(message)
        assert record == expected[(record.partition, record.offset)]
        got_offsets[record.partition].append(record.offset)
    for partition in range(PARTITIONS):
        assert got_offsets[partition] == offsets_by_partition[partition], f"partition {partition} order"

    # Reading from the middle of a partition (usually the middle of a
    # compressed batch) starts exactly at the asked offset.
    for partition in range(PARTITIONS):
        middle = len(offsets_by_partition[partition]) // 2 + 1
        consumer.assign([TopicPartition(topic, partition, middle)])
        message = poll_one(consumer)
        assert Record.of(message) == expected[(partition, middle)]
    consumer.close()


def test_acks_settings_and_idempotence(broker):
    """acks=0, acks=1, acks=all, and the idempotent producer (InitProducerId,
    sequence numbers): each writes its own partition, all read back exactly."""
    topic = unique("acks")
    create_topic(make_admin(broker), topic, 4)
    settings = [
        {"acks": "0"},
        {"acks": "1"},
        {"acks": "all"},
        {"enable.idempotence": True, "compression.type": "lz4"},
    ]
    for partition, config in enumerate(settings):
        messages = [{"value": b"p%d-%d" % (partition, i), "key": b"k%d" % i, "partition": partition} for i in range(1000)]
        reports = produce_all(make_producer(broker, **config), topic, messages)
        assert_delivered(reports)
        if config.get("acks") != "0":  # with acks=0 no offset comes back
            assert [r[2] for r in reports] == list(range(1000)), config

    consumer = make_consumer(broker)
    for partition in range(len(settings)):
        assert wait_until(lambda: watermarks(consumer, topic, partition) == (0, 1000), 10, f"partition {partition} complete")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(len(settings))])
    got = sorted((m.partition(), m.offset(), m.key(), m.value()) for m in consume_exactly(consumer, 4000))
    consumer.close()
    assert got == [(p, i, b"k%d" % i, b"p%d-%d" % (p, i)) for p in range(len(settings)) for i in range(1000)]


def test_fetch_returns_a_batch_larger_than_the_fetch_limits(broker):
    """KIP-74: a consumer whose fetch limits are smaller than a batch still
    gets the whole first batch, so that it can make progress."""
    topic = unique("bigbatch")
    create_topic(make_admin(broker), topic, 1)
    big = bytes(range(256)) * 3000  # 768000 bytes
    producer = make_producer(broker, **{"compression.type": "none"})
    assert_delivered(produce_all(producer, topic, [{"value": big}, {"value": b"small"}]))
    consumer = make_consumer(
        broker, **{"fetch.max.bytes": 1000, "max.partition.fetch.bytes": 1000, "message.max.bytes": 1000, "receive.message.max.bytes": 2_000_000}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = [(m.offset(), m.value()) for m in consume_exactly(consumer, 2)]
    consumer.close()
    assert got == [(0, big), (1, b"small")]


def test_list_offsets(broker):
    topic = unique("offsets")
    admin = make_admin(broker)
    create_topic(admin, topic, 3)
    base = int(time.time() * 1000) - 60_000
    producer = make_producer(broker)
    # Partition 0: ten increasing timestamps, in two batches.
    for half in (range(0, 5), range(5, 10)):
        reports = produce_all(producer, topic, [{"value": b"v%d" % k, "partition": 0, "timestamp": base + 10 * k} for k in half])
        assert_delivered(reports)
    # Partition 1: timestamps out of order, one batch each.
    for ts in (10, 50, 20, 60):
        assert_delivered(produce_all(producer, topic, [{"value": b"x", "partition": 1, "timestamp": base + ts}]))
    # Partition 2 stays empty.

    consumer = make_consumer(broker)
    assert watermarks(consumer, topic, 0) == (0, 10)
    assert watermarks(consumer, topic, 1) == (0, 4)
    assert watermarks(consumer, topic, 2) == (0, 0)

    # offsets_for_times: the earliest offset whose timestamp >= the target,
    # -1 (OFFSET_END) when there is none.
    cases = [
        (0, base - 1, 0), (0, base, 0), (0, base + 1, 1), (0, base + 10, 1),
        (0, base + 15, 2), (0, base + 90, 9), (0, base + 91, -1),
        (1, base + 5, 0), (1, base + 15, 1), (1, base + 30, 1), (1, base + 55, 3), (1, base + 61, -1),
        (2, base, -1),
    ]
    # One request per case: a partition may appear only once per request.
    got = []
    for partition, timestamp, _ in cases:
        [answer] = consumer.offsets_for_times([TopicPartition(topic, partition, timestamp)], timeout=10)
        got.append((answer.partition, answer.offset, answer.error))
    assert got == [(p, want, None) for p, _, want in cases]
    # All three partitions in one request.
    answer = consumer.offsets_for_times([TopicPartition(topic, p, base + 15) for p in range(3)], timeout=10)
    assert [(tp.partition, tp.offset, tp.error) for tp in answer] == [(0, 2, None), (1, 1, None), (2, -1, None)]

    # The same through the admin API (ListOffsets from the AdminClient).
    specs = {
        TopicPartition(topic, 0): OffsetSpec.earliest(),
        TopicPartition(topic, 1): OffsetSpec.latest(),
        TopicPartition(topic, 2): OffsetSpec.latest(),
    }
    results = {tp.partition: f.result(10).offset for tp, f in admin.list_offsets(specs).items()}
    assert results == {0: 0, 1: 4, 2: 0}
    futures = admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.for_timestamp(base + 15)})
    [(_, future)] = futures.items()
    info = future.result(10)
    assert (info.offset, info.timestamp) == (2, base + 20)
    consumer.close()


def test_delete_topic(broker):
    topic = unique("delete-me")
    admin = make_admin(broker)
    create_topic(admin, topic, 2)
    producer = make_producer(broker)
    assert_delivered(produce_all(producer, topic, [{"value": b"old-%d" % i, "partition": i % 2} for i in range(6)]))
    assert topic_partition_count(admin, topic) == 2

    admin.delete_topics([topic], operation_timeout=10)[topic].result(15)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 10, "topic gone from metadata")

    # Deleting it again: UNKNOWN_TOPIC_OR_PART.
    with pytest.raises(KafkaException) as info:
        admin.delete_topics([topic], operation_timeout=10)[topic].result(15)
    assert kafka_error_code(info.value) == KafkaError.UNKNOWN_TOPIC_OR_PART

    # A new topic of the same name starts empty: no data from the old one.
    create_topic(admin, topic, 1)
    consumer = make_consumer(broker)
    assert watermarks(consumer, topic, 0) == (0, 0)
    reports = produce_all(make_producer(broker), topic, [{"value": b"new"}])
    assert [(r[0], r[1], r[2]) for r in reports] == [(None, 0, 0)]
    consumer.assign([TopicPartition(topic, 0, 0)])
    [message] = consume_exactly(consumer, 1)
    assert (message.offset(), message.value()) == (0, b"new")
    consumer.close()


def test_create_partitions(broker):
    topic = unique("grow")
    admin = make_admin(broker)
    create_topic(admin, topic, 2)
    producer = make_producer(broker)
    assert_delivered(produce_all(producer, topic, [{"value": b"a", "partition": 0}, {"value": b"b", "partition": 1}]))

    admin.create_partitions([NewPartitions(topic, 5)], operation_timeout=10)[topic].result(15)
    assert wait_until(lambda: topic_partition_count(admin, topic) == 5, 10, "5 partitions in metadata")

    consumer = make_consumer(broker)
    assert [watermarks(consumer, topic, p) for p in range(5)] == [(0, 1), (0, 1), (0, 0), (0, 0), (0, 0)]
    # librdkafka caches metadata: the producer made before the growth does not
    # know partition 4 yet and refuses it locally (_UNKNOWN_PARTITION), so
    # use a fresh one.
    reports = produce_all(make_producer(broker), topic, [{"value": b"new", "partition": 4}])
    assert [(r[0], r[1], r[2]) for r in reports] == [(None, 4, 0)]
    consumer.assign([TopicPartition(topic, 4, 0)])
    [message] = consume_exactly(consumer, 1)
    assert (message.partition(), message.offset(), message.value()) == (4, 0, b"new")
    consumer.close()

    for count in (3, 5):  # fewer, or as many as now: INVALID_PARTITIONS
        with pytest.raises(KafkaException) as info:
            admin.create_partitions([NewPartitions(topic, count)], operation_timeout=10)[topic].result(15)
        assert kafka_error_code(info.value) == KafkaError.INVALID_PARTITIONS, count
    missing = unique("missing")
    with pytest.raises(KafkaException) as info:
        admin.create_partitions([NewPartitions(missing, 3)], operation_timeout=10)[missing].result(15)
    assert kafka_error_code(info.value) == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert topic_partition_count(admin, topic) == 5


def describe_topic_configs(admin, topic) -> dict:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource], request_timeout=10)[resource].result(15)


def incremental_alter(admin, topic, *entries):
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(name, value, incremental_operation=operation) for name, value, operation in entries
        ],
    )
    return admin.incremental_alter_configs([resource], request_timeout=10)[resource].result(15)


def test_describe_and_alter_topic_configs(weir_broker):
    broker = weir_broker(args=["--log-retention-ms", "86400000"])
    admin = make_admin(broker)
    topic = unique("configs")
    create_topic(admin, topic, 1, config={"retention.ms": "3600000", "segment.bytes": "1048576"})

    configs = describe_topic_configs(admin, topic)
    for name in ("segment.bytes", "segment.ms", "retention.ms", "retention.bytes", "cleanup.policy", "flush.ms", "max.message.bytes"):
        assert name in configs, f"{name} missing from DescribeConfigs"
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["segment.bytes"].value == "1048576"
    assert configs["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    # Defaults: the broker's flags, or Weir's documented defaults.
    assert configs["retention.bytes"].value == "-1"
    assert configs["cleanup.policy"].value == "delete"
    assert configs["flush.ms"].value == "0"
    assert configs["max.message.bytes"].value == "1048588"
    other = unique("defaults")
    create_topic(admin, other, 1)
    defaults = describe_topic_configs(admin, other)
    assert defaults["retention.ms"].value == "86400000"  # from --log-retention-ms
    assert defaults["segment.bytes"].value == "1073741824"
    assert defaults["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    incremental_alter(
        admin,
        topic,
        ("retention.ms", "1000", AlterConfigOpType.SET),
        ("retention.bytes", "123456", AlterConfigOpType.SET),
    )
    configs = describe_topic_configs(admin, topic)
    assert (configs["retention.ms"].value, configs["retention.bytes"].value) == ("1000", "123456")
    assert configs["segment.bytes"].value == "1048576"  # untouched

    incremental_alter(admin, topic, ("retention.ms", None, AlterConfigOpType.DELETE))
    configs = describe_topic_configs(admin, topic)
    assert configs["retention.ms"].value == "86400000"  # back to the broker default
    assert configs["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.bytes"].value == "123456"

    bad = [
        ("no.such.config", "1"),  # unknown name
        ("segment.bytes", "1023"),  # below Weir's minimum of 1024
        ("retention.ms", "soon"),  # not a number
        ("cleanup.policy", "shred"),
    ]
    for name, value in bad:
        with pytest.raises(KafkaException) as info:
            incremental_alter(admin, topic, (name, value, AlterConfigOpType.SET))
        assert kafka_error_code(info.value) == KafkaError.INVALID_CONFIG, (name, value)
        with pytest.raises(KafkaException) as info:
            create_topic(admin, unique("badconfig"), 1, config={name: value})
        assert kafka_error_code(info.value) == KafkaError.INVALID_CONFIG, (name, value)
    configs = describe_topic_configs(admin, topic)
    assert configs["segment.bytes"].value == "1048576"

    missing = unique("missing")
    with pytest.raises(KafkaException) as info:
        incremental_alter(admin, missing, ("retention.ms", "1000", AlterConfigOpType.SET))
    assert kafka_error_code(info.value) == KafkaError.UNKNOWN_TOPIC_OR_PART
    with pytest.raises(KafkaException) as info:
        describe_topic_configs(admin, missing)
    assert kafka_error_code(info.value) == KafkaError.UNKNOWN_TOPIC_OR_PART


def create_error(admin, new_topic) -> int:
    future = admin.create_topics([new_topic], operation_timeout=10, request_timeout=15)[new_topic.topic]
    with pytest.raises(KafkaException) as info:
        future.result(20)
    return kafka_error_code(info.value)


def test_create_topic_errors(weir_broker):
    broker = weir_broker(args=["--num-partitions", "3"])
    admin = make_admin(broker)
    topic = unique("exists")
    create_topic(admin, topic, 2)
    assert create_error(admin, NewTopic(topic, 2, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    assert create_error(admin, NewTopic(topic, 7, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    assert topic_partition_count(admin, topic) == 2

    for name in ("bad name", "a/b", "caf\u00e9", ".", "..", "x" * 250, "tab\there"):
        assert create_error(admin, NewTopic(name, 1, 1)) == KafkaError.TOPIC_EXCEPTION, repr(name)
    longest = "y" * 249
    create_topic(admin, longest, 1)  # 249 characters is Kafka's limit, and valid

    assert create_error(admin, NewTopic(unique("zero"), 0, 1)) == KafkaError.INVALID_PARTITIONS
    assert create_error(admin, NewTopic(unique("rf0"), 1, 0)) == KafkaError.INVALID_REPLICATION_FACTOR
    assert create_error(admin, NewTopic(unique("rf2"), 1, 2)) == KafkaError.INVALID_REPLICATION_FACTOR

    # -1 partitions / replication factor: the broker's defaults (KIP-464).
    default = unique("default")
    admin.create_topics([NewTopic(default, -1, -1)], operation_timeout=10)[default].result(15)
    assert topic_partition_count(admin, default) == 3

    # validate_only: the answer as if created, nothing created.
    checked = unique("validate")
    admin.create_topics([NewTopic(checked, 2, 1)], validate_only=True, operation_timeout=10)[checked].result(15)
    assert checked not in admin.list_topics(timeout=10).topics
    future = admin.create_topics([NewTopic(topic, 2, 1)], validate_only=True, operation_timeout=10)[topic]
    with pytest.raises(KafkaException) as info:
        future.result(15)
    assert kafka_error_code(info.value) == KafkaError.TOPIC_ALREADY_EXISTS

    # One request, several topics: each gets its own answer.
    good, bad = unique("good"), "bad!"
    futures = admin.create_topics(
        [NewTopic(good, 2, 1), NewTopic(topic, 1, 1), NewTopic(bad, 1, 1)], operation_timeout=10
    )
    futures[good].result(15)
    for name, code in ((topic, KafkaError.TOPIC_ALREADY_EXISTS), (bad, KafkaError.TOPIC_EXCEPTION)):
        with pytest.raises(KafkaException) as info:
            futures[name].result(15)
        assert kafka_error_code(info.value) == code, name
    names = admin.list_topics(timeout=10).topics
    assert good in names and bad not in names
    assert topic_partition_count(admin, good) == 2


def test_many_partitions(broker):
    topic = unique("wide")
    admin = make_admin(broker)
    create_topic(admin, topic, 128)
    assert topic_partition_count(admin, topic) == 128
    messages = [{"value": b"to %d" % p, "partition": p} for p in range(128)] * 2
    reports = produce_all(make_producer(broker), topic, messages)
    assert [(r[0], r[1], r[2]) for r in reports] == [(None, p, n) for n in (0, 1) for p in range(128)]
    consumer = make_consumer(broker)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(128)])
    got = sorted((m.partition(), m.offset(), m.value()) for m in consume_exactly(consumer, 256))
    consumer.close()
    assert got == sorted((p, n, b"to %d" % p) for n in (0, 1) for p in range(128))


@pytest.mark.timeout(120)
def test_delete_topic_under_load(broker):
    """Deleting a topic while a producer and a consumer are busy on it: the
    clients get errors, not hangs; the broker stays up; the name can be
    used again at once, empty."""
    topic = unique("busy")
    admin = make_admin(broker)
    create_topic(admin, topic, 2)
    stop = threading.Event()
    errors = []

    def produce_loop():
        producer = make_producer(broker, **{"message.timeout.ms": 5000})
        i = 0
        while not stop.is_set():
            try:
                producer.produce(topic, value=b"v%d" % i, partition=i % 2,
                                 on_delivery=lambda e, m: errors.append(e) if e else None)
                i += 1
            except (BufferError, KafkaException):
                pass
            producer.poll(0.001)
        producer.flush(10)

    def consume_loop():
        consumer = make_consumer(broker, **{"auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
        while not stop.is_set():
            consumer.poll(0.1)
        consumer.close()

    threads = [threading.Thread(target=produce_loop), threading.Thread(target=consume_loop)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        admin.delete_topics([topic], operation_timeout=10)[topic].result(15)
        time.sleep(1.0)
        assert broker.alive()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a client hung after the delete"
    assert broker.alive()

    # The producer may have auto-created the topic again after the delete;
    # either way it must be usable: delete (if there), create, read empty.
    admin.delete_topics([topic], operation_timeout=10)[topic].exception(15)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 10, "topic gone")
    create_topic(admin, topic, 1)
    consumer = make_consumer(broker)
    assert watermarks(consumer, topic, 0) == (0, 0)
    consumer.close()


def test_message_too_large(broker):
    admin = make_admin(broker)
    small = unique("small")
    create_topic(admin, small, 1, config={"max.message.bytes": "10000"})
    # The client's own limits are raised so that the broker is the one saying no.
    producer = make_producer(
        broker, **{"message.max.bytes": 4_000_000, "batch.size": 4_000_000, "compression.type": "none", "linger.ms": 0}
    )
    reports = produce_all(producer, small, [{"value": b"x" * 20_000}])
    assert reports[0][0] is not None and reports[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, reports
    reports = produce_all(producer, small, [{"value": b"y" * 9_000}])
    assert [(r[0], r[2]) for r in reports] == [(None, 0)]

    # The broker-wide default, --message-max-bytes 1048588.
    default = unique("default-limit")
    create_topic(admin, default, 1)
    reports = produce_all(producer, default, [{"value": b"z" * 1_100_000}])
    assert reports[0][0] is not None and reports[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, reports
    reports = produce_all(producer, default, [{"value": b"w" * 1_000_000}])
    assert [(r[0], r[2]) for r in reports] == [(None, 0)]

    consumer = make_consumer(broker)
    assert watermarks(consumer, small, 0) == (0, 1)
    assert watermarks(consumer, default, 0) == (0, 1)
    consumer.assign([TopicPartition(small, 0, 0), TopicPartition(default, 0, 0)])
    got = sorted((m.topic(), m.offset(), m.value()) for m in consume_exactly(consumer, 2))
    assert got == sorted([(small, 0, b"y" * 9_000), (default, 0, b"w" * 1_000_000)])
    consumer.close()


def test_fetch_unknown_topic_or_partition(broker):
    admin = make_admin(broker)
    topic = unique("known")
    create_topic(admin, topic, 1)
    missing = unique("missing")
    with wire.Connection(broker) as conn:
        fetch_versions = wire.api_versions(conn)["api_keys"].get(wire.API_FETCH)
        assert fetch_versions and fetch_versions[0] <= 4 <= fetch_versions[1], fetch_versions
        for name, partition in ((missing, 0), (topic, 1), (topic, 99)):
            answer = wire.fetch_v4(conn, name, partition, 0)
            assert answer["error_code"] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION, (name, partition, answer)
            assert answer["records"] in (None, b""), answer
        answer = wire.fetch_v4(conn, topic, 0, 0)
        assert (answer["error_code"], answer["high_watermark"], answer["records"]) == (0, 0, b"")
    # A consumer's fetch does not create the topic.
    assert missing not in admin.list_topics(timeout=10).topics
