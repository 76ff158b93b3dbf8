"""The HTTP API (crates/admin) against the real binary: every endpoint, its
404/400/409 answers, and things made by Kafka and AMQP clients showing up."""

from __future__ import annotations

import json
import socket
import time

import pika
import pytest
from confluent_kafka import TopicPartition

from conftest import binary_has_http
from helpers import (
    assert_delivered, call_within, make_admin, make_consumer, make_producer, produce_all, unique,
    wait_until,
)
from http_helpers import Http, q

pytestmark = pytest.mark.skipif(not binary_has_http(), reason="weir binary without --http-listen")

DEFAULT_VHOST = q("/")


@pytest.fixture
def http(broker) -> Http:
    return Http(broker.http_url)


def assert_error(answer, status: int, *words: str):
    """A JSON error with `status` whose message contains every word."""
    assert answer.status == status, answer
    message = answer.json()["error"]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# --- overview, documents, console ---------------------------------------------------------------

def test_overview_openapi_console_and_unknown_paths(http):
    overview = http.ok("GET", "/api/overview")
    for key in ("version", "uptime_s", "connections", "topics", "queues", "messages_in_total",
                "messages_out_total", "bytes_in_total", "bytes_out_total", "disk_free_bytes",
                "memory_rss_bytes"):
        assert key in overview, key
    assert set(overview["connections"]) >= {"kafka", "amqp"}
    assert overview["disk_free_bytes"] > 0 and overview["memory_rss_bytes"] > 0

    document = http.ok("GET", "/api/openapi.json")
    assert document["openapi"].startswith("3.")
    for path in ("/api/topics", "/api/groups/{group}/reset-offsets", "/api/queues/{vhost}/{name}/get",
                 "/api/exchanges/{vhost}/{name}/publish", "/api/bindings", "/api/connections/{id}",
                 "/metrics"):
        assert path in document["paths"], path

    page = http.get("/")
    assert page.status == 200 and b"<canvas" in page.body
    assert page.headers["content-type"].startswith("text/html")
    assert http.get("/static/console.js").status == 200
    assert http.get("/static/console.css").status == 200
    assert_error(http.get("/static/nope.js"), 404, "nope.js")
    assert_error(http.get("/api/nothing-here"), 404, "/api/nothing-here")
    assert_error(http.call("PUT", "/api/overview", {}), 405)


# --- topics and records -------------------------------------------------------------------------

def test_topic_lifecycle_and_bad_input(http):
    name = unique("http-topic")
    created = http.ok("POST", "/api/topics", {"name": name, "partitions": 2,
                                              "configs": {"retention.ms": 3600000}}, status=201)
    assert created["name"] == name and len(created["partitions"]) == 2
    configs = {c["name"]: c for c in created["configs"]}
    assert configs["retention.ms"]["value"] == "3600000" and configs["retention.ms"]["source"] == "topic"

    assert_error(http.call("POST", "/api/topics", {"name": name}), 409, name)
    assert_error(http.call("POST", "/api/topics", {"name": 7}), 400, "name")
    assert_error(http.call("POST", "/api/topics", {"partitions": 1}), 400, "name")
    assert_error(http.call("POST", "/api/topics", {"name": "x", "partitions": "two"}), 400, "partitions")
    assert_error(http.call("POST", "/api/topics", {"name": "bad name!"}), 400, "bad name!")
    assert_error(http.call("POST", "/api/topics", {"name": "x", "bogus": 1}), 400, "bogus")
    assert_error(http.call("POST", "/api/topics", raw=b"{not json"), 400, "invalid body")
    assert_error(http.call("POST", "/api/topics", {"name": "y", "configs": {"no.such": "1"}}), 400, "no.such")

    listed = {t["name"]: t for t in http.ok("GET", "/api/topics")}
    assert listed[name]["partitions"] == 2 and listed[name]["messages"] == 0

    patched = http.ok("PATCH", f"/api/topics/{name}/configs",
                      {"set": {"segment.bytes": "1048576"}, "delete": ["retention.ms"]})
    configs = {c["name"]: c for c in patched["configs"]}
    assert configs["segment.bytes"]["value"] == "1048576" and configs["segment.bytes"]["source"] == "topic"
    assert configs["retention.ms"]["source"] == "default"
    assert_error(http.call("PATCH", f"/api/topics/{name}/configs", {"set": {"retention.ms": "soon"}}), 400, "retention.ms")
    assert_error(http.call("PATCH", "/api/topics/nope/configs", {"set": {}}), 404, "nope")

    grown = http.ok("POST", f"/api/topics/{name}/partitions", {"count": 3})
    assert len(grown["partitions"]) == 3
    assert_error(http.call("POST", f"/api/topics/{name}/partitions", {"count": 2}), 400, "count")
    assert_error(http.call("POST", f"/api/topics/{name}/partitions", {}), 400, "count")
    assert_error(http.call("POST", "/api/topics/nope/partitions", {"count": 5}), 404, "nope")

    http.ok("DELETE", f"/api/topics/{name}", status=204)
    assert_error(http.get(f"/api/topics/{name}"), 404, name)
    assert_error(http.call("DELETE", f"/api/topics/{name}"), 404, name)


def test_produce_and_peek_records(http):
    name = unique("http-records")
    http.ok("POST", "/api/topics", {"name": name, "partitions": 2}, status=201)
    placed = http.ok("POST", f"/api/topics/{name}/records", {"records": [
        {"value": "v0", "partition": 0, "headers": {"h": "1"}},
        {"key": "k", "value": "v1", "partition": 0},
        {"value": "/w==", "encoding": "base64", "partition": 0},
        {"value": "p1", "partition": 1},
    ]})
    assert placed == [{"partition": 0, "offset": 0}, {"partition": 0, "offset": 1},
                      {"partition": 0, "offset": 2}, {"partition": 1, "offset": 0}]

    records = http.ok("GET", f"/api/topics/{name}/records?partition=0&from=earliest")
    assert [r["offset"] for r in records] == [0, 1, 2]
    assert records[0]["value"] == "v0" and records[0]["headers"] == {"h": "1"} and records[0]["key"] is None
    assert records[1]["key"] == "k"
    assert records[2]["value"] == "/w==" and records[2]["encoding"] == "base64"
    assert "encoding" not in records[0]
    # One rule per record: with a binary value, the text key is base64 too.
    http.ok("POST", f"/api/topics/{name}/records",
            {"records": [{"key": "aw==", "value": "/w==", "encoding": "base64", "partition": 1}]})
    [mixed] = http.ok("GET", f"/api/topics/{name}/records?partition=1&offset=1")
    assert (mixed["key"], mixed["value"], mixed["encoding"]) == ("aw==", "/w==", "base64")
    assert [r["offset"] for r in http.ok("GET", f"/api/topics/{name}/records?partition=0&offset=1&limit=1")] == [1]
    assert [r["offset"] for r in http.ok("GET", f"/api/topics/{name}/records?partition=0&from=latest&limit=2")] == [1, 2]
    future = int(time.time() * 1000) + 3_600_000
    assert http.ok("GET", f"/api/topics/{name}/records?partition=0&timestamp_ms={future}") == []
    assert len(http.ok("GET", f"/api/topics/{name}/records?partition=0&timestamp_ms=0")) == 3
    assert http.ok("GET", f"/api/topics/{name}/records?partition=1")[0]["value"] == "p1"

    assert_error(http.get(f"/api/topics/{name}/records?partition=9"), 404, "9")
    assert_error(http.get(f"/api/topics/{name}/records?limit=0"), 400, "limit")
    assert_error(http.get(f"/api/topics/{name}/records?offset=abc"), 400, "offset")
    assert_error(http.get(f"/api/topics/{name}/records?from=middle"), 400, "from")
    assert_error(http.get("/api/topics/nope/records"), 404, "nope")
    assert_error(http.call("POST", "/api/topics/nope/records", {"records": [{"value": "x"}]}), 404, "nope")
    assert_error(http.call("POST", f"/api/topics/{name}/records", {"records": []}), 400, "records")
    assert_error(http.call("POST", f"/api/topics/{name}/records", {"records": [{"value": 5}]}), 400, "records[0].value")
    assert_error(http.call("POST", f"/api/topics/{name}/records",
                           {"records": [{"value": "x", "partition": 7}]}), 404, "partition")
    assert_error(http.call("POST", f"/api/topics/{name}/records",
                           {"records": [{"value": "!!", "encoding": "base64"}]}), 400, "value")
    # Keyed records land where Kafka's own partitioner puts them (murmur2).
    keyed = http.ok("POST", f"/api/topics/{name}/records", {"records": [{"key": "a", "value": "x"}] * 3})
    assert len({r["partition"] for r in keyed}) == 1


# --- a Kafka topic and group ----------------------------------------------------------------------

def committed_offset(http, group: str, topic: str, partition: int = 0):
    offsets = http.ok("GET", f"/api/groups/{group}")["offsets"]
    return next((o for o in offsets if o["topic"] == topic and o["partition"] == partition), None)


def test_kafka_topic_group_lag_and_offset_reset(broker, http):
    topic, group = unique("kafka-made"), unique("http-group")
    producer = make_producer(broker)
    assert_delivered(produce_all(producer, topic, [{"value": f"m{i}".encode()} for i in range(5)]))
    listed = {t["name"]: t for t in http.ok("GET", "/api/topics")}
    assert listed[topic]["messages"] == 5 and listed[topic]["size_bytes"] > 0

    consumer = make_consumer(broker, **{"group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = 0
    deadline = time.monotonic() + 30
    while got < 3 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            got += 1
    assert got == 3
    consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)

    groups = {g["group"]: g for g in http.ok("GET", "/api/groups")}
    assert groups[group]["members"] == 1 and groups[group]["protocol_type"] == "consumer"
    detail = http.ok("GET", f"/api/groups/{group}")
    assert detail["state"] == "Stable"
    [member] = detail["members"]
    assert member["assignments"] == [{"topic": topic, "partition": 0}]
    offset = committed_offset(http, group, topic)
    assert (offset["committed"], offset["log_end"], offset["lag"]) == (3, 5, 2)

    # Dry run: a plan, nothing changes.
    plan = http.ok("POST", f"/api/groups/{group}/reset-offsets", {"to": "earliest", "execute": False})
    assert plan == {"executed": False, "offsets": [{"topic": topic, "partition": 0, "current": 3, "target": 0}]}
    assert committed_offset(http, group, topic)["committed"] == 3
    # Execute refuses while the group has members, as Kafka's tool does.
    assert_error(http.call("POST", f"/api/groups/{group}/reset-offsets", {"to": "earliest", "execute": True}),
                 409, "members")
    assert_error(http.call("DELETE", f"/api/groups/{group}"), 409, group)
    call_within(consumer.close, 30, "consumer close")

    wait_until(lambda: http.ok("GET", f"/api/groups/{group}")["state"] == "Empty", 30, "group empty")
    done = http.ok("POST", f"/api/groups/{group}/reset-offsets", {"to": "shift-by", "value": -2, "execute": True})
    assert done["executed"] is True and done["offsets"][0]["target"] == 1
    assert committed_offset(http, group, topic)["lag"] == 4
    plan = http.ok("POST", f"/api/groups/{group}/reset-offsets",
                   {"topics": [topic], "to": "offset", "value": 99, "execute": False})
    assert plan["offsets"][0]["target"] == 5  # clamped to the end
    plan = http.ok("POST", f"/api/groups/{group}/reset-offsets", {"to": "datetime", "value": 0})
    assert plan["offsets"][0]["target"] == 0
    http.ok("POST", f"/api/groups/{group}/reset-offsets", {"to": "latest", "execute": True})
    assert committed_offset(http, group, topic)["lag"] == 0
    assert committed_offset(http, group, topic)["drain_s"] == 0

    assert_error(http.call("POST", f"/api/groups/{group}/reset-offsets", {"to": "sideways"}), 400, "to")
    assert_error(http.call("POST", f"/api/groups/{group}/reset-offsets", {"to": "offset"}), 400, "value")
    assert_error(http.call("POST", f"/api/groups/{group}/reset-offsets", {"execute": True}), 400, "to")
    assert_error(http.call("POST", f"/api/groups/{group}/reset-offsets",
                           {"topics": ["nope"], "to": "earliest"}), 404, "topic")
    assert_error(http.call("POST", "/api/groups/no-such-group/reset-offsets", {"to": "earliest"}), 404, "no-such-group")
    assert_error(http.get("/api/groups/no-such-group"), 404, "no-such-group")

    http.ok("DELETE", f"/api/groups/{group}", status=204)
    assert_error(http.get(f"/api/groups/{group}"), 404, group)
    assert_error(http.call("DELETE", f"/api/groups/{group}"), 404, group)


# --- AMQP queues, exchanges, bindings -------------------------------------------------------------

def test_amqp_queue_shows_up_get_and_purge(broker, http):
    name = unique("amqp-made")
    connection = pika.BlockingConnection(broker.amqp_params(client_properties={"product": "weir-tests"}))
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    for i in range(3):
        channel.basic_publish("", name, f"m{i}".encode(),
                              pika.BasicProperties(delivery_mode=2, content_type="text/plain"))
    channel.basic_publish("", name, b"\xff\xfe", pika.BasicProperties(headers={"n": 1}))

    def queue():
        return next((q for q in http.ok("GET", "/api/queues") if q["name"] == name), None)

    wait_until(lambda: (queue() or {}).get("ready") == 4, 10, "4 ready")
    shown = queue()
    assert shown["vhost"] == "/" and shown["type"] == "classic" and shown["durable"] is True
    assert shown["dead_letter_exchange"] == "dlx" and shown["arguments"] == {"x-dead-letter-exchange": "dlx"}
    assert http.ok("GET", f"/api/queues/{DEFAULT_VHOST}/{name}")["ready"] == 4

    connections = [c for c in http.ok("GET", "/api/connections") if c["protocol"] == "amqp"]
    assert any(c["user"] == "guest" and c["client"] == "weir-tests" and c["channels"] == 1 for c in connections), connections

    # ack=false: peeked messages go back (redelivered), in order.
    peeked = http.ok("POST", f"/api/queues/{DEFAULT_VHOST}/{name}/get", {"count": 2, "ack": False})
    assert [m["payload"] for m in peeked] == ["m0", "m1"]
    assert peeked[0]["properties"] == {"content_type": "text/plain", "delivery_mode": 2}
    assert peeked[0]["routing_key"] == name and peeked[0]["exchange"] == "" and peeked[1]["message_count"] == 2
    again = http.ok("POST", f"/api/queues/{DEFAULT_VHOST}/{name}/get", {"count": 10, "ack": False})
    assert [m["payload"] for m in again][:2] == ["m0", "m1"] and again[0]["redelivered"] is True
    assert again[3]["payload_encoding"] == "base64" and again[3]["payload"] == "//4="
    assert again[3]["properties"]["headers"] == {"n": 1}
    # ack=true takes it for good.
    taken = http.ok("POST", f"/api/queues/{DEFAULT_VHOST}/{name}/get", {"count": 1, "ack": True})
    assert taken[0]["payload"] == "m0"
    wait_until(lambda: queue()["ready"] == 3, 10, "3 ready")

    assert_error(http.call("POST", f"/api/queues/{DEFAULT_VHOST}/{name}/get", {"count": 0, "ack": True}), 400, "count")
    assert_error(http.call("POST", f"/api/queues/{DEFAULT_VHOST}/{name}/get", {"count": 1}), 400, "ack")

    assert http.ok("DELETE", f"/api/queues/{DEFAULT_VHOST}/{name}/contents") == {"purged": 3}
    assert queue()["ready"] == 0
    assert channel.queue_declare(name, passive=True).method.message_count == 0
    connection.close()

    assert_error(http.call("DELETE", f"/api/queues/{DEFAULT_VHOST}/nope/contents"), 404, "nope")
    assert_error(http.call("DELETE", f"/api/queues/{q('/other')}/{name}/contents"), 404, "vhost")
    assert_error(http.get(f"/api/queues/{DEFAULT_VHOST}/nope"), 404, "nope")


def test_declare_and_delete_queues(broker, http):
    name = unique("http-queue")
    path = f"/api/queues/{DEFAULT_VHOST}/{name}"
    assert http.call("PUT", path, {"durable": True, "arguments": {"x-max-length": 10}}).status == 201
    assert http.call("PUT", path, {"durable": True, "arguments": {"x-max-length": 10}}).status == 204
    assert_error(http.call("PUT", path, {"durable": False}), 400, "durable")
    assert_error(http.call("PUT", path, {"durable": "yes"}), 400, "durable")
    assert_error(http.call("PUT", f"/api/queues/{DEFAULT_VHOST}/amq.reserved", {}), 403, "amq.")
    assert_error(http.call("PUT", f"/api/queues/{DEFAULT_VHOST}/bad-args", {"arguments": {"x-max-length": "ten"}}), 400, "x-max-length")
    assert_error(http.call("PUT", f"/api/queues/{q('/nope')}/{name}", {}), 404, "vhost")
    assert_error(http.call("PUT", f"/api/queues/{DEFAULT_VHOST}/{'q' * 256}", {}), 400, "255")
    assert_error(http.call("PUT", f"/api/exchanges/{DEFAULT_VHOST}/{'x' * 256}", {"type": "direct"}), 400, "255")
    shown = http.ok("GET", path)
    assert shown["arguments"] == {"x-max-length": 10}

    connection = pika.BlockingConnection(broker.amqp_params())
    channel = connection.channel()
    assert channel.queue_declare(name, passive=True, durable=True).method.message_count == 0
    http.ok("DELETE", path, status=204)
    assert_error(http.call("DELETE", path), 404, name)
    assert_error(http.get(path), 404, name)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare(name, passive=True)
    connection.close()


def test_exchanges_bindings_and_publish(broker, http):
    exchange, queue = unique("http-x"), unique("http-bound")
    xpath = f"/api/exchanges/{DEFAULT_VHOST}/{exchange}"
    assert http.call("PUT", xpath, {"type": "topic", "durable": True}).status == 201
    assert http.call("PUT", xpath, {"type": "topic", "durable": True}).status == 204
    assert_error(http.call("PUT", xpath, {"type": "fanout"}), 400, "type")
    assert_error(http.call("PUT", f"/api/exchanges/{DEFAULT_VHOST}/other", {"type": "sideways"}), 400, "type")
    assert_error(http.call("PUT", f"/api/exchanges/{DEFAULT_VHOST}/other", {}), 400, "type")
    shown = {x["name"]: x for x in http.ok("GET", "/api/exchanges")}
    assert shown[exchange]["type"] == "topic" and shown[exchange]["durable"] is True
    assert "" in shown and shown["amq.topic"]["type"] == "topic"

    http.ok("PUT", f"/api/queues/{DEFAULT_VHOST}/{queue}", {}, status=201)
    binding = {"vhost": "/", "source": exchange, "destination": queue,
               "destination_type": "queue", "routing_key": "orders.*"}
    http.ok("POST", "/api/bindings", binding, status=201)
    listed = [b for b in http.ok("GET", "/api/bindings") if b["source"] == exchange]
    assert listed == [{**binding, "arguments": {}}]
    assert_error(http.call("POST", "/api/bindings", {**binding, "destination": "nope"}), 404, "nope")
    assert_error(http.call("POST", "/api/bindings", {**binding, "destination_type": "table"}), 400, "destination_type")
    assert_error(http.call("POST", "/api/bindings", {"source": exchange}), 400, "destination")

    routed = http.ok("POST", f"{xpath}/publish", {"routing_key": "orders.new", "payload": "hello",
                                                    "properties": {"headers": {"a": "b"}, "delivery_mode": 2}})
    assert routed["routed"] is True
    assert http.ok("POST", f"{xpath}/publish", {"routing_key": "other", "payload": "x"})["routed"] is False
    default = http.ok("POST", f"/api/exchanges/{DEFAULT_VHOST}/amq.default/publish",
                      {"routing_key": queue, "payload": "AAE=", "payload_encoding": "base64"})
    assert default["routed"] is True
    assert_error(http.call("POST", f"/api/exchanges/{DEFAULT_VHOST}/nope/publish", {"payload": "x"}), 404, "nope")
    assert_error(http.call("POST", f"{xpath}/publish", {"routing_key": "a"}), 400, "payload")
    assert_error(http.call("POST", f"{xpath}/publish", {"payload": "x", "properties": {"delivery_mode": 3}}), 400, "delivery_mode")

    connection = pika.BlockingConnection(broker.amqp_params())
    channel = connection.channel()
    method, properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"hello" and properties.headers == {"a": "b"} and properties.delivery_mode == 2
    assert method.routing_key == "orders.new" and method.exchange == exchange
    assert channel.basic_get(queue, auto_ack=True)[2] == b"\x00\x01"
    connection.close()

    http.ok("DELETE", "/api/bindings", binding, status=204)
    assert [b for b in http.ok("GET", "/api/bindings") if b["source"] == exchange] == []
    assert_error(http.call("DELETE", f"/api/exchanges/{DEFAULT_VHOST}/amq.direct"), 403, "amq.direct")
    http.ok("DELETE", xpath, status=204)
    assert_error(http.call("DELETE", xpath), 404, exchange)


# --- connections ------------------------------------------------------------------------------------

def test_close_amqp_and_kafka_connections(broker, http):
    connection = pika.BlockingConnection(broker.amqp_params())
    [amqp] = [c for c in http.ok("GET", "/api/connections") if c["protocol"] == "amqp"]
    assert amqp["peer"].startswith("127.0.0.1:") and amqp["connected_at_ms"] > 0
    http.ok("DELETE", f"/api/connections/{amqp['id']}", status=204)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.2)
    assert closed.value.reply_code == 320
    assert closed.value.reply_text == "CONNECTION_FORCED - Closed via management plugin"
    wait_until(lambda: not [c for c in http.ok("GET", "/api/connections") if c["protocol"] == "amqp"],
               10, "AMQP connection gone")

    sock = socket.create_connection((broker.host, broker.port), timeout=10)
    [kafka] = wait_until(lambda: [c for c in http.ok("GET", "/api/connections") if c["protocol"] == "kafka"],
                         10, "Kafka connection listed")
    http.ok("DELETE", f"/api/connections/{kafka['id']}", status=204)
    assert sock.recv(1) == b""  # the broker closed the socket
    sock.close()

    assert_error(http.call("DELETE", "/api/connections/999999"), 404, "999999")
    assert_error(http.call("DELETE", "/api/connections/abc"), 400, "abc")


# --- rates ------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_rates_and_drain_estimate(broker, http):
    name, topic, group = unique("rated"), unique("rated-topic"), unique("rated-group")
    http.ok("PUT", f"/api/queues/{DEFAULT_VHOST}/{name}", {}, status=201)
    http.ok("POST", "/api/topics", {"name": topic}, status=201)
    http.ok("POST", f"/api/topics/{topic}/records", {"records": [{"value": str(i)} for i in range(100)]})
    consumer = make_consumer(broker, **{"group.id": group})
    for step in range(4):
        for _ in range(5):
            http.ok("POST", f"/api/exchanges/{DEFAULT_VHOST}/amq.default/publish", {"routing_key": name, "payload": "x"})
        consumer.commit(offsets=[TopicPartition(topic, 0, 10 * (step + 1))], asynchronous=False)
        time.sleep(1.5)

    def rated():
        queue = http.ok("GET", f"/api/queues/{DEFAULT_VHOST}/{name}")
        offset = committed_offset(http, group, topic)
        return queue["publish_rate_per_s"] and offset["rate_per_s"] and (queue, offset)

    queue, offset = wait_until(rated, 10, "rates measured")
    assert queue["publish_rate_per_s"] > 0
    assert offset["rate_per_s"] > 0 and offset["lag"] == 60
    assert offset["drain_s"] == pytest.approx(offset["lag"] / offset["rate_per_s"])
    call_within(consumer.close, 30, "consumer close")


# --- logs -------------------------------------------------------------------------------------------

def test_json_logs_name_the_connection_of_each_error(weir_broker):
    broker = weir_broker(args=["--log-format", "json"])
    http = Http(broker.http_url)
    assert http.get("/api/topics/nope").status == 404
    admin = make_admin(broker)
    [future] = admin.delete_topics(["no-such-topic"], operation_timeout=10).values()
    with pytest.raises(Exception):
        future.result(20)
    lines = [line for line in broker.log_text().splitlines() if line.startswith("{")]
    assert lines, broker.log_tail()
    records = [json.loads(line) for line in lines]
    assert any(r["fields"].get("message") == "HTTP API and console ready" for r in records)
    refused = [r for r in records if r["fields"].get("message") == "HTTP API request refused"]
    assert refused and "nope" in refused[0]["fields"]["error"]
    assert refused[0]["spans"][-1]["peer"].startswith("127.0.0.1:")
    kafka = [r for r in records if r["fields"].get("message") == "Kafka error answered"]
    assert kafka and kafka[0]["fields"]["error"] == "unknown topic or partition"
    [span] = kafka[0]["spans"]
    assert span["name"] == "kafka" and span["peer"].startswith("127.0.0.1:") and span["connection"] > 0
