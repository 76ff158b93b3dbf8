"""Start-up is never bricked: a stray, half-created or unreadable topic or
queue is quarantined with an ERROR naming its path and the rest is served;
a topic creation killed half-way leaves the whole topic or none of it;
creating more partitions than the open-file limit allows is refused up
front; the disk alarm refuses Kafka and HTTP produces too.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewPartitions, NewTopic

import kafka_wire
from helpers import (
    assert_delivered,
    create_topic,
    kafka_error_code,
    make_admin,
    make_producer,
    produce_all,
    topic_partition_count,
    unique,
)

POLICY_VIOLATION = 44
KAFKA_STORAGE_ERROR = 56


def produce_some(broker, topic, count=5):
    reports = produce_all(
        make_producer(broker), topic, [{"value": f"v{i}".encode()} for i in range(count)]
    )
    assert_delivered(reports)
    return reports


def quarantined(broker, kind="topics"):
    root = broker.data_dir / "quarantine" / kind
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_stray_entries_in_the_topics_folder_are_quarantined(broker):
    admin = make_admin(broker)
    kept = unique("kept")
    create_topic(admin, kept, 2)
    produce_some(broker, kept)
    broker.stop()

    topics = broker.data_dir / "topics"
    (topics / "not a topic!").mkdir()
    (topics / "stray-file.txt").write_bytes(b"left here by an operator")
    half = topics / unique("half")  # a directory the metadata log does not name
    (half / "0").mkdir(parents=True)
    # Once the metadata log exists, a topic.json no longer makes a topic.
    bad_json = topics / unique("badjson")
    (bad_json / "0").mkdir(parents=True)
    (bad_json / "topic.json").write_text("{ not json")

    # A creation killed before its rename into topics/: nobody was told of it.
    staged = broker.data_dir / "staging" / "0b5e7c1e-0000-4000-8000-000000000000"
    (staged / "0").mkdir(parents=True)
    (staged / "topic.json").write_text('{"id": "0b5e7c1e-0000-4000-8000-000000000000", "partitions": 1}')

    broker.start()
    assert not any((broker.data_dir / "staging").iterdir()), "an interrupted creation was kept"
    log = broker.log_text()
    for path in ["not a topic!", "stray-file.txt", half.name, bad_json.name]:
        assert any(
            "quarantined" in line and "ERROR" in line and path in line for line in log.splitlines()
        ), f"no ERROR naming {path}:\n{broker.log_tail()}"
    assert "no topic of this name in the metadata log" in log
    moved = quarantined(broker)
    assert len(moved) == 4, moved
    assert any(name.startswith("stray-file.txt.") for name in moved)

    # The healthy topic is served, and the names of the quarantined ones
    # are free again.
    assert topic_partition_count(admin, kept) == 2
    produce_some(broker, kept)
    create_topic(admin, half.name, 3)
    assert topic_partition_count(admin, half.name) == 3


def test_an_unreadable_queue_is_quarantined_and_the_rest_served(broker):
    import pika

    connection = pika.BlockingConnection(broker.amqp_params())
    channel = connection.channel()
    for name in ("good-q", "bad-q"):
        channel.queue_declare(name, durable=True)
        channel.basic_publish("", name, b"m-" + name.encode(), pika.BasicProperties(delivery_mode=2))
    connection.close()
    broker.stop()

    vhost = broker.data_dir / "amqp" / "vhosts" / "default"
    definitions = json.loads((vhost / "definitions.json").read_text())
    bad_id = next(q["id"] for q in definitions["queues"] if q["name"] == "bad-q")
    bad_dir = vhost / "queues" / bad_id
    for entry in bad_dir.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    # A file where the queue's log directory should be: the queue cannot open.
    bad_dir.rmdir()
    bad_dir.write_bytes(b"not a directory")

    broker.start()
    assert any("quarantined" in line and bad_id in line for line in broker.log_text().splitlines())
    connection = pika.BlockingConnection(broker.amqp_params())
    channel = connection.channel()
    method, _, body = channel.basic_get("good-q", auto_ack=True)
    assert body == b"m-good-q"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_declare("bad-q", passive=True)
    assert closed.value.reply_code == 404
    connection.close()
    # The next start does not bring the quarantined queue back empty.
    broker.restart()
    connection = pika.BlockingConnection(broker.amqp_params())
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        connection.channel().queue_declare("bad-q", passive=True)
    connection.close()


def create_3000(admin, topic):
    """Sends a CreateTopics for 3000 partitions; keep `admin` alive until
    the answer (a destroyed client cancels its futures)."""
    futures = admin.create_topics([NewTopic(topic, 3000, 1)], operation_timeout=120, request_timeout=120)
    return futures[topic]


@pytest.mark.timeout(600)
def test_kill_during_a_3000_partition_create_leaves_all_or_nothing(broker):
    partitions = 3000
    admin = make_admin(broker)
    # How long a whole creation takes here, so the kills land inside one.
    probe = unique("probe")
    started = time.monotonic()
    create_3000(admin, probe).result(120)
    duration = time.monotonic() - started
    admin.delete_topics([probe], operation_timeout=60)[probe].result(60)

    outcomes, interrupted = [], []
    for fraction in (0.2, 0.5, 0.8):
        topic = unique("big")
        future = create_3000(admin, topic)
        time.sleep(duration * fraction)
        interrupted.append(not future.done())
        broker.kill()
        try:
            future.result(5)
        except Exception:  # the connection died with the broker: either answer is fine
            pass
        broker.start()
        admin = make_admin(broker)
        count = topic_partition_count(admin, topic)
        outcomes.append(count)
        assert count in (None, partitions), f"after a kill {fraction:.0%} in: {count} partitions"
        topic_dir = broker.data_dir / "topics" / topic
        assert not any((broker.data_dir / "staging").iterdir()), "staging not emptied on start"
        if count is None:
            assert not topic_dir.exists(), "an absent topic left its directory behind"
            continue
        on_disk = sorted(int(p.name) for p in topic_dir.iterdir() if p.is_dir())
        assert on_disk == list(range(partitions))
        assert_delivered(produce_all(make_producer(broker), topic, [{"value": b"x", "partition": partitions - 1}]))
        admin.delete_topics([topic], operation_timeout=60)[topic].result(60)
    print(f"a creation takes {duration:.2f}s; partition counts after each kill: {outcomes}")
    assert any(interrupted), "every creation was answered before its kill: the test proved nothing"


def test_partitions_beyond_the_descriptor_limit_are_refused_up_front(weir_broker):
    broker = weir_broker(start=False)
    # prlimit execs weir with soft and hard limits of 400 (weir raises its
    # soft limit to the hard one, so both are set).
    plain_command = broker.command
    broker.command = lambda extra_args=(): ["prlimit", "--nofile=400:400", "--", *plain_command(extra_args)]
    broker.start()

    admin = make_admin(broker)
    topic = unique("toomany")
    with pytest.raises(KafkaException) as refused:
        create_topic(admin, topic, 500)
    assert kafka_error_code(refused.value) == POLICY_VIOLATION
    assert "ulimit -n" in str(refused.value)
    assert topic_partition_count(admin, topic) is None
    assert not (broker.data_dir / "topics" / topic).exists()

    small = unique("small")
    create_topic(admin, small, 10)
    with pytest.raises(KafkaException) as grown:
        admin.create_partitions(
            [NewPartitions(small, 600)],
            operation_timeout=10,
        )[small].result(15)
    assert kafka_error_code(grown.value) == POLICY_VIOLATION
    assert topic_partition_count(admin, small) == 10
    produce_some(broker, small)


def test_the_disk_alarm_refuses_kafka_and_http_produces(weir_broker):
    # A limit no disk here meets: the alarm is on from the start.
    broker = weir_broker(args=["--disk-free-limit-bytes", str(1 << 62)])
    topic = unique("alarm")
    create_topic(make_admin(broker), topic, 1)
    with kafka_wire.Connection(broker) as conn:
        record = kafka_wire.record_batch([(b"k", b"v", ())], int(time.time() * 1000))
        error_code, _ = kafka_wire.produce_v3(conn, topic, 0, record)
    assert error_code == KAFKA_STORAGE_ERROR

    request = urllib.request.Request(
        f"{broker.http_url}/api/topics/{topic}/records",
        data=json.dumps({"records": [{"value": "v"}]}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 507
    assert "disk" in refused.value.read().decode()
    assert "disk alarm" in broker.log_text()
