"""`weir server` settings: command-line flags, WEIR_* environment variables
and the --config TOML file, observed through the Kafka protocol."""

from __future__ import annotations

from confluent_kafka import KafkaError
from confluent_kafka.admin import ConfigResource, ResourceType

import kafka_wire as wire
from helpers import create_topic, make_admin, make_producer, produce_all, unique


def auto_create(conn: wire.Connection, name: str) -> dict:
    """Metadata v4 with allow_auto_topic_creation=true; the topic's entry
    once it exists (Kafka may first answer LEADER_NOT_AVAILABLE)."""
    answer = wire.metadata_v4(conn, [name], True)["topics"][name]
    if answer["error_code"] == 5:  # LEADER_NOT_AVAILABLE while creating
        answer = wire.metadata_v4(conn, [name], False)["topics"][name]
    return answer


def auto_created_partitions(broker) -> int:
    with wire.Connection(broker) as conn:
        name = unique("auto")
        answer = auto_create(conn, name)
        assert answer["error_code"] == 0, answer
        return len(answer["partitions"])


def test_flag_environment_and_config_file(weir_broker, tmp_path):
    assert auto_created_partitions(weir_broker()) == 1  # the default
    assert auto_created_partitions(weir_broker(args=["--num-partitions", "2"])) == 2
    assert auto_created_partitions(weir_broker(env={"WEIR_NUM_PARTITIONS": "3"})) == 3
    config = tmp_path / "weir.toml"
    config.write_text("num_partitions = 4\nauto_create_topics = true\n")
    assert auto_created_partitions(weir_broker(args=["--config", str(config)])) == 4


def test_log_defaults_from_flags(weir_broker):
    broker = weir_broker(args=[
        "--log-segment-bytes", "4096",
        "--log-retention-bytes", "8192",
        "--log-retention-ms", "3600000",
        "--message-max-bytes", "5000",
    ])
    admin = make_admin(broker)
    topic = unique("flags")
    create_topic(admin, topic, 1)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(15)
    got = {name: configs[name].value for name in ("segment.bytes", "retention.bytes", "retention.ms", "max.message.bytes")}
    assert got == {"segment.bytes": "4096", "retention.bytes": "8192", "retention.ms": "3600000", "max.message.bytes": "5000"}

    producer = make_producer(broker, **{"compression.type": "none", "linger.ms": 0})
    [report] = produce_all(producer, topic, [{"value": b"x" * 6000}])
    assert report[0] is not None and report[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, report
    [report] = produce_all(producer, topic, [{"value": b"x" * 4000}])
    assert (report[0], report[2]) == (None, 0)


def test_metadata_auto_create_follows_the_request_and_the_flag(weir_broker):
    enabled = weir_broker(args=["--num-partitions", "2"])
    disabled = weir_broker(args=["--auto-create-topics", "false"])
    for broker in (enabled, disabled):
        with wire.Connection(broker) as conn:
            metadata = wire.metadata_v4(conn, None, False)
            [(node, host, port, _rack)] = metadata["brokers"]
            assert (host, port) == (broker.host, broker.port)  # advertises --kafka-listen
            # allow_auto_topic_creation=false: UNKNOWN_TOPIC_OR_PARTITION, nothing created.
            name = unique("meta")
            answer = wire.metadata_v4(conn, [name], False)["topics"][name]
            assert answer["error_code"] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION
            assert name not in wire.metadata_v4(conn, None, False)["topics"]
            # allow_auto_topic_creation=true: created only if the broker allows it.
            answer = auto_create(conn, name)
            if broker is enabled:
                assert answer["error_code"] == 0
                assert [(p["partition"], p["leader"], p["replicas"], p["isr"]) for p in answer["partitions"]] == [
                    (p, node, [node], [node]) for p in range(2)
                ]
            else:
                assert answer["error_code"] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION
                assert name not in wire.metadata_v4(conn, None, False)["topics"]
