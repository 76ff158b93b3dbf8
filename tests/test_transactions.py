"""Kafka transactions (KIP-98, KIP-447), as clients see them.

A transactional producer (`transactional.id`, init/begin/commit/abort,
send_offsets_to_transaction) from confluent-kafka (librdkafka) and from
kafka-python 3, and what `read_committed` and `read_uncommitted` consumers
then get: which (partition, offset, value) records, where the consumer's
position ends (each COMMIT/ABORT marker takes one offset in every partition
of the transaction, and consumers step over it), and what ListOffsets and
Fetch say about the last stable offset (LSO). Then fencing by
`transactional.id` (and of zombie writes at the partition), transaction
timeouts, consumer-group offsets committed with a transaction (with the
KIP-447 checks: stale members refused, pending offsets unstable), the
KIP-890 check that a transactional write outside an ongoing transaction is
refused, compressed transactional batches, aborted transactions over many
segments, clean restarts and `kill -9` of the broker with committed and
open transactions, and idempotent retries across a restart.

Everything checked is Apache Kafka's behaviour as a client observes it.
Markers are written after EndTxn is answered (as in Kafka), so whatever
depends on a marker being in the log is waited for with a deadline, never
assumed at once. A few answers that clients hide (marker batches, the
aborted-transactions list of Fetch, pending transactional offsets,
InitProducerId and EndTxn error codes) are read with hand-built requests
(kafka_wire's primitives, https://kafka.apache.org/protocol.html).
"""

from __future__ import annotations

import struct
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest
from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import OffsetSpec
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaPythonTopicPartition
from kafka.structs import OffsetAndMetadata

import kafka_wire as wire
from helpers import (
    assert_delivered,
    call_within,
    consume_exactly,
    create_topic,
    make_admin,
    make_consumer,
    make_producer,
    produce_all,
    unique,
    wait_until,
    watermarks,
)

# Deadline of every transactional API call (init, commit, abort, send offsets).
TXN_CALL_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 20.0
# How long a marker written after EndTxn may take to show, and how long an
# expired transaction may take to be aborted by the coordinator after its
# timeout (Kafka checks every transaction.abort.timed.out.transaction.
# cleanup.interval.ms, 10 s by default).
MARKER_TIMEOUT_S = 20.0
EXPIRY_TIMEOUT_S = 30.0

READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"

# What librdkafka reports when another producer took the transactional.id
# (it normalises both broker codes to _FENCED).
FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}

API_FIND_COORDINATOR = 10
API_INIT_PRODUCER_ID = 22
API_END_TXN = 26
API_OFFSET_FETCH = 9

ERROR_NONE = 0
ERROR_INVALID_REQUEST = 42
ERROR_INVALID_PRODUCER_EPOCH = 47
ERROR_INVALID_TXN_STATE = 48
ERROR_INVALID_PRODUCER_ID_MAPPING = 49
ERROR_INVALID_TRANSACTION_TIMEOUT = 50
ERROR_INVALID_RECORD = 87
ERROR_UNSTABLE_OFFSET_COMMIT = 88
ERROR_PRODUCER_FENCED = 90

CONTROL_ABORT = 0
CONTROL_COMMIT = 1


# --- clients -------------------------------------------------------------------

def transactional_producer(broker, transactional_id: str, **overrides):
    """A confluent-kafka producer with `transactional.id`, after init_transactions()."""
    producer = make_producer(broker, **{"transactional.id": transactional_id, **overrides})
    producer.init_transactions(TXN_CALL_TIMEOUT_S)
    return producer


def send_offsets(producer, positions, group_metadata) -> None:
    """send_offsets_to_transaction() with a deadline of our own: librdkafka
    can block in it past its timeout (confluentinc/librdkafka#5456) and,
    once the group coordinator's connection was torn down by a restart of
    the only broker, forever (#5511)."""
    call_within(
        lambda: producer.send_offsets_to_transaction(positions, group_metadata, TXN_CALL_TIMEOUT_S),
        TXN_CALL_TIMEOUT_S + 10,
        "send_offsets_to_transaction",
    )


def produce_in_transaction(producer, topic: str, messages) -> list:
    """Produce and flush `messages` inside the producer's open transaction;
    every one must be delivered. Returns the delivery reports."""
    reports = produce_all(producer, topic, messages, timeout=60.0)
    assert_delivered(reports)
    return reports


def offsets_by_partition(reports) -> dict:
    """{partition: [offset, ...]} from delivery reports, in produce order."""
    offsets = defaultdict(list)
    for _error, partition, offset, _timestamp in reports:
        offsets[partition].append(offset)
    return dict(offsets)


def close_consumer(consumer) -> None:
    call_within(consumer.close, CLOSE_TIMEOUT_S, "consumer close")


def read_records(broker, topic: str, partitions, isolation: str, count: int, grace: float = 1.0, start: int = 0) -> dict:
    """Exactly `count` records of `partitions` from offset `start`, read by
    a fresh assign()ed consumer at `isolation`: {partition: [(offset,
    value), ...]} in delivery order (partitions with no record are absent)."""
    consumer = make_consumer(broker, **{"isolation.level": isolation})
    try:
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        messages = consume_exactly(consumer, count, timeout=60.0, grace=grace) if count else []
        if not count:
            extra = consumer.consume(100, timeout=grace)
            assert not extra, f"expected no record, got {[(m.partition(), m.offset(), m.error()) for m in extra]}"
    finally:
        close_consumer(consumer)
    records = defaultdict(list)
    for message in messages:
        records[message.partition()].append((message.offset(), message.value()))
    return dict(records)


def drained_positions(consumer, topic: str, expected: dict, timeout: float = 15.0) -> dict:
    """Poll `consumer` (which must get no further record) until position()
    of each partition in `expected` equals it; returns the positions.

    librdkafka moves the position past a control marker when it reads one,
    so a drained read_committed consumer sits at the log end, not on the
    marker.
    """
    partitions = [TopicPartition(topic, p) for p in sorted(expected)]
    deadline = time.monotonic() + timeout
    while True:
        extra = consumer.consume(100, timeout=0.2)
        assert not extra, f"unexpected records: {[(m.partition(), m.offset(), m.error()) for m in extra]}"
        got = {tp.partition: tp.offset for tp in consumer.position(partitions)}
        if got == expected:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"positions {got} after {timeout}s, expected {expected}")


def high_watermark(broker, topic: str, partition: int, isolation: str) -> int:
    """The end offset by ListOffsets(latest) at `isolation` (the high
    watermark for read_uncommitted, the last stable offset for read_committed)."""
    consumer = make_consumer(broker, **{"isolation.level": isolation})
    try:
        low, high = watermarks(consumer, topic, partition)
    finally:
        close_consumer(consumer)
    assert low == 0, f"log start offset {low}"
    return high


def wait_for_end(broker, topic: str, partition: int, isolation: str, end: int, timeout=MARKER_TIMEOUT_S) -> None:
    wait_until(
        lambda: high_watermark(broker, topic, partition, isolation) == end,
        timeout,
        f"{isolation} end offset {end} of {topic}[{partition}]",
        interval=0.2,
    )


def admin_end_offset(admin, topic: str, partition: int, isolation: IsolationLevel) -> int:
    tp = TopicPartition(topic, partition)
    futures = admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=isolation, request_timeout=10)
    return futures[tp].result(15).offset


def kafka_python_consumer(broker, isolation: str, **config) -> KafkaConsumer:
    settings = {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": isolation,
        "request_timeout_ms": 15000,
    }
    settings.update(config)
    return KafkaConsumer(bootstrap_servers=broker.bootstrap, **settings)


def kafka_python_read(broker, topic: str, partitions, isolation: str, count: int, timeout=60.0) -> dict:
    """Exactly `count` records via kafka-python from offset 0:
    {partition: [(offset, value), ...]}."""
    consumer = kafka_python_consumer(broker, isolation)
    try:
        consumer.assign([KafkaPythonTopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        records = []
        deadline = time.monotonic() + timeout
        while len(records) < count:
            assert time.monotonic() < deadline, f"kafka-python consumed {len(records)} of {count}"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        extra = [r for batch in consumer.poll(timeout_ms=1000).values() for r in batch]
        assert not extra, f"more than {count} records: {[(r.partition, r.offset) for r in extra[:5]]}"
    finally:
        consumer.close()
    by_partition = defaultdict(list)
    for record in records:
        by_partition[record.partition].append((record.offset, record.value))
    return dict(by_partition)


def fatal_error(raised) -> KafkaError:
    """The KafkaError of a pytest.raises(KafkaException) block."""
    error = raised.value.args[0]
    assert isinstance(error, KafkaError), f"not a KafkaError: {raised.value!r}"
    return error


# --- wire: Fetch v4 with an isolation level, record batches ----------------------

@dataclass(frozen=True)
class Batch:
    """The header of one RecordBatch v2 and, for a control batch, its marker."""

    base_offset: int
    last_offset: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    transactional: bool
    control: bool
    control_type: int | None = None  # CONTROL_ABORT or CONTROL_COMMIT
    control_key_version: int | None = None
    control_value: bytes | None = None


def _zigzag(reader: wire.Reader) -> int:
    value = reader.uvarint()
    return (value >> 1) ^ -(value & 1)


def parse_batches(data: bytes | None) -> list[Batch]:
    """RecordBatch v2 headers of a Fetch answer's records (a trailing
    partial batch, which Fetch may return, is ignored)."""
    batches = []
    position = 0
    data = data or b""
    while position + 12 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, position)
        end = position + 12 + length
        if end > len(data):
            break
        (_leader_epoch, magic, _crc, attributes, last_offset_delta, _base_ts, _max_ts,
         producer_id, producer_epoch, base_sequence, count) = struct.unpack_from(">ibIhiqqqhii", data, position + 12)
        assert magic == 2, f"batch at {base_offset} has magic {magic}"
        control = bool(attributes & 0x20)
        fields = {}
        if control:
            assert attributes & 0x07 == 0, "a control batch must not be compressed"
            record = wire.Reader(data[position + 61:end])
            _zigzag(record)  # record length
            record.int8()  # attributes
            _zigzag(record)  # timestamp delta
            _zigzag(record)  # offset delta
            key = record._take(_zigzag(record))
            value_length = _zigzag(record)
            value = record._take(value_length) if value_length >= 0 else None
            key_reader = wire.Reader(key)
            fields = {
                "control_key_version": key_reader.int16(),
                "control_type": key_reader.int16(),
                "control_value": value,
            }
        batches.append(Batch(
            base_offset=base_offset,
            last_offset=base_offset + last_offset_delta,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            base_sequence=base_sequence,
            record_count=count,
            transactional=bool(attributes & 0x10),
            control=control,
            **fields,
        ))
        position = end
    return batches


def fetch_raw(broker, topic: str, partition: int, offset: int, isolation: str) -> dict:
    """One-partition Fetch v4 at `isolation`: error_code, high_watermark,
    last_stable_offset, aborted_transactions [(producer_id, first_offset)]
    (None when the broker sent null) and batches (parsed headers)."""
    with wire.Connection(broker) as conn:
        answer = wire.fetch_v4(conn, topic, partition, offset, read_committed=isolation == READ_COMMITTED)
    answer["batches"] = parse_batches(answer.pop("records"))
    return answer


def markers(batches) -> list[tuple[int, int]]:
    """[(offset, control type)] of the control batches."""
    return [(b.base_offset, b.control_type) for b in batches if b.control]


def check_marker_batch(batch: Batch) -> None:
    """A control batch as Kafka writes it: transactional, one record whose
    key is (version 0, type) and whose value starts with version 0."""
    assert batch.transactional, f"control batch at {batch.base_offset} is not transactional"
    assert batch.record_count == 1 and batch.last_offset == batch.base_offset, batch
    assert batch.control_key_version == 0, batch
    assert batch.control_type in (CONTROL_ABORT, CONTROL_COMMIT), batch
    value = batch.control_value or b""
    assert len(value) >= 6 and struct.unpack(">h", value[:2])[0] == 0, f"marker value {value!r}"


def transactional_batch(producer_id, producer_epoch, base_sequence, values, base_timestamp) -> bytes:
    """An uncompressed transactional RecordBatch v2 (attributes bit 4)."""
    encoded = b"".join(wire.encode_record(i, i, None, value) for i, value in enumerate(values))
    after_crc = (
        wire.int16(0x10)
        + wire.int32(len(values) - 1)
        + wire.int64(base_timestamp)
        + wire.int64(base_timestamp + len(values) - 1)
        + wire.int64(producer_id)
        + wire.int16(producer_epoch)
        + wire.int32(base_sequence)
        + wire.int32(len(values))
        + encoded
    )
    after_length = wire.int32(-1) + wire.int8(2) + struct.pack(">I", wire.crc32c(after_crc)) + after_crc
    return wire.int64(0) + wire.int32(len(after_length)) + after_length


def produce_transactional_v3(broker, transactional_id, topic, partition, batch: bytes) -> tuple[int, int]:
    """Produce v3 (acks=all) of one transactional batch: (error_code, base_offset)."""
    partitions = wire.int32(1) + wire.int32(partition) + wire.int32(len(batch)) + batch
    body = (
        wire.string(transactional_id) + wire.int16(-1) + wire.int32(10_000)
        + wire.int32(1) + wire.string(topic) + partitions
    )
    with wire.Connection(broker) as conn:
        r = conn.response(conn.send_request(wire.API_PRODUCE, 3, body))
        topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.int32(), r.int16(), r.int64(), r.int64()))))
        r.int32()  # throttle_time_ms
        r.done()
    [(name, [(index, error_code, base_offset, _log_append_time)])] = topics
    assert (name, index) == (topic, partition)
    return error_code, base_offset


# --- wire: transaction coordinator and OffsetFetch --------------------------------

def init_producer_id_v1(conn, transactional_id: str | None, timeout_ms: int) -> tuple[int, int, int]:
    """InitProducerId v1: (error_code, producer_id, producer_epoch)."""
    body = wire.string(transactional_id) + wire.int32(timeout_ms)
    r = conn.response(conn.send_request(API_INIT_PRODUCER_ID, 1, body))
    r.int32()  # throttle_time_ms
    answer = (r.int16(), r.int64(), r.int16())
    r.done()
    return answer


def end_txn(conn, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool, version=1) -> int:
    """EndTxn v0-v2 (the same non-flexible body): its error code."""
    body = (
        wire.string(transactional_id) + wire.int64(producer_id) + wire.int16(producer_epoch)
        + wire.int8(1 if commit else 0)
    )
    r = conn.response(conn.send_request(API_END_TXN, version, body))
    r.int32()  # throttle_time_ms
    code = r.int16()
    r.done()
    return code


def find_transaction_coordinator_v1(conn, transactional_id: str) -> tuple[int, int, str, int]:
    """FindCoordinator v1 with key_type 1 (transaction): (error, node, host, port)."""
    body = wire.string(transactional_id) + wire.int8(1)
    r = conn.response(conn.send_request(API_FIND_COORDINATOR, 1, body))
    r.int32()  # throttle_time_ms
    error = r.int16()
    r.string()  # error_message
    answer = (error, r.int32(), r.string(), r.int32())
    r.done()
    return answer


def offset_fetch_v7(broker, group: str, topic: str, partitions, require_stable: bool) -> dict:
    """OffsetFetch v7 (flexible): {partition: (committed offset, error)}."""
    topics = (
        wire.uvarint(2) + wire.compact_string(topic)
        + wire.uvarint(len(partitions) + 1) + b"".join(wire.int32(p) for p in partitions)
        + wire.NO_TAGGED_FIELDS
    )
    body = wire.compact_string(group) + topics + wire.int8(1 if require_stable else 0) + wire.NO_TAGGED_FIELDS
    with wire.Connection(broker) as conn:
        r = conn.response(conn.send_request(API_OFFSET_FETCH, 7, body, flexible=True), flexible_header=True)
        r.int32()  # throttle_time_ms

        def partition(r):
            entry = (r.int32(), r.int64(), r.int32(), r.compact_string(), r.int16())
            r.tagged_fields()
            return entry

        def topic_entry(r):
            entry = (r.compact_string(), r.compact_array(partition))
            r.tagged_fields()
            return entry

        answered = r.compact_array(topic_entry) or []
        error = r.int16()
        r.tagged_fields()
        r.done()
    assert error == ERROR_NONE, f"OffsetFetch v7 error {error}"
    return {index: (offset, code) for name, entries in answered if name == topic
            for index, offset, _epoch, _metadata, code in entries or []}


def committed_by_admin(admin, group: str, topic: str, partitions) -> dict:
    """{partition: offset} from AdminClient.list_consumer_group_offsets."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result(15)
    errors = [(tp.partition, tp.error) for tp in result.topic_partitions if tp.error is not None]
    assert not errors, f"list_consumer_group_offsets partition errors: {errors}"
    return {tp.partition: tp.offset for tp in result.topic_partitions}


# --- 1. commit ------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_committed_transactions_are_read_in_order_and_each_marker_takes_one_offset(broker):
    """Two committed transactions on a 3-partition topic: read_committed
    consumers get exactly their records, in order, at offsets that leave one
    gap per marker and per partition of the transaction (only those); the
    consumer's position ends past the last marker; ListOffsets, Fetch and
    the marker batches themselves say what Kafka's would."""
    topic = unique("txn-commit")
    admin = make_admin(broker)
    create_topic(admin, topic, 3)
    producer = transactional_producer(broker, unique("tid-commit"))

    first = [{"key": f"k{i}".encode(), "value": f"first {i}".encode(), "partition": i % 3} for i in range(30)]
    producer.begin_transaction()
    first_reports = produce_in_transaction(producer, topic, first)
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    assert offsets_by_partition(first_reports) == {p: list(range(10)) for p in range(3)}

    # The second transaction writes to partitions 0 and 1 only.
    second = [{"value": f"second {i}".encode(), "partition": i % 2} for i in range(10)]
    producer.begin_transaction()
    second_reports = produce_in_transaction(producer, topic, second)
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    # The first transaction's COMMIT marker is at offset 10 of each partition.
    assert offsets_by_partition(second_reports) == {0: list(range(11, 16)), 1: list(range(11, 16))}

    expected = defaultdict(list)
    for message, (_, partition, offset, _) in zip(first + second, first_reports + second_reports):
        expected[partition].append((offset, message["value"]))
    log_end = {0: 17, 1: 17, 2: 11}

    consumer = make_consumer(broker, **{"isolation.level": READ_COMMITTED})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        got = defaultdict(list)
        for message in consume_exactly(consumer, 40, timeout=60.0):
            got[message.partition()].append((message.offset(), message.value()))
        assert dict(got) == dict(expected)
        assert drained_positions(consumer, topic, log_end) == log_end
        for partition, end in log_end.items():
            assert watermarks(consumer, topic, partition) == (0, end)
    finally:
        close_consumer(consumer)
    for partition, end in log_end.items():
        assert high_watermark(broker, topic, partition, READ_UNCOMMITTED) == end
    # Assigned at a marker's offset, a consumer starts with what follows it.
    assert read_records(broker, topic, range(3), READ_COMMITTED, 10, start=10) == {
        p: expected[p][10:] for p in range(2)}

    for partition, end in log_end.items():
        answer = fetch_raw(broker, topic, partition, 0, READ_COMMITTED)
        assert answer["error_code"] == ERROR_NONE
        assert (answer["high_watermark"], answer["last_stable_offset"]) == (end, end)
        assert not answer["aborted_transactions"], answer["aborted_transactions"]
        batches = answer["batches"]
        want_markers = [(10, CONTROL_COMMIT), (16, CONTROL_COMMIT)] if partition < 2 else [(10, CONTROL_COMMIT)]
        assert markers(batches) == want_markers
        data = [b for b in batches if not b.control]
        assert all(b.transactional for b in data), data
        assert sorted(o for b in data for o in range(b.base_offset, b.last_offset + 1)) == [o for o, _ in expected[partition]]
        producer_ids = {(b.producer_id, b.producer_epoch) for b in batches}
        assert len(producer_ids) == 1 and next(iter(producer_ids))[0] >= 0, producer_ids
        for batch in batches:
            if batch.control:
                check_marker_batch(batch)


# --- 2. abort -------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_aborted_transaction_is_hidden_from_read_committed_only(broker):
    """An aborted transaction, then a committed one, then a plain record:
    read_committed gets the committed and the plain records only,
    read_uncommitted gets the aborted ones too; Fetch lists the aborted
    transaction for read_committed."""
    topic = unique("txn-abort")
    admin = make_admin(broker)
    create_topic(admin, topic, 2)
    producer = transactional_producer(broker, unique("tid-abort"))

    aborted = [{"value": f"aborted {i}".encode(), "partition": i % 2} for i in range(6)]
    producer.begin_transaction()
    aborted_reports = produce_in_transaction(producer, topic, aborted)
    producer.abort_transaction(TXN_CALL_TIMEOUT_S)
    assert offsets_by_partition(aborted_reports) == {0: [0, 1, 2], 1: [0, 1, 2]}

    committed = [{"value": f"committed {i}".encode(), "partition": i % 2} for i in range(4)]
    producer.begin_transaction()
    committed_reports = produce_in_transaction(producer, topic, committed)
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    # The ABORT marker took offset 3.
    assert offsets_by_partition(committed_reports) == {0: [4, 5], 1: [4, 5]}

    # A plain record after the COMMIT marker (offset 6) has been written.
    for partition in range(2):
        wait_for_end(broker, topic, partition, READ_UNCOMMITTED, 7)
    plain = [{"value": f"plain {p}".encode(), "partition": p} for p in range(2)]
    plain_reports = produce_all(make_producer(broker), topic, plain)
    assert_delivered(plain_reports)
    assert offsets_by_partition(plain_reports) == {0: [7], 1: [7]}

    def values(messages, reports):
        return {p: [(o, m["value"]) for m, (_, q, o, _) in zip(messages, reports) if q == p] for p in range(2)}

    aborted_values = values(aborted, aborted_reports)
    visible = {p: values(committed, committed_reports)[p] + values(plain, plain_reports)[p] for p in range(2)}
    everything = {p: aborted_values[p] + visible[p] for p in range(2)}

    assert read_records(broker, topic, range(2), READ_COMMITTED, 6) == visible
    assert read_records(broker, topic, range(2), READ_UNCOMMITTED, 12) == everything
    # Starting inside the aborted transaction hides its rest just the same.
    assert read_records(broker, topic, range(2), READ_COMMITTED, 6, start=1) == visible

    consumer = make_consumer(broker, **{"isolation.level": READ_COMMITTED})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
        consume_exactly(consumer, 6)
        assert drained_positions(consumer, topic, {0: 8, 1: 8}) == {0: 8, 1: 8}
    finally:
        close_consumer(consumer)

    uncommitted = fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)
    assert markers(uncommitted["batches"]) == [(3, CONTROL_ABORT), (6, CONTROL_COMMIT)]
    transactional_ids = {b.producer_id for b in uncommitted["batches"] if b.transactional}
    assert len(transactional_ids) == 1, uncommitted["batches"]
    producer_id = transactional_ids.pop()
    for batch in uncommitted["batches"]:
        if batch.control:
            check_marker_batch(batch)

    answer = fetch_raw(broker, topic, 0, 0, READ_COMMITTED)
    assert answer["error_code"] == ERROR_NONE
    assert (answer["high_watermark"], answer["last_stable_offset"]) == (8, 8)
    assert answer["aborted_transactions"] == [(producer_id, 0)]
    # Fetched from after the aborted transaction, none is listed.
    later = fetch_raw(broker, topic, 0, 4, READ_COMMITTED)
    assert not later["aborted_transactions"], later["aborted_transactions"]
    assert [b.base_offset for b in later["batches"]][:1] == [4]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_compressed_transactional_batches(broker, codec):
    """Compressed transactional batches: an aborted and a committed
    transaction, read back exactly as with uncompressed ones."""
    topic = unique(f"txn-{codec}")
    create_topic(make_admin(broker), topic, 1)
    producer = transactional_producer(broker, unique("tid-compressed"), **{"compression.codec": codec})
    values = [f"{codec} record {i} ".encode() * 20 for i in range(20)]
    producer.begin_transaction()
    produce_in_transaction(producer, topic, [{"value": v, "partition": 0} for v in values[:10]])
    producer.abort_transaction(TXN_CALL_TIMEOUT_S)
    producer.begin_transaction()
    produce_in_transaction(producer, topic, [{"value": v, "partition": 0} for v in values[10:]])
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    assert read_records(broker, topic, [0], READ_COMMITTED, 10) == {0: [(11 + i, v) for i, v in enumerate(values[10:])]}
    assert read_records(broker, topic, [0], READ_UNCOMMITTED, 20) == {
        0: [(i, v) for i, v in enumerate(values[:10])] + [(11 + i, v) for i, v in enumerate(values[10:])]}


# --- 3. open transactions and the last stable offset -------------------------------

@pytest.mark.timeout(90)
def test_open_transaction_holds_read_committed_at_the_last_stable_offset(broker):
    """While a transaction is open, read_committed consumers stop before its
    first record — even a plain record written after it waits — and every
    way of asking for the end (librdkafka's watermarks, AdminClient
    list_offsets, kafka-python end_offsets, Fetch) gives the last stable
    offset; after the commit, the same consumer gets the rest."""
    topic = unique("txn-open")
    admin = make_admin(broker)
    create_topic(admin, topic, 1)
    plain_producer = make_producer(broker)
    before = [{"value": f"before {i}".encode(), "partition": 0} for i in range(3)]
    assert_delivered(produce_all(plain_producer, topic, before))

    producer = transactional_producer(broker, unique("tid-open"))
    producer.begin_transaction()
    pending = [{"value": f"pending {i}".encode(), "partition": 0} for i in range(4)]
    pending_reports = produce_in_transaction(producer, topic, pending)
    assert offsets_by_partition(pending_reports) == {0: [3, 4, 5, 6]}
    pending_timestamp = pending_reports[0][3]
    after = [{"value": b"plain after the open transaction", "partition": 0}]
    assert offsets_by_partition(produce_all(plain_producer, topic, after)) == {0: [7]}

    consumer = make_consumer(broker, **{"isolation.level": READ_COMMITTED})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        first = consume_exactly(consumer, 3, grace=1.5)
        assert [(m.offset(), m.value()) for m in first] == [(i, m["value"]) for i, m in enumerate(before)]
        assert watermarks(consumer, topic, 0) == (0, 3)
        assert high_watermark(broker, topic, 0, READ_UNCOMMITTED) == 8
        assert admin_end_offset(admin, topic, 0, IsolationLevel.READ_COMMITTED) == 3
        assert admin_end_offset(admin, topic, 0, IsolationLevel.READ_UNCOMMITTED) == 8
        kafka_python = kafka_python_consumer(broker, READ_COMMITTED)
        try:
            tp = KafkaPythonTopicPartition(topic, 0)
            assert kafka_python.end_offsets([tp]) == {tp: 3}
        finally:
            kafka_python.close()

        answer = fetch_raw(broker, topic, 0, 0, READ_COMMITTED)
        assert (answer["error_code"], answer["high_watermark"], answer["last_stable_offset"]) == (ERROR_NONE, 8, 3)
        assert max(b.last_offset for b in answer["batches"]) == 2, answer["batches"]
        at_lso = fetch_raw(broker, topic, 0, 3, READ_COMMITTED)
        assert (at_lso["error_code"], at_lso["batches"]) == (ERROR_NONE, [])
        assert len(fetch_raw(broker, topic, 0, 3, READ_UNCOMMITTED)["batches"]) >= 2
        # A timestamp lookup finds nothing at or above the LSO for read_committed
        # (Kafka filters the answer by the LSO; read_uncommitted by the high watermark).
        [found] = consumer.offsets_for_times([TopicPartition(topic, 0, pending_timestamp)], timeout=10)
        assert (found.offset, found.error) == (-1, None)
        uncommitted_reader = make_consumer(broker, **{"isolation.level": READ_UNCOMMITTED})
        try:
            [found] = uncommitted_reader.offsets_for_times([TopicPartition(topic, 0, pending_timestamp)], timeout=10)
            assert (found.offset, found.error) == (3, None)
        finally:
            close_consumer(uncommitted_reader)

        producer.commit_transaction(TXN_CALL_TIMEOUT_S)
        rest = consume_exactly(consumer, 5, timeout=MARKER_TIMEOUT_S)
        assert [(m.offset(), m.value()) for m in rest] == (
            [(3 + i, m["value"]) for i, m in enumerate(pending)] + [(7, after[0]["value"])]
        )
        assert drained_positions(consumer, topic, {0: 9}) == {0: 9}
        assert watermarks(consumer, topic, 0) == (0, 9)
    finally:
        close_consumer(consumer)


@pytest.mark.timeout(90)
def test_interleaved_transactions_lso_is_the_first_open_offset(broker):
    """Two producers' transactions interleaved on one partition: the one
    that commits first stays invisible while the earlier-started one is
    open; when that one aborts, read_committed gets exactly the committed
    record, filtering the aborted records around it."""
    topic = unique("txn-interleaved")
    create_topic(make_admin(broker), topic, 1)
    aborting = transactional_producer(broker, unique("tid-aborting"))
    committing = transactional_producer(broker, unique("tid-committing"))

    aborting.begin_transaction()
    committing.begin_transaction()
    assert offsets_by_partition(produce_in_transaction(aborting, topic, [{"value": b"a1", "partition": 0}])) == {0: [0]}
    assert offsets_by_partition(produce_in_transaction(committing, topic, [{"value": b"b1", "partition": 0}])) == {0: [1]}
    assert offsets_by_partition(produce_in_transaction(aborting, topic, [{"value": b"a2", "partition": 0}])) == {0: [2]}
    committing.commit_transaction(TXN_CALL_TIMEOUT_S)
    wait_for_end(broker, topic, 0, READ_UNCOMMITTED, 4)

    # b1 is committed, but a1 (offset 0) is still open.
    assert high_watermark(broker, topic, 0, READ_COMMITTED) == 0
    assert read_records(broker, topic, [0], READ_COMMITTED, 0, grace=1.5) == {}
    answer = fetch_raw(broker, topic, 0, 0, READ_COMMITTED)
    assert (answer["high_watermark"], answer["last_stable_offset"], answer["batches"]) == (4, 0, [])

    aborting.abort_transaction(TXN_CALL_TIMEOUT_S)
    wait_for_end(broker, topic, 0, READ_COMMITTED, 5)
    assert read_records(broker, topic, [0], READ_COMMITTED, 1) == {0: [(1, b"b1")]}
    assert read_records(broker, topic, [0], READ_UNCOMMITTED, 3) == {0: [(0, b"a1"), (1, b"b1"), (2, b"a2")]}

    uncommitted = fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)
    assert markers(uncommitted["batches"]) == [(3, CONTROL_COMMIT), (4, CONTROL_ABORT)]
    by_offset = {b.base_offset: b for b in uncommitted["batches"]}
    aborting_id, committing_id = by_offset[0].producer_id, by_offset[1].producer_id
    assert aborting_id != committing_id
    assert by_offset[2].producer_id == aborting_id
    assert (by_offset[3].producer_id, by_offset[4].producer_id) == (committing_id, aborting_id)
    committed = fetch_raw(broker, topic, 0, 0, READ_COMMITTED)
    assert committed["last_stable_offset"] == 5
    assert committed["aborted_transactions"] == [(aborting_id, 0)]


# --- 4. offsets committed with a transaction ----------------------------------------

@pytest.mark.timeout(120)
def test_send_offsets_to_transaction_commits_with_the_transaction_only(broker):
    """consume → produce → send_offsets_to_transaction(position,
    consumer_group_metadata): the group's offsets are invisible while the
    transaction is open, become the positions sent on commit, and stay
    unchanged on abort."""
    source, sink = unique("txn-source"), unique("txn-sink")
    admin = make_admin(broker)
    create_topic(admin, source, 2)
    create_topic(admin, sink, 1)
    inputs = [{"value": f"in {i}".encode(), "partition": i % 2} for i in range(20)]
    assert_delivered(produce_all(make_producer(broker), source, inputs))
    group = unique("txn-group")

    consumer = make_consumer(broker, **{"group.id": group, "isolation.level": READ_COMMITTED})
    producer = transactional_producer(broker, unique("tid-offsets"))
    try:
        assignment = [TopicPartition(source, p, 0) for p in range(2)]
        consumer.assign(assignment)
        consumed = consume_exactly(consumer, 20)

        producer.begin_transaction()
        outputs = [{"value": b"out " + m.value(), "partition": 0} for m in consumed]
        produce_in_transaction(producer, sink, outputs)
        positions = consumer.position([TopicPartition(source, p) for p in range(2)])
        assert [(tp.partition, tp.offset) for tp in positions] == [(0, 10), (1, 10)]
        send_offsets(producer, positions, consumer.consumer_group_metadata())

        # Pending: nothing committed yet.
        assert offset_fetch_v7(broker, group, source, [0, 1], require_stable=False) == {
            0: (-1, ERROR_NONE), 1: (-1, ERROR_NONE)}

        producer.commit_transaction(TXN_CALL_TIMEOUT_S)
        wait_until(
            lambda: offset_fetch_v7(broker, group, source, [0, 1], require_stable=True)
            == {0: (10, ERROR_NONE), 1: (10, ERROR_NONE)},
            MARKER_TIMEOUT_S, "the transaction's offsets to be committed",
        )
        assert committed_by_admin(admin, group, source, [0, 1]) == {0: 10, 1: 10}
        reader = make_consumer(broker, **{"group.id": group, "isolation.level": READ_COMMITTED})
        try:
            committed = reader.committed([TopicPartition(source, p) for p in range(2)], timeout=15)
            assert [(tp.partition, tp.offset, tp.error) for tp in committed] == [(0, 10, None), (1, 10, None)]
        finally:
            close_consumer(reader)

        # Round two is aborted: neither its output nor its offsets count.
        more = [{"value": f"more {i}".encode(), "partition": 0} for i in range(5)]
        assert_delivered(produce_all(make_producer(broker), source, more))
        consumed_more = consume_exactly(consumer, 5)
        producer.begin_transaction()
        produce_in_transaction(producer, sink, [{"value": b"out " + m.value(), "partition": 0} for m in consumed_more])
        positions = consumer.position([TopicPartition(source, p) for p in range(2)])
        assert [(tp.partition, tp.offset) for tp in positions] == [(0, 15), (1, 10)]
        send_offsets(producer, positions, consumer.consumer_group_metadata())
        producer.abort_transaction(TXN_CALL_TIMEOUT_S)
        wait_until(
            lambda: offset_fetch_v7(broker, group, source, [0, 1], require_stable=True)
            == {0: (10, ERROR_NONE), 1: (10, ERROR_NONE)},
            MARKER_TIMEOUT_S, "the aborted offsets to be dropped",
        )
        assert committed_by_admin(admin, group, source, [0, 1]) == {0: 10, 1: 10}
    finally:
        close_consumer(consumer)

    sink_records = read_records(broker, sink, [0], READ_COMMITTED, 20)
    assert [value for _, value in sink_records[0]] == [o["value"] for o in outputs]
    assert [offset for offset, _ in sink_records[0]] == list(range(20))


@pytest.mark.timeout(60)
def test_pending_transactional_offsets_are_unstable_for_require_stable_reads(broker):
    """KIP-447: while a transaction holds offsets for a partition, OffsetFetch
    with require_stable (what read_committed consumers send) answers
    UNSTABLE_OFFSET_COMMIT for it, and the committed offset once the
    transaction ends; other partitions of the group answer as usual."""
    source = unique("unstable-source")
    create_topic(make_admin(broker), source, 2)
    group = unique("unstable-group")
    metadata_source = make_consumer(broker, **{"group.id": group})
    metadata = metadata_source.consumer_group_metadata()
    close_consumer(metadata_source)
    producer = transactional_producer(broker, unique("tid-unstable"))
    producer.begin_transaction()
    produce_in_transaction(producer, source, [{"value": b"output", "partition": 1}])
    send_offsets(producer, [TopicPartition(source, 0, 7)], metadata)

    assert offset_fetch_v7(broker, group, source, [0, 1], require_stable=False) == {
        0: (-1, ERROR_NONE), 1: (-1, ERROR_NONE)}
    assert offset_fetch_v7(broker, group, source, [0, 1], require_stable=True) == {
        0: (-1, ERROR_UNSTABLE_OFFSET_COMMIT), 1: (-1, ERROR_NONE)}
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    wait_until(
        lambda: offset_fetch_v7(broker, group, source, [0, 1], require_stable=True)
        == {0: (7, ERROR_NONE), 1: (-1, ERROR_NONE)},
        MARKER_TIMEOUT_S, "the committed offset to be stable",
    )


@pytest.mark.timeout(120)
def test_exactly_once_loop_with_a_subscribed_consumer(broker):
    """The consume-transform-produce loop as applications write it: a
    subscribe()d read_committed consumer, one transaction per batch with
    the group metadata of a real member (KIP-447). Every input becomes
    exactly one output and the group's offsets end at the log ends."""
    source, sink = unique("eos-source"), unique("eos-sink")
    admin = make_admin(broker)
    create_topic(admin, source, 3)
    create_topic(admin, sink, 1)
    inputs = [{"value": f"in {i}".encode(), "partition": i % 3} for i in range(30)]
    assert_delivered(produce_all(make_producer(broker), source, inputs))
    group = unique("eos-group")

    consumer = make_consumer(broker, **{
        "group.id": group,
        "isolation.level": READ_COMMITTED,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    producer = transactional_producer(broker, unique("tid-eos"))
    consumer.subscribe([source])
    processed = []
    try:
        deadline = time.monotonic() + 60
        while len(processed) < 30:
            assert time.monotonic() < deadline, f"processed {len(processed)} of 30"
            batch = consumer.consume(100, timeout=0.5)
            errors = [m.error() for m in batch if m.error() is not None]
            assert not errors, f"consumer errors: {errors}"
            if not batch:
                continue
            producer.begin_transaction()
            for message in batch:
                producer.produce(sink, value=b"out " + message.value(), partition=0)
            metadata = consumer.consumer_group_metadata()
            send_offsets(producer, consumer.position(consumer.assignment()), metadata)
            producer.commit_transaction(TXN_CALL_TIMEOUT_S)
            processed.extend(message.value() for message in batch)
    finally:
        close_consumer(consumer)

    assert sorted(processed) == sorted(m["value"] for m in inputs)
    wait_until(
        lambda: committed_by_admin(admin, group, source, range(3)) == {0: 10, 1: 10, 2: 10},
        MARKER_TIMEOUT_S, "the group's offsets at the log ends",
    )
    outputs = read_records(broker, sink, [0], READ_COMMITTED, 30)
    assert sorted(value for _, value in outputs[0]) == sorted(b"out " + m["value"] for m in inputs)


@pytest.mark.timeout(90)
def test_send_offsets_with_a_departed_members_metadata_is_refused(broker):
    """KIP-447: offsets sent with the group metadata of a member that has
    left the group are refused (UNKNOWN_MEMBER_ID); librdkafka makes that
    an abortable error, and after the abort nothing is committed."""
    source = unique("stale-source")
    admin = make_admin(broker)
    create_topic(admin, source, 1)
    assert_delivered(produce_all(make_producer(broker), source, [{"value": b"in", "partition": 0}]))
    group = unique("stale-group")
    member = make_consumer(broker, **{
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    member.subscribe([source])
    try:
        poll_deadline = time.monotonic() + 30
        while not member.assignment():
            assert time.monotonic() < poll_deadline, "the member never got an assignment"
            member.consume(10, timeout=0.2)
        departed = member.consumer_group_metadata()
    finally:
        close_consumer(member)

    producer = transactional_producer(broker, unique("tid-stale"))
    producer.begin_transaction()
    produce_in_transaction(producer, source, [{"value": b"out", "partition": 0}])
    with pytest.raises(KafkaException) as raised:
        send_offsets(producer, [TopicPartition(source, 0, 1)], departed)
    error = fatal_error(raised)
    assert error.txn_requires_abort() and not error.fatal(), f"send_offsets with a departed member: {error!r}"
    producer.abort_transaction(TXN_CALL_TIMEOUT_S)
    assert offset_fetch_v7(broker, group, source, [0], require_stable=False) == {0: (-1, ERROR_NONE)}
    assert read_records(broker, source, [0], READ_COMMITTED, 1) == {0: [(0, b"in")]}


# --- kafka-python ---------------------------------------------------------------

@pytest.mark.timeout(120)
def test_kafka_python_transactions(broker):
    """kafka-python's transactional producer: commit, abort (with offsets
    sent to a group), commit again; kafka-python and librdkafka consumers
    agree on what read_committed and read_uncommitted see; only the
    committed transaction's group offset counts."""
    topic = unique("kp-txn")
    create_topic(make_admin(broker), topic, 2)
    group = unique("kp-txn-group")
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        transactional_id=unique("tid-kp"),
        linger_ms=5,
        max_block_ms=20000,
        request_timeout_ms=15000,
    )
    try:
        call_within(producer.init_transactions, TXN_CALL_TIMEOUT_S, "init_transactions")

        def transaction(values, end, offsets=None):
            producer.begin_transaction()
            futures = [producer.send(topic, value=v, partition=i % 2) for i, v in enumerate(values)]
            producer.flush(timeout=30)
            metadata = [future.get(timeout=10) for future in futures]
            if offsets is not None:
                call_within(lambda: producer.send_offsets_to_transaction(offsets, group), TXN_CALL_TIMEOUT_S,
                            "send_offsets_to_transaction")
            call_within(end, TXN_CALL_TIMEOUT_S, end.__name__)
            return [(m.partition, m.offset) for m in metadata]

        source = KafkaPythonTopicPartition(topic, 0)
        first = [f"first {i}".encode() for i in range(6)]
        assert transaction(first, producer.commit_transaction) == [(i % 2, i // 2) for i in range(6)]
        aborted = [f"aborted {i}".encode() for i in range(4)]
        assert transaction(aborted, producer.abort_transaction,
                           {source: OffsetAndMetadata(99, "", -1)}) == [(i % 2, 4 + i // 2) for i in range(4)]
        last = [f"last {i}".encode() for i in range(2)]
        assert transaction(last, producer.commit_transaction,
                           {source: OffsetAndMetadata(3, "", -1)}) == [(0, 7), (1, 7)]
    finally:
        producer.close(timeout=10)

    committed = {p: [(i // 2, first[i]) for i in range(p, 6, 2)] + [(7, last[p])] for p in range(2)}
    everything = {p: [(i // 2, first[i]) for i in range(p, 6, 2)]
                  + [(4 + i // 2, aborted[i]) for i in range(p, 4, 2)] + [(7, last[p])] for p in range(2)}
    for partition in range(2):
        wait_for_end(broker, topic, partition, READ_COMMITTED, 9)
    assert kafka_python_read(broker, topic, range(2), READ_COMMITTED, 8) == committed
    assert kafka_python_read(broker, topic, range(2), READ_UNCOMMITTED, 12) == everything
    assert read_records(broker, topic, range(2), READ_COMMITTED, 8) == committed

    consumer = kafka_python_consumer(broker, READ_COMMITTED)
    try:
        tps = [KafkaPythonTopicPartition(topic, p) for p in range(2)]
        assert consumer.end_offsets(tps) == {tp: 9 for tp in tps}
    finally:
        consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        wait_until(
            lambda: {tp: m.offset for tp, m in admin.list_group_offsets(group)[group].items()} == {source: 3},
            MARKER_TIMEOUT_S, "the committed transaction's group offset",
        )
    finally:
        admin.close()


# --- 5. fencing -----------------------------------------------------------------

@pytest.mark.timeout(90)
def test_second_producer_with_the_same_id_fences_the_first_and_aborts_its_transaction(broker):
    """init_transactions() by a second producer with the same
    transactional.id aborts the first one's open transaction with a bumped
    epoch; the first producer's next call fails with a fatal fenced error,
    and a zombie write with its old epoch is refused by the partition even
    before the new producer has written there."""
    topic = unique("txn-fence")
    create_topic(make_admin(broker), topic, 1)
    transactional_id = unique("tid-fence")
    first = transactional_producer(broker, transactional_id)
    first.begin_transaction()
    zombie = [{"value": f"zombie {i}".encode(), "partition": 0} for i in range(3)]
    assert offsets_by_partition(produce_in_transaction(first, topic, zombie)) == {0: [0, 1, 2]}

    second = transactional_producer(broker, transactional_id)
    wait_for_end(broker, topic, 0, READ_COMMITTED, 4)
    batches = fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)["batches"]
    assert markers(batches) == [(3, CONTROL_ABORT)]
    old, abort_marker = batches[0], batches[-1]
    assert old.producer_id == abort_marker.producer_id

    # A zombie write with the first producer's epoch is refused where the
    # data goes (the ABORT marker carries the bumped epoch, which fences it).
    batch = transactional_batch(old.producer_id, old.producer_epoch, 3, [b"late zombie"], int(time.time() * 1000))
    code, _ = produce_transactional_v3(broker, transactional_id, topic, 0, batch)
    assert code in (ERROR_INVALID_PRODUCER_EPOCH, ERROR_PRODUCER_FENCED), f"zombie produce answered {code}"
    assert abort_marker.producer_epoch > old.producer_epoch, f"fencing ABORT marker {abort_marker}, data {old}"

    with pytest.raises(KafkaException) as raised:
        first.commit_transaction(TXN_CALL_TIMEOUT_S)
    error = fatal_error(raised)
    assert error.code() in FENCED_CODES and error.fatal(), f"commit of the fenced producer: {error!r}"
    with pytest.raises(KafkaException) as raised_again:
        first.begin_transaction()
    assert fatal_error(raised_again).fatal(), f"begin after fencing: {fatal_error(raised_again)!r}"

    second.begin_transaction()
    fresh = [{"value": f"fresh {i}".encode(), "partition": 0} for i in range(2)]
    assert offsets_by_partition(produce_in_transaction(second, topic, fresh)) == {0: [4, 5]}
    second.commit_transaction(TXN_CALL_TIMEOUT_S)

    wait_for_end(broker, topic, 0, READ_COMMITTED, 7)
    assert read_records(broker, topic, [0], READ_COMMITTED, 2) == {0: [(4, b"fresh 0"), (5, b"fresh 1")]}
    assert read_records(broker, topic, [0], READ_UNCOMMITTED, 5) == {
        0: [(0, b"zombie 0"), (1, b"zombie 1"), (2, b"zombie 2"), (4, b"fresh 0"), (5, b"fresh 1")]}
    batches = {b.base_offset: b for b in fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)["batches"]}
    assert markers(batches.values()) == [(3, CONTROL_ABORT), (6, CONTROL_COMMIT)]
    new = batches[4]
    assert new.producer_id == old.producer_id and new.producer_epoch > old.producer_epoch, (old, new)


@pytest.mark.timeout(60)
def test_fenced_between_transactions_fails_at_the_next_transaction(broker):
    """A producer fenced while it had no open transaction fails fatally on
    its next transaction, and its record never reaches the log."""
    topic = unique("txn-fence-idle")
    create_topic(make_admin(broker), topic, 1)
    transactional_id = unique("tid-fence-idle")
    first = transactional_producer(broker, transactional_id)
    first.begin_transaction()
    produce_in_transaction(first, topic, [{"value": b"kept", "partition": 0}])
    first.commit_transaction(TXN_CALL_TIMEOUT_S)

    transactional_producer(broker, transactional_id)

    # begin_transaction() is local; the produce makes librdkafka add the
    # partition to the transaction (AddPartitionsToTxn), which is refused.
    # After a fatal error librdkafka keeps the record queued, unsent.
    first.begin_transaction()
    first.produce(topic, value=b"fenced", partition=0)
    first.poll(0)
    with pytest.raises(KafkaException) as raised:
        first.commit_transaction(TXN_CALL_TIMEOUT_S)
    error = fatal_error(raised)
    assert error.code() in FENCED_CODES and error.fatal(), f"commit of the fenced producer: {error!r}"

    assert read_records(broker, topic, [0], READ_UNCOMMITTED, 1) == {0: [(0, b"kept")]}
    assert high_watermark(broker, topic, 0, READ_UNCOMMITTED) == 2


@pytest.mark.timeout(60)
def test_transactional_write_outside_the_transaction_is_refused(broker):
    """A transactional batch for a partition that is not in an ongoing
    transaction of its producer (no AddPartitionsToTxn) is refused, as
    Kafka 3.6+ verifies with the coordinator (KIP-890 part 1: INVALID_RECORD
    for old Produce versions in 3.6, INVALID_TXN_STATE since); accepting it
    would leave a transaction no marker ever ends, holding the partition's
    last stable offset forever."""
    topic = unique("txn-unadded")
    create_topic(make_admin(broker), topic, 2)
    transactional_id = unique("tid-unadded")
    producer = transactional_producer(broker, transactional_id, **{"transaction.timeout.ms": 2000})
    producer.begin_transaction()
    produce_in_transaction(producer, topic, [{"value": b"in the transaction", "partition": 0}])
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    [batch] = fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)["batches"][:1]

    outside = transactional_batch(batch.producer_id, batch.producer_epoch, 0, [b"outside"], int(time.time() * 1000))
    code, _ = produce_transactional_v3(broker, transactional_id, topic, 1, outside)
    assert code in (ERROR_INVALID_TXN_STATE, ERROR_INVALID_RECORD), f"write outside the transaction answered {code}"
    assert high_watermark(broker, topic, 1, READ_UNCOMMITTED) == 0
    assert high_watermark(broker, topic, 1, READ_COMMITTED) == 0


# --- 6. timeout -----------------------------------------------------------------

@pytest.mark.timeout(90)
def test_expired_transaction_is_aborted_with_a_bumped_epoch(broker):
    """A producer that stops inside a transaction (transaction.timeout.ms
    2000): not before the timeout, the coordinator aborts it, read_committed
    consumers move past it, and the abandoned producer is fenced; the same
    transactional.id then works again."""
    topic = unique("txn-expiry")
    create_topic(make_admin(broker), topic, 2)
    transactional_id = unique("tid-expiry")
    abandoned = transactional_producer(broker, transactional_id, **{"transaction.timeout.ms": 2000})
    began = time.monotonic()
    abandoned.begin_transaction()
    stuck = [{"value": f"stuck {i}".encode(), "partition": i % 2} for i in range(4)]
    produce_in_transaction(abandoned, topic, stuck)
    assert high_watermark(broker, topic, 0, READ_COMMITTED) == 0, "the open transaction is visible"

    for partition in range(2):
        wait_for_end(broker, topic, partition, READ_COMMITTED, 3, timeout=EXPIRY_TIMEOUT_S)
    elapsed = time.monotonic() - began
    assert elapsed >= 1.9, f"aborted {elapsed:.2f}s after the transaction began, before its 2 s timeout"

    consumer = make_consumer(broker, **{"isolation.level": READ_COMMITTED})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
        assert drained_positions(consumer, topic, {0: 3, 1: 3}) == {0: 3, 1: 3}
    finally:
        close_consumer(consumer)
    assert read_records(broker, topic, range(2), READ_UNCOMMITTED, 4) == {
        p: [(0, f"stuck {p}".encode()), (1, f"stuck {p + 2}".encode())] for p in range(2)}
    batches = fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)["batches"]
    assert markers(batches) == [(2, CONTROL_ABORT)]
    data, marker = batches[0], batches[-1]
    assert marker.producer_id == data.producer_id and marker.producer_epoch > data.producer_epoch, (data, marker)

    with pytest.raises(KafkaException) as raised:
        abandoned.commit_transaction(TXN_CALL_TIMEOUT_S)
    error = fatal_error(raised)
    assert error.code() in FENCED_CODES and error.fatal(), f"commit after expiry: {error!r}"
    late = transactional_batch(data.producer_id, data.producer_epoch, 2, [b"late"], int(time.time() * 1000))
    code, _ = produce_transactional_v3(broker, transactional_id, topic, 0, late)
    assert code in (ERROR_INVALID_PRODUCER_EPOCH, ERROR_PRODUCER_FENCED), f"write with the expired epoch answered {code}"
    assert high_watermark(broker, topic, 0, READ_UNCOMMITTED) == 3

    successor = transactional_producer(broker, transactional_id)
    successor.begin_transaction()
    produce_in_transaction(successor, topic, [{"value": b"after expiry", "partition": 0}])
    successor.commit_transaction(TXN_CALL_TIMEOUT_S)
    assert read_records(broker, topic, [0], READ_COMMITTED, 1) == {0: [(3, b"after expiry")]}


# --- 7. durability --------------------------------------------------------------

@pytest.mark.timeout(150)
def test_transactions_survive_kill_9(broker):
    """kill -9 right after a commit: the records stay visible to
    read_committed. kill -9 with two transactions open: right after the
    restart both still hold read_committed back; the one with a short
    timeout expires, the other is aborted by init_transactions() of the same
    transactional.id, which (as for the other id) keeps its producer id and
    bumps its epoch; neither becomes visible."""
    topic = unique("txn-kill")
    create_topic(make_admin(broker), topic, 2)
    long_id, short_id = unique("tid-long"), unique("tid-short")

    long_lived = transactional_producer(broker, long_id)
    long_lived.begin_transaction()
    committed = [{"value": f"committed {i}".encode(), "partition": i % 2} for i in range(10)]
    committed_reports = produce_in_transaction(long_lived, topic, committed)
    long_lived.commit_transaction(TXN_CALL_TIMEOUT_S)
    broker.kill()
    broker.start()

    committed_values = {p: [(o, m["value"]) for m, (_, q, o, _) in zip(committed, committed_reports) if q == p]
                        for p in range(2)}
    assert read_records(broker, topic, range(2), READ_COMMITTED, 10) == committed_values
    for partition in range(2):
        wait_for_end(broker, topic, partition, READ_COMMITTED, 6)

    long_lived.begin_transaction()
    open_long = [{"value": f"open long {i}".encode(), "partition": i % 2} for i in range(4)]
    assert offsets_by_partition(produce_in_transaction(long_lived, topic, open_long)) == {0: [6, 7], 1: [6, 7]}
    short_lived = transactional_producer(broker, short_id, **{"transaction.timeout.ms": 3000})
    short_lived.begin_transaction()
    open_short = [{"value": f"open short {i}".encode(), "partition": 0} for i in range(2)]
    assert offsets_by_partition(produce_in_transaction(short_lived, topic, open_short)) == {0: [8, 9]}
    long_batch = fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)["batches"][0]
    short_batch = fetch_raw(broker, topic, 0, 8, READ_UNCOMMITTED)["batches"][0]
    broker.kill()
    broker.start()

    # Both transactions are still open: read_committed stops at offset 6.
    for partition in range(2):
        assert high_watermark(broker, topic, partition, READ_COMMITTED) == 6
    assert high_watermark(broker, topic, 0, READ_UNCOMMITTED) == 10
    assert high_watermark(broker, topic, 1, READ_UNCOMMITTED) == 8
    assert read_records(broker, topic, range(2), READ_COMMITTED, 10) == committed_values

    def short_aborted():
        return markers(fetch_raw(broker, topic, 0, 10, READ_UNCOMMITTED)["batches"])

    assert wait_until(short_aborted, EXPIRY_TIMEOUT_S, "the expired transaction's ABORT marker") == [
        (10, CONTROL_ABORT)]
    for partition in range(2):
        assert high_watermark(broker, topic, partition, READ_COMMITTED) == 6

    successor = transactional_producer(broker, long_id)
    successor.begin_transaction()
    successor_reports = produce_in_transaction(
        successor, topic, [{"value": f"successor {p}".encode(), "partition": p} for p in range(2)])
    # The ABORT markers of the open transaction took 11 and 8.
    assert offsets_by_partition(successor_reports) == {0: [12], 1: [9]}
    successor.commit_transaction(TXN_CALL_TIMEOUT_S)
    short_successor = transactional_producer(broker, short_id)
    short_successor.begin_transaction()
    assert offsets_by_partition(produce_in_transaction(
        short_successor, topic, [{"value": b"short successor", "partition": 0}])) == {0: [14]}
    short_successor.commit_transaction(TXN_CALL_TIMEOUT_S)

    wait_for_end(broker, topic, 0, READ_COMMITTED, 16)
    wait_for_end(broker, topic, 1, READ_COMMITTED, 11)
    assert read_records(broker, topic, range(2), READ_COMMITTED, 13) == {
        0: committed_values[0] + [(12, b"successor 0"), (14, b"short successor")],
        1: committed_values[1] + [(9, b"successor 1")],
    }
    batches = {b.base_offset: b for b in fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)["batches"]}
    assert markers(batches.values()) == [
        (5, CONTROL_COMMIT), (10, CONTROL_ABORT), (11, CONTROL_ABORT), (13, CONTROL_COMMIT), (15, CONTROL_COMMIT)]
    assert batches[11].producer_id == batches[12].producer_id == long_batch.producer_id
    assert batches[12].producer_epoch > long_batch.producer_epoch
    assert batches[10].producer_id == batches[14].producer_id == short_batch.producer_id
    assert batches[14].producer_epoch > short_batch.producer_epoch


@pytest.mark.timeout(120)
def test_open_transaction_continues_across_a_clean_restart(broker):
    """A broker restart (SIGTERM) in the middle of a transaction: the open
    transaction still holds read_committed back afterwards, and the same
    producer goes on producing and commits it."""
    topic = unique("txn-clean-restart")
    create_topic(make_admin(broker), topic, 1)
    producer = transactional_producer(broker, unique("tid-clean-restart"))
    producer.begin_transaction()
    before = [{"value": f"before {i}".encode(), "partition": 0} for i in range(3)]
    assert offsets_by_partition(produce_in_transaction(producer, topic, before)) == {0: [0, 1, 2]}
    broker.restart()

    assert high_watermark(broker, topic, 0, READ_COMMITTED) == 0
    assert high_watermark(broker, topic, 0, READ_UNCOMMITTED) == 3
    after = [{"value": f"after {i}".encode(), "partition": 0} for i in range(2)]
    assert offsets_by_partition(produce_in_transaction(producer, topic, after)) == {0: [3, 4]}
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    wait_for_end(broker, topic, 0, READ_COMMITTED, 6)
    assert read_records(broker, topic, [0], READ_COMMITTED, 5) == {
        0: [(i, m["value"]) for i, m in enumerate(before + after)]}


def aborted_by_walking(broker, topic: str, partition: int, end: int) -> set:
    """Every (producer id, first offset) that read_committed Fetches list as
    aborted, walking the partition from 0 to `end` one answer at a time
    (Kafka answers from one segment at a time and lists the aborted
    transactions that overlap what it returned)."""
    listed = set()
    offset = 0
    while offset < end:
        answer = fetch_raw(broker, topic, partition, offset, READ_COMMITTED)
        assert answer["error_code"] == ERROR_NONE, answer
        assert answer["batches"], f"no batch from offset {offset} below {end}: {answer}"
        listed.update(answer["aborted_transactions"] or [])
        offset = answer["batches"][-1].last_offset + 1
    return listed


@pytest.mark.timeout(150)
def test_aborted_transactions_stay_hidden_across_segments_and_restarts(broker):
    """Sixteen transactions, every other one aborted, over many 1 KiB
    segments: read_committed gets exactly the committed records — from the
    start and from inside an aborted transaction — and Fetch lists exactly
    the aborted ones; the same after a clean restart and after kill -9."""
    topic = unique("txn-segments")
    create_topic(make_admin(broker), topic, 1, config={"segment.bytes": "1024"})
    producer = transactional_producer(broker, unique("tid-segments"))
    committed, everything, aborted_starts = [], [], []
    next_offset = 0
    for number in range(16):
        values = [f"transaction {number:02d} record {i} ".encode() * 3 for i in range(4)]
        producer.begin_transaction()
        reports = produce_in_transaction(producer, topic, [{"value": v, "partition": 0} for v in values])
        offsets = [offset for _, _, offset, _ in reports]
        assert offsets == list(range(next_offset, next_offset + 4))
        if number % 2:
            producer.abort_transaction(TXN_CALL_TIMEOUT_S)
            aborted_starts.append(next_offset)
        else:
            producer.commit_transaction(TXN_CALL_TIMEOUT_S)
            committed.extend(zip(offsets, values))
        everything.extend(zip(offsets, values))
        next_offset += 5
    wait_for_end(broker, topic, 0, READ_COMMITTED, next_offset)
    producer_id = fetch_raw(broker, topic, 0, 0, READ_UNCOMMITTED)["batches"][0].producer_id
    inside = aborted_starts[3] + 2

    def check(when):
        assert read_records(broker, topic, [0], READ_COMMITTED, len(committed)) == {0: committed}, when
        later = [(o, v) for o, v in committed if o > inside]
        assert read_records(broker, topic, [0], READ_COMMITTED, len(later), start=inside) == {0: later}, when
        assert read_records(broker, topic, [0], READ_UNCOMMITTED, len(everything)) == {0: everything}, when
        assert aborted_by_walking(broker, topic, 0, next_offset) == {(producer_id, s) for s in aborted_starts}, when
        assert high_watermark(broker, topic, 0, READ_COMMITTED) == next_offset, when

    check("before any restart")
    broker.restart()
    check("after a clean restart")
    broker.kill()
    broker.start()
    check("after kill -9")


@pytest.mark.timeout(120)
def test_transactional_offsets_survive_kill_9(broker):
    """Group offsets sent with a committed transaction are there after a
    kill -9 right after the commit; offsets of a transaction open at the
    kill never become committed — the next producer with the
    transactional.id aborts them."""
    source = unique("offsets-kill")
    create_topic(make_admin(broker), source, 1)
    assert_delivered(produce_all(make_producer(broker), source,
                                 [{"value": f"in {i}".encode(), "partition": 0} for i in range(10)]))
    group = unique("offsets-kill-group")
    transactional_id = unique("tid-offsets-kill")
    metadata_source = make_consumer(broker, **{"group.id": group})
    metadata = metadata_source.consumer_group_metadata()
    close_consumer(metadata_source)

    def committed_offset():
        return offset_fetch_v7(broker, group, source, [0], require_stable=False)[0]

    producer = transactional_producer(broker, transactional_id)
    producer.begin_transaction()
    produce_in_transaction(producer, source, [{"value": b"first output", "partition": 0}])
    send_offsets(producer, [TopicPartition(source, 0, 4)], metadata)
    producer.commit_transaction(TXN_CALL_TIMEOUT_S)
    broker.kill()
    broker.start()
    wait_until(lambda: committed_offset() == (4, ERROR_NONE), MARKER_TIMEOUT_S, "offset 4 after kill -9")

    # A fresh producer: librdkafka's would hang in send_offsets_to_transaction
    # after the restart (confluentinc/librdkafka#5511).
    reopened = transactional_producer(broker, transactional_id)
    reopened.begin_transaction()
    produce_in_transaction(reopened, source, [{"value": b"open output", "partition": 0}])
    send_offsets(reopened, [TopicPartition(source, 0, 8)], metadata)
    broker.kill()
    broker.start()
    successor = transactional_producer(broker, transactional_id)
    wait_for_end(broker, source, 0, READ_COMMITTED, 14)
    assert committed_offset() == (4, ERROR_NONE)

    successor.begin_transaction()
    produce_in_transaction(successor, source, [{"value": b"last output", "partition": 0}])
    send_offsets(successor, [TopicPartition(source, 0, 9)], metadata)
    successor.commit_transaction(TXN_CALL_TIMEOUT_S)
    wait_until(lambda: committed_offset() == (9, ERROR_NONE), MARKER_TIMEOUT_S, "offset 9")
    broker.kill()
    broker.start()
    assert committed_offset() == (9, ERROR_NONE)
    assert [v for _, v in read_records(broker, source, [0], READ_COMMITTED, 12)[0][10:]] == [
        b"first output", b"last output"]


# --- 8. idempotent retries across a restart ----------------------------------------

@pytest.mark.timeout(150)
def test_transactional_retries_across_kill_9_write_no_duplicates(broker):
    """A transaction whose produce requests are in flight when the broker is
    killed: librdkafka retries them after the restart with the same
    sequence numbers, the transaction commits, and read_committed gets every
    record exactly once, in order, at the offsets the delivery reports gave."""
    topic = unique("txn-retry")
    create_topic(make_admin(broker), topic, 2)
    producer = transactional_producer(broker, unique("tid-retry"))
    messages = [{"value": f"record {i:05d}".encode() * 8, "partition": i % 2} for i in range(3000)]
    reports = [None] * len(messages)

    def on_delivery_for(index):
        def on_delivery(error, message):
            reports[index] = (error, message.partition(), message.offset())
        return on_delivery

    def produce(indexes):
        for index in indexes:
            while True:
                try:
                    producer.produce(topic, on_delivery=on_delivery_for(index), **messages[index])
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)

    producer.begin_transaction()
    produce(range(0, 1000))
    assert producer.flush(60) == 0
    produce(range(1000, 2000))
    broker.kill()
    broker.start()
    assert producer.flush(60) == 0
    produce(range(2000, 3000))
    assert producer.flush(60) == 0
    producer.commit_transaction(60)

    failed = [(i, r) for i, r in enumerate(reports) if r is None or r[0] is not None]
    assert not failed, f"{len(failed)} deliveries failed, first: {failed[:5]}"
    for partition in range(2):
        wait_for_end(broker, topic, partition, READ_COMMITTED, 1501)
    got = read_records(broker, topic, range(2), READ_COMMITTED, 3000)
    for partition in range(2):
        want = [(reports[i][2], messages[i]["value"]) for i in range(partition, 3000, 2)]
        assert got[partition] == want, f"partition {partition}: first difference at " + str(
            next(((a, b) for a, b in zip(got[partition], want) if a != b), None))
        assert [offset for offset, _ in want] == list(range(1500))


# --- the coordinator by hand ----------------------------------------------------

@pytest.mark.timeout(60)
def test_transaction_coordinator_answers_by_hand(broker):
    """FindCoordinator for a transactional id names this broker;
    InitProducerId keeps the producer id of a transactional id and bumps its
    epoch on each call, refuses an empty id and out-of-range timeouts;
    EndTxn refuses unknown ids, wrong producer ids, old epochs and a
    transaction that was never begun."""
    transactional_id = unique("tid-by-hand")
    with wire.Connection(broker) as conn:
        error, _node, host, port = find_transaction_coordinator_v1(conn, transactional_id)
        assert (error, host, port) == (ERROR_NONE, broker.host, broker.port)

        error, producer_id, epoch = init_producer_id_v1(conn, transactional_id, 60_000)
        assert (error, epoch) == (ERROR_NONE, 0) and producer_id >= 0
        assert init_producer_id_v1(conn, transactional_id, 60_000) == (ERROR_NONE, producer_id, 1)
        error, other_id, other_epoch = init_producer_id_v1(conn, unique("tid-other"), 60_000)
        assert (error, other_epoch) == (ERROR_NONE, 0) and other_id not in (producer_id, -1)
        error, idempotent_id, idempotent_epoch = init_producer_id_v1(conn, None, 60_000)
        assert (error, idempotent_epoch) == (ERROR_NONE, 0) and idempotent_id not in (producer_id, other_id, -1)

        assert init_producer_id_v1(conn, unique("tid-zero"), 0) == (ERROR_INVALID_TRANSACTION_TIMEOUT, -1, -1)
        assert init_producer_id_v1(conn, unique("tid-huge"), 2**31 - 1) == (ERROR_INVALID_TRANSACTION_TIMEOUT, -1, -1)

        assert end_txn(conn, unique("tid-unknown"), producer_id, 1, commit=True) == ERROR_INVALID_PRODUCER_ID_MAPPING
        assert end_txn(conn, transactional_id, producer_id + 1000, 1, commit=True) == ERROR_INVALID_PRODUCER_ID_MAPPING
        # An old epoch is PRODUCER_FENCED from v2 on; older versions predate
        # that code (KIP-588) and get INVALID_PRODUCER_EPOCH.
        assert end_txn(conn, transactional_id, producer_id, 0, commit=True, version=2) == ERROR_PRODUCER_FENCED
        assert end_txn(conn, transactional_id, producer_id, 0, commit=True, version=1) == ERROR_INVALID_PRODUCER_EPOCH
        assert end_txn(conn, transactional_id, producer_id, 1, commit=True) == ERROR_INVALID_TXN_STATE
        assert end_txn(conn, transactional_id, producer_id, 1, commit=False) == ERROR_INVALID_TXN_STATE

        # An empty transactional id is not "no transactional id".
        assert init_producer_id_v1(conn, "", 60_000) == (ERROR_INVALID_REQUEST, -1, -1)
