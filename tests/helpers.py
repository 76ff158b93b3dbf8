"""Client-side helpers shared by the integration tests (confluent-kafka)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    """Poll `check()` until it returns something truthy; return that value.

    Fails with the last value seen when `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(interval)


def unique(prefix: str) -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# librdkafka logs through Python logging (served on poll), so a client that
# outlives its test and its broker cannot spray reconnect errors on stderr;
# pytest shows these records for failed tests.
LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")


def client_config(broker, **overrides) -> dict:
    config = {
        "bootstrap.servers": broker.bootstrap,
        "logger": LIBRDKAFKA_LOGGER,
        "broker.address.family": "v4",
        # Fail fast rather than retrying for minutes against a dead broker.
        "reconnect.backoff.max.ms": 1000,
    }
    config.update(overrides)
    return config


def make_admin(broker, **overrides) -> AdminClient:
    return AdminClient(client_config(broker, **overrides))


def make_producer(broker, **overrides) -> Producer:
    config = {"acks": "all", "linger.ms": 5}
    config.update(overrides)
    return Producer(client_config(broker, **config))


def make_consumer(broker, **overrides) -> Consumer:
    """An assign()-only consumer.

    librdkafka refuses to create a consumer without group.id, so each gets a
    fresh one; auto-commit is off and the tests never subscribe, so the
    group is never joined. auto.offset.reset defaults to "error" so that a
    silent reset can never make a test pass by accident.
    """
    config = {
        "group.id": unique("weir-tests"),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
    }
    config.update(overrides)
    return Consumer(client_config(broker, **config))


def create_topic(admin: AdminClient, name: str, partitions: int = 1, config=None, timeout=20):
    """CreateTopics and wait for the answer; raises the KafkaException on error."""
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    futures[name].result(timeout)


def topic_partition_count(client, topic: str, timeout=10) -> int | None:
    """Partitions of `topic` in a fresh Metadata answer, None if absent."""
    metadata = client.list_topics(timeout=timeout)
    entry = metadata.topics.get(topic)
    if entry is None or entry.error is not None:
        return None
    return len(entry.partitions)


@dataclass(frozen=True)
class Record:
    """One message as a client sees it, with only the fields a test compares."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple
    timestamp: int | None = None

    @staticmethod
    def of(message, with_timestamp=True) -> "Record":
        timestamp = message.timestamp()[1] if with_timestamp else None
        return Record(
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=message.value(),
            headers=tuple(message.headers() or ()),
            timestamp=timestamp,
        )


def produce_all(producer: Producer, topic: str, messages, timeout: float = 120.0):
    """Produce every message (dicts of Producer.produce kwargs), flush, and
    return one delivery report per message, in order: (error, partition,
    offset, timestamp).
    """
    reports = [None] * len(messages)

    def on_delivery_for(index):
        def on_delivery(error, message):
            reports[index] = (error, message.partition(), message.offset(), message.timestamp()[1])

        return on_delivery

    for index, message in enumerate(messages):
        while True:
            try:
                producer.produce(topic, on_delivery=on_delivery_for(index), **message)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"
    assert all(report is not None for report in reports)
    return reports


def assert_delivered(reports):
    errors = [(i, r[0]) for i, r in enumerate(reports) if r[0] is not None]
    assert not errors, f"{len(errors)} deliveries failed, first: {errors[:5]}"


def consume_exactly(consumer: Consumer, count: int, timeout: float = 60.0, grace: float = 1.0):
    """Consume `count` messages from the current assignment, failing on any
    error event, and then check that no further message arrives within
    `grace` seconds.
    """
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"consumed {len(messages)} of {count} messages in {timeout}s")
        for message in consumer.consume(min(count - len(messages), 10_000), timeout=0.5):
            error = message.error()
            if error is not None:
                raise AssertionError(f"consumer error: {error!r}")
            messages.append(message)
    extra = [m for m in consumer.consume(100, timeout=grace)]
    assert not extra, (
        f"expected exactly {count} messages, got more: "
        f"{[(m.partition(), m.offset(), m.error()) for m in extra[:5]]}"
    )
    return messages


def poll_one(consumer: Consumer, timeout: float = 30.0):
    """The next message from the current assignment; fails on an error event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, f"consumer error: {message.error()!r}"
        return message
    raise AssertionError(f"no message within {timeout}s")


def read_at(broker, topic: str, partition: int, offset: int):
    """The message at `offset`, read by a fresh consumer assigned there."""
    consumer = make_consumer(broker)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        return poll_one(consumer)
    finally:
        consumer.close()


def watermarks(consumer: Consumer, topic: str, partition: int, timeout=10):
    """(low, high) from a fresh ListOffsets, never the cached values."""
    return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)


def kafka_error_code(exception) -> int:
    """The KafkaError code inside a KafkaException (or a KafkaError)."""
    error = exception.args[0] if exception.args else exception
    assert isinstance(error, KafkaError), f"not a KafkaError: {exception!r}"
    return error.code()


def call_within(call, timeout: float, what: str):
    """`call()` on a helper thread; its value, or its exception re-raised.

    For client calls that can block in C without a deadline of their own
    (librdkafka's synchronous commit, consumer close): pytest-timeout's
    signal cannot interrupt them, so a broker that never answers would hang
    the run instead of failing the test. The stuck thread is abandoned.
    """
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{what} did not return within {timeout}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def committed_partitions(broker, group: str, topic: str, partitions: int, close_timeout: float = 30.0) -> list:
    """The TopicPartitions `committed()` answers for partitions 0..n-1 of
    `topic` in `group`, asked by a consumer that never joins the group;
    fails on any partition error."""
    consumer = make_consumer(broker, **{"group.id": group})
    try:
        answer = call_within(
            lambda: consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15),
            30,
            "committed()",
        )
    finally:
        call_within(consumer.close, close_timeout, "consumer close")
    errors = [(tp.partition, tp.error) for tp in answer if tp.error is not None]
    assert not errors, f"committed() partition errors: {errors}"
    return answer
