"""`weir topic|group|queue|exchange|binding|produce|consume|status` against a
real broker: the CLI drives the HTTP API of a `weir server` started by the
conftest fixtures, and the results are checked with real Kafka and AMQP
clients (confluent-kafka, pika) where they matter.

Exit codes checked: 0 done, 1 the broker refused, 2 usage error, 3 the API
cannot be reached.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from confluent_kafka import TopicPartition

from conftest import WEIR_BIN, binary_has_http, free_port
from helpers import make_consumer, make_producer, produce_all, assert_delivered, unique

pytestmark = pytest.mark.skipif(
    not binary_has_http(), reason="this weir binary has no HTTP API (--http-listen)"
)


def weir(broker, *args, input: bytes | str | None = None, check: int | None = 0, api=None):
    """Runs `weir <args> --api <broker's API>`; returns the CompletedProcess
    (stdout and stderr as bytes). `check` is the expected exit code (None: any)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    if isinstance(input, str):
        input = input.encode()
    result = subprocess.run(
        [str(WEIR_BIN), *args, "--api", api or broker.http_url],
        input=input if input is not None else b"",
        capture_output=True,
        env=env,
        timeout=60,
    )
    if check is not None:
        assert result.returncode == check, (
            f"weir {' '.join(args)} exited {result.returncode}, expected {check}\n"
            f"stdout: {result.stdout.decode(errors='replace')}\n"
            f"stderr: {result.stderr.decode(errors='replace')}"
        )
    return result


def weir_json(broker, *args, **kwargs):
    """`weir <args> --output json`, parsed."""
    return json.loads(weir(broker, *args, "--output", "json", **kwargs).stdout)


def test_topic_lifecycle(broker):
    topic = unique("cli-topic")
    out = weir(broker, "topic", "create", topic, "--partitions", "2", "--config", "retention.ms=3600000")
    assert out.stdout.decode() == f"created topic {topic}\n"

    listed = weir_json(broker, "topic", "list")
    assert {"name": topic, "partitions": 2, "messages": 0, "size_bytes": 0} in listed
    table = weir(broker, "topic", "list").stdout.decode().splitlines()
    assert table[0].split() == ["NAME", "PARTITIONS", "MESSAGES", "SIZE"]
    assert [line.split()[:3] for line in table[1:]] == [[topic, "2", "0"]]

    described = weir_json(broker, "topic", "describe", topic)
    assert described["name"] == topic
    assert [p["partition"] for p in described["partitions"]] == [0, 1]
    assert set(described["partitions"][0]) >= {
        "partition", "log_start_offset", "high_watermark", "log_end_offset", "size_bytes"
    }
    configs = {c["name"]: c for c in described["configs"]}
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["source"] != "default"

    weir(broker, "topic", "alter", topic, "--set", "retention.ms=7200000", "--set", "segment.ms=100000")
    configs = {c["name"]: c for c in weir_json(broker, "topic", "describe", topic)["configs"]}
    assert (configs["retention.ms"]["value"], configs["segment.ms"]["value"]) == ("7200000", "100000")
    weir(broker, "topic", "alter", topic, "--delete", "segment.ms")
    configs = {c["name"]: c for c in weir_json(broker, "topic", "describe", topic)["configs"]}
    assert configs["segment.ms"]["value"] == "604800000"
    assert configs["retention.ms"]["value"] == "7200000"

    weir(broker, "topic", "add-partitions", topic, "--count", "5")
    assert len(weir_json(broker, "topic", "describe", topic)["partitions"]) == 5
    shrink = weir(broker, "topic", "add-partitions", topic, "--count", "3", check=1)
    assert b"the broker refused" in shrink.stderr

    created_again = weir(broker, "topic", "create", topic, check=1)
    assert b"HTTP 409" in created_again.stderr and b"weir topic describe" in created_again.stderr

    weir(broker, "topic", "delete", topic)
    assert topic not in [t["name"] for t in weir_json(broker, "topic", "list")]

    missing = weir(broker, "topic", "describe", topic, check=1)
    stderr = missing.stderr.decode()
    assert "HTTP 404" in stderr and "weir topic list" in stderr, stderr
    assert missing.stdout == b""
    weir(broker, "topic", "delete", topic, check=1)
    weir(broker, "consume", topic, check=1)


def test_produce_consume_round_trip_byte_for_byte(broker):
    topic = unique("cli-records")
    weir(broker, "topic", "create", topic, "--partitions", "1")
    lines = [
        b"plain",
        b"",
        b"tabs\tand spaces  ",
        b"carriage\r",
        "unicode \u00e9\u4e2d\U0001F600".encode(),
        b"colon:in:value",
        b"binary \xff\x00\xfe",
    ]
    weir(broker, "produce", topic, "--header", "source=cli", "--header", "n=1", input=b"\n".join(lines) + b"\n")

    # What a Kafka client sees: the exact bytes, null keys, both headers.
    consumer = make_consumer(broker)
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        seen = []
        while len(seen) < len(lines):
            for message in consumer.consume(10, timeout=1):
                assert message.error() is None
                seen.append(message)
    finally:
        consumer.close()
    assert [m.value() for m in seen] == lines
    assert all(m.key() is None for m in seen)
    assert all(sorted(m.headers()) == [("n", b"1"), ("source", b"cli")] for m in seen)

    # What weir consume prints: the same bytes, one record per line.
    out = weir(broker, "consume", topic).stdout
    assert out == b"\n".join(lines) + b"\n"
    formatted = weir(broker, "consume", topic, "--from", "2", "--limit", "2",
                     "--format", "{topic}|{partition}|{offset}|{key}|{value}|{headers}").stdout
    assert formatted == (
        f"{topic}|0|2||tabs\tand spaces  |n=1,source=cli\n{topic}|0|3||carriage\r|n=1,source=cli\n"
    ).encode()

    # JSON lines, one object per record.
    records = [json.loads(line) for line in weir(broker, "consume", topic, "--output", "json").stdout.splitlines()]
    assert [r["offset"] for r in records] == list(range(len(lines)))
    assert set(records[0]) >= {"topic", "partition", "offset", "timestamp_ms", "key", "value", "headers"}
    assert records[0]["topic"] == topic and records[0]["value"] == "plain"
    assert records[0]["headers"] == {"n": "1", "source": "cli"}


def test_produce_keys_partitions_and_batches(broker, tmp_path):
    topic = unique("cli-keys")
    weir(broker, "topic", "create", topic, "--partitions", "3")
    # Keys with the separator: the same key always lands in the same partition.
    source = "".join(f"user{i % 7}:event {i}\n" for i in range(1200))
    path = tmp_path / "events.txt"
    path.write_text(source)
    summary = weir_json(broker, "produce", topic, "--file", str(path), "--key-separator", ":")
    assert summary["produced"] == 1200
    assert sum(p["records"] for p in summary["partitions"]) == 1200

    printed = weir(broker, "consume", topic, "--format", "{partition} {key} {value}").stdout.decode()
    rows = [line.split(" ", 2) for line in printed.splitlines()]
    assert len(rows) == 1200
    partition_of_key = {}
    for partition, key, value in rows:
        assert partition_of_key.setdefault(key, partition) == partition, key
    assert sorted(int(value.split()[1]) for _, _, value in rows) == list(range(1200))
    # Per partition, values keep the order they had in the file.
    for partition in {p for p, _, _ in rows}:
        numbers = [int(v.split()[1]) for p, _, v in rows if p == partition]
        assert numbers == sorted(numbers)

    # --partition on both sides, --limit, --from latest without --follow.
    weir(broker, "produce", topic, "--partition", "2", "--key", "fixed", input="a\nb\n")
    last_two = weir(broker, "consume", topic, "--partition", "2", "--from", "latest").stdout
    assert last_two == b""
    tail = weir_json(broker, "topic", "describe", topic)["partitions"][2]["high_watermark"]
    got = weir(broker, "consume", topic, "--partition", "2", "--from", str(tail - 2),
               "--format", "{key}={value}").stdout
    assert got == b"fixed=a\nfixed=b\n"
    assert weir(broker, "consume", topic, "--limit", "5").stdout.count(b"\n") == 5

    # A line without the separator: a usage error naming the line, nothing sent.
    bad = weir(broker, "produce", topic, "--key-separator", "=", input="a=1\nno separator\n", check=2)
    assert b"line 2 has no key separator" in bad.stderr
    # A missing topic: refused (1) with a hint.
    missing = weir(broker, "produce", unique("nope"), input="x\n", check=1)
    assert b"weir topic create" in missing.stderr


def test_consume_from_timestamp(broker):
    topic = unique("cli-time")
    weir(broker, "topic", "create", topic)
    producer = make_producer(broker)
    reports = produce_all(
        producer, topic,
        [{"value": b"old", "timestamp": 1_000_000_000_000}, {"value": b"new", "timestamp": 1_700_000_000_000}],
    )
    assert_delivered(reports)
    assert weir(broker, "consume", topic, "--timestamp", "2020-01-01T00:00:00Z").stdout == b"new\n"
    assert weir(broker, "consume", topic, "--timestamp", "1000000000000",
                "--format", "{timestamp} {value}").stdout == b"1000000000000 old\n1700000000000 new\n"
    assert weir(broker, "consume", topic, "--timestamp", "2030-01-01").stdout == b""
    bad = weir(broker, "consume", topic, "--timestamp", "last tuesday", check=2)
    assert b"RFC 3339" in bad.stderr


def test_group_describe_lag_and_reset_offsets(broker):
    topic = unique("cli-lag")
    group = unique("cli-group")
    weir(broker, "topic", "create", topic, "--partitions", "2")
    weir(broker, "produce", topic, "--partition", "0", input="".join(f"{i}\n" for i in range(10)))
    weir(broker, "produce", topic, "--partition", "1", input="".join(f"{i}\n" for i in range(4)))

    consumer = make_consumer(broker, **{"group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, 0, 6), TopicPartition(topic, 1, 1)], asynchronous=False
        )
    finally:
        consumer.close()

    assert group in [g["group"] for g in weir_json(broker, "group", "list")]
    described = weir_json(broker, "group", "describe", group)
    rows = {(o["topic"], o["partition"]): o for o in described["offsets"]}
    assert (rows[(topic, 0)]["committed"], rows[(topic, 0)]["log_end"], rows[(topic, 0)]["lag"]) == (6, 10, 4)
    assert (rows[(topic, 1)]["committed"], rows[(topic, 1)]["log_end"], rows[(topic, 1)]["lag"]) == (1, 4, 3)
    assert set(rows[(topic, 0)]) >= {"rate_per_s", "drain_s"}
    table = weir(broker, "group", "describe", group).stdout.decode()
    assert "LAG" in table and "DRAIN" in table and "total lag 7" in table, table

    def committed():
        offsets = weir_json(broker, "group", "describe", group)["offsets"]
        return {o["partition"]: o["committed"] for o in offsets if o["topic"] == topic}

    # Dry run (the default): shows the targets, changes nothing.
    dry = weir_json(broker, "group", "reset-offsets", group, "--to-earliest")
    assert dry["executed"] is False
    assert sorted((o["partition"], o["current"], o["target"]) for o in dry["offsets"]) == [(0, 6, 0), (1, 1, 0)]
    assert committed() == {0: 6, 1: 1}
    dry_text = weir(broker, "group", "reset-offsets", group, "--to-latest").stdout.decode()
    assert "dry run: nothing changed" in dry_text and "--execute" in dry_text
    assert committed() == {0: 6, 1: 1}

    weir(broker, "group", "reset-offsets", group, "--shift-by", "-2", "--execute")
    assert committed() == {0: 4, 1: 0}
    weir(broker, "group", "reset-offsets", group, "--topic", topic, "--to-offset", "3", "--execute")
    assert committed() == {0: 3, 1: 3}
    executed = weir_json(broker, "group", "reset-offsets", group, "--to-latest", "--execute")
    assert executed["executed"] is True
    assert committed() == {0: 10, 1: 4}

    # What a Kafka client sees afterwards.
    consumer = make_consumer(broker, **{"group.id": group})
    try:
        got = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        assert [tp.offset for tp in got] == [10, 4]
    finally:
        consumer.close()

    both = weir(broker, "group", "reset-offsets", group, "--to-earliest", "--to-latest", check=2)
    assert b"cannot be used with" in both.stderr
    weir(broker, "group", "reset-offsets", group, "--to-datetime", "yesterday", check=2)
    weir(broker, "group", "describe", unique("nope"), check=1)

    weir(broker, "group", "delete", group)
    assert group not in [g["group"] for g in weir_json(broker, "group", "list")]


def test_queue_declare_get_purge_delete_with_pika(broker):
    import pika

    queue = unique("cli-queue")
    weir(broker, "queue", "declare", queue, "--argument", "x-max-length=100")
    connection = pika.BlockingConnection(broker.amqp_params())
    try:
        channel = connection.channel()
        # Passive declare: the queue the CLI declared exists, durable.
        channel.queue_declare(queue, passive=True)
        for body in (b"first \xff", b"second"):
            channel.basic_publish("", queue, body, pika.BasicProperties(content_type="text/plain"))
        connection.process_data_events(0.2)

        listed = {q["name"]: q for q in weir_json(broker, "queue", "list")}
        assert listed[queue]["ready"] == 2 and listed[queue]["durable"] is True
        assert listed[queue]["arguments"].get("x-max-length") == 100

        # get without --ack puts the message back (redelivered next time).
        peeked = weir_json(broker, "queue", "get", queue)
        assert len(peeked) == 1 and peeked[0]["routing_key"] == queue
        again = weir_json(broker, "queue", "get", queue, "--count", "5")
        assert len(again) == 2 and again[0]["redelivered"] is True
        assert {q["name"]: q for q in weir_json(broker, "queue", "list")}[queue]["ready"] == 2
        table = weir(broker, "queue", "get", queue, "--count", "2", "--ack").stdout.decode()
        assert "second" in table and "<7 bytes, binary>" in table, table
        assert channel.queue_declare(queue, passive=True).method.message_count == 0

        channel.basic_publish("", queue, b"to purge")
        connection.process_data_events(0.2)
        assert weir_json(broker, "queue", "purge", queue)["purged"] == 1
        assert weir(broker, "queue", "purge", queue).stdout == f"purged 0 messages from queue {queue}\n".encode()

        weir(broker, "queue", "delete", queue)
        missing = weir(broker, "queue", "get", queue, check=1)
        assert b"weir queue list" in missing.stderr
    finally:
        connection.close()


def test_exchange_binding_publish(broker):
    import pika

    exchange, queue = unique("cli-ex"), unique("cli-q")
    weir(broker, "exchange", "declare", exchange, "--type", "topic")
    weir(broker, "queue", "declare", queue, "--durable", "false")
    weir(broker, "binding", "create", "--source", exchange, "--destination", queue, "--routing-key", "order.*")
    bindings = weir_json(broker, "binding", "list")
    assert any(b["source"] == exchange and b["destination"] == queue and b["routing_key"] == "order.*"
               for b in bindings), bindings
    exchanges = {e["name"]: e for e in weir_json(broker, "exchange", "list")}
    assert exchanges[exchange]["type"] == "topic"

    assert weir_json(broker, "exchange", "publish", exchange, "--routing-key", "order.created", "hello")["routed"] is True
    out = weir(broker, "exchange", "publish", exchange, "--routing-key", "user.created", "x").stdout
    assert b"not routed" in out
    weir(broker, "exchange", "publish", "amq.default", "--routing-key", queue, "--header", "h=v", input="from stdin")

    connection = pika.BlockingConnection(broker.amqp_params())
    try:
        channel = connection.channel()
        first = channel.basic_get(queue, auto_ack=True)
        second = channel.basic_get(queue, auto_ack=True)
        assert first[2] == b"hello" and first[0].routing_key == "order.created"
        assert second[2] == b"from stdin" and second[1].headers == {"h": "v"}
    finally:
        connection.close()

    weir(broker, "binding", "delete", "--source", exchange, "--destination", queue, "--routing-key", "order.*")
    assert not any(b["source"] == exchange for b in weir_json(broker, "binding", "list"))
    weir(broker, "exchange", "delete", exchange)
    weir(broker, "exchange", "delete", exchange, check=1)


def test_status_and_connections(broker):
    status = weir_json(broker, "status")
    assert set(status) >= {
        "version", "uptime_s", "connections", "topics", "queues", "messages_in_total",
        "messages_out_total", "bytes_in_total", "bytes_out_total", "disk_free_bytes", "memory_rss_bytes",
    }
    assert set(status["connections"]) == {"kafka", "amqp"}
    text = weir(broker, "status").stdout.decode()
    assert text.startswith(f"broker:") and "uptime:" in text and "disk free:" in text
    assert isinstance(weir_json(broker, "connection", "list"), list)


def test_exit_codes_unreachable_and_usage(broker):
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["topic", "list"], ["consume", "t"]):
        result = weir(broker, *args, api=dead, check=3)
        assert b"is `weir server` running?" in result.stderr
    assert weir(broker, "topic", "list", api="https://x", check=2).stderr.startswith(b"weir: --api")
    weir(broker, "topic", "frobnicate", check=2)
    weir(broker, "consume", "t", "--format", "{nope}", check=2)
    helped = weir(broker, "group", "reset-offsets", "--help").stdout.decode()
    assert "Examples:" in helped and "--execute" in helped


def test_consume_follow_waits_for_new_records(broker):
    topic = unique("cli-follow")
    weir(broker, "topic", "create", topic, "--partitions", "2")
    weir(broker, "produce", topic, "--partition", "1", input="before\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    follower = subprocess.Popen(
        [str(WEIR_BIN), "consume", topic, "--follow", "--limit", "3", "--poll-interval-ms", "50",
         "--format", "{partition}:{value}", "--api", broker.http_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        assert follower.stdout.readline() == b"1:before\n"
        weir(broker, "produce", topic, "--partition", "0", input="after\n")
        weir(broker, "produce", topic, "--partition", "1", input="later\n")
        rest = follower.stdout.read()
        assert follower.wait(timeout=30) == 0, follower.stderr.read()
        assert sorted(rest.splitlines()) == [b"0:after", b"1:later"]
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_consume_keys_of_records_with_binary_values(broker):
    """A text key next to a binary value comes back as it was produced."""
    topic = unique("cli-mixed")
    weir(broker, "topic", "create", topic)
    producer = make_producer(broker)
    assert_delivered(produce_all(producer, topic, [
        {"key": b"abcd", "value": b"\xff\xfe", "headers": [("h", b"text")]},
        {"key": b"\x00\x01", "value": b"text value"},
    ]))
    out = weir(broker, "consume", topic, "--format", "{key}|{value}|{headers}").stdout
    assert out == b"abcd|\xff\xfe|h=text\n\x00\x01|text value|\n"
