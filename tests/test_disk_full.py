"""A full disk heals by itself. The data directory lives on a small ext4
file system loop-mounted for the test: filling it makes Kafka produces fail
with KAFKA_STORAGE_ERROR and AMQP confirms come back as nacks; once space is
freed, produce and publish resume without a restart, and nothing that was
acknowledged is lost across a kill -9. With the disk alarm, intake stops
before the disk is full and resumes when space returns.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time

import pytest

import kafka_wire
from conftest import Broker
from helpers import create_topic, make_admin, make_producer, unique, wait_until

KAFKA_STORAGE_ERROR = 56
DISK_BYTES = 48 << 20


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB ext4 file system (no blocks reserved for root) mounted
    under tmp_path; unmounted and removed afterwards, also on failure."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 to loop-mount a small file system")
    image, mount = tmp_path / "disk.img", tmp_path / "disk"
    mount.mkdir()
    with open(image, "wb") as file:
        file.truncate(DISK_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        if os.path.ismount(mount):
            subprocess.run(["umount", "-l", str(mount)], check=False)
        image.unlink(missing_ok=True)


@pytest.fixture
def disk_broker(request, tmp_path, small_disk):
    """Factory: a broker whose data directory is on the small disk (its log
    stays in tmp_path, so the broker can always say what happened)."""
    brokers = []

    def make(args=()):
        broker = Broker(tmp_path / f"broker{len(brokers)}", args=args)
        broker.data_dir = small_disk / "data"
        brokers.append(broker)
        return broker.start()

    yield make
    problems = [problem for broker in brokers for problem in broker.teardown()]
    assert not problems, problems


def fill(mount, leave_bytes=0):
    """Writes filler files until the file system is full (or only
    `leave_bytes` are free); returns their paths."""
    paths = []
    chunk = b"\xee" * (1 << 20)
    while True:
        free = shutil.disk_usage(mount).free
        if free <= leave_bytes:
            return paths
        path = mount / f"filler-{len(paths)}"
        paths.append(path)
        try:
            with open(path, "wb") as file:
                for size in (1 << 20, 4096, 1):
                    while shutil.disk_usage(mount).free - size >= leave_bytes:
                        file.write(chunk[:size])
                        file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
            return paths
        if leave_bytes:
            return paths


def batch_of(label: str, index: int, value_bytes: int = 8000) -> tuple[bytes, bytes]:
    value = f"{label}-{index}-".encode().ljust(value_bytes, b".")
    return value, kafka_wire.record_batch([(None, value, ())], int(time.time() * 1000))


def all_records(broker, topic):
    """Every (offset, value) of partition 0 below its high watermark."""
    records = []
    offset = 0
    with kafka_wire.Connection(broker) as conn:
        while True:
            answer = kafka_wire.fetch_v4(conn, topic, 0, offset, max_bytes=1 << 20)
            assert answer["error_code"] == 0, answer["error_code"]
            decoded = [r for r in kafka_wire.decode_batches(answer["records"] or b"") if r[0] >= offset]
            if not decoded:
                assert offset == answer["high_watermark"], (offset, answer["high_watermark"])
                return records
            records += [(o, v) for o, _, v in decoded]
            offset = decoded[-1][0] + 1


@pytest.mark.timeout(180)
def test_a_full_disk_fails_writes_and_heals_when_space_returns(disk_broker, small_disk):
    import pika

    broker = disk_broker(args=["--disk-free-limit-bytes", "0"])
    topic = unique("full")
    create_topic(make_admin(broker), topic, 1)
    connection = pika.BlockingConnection(broker.amqp_params())
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("full-q", durable=True)
    persistent = pika.BasicProperties(delivery_mode=2)

    acked, confirmed = [], []
    conn = kafka_wire.Connection(broker)
    fillers = fill(small_disk)

    # Kafka: produce until the disk refuses; every answer is either an ack
    # or KAFKA_STORAGE_ERROR, and the refusals come.
    refused = 0
    for i in range(400):
        value, batch = batch_of("kafka", i)
        error_code, _ = kafka_wire.produce_v3(conn, topic, 0, batch)
        assert error_code in (0, KAFKA_STORAGE_ERROR), error_code
        if error_code == 0:
            acked.append(value)
        else:
            refused += 1
            if refused == 5:
                break
    assert refused == 5, "the full disk never refused a produce"

    # AMQP: persistent publishes with confirms are nacked, not lost silently.
    nacked = 0
    for i in range(400):
        body = f"amqp-{i}-".encode().ljust(8000, b".")
        try:
            channel.basic_publish("", "full-q", body, persistent)
            confirmed.append(body)
        except pika.exceptions.NackError:
            nacked += 1
            if nacked == 3:
                break
    assert nacked == 3, "the full disk never nacked a publish"

    # Space returns: both doors take writes again, without a restart.
    for path in fillers:
        path.unlink()

    def kafka_resumes():
        value, batch = batch_of("kafka-after", len(acked))
        error_code, _ = kafka_wire.produce_v3(conn, topic, 0, batch)
        if error_code == 0:
            acked.append(value)
        return error_code == 0

    wait_until(kafka_resumes, 15, "a produce to succeed after space returned", interval=0.5)
    for i in range(20):
        value, batch = batch_of("kafka-after", len(acked))
        assert kafka_wire.produce_v3(conn, topic, 0, batch)[0] == 0
        acked.append(value)

    def amqp_resumes():
        body = f"amqp-after-{len(confirmed)}".encode()
        try:
            channel.basic_publish("", "full-q", body, persistent)
        except pika.exceptions.NackError:
            return False
        confirmed.append(body)
        return True

    wait_until(amqp_resumes, 15, "a publish to be confirmed after space returned", interval=0.5)
    conn.close()
    connection.close()

    # Nothing acknowledged is lost, duplicated or reordered across a kill -9.
    broker.kill()
    broker.start()
    assert [v for _, v in all_records(broker, topic)] == acked
    connection = pika.BlockingConnection(broker.amqp_params())
    channel = connection.channel()
    got = []
    while True:
        method, _, body = channel.basic_get("full-q", auto_ack=True)
        if method is None:
            break
        got.append(body)
    connection.close()
    assert got == confirmed


@pytest.mark.timeout(120)
def test_the_disk_alarm_stops_intake_before_the_disk_is_full(disk_broker, small_disk):
    broker = disk_broker(args=["--disk-free-limit-bytes", str(16 << 20)])
    topic = unique("alarm")
    create_topic(make_admin(broker), topic, 1)
    fillers = fill(small_disk, leave_bytes=8 << 20)
    wait_until(lambda: "disk alarm" in broker.log_text(), 10, "the disk alarm")

    with kafka_wire.Connection(broker) as conn:
        _, batch = batch_of("refused", 0)
        assert kafka_wire.produce_v3(conn, topic, 0, batch)[0] == KAFKA_STORAGE_ERROR

    # librdkafka retries the retriable error; freeing space lets it through.
    producer = make_producer(broker, **{"message.timeout.ms": 60_000, "retry.backoff.ms": 200})
    reports = []
    producer.produce(topic, b"waited for space", on_delivery=lambda err, msg: reports.append((err, msg)))
    producer.poll(2)
    assert not reports, f"delivered while the alarm was on: {reports}"
    for path in fillers:
        path.unlink()
    freed = time.monotonic()
    wait_until(lambda: producer.poll(0.2) or reports, 30, "delivery after space returned")
    assert reports[0][0] is None, reports[0][0]
    print(f"delivered {time.monotonic() - freed:.1f}s after space returned")
    assert [v for _, v in all_records(broker, topic)] == [b"waited for space"]
