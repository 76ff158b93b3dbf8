"""Bad input on the AMQP port, by hand-built frames: each costs only its own
connection (with the reply code RabbitMQ 3.10 gives) while a well-behaved
pika client keeps publishing and getting on another connection throughout.
Also login failures, unknown vhosts, the server's connection.start, and
heartbeats.
"""

from __future__ import annotations

import re
import struct
import time

import pika
import pytest

from amqp_helpers import (
    CHANNEL_ERROR,
    FRAME_ERROR,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    NOT_ALLOWED,
    NOT_IMPLEMENTED,
    PROTOCOL_HEADER,
    REPLY_SUCCESS,
    UNEXPECTED_FRAME,
    RawConnection,
    basic_publish,
    body_frame,
    frame,
    header_frame,
    heartbeat_frame,
    longstr,
    method_frame,
    octet,
    short,
    shortstr,
    table,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]


class GoodClient:
    """A pika connection that must keep working while others misbehave."""

    def __init__(self, amqp):
        self.connection = amqp.connect()
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.rounds = 0

    def check(self, what: str):
        body = b"round %d" % self.rounds
        self.rounds += 1
        self.channel.basic_publish("", self.queue, body)
        method, _, got = self.channel.basic_get(self.queue, auto_ack=True)
        assert got == body, f"after {what}: good client got {got!r}"


@pytest.fixture
def good(amqp):
    return GoodClient(amqp)


def declare_queue(channel_no: int, name: str) -> bytes:
    """queue.declare (not passive, not durable, no-wait off)."""
    return method_frame(channel_no, 50, 10, short(0) + shortstr(name) + octet(0) + table({}))


@pytest.mark.parametrize("header", [
    b"AMQP\x00\x00\x08\x00",
    b"AMQP\x00\x00\x0a\x00",
    b"AMQP\x00\x01\x00\x00",  # AMQP 1.0
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_wrong_protocol_header_gets_ours_and_a_close(amqp, good, header):
    with RawConnection(amqp) as raw:
        raw.send(header)
        assert raw.read_raw(8, timeout=10) == PROTOCOL_HEADER
        assert raw.closed_by_peer(10), "connection still open after the protocol header"
    good.check(f"header {header!r}")


def test_connection_start_offers_what_clients_need(amqp):
    with RawConnection(amqp) as raw:
        raw.send(PROTOCOL_HEADER)
        start = raw.expect_method(10, 10).args()
        assert (start.octet(), start.octet()) == (0, 9)
        properties = start.table()
        mechanisms = start.longstr().split()
        locales = start.longstr().split()
    assert b"PLAIN" in mechanisms and b"AMQPLAIN" in mechanisms, mechanisms
    assert b"en_US" in locales
    capabilities = properties.get("capabilities", {})
    for name in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
                 "connection.blocked", "consumer_priorities", "authentication_failure_close", "per_consumer_qos"):
        assert capabilities.get(name) is True, f"capability {name}: {capabilities}"
    for name in ("product", "version", "platform"):
        assert isinstance(properties.get(name), bytes) and properties[name], name


def test_tune_values_and_amqplain_login(amqp, good):
    with RawConnection(amqp) as raw:
        raw.send(PROTOCOL_HEADER)
        raw.expect_method(10, 10)
        response = table({"LOGIN": amqp.user, "PASSWORD": amqp.password})[4:]  # AMQPLAIN: a table without its size
        raw.send(method_frame(0, 10, 11, table({}) + shortstr("AMQPLAIN") + longstr(response) + shortstr("en_US")))
        tune = raw.expect_method(10, 30).args()
        channel_max, frame_max, heartbeat = tune.short(), tune.long(), tune.short()
        assert channel_max > 0 and frame_max >= 4096 and heartbeat > 0, (channel_max, frame_max, heartbeat)
        raw.send(method_frame(0, 10, 31, short(channel_max) + struct.pack(">I", frame_max) + short(0)))
        raw.send(method_frame(0, 10, 40, shortstr(amqp.vhost) + shortstr("") + octet(0)))
        raw.expect_method(10, 41)
        # A clean close by the client: close-ok.
        raw.send(method_frame(0, 10, 50, short(REPLY_SUCCESS) + shortstr("bye") + short(0) + short(0)))
        raw.expect_method(10, 51)
    good.check("an AMQPLAIN login")


@pytest.mark.parametrize("user,password", [("guest", "wrong-password"), ("no-such-user", "guest")])
def test_bad_credentials_refused(amqp, good, user, password):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(amqp.params(credentials=pika.PlainCredentials(user, password)))
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(info.value), info.value
    # A client announcing authentication_failure_close gets connection.close 403.
    with RawConnection(amqp) as raw:
        with pytest.raises(AssertionError) as raw_info:
            raw.handshake(user=user, password=password)
        assert "reply_code=403" in str(raw_info.value) and "ACCESS_REFUSED" in str(raw_info.value), raw_info.value
        assert raw.closed_by_peer(10)
    good.check("a refused login")


def test_unknown_vhost_not_allowed(amqp, good):
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(amqp.params(virtual_host="no-such-vhost"))
    assert "(530) 'NOT_ALLOWED - vhost no-such-vhost not found'" in str(info.value), info.value
    with RawConnection(amqp) as raw:
        raw.send(PROTOCOL_HEADER)
        raw.expect_method(10, 10)
        raw.send(method_frame(0, 10, 11, table({}) + shortstr("PLAIN") + longstr(b"\0guest\0guest") + shortstr("en_US")))
        tune = raw.expect_method(10, 30).args()
        channel_max, frame_max = tune.short(), tune.long()
        raw.send(method_frame(0, 10, 31, short(channel_max) + struct.pack(">I", frame_max) + short(0)))
        raw.send(method_frame(0, 10, 40, shortstr("no-such-vhost") + shortstr("") + octet(0)))
        close = raw.wait_close()
        assert (close.reply_code, close.reply_text) == (NOT_ALLOWED, "NOT_ALLOWED - vhost no-such-vhost not found")
        assert (close.class_id, close.method_id) == (10, 40)
    good.check("an unknown vhost")


MALFORMED = {
    "garbage": b"\xff" * 20,
    "text": b"hello, this is not an AMQP frame at all",
    "frame larger than frame_max": frame(FRAME_METHOD, 0, b"\x00" * 200_000),
    "size field far beyond frame_max": struct.pack(">BHI", FRAME_METHOD, 1, 10_000_000),
    "bad frame-end octet": frame(FRAME_METHOD, 1, short(20) + short(10) + shortstr(""), end=0x00),
    "truncated method arguments": method_frame(1, 50, 10, short(0)),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_malformed_frame_closes_only_that_connection(amqp, good, what):
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0)
        raw.open_channel(1)
        raw.send(MALFORMED[what])
        good.check(f"{what} (before the close)")
        close = raw.wait_close(10)
        assert close is not None, f"{what}: hung up without connection.close"
        assert close.reply_code == FRAME_ERROR and close.reply_text.startswith("FRAME_ERROR - "), close
        assert close.channel == 0
        assert raw.closed_by_peer(10)
    good.check(what)


UNEXPECTED = {
    "content header without basic.publish": (header_frame(1, 1) + body_frame(1, b"x"), UNEXPECTED_FRAME,
                                              "UNEXPECTED_FRAME - expected method frame, got non method frame instead"),
    "body without basic.publish": (body_frame(1, b"x"), UNEXPECTED_FRAME,
                                   "UNEXPECTED_FRAME - expected method frame, got non method frame instead"),
    "heartbeat on channel 1": (frame(FRAME_HEARTBEAT, 1, b""), UNEXPECTED_FRAME,
                               "UNEXPECTED_FRAME - type 8, all octets = <<>>"),
    "publish with immediate": (basic_publish(1, "", "q", immediate=True) + header_frame(1, 1) + body_frame(1, b"x"),
                               NOT_IMPLEMENTED, "NOT_IMPLEMENTED - immediate=true"),
    "method on an unopened channel": (declare_queue(5, "x"), CHANNEL_ERROR, "CHANNEL_ERROR - expected 'channel.open'"),
    "publish on an unopened channel": (basic_publish(7, "", "q") + header_frame(7, 1) + body_frame(7, b"x"),
                                       CHANNEL_ERROR, "CHANNEL_ERROR - expected 'channel.open'"),
    "channel.open twice": (method_frame(1, 20, 10, shortstr("")), CHANNEL_ERROR,
                           "CHANNEL_ERROR - second 'channel.open' seen"),
    "channel method on channel 0": (declare_queue(0, "x"), CHANNEL_ERROR,
                                    "CHANNEL_ERROR - unexpected method in connection state running"),
    "consumer tag reused": (
        declare_queue(1, "weir-test-ctag")
        + method_frame(1, 60, 20, short(0) + shortstr("weir-test-ctag") + shortstr("mine") + octet(0) + table({}))
        + method_frame(1, 60, 20, short(0) + shortstr("weir-test-ctag") + shortstr("mine") + octet(0) + table({})),
        NOT_ALLOWED, "NOT_ALLOWED - attempt to reuse consumer tag 'mine'"),
}


@pytest.mark.parametrize("what", list(UNEXPECTED))
def test_protocol_violation_closes_connection_with_reply_code(amqp, good, what):
    data, code, text = UNEXPECTED[what]
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0)
        raw.open_channel(1)
        raw.send(data)
        close = raw.wait_close(10)
        assert close is not None, f"{what}: hung up without connection.close"
        assert (close.reply_code, close.reply_text) == (code, text)
        assert raw.closed_by_peer(10)
    good.check(what)
    if what == "consumer tag reused":
        # The queue the raw connection declared is not exclusive: remove it.
        good.channel.queue_delete("weir-test-ctag")


def test_method_on_a_closed_channel(amqp, good):
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0)
        raw.open_channel(1)
        raw.send(method_frame(1, 20, 40, short(REPLY_SUCCESS) + shortstr("done") + short(0) + short(0)))
        raw.expect_method(20, 41)  # channel.close-ok
        raw.send(declare_queue(1, "x"))
        close = raw.wait_close(10)
        assert (close.reply_code, close.reply_text) == (CHANNEL_ERROR, "CHANNEL_ERROR - expected 'channel.open'")
        assert (close.class_id, close.method_id) == (50, 10)
    good.check("a method on a closed channel")


def test_channel_can_be_reopened_after_close(amqp):
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0)
        for _ in range(3):
            raw.open_channel(1)
            raw.send(method_frame(1, 20, 40, short(REPLY_SUCCESS) + shortstr("") + short(0) + short(0)))
            raw.expect_method(20, 41)
        raw.open_channel(1)
        raw.open_channel(2)


def test_server_generated_consumer_tag(amqp):
    queue = amqp.channel().queue_declare(amqp.queue("ctag")).method.queue
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0)
        raw.open_channel(1)
        raw.send(method_frame(1, 60, 20, short(0) + shortstr(queue) + shortstr("") + octet(0) + table({})))
        tag = raw.expect_method(60, 21).args().shortstr()
        assert re.fullmatch(r"amq\.ctag-[A-Za-z0-9_-]{22}", tag), tag


def test_unknown_method_ends_the_connection(amqp, good):
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=0)
        raw.open_channel(1)
        raw.send(method_frame(1, 60, 99))
        # RabbitMQ hangs up without a connection.close; a close is fine too.
        close = raw.wait_close(10)
        assert close is None or close.reply_code in (NOT_IMPLEMENTED, 503, FRAME_ERROR), close
        assert raw.closed_by_peer(10)
    good.check("an unknown method")


@pytest.mark.timeout(60)
def test_silent_client_is_disconnected_by_heartbeat_timeout(amqp, good):
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=1)
        started = time.monotonic()
        heartbeats = 0
        while True:
            got = raw.read_frame(timeout=15)
            if got is None:
                break
            assert got.type == FRAME_HEARTBEAT and got.channel == 0, got
            heartbeats += 1
        elapsed = time.monotonic() - started
    # RabbitMQ sends a heartbeat every half interval and gives up after two
    # missed intervals (about 3 s here).
    assert 1.0 <= elapsed <= 8.0, elapsed
    assert heartbeats >= 1
    good.check("a heartbeat timeout")


@pytest.mark.timeout(60)
def test_client_sending_heartbeats_stays_connected(amqp):
    with RawConnection(amqp) as raw:
        raw.handshake(heartbeat=1)
        deadline = time.monotonic() + 4.0
        received = 0
        while time.monotonic() < deadline:
            raw.send(heartbeat_frame())
            try:
                got = raw.read_frame(timeout=0.4)
            except TimeoutError:
                continue
            assert got is not None, "the broker hung up on a client that sends heartbeats"
            assert got.type == FRAME_HEARTBEAT
            received += 1
        assert received >= 2
        raw.open_channel(1)  # still fully working
