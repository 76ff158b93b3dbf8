"""`/metrics` after real Kafka and AMQP traffic: `promtool check metrics`
(Debian's `prometheus` package) accepts it, and the counters move."""

from __future__ import annotations

import re
import shutil
import subprocess

import pika
import pytest
from confluent_kafka import TopicPartition

from conftest import binary_has_http
from helpers import assert_delivered, call_within, make_consumer, make_producer, produce_all, unique, wait_until
from http_helpers import Http

pytestmark = pytest.mark.skipif(not binary_has_http(), reason="weir binary without --http-listen")

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(broker) -> str:
    answer = Http(broker.http_url).get("/metrics")
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return answer.body.decode()


def samples(text: str) -> dict:
    """{(name, labels text): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        out[(match.group(1), match.group(2) or "")] = float(match.group(3))
    return out


def value(found: dict, name: str, **labels) -> float:
    """The sample of `name` whose labels include `labels` (0 when absent)."""
    for (sample, label_text), number in found.items():
        if sample == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            return number
    return 0.0


def traffic(broker, topic: str, queue: str, group: str):
    """Kafka produce/consume/commit and AMQP publish/consume."""
    assert_delivered(produce_all(make_producer(broker), topic, [{"value": b"k%d" % i} for i in range(10)]))
    consumer = make_consumer(broker, **{"group.id": group, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    while seen < 4:
        message = consumer.poll(5.0)
        assert message is not None and message.error() is None
        seen += 1
    consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    call_within(consumer.close, 30, "consumer close")

    connection = pika.BlockingConnection(broker.amqp_params())
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.confirm_delivery()
    for i in range(6):
        channel.basic_publish("", queue, b"a%d" % i, pika.BasicProperties(delivery_mode=2))
    for _ in range(2):
        assert channel.basic_get(queue, auto_ack=True)[2] is not None
    return connection


@pytest.mark.timeout(90)
def test_metrics_pass_promtool_and_count_traffic(broker, tmp_path):
    before = samples(scrape(broker))
    topic, queue, group = unique("metrics"), unique("metrics-q"), unique("metrics-g")
    connection = traffic(broker, topic, queue, group)
    text = scrape(broker)
    found = samples(text)

    assert value(found, "weir_messages_in_total", protocol="kafka", topic=topic) == 10
    assert value(found, "weir_messages_out_total", protocol="kafka", topic=topic) >= 4
    assert value(found, "weir_messages_in_total", protocol="amqp", topic="amq.default") == 6
    assert value(found, "weir_messages_out_total", protocol="amqp", topic=queue) == 2
    for name in ("weir_bytes_in_total", "weir_bytes_out_total"):
        for protocol in ("kafka", "amqp"):
            assert value(found, name, protocol=protocol) > value(before, name, protocol=protocol), (name, protocol)
    assert value(found, "weir_connections", protocol="amqp") == 1
    assert value(found, "weir_consumer_group_lag", group=group, topic=topic, partition="0") == 6
    assert value(found, "weir_queue_messages", queue=queue, state="ready") == 4
    assert value(found, "weir_queue_messages", queue=queue, state="unacked") == 0
    assert value(found, "weir_log_fsync_duration_seconds_count") > value(before, "weir_log_fsync_duration_seconds_count")
    assert value(found, "weir_request_duration_seconds_count", protocol="kafka", api="Produce") >= 1
    assert value(found, "weir_request_duration_seconds_count", protocol="amqp", api="queue.declare") == 1
    assert value(found, "weir_request_duration_seconds_bucket", protocol="kafka", api="Produce", le="+Inf") >= 1
    assert value(found, "weir_disk_free_bytes") > 0
    assert value(found, "weir_memory_used_bytes") > 0
    assert value(found, "weir_memory_high_watermark_bytes") > 0
    connection.close()
    wait_until(lambda: value(samples(scrape(broker)), "weir_connections", protocol="amqp") == 0, 10,
               "AMQP connection gauge back to 0")

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/test.sh installs Debian's prometheus package)")
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0 and output.strip() == "", output
