"""AMQP queue declare / bind / purge / delete as RabbitMQ 3.10 does them:
passive, durable, exclusive, auto-delete, server-named queues, inequivalent
redeclares, declare-ok counts, delete if-unused / if-empty, and that a
channel error closes only that channel.
"""

from __future__ import annotations

import re

import pika
import pytest

from amqp_helpers import (
    ACCESS_REFUSED,
    NOT_FOUND,
    PRECONDITION_FAILED,
    RESOURCE_LOCKED,
    Collector,
    channel_closed,
    get_bodies,
    message_count,
    pump,
    unique,
    wait_until,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]


def test_passive_declare_of_missing_queue(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = unique("q")
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no queue '{name}' in vhost '/'"):
        channel.queue_declare(name, passive=True)
    # The channel is gone, the connection is not.
    assert channel.is_closed and connection.is_open
    channel = connection.channel()
    # A passive declare never creates.
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no queue '{name}' in vhost '/'"):
        channel.queue_declare(name, passive=True, durable=True, arguments={"x-message-ttl": 5})


def test_declare_ok_counts(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()  # publishes are enqueued when basic_publish returns
    name = amqp.queue("counts")
    ok = channel.queue_declare(name).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 0, 0)
    for i in range(3):
        channel.basic_publish("", name, b"m%d" % i)
    ok = channel.queue_declare(name, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 3, 0)
    # Redeclaring (equivalently) answers the same counts.
    ok = channel.queue_declare(name).method
    assert (ok.message_count, ok.consumer_count) == (3, 0)

    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=1)
    got = Collector()
    consumer.basic_consume(name, got)
    pump(connection, lambda: len(got) == 1, 10, "one delivery")
    # Unacked messages are not counted, consumers are.
    ok = channel.queue_declare(name, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (2, 1)
    other = connection.channel()
    other.basic_consume(name, Collector(), auto_ack=False)
    ok = channel.queue_declare(name, passive=True).method
    assert ok.consumer_count == 2


def test_server_named_queue(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    names = [channel.queue_declare("", exclusive=True).method.queue for _ in range(3)]
    for name in names:
        assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", name), name
    assert len(set(names)) == 3
    channel.basic_publish("", names[0], b"hello")
    assert get_bodies(channel, names[0]) == [b"hello"]
    # Clients may not pick amq.* names themselves.
    reserved = "amq." + unique("mine")
    with channel_closed(ACCESS_REFUSED, f"ACCESS_REFUSED - queue name '{reserved}' contains reserved prefix 'amq.*'"):
        channel.queue_declare(reserved)
    # ...but a passive declare of a server-named one works.
    channel = connection.channel()
    assert channel.queue_declare(names[1], passive=True).method.queue == names[1]


def test_exclusive_queue_is_locked_to_its_connection(amqp):
    owner = amqp.connect()
    owner_channel = owner.channel()
    name = amqp.queue("excl")
    owner_channel.queue_declare(name, exclusive=True)
    owner_channel.basic_publish("", name, b"mine")

    locked = (f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'. "
              "It could be originally declared on another connection or the exclusive property value "
              "does not match that of the original declaration.")
    intruder = amqp.connect()
    attempts = {
        "passive declare": lambda ch: ch.queue_declare(name, passive=True),
        "declare": lambda ch: ch.queue_declare(name, exclusive=True),
        "consume": lambda ch: ch.basic_consume(name, Collector()),
        "get": lambda ch: ch.basic_get(name),
        "purge": lambda ch: ch.queue_purge(name),
        "delete": lambda ch: ch.queue_delete(name),
    }
    for what, attempt in attempts.items():
        channel = intruder.channel()
        with channel_closed(RESOURCE_LOCKED, locked):
            attempt(channel)
    # The owner still has it, with its message.
    assert owner_channel.queue_declare(name, passive=True).method.message_count == 1
    # Closing the owner's connection deletes the queue.
    owner.close()
    channel = intruder.channel()
    wait_until(lambda: _missing(intruder, name), 10, "the exclusive queue to go with its connection")


def _missing(connection, name) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        assert error.reply_code == NOT_FOUND, error
        return True
    channel.close()
    return False


def test_exclusive_flag_must_match_on_redeclare(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = amqp.queue("shared")
    channel.queue_declare(name)
    with channel_closed(RESOURCE_LOCKED, prefix=f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}'"):
        channel.queue_declare(name, exclusive=True)


def test_auto_delete_queue_goes_when_last_consumer_cancels(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()  # publishes are enqueued when basic_publish returns
    name = amqp.queue("autodel")
    channel.queue_declare(name, auto_delete=True)
    # Without ever having had a consumer it stays.
    channel.basic_publish("", name, b"x")
    assert message_count(channel, name) == 1
    tag1 = channel.basic_consume(name, Collector(), auto_ack=True)
    tag2 = channel.basic_consume(name, Collector(), auto_ack=True)
    channel.basic_cancel(tag1)
    assert channel.queue_declare(name, passive=True).method.consumer_count == 1
    channel.basic_cancel(tag2)
    wait_until(lambda: _missing(connection, name), 10, "the auto-delete queue to go")


def test_auto_delete_queue_goes_when_consumer_channel_closes(amqp):
    connection = amqp.connect()
    consumer = connection.channel()
    name = amqp.queue("autodel-close")
    consumer.queue_declare(name, auto_delete=True)
    consumer.basic_consume(name, Collector())
    consumer.close()
    wait_until(lambda: _missing(connection, name), 10, "the auto-delete queue to go")


INEQUIVALENT = [
    ({"arguments": {"x-message-ttl": 1000}}, {"arguments": {"x-message-ttl": 2000}},
     "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received '2000' but current is '1000'"),
    ({"arguments": {"x-message-ttl": 1000}}, {},
     "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': "
     "received none but current is the value '1000' of type 'signedint'"),
    ({}, {"durable": True},
     "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"),
    ({"durable": True}, {"durable": False},
     "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'"),
    ({"auto_delete": True}, {},
     "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'false' but current is 'true'"),
    ({"arguments": {"x-max-length": 10}}, {"arguments": {"x-max-length": 11}},
     "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received '11' but current is '10'"),
]


@pytest.mark.parametrize("first,second,text", INEQUIVALENT)
def test_redeclare_with_different_arguments(amqp, first, second, text):
    connection = amqp.connect()
    channel = connection.channel()
    name = amqp.queue("redecl")
    channel.queue_declare(name, **first)
    channel.queue_declare(name, **first)  # the same again is fine
    with channel_closed(PRECONDITION_FAILED, text.format(q=name)) as info:
        channel.queue_declare(name, **second)
    assert info.value.reply_text.startswith("PRECONDITION_FAILED - inequivalent arg")
    # The queue is untouched and a passive declare still works.
    channel = connection.channel()
    channel.queue_declare(name, passive=True)


def test_bind_and_unbind(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    exchange = amqp.exchange("bind")
    channel.exchange_declare(exchange, "direct")
    name = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish(exchange, "k", b"before bind")
    channel.queue_bind(name, exchange, "k")
    channel.queue_bind(name, exchange, "k")  # binding twice is one binding
    channel.basic_publish(exchange, "k", b"bound")
    channel.queue_unbind(name, exchange, "k")
    channel.basic_publish(exchange, "k", b"after unbind")
    channel.queue_unbind(name, exchange, "never-bound")  # not an error
    assert get_bodies(channel, name) == [b"bound"]

    missing = unique("missing")
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no queue '{missing}' in vhost '/'"):
        channel.queue_bind(missing, exchange, "k")
    channel = connection.channel()
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no exchange '{missing}' in vhost '/'"):
        channel.queue_bind(name, missing, "k")


def test_purge_returns_count_and_keeps_unacked(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()  # publishes are enqueued when basic_publish returns
    name = amqp.queue("purge")
    channel.queue_declare(name)
    for i in range(7):
        channel.basic_publish("", name, b"m%d" % i)
    # Two taken and not acked: purge leaves them alone.
    channel.basic_get(name, auto_ack=False)
    second, _, _ = channel.basic_get(name, auto_ack=False)
    assert channel.queue_purge(name).method.message_count == 5
    assert channel.queue_purge(name).method.message_count == 0
    assert message_count(channel, name) == 0
    channel.basic_nack(second.delivery_tag, multiple=True, requeue=True)
    assert [b for b in get_bodies(channel, name)] == [b"m0", b"m1"]

    missing = unique("missing")
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no queue '{missing}' in vhost '/'"):
        channel.queue_purge(missing)


def test_delete_if_unused_if_empty(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()  # publishes are enqueued when basic_publish returns
    name = amqp.queue("del")
    channel.queue_declare(name)
    for i in range(4):
        channel.basic_publish("", name, b"m%d" % i)
    consumer_channel = connection.channel()
    consumer_channel.basic_qos(prefetch_count=1)
    tag = consumer_channel.basic_consume(name, Collector())

    with channel_closed(PRECONDITION_FAILED, f"PRECONDITION_FAILED - queue '{name}' in vhost '/' in use"):
        channel.queue_delete(name, if_unused=True)
    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED, f"PRECONDITION_FAILED - queue '{name}' in vhost '/' not empty"):
        channel.queue_delete(name, if_empty=True)
    consumer_channel.basic_cancel(tag)
    consumer_channel.close()  # its unacked message goes back: 4 ready
    channel = connection.channel()
    ok = channel.queue_declare(name, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (4, 0)
    assert channel.queue_delete(name, if_unused=True).method.message_count == 4
    with channel_closed(NOT_FOUND):
        channel.queue_declare(name, passive=True)

    # An empty queue goes with if_empty; deleting a missing queue is fine.
    channel = connection.channel()
    channel.queue_declare(name)
    assert channel.queue_delete(name, if_empty=True).method.message_count == 0
    assert channel.queue_delete(name).method.message_count == 0


def test_delete_cancels_nothing_else_and_queue_can_be_recreated(amqp):
    channel = amqp.channel()
    name = amqp.queue("recreate")
    channel.queue_declare(name, arguments={"x-max-length": 5})
    channel.basic_publish("", name, b"old")
    channel.queue_delete(name)
    # Recreated with other arguments: a new, empty queue.
    ok = channel.queue_declare(name, arguments={"x-max-length": 6}).method
    assert (ok.message_count, ok.consumer_count) == (0, 0)


def test_channel_error_leaves_connection_and_other_channels_working(amqp):
    connection = amqp.connect()
    good = connection.channel()
    bad = connection.channel()
    name = amqp.queue("survivor")
    good.queue_declare(name)
    good.basic_publish("", name, b"before")
    with channel_closed(NOT_FOUND):
        bad.queue_declare(unique("missing"), passive=True)
    assert bad.is_closed and good.is_open and connection.is_open
    good.basic_publish("", name, b"after")
    again = connection.channel()
    again.basic_publish("", name, b"new channel")
    assert get_bodies(good, name) == [b"before", b"after", b"new channel"]
    # Many channel errors in a row on one connection do no harm either.
    for _ in range(20):
        channel = connection.channel()
        with channel_closed(NOT_FOUND):
            channel.queue_declare(unique("missing"), passive=True)
    assert good.queue_declare(name, passive=True).method.message_count == 0
