"""Stream queues (x-queue-type: stream) over AMQP 0-9-1, as RabbitMQ 3.10
does them: consumers need basic.qos and manual acks, start where
x-stream-offset says ("first", "last", "next", an integer offset, an AMQP
timestamp, an interval string; "next" when absent), and every delivery
carries its offset in an `x-stream-offset` (long) header. Reading does not
consume: every consumer sees the same messages.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pika
import pytest
from pika.compat import long as amqp_long

from amqp_helpers import (
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    Collector,
    channel_closed,
    connection_closed,
    pump,
    settle,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]

STREAM = {"x-queue-type": "stream"}


def declare_stream(amqp, channel, prefix="stream") -> str:
    name = amqp.queue(prefix)
    channel.queue_declare(name, durable=True, arguments=STREAM)
    return name


def read_stream(connection, queue, offset=None, expect=None, settle_for=0.25, prefetch=1000):
    """Deliveries to a fresh consumer starting at `offset` (omitted when
    None): waits for `expect` deliveries, then `settle_for` seconds more."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    got = Collector()
    arguments = {} if offset is None else {"x-stream-offset": offset}
    channel.basic_consume(queue, got, arguments=arguments)
    if expect:
        pump(connection, lambda: len(got) >= expect, 10, f"{expect} deliveries from offset {offset!r}")
    settle(connection, settle_for)
    channel.close()
    return got


def offsets_and_bodies(got):
    for d in got.deliveries:
        assert isinstance(d.properties.headers["x-stream-offset"], amqp_long), d.properties.headers
    return [(d.properties.headers["x-stream-offset"], d.body) for d in got.deliveries]


@pytest.mark.timeout(60)
def test_stream_offsets(amqp):
    connection = amqp.connect()
    publisher = connection.channel()
    publisher.confirm_delivery()
    queue = declare_stream(amqp, publisher)

    group_a = [b"a%d" % i for i in range(5)]
    group_b = [b"b%d" % i for i in range(5)]
    for body in group_a:
        publisher.basic_publish("", queue, body, pika.BasicProperties(headers={"group": "a"}))
    # AMQP timestamps have whole seconds: group b starts in a later second
    # than every message of group a.
    time.sleep(1.0 - time.time() % 1.0 + 0.05)
    start_of_b = datetime.fromtimestamp(int(time.time()), timezone.utc).replace(tzinfo=None)
    for body in group_b:
        publisher.basic_publish("", queue, body, pika.BasicProperties(headers={"group": "b"}))
    time.sleep(0.2)
    publisher.basic_publish("", queue, b"last")  # alone in the stream's last chunk
    everything = list(enumerate(group_a + group_b + [b"last"]))

    got = read_stream(connection, queue, "first", expect=11)
    assert offsets_and_bodies(got) == everything
    assert [d.delivery_tag for d in got.deliveries] == list(range(1, 12))
    assert not any(d.redelivered for d in got.deliveries)
    # Properties come through, with the offset header added.
    assert got.deliveries[0].properties.headers == {"group": "a", "x-stream-offset": 0}

    assert offsets_and_bodies(read_stream(connection, queue, 0, expect=11)) == everything
    assert offsets_and_bodies(read_stream(connection, queue, 3, expect=8)) == everything[3:]
    assert offsets_and_bodies(read_stream(connection, queue, 7, expect=4)) == everything[7:]
    assert offsets_and_bodies(read_stream(connection, queue, "last", expect=1)) == [(10, b"last")]
    assert offsets_and_bodies(read_stream(connection, queue, start_of_b, expect=6)) == everything[5:]
    assert offsets_and_bodies(read_stream(connection, queue, "1h", expect=11)) == everything
    # Reading is not consuming: "first" again still gets everything.
    assert len(read_stream(connection, queue, "first", expect=11)) == 11

    # "next", an offset past the end, and no offset at all: only what is
    # published after the consumer starts (from that offset on).
    channels, collectors = [], []
    for offset in ("next", 12, None):
        channel = connection.channel()
        channel.basic_qos(prefetch_count=10)
        got = Collector()
        channel.basic_consume(queue, got, arguments={} if offset is None else {"x-stream-offset": offset})
        channels.append(channel)
        collectors.append(got)
    settle(connection, 0.4)
    assert [len(c) for c in collectors] == [0, 0, 0]
    publisher.basic_publish("", queue, b"after")
    publisher.basic_publish("", queue, b"after2")
    try:
        pump(connection, lambda: [len(c) for c in collectors] == [2, 1, 2], 10, "the new messages")
    finally:
        settle(connection, 0.3)
        print("next / 12 / none got:", [offsets_and_bodies(c) for c in collectors])
    assert [offsets_and_bodies(c) for c in collectors] == [
        [(11, b"after"), (12, b"after2")],
        [(12, b"after2")],  # an offset not yet written: from there on
        [(11, b"after"), (12, b"after2")],
    ]


def test_stream_consumer_prefetch_and_acks(amqp):
    connection = amqp.connect()
    publisher = connection.channel()
    publisher.confirm_delivery()
    queue = declare_stream(amqp, publisher)
    for i in range(10):
        publisher.basic_publish("", queue, b"m%d" % i)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=3)
    got = Collector()
    channel.basic_consume(queue, got, arguments={"x-stream-offset": "first"})
    pump(connection, lambda: len(got) == 3, 10, "3 deliveries")
    settle(connection, 0.3)
    assert len(got) == 3
    channel.basic_ack(got.deliveries[-1].delivery_tag, multiple=True)
    pump(connection, lambda: len(got) == 6, 10, "3 more after the ack")
    settle(connection, 0.3)
    assert got.bodies == [b"m%d" % i for i in range(6)]


def test_stream_declare_and_consume_rules(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    queue = declare_stream(amqp, channel)
    # Equivalent redeclare is fine.
    channel.queue_declare(queue, durable=True, arguments=STREAM)

    bad = amqp.queue("stream-bad")
    with channel_closed(PRECONDITION_FAILED,
                        f"PRECONDITION_FAILED - invalid property 'non-durable' for queue '{bad}' in vhost '/'"):
        channel.queue_declare(bad, durable=False, arguments=STREAM)

    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED,
                        f"PRECONDITION_FAILED - consumer prefetch count is not set for 'queue '{queue}' in vhost '/''"):
        channel.basic_consume(queue, Collector())

    channel = connection.channel()
    channel.basic_qos(prefetch_count=10)
    with connection_closed(NOT_IMPLEMENTED,
                           f"NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues "
                           f"queue '{queue}' in vhost '/'"):
        channel.basic_consume(queue, Collector(), auto_ack=True)

    channel = amqp.channel()
    with connection_closed(NOT_IMPLEMENTED,
                           f"NOT_IMPLEMENTED - basic.get not supported by stream queues queue '{queue}' in vhost '/'"):
        channel.basic_get(queue)
