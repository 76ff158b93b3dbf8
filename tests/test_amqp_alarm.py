"""The disk alarm: below --disk-free-limit-bytes of free space, a publishing
connection gets `connection.blocked` (when it announced the capability, as
pika does) and its publishes are not read; consumers keep working."""

import pika
import pytest

from amqp_helpers import unique, wait_until

pytestmark = pytest.mark.timeout(60)


def params(broker, **extra):
    return pika.ConnectionParameters(host="127.0.0.1", port=broker.amqp_port, **extra)


def test_publisher_is_blocked_while_disk_is_short_and_consumers_carry_on(weir_broker):
    # No file system has an exabyte free: the alarm is on from the start.
    broker = weir_broker(args=["--disk-free-limit-bytes", str(10**18)])
    queue = unique("alarm")
    observer = pika.BlockingConnection(params(broker))
    observer_channel = observer.channel()
    observer_channel.queue_declare(queue)

    publisher = pika.BlockingConnection(params(broker))
    blocked = []
    publisher.add_on_connection_blocked_callback(lambda connection, frame: blocked.append(frame.method.reason))
    channel = publisher.channel()
    for index in range(10):
        channel.basic_publish("", queue, b"m%d" % index)

    def saw_blocked():
        publisher.process_data_events(time_limit=0.1)
        return blocked

    wait_until(saw_blocked, 10, "connection.blocked")
    assert blocked[0] == "low on disk"
    # The first publish is what tells the broker the connection publishes;
    # nothing after it is read.
    observer.process_data_events(time_limit=0.5)
    assert observer_channel.queue_declare(queue, passive=True).method.message_count == 1
    # A connection that only consumes is not blocked.
    assert observer_channel.basic_get(queue, auto_ack=True)[2] == b"m0"
    observer.close()


def test_default_limit_leaves_publishers_alone(weir_broker):
    broker = weir_broker()
    connection = pika.BlockingConnection(params(broker))
    blocked = []
    connection.add_on_connection_blocked_callback(lambda c, f: blocked.append(f))
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    for index in range(100):
        channel.basic_publish("", queue, b"m%d" % index)
    assert channel.queue_declare(queue, passive=True).method.message_count == 100
    assert blocked == []
    connection.close()
