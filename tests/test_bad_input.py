"""Bad input on the Kafka port: each malformed frame costs its own
connection (or gets the protocol's error answer) and nothing else. A
well-behaved confluent-kafka client produces and consumes throughout, and
the broker process stays up (teardown also fails on a logged panic).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from confluent_kafka import TopicPartition

import kafka_wire as wire
from helpers import consume_exactly, create_topic, make_admin, make_consumer, make_producer, unique
from kafka_wire import frame, int16, int32, request_header, string, uvarint

SOCKET_REQUEST_MAX_BYTES = 104_857_600  # the broker's default


class GoodClient(threading.Thread):
    """Produces a numbered message every few milliseconds (acks=all) until
    stopped, recording every delivery report."""

    def __init__(self, broker, topic):
        super().__init__(daemon=True)
        self.producer = make_producer(broker, **{"linger.ms": 0})
        self.topic = topic
        self.reports = []
        self.sent = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            value = b"good-%d" % self.sent
            self.producer.produce(
                self.topic, value=value, partition=0,
                on_delivery=lambda error, message: self.reports.append((error, message.offset(), message.value())),
            )
            self.sent += 1
            self.producer.poll(0.005)

    def acked(self) -> int:
        return sum(1 for error, _, _ in self.reports if error is None)

    def stop(self):
        self.stopping.set()
        self.join(10)
        assert self.producer.flush(30) == 0


def assert_closed_silently(conn: wire.Connection, what: str):
    closed, data = conn.closed_by_peer(timeout=10)
    assert closed, f"{what}: connection still open after 10s"
    assert data == b"", f"{what}: broker answered {data[:64]!r} before closing"


def assert_closed_or_answered(conn: wire.Connection, correlation_id: int, what: str):
    """Kafka closes the connection; an error response with the right
    correlation id is also acceptable."""
    closed, data = conn.closed_by_peer(timeout=10)
    if closed and data == b"":
        return
    assert len(data) >= 8, f"{what}: got {data!r} (closed={closed})"
    size, got_id = int.from_bytes(data[:4], "big", signed=True), int.from_bytes(data[4:8], "big", signed=True)
    assert size == len(data) - 4 and got_id == correlation_id, f"{what}: got {data[:64]!r}"


def check_good_client_still_works(broker, good: GoodClient, what: str):
    before = good.acked()
    deadline = time.monotonic() + 15
    while good.acked() < before + 5:
        assert time.monotonic() < deadline, f"after {what}: good producer stalled at {good.acked()} acks"
        time.sleep(0.01)
    assert broker.alive(), f"broker died after {what}"


@pytest.mark.timeout(180)
def test_bad_input_costs_only_its_own_connection(broker):
    topic = unique("good")
    create_topic(make_admin(broker), topic, 1)
    good = GoodClient(broker, topic)
    good.start()
    check_good_client_still_works(broker, good, "start")

    def case(name):
        def register(fn):
            with wire.Connection(broker) as conn:
                fn(conn)
            check_good_client_still_works(broker, good, name)
            return fn
        return register

    @case("garbage frame")
    def _(conn):
        conn.send(frame(b"\xde\xad\xbe\xef" * 8))
        assert_closed_silently(conn, "garbage frame")

    @case("HTTP request on the Kafka port")
    def _(conn):
        # "GET " read as a size is 1195725856: far beyond the limit.
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert_closed_silently(conn, "HTTP request")

    @case("truncated frame, then EOF")
    def _(conn):
        conn.send(int32(100) + request_header(wire.API_METADATA, 4, 1)[:10])
        conn.sock.shutdown(socket.SHUT_WR)
        assert_closed_silently(conn, "truncated frame")

    for size in (SOCKET_REQUEST_MAX_BYTES + 1, 0x7FFFFFFF, -1, -0x80000000):
        @case(f"size prefix {size}")
        def _(conn, size=size):
            conn.send(int32(size))
            assert_closed_silently(conn, f"size prefix {size}")

    @case("empty frame")
    def _(conn):
        conn.send(int32(0))
        assert_closed_silently(conn, "empty frame")

    @case("frame shorter than a request header")
    def _(conn):
        conn.send(frame(int16(wire.API_METADATA) + int16(4)))
        assert_closed_silently(conn, "short header")

    @case("unknown API key")
    def _(conn):
        conn.send(frame(request_header(9999, 0, 77)))
        assert_closed_or_answered(conn, 77, "unknown API key")

    @case("known API, unsupported version")
    def _(conn):
        conn.send(frame(request_header(wire.API_METADATA, 999, 78) + int32(-1)))
        assert_closed_or_answered(conn, 78, "Metadata v999")

    @case("client id longer than the frame")
    def _(conn):
        conn.send(frame(int16(wire.API_METADATA) + int16(4) + int32(5) + int16(0x7FFF) + b"abc"))
        assert_closed_silently(conn, "client id overrun")

    @case("array count 2^31-1 with no elements")
    def _(conn):
        conn.send(frame(request_header(wire.API_METADATA, 4, 9) + int32(0x7FFFFFFF)))
        assert_closed_silently(conn, "huge array count")

    @case("compact array count 2^31 (flexible version)")
    def _(conn):
        header = request_header(wire.API_METADATA, 9, 10, flexible=True)
        conn.send(frame(header + uvarint(1 << 31)))
        assert_closed_silently(conn, "huge compact array count")

    @case("produce with a records length past the frame")
    def _(conn):
        body = string(None) + int16(-1) + int32(1000) + int32(1) + string(topic) + int32(1) + int32(0) + int32(0x7FFFFFF0)
        conn.send(frame(request_header(wire.API_PRODUCE, 3, 11) + body))
        assert_closed_silently(conn, "records length overrun")

    @case("trailing bytes after a request body")
    def _(conn):
        # Kafka ignores bytes after the last field, and clients rely on it:
        # librdkafka's all-topics Metadata v9+ request carries 3 stray zero
        # bytes (a 4-byte array-count placeholder holding a 1-byte varint).
        conn.send(frame(request_header(wire.API_METADATA, 4, 12) + wire.metadata_v4_body([topic], False) + b"\x00" * 3))
        answer = wire.decode_metadata_v4(conn.response(12))
        assert answer["topics"][topic]["error_code"] == 0

    @case("ApiVersions v99")
    def _(conn):
        # Header v2 (flexible) as for ApiVersions v3+; the body is not read.
        correlation_id = conn.send_request(wire.API_API_VERSIONS, 99, b"\x00" * 5, flexible=True)
        answer = wire.decode_api_versions(conn.response(correlation_id), 0)
        assert answer["error_code"] == wire.ERROR_UNSUPPORTED_VERSION
        # KIP-511: the error answer carries ApiVersions' own version range,
        # so the client can retry with the highest one, on this connection.
        low, high = answer["api_keys"][wire.API_API_VERSIONS]
        assert low == 0 and high >= 3, answer
        again = wire.api_versions(conn, high)
        assert again["error_code"] == 0 and again["api_keys"][wire.API_API_VERSIONS] == (low, high)

    @case("hand-built RecordBatch with a bad CRC")
    def _(conn):
        batch = bytearray(wire.record_batch([(b"k", b"corrupted", [])], int(time.time() * 1000)))
        batch[-2] ^= 0xFF
        error_code, _ = wire.produce_v3(conn, topic, 0, bytes(batch))
        assert error_code == 2, f"CORRUPT_MESSAGE expected, got {error_code}"  # and the connection stays usable:
        assert wire.api_versions(conn)["error_code"] == 0

    @case("many pipelined requests, responses never read")
    def _(conn):
        request = frame(request_header(wire.API_METADATA, 4, 13) + wire.metadata_v4_body(None, False))
        conn.sock.settimeout(5)
        try:
            for _ in range(20):
                conn.sock.sendall(request * 1000)
        except (socket.timeout, ConnectionError):
            pass  # the broker stopped reading from us: fine, that is back-pressure

    # Fifty connections, each stuck half-way through a frame, held open.
    stuck = [wire.Connection(broker) for _ in range(50)]
    for conn in stuck:
        conn.send(int32(64) + b"\x00\x03")
    check_good_client_still_works(broker, good, "fifty half-sent frames")
    for conn in stuck:
        conn.close()

    good.stop()
    assert broker.alive()
    errors = [r for r in good.reports if r[0] is not None]
    assert not errors, f"good client deliveries failed: {errors[:5]}"
    assert [offset for _, offset, _ in good.reports] == list(range(good.sent))

    consumer = make_consumer(broker)
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = [m.value() for m in consume_exactly(consumer, good.sent)]
    consumer.close()
    assert values == [b"good-%d" % i for i in range(good.sent)]
    # The bad-CRC batch was not stored: exactly the good client's messages.


def test_socket_request_max_bytes_flag(weir_broker):
    broker = weir_broker(args=["--socket-request-max-bytes", "200000"])
    topic = unique("limit")
    create_topic(make_admin(broker), topic, 1)
    with wire.Connection(broker) as conn:
        conn.send(int32(200_001))
        assert_closed_silently(conn, "frame one byte over --socket-request-max-bytes")
    # A request under the limit is served.
    producer = make_producer(broker, **{"linger.ms": 0})
    delivered = []
    producer.produce(topic, value=b"v" * 150_000, on_delivery=lambda e, m: delivered.append((e, m.offset())))
    assert producer.flush(30) == 0
    assert delivered == [(None, 0)]
    assert broker.alive()

