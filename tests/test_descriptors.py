"""Out of file descriptors, the broker stays calm and recovers by itself.

The broker runs with an open-file limit of 200 and is handed far more idle
connections than that on every door (Kafka, AMQP, HTTP). Its accept loops
must then back off (10 ms doubling to 1 s) instead of spinning, log a
bounded number of lines, and count the failures in
`weir_accept_errors_total{listener}`. Once the idle connections go away,
real clients are served again on every door within seconds.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time

import pika
from confluent_kafka import TopicPartition

from helpers import create_topic, make_admin, make_consumer, make_producer, poll_one, unique, wait_until
from http_helpers import Http

DESCRIPTORS_MAX = 200
# Per door: more than the broker can hold.
IDLE_SOCKETS_PER_DOOR = 350
MEASURE_S = 3.0
CPU_S_MAX = 0.3
LOG_LINES_MAX = 20
RECOVERY_S_MAX = 10.0
LISTENERS = ("kafka", "amqp", "http")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of `pid` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name, which may itself hold spaces.
        fields = stat.read().rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")


def log_lines(broker) -> int:
    return broker.log_text().count("\n")


def accept_errors(http: Http) -> dict[str, float]:
    """weir_accept_errors_total by listener, from /metrics."""
    answer = http.get("/metrics")
    assert answer.status == 200, answer
    found = {}
    for line in answer.body.decode().splitlines():
        if line.startswith("weir_accept_errors_total{"):
            labels, value = line.rsplit(" ", 1)
            listener = labels.split('listener="', 1)[1].split('"', 1)[0]
            found[listener] = float(value)
    return found


def open_idle(sockets: list, host: str, port: int, count: int) -> None:
    """Starts `count` connections to `port` without waiting for them: past
    the broker's descriptors and its listen backlog (128) they stay half-open
    in the kernel, which is all the test needs."""
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sockets.append(sock)
        sock.setblocking(False)
        sock.connect_ex((host, port))


def served_again(check, door: str) -> None:
    """Retries `check` (a client round trip) until it returns True, failing
    after RECOVERY_S_MAX seconds with the last error."""
    deadline = time.monotonic() + RECOVERY_S_MAX
    while True:
        try:
            if check():
                return
            last = "check returned False"
        except Exception as error:  # noqa: BLE001 - any client failure means "not yet"
            last = repr(error)
        if time.monotonic() > deadline:
            raise AssertionError(f"{door} not served within {RECOVERY_S_MAX}s of freeing descriptors: {last}")
        time.sleep(0.2)


def serves_kafka(broker, topic: str) -> bool:
    producer = make_producer(broker, **{"message.timeout.ms": 5000})
    value = unique("after-exhaustion").encode()
    producer.produce(topic, value=value)
    assert producer.flush(10) == 0, "produce did not complete"
    consumer = make_consumer(broker)
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        return poll_one(consumer, timeout=10).value() == value
    finally:
        consumer.close()


def serves_amqp(broker) -> bool:
    connection = pika.BlockingConnection(broker.amqp_params(connection_attempts=1, socket_timeout=5))
    try:
        channel = connection.channel()
        queue = unique("after-exhaustion")
        channel.queue_declare(queue)
        channel.basic_publish("", queue, b"back")
        method, _, body = channel.basic_get(queue, auto_ack=True)
        return method is not None and body == b"back"
    finally:
        connection.close()


def test_descriptor_exhaustion_is_calm_and_recovers(broker):
    http = Http(broker.http_url)
    admin = make_admin(broker)
    topic = unique("fds")
    create_topic(admin, topic)
    before = accept_errors(http)
    assert before == {listener: 0.0 for listener in LISTENERS}, before

    pid = broker.proc.pid
    # Set after start-up: `weir server` raises its soft limit to the hard one.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (DESCRIPTORS_MAX, DESCRIPTORS_MAX))
    open_at_limit = len(os.listdir(f"/proc/{pid}/fd"))

    sockets: list[socket.socket] = []
    try:
        for port in (broker.port, broker.amqp_port, broker.http_port):
            open_idle(sockets, broker.host, port, IDLE_SOCKETS_PER_DOOR)
        # Every listener has connections it cannot take: wait for each to say so.
        wait_until(lambda: all(f'listener="{name}"' in broker.log_text() for name in LISTENERS),
                   10, "an accept failure logged by every listener")
        held = len(os.listdir(f"/proc/{pid}/fd"))

        cpu_before, lines_before = cpu_seconds(pid), log_lines(broker)
        time.sleep(MEASURE_S)
        cpu_used = cpu_seconds(pid) - cpu_before
        lines_logged = log_lines(broker) - lines_before
        print(f"\ndescriptors: {open_at_limit} open at the limit, {held} while exhausted; "
              f"over {MEASURE_S}s: {cpu_used:.3f}s CPU, {lines_logged} log lines")
        assert broker.alive()
        assert held >= DESCRIPTORS_MAX - 5, f"only {held} descriptors open: the limit was never reached"
        assert cpu_used < CPU_S_MAX, f"{cpu_used:.3f}s of CPU in {MEASURE_S}s while out of descriptors"
        assert lines_logged < LOG_LINES_MAX, (
            f"{lines_logged} log lines in {MEASURE_S}s:\n{broker.log_tail(5000)}")
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    freed_at = time.monotonic()
    served_again(lambda: http.get("/api/overview", timeout=2).status == 200, "HTTP")
    served_again(lambda: serves_amqp(broker), "AMQP")
    served_again(lambda: serves_kafka(broker, topic), "Kafka")
    print(f"every door served again {time.monotonic() - freed_at:.1f}s after the idle connections closed")

    after = accept_errors(http)
    for listener in LISTENERS:
        assert after.get(listener, 0) > before[listener], (listener, before, after)
