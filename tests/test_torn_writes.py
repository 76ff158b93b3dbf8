"""The torn-write matrix against the real binary: a partition's active
segment is damaged while the broker is down (after a clean stop and after a
kill -9) in every way a crash, a bad disk or an operator can damage it. The
broker must start, keep every acknowledged record whose bytes were not
themselves damaged, refuse to serve damaged bytes (CORRUPT_MESSAGE, never
wrong data), log every cut, and then take 50 more acknowledged records that
survive a further kill -9.
"""

from __future__ import annotations

import random
import signal
import struct
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

import pytest
from confluent_kafka import TopicPartition

import kafka_wire
from conftest import WEIR_BIN
from helpers import assert_delivered, create_topic, make_admin, make_consumer, make_producer, produce_all, unique

CORRUPT_MESSAGE = 2
BATCHES = 20
RECORDS_PER_BATCH = 5
SEGMENT = "00000000000000000000"


@dataclass
class StoredBatch:
    """One acknowledged batch: where it sits in the segment and what it holds."""

    position: int
    size: int
    base_offset: int
    values: list[bytes]

    @property
    def last_offset(self) -> int:
        return self.base_offset + len(self.values) - 1


@dataclass
class Damage:
    """What a case did to the segment: the batches whose bytes it damaged
    (their records may be lost) and whether the broker must log a cut."""

    damaged: list[StoredBatch] = field(default_factory=list)
    cut_logged: bool = True


def segment_layout(path) -> list[tuple[int, int, int]]:
    """(position, size, base offset) of each batch in a segment file."""
    data = path.read_bytes()
    layout, position = [], 0
    while position + 12 <= len(data):
        base_offset, length = struct.unpack(">qi", data[position:position + 12])
        layout.append((position, 12 + length, base_offset))
        position += 12 + length
    return layout


def flip_byte(path, position):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x5A
    path.write_bytes(bytes(data))


def truncate_to(path, size):
    with open(path, "r+b") as file:
        file.truncate(size)


def append(path, data: bytes):
    with open(path, "ab") as file:
        file.write(data)


def damage_segment(case: str, directory, batches: list[StoredBatch]) -> Damage:
    """Damages the active segment in `directory` as `case` says."""
    log = directory / f"{SEGMENT}.log"
    size = log.stat().st_size
    last = batches[-1]
    rng = random.Random(case)
    if case.startswith("truncate-by-"):
        cut = int(case.rsplit("-", 1)[1])
        truncate_to(log, size - cut)
        return Damage([b for b in batches if b.position + b.size > size - cut])
    if case == "truncate-half":
        truncate_to(log, size // 2)
        return Damage([b for b in batches if b.position + b.size > size // 2])
    if case == "truncate-to-boundary":
        truncate_to(log, last.position)
        return Damage([last])
    if case == "truncate-to-zero":
        truncate_to(log, 0)
        return Damage(list(batches))
    if case == "append-random":
        append(log, rng.randbytes(1000))
        return Damage()
    if case == "append-zeros":
        append(log, bytes(4096))
        return Damage()
    if case == "append-fake-2gb-header":
        next_offset = last.last_offset + 1
        append(log, struct.pack(">qi", next_offset, 0x7FFF_FFF0) + rng.randbytes(200))
        return Damage()
    if case == "append-bad-crc-copy":
        copy = bytearray(log.read_bytes()[last.position:])
        copy[0:8] = struct.pack(">q", last.last_offset + 1)
        copy[-3] ^= 0xFF  # inside the records: the CRC no longer matches
        append(log, bytes(copy))
        return Damage()
    if case == "append-duplicate":
        append(log, log.read_bytes()[last.position:])
        return Damage()
    if case == "flip-last":
        flip_byte(log, last.position + last.size - 4)
        return Damage([last])
    if case == "flip-middle":
        middle = batches[len(batches) // 2]
        flip_byte(log, middle.position + middle.size - 4)
        return Damage([middle])
    if case == "index-garbage":
        (directory / f"{SEGMENT}.index").write_bytes(rng.randbytes(4096))
        (directory / f"{SEGMENT}.timeindex").write_bytes(rng.randbytes(4096))
        return Damage(cut_logged=False)
    if case == "index-missing":
        (directory / f"{SEGMENT}.index").unlink()
        (directory / f"{SEGMENT}.timeindex").unlink()
        return Damage(cut_logged=False)
    raise AssertionError(f"unknown case {case}")


CASES = [
    "truncate-by-1",
    "truncate-by-7",
    "truncate-by-13",
    "truncate-by-50",
    "truncate-half",
    "truncate-to-boundary",
    "truncate-to-zero",
    "append-random",
    "append-zeros",
    "append-fake-2gb-header",
    "append-bad-crc-copy",
    "append-duplicate",
    "flip-last",
    "flip-middle",
    "index-garbage",
    "index-missing",
]


# A segment cut exactly at a batch boundary, and a missing index (rebuilt
# on open), leave nothing that is wrong in itself to find.
UNDETECTABLE_OFFLINE = {"truncate-to-boundary", "truncate-to-zero", "index-missing"}


def data_check(broker):
    """`weir data check` on the broker's (stopped) data directory."""
    return subprocess.run(
        [str(WEIR_BIN), "data", "check", str(broker.data_dir)], capture_output=True, text=True, timeout=60
    )


def produce_batches(broker, topic) -> list[StoredBatch]:
    """BATCHES acknowledged batches of RECORDS_PER_BATCH records, one Produce
    request each, so each is one stored batch."""
    stored = []
    with kafka_wire.Connection(broker) as conn:
        for b in range(BATCHES):
            values = [f"batch {b} record {r} ".encode() * 3 for r in range(RECORDS_PER_BATCH)]
            batch = kafka_wire.record_batch([(None, v, ()) for v in values], int(time.time() * 1000))
            error_code, base_offset = kafka_wire.produce_v3(conn, topic, 0, batch)
            assert error_code == 0, f"produce of batch {b} failed with {error_code}"
            stored.append(StoredBatch(0, 0, base_offset, values))
    return stored


def read_partition(broker, topic, high_watermark, damaged: list[StoredBatch]):
    """Every readable record below the high watermark, by offset, walking the
    partition with raw fetches; a CORRUPT_MESSAGE answer must fall inside a
    damaged batch, which is then skipped. Returns (records, corrupt offsets)."""
    records, corrupt = {}, []
    offset = 0
    with kafka_wire.Connection(broker) as conn:
        while offset < high_watermark:
            answer = kafka_wire.fetch_v4(conn, topic, 0, offset, max_bytes=1 << 16)
            if answer["error_code"] == CORRUPT_MESSAGE:
                batch = next((b for b in damaged if b.base_offset <= offset <= b.last_offset), None)
                assert batch is not None, f"CORRUPT_MESSAGE at {offset}, outside every damaged batch"
                corrupt.append(offset)
                offset = batch.last_offset + 1
                continue
            assert answer["error_code"] == 0, f"fetch at {offset}: error {answer['error_code']}"
            decoded = kafka_wire.decode_batches(answer["records"] or b"")
            assert decoded, f"no records at {offset} below the high watermark {high_watermark}"
            for record_offset, _key, value in decoded:
                if record_offset >= offset:
                    records[record_offset] = value
            offset = max(record_offset for record_offset, _, _ in decoded) + 1
    return records, corrupt


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", ["clean", "kill"])
@pytest.mark.parametrize("case", CASES)
def test_damaged_segment(weir_broker, case, stop):
    broker = weir_broker()
    topic = unique("torn")
    create_topic(make_admin(broker), topic, 1)
    batches = produce_batches(broker, topic)
    broker.stop(signal.SIGTERM if stop == "clean" else signal.SIGKILL)

    directory = broker.data_dir / "topics" / topic / "0"
    layout = segment_layout(directory / f"{SEGMENT}.log")
    assert [base for _, _, base in layout] == [b.base_offset for b in batches]
    for batch, (position, size, _) in zip(batches, layout):
        batch.position, batch.size = position, size
    assert data_check(broker).returncode == 0, "weir data check finds damage in an undamaged directory"
    damage = damage_segment(case, directory, batches)
    if case not in UNDETECTABLE_OFFLINE:
        checked = data_check(broker)
        assert checked.returncode == 1, f"weir data check missed {case}:\n{checked.stdout}"
        assert str(directory) in checked.stdout
    log_before = len(broker.log_text())

    broker.start()
    new_values = [f"after {case} {i}".encode() for i in range(50)]
    reports = produce_all(make_producer(broker), topic, [{"value": v} for v in new_values])
    assert_delivered(reports)
    broker.kill()
    broker.start()

    expected = {}
    for batch in batches:
        if batch not in damage.damaged:
            for i, value in enumerate(batch.values):
                expected[batch.base_offset + i] = value
    for value, (_, _, offset, _) in zip(new_values, reports):
        assert offset not in expected, f"new record given the offset {offset} of an acknowledged one"
        expected[offset] = value
    high_watermark = max(offset for _, _, offset, _ in reports) + 1

    records, corrupt = read_partition(broker, topic, high_watermark, damage.damaged)
    missing = sorted(set(expected) - set(records))
    assert not missing, f"acknowledged records lost: offsets {missing[:10]}"
    changed = [o for o in expected if records[o] != expected[o]]
    assert not changed, f"records changed at offsets {changed[:10]}"
    extra = sorted(set(records) - set(expected))
    assert not extra, f"records that were never acknowledged (or damaged) served at {extra[:10]}"
    if corrupt:
        assert "corrupt" in broker.log_text().lower()
        metrics = urllib.request.urlopen(f"{broker.http_url}/metrics", timeout=10).read().decode()
        refused = [line for line in metrics.splitlines() if line.startswith("weir_corrupt_reads_total ")]
        assert refused and float(refused[0].split()[1]) >= len(corrupt), refused

    # A real client reads the records produced after the damage, in order.
    consumer = make_consumer(broker)
    first_new = min(offset for _, _, offset, _ in reports)
    consumer.assign([TopicPartition(topic, 0, first_new)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(new_values) and time.monotonic() < deadline:
        for message in consumer.consume(100, timeout=0.5):
            assert message.error() is None, message.error()
            got.append(message.value())
    consumer.close()
    assert got == new_values

    # Every cut the broker made is in its log, with the partition's path.
    new_log = broker.log_text()[log_before:]
    bytes_cut = damage.damaged or case.startswith("append-")
    detectable = bytes_cut and not (stop == "kill" and case in ("truncate-to-boundary", "truncate-to-zero"))
    if damage.cut_logged and detectable:
        lines = [line for line in new_log.splitlines() if str(directory) in line]
        assert any(("WARN" in line or "ERROR" in line) for line in lines), (
            f"no warning or error naming {directory} after {case}:\n{new_log[-4000:]}"
        )
