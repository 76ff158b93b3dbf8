"""Publisher confirms, mandatory returns and transactions, as RabbitMQ 3.10
does them. (Confirms across a kill -9 are in test_amqp_restart.py.)
"""

from __future__ import annotations

import pika
import pytest

from amqp_helpers import (
    NO_ROUTE,
    PRECONDITION_FAILED,
    Collector,
    ConfirmingPublisher,
    channel_closed,
    get_all,
    get_bodies,
    message_count,
    pump,
    settle,
    unique,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]

PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.mark.timeout(120)
def test_ten_thousand_persistent_publishes_each_confirmed_once(amqp):
    channel = amqp.channel()
    queue = amqp.queue("confirm10k")
    channel.queue_declare(queue, durable=True)
    count = 10_000
    publisher = ConfirmingPublisher(
        amqp, "", queue, count,
        body=lambda i: b"message %06d " % i + b"x" * (i % 50),
        properties=lambda i: pika.BasicProperties(delivery_mode=2, message_id=str(i)),
    )
    publisher.start()
    publisher.wait(90)
    assert publisher.duplicate_confirms == []
    assert publisher.nacked == set()
    assert publisher.acked == set(range(1, count + 1))
    assert publisher.returned == []

    assert message_count(channel, queue) == count
    connection = amqp.connect()
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=1000)
    got = Collector()

    def on_message(ch, method, properties, body):
        got(ch, method, properties, body)
        if len(got) % 500 == 0:
            ch.basic_ack(method.delivery_tag, multiple=True)

    consumer.basic_consume(queue, on_message)
    pump(connection, lambda: len(got) == count, 60, f"{count} deliveries")
    ids = [int(d.properties.message_id) for d in got.deliveries]
    assert ids == list(range(count))
    assert all(d.body.startswith(b"message %06d " % i) for i, d in enumerate(got.deliveries))
    assert all(d.properties.delivery_mode == 2 for d in got.deliveries)


def test_mandatory_unroutable_is_returned_then_confirmed(amqp):
    channel = amqp.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    nowhere = unique("nowhere")
    keys = [queue, nowhere, queue, nowhere]
    publisher = ConfirmingPublisher(amqp, "", lambda i: keys[i], len(keys),
                                    body=lambda i: b"m%d" % i, mandatory=True)
    publisher.start()
    publisher.wait(20)
    assert publisher.acked == {1, 2, 3, 4} and publisher.nacked == set()
    assert publisher.returned == [(NO_ROUTE, "NO_ROUTE", nowhere, b"m1"), (NO_ROUTE, "NO_ROUTE", nowhere, b"m3")]
    # Each return comes before the confirm of its message.
    events = publisher.events
    for tag, body in ((2, b"m1"), (4, b"m3")):
        returned_at = next(i for i, e in enumerate(events) if e[0] == "return" and e[1][3] == body)
        acked_at = events.index(("ack", tag))
        assert returned_at < acked_at, events
    assert get_bodies(channel, queue) == [b"m0", b"m2"]


def test_mandatory_return_with_blocking_channel(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    nowhere = unique("nowhere")
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        channel.basic_publish("", nowhere, b"lost", pika.BasicProperties(message_id="r1"), mandatory=True)
    [returned] = info.value.messages
    assert (returned.method.reply_code, returned.method.reply_text) == (NO_ROUTE, "NO_ROUTE")
    assert (returned.method.exchange, returned.method.routing_key) == ("", nowhere)
    assert (returned.body, returned.properties.message_id) == (b"lost", "r1")
    # Not mandatory: silently dropped, still confirmed.
    channel.basic_publish("", nowhere, b"dropped")

    # Without confirms the return still arrives.
    plain = connection.channel()
    returns = []
    plain.add_on_return_callback(lambda ch, method, properties, body: returns.append((method.reply_code, body)))
    exchange = amqp.exchange("unbound")
    plain.exchange_declare(exchange, "direct")
    plain.basic_publish(exchange, "k", b"to nobody", mandatory=True)
    pump(connection, lambda: returns, 10, "basic.return")
    assert returns == [(NO_ROUTE, b"to nobody")]


def test_confirm_tags_count_every_publish_on_the_channel(amqp):
    """Delivery tags in confirm mode start at 1 and count publishes, not
    queues: a message routed to three queues is one confirm."""
    channel = amqp.channel()
    exchange = amqp.exchange("fan")
    channel.exchange_declare(exchange, "fanout")
    queues = [channel.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    for queue in queues:
        channel.queue_bind(queue, exchange)
    publisher = ConfirmingPublisher(amqp, exchange, "", 50)
    publisher.start()
    publisher.wait(20)
    assert publisher.acked == set(range(1, 51)) and publisher.duplicate_confirms == []
    for queue in queues:
        assert len(get_all(channel, queue)) == 50


def test_transaction_commit_and_rollback_of_publishes(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    queue = amqp.queue("tx")
    channel.queue_declare(queue)
    observer = connection.channel()
    channel.tx_select()
    channel.basic_publish("", queue, b"rolled back 1")
    channel.basic_publish("", queue, b"rolled back 2")
    assert message_count(observer, queue) == 0  # nothing before commit
    channel.tx_rollback()
    assert message_count(observer, queue) == 0
    channel.basic_publish("", queue, b"committed 1")
    channel.basic_publish("", queue, b"committed 2")
    assert message_count(observer, queue) == 0
    channel.tx_commit()
    assert message_count(observer, queue) == 2
    # An empty commit is fine; the channel stays transactional.
    channel.tx_commit()
    channel.basic_publish("", queue, b"uncommitted")
    channel.close()  # closing discards the open transaction
    assert get_bodies(observer, queue) == [b"committed 1", b"committed 2"]


def test_transaction_commit_and_rollback_of_acks(amqp):
    connection = amqp.connect()
    setup = connection.channel()
    setup.confirm_delivery()
    queue = amqp.queue("txack")
    setup.queue_declare(queue)
    for i in range(4):
        setup.basic_publish("", queue, b"m%d" % i)

    channel = connection.channel()
    channel.tx_select()
    tags = [channel.basic_get(queue, auto_ack=False)[0].delivery_tag for _ in range(3)]
    channel.basic_ack(tags[0])
    channel.basic_ack(tags[1])
    channel.tx_rollback()
    # The acks did not happen: m0 and m1 are still un-acked on this channel.
    channel.basic_ack(tags[1])
    channel.tx_commit()  # acks m1 only
    channel.basic_reject(tags[2], requeue=True)
    channel.tx_rollback()  # the reject did not happen either
    channel.close()  # m0 and m2 go back
    got = get_all(setup, queue)
    assert [(b, m.redelivered) for m, _, b in got] == [(b"m0", True), (b"m2", True), (b"m3", False)]


def test_tx_and_confirm_modes_exclude_each_other(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED, "PRECONDITION_FAILED - channel is not transactional"):
        channel.tx_commit()
    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED, "PRECONDITION_FAILED - channel is not transactional"):
        channel.tx_rollback()
    channel = connection.channel()
    channel.confirm_delivery()
    with channel_closed(PRECONDITION_FAILED, "PRECONDITION_FAILED - cannot switch from confirm to tx mode"):
        channel.tx_select()
    channel = connection.channel()
    channel.tx_select()
    channel.tx_select()  # again: fine
    with channel_closed(PRECONDITION_FAILED, "PRECONDITION_FAILED - cannot switch from tx to confirm mode"):
        channel.confirm_delivery()
    assert connection.is_open


def test_transactional_publish_is_all_or_nothing_on_consumers(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    got = Collector()
    consumer = connection.channel()
    consumer.basic_consume(queue, got, auto_ack=True)
    channel.tx_select()
    for i in range(5):
        channel.basic_publish("", queue, b"t%d" % i)
    settle(connection, 0.3)
    assert len(got) == 0
    channel.tx_commit()
    pump(connection, lambda: len(got) == 5, 10, "5 committed deliveries")
    assert got.bodies == [b"t%d" % i for i in range(5)]
