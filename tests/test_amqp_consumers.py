"""AMQP consumers and acknowledgements as RabbitMQ 3.10 does them: competing
consumers and prefetch, redelivery of un-acked messages, nack/reject with
and without requeue, ack multiple, unknown and double acks, basic.get,
basic.recover, no-ack and exclusive consumers, consumer priorities,
server-initiated basic.cancel, and per-consumer vs global basic.qos.
"""

from __future__ import annotations

import pika
import pytest

from amqp_helpers import (
    ACCESS_REFUSED,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    Collector,
    channel_closed,
    connection_closed,
    get_all,
    get_bodies,
    message_count,
    pump,
    settle,
    unique,
    wait_count,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]


def declare_with(amqp, channel, count: int, prefix="q", **kwargs) -> str:
    """A fresh queue holding m0..m{count-1} (confirmed)."""
    name = amqp.queue(prefix)
    channel.queue_declare(name, **kwargs)
    publisher = channel.connection.channel()
    publisher.confirm_delivery()
    for i in range(count):
        publisher.basic_publish("", name, b"m%d" % i)
    publisher.close()
    return name


def publish(connection, queue: str, bodies):
    publisher = connection.channel()
    publisher.confirm_delivery()
    for body in bodies:
        publisher.basic_publish("", queue, body)
    publisher.close()


def test_competing_consumers_share_round_robin(amqp):
    connection = amqp.connect()
    setup = connection.channel()
    name = declare_with(amqp, setup, 0, "compete")
    channels, collectors = [], []
    for _ in range(2):
        channel = connection.channel()
        channel.basic_qos(prefetch_count=10)
        got = Collector()
        channel.basic_consume(name, got)
        channels.append(channel)
        collectors.append(got)

    publish(connection, name, [b"m%d" % i for i in range(21)])
    pump(connection, lambda: sum(map(len, collectors)) == 20, 10, "20 deliveries")
    settle(connection, 0.3)
    a, b = collectors
    # Each consumer holds exactly its prefetch; they alternate; the 21st waits.
    assert (len(a), len(b)) == (10, 10)
    assert sorted(a.bodies + b.bodies, key=lambda m: int(m[1:])) == [b"m%d" % i for i in range(20)]
    evens = [b"m%d" % i for i in range(0, 20, 2)]
    odds = [b"m%d" % i for i in range(1, 20, 2)]
    assert {tuple(a.bodies), tuple(b.bodies)} == {tuple(evens), tuple(odds)}
    assert not any(d.redelivered for d in a.deliveries + b.deliveries)
    assert message_count(setup, name) == 1

    # Acking frees the prefetch: the waiting message goes to whoever acked.
    channels[0].basic_ack(a.deliveries[-1].delivery_tag, multiple=True)
    pump(connection, lambda: len(a) == 11, 10, "the 21st message")
    assert a.bodies[-1] == b"m20" and len(b) == 10

    # Steady state: 200 more, each acked as it arrives, each delivered once.
    for channel, got in zip(channels, collectors):
        channel.basic_cancel(channel.consumer_tags[0])
        channel.basic_ack(0, multiple=True)
    acking = []
    for channel in channels:
        got = Collector()

        def on_message(ch, method, properties, body, got=got):
            got(ch, method, properties, body)
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(name, on_message)
        acking.append(got)
    publish(connection, name, [b"s%d" % i for i in range(200)])
    pump(connection, lambda: sum(map(len, acking)) == 200, 20, "200 deliveries")
    settle(connection, 0.2)
    bodies = acking[0].bodies + acking[1].bodies
    assert sorted(bodies) == sorted(b"s%d" % i for i in range(200))
    assert len(acking[0]) > 0 and len(acking[1]) > 0, (len(acking[0]), len(acking[1]))
    assert message_count(setup, name) == 0


def test_unacked_messages_of_a_closed_channel_go_to_the_other_consumer(amqp):
    connection = amqp.connect()
    setup = connection.channel()
    name = declare_with(amqp, setup, 10, "redeliver")
    first = connection.channel()
    first.basic_qos(prefetch_count=5)
    got_first = Collector()
    first.basic_consume(name, got_first)
    pump(connection, lambda: len(got_first) == 5, 10, "5 deliveries to the first consumer")

    second_connection = amqp.connect()
    second = second_connection.channel()
    got_second = Collector()
    second.basic_consume(name, got_second)
    pump(second_connection, lambda: len(got_second) == 5, 10, "the other 5 to the second consumer")
    assert got_first.bodies == [b"m%d" % i for i in range(5)]
    assert got_second.bodies == [b"m%d" % i for i in range(5, 10)]
    assert not any(d.redelivered for d in got_first.deliveries + got_second.deliveries)

    first.close()
    pump(second_connection, lambda: len(got_second) == 10, 10, "the redeliveries")
    redelivered = got_second.deliveries[5:]
    assert [d.body for d in redelivered] == [b"m%d" % i for i in range(5)]
    assert all(d.redelivered for d in redelivered)
    # Delivery tags keep counting on the second channel.
    assert [d.delivery_tag for d in got_second.deliveries] == list(range(1, 11))
    second.basic_ack(10, multiple=True)
    settle(second_connection, 0.2)
    assert len(got_second) == 10
    assert message_count(setup, name) == 0


def test_connection_close_requeues_unacked(amqp):
    setup = amqp.channel()
    name = declare_with(amqp, setup, 3, "conn-close")
    consumer_connection = amqp.connect()
    channel = consumer_connection.channel()
    method, _, body = channel.basic_get(name, auto_ack=False)
    channel.basic_get(name, auto_ack=True)
    assert body == b"m0"
    consumer_connection.close()
    got = get_all(setup, name)
    assert [(m.redelivered, b) for m, _, b in got] == [(True, b"m0"), (False, b"m2")]


def test_nack_with_requeue_puts_message_back_in_place(amqp):
    channel = amqp.channel()
    name = declare_with(amqp, channel, 5, "nack")
    taken = [channel.basic_get(name, auto_ack=False)[0] for _ in range(3)]
    assert [m.delivery_tag for m in taken] == [1, 2, 3]
    channel.basic_nack(taken[1].delivery_tag, requeue=True)
    method, _, body = channel.basic_get(name, auto_ack=False)
    assert (body, method.redelivered, method.delivery_tag) == (b"m1", True, 4)
    channel.basic_reject(taken[0].delivery_tag, requeue=True)
    method, _, body = channel.basic_get(name, auto_ack=False)
    assert (body, method.redelivered) == (b"m0", True)
    # nack multiple requeues everything up to the tag, back in queue order.
    channel.basic_nack(0, multiple=True, requeue=True)
    got = get_all(channel, name)
    assert [(b, m.redelivered) for m, _, b in got] == [
        (b"m0", True), (b"m1", True), (b"m2", True), (b"m3", False), (b"m4", False)]


def test_nack_requeue_to_consumer_is_redelivered_first(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = declare_with(amqp, channel, 4, "nack-consume")
    channel.basic_qos(prefetch_count=1)
    got = Collector()
    channel.basic_consume(name, got)
    pump(connection, lambda: len(got) == 1, 10, "first delivery")
    channel.basic_nack(got.deliveries[0].delivery_tag, requeue=True)
    pump(connection, lambda: len(got) == 2, 10, "the redelivery")
    assert (got.deliveries[1].body, got.deliveries[1].redelivered) == (b"m0", True)


def test_reject_and_nack_without_requeue_drop(amqp):
    channel = amqp.channel()
    name = declare_with(amqp, channel, 4, "drop")
    m0 = channel.basic_get(name, auto_ack=False)[0]
    m1 = channel.basic_get(name, auto_ack=False)[0]
    m2 = channel.basic_get(name, auto_ack=False)[0]
    channel.basic_reject(m0.delivery_tag, requeue=False)
    channel.basic_nack(m2.delivery_tag, multiple=True, requeue=False)
    assert m1.delivery_tag < m2.delivery_tag
    channel.close()
    channel = amqp.channel()
    assert get_bodies(channel, name) == [b"m3"]


def test_ack_multiple(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = declare_with(amqp, channel, 6, "ackmulti")
    tags = [channel.basic_get(name, auto_ack=False)[0].delivery_tag for _ in range(5)]
    assert tags == [1, 2, 3, 4, 5]
    channel.basic_ack(3, multiple=True)
    channel.basic_ack(5)
    channel.close()
    # Only the un-acked one (tag 4 = m3) comes back, before m5.
    got = get_all(connection.channel(), name)
    assert [(b, m.redelivered) for m, _, b in got] == [(b"m3", True), (b"m5", False)]


def test_unknown_and_double_ack(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED, "PRECONDITION_FAILED - unknown delivery tag 42"):
        channel.basic_ack(42)
        channel.queue_declare("", exclusive=True)  # a round trip to see the close

    channel = connection.channel()
    name = declare_with(amqp, channel, 2, "dblack")
    method = channel.basic_get(name, auto_ack=False)[0]
    channel.basic_ack(method.delivery_tag)
    with channel_closed(PRECONDITION_FAILED, f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"):
        channel.basic_ack(method.delivery_tag)
        channel.queue_declare("", exclusive=True)

    # A delivery tag belongs to its channel.
    channel = connection.channel()
    method = channel.basic_get(name, auto_ack=False)[0]
    other = connection.channel()
    with channel_closed(PRECONDITION_FAILED, f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"):
        other.basic_ack(method.delivery_tag)
        other.queue_declare("", exclusive=True)
    channel.basic_ack(method.delivery_tag)

    # reject and nack of an unknown tag, and a no-ack delivery's tag.
    for settle_call in (lambda ch: ch.basic_reject(7), lambda ch: ch.basic_nack(7)):
        channel = connection.channel()
        with channel_closed(PRECONDITION_FAILED, "PRECONDITION_FAILED - unknown delivery tag 7"):
            settle_call(channel)
            channel.queue_declare("", exclusive=True)
    channel = connection.channel()
    publish(connection, name, [b"x"])
    method = channel.basic_get(name, auto_ack=True)[0]
    with channel_closed(PRECONDITION_FAILED, f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"):
        channel.basic_ack(method.delivery_tag)
        channel.queue_declare("", exclusive=True)
    assert connection.is_open


def test_basic_get_and_get_empty(amqp):
    channel = amqp.channel()
    name = declare_with(amqp, channel, 3, "get")
    counts = []
    for i in range(3):
        method, properties, body = channel.basic_get(name, auto_ack=True)
        assert isinstance(method, pika.spec.Basic.GetOk)
        assert (body, method.exchange, method.routing_key, method.redelivered) == (b"m%d" % i, "", name, False)
        counts.append(method.message_count)
    assert counts == [2, 1, 0]
    assert channel.basic_get(name) == (None, None, None)
    assert channel.basic_get(name, auto_ack=True) == (None, None, None)


def test_basic_recover_requeues_unacked(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = declare_with(amqp, channel, 3, "recover")
    for _ in range(2):
        channel.basic_get(name, auto_ack=False)
    channel.basic_recover(requeue=True)
    got = get_all(channel, name, auto_ack=False)
    assert [(b, m.redelivered) for m, _, b in got] == [(b"m0", True), (b"m1", True), (b"m2", False)]
    # The old delivery tags are gone; the new ones ack fine.
    channel.basic_ack(got[-1][0].delivery_tag, multiple=True)
    assert got[0][0].delivery_tag == 3
    assert message_count(channel, name) == 0

    # With a consumer: its un-acked messages come again, flagged.
    publish(connection, name, [b"c0", b"c1"])
    got = Collector()
    channel.basic_consume(name, got)
    pump(connection, lambda: len(got) == 2, 10, "2 deliveries")
    channel.basic_recover(requeue=True)
    pump(connection, lambda: len(got) == 4, 10, "2 redeliveries")
    assert [(d.body, d.redelivered) for d in got.deliveries] == [
        (b"c0", False), (b"c1", False), (b"c0", True), (b"c1", True)]

    # requeue=false (redeliver to the same consumer) is not implemented.
    with connection_closed(NOT_IMPLEMENTED, "NOT_IMPLEMENTED - requeue=false"):
        channel.basic_recover(requeue=False)


def test_no_ack_consumer(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = declare_with(amqp, channel, 50, "noack")
    channel.basic_qos(prefetch_count=1)  # ignored for no-ack consumers
    got = Collector()
    channel.basic_consume(name, got, auto_ack=True)
    pump(connection, lambda: len(got) == 50, 10, "50 deliveries")
    assert got.bodies == [b"m%d" % i for i in range(50)]
    channel.close()
    # Nothing is requeued when a no-ack consumer's channel closes.
    assert message_count(connection.channel(), name) == 0


def test_exclusive_consumer(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = declare_with(amqp, channel, 0, "exclcons")
    in_use = f"ACCESS_REFUSED - queue '{name}' in vhost '/' in exclusive use"
    tag = channel.basic_consume(name, Collector(), exclusive=True)
    other = amqp.connect().channel()
    with channel_closed(ACCESS_REFUSED, in_use):
        other.basic_consume(name, Collector())
    # Not even on the same channel.
    second = connection.channel()
    with channel_closed(ACCESS_REFUSED, in_use):
        second.basic_consume(name, Collector())
    channel.basic_cancel(tag)
    # Once it is gone, others may consume; then an exclusive one may not.
    third = connection.channel()
    third.basic_consume(name, Collector())
    fourth = connection.channel()
    with channel_closed(ACCESS_REFUSED, in_use):
        fourth.basic_consume(name, Collector(), exclusive=True)


def test_consumer_priorities(amqp):
    connection = amqp.connect()
    setup = connection.channel()
    name = declare_with(amqp, setup, 0, "prio")
    consumers = {}
    for label, priority in (("low", 0), ("high", 10), ("mid", 5)):
        channel = connection.channel()
        channel.basic_qos(prefetch_count=3)
        got = Collector()
        channel.basic_consume(name, got, arguments={"x-priority": priority})
        consumers[label] = got
    publish(connection, name, [b"m%d" % i for i in range(8)])
    pump(connection, lambda: sum(map(len, consumers.values())) == 8, 10, "8 deliveries")
    settle(connection, 0.2)
    # The highest priority consumer takes all it can, then the next one.
    assert consumers["high"].bodies == [b"m0", b"m1", b"m2"]
    assert consumers["mid"].bodies == [b"m3", b"m4", b"m5"]
    assert consumers["low"].bodies == [b"m6", b"m7"]


def test_server_cancels_consumer_when_queue_is_deleted(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = declare_with(amqp, channel, 0, "cancelme")
    cancelled = []
    channel.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = channel.basic_consume(name, Collector(), consumer_tag="weir-test-consumer")
    assert tag == "weir-test-consumer"
    amqp.channel().queue_delete(name)
    pump(connection, lambda: cancelled, 10, "basic.cancel from the broker")
    assert cancelled == ["weir-test-consumer"]
    # The channel stays open and usable.
    assert channel.is_open
    channel.queue_declare("", exclusive=True)


def test_qos_per_consumer_and_global(amqp):
    connection = amqp.connect()
    setup = connection.channel()
    q1 = declare_with(amqp, setup, 10, "qos1")
    q2 = declare_with(amqp, setup, 10, "qos2")

    # global=False: the limit is per consumer (RabbitMQ's per_consumer_qos).
    channel = connection.channel()
    channel.basic_qos(prefetch_count=3, global_qos=False)
    a, b = Collector(), Collector()
    channel.basic_consume(q1, a)
    channel.basic_consume(q2, b)
    pump(connection, lambda: len(a) == 3 and len(b) == 3, 10, "3 deliveries each")
    settle(connection, 0.2)
    assert (len(a), len(b)) == (3, 3)
    channel.close()

    # global=True: the limit is shared by the channel's consumers.
    channel = connection.channel()
    channel.basic_qos(prefetch_count=4, global_qos=True)
    a, b = Collector(), Collector()
    channel.basic_consume(q1, a)
    channel.basic_consume(q2, b)
    pump(connection, lambda: len(a) + len(b) == 4, 10, "4 deliveries in all")
    settle(connection, 0.2)
    assert len(a) + len(b) == 4
    # Acking one lets exactly one more through.
    first = (a.deliveries or b.deliveries)[0]
    channel.basic_ack(first.delivery_tag)
    pump(connection, lambda: len(a) + len(b) == 5, 10, "one more delivery")
    settle(connection, 0.2)
    assert len(a) + len(b) == 5
    channel.close()

    # prefetch 0 means unlimited.
    channel = connection.channel()
    channel.basic_qos(prefetch_count=0)
    c = Collector()
    q3 = declare_with(amqp, setup, 30, "qos3")
    channel.basic_consume(q3, c)
    pump(connection, lambda: len(c) == 30, 10, "all 30")


def test_qos_prefetch_size_not_implemented(amqp):
    channel = amqp.channel()
    with connection_closed(NOT_IMPLEMENTED, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)"):
        channel.basic_qos(prefetch_size=1000, prefetch_count=1)


def test_consume_from_missing_queue(amqp):
    channel = amqp.channel()
    missing = unique("missing")
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no queue '{missing}' in vhost '/'"):
        channel.basic_consume(missing, Collector())


@pytest.mark.timeout(60)
def test_cancel_stops_deliveries_and_keeps_unacked_until_ack(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = declare_with(amqp, channel, 6, "cancel")
    channel.basic_qos(prefetch_count=2)
    got = Collector()
    tag = channel.basic_consume(name, got)
    pump(connection, lambda: len(got) == 2, 10, "2 deliveries")
    channel.basic_cancel(tag)
    settle(connection, 0.2)
    assert len(got) == 2
    # The two stay un-acked with the channel until acked.
    assert wait_count(channel, name, 4) == 4
    channel.basic_ack(got.deliveries[1].delivery_tag, multiple=True)
    channel.close()
    assert get_bodies(connection.channel(), name) == [b"m2", b"m3", b"m4", b"m5"]
