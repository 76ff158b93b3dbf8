"""One log under two doors: a stream queue is the Kafka topic of the same
name, and a work queue can sit over a topic (`x-source-topic`).

pika publishes with confirms to a stream queue and confluent-kafka and
kafka-python read the same records (value = body, key = routing key, AMQP
properties and header-table entries as record headers); records produced by
confluent-kafka are consumed from the stream queue with pika. A queue over
a 4-partition topic gives four competing pika consumers every record exactly
once, requeued ones flagged, across a kill -9 of the broker.
"""

from __future__ import annotations

import signal
import time
import uuid

import pika
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer

from http_helpers import Http
from amqp_helpers import (
    NOT_FOUND,
    PRECONDITION_FAILED,
    Collector,
    channel_closed,
    props_dict,
    pump,
    require_kill,
    restart_broker,
    settle,
)

pytest_plugins = ["amqp_helpers"]

STREAM = {"x-queue-type": "stream"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def kafka_consume_all(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list:
    """Every record of `topic` from the beginning, with confluent-kafka."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("g"),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    records = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            records.append(message)
    finally:
        consumer.close()
    return records


def create_topic(bootstrap: str, topic: str, partitions: int):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list]]):
    """Produces (key, value, headers) with acks=all; every one delivered."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failures = []

    def report(error, _message):
        if error is not None:
            failures.append(error)

    for key, value, headers in records:
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
    assert producer.flush(30) == 0
    assert failures == []


def published_properties(i: int) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        priority=i % 10,
        correlation_id=f"corr-{i}",
        reply_to="replies",
        message_id=f"id-{i}",
        timestamp=1_700_000_000 + i,
        type="order",
        app_id="test",
        headers={"n": i, "s": f"text-{i}", "flag": i % 2 == 0, "nested": {"a": 1}},
    )


def test_pika_to_kafka_through_a_stream_queue(amqp):
    """500 confirmed pika messages are read by confluent-kafka and
    kafka-python in publish order, properties as record headers; an AMQP
    consumer of the stream still gets the content header as published."""
    bootstrap = amqp.broker.bootstrap
    connection = amqp.connect()
    channel = connection.channel()
    queue = unique("stream")
    channel.queue_declare(queue, durable=True, arguments=STREAM)
    channel.confirm_delivery()
    for i in range(500):
        channel.basic_publish("", queue, f"body-{i}".encode(), published_properties(i))

    # The stream queue is the topic: one partition, the records in order.
    records = kafka_consume_all(bootstrap, queue, 500)
    assert len(records) == 500
    for i, record in enumerate(records):
        assert (record.partition(), record.offset()) == (0, i)
        assert record.value() == f"body-{i}".encode()
        assert record.key() == queue.encode()
        headers = dict(record.headers())
        assert headers["amqp-exchange"] == b""
        assert headers["amqp-content-type"] == b"application/json"
        assert headers["amqp-content-encoding"] == b"utf-8"
        assert headers["amqp-delivery-mode"] == b"2"
        assert headers["amqp-priority"] == str(i % 10).encode()
        assert headers["amqp-correlation-id"] == f"corr-{i}".encode()
        assert headers["amqp-reply-to"] == b"replies"
        assert headers["amqp-message-id"] == f"id-{i}".encode()
        assert headers["amqp-timestamp"] == str(1_700_000_000 + i).encode()
        assert headers["amqp-type"] == b"order"
        assert headers["amqp-app-id"] == b"test"
        assert headers["n"] == str(i).encode()
        assert headers["s"] == f"text-{i}".encode()
        assert headers["flag"] == (b"true" if i % 2 == 0 else b"false")
        assert "nested" not in headers  # tables have no plain text form

    # kafka-python reads the same bytes.
    consumer = KafkaConsumer(queue, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000, group_id=unique("kp"))
    values = []
    for message in consumer:
        values.append((message.offset, message.key, message.value))
        if len(values) == 500:
            break
    consumer.close()
    assert values == [(i, queue.encode(), f"body-{i}".encode()) for i in range(500)]

    # An AMQP consumer of the stream gets the properties as published.
    reader = connection.channel()
    reader.basic_qos(prefetch_count=1000)
    got = Collector()
    reader.basic_consume(queue, got, arguments={"x-stream-offset": "first"})
    pump(connection, lambda: len(got) >= 500, 20, "500 stream deliveries")
    for i, delivery in enumerate(got.deliveries):
        assert delivery.body == f"body-{i}".encode()
        expected = props_dict(published_properties(i))
        expected["headers"] = dict(expected["headers"], **{"x-stream-offset": i})
        assert props_dict(delivery.properties) == expected


def test_kafka_to_pika_through_a_stream_queue(amqp):
    """Records a Kafka producer wrote are consumed from the stream queue of
    the same name: key as routing key, headers as header-table entries,
    from x-stream-offset first, an offset, or next."""
    bootstrap = amqp.broker.bootstrap
    topic = unique("from-kafka")
    create_topic(bootstrap, topic, 1)
    records = [(f"key-{i}".encode(), f"value-{i}".encode(), [("h", f"v{i}".encode()), ("empty", None)])
               for i in range(200)]
    produce(bootstrap, topic, records)

    connection = amqp.connect()
    channel = connection.channel()
    # Declaring it as a stream opens the existing topic; nothing is lost.
    declared = channel.queue_declare(topic, durable=True, arguments=STREAM)
    assert declared.method.message_count == 200
    channel.basic_qos(prefetch_count=500)
    got = Collector()
    channel.basic_consume(topic, got, arguments={"x-stream-offset": "first"})
    pump(connection, lambda: len(got) >= 200, 20, "200 deliveries")
    settle(connection, 0.3)
    assert len(got) == 200
    for i, delivery in enumerate(got.deliveries):
        assert delivery.body == f"value-{i}".encode()
        assert delivery.routing_key == f"key-{i}"
        assert delivery.exchange == ""
        assert delivery.properties.delivery_mode == 2
        assert delivery.properties.headers == {"h": f"v{i}", "empty": None, "x-stream-offset": i}
    channel.basic_ack(got.deliveries[-1].delivery_tag, multiple=True)

    # From an offset; then what a Kafka producer writes while consuming.
    channel = connection.channel()
    channel.basic_qos(prefetch_count=500)
    later = Collector()
    channel.basic_consume(topic, later, arguments={"x-stream-offset": 150})
    pump(connection, lambda: len(later) >= 50, 20, "50 deliveries from offset 150")
    produce(bootstrap, topic, [(b"k", b"live", [])])
    pump(connection, lambda: len(later) >= 51, 20, "the record produced while consuming")
    assert [d.body for d in later.deliveries] == [f"value-{i}".encode() for i in range(150, 200)] + [b"live"]

    # A topic with no AMQP declaration at all is reachable by name.
    other = unique("undeclared")
    create_topic(bootstrap, other, 1)
    produce(bootstrap, other, [(b"k", b"hello", [])])
    channel = connection.channel()
    assert channel.queue_declare(other, passive=True).method.message_count == 1


def test_stream_queue_declare_rules(amqp):
    """Redeclares and deletes of a stream queue that is a topic."""
    bootstrap = amqp.broker.bootstrap
    connection = amqp.connect()
    channel = connection.channel()
    queue = unique("rules")
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "stream", "x-max-age": "7D"})
    # Retention reached the topic as Kafka configs.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    from confluent_kafka.admin import ConfigResource
    resource = ConfigResource("topic", queue)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == str(7 * 86_400_000)

    with channel_closed(PRECONDITION_FAILED,
                        f"PRECONDITION_FAILED - inequivalent arg 'x-max-age' for queue '{queue}' in vhost '/': "
                        "received '1D' but current is '7D'"):
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "stream", "x-max-age": "1D"})
    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED,
                        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{queue}' in vhost '/': "
                        "received 'classic' but current is 'stream'"):
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic", "x-max-age": "7D"})

    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED):
        channel.queue_declare("bad name/with slash", durable=True, arguments=STREAM)

    # queue.delete deletes the topic.
    channel = connection.channel()
    channel.queue_delete(queue)
    assert queue not in admin.list_topics(timeout=10).topics


def test_work_queue_over_a_topic(amqp):
    """Four pika consumers with prefetch 50 share a 4-partition topic's 1,000
    records: each acked exactly once, every 10th nacked once and redelivered
    with redelivered=True; records produced later follow."""
    bootstrap = amqp.broker.bootstrap
    topic = unique("orders")
    create_topic(bootstrap, topic, 4)
    produce(bootstrap, topic, [(f"order-{i % 37}".encode(), f"{i}".encode(), [("n", str(i).encode())])
                               for i in range(1000)])

    connection = amqp.connect()
    setup = connection.channel()
    queue = unique("workers")
    declared = setup.queue_declare(queue, durable=True,
                                   arguments={"x-source-topic": topic, "x-source-offset": "first"})
    assert declared.method.message_count == 1000

    acked: list[bytes] = []
    nacked: set[bytes] = set()
    redelivered: list[bytes] = []
    per_consumer = [0, 0, 0, 0]

    def worker(index):
        def on_message(channel, method, properties, body):
            assert properties.headers["n"].encode() == body
            per_consumer[index] += 1
            if method.redelivered:
                redelivered.append(body)
            if int(body) % 10 == 0 and body not in nacked:
                nacked.add(body)
                channel.basic_nack(method.delivery_tag, requeue=True)
                return
            acked.append(body)
            channel.basic_ack(method.delivery_tag)
        return on_message

    channels = []
    for index in range(4):
        channel = connection.channel()
        channel.basic_qos(prefetch_count=50)
        channel.basic_consume(queue, worker(index))
        channels.append(channel)
    pump(connection, lambda: len(acked) >= 1000, 60, "1000 acks")
    settle(connection, 0.5)
    assert sorted(acked, key=int) == [str(i).encode() for i in range(1000)]
    assert len(nacked) == 100
    assert sorted(redelivered, key=int) == sorted(nacked, key=int)
    assert all(count > 0 for count in per_consumer), per_consumer

    # It follows the topic: new records arrive without a redeclare.
    produce(bootstrap, topic, [(b"late", b"1000", [("n", b"1000")])])
    pump(connection, lambda: len(acked) >= 1001, 20, "the record produced later")
    assert setup.queue_declare(queue, passive=True).method.message_count == 0

    # The topic cannot be deleted under the queue; the queue can go first.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    with pytest.raises(Exception) as refused:
        admin.delete_topics([topic])[topic].result(10)
    assert refused.value.args[0].code() == KafkaError.POLICY_VIOLATION
    # The HTTP API says which queue is in the way.
    answer = Http(amqp.broker.http_url).call("DELETE", f"/api/topics/{topic}")
    assert answer.status == 409, answer
    assert f"AMQP queue '{queue}' in vhost '/'" in answer.json()["error"], answer
    setup.queue_delete(queue)
    admin.delete_topics([topic])[topic].result(10)


def test_work_queue_over_a_missing_topic_is_404(amqp):
    channel = amqp.channel()
    with channel_closed(NOT_FOUND, prefix="NOT_FOUND - no topic 'nowhere'"):
        channel.queue_declare(unique("q"), durable=True, arguments={"x-source-topic": "nowhere"})


def test_work_queue_over_a_topic_survives_kill_9(weir_amqp):
    """Half the records acked, some delivered and unacked, then kill -9:
    after the restart no acked record comes again and every other one does,
    the delivered ones flagged redelivered."""
    require_kill(weir_amqp)
    amqp = weir_amqp
    bootstrap = amqp.broker.bootstrap
    topic = unique("crash")
    create_topic(bootstrap, topic, 4)
    produce(bootstrap, topic, [(f"k{i}".encode(), f"{i}".encode(), []) for i in range(1000)])
    connection = amqp.connect()
    channel = connection.channel()
    queue = unique("crashq")
    channel.queue_declare(queue, durable=True, arguments={"x-source-topic": topic, "x-source-offset": "first"})

    acked, held = [], []
    channel.basic_qos(prefetch_count=100)

    def on_message(ch, method, _properties, body):
        if len(acked) < 500:
            acked.append(body)
            ch.basic_ack(method.delivery_tag)
        else:
            held.append(body)

    channel.basic_consume(queue, on_message)
    pump(connection, lambda: len(acked) >= 500 and len(held) >= 100, 30, "500 acks and 100 held")
    # The acks reached the broker: its count of ready + unacked shows them.
    settle(connection, 0.5)
    restart_broker(amqp, signal.SIGKILL)

    connection = amqp.connect()
    channel = connection.channel()
    assert channel.queue_declare(queue, passive=True).method.message_count == 500
    channel.basic_qos(prefetch_count=1000)
    got = Collector()
    channel.basic_consume(queue, got)
    pump(connection, lambda: len(got) >= 500, 30, "the 500 unacked records")
    settle(connection, 0.5)
    bodies = got.bodies
    everything = [str(i).encode() for i in range(1000)]
    assert sorted(bodies, key=int) == [b for b in everything if b not in set(acked)]
    flagged = {d.body for d in got.deliveries if d.redelivered}
    assert set(held) <= flagged
    assert not flagged - set(held)
