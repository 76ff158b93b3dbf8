"""Protocol details checked byte by byte with hand-built requests: what the
clients rely on without showing it (response order, acks=0 silence, stored
bytes returned as sent)."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition

import kafka_wire as wire
from helpers import Record, consume_exactly, create_topic, make_admin, make_consumer, unique

ERROR_INVALID_RECORD = 87


def test_api_versions_answers(broker):
    """ApiVersions v0 and v3 by hand: no error, the same table, and at least
    the APIs the Kafka clients in this suite use."""
    with wire.Connection(broker) as conn:
        v0 = wire.api_versions(conn, 0)
        v3 = wire.api_versions(conn, 3)
    assert v0["error_code"] == v3["error_code"] == 0
    assert v0["api_keys"] == v3["api_keys"]
    needed = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions",
              19: "CreateTopics", 20: "DeleteTopics", 32: "DescribeConfigs", 37: "CreatePartitions",
              44: "IncrementalAlterConfigs"}
    missing = [name for key, name in needed.items() if key not in v0["api_keys"]]
    assert not missing, f"not advertised: {missing}"
    for key, (low, high) in v0["api_keys"].items():
        assert 0 <= low <= high, (key, low, high)


def test_pipelined_requests_are_answered_in_order(broker):
    """Kafka answers the requests of one connection in the order they came,
    whatever their kind; clients match responses by that order."""
    topic = unique("pipeline")
    create_topic(make_admin(broker), topic, 1)
    with wire.Connection(broker) as conn:
        sent = []
        payload = b""
        for i in range(30):
            kind = i % 3
            correlation_id = 1000 + i
            if kind == 0:
                body = b""
                api = (wire.API_API_VERSIONS, 0)
            elif kind == 1:
                body = wire.metadata_v4_body([topic], False)
                api = (wire.API_METADATA, 4)
            else:
                body = wire.fetch_v4_body(topic, 0, 0, max_wait_ms=50)
                api = (wire.API_FETCH, 4)
            payload += wire.frame(wire.request_header(api[0], api[1], correlation_id) + body)
            sent.append((kind, correlation_id))
        conn.send(payload)  # all thirty at once
        for kind, correlation_id in sent:
            reader = conn.response(correlation_id)
            if kind == 0:
                assert wire.decode_api_versions(reader, 0)["error_code"] == 0
            elif kind == 1:
                assert wire.decode_metadata_v4(reader)["topics"][topic]["error_code"] == 0


def test_acks_0_produce_gets_no_response(broker):
    """acks=0: the broker stores the batch and answers nothing; the next
    response on the connection belongs to the next request."""
    topic = unique("acks0")
    create_topic(make_admin(broker), topic, 1)
    batch = wire.record_batch([(b"k", b"fire and forget", [])], int(time.time() * 1000))
    with wire.Connection(broker) as conn:
        conn.send(wire.frame(
            wire.request_header(wire.API_PRODUCE, 3, 501) + wire.produce_v3_body(topic, 0, batch, acks=0)
        ))
        correlation_id = conn.send_request(wire.API_API_VERSIONS, 0)
        assert correlation_id != 501
        answer = wire.decode_api_versions(conn.response(correlation_id), 0)
        assert answer["error_code"] == 0
        # Stored all the same.
        deadline = time.monotonic() + 10
        while True:
            fetched = wire.fetch_v4(conn, topic, 0, 0)
            if fetched["high_watermark"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (fetched["error_code"], fetched["high_watermark"]) == (0, 1)


def test_hand_built_batch_reads_back_exactly(broker):
    """A RecordBatch built here byte by byte: stored, given offsets, and read
    back by librdkafka with every field as written (null key, null value,
    null header value, duplicate header keys, empty strings)."""
    topic = unique("handmade")
    create_topic(make_admin(broker), topic, 1)
    base = int(time.time() * 1000) - 5_000
    records = [
        (b"key-1", b"value-1", [("h", b"x")]),
        (None, b"null key", []),
        (b"tombstone", None, [("n", None)]),
        (b"", b"", [("dup", b"1"), ("dup", b"2"), ("", b"")]),
        (b"\x00\xff" * 50, bytes(range(256)) * 4, [("bin", b"\x00\x01")]),
    ]
    with wire.Connection(broker) as conn:
        assert wire.produce_v3(conn, topic, 0, wire.record_batch(records, base)) == (0, 0)
        assert wire.produce_v3(conn, topic, 0, wire.record_batch(records[:2], base + 100)) == (0, 5)
        # What Apache Kafka refuses with INVALID_RECORD (ProduceRequest
        # .validateRecords), storing nothing: Produce v3+ must carry exactly
        # one batch per partition, and that batch must be RecordBatch v2.
        legacy = bytearray(wire.record_batch(records[:1], base))
        legacy[16] = 1  # magic
        one = wire.record_batch(records[:1], base)
        refused = {"magic 1": bytes(legacy), "two batches": one + one, "no batch": b""}
        answers = {what: wire.produce_v3(conn, topic, 0, batch)[0] for what, batch in refused.items()}
        assert answers == {what: ERROR_INVALID_RECORD for what in refused}

    consumer = make_consumer(broker)
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = [Record.of(m) for m in consume_exactly(consumer, 7)]
    consumer.close()
    expected = [
        Record(0, i, key, value, tuple(headers), base + i) for i, (key, value, headers) in enumerate(records)
    ] + [
        Record(0, 5 + i, key, value, tuple(headers), base + 100 + i) for i, (key, value, headers) in enumerate(records[:2])
    ]
    assert got == expected


def test_produce_to_a_missing_partition_or_topic(weir_broker):
    broker = weir_broker(args=["--auto-create-topics", "false"])
    topic = unique("produce-missing")
    create_topic(make_admin(broker), topic, 2)
    batch = wire.record_batch([(None, b"nowhere", [])], int(time.time() * 1000))
    missing = unique("missing")
    with wire.Connection(broker) as conn:
        assert wire.produce_v3(conn, topic, 2, batch)[0] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION
        assert wire.produce_v3(conn, topic, -1, batch)[0] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION
        assert wire.produce_v3(conn, missing, 0, batch)[0] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION
        assert missing not in wire.metadata_v4(conn, None, False)["topics"]
        assert [wire.fetch_v4(conn, topic, p, 0)["high_watermark"] for p in range(2)] == [0, 0]
