"""Queue arguments that change delivery, as RabbitMQ 3.10 does them:
x-single-active-consumer, x-max-priority, and x-queue-type quorum (durable
only, x-delivery-count header). Streams are in test_amqp_streams.py, TTL and
length limits in test_amqp_ttl_dlx.py.
"""

from __future__ import annotations

import pika
from pika.compat import long as amqp_long

from amqp_helpers import (
    PRECONDITION_FAILED,
    Collector,
    channel_closed,
    get_all,
    get_bodies,
    pump,
    settle,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]


def publish_confirmed(connection, queue, bodies, properties=None):
    channel = connection.channel()
    channel.confirm_delivery()
    for i, body in enumerate(bodies):
        channel.basic_publish("", queue, body, properties(i) if properties else None)
    channel.close()


def test_single_active_consumer(amqp):
    connection = amqp.connect()
    setup = connection.channel()
    queue = amqp.queue("sac")
    setup.queue_declare(queue, arguments={"x-single-active-consumer": True})
    channels, collectors, tags = [], [], []
    for _ in range(3):
        channel = connection.channel()
        channel.basic_qos(prefetch_count=100)
        got = Collector()
        tags.append(channel.basic_consume(queue, got))
        channels.append(channel)
        collectors.append(got)
    assert setup.queue_declare(queue, passive=True).method.consumer_count == 3

    publish_confirmed(connection, queue, [b"a%d" % i for i in range(10)])
    pump(connection, lambda: len(collectors[0]) == 10, 10, "10 deliveries to the first consumer")
    settle(connection, 0.3)
    assert [len(c) for c in collectors] == [10, 0, 0]
    assert collectors[0].bodies == [b"a%d" % i for i in range(10)]

    # The active one acks its messages and cancels: the next one takes over.
    channels[0].basic_ack(collectors[0].deliveries[-1].delivery_tag, multiple=True)
    channels[0].basic_cancel(tags[0])
    publish_confirmed(connection, queue, [b"b%d" % i for i in range(5)])
    pump(connection, lambda: len(collectors[1]) == 5, 10, "5 deliveries to the second consumer")
    settle(connection, 0.3)
    assert [len(c) for c in collectors] == [10, 5, 0]
    assert collectors[1].bodies == [b"b%d" % i for i in range(5)]

    # The second one's channel closes with its messages un-acked: they go,
    # flagged redelivered, to the third, in order.
    channels[1].close()
    pump(connection, lambda: len(collectors[2]) == 5, 10, "the redeliveries to the third consumer")
    assert [(d.body, d.redelivered) for d in collectors[2].deliveries] == [(b"b%d" % i, True) for i in range(5)]


def test_single_active_consumer_argument_must_be_boolean(amqp):
    channel = amqp.channel()
    name = amqp.queue("sac-bad")
    with channel_closed(PRECONDITION_FAILED,
                        f"PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue '{name}' "
                        "in vhost '/': {unacceptable_type,signedint}"):
        channel.queue_declare(name, arguments={"x-single-active-consumer": 1})


def test_max_priority_delivers_higher_priority_first(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    queue = amqp.queue("prio")
    channel.queue_declare(queue, arguments={"x-max-priority": 5})
    priorities = [None, 1, 5, 9, 0, 3, 5, None, 1]
    publish_confirmed(connection, queue, [b"%d" % i for i in range(len(priorities))],
                      lambda i: pika.BasicProperties(priority=priorities[i]))
    got = get_all(channel, queue)
    # Above the maximum counts as the maximum; none counts as 0; FIFO within one.
    assert [b for _, _, b in got] == [b"2", b"3", b"6", b"5", b"1", b"8", b"0", b"4", b"7"]
    # The priority property itself is delivered as sent.
    assert [p.priority for _, p, _ in got] == [5, 9, 5, 3, 1, 1, None, 0, None]

    # A consumer with prefetch 1 sees the same order, and a later high
    # priority message overtakes the ones still waiting.
    publish_confirmed(connection, queue, [b"low-%d" % i for i in range(3)],
                      lambda i: pika.BasicProperties(priority=1))
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=1)
    deliveries = Collector()
    consumer.basic_consume(queue, deliveries)
    pump(connection, lambda: len(deliveries) == 1, 10, "the first delivery")
    publish_confirmed(connection, queue, [b"urgent"], lambda i: pika.BasicProperties(priority=4))
    for n in range(2, 5):
        consumer.basic_ack(deliveries.deliveries[-1].delivery_tag)
        pump(connection, lambda: len(deliveries) == n, 10, f"delivery {n}")
    assert deliveries.bodies == [b"low-0", b"urgent", b"low-1", b"low-2"]


def test_max_priority_bounds(amqp):
    channel = amqp.channel()
    name = amqp.queue("prio-max")
    channel.queue_declare(name, arguments={"x-max-priority": 255})
    bad = amqp.queue("prio-bad")
    with channel_closed(PRECONDITION_FAILED,
                        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{bad}' in vhost '/': "
                        "{max_value_exceeded,256}"):
        channel.queue_declare(bad, arguments={"x-max-priority": 256})


def test_quorum_queue_accepted_durable_only(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    queue = amqp.queue("quorum")
    ok = channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"}).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (queue, 0, 0)
    publish_confirmed(connection, queue, [b"q0", b"q1"], lambda i: pika.BasicProperties(headers={"h": i}))
    assert channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"}).method.message_count == 2

    # Quorum queues count deliveries in x-delivery-count (0 the first time),
    # and (unlike classic queues) put a requeued message at the back.
    method, properties, body = channel.basic_get(queue, auto_ack=False)
    assert (body, method.redelivered, properties.headers) == (b"q0", False, {"h": 0, "x-delivery-count": 0})
    assert isinstance(properties.headers["x-delivery-count"], amqp_long)
    channel.basic_reject(method.delivery_tag, requeue=True)
    method, properties, body = channel.basic_get(queue, auto_ack=False)
    assert (body, method.redelivered, properties.headers) == (b"q1", False, {"h": 1, "x-delivery-count": 0})
    channel.basic_ack(method.delivery_tag)
    method, properties, body = channel.basic_get(queue, auto_ack=False)
    assert (body, method.redelivered, properties.headers) == (b"q0", True, {"h": 0, "x-delivery-count": 1})
    channel.basic_nack(method.delivery_tag, requeue=True)
    got = get_all(channel, queue)
    assert [(b, m.redelivered, p.headers) for m, p, b in got] == [(b"q0", True, {"h": 0, "x-delivery-count": 2})]

    cases = [
        ({"durable": False}, "invalid property 'non-durable' for queue '{q}' in vhost '/'"),
        ({"durable": True, "exclusive": True}, "invalid property 'exclusive-owner' for queue '{q}' in vhost '/'"),
        ({"durable": True, "auto_delete": True}, "invalid property 'auto-delete' for queue '{q}' in vhost '/'"),
    ]
    for kwargs, text in cases:
        name = amqp.queue("quorum-bad")
        channel = connection.channel()
        with channel_closed(PRECONDITION_FAILED, "PRECONDITION_FAILED - " + text.format(q=name)):
            channel.queue_declare(name, arguments={"x-queue-type": "quorum"}, **kwargs)

    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED,
                        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{queue}' in vhost '/': "
                        "received 'classic' but current is 'quorum'"):
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
    channel = connection.channel()
    assert channel.queue_delete(queue).method.message_count == 0


def test_unknown_queue_type(amqp):
    channel = amqp.channel()
    name = amqp.queue("weird")
    with channel_closed(PRECONDITION_FAILED,
                        f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{name}' in vhost '/': "
                        "\"unsupported queue type 'weird'\""):
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": "weird"})


def test_classic_queue_type_is_the_default(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    name = amqp.queue("classic")
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "classic"})
    # x-queue-type classic and no x-queue-type are equivalent, both ways.
    channel.queue_declare(name, durable=True)
    other = amqp.queue("plain")
    channel.queue_declare(other, durable=True)
    channel.queue_declare(other, durable=True, arguments={"x-queue-type": "classic"})
    channel.basic_publish("", name, b"c")
    assert get_bodies(channel, name) == [b"c"]
