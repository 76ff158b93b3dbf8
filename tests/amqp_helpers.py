"""Shared helpers for the AMQP 0-9-1 integration tests (pika 1.3 and raw frames).

Every AMQP test takes the `amqp` fixture: an `AmqpTarget` for a fresh `weir`
broker (started through conftest's `weir_broker`, so its teardown still fails
the test on a panic or an unexpected exit), or, when the environment variable
WEIR_TEST_AMQP_URL is set (e.g. amqp://guest:guest@127.0.0.1:5673/%2F), for
that external broker instead: that is how every test is checked against real
RabbitMQ. Tests that restart or kill the broker take `weir_amqp` and are
skipped in external mode.

On an external broker several tests share one vhost, so every queue and
exchange a test makes is named with `unique()` through `target.queue()` /
`target.exchange()`, which also records it for deletion at teardown.

Test modules get the fixtures with `pytest_plugins = ["amqp_helpers"]`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pika
import pika.exceptions
import pytest

EXTERNAL_URL = os.environ.get("WEIR_TEST_AMQP_URL") or None

# Reply codes (AMQP 0-9-1 spec, section 1.2 constants).
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541


def unique(prefix: str) -> str:
    """A queue or exchange name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(check, timeout: float, what: str, interval: float = 0.05):
    """Poll `check()` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# The broker under test


class AmqpTarget:
    """Where the AMQP tests connect: a weir broker of this test, or the
    external broker named by WEIR_TEST_AMQP_URL."""

    def __init__(self, url: str, broker=None):
        self.url = url
        self.broker = broker  # conftest.Broker, or None when external
        parsed = pika.URLParameters(url)
        self.host = parsed.host
        self.port = parsed.port
        self.vhost = parsed.virtual_host
        self.user = parsed.credentials.username
        self.password = parsed.credentials.password
        self._connections: list[pika.BlockingConnection] = []
        self._queues: list[str] = []
        self._exchanges: list[str] = []

    @property
    def external(self) -> bool:
        return self.broker is None

    def params(self, **overrides) -> pika.ConnectionParameters:
        settings = {
            "host": self.host,
            "port": self.port,
            "virtual_host": self.vhost,
            "credentials": pika.PlainCredentials(self.user, self.password),
            "connection_attempts": 1,
            "socket_timeout": 10,
            "blocked_connection_timeout": 30,
        }
        settings.update(overrides)
        return pika.ConnectionParameters(**settings)

    def connect(self, **overrides) -> pika.BlockingConnection:
        """A BlockingConnection, closed at teardown if the test did not."""
        connection = pika.BlockingConnection(self.params(**overrides))
        self._connections.append(connection)
        return connection

    def channel(self, **overrides):
        """A channel on a new connection."""
        return self.connect(**overrides).channel()

    def queue(self, prefix: str = "q") -> str:
        """A fresh queue name, deleted at teardown (on an external broker)."""
        name = unique(prefix)
        self._queues.append(name)
        return name

    def exchange(self, prefix: str = "x") -> str:
        """A fresh exchange name, deleted at teardown (on an external broker)."""
        name = unique(prefix)
        self._exchanges.append(name)
        return name

    def forget_connections(self):
        """Drop the connections of a broker that was stopped (restart tests)."""
        self._connections.clear()

    def close(self):
        for connection in self._connections:
            with contextlib.suppress(Exception):
                if connection.is_open:
                    connection.close()
        self._connections.clear()
        if not self.external or not (self._queues or self._exchanges):
            return
        # Leave the shared external broker as we found it.
        connection = pika.BlockingConnection(self.params())
        try:
            channel = connection.channel()
            for name in self._queues:
                try:
                    channel.queue_delete(name)
                except pika.exceptions.ChannelClosed:
                    channel = connection.channel()
            for name in self._exchanges:
                try:
                    channel.exchange_delete(name)
                except pika.exceptions.ChannelClosed:
                    channel = connection.channel()
        finally:
            connection.close()


def _weir_target(request) -> AmqpTarget:
    broker = request.getfixturevalue("weir_broker")()
    if not broker.amqp_enabled:
        pytest.fail("the weir binary has no --amqp-listen flag (no AMQP listener yet)", pytrace=False)
    return AmqpTarget(broker.amqp_url, broker)


@pytest.fixture
def amqp(request):
    """The broker under test: external (WEIR_TEST_AMQP_URL) or a fresh weir."""
    target = AmqpTarget(EXTERNAL_URL) if EXTERNAL_URL else _weir_target(request)
    yield target
    target.close()


# A shell command that restarts the external broker cleanly (for checking the
# clean-restart tests against RabbitMQ), e.g.
#   rabbitmqctl -n rabbit-tests@localhost stop_app && rabbitmqctl -n ... start_app
EXTERNAL_RESTART_CMD = os.environ.get("WEIR_TEST_AMQP_RESTART_CMD") or None


@pytest.fixture
def weir_amqp(request):
    """A fresh weir broker for tests that stop, kill and restart it (see
    `restart_broker`). On an external broker only with
    WEIR_TEST_AMQP_RESTART_CMD, and only clean restarts."""
    if EXTERNAL_URL and not EXTERNAL_RESTART_CMD:
        pytest.skip("restarts and kills need a weir broker started by the test")
    target = AmqpTarget(EXTERNAL_URL) if EXTERNAL_URL else _weir_target(request)
    yield target
    target.close()


def require_kill(target: AmqpTarget):
    """Skip unless the test can kill -9 the broker (weir started by the test)."""
    if target.external:
        pytest.skip("kill -9 needs a weir broker started by the test")


def restart_broker(target: AmqpTarget, sig: int = signal.SIGTERM):
    """Stop the broker with `sig` and start it again on the same port and
    data directory; connections made before are forgotten."""
    for connection in target._connections:
        with contextlib.suppress(Exception):
            if connection.is_open:
                connection.close()
    target.forget_connections()
    if target.external:
        assert sig == signal.SIGTERM, "an external broker can only be restarted cleanly"
        subprocess.run(EXTERNAL_RESTART_CMD, shell=True, check=True, capture_output=True, timeout=120)
        wait_until(lambda: _accepts(target), 60, "the external broker to accept connections")
        return
    code = target.broker.restart(sig)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 0, f"exit code {code} after signal {sig}"


def _accepts(target: AmqpTarget) -> bool:
    try:
        pika.BlockingConnection(target.params()).close()
        return True
    except pika.exceptions.AMQPError:
        return False


# --------------------------------------------------------------------------
# pika conveniences


@contextlib.contextmanager
def channel_closed(code: int, text: str | None = None, prefix: str | None = None):
    """The block must end with the broker closing the channel with `code`
    (and reply text `text`, or starting with `prefix`)."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        yield info
    error = info.value
    assert (error.reply_code, error.reply_text[: len(prefix)] if prefix else error.reply_text) == (
        code,
        prefix if prefix else (text if text is not None else error.reply_text),
    ), f"channel closed with {error.reply_code} {error.reply_text!r}"


@contextlib.contextmanager
def connection_closed(code: int, text: str | None = None, prefix: str | None = None):
    """The block must end with the broker closing the connection with `code`."""
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        yield info
    error = info.value
    assert (error.reply_code, error.reply_text[: len(prefix)] if prefix else error.reply_text) == (
        code,
        prefix if prefix else (text if text is not None else error.reply_text),
    ), f"connection closed with {error.reply_code} {error.reply_text!r}"


def get_all(channel, queue: str, auto_ack: bool = True, limit: int = 1_000_000) -> list:
    """basic.get until get-empty: [(method, properties, body)]."""
    got = []
    while len(got) < limit:
        method, properties, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is None:
            break
        got.append((method, properties, body))
    return got


def get_bodies(channel, queue: str) -> list[bytes]:
    return [body for _, _, body in get_all(channel, queue)]


def message_count(channel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def wait_count(channel, queue: str, count: int, timeout: float = 10.0) -> int:
    """Poll a passive declare until the queue holds `count` messages."""
    deadline = time.monotonic() + timeout
    while True:
        now = message_count(channel, queue)
        if now == count:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"queue {queue} holds {now} messages, waited {timeout}s for {count}")
        time.sleep(0.05)


@dataclass
class Delivery:
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: pika.BasicProperties
    body: bytes


class Collector:
    """basic.consume callback that records every delivery."""

    def __init__(self):
        self.deliveries: list[Delivery] = []

    def __call__(self, channel, method, properties, body):
        self.deliveries.append(
            Delivery(method.consumer_tag, method.delivery_tag, method.redelivered,
                     method.exchange, method.routing_key, properties, body)
        )

    @property
    def bodies(self) -> list[bytes]:
        return [d.body for d in self.deliveries]

    def __len__(self):
        return len(self.deliveries)


def pump(connection, until, timeout: float, what: str):
    """Process the connection's events until `until()` is true."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        connection.process_data_events(time_limit=0.05)


def settle(connection, seconds: float):
    """Process events for `seconds` (to see that nothing more arrives)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.process_data_events(time_limit=min(0.05, max(0.0, deadline - time.monotonic())))


def props_dict(properties: pika.BasicProperties) -> dict:
    """The non-None properties of a message, for comparisons."""
    return {k: v for k, v in vars(properties).items() if v is not None}


# --------------------------------------------------------------------------
# Raw AMQP 0-9-1 frames (independent of any broker's internals)

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE


def octet(value: int) -> bytes:
    return struct.pack(">B", value)


def short(value: int) -> bytes:
    return struct.pack(">H", value)


def long_(value: int) -> bytes:
    return struct.pack(">I", value)


def longlong(value: int) -> bytes:
    return struct.pack(">Q", value)


def shortstr(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return octet(len(data)) + data


def longstr(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return long_(len(data)) + data


def field_value(value) -> bytes:
    if isinstance(value, bool):
        return b"t" + octet(int(value))
    if isinstance(value, int):
        return b"l" + struct.pack(">q", value)
    if isinstance(value, (str, bytes)):
        return b"S" + longstr(value)
    if isinstance(value, dict):
        return b"F" + table(value)
    if value is None:
        return b"V"
    raise TypeError(f"no field type for {value!r}")


def table(fields: dict) -> bytes:
    data = b"".join(shortstr(k) + field_value(v) for k, v in fields.items())
    return long_(len(data)) + data


def frame(frame_type: int, channel: int, payload: bytes, end: int = FRAME_END, size: int | None = None) -> bytes:
    """One frame: type, channel, size, payload, frame-end (all overridable
    so that tests can build broken ones)."""
    return struct.pack(">BHI", frame_type, channel, len(payload) if size is None else size) + payload + octet(end)


def method_frame(channel: int, class_id: int, method_id: int, args: bytes = b"") -> bytes:
    return frame(FRAME_METHOD, channel, short(class_id) + short(method_id) + args)


def header_frame(channel: int, body_size: int, class_id: int = 60, flags: int = 0, properties: bytes = b"") -> bytes:
    return frame(FRAME_HEADER, channel, short(class_id) + short(0) + longlong(body_size) + short(flags) + properties)


def body_frame(channel: int, body: bytes) -> bytes:
    return frame(FRAME_BODY, channel, body)


def heartbeat_frame() -> bytes:
    return frame(FRAME_HEARTBEAT, 0, b"")


def basic_publish(channel: int, exchange: str, routing_key: str, mandatory=False, immediate=False) -> bytes:
    bits = (1 if mandatory else 0) | (2 if immediate else 0)
    return method_frame(channel, 60, 40, short(0) + shortstr(exchange) + shortstr(routing_key) + octet(bits))


class Reader:
    """Decodes AMQP wire types from a bytes payload."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) != n:
            raise ValueError("short payload")
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def octet(self):
        return self.unpack(">B")

    def short(self):
        return self.unpack(">H")

    def long(self):
        return self.unpack(">I")

    def longlong(self):
        return self.unpack(">Q")

    def shortstr(self) -> str:
        return self.take(self.octet()).decode("utf-8", "replace")

    def longstr(self) -> bytes:
        return self.take(self.long())

    def value(self):
        kind = self.take(1)
        if kind == b"t":
            return bool(self.octet())
        if kind == b"b":
            return self.unpack(">b")
        if kind == b"B":
            return self.unpack(">B")
        if kind == b"s":
            return self.unpack(">h")
        if kind == b"u":
            return self.unpack(">H")
        if kind == b"I":
            return self.unpack(">i")
        if kind == b"i":
            return self.unpack(">I")
        if kind == b"l":
            return self.unpack(">q")
        if kind == b"f":
            return self.unpack(">f")
        if kind == b"d":
            return self.unpack(">d")
        if kind == b"D":
            scale = self.octet()
            return Decimal(self.unpack(">i")).scaleb(-scale)
        if kind == b"S":
            return self.longstr()
        if kind == b"x":
            return self.longstr()
        if kind == b"T":
            return datetime.utcfromtimestamp(self.longlong())
        if kind == b"F":
            return self.table()
        if kind == b"A":
            end = self.pos + 4 + struct.unpack(">I", self.data[self.pos:self.pos + 4])[0]
            self.pos += 4
            items = []
            while self.pos < end:
                items.append(self.value())
            return items
        if kind == b"V":
            return None
        raise ValueError(f"unknown field type {kind!r}")

    def table(self) -> dict:
        size = self.long()
        end = self.pos + size
        fields = {}
        while self.pos < end:
            key = self.shortstr()
            fields[key] = self.value()
        return fields


@dataclass
class Frame:
    type: int
    channel: int
    payload: bytes

    @property
    def method(self) -> tuple[int, int] | None:
        if self.type != FRAME_METHOD or len(self.payload) < 4:
            return None
        return struct.unpack(">HH", self.payload[:4])

    def args(self) -> Reader:
        reader = Reader(self.payload)
        reader.pos = 4
        return reader


@dataclass
class Close:
    """A connection.close or channel.close received from the broker."""

    reply_code: int
    reply_text: str
    class_id: int
    method_id: int
    channel: int


class RawConnection:
    """A plain socket that speaks AMQP frames by hand."""

    def __init__(self, target: AmqpTarget, timeout: float = 10.0):
        self.target = target
        self.sock = socket.create_connection((target.host, target.port), timeout=timeout)
        self.buffer = b""
        self.tune = None

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, need: int, deadline: float) -> bool:
        """Read until the buffer holds `need` bytes; False on EOF."""
        while len(self.buffer) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete frame in time; buffered {self.buffer[:64]!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def read_raw(self, n: int, timeout: float = 10.0) -> bytes:
        """Exactly n bytes, or fewer if the peer closed."""
        self._fill(n, time.monotonic() + timeout)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame, or None when the peer closed the connection."""
        deadline = time.monotonic() + timeout
        if not self._fill(7, deadline):
            return None
        frame_type, channel, size = struct.unpack(">BHI", self.buffer[:7])
        if not self._fill(7 + size + 1, deadline):
            return None
        payload = self.buffer[7:7 + size]
        end = self.buffer[7 + size]
        self.buffer = self.buffer[8 + size:]
        assert end == FRAME_END, f"broker sent a frame ending in {end:#x}"
        return Frame(frame_type, channel, payload)

    def read_method(self, timeout: float = 10.0, skip_heartbeats: bool = True) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            got = self.read_frame(max(0.0, deadline - time.monotonic()))
            if got is None or not (skip_heartbeats and got.type == FRAME_HEARTBEAT):
                return got

    def expect_method(self, class_id: int, method_id: int, timeout: float = 10.0) -> Frame:
        got = self.read_method(timeout)
        assert got is not None, f"connection closed while waiting for method {class_id}.{method_id}"
        if got.method == (10, 50):
            close = parse_close(got)
            raise AssertionError(f"connection.close {close} while waiting for method {class_id}.{method_id}")
        assert got.method == (class_id, method_id), f"expected method {class_id}.{method_id}, got {got}"
        return got

    def handshake(self, heartbeat: int | None = None, frame_max: int | None = None,
                  vhost: str | None = None, user: str | None = None, password: str | None = None,
                  client_properties: dict | None = None) -> dict:
        """Protocol header .. connection.open-ok; returns connection.start's
        server properties. tune-ok echoes the broker's values unless given."""
        self.send(PROTOCOL_HEADER)
        start = self.expect_method(10, 10)
        args = start.args()
        major, minor = args.octet(), args.octet()
        assert (major, minor) == (0, 9), (major, minor)
        server_properties = args.table()
        mechanisms = args.longstr()
        assert b"PLAIN" in mechanisms.split(), mechanisms
        user = self.target.user if user is None else user
        password = self.target.password if password is None else password
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        properties = {"product": "weir-tests raw", "capabilities": {"authentication_failure_close": True}}
        properties.update(client_properties or {})
        self.send(method_frame(0, 10, 11, table(properties) + shortstr("PLAIN") + longstr(response) + shortstr("en_US")))
        tune = self.expect_method(10, 30).args()
        channel_max, server_frame_max, server_heartbeat = tune.short(), tune.long(), tune.short()
        self.tune = (channel_max, server_frame_max, server_heartbeat)
        self.frame_max = server_frame_max if frame_max is None else frame_max
        self.heartbeat = server_heartbeat if heartbeat is None else heartbeat
        self.send(method_frame(0, 10, 31, short(channel_max) + long_(self.frame_max) + short(self.heartbeat)))
        self.send(method_frame(0, 10, 40, shortstr(self.target.vhost if vhost is None else vhost) + shortstr("") + octet(0)))
        self.expect_method(10, 41)
        return server_properties

    def open_channel(self, channel: int = 1):
        self.send(method_frame(channel, 20, 10, shortstr("")))
        self.expect_method(20, 11)

    def wait_close(self, timeout: float = 10.0) -> Close | None:
        """Read until a connection.close arrives (answered with close-ok) or
        the peer hangs up; returns the close, or None for a bare hang-up."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.read_frame(max(0.0, deadline - time.monotonic()))
            if got is None:
                return None
            if got.method == (10, 50):
                close = parse_close(got)
                with contextlib.suppress(OSError):
                    self.send(method_frame(0, 10, 51))
                return close

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True when the peer closes the socket within `timeout` (any bytes
        it sends first are discarded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
        return False


def parse_close(got: Frame) -> Close:
    args = got.args()
    return Close(args.short(), args.shortstr(), args.short(), args.short(), got.channel)


# --------------------------------------------------------------------------
# Pipelined publishing with confirms (SelectConnection on its own thread)


class ConfirmingPublisher(threading.Thread):
    """Publishes `count` messages through a SelectConnection in confirm
    mode without waiting for each confirm, and records what the broker said.

    Message i (0-based) gets delivery tag i + 1, body `body(i)`, properties
    `properties(i)`. Confirms with `multiple` are expanded over the
    not-yet-confirmed tags; a confirm for a tag that was already confirmed
    (or never published) is recorded in `duplicate_confirms`.
    """

    def __init__(self, target: AmqpTarget, exchange: str, routing_key, count: int,
                 body=lambda i: b"%d" % i, properties=lambda i: None, mandatory: bool = False,
                 batch: int = 200, window: int = 5000, pause: float = 0.0):
        super().__init__(daemon=True, name="confirming-publisher")
        self.target = target
        self.exchange = exchange
        self.routing_key = routing_key if callable(routing_key) else (lambda i, key=routing_key: key)
        self.count = count
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
        self.batch = batch
        self.window = window
        self.pause = pause
        self.published = 0
        self.acked: set[int] = set()  # delivery tags
        self.nacked: set[int] = set()
        self.events: list[tuple] = []  # ("ack"/"nack"/"return", tag or return info) in arrival order
        self.duplicate_confirms: list[tuple] = []
        self.returned: list[tuple] = []  # (reply_code, reply_text, routing_key, body)
        self.closed_reason = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._connection = None
        self._channel = None
        self._stopping = False
        self._scheduled = False

    # -- thread
    def run(self):
        try:
            self._connection = pika.SelectConnection(
                self.target.params(),
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_close,
            )
            self._connection.ioloop.start()
        except BaseException as error:  # reported by wait()
            self.error = error
        finally:
            self.done.set()

    def stop(self):
        """Close the connection from any thread."""
        self._stopping = True
        connection = self._connection
        if connection is not None:
            connection.ioloop.add_callback_threadsafe(self._close)

    def _close(self):
        if self._connection.is_open:
            self._connection.close()

    def wait(self, timeout: float):
        """Until every message is published and confirmed (or the
        connection closed); fails on timeout or a client error."""
        deadline = time.monotonic() + timeout
        while not self.done.is_set():
            if self.all_confirmed():
                self.stop()
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"published {self.published}, acked {len(self.acked)}, nacked {len(self.nacked)} "
                    f"of {self.count} after {timeout}s")
            self.done.wait(0.02)
        if self.error is not None:
            raise self.error

    def all_confirmed(self) -> bool:
        return self.published == self.count and len(self.acked) + len(self.nacked) == self.count

    def confirmed_indexes(self) -> list[int]:
        return sorted(tag - 1 for tag in self.acked)

    # -- pika callbacks (ioloop thread)
    def _on_open(self, connection):
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, connection, error):
        self.error = error
        connection.ioloop.stop()

    def _on_close(self, connection, reason):
        self.closed_reason = reason
        connection.ioloop.stop()

    def _on_channel(self, channel):
        self._channel = channel
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda frame: self._publish_some())

    def _on_return(self, channel, method, properties, body):
        info = (method.reply_code, method.reply_text, method.routing_key, body)
        self.returned.append(info)
        self.events.append(("return", info))

    def _on_confirm(self, frame):
        method = frame.method
        kind = "ack" if isinstance(method, pika.spec.Basic.Ack) else "nack"
        tag, multiple = method.delivery_tag, method.multiple
        outstanding = set(range(1, self.published + 1)) - self.acked - self.nacked
        if tag not in outstanding:
            self.duplicate_confirms.append((kind, tag, multiple))
        tags = {t for t in outstanding if t <= tag} if multiple else ({tag} & outstanding)
        (self.acked if kind == "ack" else self.nacked).update(tags)
        for t in sorted(tags):
            self.events.append((kind, t))
        self._publish_some()

    def _publish_some(self):
        if self._stopping or self._channel is None or not self._channel.is_open:
            return
        unconfirmed = self.published - len(self.acked) - len(self.nacked)
        room = min(self.batch, self.window - unconfirmed, self.count - self.published)
        for _ in range(max(0, room)):
            i = self.published
            self._channel.basic_publish(self.exchange, self.routing_key(i), self.body(i),
                                        self.properties(i), mandatory=self.mandatory)
            self.published += 1
        if self.published < self.count and not self._scheduled:
            self._scheduled = True
            self._connection.ioloop.call_later(self.pause, self._tick)

    def _tick(self):
        self._scheduled = False
        self._publish_some()
