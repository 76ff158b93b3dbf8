"""Message TTL, length limits and dead-lettering as RabbitMQ 3.10 does them.

A dead-lettered message keeps its body and properties, loses `expiration`,
and gets RabbitMQ 3.10's headers exactly:

    x-death: [ {count: long, reason: "expired"|"maxlen"|"rejected",
                queue, time: timestamp, exchange, routing-keys: [..],
                original-expiration (only when the message had one)} ]
    x-first-death-reason / x-first-death-queue / x-first-death-exchange

(3.10 sends no x-last-death-* headers.) It is published to
x-dead-letter-exchange with x-dead-letter-routing-key, or with its original
routing key when that is not set.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pika
import pytest
from pika.compat import long as amqp_long

from amqp_helpers import (
    NOT_FOUND,
    Collector,
    channel_closed,
    get_all,
    get_bodies,
    message_count,
    pump,
    wait_count,
    wait_until,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]

TTL_MS = 200


def dead_letter_setup(amqp, channel, **dlx_args):
    """A DLX (topic) with a catch-all queue; returns (exchange, dead queue)."""
    dlx = amqp.exchange("dlx")
    channel.exchange_declare(dlx, "topic")
    dead = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(dead, dlx, "#")
    return dlx, dead


def wait_dead(channel, queue, count, timeout=10.0):
    """Exactly `count` messages from the dead-letter queue (waits for them)."""
    wait_count(channel, queue, count, timeout)
    got = get_all(channel, queue)
    assert len(got) == count
    return got


def now_utc():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def check_death(properties, *, reason, queue, exchange, routing_keys, count=1,
                original_expiration=None, other_headers=None, entries=1, first=None):
    """The x-death / x-first-death-* headers RabbitMQ 3.10 writes."""
    headers = dict(properties.headers or {})
    deaths = headers.pop("x-death")
    assert isinstance(deaths, list) and len(deaths) == entries, deaths
    death = dict(deaths[0])
    stamp = death.pop("time")
    assert isinstance(stamp, datetime)
    assert now_utc() - timedelta(seconds=30) <= stamp <= now_utc() + timedelta(seconds=2), stamp
    assert isinstance(death["count"], amqp_long), "x-death count must be a long-long ('l')"
    expected = {"count": count, "reason": reason, "queue": queue, "exchange": exchange,
                "routing-keys": routing_keys}
    if original_expiration is not None:
        expected["original-expiration"] = original_expiration
    assert death == expected
    first_reason, first_queue, first_exchange = first or (reason, queue, exchange)
    expected_headers = {
        "x-first-death-reason": first_reason,
        "x-first-death-queue": first_queue,
        "x-first-death-exchange": first_exchange,
        **(other_headers or {}),
    }
    assert headers == expected_headers
    assert properties.expiration is None
    return deaths


def test_queue_message_ttl_dead_letters_expired(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    dlx, dead = dead_letter_setup(amqp, channel)
    source = amqp.queue("ttl")
    channel.queue_declare(source, arguments={"x-message-ttl": TTL_MS, "x-dead-letter-exchange": dlx})
    exchange = amqp.exchange("src")
    channel.exchange_declare(exchange, "direct")
    channel.queue_bind(source, exchange, "orders.new")
    sent = pika.BasicProperties(content_type="text/plain", headers={"app": "h"}, message_id="m1", delivery_mode=2)
    channel.basic_publish(exchange, "orders.new", b"expires", sent)
    [(method, properties, body)] = wait_dead(channel, dead, 1)
    assert message_count(channel, source) == 0
    assert (body, method.exchange, method.routing_key) == (b"expires", dlx, "orders.new")
    assert (properties.content_type, properties.message_id, properties.delivery_mode) == ("text/plain", "m1", 2)
    check_death(properties, reason="expired", queue=source, exchange=exchange,
                routing_keys=["orders.new"], other_headers={"app": "h"})


def test_ttl_without_dead_letter_exchange_drops(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    source = amqp.queue("ttl-drop")
    channel.queue_declare(source, arguments={"x-message-ttl": TTL_MS})
    channel.basic_publish("", source, b"gone")
    channel.basic_publish("", source, b"also gone", pika.BasicProperties(expiration="50"))
    assert message_count(channel, source) == 2
    wait_count(channel, source, 0, timeout=10)
    assert channel.basic_get(source) == (None, None, None)


def test_per_message_expiration(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    dlx, dead = dead_letter_setup(amqp, channel)
    source = amqp.queue("expiration")
    channel.queue_declare(source, arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead.key"})
    channel.basic_publish("", source, b"short", pika.BasicProperties(expiration=str(TTL_MS)))
    channel.basic_publish("", source, b"long", pika.BasicProperties(expiration="600000"))
    channel.basic_publish("", source, b"none")
    [(method, properties, body)] = wait_dead(channel, dead, 1)
    assert (body, method.routing_key) == (b"short", "dead.key")
    check_death(properties, reason="expired", queue=source, exchange="", routing_keys=[source],
                original_expiration=str(TTL_MS))
    # The others keep their expiration and stay.
    got = get_all(channel, source)
    assert [(b, p.expiration) for _, p, b in got] == [(b"long", "600000"), (b"none", None)]


def test_shorter_of_queue_ttl_and_expiration_wins(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    dlx, dead = dead_letter_setup(amqp, channel)
    source = amqp.queue("ttl-both")
    channel.queue_declare(source, arguments={"x-message-ttl": TTL_MS, "x-dead-letter-exchange": dlx})
    channel.basic_publish("", source, b"long expiration", pika.BasicProperties(expiration="600000"))
    [(method, properties, body)] = wait_dead(channel, dead, 1)
    assert body == b"long expiration"
    check_death(properties, reason="expired", queue=source, exchange="", routing_keys=[source],
                original_expiration="600000")


def test_delivered_before_ttl_is_not_expired(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    source = amqp.queue("ttl-consumed")
    channel.queue_declare(source, arguments={"x-message-ttl": TTL_MS})
    got = Collector()
    consumer = connection.channel()
    consumer.basic_consume(source, got)
    channel.basic_publish("", source, b"fresh")
    pump(connection, lambda: len(got) == 1, 10, "the delivery")
    # Un-acked past the TTL: still the consumer's; acking it works.
    time.sleep(TTL_MS / 1000 * 2)
    consumer.basic_ack(got.deliveries[0].delivery_tag)
    assert got.bodies == [b"fresh"]


def test_max_length_drop_head_dead_letters_maxlen(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    dlx, dead = dead_letter_setup(amqp, channel)
    source = amqp.queue("maxlen")
    channel.queue_declare(source, arguments={"x-max-length": 2, "x-dead-letter-exchange": dlx,
                                             "x-dead-letter-routing-key": "dl.key"})
    for i in range(5):
        channel.basic_publish("", source, b"m%d" % i)  # every one is acked
    got = wait_dead(channel, dead, 3)
    assert [(b, m.routing_key) for m, _, b in got] == [(b"m0", "dl.key"), (b"m1", "dl.key"), (b"m2", "dl.key")]
    for _, properties, _ in got:
        check_death(properties, reason="maxlen", queue=source, exchange="", routing_keys=[source])
    assert get_bodies(channel, source) == [b"m3", b"m4"]


def test_max_length_reject_publish_nacks(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    dlx, dead = dead_letter_setup(amqp, channel)
    source = amqp.queue("reject-publish")
    channel.queue_declare(source, arguments={"x-max-length": 2, "x-overflow": "reject-publish",
                                             "x-dead-letter-exchange": dlx})
    outcomes = []
    for i in range(4):
        try:
            channel.basic_publish("", source, b"m%d" % i)
            outcomes.append("ack")
        except pika.exceptions.NackError:
            outcomes.append("nack")
    assert outcomes == ["ack", "ack", "nack", "nack"]
    assert get_bodies(channel, source) == [b"m0", b"m1"]
    # Rejected publishes are not dead-lettered with plain reject-publish.
    assert message_count(channel, dead) == 0
    # Room again: accepted again.
    channel.basic_publish("", source, b"m4")
    assert get_bodies(channel, source) == [b"m4"]


def test_max_length_reject_publish_dlx_nacks_and_dead_letters(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    dlx, dead = dead_letter_setup(amqp, channel)
    source = amqp.queue("reject-publish-dlx")
    channel.queue_declare(source, arguments={"x-max-length": 2, "x-overflow": "reject-publish-dlx",
                                             "x-dead-letter-exchange": dlx})
    outcomes = []
    for i in range(4):
        try:
            channel.basic_publish("", source, b"m%d" % i, pika.BasicProperties(headers={"i": i}))
            outcomes.append("ack")
        except pika.exceptions.NackError:
            outcomes.append("nack")
    assert outcomes == ["ack", "ack", "nack", "nack"]
    assert get_bodies(channel, source) == [b"m0", b"m1"]
    got = wait_dead(channel, dead, 2)
    assert [b for _, _, b in got] == [b"m2", b"m3"]
    for i, (method, properties, _) in zip((2, 3), got):
        assert method.routing_key == source
        check_death(properties, reason="maxlen", queue=source, exchange="", routing_keys=[source],
                    other_headers={"i": i})


def test_max_length_bytes_counts_bodies_only(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    dlx, dead = dead_letter_setup(amqp, channel)
    source = amqp.queue("maxbytes")
    channel.queue_declare(source, arguments={"x-max-length-bytes": 10, "x-dead-letter-exchange": dlx})
    big_headers = pika.BasicProperties(headers={"padding": "x" * 1000})  # not counted
    steps = [
        (b"aaaa", [], [b"aaaa"]),
        (b"bbbb", [], [b"aaaa", b"bbbb"]),
        (b"cccc", [b"aaaa"], [b"bbbb", b"cccc"]),
        (b"", [], [b"bbbb", b"cccc", b""]),
        (b"dddddddddd", [b"bbbb", b"cccc"], [b"", b"dddddddddd"]),
        # Larger than the limit on its own: everything goes, itself included.
        (b"eeeeeeeeeee", [b"", b"dddddddddd", b"eeeeeeeeeee"], []),
    ]
    expected_ready = []
    for body, newly_dead, ready in steps:
        channel.basic_publish("", source, body, big_headers)
        got = wait_dead(channel, dead, len(newly_dead))
        assert [b for _, _, b in got] == newly_dead, f"after publishing {body!r}"
        for _, properties, _ in got:
            check_death(properties, reason="maxlen", queue=source, exchange="", routing_keys=[source],
                        other_headers={"padding": "x" * 1000})
        expected_ready = ready
        assert message_count(channel, source) == len(ready)
    assert get_bodies(channel, source) == expected_ready


def test_reject_and_nack_without_requeue_dead_letter(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    dlx, dead = dead_letter_setup(amqp, channel)
    source = amqp.queue("rejected")
    channel.queue_declare(source, arguments={"x-dead-letter-exchange": dlx})
    channel.queue_bind(source, "amq.topic", source + ".#")
    channel.basic_publish("amq.topic", source + ".a", b"rejected", pika.BasicProperties(expiration="600000"))
    channel.basic_publish("", source, b"nacked")
    channel.basic_publish("", source, b"requeued")
    tags = [channel.basic_get(source, auto_ack=False)[0].delivery_tag for _ in range(3)]
    channel.basic_reject(tags[0], requeue=False)
    channel.basic_nack(tags[1], requeue=False)
    channel.basic_nack(tags[2], requeue=True)  # requeue: not dead-lettered
    got = wait_dead(channel, dead, 2)
    (m1, p1, b1), (m2, p2, b2) = got
    assert (b1, m1.routing_key, b2, m2.routing_key) == (b"rejected", source + ".a", b"nacked", source)
    check_death(p1, reason="rejected", queue=source, exchange="amq.topic", routing_keys=[source + ".a"],
                original_expiration="600000")
    check_death(p2, reason="rejected", queue=source, exchange="", routing_keys=[source])
    assert get_bodies(channel, source) == [b"requeued"]


def test_x_death_counts_repeated_deaths_and_keeps_first_death(amqp):
    """Dead-lettered again from the same queue for the same reason: the one
    x-death entry's count goes up. From another queue: a new entry in
    front; the x-first-death-* headers stay those of the first death."""
    channel = amqp.channel()
    channel.confirm_delivery()
    dead = channel.queue_declare("", exclusive=True).method.queue
    first = amqp.queue("retry")
    second = amqp.queue("other")
    for name in (first, second):
        channel.queue_declare(name, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})

    def reject_through(queue, properties, body):
        channel.basic_publish("", queue, body, properties)
        method, _, _ = channel.basic_get(queue, auto_ack=False)
        channel.basic_reject(method.delivery_tag, requeue=False)
        [(_, properties, body)] = wait_dead(channel, dead, 1)
        return properties, body

    properties, body = reject_through(first, pika.BasicProperties(headers={"k": "v"}), b"retried")
    check_death(properties, reason="rejected", queue=first, exchange="", routing_keys=[first],
                other_headers={"k": "v"})
    properties, body = reject_through(first, properties, body)
    check_death(properties, reason="rejected", queue=first, exchange="", routing_keys=[first],
                count=2, other_headers={"k": "v"})
    properties, body = reject_through(second, properties, body)
    deaths = check_death(properties, reason="rejected", queue=second, exchange="", routing_keys=[second],
                         entries=2, other_headers={"k": "v"}, first=("rejected", first, ""))
    older = dict(deaths[1])
    older.pop("time")
    assert older == {"count": 2, "reason": "rejected", "queue": first, "exchange": "", "routing-keys": [first]}
    assert body == b"retried"


def test_dead_letter_exchange_that_does_not_exist_drops(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    source = amqp.queue("dlx-missing")
    channel.queue_declare(source, arguments={"x-message-ttl": TTL_MS, "x-dead-letter-exchange": amqp.exchange("never")})
    channel.basic_publish("", source, b"x")
    wait_count(channel, source, 0)


def test_x_expires_deletes_unused_queue(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    unused = amqp.queue("expires")
    channel.queue_declare(unused, arguments={"x-expires": 300})
    used = amqp.queue("expires-used")
    channel.queue_declare(used, arguments={"x-expires": 300})
    consumer = connection.channel()
    tag = consumer.basic_consume(used, Collector())
    started = time.monotonic()

    def gone(name):
        probe = connection.channel()
        try:
            probe.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            assert error.reply_code == NOT_FOUND
            return True
        probe.close()
        return False

    # A passive declare is a use too (it restarts the timer), so look less
    # often than every 300 ms.
    wait_until(lambda: gone(unused), 10, "the unused queue to expire", interval=0.5)
    assert time.monotonic() - started >= 0.25
    # A queue with a consumer is in use and does not expire...
    time.sleep(0.5)
    assert not gone(used)
    # ...until the consumer goes.
    consumer.basic_cancel(tag)
    wait_until(lambda: gone(used), 10, "the queue to expire after its consumer left", interval=0.5)
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no queue '{used}' in vhost '/'"):
        connection.channel().basic_get(used)


@pytest.mark.parametrize("args,text", [
    ({"x-message-ttl": -1}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {{value_negative,-1}}"),
    ({"x-message-ttl": "abc"}, "invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': \"expected integer, got longstr\""),
    ({"x-overflow": "sideways"}, "invalid arg 'x-overflow' for queue '{q}' in vhost '/': invalid_overflow"),
    ({"x-expires": 0}, "invalid arg 'x-expires' for queue '{q}' in vhost '/': {{value_zero,0}}"),
])
def test_invalid_queue_arguments(amqp, args, text):
    channel = amqp.channel()
    name = amqp.queue("badarg")
    with channel_closed(406, "PRECONDITION_FAILED - " + text.format(q=name)):
        channel.queue_declare(name, arguments=args)
