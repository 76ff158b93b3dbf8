"""Retention from the client's point of view: the log start offset moves
forward, what remains reads back exactly, and fetching below the log start
is OFFSET_OUT_OF_RANGE (handled by the consumer's auto.offset.reset).

Weir allows segment.bytes down to 1024 (Kafka: 1 MiB) so that these tests
roll many segments with little data.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

import kafka_wire as wire
from helpers import (
    assert_delivered,
    consume_exactly,
    create_topic,
    make_admin,
    make_consumer,
    make_producer,
    poll_one,
    produce_all,
    unique,
    wait_until,
    watermarks,
)

SEGMENT_BYTES = 1024
RETENTION_BYTES = 4096
VALUE_BYTES = 100


@pytest.fixture
def retention_broker(weir_broker):
    return weir_broker(args=["--log-retention-check-interval-ms", "200"])


def value_of(i: int) -> bytes:
    return f"{i:06d}".encode().ljust(VALUE_BYTES, b".")


def single_message_producer(broker):
    # One record per batch, so that segments hold few, known-size batches.
    return make_producer(broker, **{"batch.num.messages": 1, "linger.ms": 0})


def produce_numbered(broker, topic, numbers, timestamp=None):
    messages = []
    for i in numbers:
        message = {"value": value_of(i), "partition": 0}
        if timestamp is not None:
            message["timestamp"] = timestamp
        messages.append(message)
    reports = produce_all(single_message_producer(broker), topic, messages)
    assert_delivered(reports)
    assert [r[2] for r in reports] == list(numbers)


def read_all_from(broker, topic, low, high, reset="earliest"):
    consumer = make_consumer(broker, **{"auto.offset.reset": reset})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    messages = consume_exactly(consumer, high - low)
    consumer.close()
    return [(m.offset(), m.value()) for m in messages]


def retained_bound() -> int:
    """Most messages that can remain once size retention has run: what fits
    in retention.bytes plus one more segment (every record holds at least
    VALUE_BYTES bytes)."""
    return (RETENTION_BYTES + SEGMENT_BYTES) // VALUE_BYTES


def wait_for_settled_log_start(broker, topic, total, done, what, timeout=30.0):
    """Poll ListOffsets until `done(low, high)` holds and the log start has
    not moved for a second (five retention checks): retention may take more
    than one pass, and the checks after this must not race with it."""
    consumer = make_consumer(broker)
    seen = {"low": None, "since": 0.0}

    def settled():
        low, high = watermarks(consumer, topic, 0)
        assert high == total, (low, high)
        now = time.monotonic()
        if low != seen["low"]:
            seen.update(low=low, since=now)
        if done(low, high) and now - seen["since"] >= 1.0:
            return low, high
        return None

    try:
        return wait_until(settled, timeout, what, interval=0.1)
    finally:
        consumer.close()


def wait_for_size_retention(broker, topic, total):
    return wait_for_settled_log_start(
        broker, topic, total,
        lambda low, high: 0 < low and high - low <= retained_bound(),
        "size retention to delete old segments",
    )


@pytest.mark.timeout(120)
def test_size_retention(retention_broker):
    broker = retention_broker
    topic = unique("size-retention")
    create_topic(
        make_admin(broker), topic, 1,
        config={"segment.bytes": str(SEGMENT_BYTES), "retention.bytes": str(RETENTION_BYTES)},
    )
    total = 300
    produce_numbered(broker, topic, range(total))
    low, high = wait_for_size_retention(broker, topic, total)

    # Consuming from the earliest offset starts exactly at the log start.
    assert read_all_from(broker, topic, low, high) == [(i, value_of(i)) for i in range(low, high)]

    # Fetch below the log start: OFFSET_OUT_OF_RANGE on the wire ...
    with wire.Connection(broker) as conn:
        assert wire.fetch_v4(conn, topic, 0, 0)["error_code"] == wire.ERROR_OFFSET_OUT_OF_RANGE
        assert wire.fetch_v4(conn, topic, 0, low - 1)["error_code"] == wire.ERROR_OFFSET_OUT_OF_RANGE
        at_start = wire.fetch_v4(conn, topic, 0, low)
        assert (at_start["error_code"], at_start["high_watermark"]) == (0, high)
        assert at_start["records"], "no records at the log start offset"
        at_end = wire.fetch_v4(conn, topic, 0, high)
        assert (at_end["error_code"], at_end["records"] or b"") == (0, b"")
        assert wire.fetch_v4(conn, topic, 0, high + 1)["error_code"] == wire.ERROR_OFFSET_OUT_OF_RANGE

    # ... which each auto.offset.reset policy handles its own way.
    consumer = make_consumer(broker, **{"auto.offset.reset": "error"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    event = wait_until(lambda: consumer.poll(0.5), 20, "an offset-reset error event")
    assert event.error() is not None and event.error().code() == KafkaError._AUTO_OFFSET_RESET, event.error()
    assert "Offset out of range" in event.error().str()
    consumer.close()

    consumer = make_consumer(broker, **{"auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    message = poll_one(consumer)
    assert (message.offset(), message.value()) == (low, value_of(low))
    consumer.close()

    consumer = make_consumer(broker, **{"auto.offset.reset": "latest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    assert consumer.consume(10, timeout=2) == []
    produce_numbered(broker, topic, [high])
    message = poll_one(consumer)
    assert (message.offset(), message.value()) == (high, value_of(high))
    consumer.close()


@pytest.mark.timeout(120)
def test_retention_bytes_set_later_applies(retention_broker):
    broker = retention_broker
    topic = unique("late-retention")
    admin = make_admin(broker)
    create_topic(admin, topic, 1, config={"segment.bytes": str(SEGMENT_BYTES)})
    total = 200
    produce_numbered(broker, topic, range(total))
    time.sleep(1)  # several retention checks: nothing may go yet
    consumer = make_consumer(broker)
    assert watermarks(consumer, topic, 0) == (0, total)
    consumer.close()

    resource = ConfigResource(
        ResourceType.TOPIC, topic,
        incremental_configs=[ConfigEntry("retention.bytes", str(RETENTION_BYTES), incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([resource])[resource].result(15)
    low, high = wait_for_size_retention(broker, topic, total)
    assert read_all_from(broker, topic, low, high) == [(i, value_of(i)) for i in range(low, high)]


@pytest.mark.timeout(120)
def test_time_retention_keeps_recent_messages(retention_broker):
    broker = retention_broker
    topic = unique("time-retention")
    create_topic(
        make_admin(broker), topic, 1,
        config={"segment.bytes": str(SEGMENT_BYTES), "retention.ms": "60000"},
    )
    old = int(time.time() * 1000) - 3_600_000
    produce_numbered(broker, topic, range(0, 100), timestamp=old)
    produce_numbered(broker, topic, range(100, 120))  # now: within retention

    # Every segment holding only hour-old messages goes; a segment holds at
    # most SEGMENT_BYTES // VALUE_BYTES of these messages. Recent ones stay.
    boundary = 100 - SEGMENT_BYTES // VALUE_BYTES

    def expired(low, high):
        assert low <= 100, f"log start {low}: recent messages deleted"
        return low >= boundary

    low, _ = wait_for_settled_log_start(broker, topic, 120, expired, "time retention to delete expired segments")
    assert read_all_from(broker, topic, low, 120) == [(i, value_of(i)) for i in range(low, 120)]


@pytest.mark.timeout(120)
def test_time_retention_can_empty_the_log(retention_broker):
    """Kafka deletes even the active segment once all of it has expired
    (rolling a new, empty one); offsets continue where they were."""
    broker = retention_broker
    topic = unique("all-expired")
    create_topic(
        make_admin(broker), topic, 1,
        config={"segment.bytes": str(SEGMENT_BYTES), "retention.ms": "60000"},
    )
    produce_numbered(broker, topic, range(30), timestamp=int(time.time() * 1000) - 3_600_000)
    consumer = make_consumer(broker)
    wait_until(lambda: watermarks(consumer, topic, 0) == (30, 30), 30, "every expired message deleted")
    consumer.close()
    produce_numbered(broker, topic, [30])
    assert read_all_from(broker, topic, 30, 31) == [(30, value_of(30))]
