"""AMQP message content survives the broker byte for byte: every basic
property, headers with every field-table type (pika's, and by raw frames the
ones pika cannot send), user_id checking, and bodies from 0 bytes through
exactly one full body frame to several MiB spread over many frames.
"""

from __future__ import annotations

import os
import struct
from datetime import datetime
from decimal import Decimal

import pika
import pytest

from amqp_helpers import (
    FRAME_BODY,
    FRAME_HEADER,
    PRECONDITION_FAILED,
    Collector,
    RawConnection,
    body_frame,
    basic_publish,
    channel_closed,
    header_frame,
    longlong,
    longstr,
    method_frame,
    octet,
    props_dict,
    pump,
    short,
    shortstr,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]

HEADERS = {
    "str": "héllo wörld",
    "empty-str": "",
    "bytes": b"\x00\xff\x01binary",
    "small-int": 7,
    "negative-int": -5,
    "int32-max": 2**31 - 1,
    "int32-min": -(2**31),
    "large-int": 2**40,
    "negative-large-int": -(2**40),
    "true": True,
    "false": False,
    "void": None,
    "nested": {"a": 1, "b": {"c": "d", "e": [1, 2]}},
    "empty-table": {},
    "list": [1, "two", b"three", [4], {"five": 5}, None, True],
    "empty-list": [],
    "decimal": Decimal("3.14"),
    "negative-decimal": Decimal("-12.5"),
    "timestamp": datetime(2024, 1, 2, 3, 4, 5),
}

ALL_PROPERTIES = dict(
    content_type="application/json; charset=utf-8",
    content_encoding="gzip",
    headers=HEADERS,
    delivery_mode=2,
    priority=7,
    correlation_id="corr-123",
    reply_to="reply.queue",
    expiration="600000",
    message_id="msg-42",
    timestamp=1_700_000_000,
    type="order.created",
    user_id="guest",
    app_id="weir-tests",
    cluster_id="cluster-x",
)


def test_every_property_survives_get_and_consume(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    sent = pika.BasicProperties(**ALL_PROPERTIES)
    channel.basic_publish("", queue, b"with properties", sent)
    channel.basic_publish("", queue, b"", pika.BasicProperties(content_type="text/plain"))
    channel.basic_publish("", queue, b"no properties")

    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"with properties"
    assert props_dict(properties) == ALL_PROPERTIES
    assert properties.headers == HEADERS
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert (body, props_dict(properties)) == (b"", {"content_type": "text/plain"})
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert (body, props_dict(properties)) == (b"no properties", {})

    # The same through a consumer, with the routing information.
    exchange = amqp.exchange("props")
    channel.exchange_declare(exchange, "topic")
    channel.queue_bind(queue, exchange, "a.*")
    channel.basic_publish(exchange, "a.b", b"consumed", sent)
    got = Collector()
    channel.basic_consume(queue, got, auto_ack=True)
    pump(connection, lambda: len(got) == 1, 10, "the delivery")
    delivery = got.deliveries[0]
    assert (delivery.exchange, delivery.routing_key, delivery.body) == (exchange, "a.b", b"consumed")
    assert props_dict(delivery.properties) == ALL_PROPERTIES


def test_user_id_must_be_the_authenticated_user(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"ok", pika.BasicProperties(user_id="guest"))
    with channel_closed(PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"):
        channel.basic_publish("", queue, b"forged", pika.BasicProperties(user_id="mallory"))
    channel = connection.channel()
    assert [b for _, _, b in [channel.basic_get(queue, auto_ack=True)]] == [b"ok"]
    assert channel.basic_get(queue) == (None, None, None)


def _random_body(size: int, seed: int) -> bytes:
    # Not all zeros, not repeating with the frame size.
    return (bytes(range(256)) * (size // 256 + 1))[:size] if seed == 0 else os.urandom(size)


@pytest.mark.timeout(120)
def test_bodies_of_every_size(amqp):
    connection = amqp.connect()
    frame_max = connection._impl.params.frame_max
    assert frame_max >= 4096, frame_max
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    one_frame = frame_max - 8  # the largest body that fits one body frame
    sizes = [0, 1, 2, one_frame - 1, one_frame, one_frame + 1, 2 * one_frame, 3 * one_frame + 17,
             5 * 1024 * 1024 + 3]
    bodies = [_random_body(size, i % 2) for i, size in enumerate(sizes)]
    for i, body in enumerate(bodies):
        channel.basic_publish("", queue, body, pika.BasicProperties(message_id=str(i)))
    for i, body in enumerate(bodies):
        method, properties, got = channel.basic_get(queue, auto_ack=True)
        assert properties.message_id == str(i)
        assert len(got) == len(body) and got == body, f"body of {len(body)} bytes changed"
    # And through a consumer.
    for i, body in enumerate(bodies):
        channel.basic_publish("", queue, body, pika.BasicProperties(message_id=str(i)))
    got = Collector()
    channel.basic_consume(queue, got, auto_ack=True)
    pump(connection, lambda: len(got) == len(bodies), 60, "every body")
    assert [len(b) for b in got.bodies] == sizes
    assert got.bodies == bodies


# Field values pika cannot send (floats, shorts, signed/unsigned variants),
# built by hand: (name, type octet, encoded value).
RAW_FIELDS = [
    ("float", b"f", struct.pack(">f", 1.5)),
    ("double", b"d", struct.pack(">d", -2.25)),
    ("short-short", b"b", struct.pack(">b", -3)),
    ("short", b"s", struct.pack(">h", -300)),
    ("long", b"I", struct.pack(">i", -70000)),
    ("long-long", b"l", struct.pack(">q", -(2**50))),
    ("bool", b"t", b"\x01"),
    ("longstr", b"S", longstr("text")),
    ("bytes", b"x", longstr(b"\x00\x01")),
    ("timestamp", b"T", longlong(1_700_000_000)),
    ("decimal", b"D", b"\x02" + struct.pack(">i", 314)),
    ("void", b"V", b""),
    ("array", b"A", longstr(b"I" + struct.pack(">i", 1) + b"S" + longstr("x") + b"d" + struct.pack(">d", 0.5))),
    ("table", b"F", longstr(shortstr("k") + b"f" + struct.pack(">f", 0.25))),
]


def raw_table(fields) -> bytes:
    data = b"".join(shortstr(name) + kind + value for name, kind, value in fields)
    return struct.pack(">I", len(data)) + data


def test_header_field_types_pass_unchanged_raw(amqp):
    """Headers travel as the exact bytes the publisher sent."""
    channel_no = 1
    # property flags: content-type (bit 15), headers (bit 13), delivery-mode (bit 12)
    flags = (1 << 15) | (1 << 13) | (1 << 12)
    properties = shortstr("application/octet-stream") + raw_table(RAW_FIELDS) + octet(2)
    queue = amqp.channel().queue_declare(amqp.queue("rawhdr")).method.queue
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0)
        raw.open_channel(channel_no)
        raw.send(method_frame(channel_no, 85, 10, octet(0)))  # confirm.select
        raw.expect_method(85, 11)
        raw.send(basic_publish(channel_no, "", queue)
                 + header_frame(channel_no, 5, flags=flags, properties=properties)
                 + body_frame(channel_no, b"hello"))
        raw.expect_method(60, 80)  # basic.ack
        raw.send(method_frame(channel_no, 60, 70, short(0) + shortstr(queue) + octet(1)))  # basic.get no-ack
        raw.expect_method(60, 71)
        header = raw.read_frame()
        assert header.type == FRAME_HEADER
        assert header.payload == struct.pack(">HHQH", 60, 0, 5, flags) + properties
        body = raw.read_frame()
        assert (body.type, body.payload) == (FRAME_BODY, b"hello")

    # pika decodes what the broker hands on.
    channel = amqp.channel()
    channel.basic_publish("", queue, b"again", pika.BasicProperties(headers={"n": 1}))
    method, got_properties, _ = channel.basic_get(queue, auto_ack=True)
    assert got_properties.headers == {"n": 1}


def test_body_frames_follow_negotiated_frame_max_raw(amqp):
    """A client that negotiates frame_max 4096 gets no frame larger than
    that, and a body split by it into many frames arrives whole."""
    frame_max = 4096
    body = os.urandom(5 * (frame_max - 8) + 123)
    queue = amqp.channel().queue_declare(amqp.queue("framemax")).method.queue
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0, frame_max=frame_max)
        raw.open_channel(1)
        raw.send(method_frame(1, 85, 10, octet(0)))
        raw.expect_method(85, 11)
        frames = [basic_publish(1, "", queue), header_frame(1, len(body))]
        for offset in range(0, len(body), frame_max - 8):
            frames.append(body_frame(1, body[offset:offset + frame_max - 8]))
        raw.send(b"".join(frames))
        raw.expect_method(60, 80)
        raw.send(method_frame(1, 60, 70, short(0) + shortstr(queue) + octet(1)))
        raw.expect_method(60, 71)
        header = raw.read_frame()
        assert header.type == FRAME_HEADER
        assert struct.unpack(">Q", header.payload[4:12])[0] == len(body)
        received = b""
        while len(received) < len(body):
            got = raw.read_frame()
            assert got.type == FRAME_BODY
            assert len(got.payload) + 8 <= frame_max, len(got.payload)
            received += got.payload
        assert received == body


def test_content_header_only_message_raw(amqp):
    """A zero-size body has a content header and no body frame at all."""
    queue = amqp.channel().queue_declare(amqp.queue("empty")).method.queue
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0)
        raw.open_channel(1)
        raw.send(method_frame(1, 85, 10, octet(0)))
        raw.expect_method(85, 11)
        raw.send(basic_publish(1, "", queue) + header_frame(1, 0))
        raw.expect_method(60, 80)
        raw.send(method_frame(1, 60, 70, short(0) + shortstr(queue) + octet(1)))
        raw.expect_method(60, 71)
        header = raw.read_frame()
        assert header.payload == struct.pack(">HHQH", 60, 0, 0, 0)
        # The next frame is the answer to the next method, not a body frame.
        raw.send(method_frame(1, 60, 70, short(0) + shortstr(queue) + octet(1)))
        raw.expect_method(60, 72)  # get-empty
