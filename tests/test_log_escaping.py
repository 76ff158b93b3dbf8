"""A name a client chose cannot forge a line of the broker's log.

Each door is handed a name holding a newline followed by text that looks
like a log line of its own ("ERROR forged by ..."), in a request the broker
logs: a passive AMQP queue.declare of a missing queue (the 404 reply text
is logged), an AMQP login with such a mechanism name, a Kafka CreateTopics
with such a (refused) topic name, an HTTP request for such a queue. The log
(the default human format) must show the name escaped on one line, and no
line may start with the forged text.
"""

from __future__ import annotations

import contextlib

import pika
import pika.exceptions
import pytest
from confluent_kafka import KafkaException

from amqp_helpers import PROTOCOL_HEADER, AmqpTarget, RawConnection, longstr, method_frame, shortstr, table
from helpers import create_topic, make_admin, wait_until
from http_helpers import Http, q

FORGED = "ERROR forged by"


def forged_name(door: str) -> str:
    return f"weir-{door}\n{FORGED} {door}"


def escaped(door: str) -> str:
    """How the name must appear in the log: one line, `\\n` spelled out."""
    return forged_name(door).replace("\n", "\\n")


def assert_logged_escaped(broker, door: str) -> None:
    wait_until(lambda: f"{FORGED} {door}" in broker.log_text(), 10, f"the {door} name in the log")
    text = broker.log_text()
    forged = [line for line in text.splitlines() if line.startswith(FORGED)]
    assert not forged, f"forged log lines: {forged}\n{broker.log_tail(5000)}"
    assert escaped(door) in text, broker.log_tail(5000)


def test_amqp_queue_name_is_escaped(broker):
    target = AmqpTarget(broker.amqp_url, broker)
    connection = pika.BlockingConnection(target.params())
    try:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.queue_declare(forged_name("amqp-queue"), passive=True)
        assert closed.value.reply_code == 404
    finally:
        connection.close()
    assert_logged_escaped(broker, "amqp-queue")


def test_amqp_login_mechanism_is_escaped(broker):
    target = AmqpTarget(broker.amqp_url, broker)
    with RawConnection(target) as raw:
        raw.send(PROTOCOL_HEADER)
        raw.expect_method(10, 10)
        capabilities = {"capabilities": {"authentication_failure_close": True}}
        start_ok = table(capabilities) + shortstr(forged_name("amqp-login")) + longstr(b"\0guest\0guest")
        raw.send(method_frame(0, 10, 11, start_ok + shortstr("en_US")))
        with contextlib.suppress(OSError):
            raw.wait_close()
    assert_logged_escaped(broker, "amqp-login")


def test_kafka_topic_name_is_escaped(broker):
    admin = make_admin(broker)
    with pytest.raises(KafkaException, match="TOPIC_EXCEPTION"):
        create_topic(admin, forged_name("kafka-topic"))
    assert_logged_escaped(broker, "kafka-topic")


def test_http_queue_name_is_escaped(broker):
    answer = Http(broker.http_url).get(f"/api/queues/%2F/{q(forged_name('http-queue'))}")
    assert answer.status == 404, answer
    assert_logged_escaped(broker, "http-queue")
