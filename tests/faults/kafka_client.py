"""Kafka side of the history: a producer that records every write with its
outcome, and a reader that reads every partition back for the checker.

The producer is what the cluster tests will run through failovers:
acks=all, idempotent, unique values, each aimed at a known partition
(round-robin) so that even writes with an unknown outcome have a partition
the checker can look in.
"""

from __future__ import annotations

import threading
import time
import uuid
from functools import partial

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from helpers import LIBRDKAFKA_LOGGER

from .history import FAILED, OK, UNKNOWN, History, Read

# Delivery errors after which the record is certainly not in the log: the
# broker rejected the batch, or librdkafka never sent it. Every other error
# (timeouts, lost connections, purged while in flight) leaves the outcome
# unknown, as Jepsen would: better to check less than to accuse wrongly.
DEFINITE_FAILURES = {
    KafkaError._PURGE_QUEUE,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._INVALID_ARG,
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
}


def kafka_config(bootstrap: str, **overrides) -> dict:
    config = {
        "bootstrap.servers": bootstrap,
        "logger": LIBRDKAFKA_LOGGER,
        "broker.address.family": "v4",
        # Reconnect quickly to a node that comes back, and never wait long
        # for one that does not.
        "reconnect.backoff.max.ms": 500,
        "socket.connection.setup.timeout.ms": 3000,
    }
    config.update(overrides)
    return config


def outcome_of(error: KafkaError) -> str:
    """FAILED when `error` proves the record was not written, else UNKNOWN."""
    return FAILED if error.code() in DEFINITE_FAILURES else UNKNOWN


class ProduceRecorder:
    """Produces unique values `<process>-<n>` to `topic` on a thread of its
    own until `stop()`, recording each write in `history`.

    `fatal_errors` collects librdkafka's fatal errors: an idempotent
    producer goes fatal when the broker forgets its sequence numbers, which
    is a broker bug a test should fail on even if nothing was lost.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        history: History,
        process: str = "p0",
        interval_s: float = 0.002,
        config: dict | None = None,
    ):
        self.topic = topic
        self.partitions = partitions
        self.history = history
        self.process = process
        self.interval_s = interval_s
        self.fatal_errors: list[str] = []
        settings = {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
            "error_cb": self._on_error,
        }
        settings.update(config or {})
        self.producer = Producer(kafka_config(bootstrap, **settings))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._produce_until_stopped, name=f"recorder-{process}", daemon=True)

    def start(self) -> "ProduceRecorder":
        self._thread.start()
        return self

    def stop(self, flush_timeout_s: float = 40.0) -> None:
        """Stop producing, wait up to `flush_timeout_s` for outstanding
        deliveries, then purge the rest (outcome failed if never sent,
        unknown if in flight)."""
        self._stopping.set()
        self._thread.join()
        self.producer.flush(flush_timeout_s)
        self.producer.purge()
        self.producer.flush(5)

    def wait_for_acknowledgements(self, count: int, timeout_s: float) -> None:
        """Block until `count` more writes than now were acknowledged."""
        target = self.history.counts()[OK] + count
        deadline = time.monotonic() + timeout_s
        while self.history.counts()[OK] < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.process}: fewer than {count} acknowledgements within {timeout_s}s; "
                    f"history {self.history.counts()}, fatal errors {self.fatal_errors}"
                )
            time.sleep(0.05)

    def _produce_until_stopped(self) -> None:
        sent = 0
        while not self._stopping.is_set():
            partition = sent % self.partitions
            value = f"{self.process}-{sent}"
            write = self.history.invoke(self.process, partition, value)
            try:
                self.producer.produce(
                    self.topic, value=value.encode(), partition=partition, on_delivery=partial(self._on_delivery, write)
                )
            except BufferError:
                self.history.complete(write, FAILED, error="local queue full")
                self.producer.poll(0.1)
            except KafkaException as error:
                self.history.complete(write, FAILED, error=str(error))
            sent += 1
            self.producer.poll(0)
            time.sleep(self.interval_s)

    def _on_delivery(self, write, error, message) -> None:
        if error is None:
            self.history.complete(write, OK, offset=message.offset())
        else:
            self.history.complete(write, outcome_of(error), error=error.name())

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal_errors.append(str(error))


def reading_consumer(bootstrap: str, **overrides) -> Consumer:
    """A read_committed consumer that never joins or commits to a group
    (librdkafka wants a group.id even for assign())."""
    config = {
        "group.id": f"weir-faults-reader-{uuid.uuid4().hex[:10]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "error",
    }
    config.update(overrides)
    return Consumer(kafka_config(bootstrap, **config))


class TailReader:
    """Reads every partition from the beginning on a thread of its own while
    the faults happen, keeping what it saw in `observed`: the checker then
    makes sure nothing a consumer saw was taken back later. Errors while the
    broker is down are expected and skipped; librdkafka reconnects."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.consumer = reading_consumer(bootstrap)
        self.consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(partitions)])
        self.observed: list[Read] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read_until_stopped, name=f"tail-{topic}", daemon=True)

    def start(self) -> "TailReader":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self.consumer.close()

    def _read_until_stopped(self) -> None:
        while not self._stopping.is_set():
            for message in self.consumer.consume(500, timeout=0.2):
                if message.error() is None:
                    self.observed.append(Read(message.partition(), message.offset(), message.value().decode()))


def read_back(bootstrap: str, topic: str, partitions: int, timeout_s: float = 60.0) -> list[Read]:
    """Every committed record of every partition, by a fresh read_committed
    consumer from the beginning up to the end offsets it finds at the start."""
    consumer = reading_consumer(bootstrap, **{"enable.partition.eof": True})
    try:
        ends = {
            partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15, cached=False)[1]
            for partition in range(partitions)
        }
        return _read_until(consumer, topic, ends, timeout_s)
    finally:
        consumer.close()


def _read_until(consumer: Consumer, topic: str, ends: dict[int, int], timeout_s: float) -> list[Read]:
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in ends])
    reads: list[Read] = []
    unfinished = {partition for partition, end in ends.items() if end > 0}
    deadline = time.monotonic() + timeout_s
    while unfinished:
        if time.monotonic() > deadline:
            raise AssertionError(f"read-back of {topic} did not reach the end offsets {ends} within {timeout_s}s")
        for message in consumer.consume(1000, timeout=0.5):
            partition, offset = message.partition(), message.offset()
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"read-back of {topic} partition {partition}: {error!r}")
            if error is None:
                reads.append(Read(partition, offset, message.value().decode()))
                offset += 1
            if offset >= ends[partition]:
                unfinished.discard(partition)
    return reads
