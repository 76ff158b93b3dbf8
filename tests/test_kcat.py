"""Debian's kcat (librdkafka 2.0.x, an older client than confluent-kafka's)
against Weir: produce with keys and headers, consume, metadata.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from collections import defaultdict

import pytest

from helpers import unique

PARTITIONS = 3

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (scripts/test.sh installs it)")


def kcat(*args, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["kcat", *args], input=stdin, capture_output=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"kcat {' '.join(args)} exited {result.returncode}\nstderr:\n{result.stderr.decode(errors='replace')}"
    )
    return result


@pytest.fixture
def kcat_broker(weir_broker):
    # Topics are auto-created by kcat's first Metadata request, with
    # --num-partitions partitions.
    return weir_broker(args=["--num-partitions", str(PARTITIONS)])


def test_produce_consume_round_trip(kcat_broker):
    broker = kcat_broker
    topic = unique("kcat")
    runs = [
        ([], range(0, 200)),
        (["-z", "snappy"], range(200, 400)),
        (["-X", "compression.type=zstd"], range(400, 600)),
    ]
    expected_lines = []
    for run, (options, numbers) in enumerate(runs):
        lines = [f"key-{i % 23}:value {i} with: colons and spaces" for i in numbers]
        expected_lines += [(line, run) for line in lines]
        stdin = "".join(line + "\n" for line in lines).encode()
        kcat("-P", "-b", broker.bootstrap, "-t", topic, "-K", ":", "-H", "src=kcat", "-H", f"run={run}",
             "-X", "acks=all", *options, stdin=stdin)

    result = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-e", "-o", "beginning",
                  "-f", r"%p\t%o\t%k\t%s\t%h\n")
    rows = [line.split("\t") for line in result.stdout.decode().splitlines()]
    assert len(rows) == len(expected_lines), result.stderr.decode(errors="replace")

    # Per partition: offsets 0, 1, 2, ... in the order the lines were sent;
    # every key on librdkafka's consistent_random partition, crc32 % 3.
    expected_by_partition = defaultdict(list)
    for line, run in expected_lines:
        key, value = line.split(":", 1)
        partition = zlib.crc32(key.encode()) % PARTITIONS
        expected_by_partition[partition].append((key, value, f"src=kcat,run={run}"))
    got_by_partition = defaultdict(list)
    for partition, offset, key, value, headers in rows:
        got_by_partition[int(partition)].append((int(offset), key, value, headers))
    assert set(got_by_partition) <= set(range(PARTITIONS))
    for partition in range(PARTITIONS):
        want = [(offset, *entry) for offset, entry in enumerate(expected_by_partition[partition])]
        assert got_by_partition[partition] == want, f"partition {partition}"

    # The JSON envelope: CreateTime timestamps and headers as sent.
    result = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o", "beginning", "-c", "1", "-J")
    [envelope] = [json.loads(line) for line in result.stdout.decode().splitlines()]
    key, value, _ = expected_by_partition[0][0]
    assert (envelope["partition"], envelope["offset"], envelope["key"], envelope["payload"]) == (0, 0, key, value)
    assert envelope["tstype"] == "create"
    assert envelope["headers"] == ["src", "kcat", "run", "0"]

    # Reading from an absolute offset and from a relative end offset.
    count0 = len(expected_by_partition[0])
    result = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o", "5", "-e", "-f", r"%o %s\n")
    assert result.stdout.decode().splitlines() == [
        f"{offset} {entry[1]}" for offset, entry in enumerate(expected_by_partition[0]) if offset >= 5
    ]
    result = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o", "-3", "-e", "-f", r"%o\n")
    assert result.stdout.decode().split() == [str(o) for o in range(count0 - 3, count0)]


def test_metadata_listing(kcat_broker):
    broker = kcat_broker
    topic = unique("kcat-meta")
    kcat("-P", "-b", broker.bootstrap, "-t", topic, stdin=b"hello\n")

    metadata = json.loads(kcat("-L", "-b", broker.bootstrap, "-t", topic, "-J").stdout)
    [advertised] = metadata["brokers"]
    assert advertised["name"] == broker.bootstrap  # what --kafka-listen says
    node = advertised["id"]
    [entry] = metadata["topics"]
    assert entry["topic"] == topic
    assert "error" not in entry, entry
    assert entry["partitions"] == [
        {"partition": p, "leader": node, "replicas": [{"id": node}], "isrs": [{"id": node}]}
        for p in range(PARTITIONS)
    ]

    # The whole-cluster listing, as text.
    text = kcat("-L", "-b", broker.bootstrap).stdout.decode()
    assert " 1 brokers:\n" in text
    assert f"  broker {node} at {broker.bootstrap}" in text
    assert f'  topic "{topic}" with {PARTITIONS} partitions:\n' in text
    for p in range(PARTITIONS):
        assert f"    partition {p}, leader {node}, replicas: {node}, isrs: {node}\n" in text
