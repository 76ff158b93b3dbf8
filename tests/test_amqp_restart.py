"""AMQP durability across broker restarts (weir only: these stop, kill -9
and restart the broker on the same port and data directory).

Durable exchanges, queues and bindings and persistent messages survive a
clean stop and a kill -9; transient queues and non-persistent messages do
not; acked messages are never delivered again; delivered but un-acked ones
are, flagged redelivered. A kill -9 in the middle of a stream of confirmed
publishes loses no confirmed message.
"""

from __future__ import annotations

import signal
import time

import pika
import pytest

from amqp_helpers import (
    NOT_FOUND,
    PRECONDITION_FAILED,
    Collector,
    ConfirmingPublisher,
    channel_closed,
    get_all,
    pump,
    require_kill,
    restart_broker,
    settle,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]

PERSISTENT = pika.BasicProperties(delivery_mode=2)
TRANSIENT = pika.BasicProperties(delivery_mode=1)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_durable_state_survives_and_transient_does_not(weir_amqp, sig):
    amqp = weir_amqp
    if sig == signal.SIGKILL:
        require_kill(amqp)
    orders, audit, transient_x = amqp.exchange("orders"), amqp.exchange("audit"), amqp.exchange("transient-x")
    work, audit_log, scratch = amqp.queue("work"), amqp.queue("audit-log"), amqp.queue("scratch")
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()

    channel.exchange_declare(orders, "topic", durable=True)
    channel.exchange_declare(audit, "fanout", durable=True)
    channel.exchange_bind(audit, orders, "orders.#")  # exchange-to-exchange, durable ends
    channel.exchange_declare(transient_x, "direct", durable=False)
    channel.queue_declare(work, durable=True, arguments={"x-max-length": 1000, "x-message-ttl": 3_600_000})
    channel.queue_bind(work, orders, "orders.*")
    channel.queue_declare(audit_log, durable=True)
    channel.queue_bind(audit_log, audit)
    channel.queue_declare(scratch, durable=False)
    channel.basic_publish("", scratch, b"scratch message", PERSISTENT)

    # work: p0 t0 p1 p2 t1 p3 p4 (p = persistent, t = transient)
    for body, properties in [(b"p0", PERSISTENT), (b"t0", TRANSIENT), (b"p1", PERSISTENT), (b"p2", PERSISTENT),
                             (b"t1", None), (b"p3", PERSISTENT), (b"p4", PERSISTENT)]:
        channel.basic_publish(orders, "orders.new", body, properties)
    assert channel.queue_declare(audit_log, passive=True).method.message_count == 7

    # p0 acked; t0 and p1 delivered and left un-acked.
    consumer = connection.channel()
    method, _, body = consumer.basic_get(work, auto_ack=False)
    assert body == b"p0"
    consumer.basic_ack(method.delivery_tag)
    assert [consumer.basic_get(work, auto_ack=False)[2] for _ in range(2)] == [b"t0", b"p1"]
    # The ack is processed before this answer (a kill -9 loses no page cache).
    consumer.queue_declare(work, passive=True)

    restart_broker(amqp, sig)

    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    got = get_all(channel, work, auto_ack=False)
    assert [(b, m.redelivered, p.delivery_mode) for m, p, b in got] == [
        (b"p1", True, 2), (b"p2", False, 2), (b"p3", False, 2), (b"p4", False, 2)]
    channel.basic_nack(got[-1][0].delivery_tag, multiple=True, requeue=True)
    logged = get_all(channel, audit_log)
    assert [b for _, _, b in logged] == [b"p0", b"p1", b"p2", b"p3", b"p4"]

    # Durable entities are there, with their arguments and bindings.
    channel.exchange_declare(orders, "topic", durable=True)
    channel.exchange_declare(audit, "fanout", durable=True)
    channel.queue_declare(work, durable=True, arguments={"x-max-length": 1000, "x-message-ttl": 3_600_000})
    channel.basic_publish(orders, "orders.after", b"after restart", PERSISTENT)
    assert channel.queue_declare(work, passive=True).method.message_count == 5
    assert [b for _, _, b in get_all(channel, audit_log)] == [b"after restart"]
    with channel_closed(PRECONDITION_FAILED, prefix="PRECONDITION_FAILED - inequivalent arg 'x-max-length'"):
        channel.queue_declare(work, durable=True, arguments={"x-max-length": 5, "x-message-ttl": 3_600_000})

    # Transient ones are gone.
    channel = connection.channel()
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no queue '{scratch}' in vhost '/'"):
        channel.queue_declare(scratch, passive=True)
    channel = connection.channel()
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no exchange '{transient_x}' in vhost '/'"):
        channel.exchange_declare(transient_x, passive=True)


@pytest.mark.timeout(120)
def test_acks_before_a_clean_stop_are_kept(weir_amqp):
    amqp = weir_amqp
    queue = amqp.queue("acks")
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue, durable=True)
    for i in range(100):
        channel.basic_publish("", queue, b"m%d" % i, PERSISTENT)
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=100)
    got = Collector()
    consumer.basic_consume(queue, got)
    pump(connection, lambda: len(got) == 100, 20, "100 deliveries")
    # Ack every even one, one by one, and the first 30 with multiple.
    for delivery in got.deliveries[30:]:
        if int(delivery.body[1:]) % 2 == 0:
            consumer.basic_ack(delivery.delivery_tag)
    consumer.basic_ack(got.deliveries[29].delivery_tag, multiple=True)
    consumer.basic_cancel(consumer.consumer_tags[0])

    restart_broker(amqp, signal.SIGTERM)
    channel = amqp.connect().channel()
    left = get_all(channel, queue)
    expected = [b"m%d" % i for i in range(30, 100) if i % 2 == 1]
    assert [b for _, _, b in left] == expected
    assert all(m.redelivered for m, _, _ in left)

    # A second restart with nothing outstanding: nothing comes back.
    restart_broker(amqp, signal.SIGTERM)
    channel = amqp.connect().channel()
    assert channel.queue_declare(queue, durable=True).method.message_count == 0


@pytest.mark.timeout(180)
def test_kill_9_during_confirmed_publishing_loses_no_confirmed_message(weir_amqp):
    amqp = weir_amqp
    require_kill(amqp)
    queue = amqp.queue("confirmed")
    channel = amqp.connect().channel()
    channel.queue_declare(queue, durable=True)
    total_confirmed = set()
    consumed_before = 0
    for round_number in range(2):
        count = 200_000
        offset = round_number * count

        def body(i, offset=offset):
            return b"%09d|" % (offset + i) + b"payload-" * (1 + i % 5)

        publisher = ConfirmingPublisher(
            amqp, "", queue, count, body=body,
            properties=lambda i, offset=offset: pika.BasicProperties(delivery_mode=2, message_id=str(offset + i)),
            batch=100, window=2000,
        )
        publisher.start()
        # Let a few thousand be confirmed, then kill the broker mid-stream.
        deadline_ok = _wait(lambda: len(publisher.acked) >= 3000 + round_number * 1000, 60)
        assert deadline_ok, f"only {len(publisher.acked)} confirms in 60s"
        in_flight = publisher.published - len(publisher.acked) - len(publisher.nacked)
        amqp.forget_connections()
        assert amqp.broker.kill() == -signal.SIGKILL
        publisher.done.wait(30)
        assert publisher.done.is_set(), "publisher still running after the broker died"
        assert publisher.duplicate_confirms == [] and publisher.nacked == set()
        confirmed = {offset + tag - 1 for tag in publisher.acked}
        print(f"round {round_number}: {len(confirmed)} confirmed, {in_flight} in flight at the kill")
        total_confirmed |= confirmed
        amqp.broker.start()

        # Every confirmed message is there; unconfirmed ones may be too.
        connection = amqp.connect()
        ready = connection.channel().queue_declare(queue, passive=True).method.message_count
        consumer = connection.channel()
        consumer.basic_qos(prefetch_count=0)
        got = Collector()
        consumer.basic_consume(queue, got)
        pump(connection, lambda: len(got) >= ready, 60, f"{ready} messages after the restart")
        settle(connection, 0.3)
        assert len(got) == ready
        ids = []
        for delivery in got.deliveries:
            message_id = int(delivery.properties.message_id)
            assert delivery.body == b"%09d|" % message_id + b"payload-" * (1 + (message_id % count) % 5)
            ids.append(message_id)
        missing = total_confirmed - set(ids) - set(range(consumed_before))
        assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:10]}"
        assert max(ids, default=-1) < offset + publisher.published
        # Acked now (and awaited), they must not come back next round.
        consumer.basic_ack(0, multiple=True)
        consumer.basic_cancel(consumer.consumer_tags[0])
        consumer.queue_declare(queue, passive=True)
        connection.close()
        consumed_before = offset + count
    channel = amqp.connect().channel()
    assert channel.queue_declare(queue, passive=True).method.message_count == 0


def _wait(check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_stream_survives_restart(weir_amqp, sig):
    amqp = weir_amqp
    if sig == signal.SIGKILL:
        require_kill(amqp)
    queue = amqp.queue("events")
    channel = amqp.connect().channel()
    channel.confirm_delivery()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "stream"})
    for i in range(5):
        channel.basic_publish("", queue, b"e%d" % i, PERSISTENT)
    restart_broker(amqp, sig)
    connection = amqp.connect()
    channel = _stream_back(amqp, connection, queue)
    channel.basic_publish("", queue, b"e5", PERSISTENT)
    reader = connection.channel()
    reader.basic_qos(prefetch_count=100)
    got = Collector()
    reader.basic_consume(queue, got, arguments={"x-stream-offset": "first"})
    pump(connection, lambda: len(got) == 6, 10, "6 stream messages")
    assert [(d.properties.headers["x-stream-offset"], d.body) for d in got.deliveries] == [
        (i, b"e%d" % i) for i in range(6)]


def _stream_back(amqp, connection, queue):
    """A confirm channel once the stream answers a declare again (RabbitMQ
    needs a moment after start_app: 404 "... is down or inaccessible")."""
    deadline = time.monotonic() + 30
    while True:
        channel = connection.channel()
        try:
            channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "stream"})
            channel.confirm_delivery()
            return channel
        except pika.exceptions.ChannelClosedByBroker as error:
            if not (amqp.external and "is down or inaccessible" in error.reply_text) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
