"""A consumer-group member as a process of its own, so that a test can
kill -9 it: `python -m faults.group_consumer BOOTSTRAP TOPIC GROUP EVENTS_FILE SESSION [IDLE_EXIT_S]`.

It subscribes to TOPIC in GROUP, and after each batch it consumed commits
the next offsets synchronously. Every step is appended to EVENTS_FILE as
one JSON line, written before the next step starts, so a kill loses at most
the line of the step it interrupted:

    {"session": S, "event": "assigned", "partitions": [0, 1, 2]}
    {"session": S, "event": "consumed", "partition": 0, "offset": 17}
    {"session": S, "event": "commit", "offsets": {"0": 18}}           (invoked)
    {"session": S, "event": "committed", "offsets": {"0": 18}}        (ok)
    {"session": S, "event": "commit-failed", "offsets": {...}, "error": "..."}

With IDLE_EXIT_S it exits once nothing arrived for that long after it was
assigned partitions (the last session of a test, which must drain the
topic); without, it runs until killed. `group_check` reads the events.
"""

from __future__ import annotations

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

SESSION_TIMEOUT_MS = 6000


class EventLog:
    def __init__(self, path: str, session: int):
        self.file = open(path, "a", buffering=1)
        self.session = session

    def write(self, event: str, **fields) -> None:
        self.file.write(json.dumps({"session": self.session, "event": event, **fields}) + "\n")


def consume(bootstrap: str, topic: str, group: str, events: EventLog, idle_exit_s: float | None) -> None:
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 1000,
        "reconnect.backoff.max.ms": 500,
    })
    # Idle time counts from the last assignment or message: joining the
    # group can take a session timeout while a killed member is dropped.
    last_activity_s: float | None = None

    def on_assign(_, assigned) -> None:
        nonlocal last_activity_s
        last_activity_s = time.monotonic()
        events.write("assigned", partitions=[tp.partition for tp in assigned])

    consumer.subscribe([topic], on_assign=on_assign)
    while idle_exit_s is None or last_activity_s is None or time.monotonic() - last_activity_s < idle_exit_s:
        next_offsets = {}
        for message in consumer.consume(100, timeout=0.5):
            if message.error() is None:
                events.write("consumed", partition=message.partition(), offset=message.offset())
                next_offsets[message.partition()] = message.offset() + 1
        if next_offsets:
            last_activity_s = time.monotonic()
            commit(consumer, topic, next_offsets, events)
    consumer.close()


def commit(consumer: Consumer, topic: str, next_offsets: dict[int, int], events: EventLog) -> None:
    offsets = {str(partition): offset for partition, offset in next_offsets.items()}
    events.write("commit", offsets=offsets)
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, partition, offset) for partition, offset in next_offsets.items()],
            asynchronous=False,
        )
    except KafkaException as error:
        events.write("commit-failed", offsets=offsets, error=str(error))
    else:
        events.write("committed", offsets=offsets)


def main(argv: list[str]) -> None:
    bootstrap, topic, group, events_path, session = argv[:5]
    idle_exit_s = float(argv[5]) if len(argv) > 5 else None
    consume(bootstrap, topic, group, EventLog(events_path, int(session)), idle_exit_s)


if __name__ == "__main__":
    main(sys.argv[1:])
