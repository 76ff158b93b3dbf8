"""A round trip with Debian's amqp-tools (librabbitmq's amqp-publish and
amqp-consume), a second, independent AMQP 0-9-1 client implementation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pika
import pytest

from amqp_helpers import get_all

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]

pytestmark = pytest.mark.skipif(
    not (shutil.which("amqp-publish") and shutil.which("amqp-consume")),
    reason="amqp-tools (amqp-publish, amqp-consume) not installed; scripts/test.sh installs them",
)


def run(args, stdin=b"", timeout=30):
    result = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"{args[0]} exited {result.returncode}: {result.stderr.decode(errors='replace')}"
    return result.stdout


def amqp_publish(amqp, queue, body: bytes, *extra):
    """One message through amqp-publish, its body on standard input."""
    run(["amqp-publish", "--url", amqp.url, "-r", queue, *extra], stdin=body)


@pytest.mark.timeout(90)
def test_amqp_publish_then_consume(amqp):
    channel = amqp.channel()
    queue = amqp.queue("tools")
    channel.queue_declare(queue, durable=True)
    bodies = [b"first message\n", bytes(range(256)) * 40, b"", b"last \x00 message"]
    for body in bodies:
        amqp_publish(amqp, queue, body, "-C", "application/x-weir-test", "-E", "identity",
                     "-H", "x-origin: amqp-tools", "-H", "trace: abc-123", "-p")

    # What pika sees: amqp-publish's properties, byte for byte bodies.
    got = get_all(channel, queue, auto_ack=False)
    assert [b for _, _, b in got] == bodies
    for _, properties, _ in got:
        assert properties.content_type == "application/x-weir-test"
        assert properties.content_encoding == "identity"
        assert properties.delivery_mode == 2
        assert properties.headers == {"x-origin": "amqp-tools", "trace": "abc-123"}
    channel.basic_nack(got[-1][0].delivery_tag, multiple=True, requeue=True)

    # amqp-consume runs `cat` once per message: its output is the bodies.
    out = run(["amqp-consume", "--url", amqp.url, "-q", queue, "-c", str(len(bodies)), "cat"])
    assert out == b"".join(bodies)
    assert channel.queue_declare(queue, passive=True).method.message_count == 0


@pytest.mark.timeout(90)
def test_pika_publish_amqp_consume(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    queue = amqp.queue("tools-in")
    channel.queue_declare(queue)
    bodies = [os.urandom(1000), b"plain text", os.urandom(300_000)]
    for i, body in enumerate(bodies):
        channel.basic_publish("", queue, body, pika.BasicProperties(
            content_type="application/octet-stream", headers={"i": i, "nested": {"k": [1, "two"]}}, message_id=str(i)))
    out = run(["amqp-consume", "--url", amqp.url, "-q", queue, "-c", str(len(bodies)), "-p", "1", "cat"])
    assert out == b"".join(bodies)
    assert channel.queue_declare(queue, passive=True).method.message_count == 0


@pytest.mark.timeout(90)
def test_amqp_consume_from_exchange_binding(amqp):
    """amqp-consume -e/-r declares its own queue and binds it."""
    channel = amqp.channel()
    exchange = amqp.exchange("tools-x")
    channel.exchange_declare(exchange, "topic")
    consumer = subprocess.Popen(
        ["amqp-consume", "--url", amqp.url, "-e", exchange, "-r", "logs.*", "-c", "3", "cat"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # amqp-consume binds asynchronously: probe with mandatory publishes
        # (empty bodies) until one is routed; that one is its first message.
        deadline = time.monotonic() + 20
        while not _routed(amqp, exchange, "logs.probe"):
            assert time.monotonic() < deadline, "amqp-consume never bound its queue"
            time.sleep(0.1)
        run(["amqp-publish", "--url", amqp.url, "-e", exchange, "-r", "logs.info", "-b", "one|"])
        run(["amqp-publish", "--url", amqp.url, "-e", exchange, "-r", "other.info", "-b", "skipped|"])
        run(["amqp-publish", "--url", amqp.url, "-e", exchange, "-r", "logs.error", "-b", "two|"])
        out, err = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert consumer.returncode == 0, err
    assert out == b"one|two|"


def _routed(amqp, exchange, routing_key) -> bool:
    """Publish an empty mandatory message; False if it was returned."""
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    try:
        channel.basic_publish(exchange, routing_key, b"", mandatory=True)
        return True
    except pika.exceptions.UnroutableError:
        return False
    finally:
        connection.close()
