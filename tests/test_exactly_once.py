"""Delivery guarantees end to end, as applications see them.

1. At-least-once with a consumer group: three consumers, each in its own OS
   process, process and then synchronously commit; one is killed with
   SIGKILL between processing a batch and committing it. The survivors
   take its partitions within the session timeout, every produced record
   was processed and committed by someone, only that batch is processed
   twice, and the group ends committed at the log end.
2. Idempotence by raw replay: the exact bytes of one idempotent Produce
   request, sent again (and again after a broker `kill -9`), are answered
   with the first append's base offset and never appended twice.
3. Exactly-once copy: a consume → transactional produce →
   send_offsets_to_transaction → commit loop (KIP-98/KIP-447), killed with
   SIGKILL inside a transaction and replaced by a copier with the same
   transactional.id and group, with and without a broker `kill -9` as well:
   a read_committed reader of the output sees every input value exactly once.

Consumers and copiers run as separate Python processes (a SIGKILL must stop
their heartbeats and TCP connections without a LeaveGroup or an EndTxn);
each prints one JSON line per event, which the test collects.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest
from confluent_kafka import TopicPartition

import kafka_wire as wire
from helpers import (
    assert_delivered,
    call_within,
    committed_partitions,
    client_config,
    consume_exactly,
    create_topic,
    make_admin,
    make_consumer,
    make_producer,
    produce_all,
    unique,
    wait_until,
    watermarks,
)

SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500
# After a member dies, Kafka expires it SESSION_TIMEOUT_MS after its last
# heartbeat; the survivors then learn of the rebalance on their next
# heartbeat and rejoin. This margin covers that and a loaded 2-core machine.
TAKEOVER_MARGIN_S = 6.0
PROCESS_STOP_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 20.0


# --- processes that print JSON events -------------------------------------------

class ScriptProcess:
    """`python -c script args...` whose stdout is one JSON object per line,
    collected by a thread into `events` (in order). stderr goes to a file
    next to the broker's data, shown when the test fails."""

    def __init__(self, name: str, script: str, args, workdir):
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        self.events: list[dict] = []
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", script, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.reader = threading.Thread(target=self._read, name=f"{name} stdout", daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                # Only a line cut short by SIGKILL can be partial.
                self.events.append({"event": "garbled", "line": line})

    def of(self, kind: str) -> list[dict]:
        return [event for event in list(self.events) if event["event"] == kind]

    def kill(self) -> None:
        """SIGKILL, then wait for the exit and for the last printed line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(10)

    def stop(self, timeout: float = PROCESS_STOP_TIMEOUT_S) -> int:
        """SIGTERM (the scripts then close their clients and exit); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM\n{self.stderr_tail()}")
        self.reader.join(10)
        return self.proc.returncode

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return f"----- {self.stderr_path} -----\n{text[-limit:]}"


@pytest.fixture
def processes(tmp_path):
    """Factory: `processes(name, script, *args) -> ScriptProcess`; every
    process still running at teardown is killed (before the broker, which
    the test requested first)."""
    made: list[ScriptProcess] = []

    def make(name: str, script: str, *args) -> ScriptProcess:
        process = ScriptProcess(name, script, [str(a) for a in args], tmp_path)
        made.append(process)
        return process

    yield make
    for process in made:
        process.kill()
        # Kept for a failed test's post-mortem, next to the process's stderr.
        (tmp_path / f"{process.name}.events.json").write_text(
            "\n".join(json.dumps(event) for event in process.events) + "\n")


def script_config(broker, **settings) -> str:
    """JSON client config for a script (no Python logger can cross a process)."""
    config = {k: v for k, v in client_config(broker).items() if k != "logger"}
    config.update(settings)
    return json.dumps(config)


def produce_values(broker, topic: str, partitions: int, per_partition: int, tag: str) -> dict:
    """`per_partition` records to each partition: {(partition, offset): value}."""
    messages = [
        {"partition": p, "value": f"{tag} p{p} n{n}".encode()}
        for n in range(per_partition)
        for p in range(partitions)
    ]
    reports = produce_all(make_producer(broker), topic, messages)
    assert_delivered(reports)
    return {(p, offset): m["value"].decode() for m, (_, p, offset, _) in zip(messages, reports)}


def end_offsets(broker, topic: str, partitions: int) -> dict:
    consumer = make_consumer(broker)
    try:
        return {p: watermarks(consumer, topic, p)[1] for p in range(partitions)}
    finally:
        call_within(consumer.close, CLOSE_TIMEOUT_S, "consumer close")


def committed_offsets(broker, group: str, topic: str, partitions: int) -> dict:
    """{partition: committed offset} by OffsetFetch from a consumer that
    never joins `group` (librdkafka asks with require_stable, so pending
    transactional offsets are waited for, not returned)."""
    answer = committed_partitions(broker, group, topic, partitions, CLOSE_TIMEOUT_S)
    return {tp.partition: tp.offset for tp in answer}


# --- 1. at-least-once: three consumer processes, one killed ----------------------

# Consume a batch and process it: report it (the side effect), work on it
# for a while (sleep per record), then commit the consumed positions
# synchronously and report exactly what was committed. A process given
# `stall_after` stops for good after processing that many batches, before
# committing the last one (and is killed there).
GROUP_CONSUMER = r"""
import json, signal, sys, time
from confluent_kafka import Consumer, KafkaException

config, topic = json.loads(sys.argv[1]), sys.argv[2]
batch_size, delay_s, stall_after = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

def say(**event):
    print(json.dumps(event), flush=True)

def recorder(kind):
    return lambda _consumer, partitions: say(event=kind, partitions=sorted(p.partition for p in partitions))

config["error_cb"] = lambda error: say(event="client_error", error=str(error))
consumer = Consumer(config)
consumer.subscribe([topic], on_assign=recorder("assign"), on_revoke=recorder("revoke"), on_lost=recorder("lost"))
assigned = None
batches = 0
while not stopping:
    messages = consumer.consume(batch_size, 0.1)
    now = sorted(tp.partition for tp in consumer.assignment())
    if now != assigned:
        assigned = now
        say(event="assignment", partitions=now)
    good = []
    for message in messages:
        if message.error() is None:
            good.append(message)
        else:
            say(event="error", error=str(message.error()))
    if not good:
        continue
    say(event="processed", records=[[m.partition(), m.offset(), m.value().decode()] for m in good])
    time.sleep(delay_s * len(good))
    batches += 1
    if batches == stall_after:
        say(event="stalled")
        time.sleep(3600)
    try:
        committed = consumer.commit(asynchronous=False)
    except KafkaException as exception:
        say(event="commit_failed", error=str(exception.args[0]))
        continue
    say(event="committed", offsets=[[tp.partition, tp.offset, None if tp.error is None else str(tp.error)]
                                    for tp in committed])
consumer.close()
say(event="closed")
"""

# librdkafka's assignors over members sorted by member id; which member gets
# which block depends on the ids, so splits are compared as sorted lists.
ASSIGNOR_SPLITS = {
    "range": ([[0, 1], [2, 3], [4, 5]], [[0, 1, 2], [3, 4, 5]]),
    "roundrobin": ([[0, 3], [1, 4], [2, 5]], [[0, 2, 4], [1, 3, 5]]),
    "cooperative-sticky": (None, None),
}


def commit_start_offsets(broker, group: str, topic: str, partitions: int) -> None:
    """Offset 0 committed for every partition, before any member joins."""
    consumer = make_consumer(broker, **{"group.id": group})
    try:
        committed = call_within(
            lambda: consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in range(partitions)],
                                    asynchronous=False),
            30, "commit")
    finally:
        call_within(consumer.close, CLOSE_TIMEOUT_S, "consumer close")
    assert [(tp.partition, tp.offset, tp.error) for tp in committed] == [(p, 0, None) for p in range(partitions)]


def current_assignment(process: ScriptProcess) -> frozenset:
    assignments = process.of("assignment")
    return frozenset(assignments[-1]["partitions"]) if assignments else frozenset()


def disjoint_cover(group_processes, partitions: int, per_member: int) -> bool:
    sets = [current_assignment(p) for p in group_processes]
    return (
        all(len(s) == per_member for s in sets)
        and sum(len(s) for s in sets) == partitions
        and frozenset().union(*sets) == frozenset(range(partitions))
    )


def processings(process: ScriptProcess) -> list[tuple[tuple[int, int], str, bool]]:
    """Every record `process` processed: ((partition, offset), value,
    covered), where covered means a successful commit of the same process
    later committed an offset above it for its partition before the
    partition was revoked or lost."""
    pending: dict[int, list[int]] = defaultdict(list)  # partition -> indexes into result
    result = []
    for event in list(process.events):
        kind = event["event"]
        if kind == "processed":
            for partition, offset, value in event["records"]:
                pending[partition].append(len(result))
                result.append(((partition, offset), value, False))
        elif kind == "committed":
            for partition, committed, error in event["offsets"]:
                if error is not None:
                    continue
                still = []
                for index in pending[partition]:
                    key, value, _ = result[index]
                    if key[1] < committed:
                        result[index] = (key, value, True)
                    else:
                        still.append(index)
                pending[partition] = still
        elif kind in ("revoke", "lost"):
            for partition in event["partitions"]:
                pending[partition] = []
    return result


def check_at_least_once(group_processes, killed: ScriptProcess, produced: dict) -> None:
    """Every produced record was processed by a process that then committed
    it, with the value produced, and nothing else was processed; a record
    was processed twice only if the killed process had processed it without
    committing it (and then once more by a survivor)."""
    by_record = defaultdict(list)  # (partition, offset) -> [(process name, value, covered)]
    for process in group_processes:
        for key, value, covered in processings(process):
            by_record[key].append((process.name, value, covered))
    killed_uncommitted = {key for key, _, covered in processings(killed) if not covered}
    unexpected = sorted(set(by_record) - set(produced))
    wrong = sorted((k, v) for k, seen in by_record.items() if k in produced for _, v, _ in seen if v != produced[k])
    uncommitted = sorted(k for k in produced if not any(covered for _, _, covered in by_record.get(k, ())))
    repeated = sorted(
        (k, seen) for k, seen in by_record.items()
        if len(seen) > 1 and not (len(seen) == 2 and k in killed_uncommitted)
    )
    assert not (unexpected or wrong or uncommitted or repeated), (
        f"{len(uncommitted)} produced records never processed-and-committed (first {uncommitted[:5]}); "
        f"{len(repeated)} processed more than once other than the killed process's uncommitted ones "
        f"(first {repeated[:3]}); {len(unexpected)} never produced (first {unexpected[:5]}); "
        f"{len(wrong)} with wrong values (first {wrong[:3]})"
    )


def failure_report(group_processes) -> str:
    lines = []
    for process in group_processes:
        interesting = [e for e in process.events if e["event"] not in ("processed", "committed")]
        lines.append(f"{process.name}: {len(process.of('processed'))} batches processed, events {interesting[-12:]}")
    return "\n".join(lines)


@pytest.mark.timeout(75)
@pytest.mark.parametrize("strategy", list(ASSIGNOR_SPLITS))
def test_group_member_killed_mid_consumption_loses_nothing(broker, processes, strategy):
    """Three consumer processes in one group on a 6-partition topic split it
    disjointly; one is killed with SIGKILL mid-consumption, after
    processing a batch it has not committed; the other two take its
    partitions within the session timeout and resume at its commits: every
    record is processed and committed at least once, processed twice only
    if it was in the killed member's uncommitted batch, and the group's
    committed offsets end at the log end."""
    partitions, per_partition = 6, 150
    topic = unique(f"alo-{strategy}")
    create_topic(make_admin(broker), topic, partitions)
    group = unique("alo")
    # librdkafka 2.16 resumes the fetchers of partitions it was just
    # assigned ("Resuming fetchers ... assign called"); for a partition
    # without a committed offset that resume can reset it to the earliest
    # offset a second time, after records were already delivered, so one
    # consumer gets the same records twice although the broker answered
    # every OffsetFetch, ListOffsets and Fetch correctly (about one run in
    # 25; cf. confluentinc/librdkafka#4637 and #4686). With offset 0
    # committed up front no member starts without a committed offset.
    commit_start_offsets(broker, group, topic, partitions)

    def start(index, stall_after=-1):
        config = script_config(
            broker,
            **{
                "group.id": group,
                "client.id": f"consumer-{index}",
                "partition.assignment.strategy": strategy,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            },
        )
        return processes(f"consumer-{index}", GROUP_CONSUMER, config, topic, 20, 0.004, stall_after)

    # consumer-0 is the one killed, after its third batch, before committing it.
    trio = [start(0, stall_after=3), start(1), start(2)]
    wait_until(lambda: disjoint_cover(trio, partitions, 2), 40, "three processes with two partitions each",
               interval=0.05)
    stable = [current_assignment(p) for p in trio]
    time.sleep(1.5)
    assert [current_assignment(p) for p in trio] == stable, f"the assignment changed in a stable group: {stable}"
    split_before, split_after = ASSIGNOR_SPLITS[strategy]
    if split_before is not None:
        assert sorted(sorted(s) for s in stable) == split_before

    produced = produce_values(broker, topic, partitions, per_partition, "alo")
    doomed, survivors = trio[0], trio[1:]
    wait_until(lambda: doomed.of("stalled"), 30, "the doomed process's third batch", interval=0.01)
    doomed.kill()
    killed_at = time.monotonic()
    uncommitted = sorted(key for key, _, covered in processings(doomed) if not covered)
    last_batch = sorted((p, o) for p, o, _ in doomed.of("processed")[-1]["records"])
    assert uncommitted == last_batch and len(doomed.of("committed")) == 2, doomed.events

    takeover_s = SESSION_TIMEOUT_MS / 1000 + TAKEOVER_MARGIN_S
    try:
        wait_until(lambda: disjoint_cover(survivors, partitions, 3), takeover_s,
                   "the two survivors to hold three partitions each", interval=0.05)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{failure_report(trio)}") from None
    taken_over_s = time.monotonic() - killed_at
    after = [current_assignment(p) for p in survivors]
    if split_after is not None:
        assert sorted(sorted(s) for s in after) == split_after
    else:
        for before, now in zip(stable[1:], after):
            assert before <= now, f"sticky assignor moved partitions away: {sorted(before)} -> {sorted(now)}"

    log_end = end_offsets(broker, topic, partitions)
    assert log_end == {p: per_partition for p in range(partitions)}
    try:
        wait_until(lambda: committed_offsets(broker, group, topic, partitions) == log_end, 30,
                   f"committed offsets at the log end {log_end}", interval=0.3)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{failure_report(trio)}") from None
    assert [current_assignment(p) for p in survivors] == after, "the assignment changed after the take-over"
    for survivor in survivors:
        assert survivor.stop() == 0, survivor.stderr_tail()

    for survivor in survivors:
        assert not survivor.of("error"), f"{survivor.name} consume errors: {survivor.of('error')}"
    check_at_least_once(trio, doomed, produced)
    assert committed_offsets(broker, group, topic, partitions) == log_end
    assert taken_over_s <= takeover_s


# --- 2. idempotence by raw replay -------------------------------------------------

API_INIT_PRODUCER_ID = 22


def init_producer_id_v1(conn) -> tuple[int, int, int]:
    """InitProducerId v1 without a transactional id: (error, producer id, epoch)."""
    body = wire.string(None) + wire.int32(60_000)
    r = conn.response(conn.send_request(API_INIT_PRODUCER_ID, 1, body))
    r.int32()  # throttle_time_ms
    answer = (r.int16(), r.int64(), r.int16())
    r.done()
    return answer


def idempotent_batch(producer_id: int, epoch: int, base_sequence: int, values, base_timestamp: int) -> bytes:
    """An uncompressed, non-transactional RecordBatch v2 of an idempotent producer."""
    encoded = b"".join(wire.encode_record(i, i, None, value) for i, value in enumerate(values))
    after_crc = (
        wire.int16(0)  # attributes: no compression, CreateTime, not transactional
        + wire.int32(len(values) - 1)  # lastOffsetDelta
        + wire.int64(base_timestamp)
        + wire.int64(base_timestamp + len(values) - 1)  # maxTimestamp
        + wire.int64(producer_id)
        + wire.int16(epoch)
        + wire.int32(base_sequence)
        + wire.int32(len(values))
        + encoded
    )
    after_length = wire.int32(-1) + wire.int8(2) + struct.pack(">I", wire.crc32c(after_crc)) + after_crc
    return wire.int64(0) + wire.int32(len(after_length)) + after_length


def produce_request(version: int, correlation_id: int, topic: str, batch: bytes) -> bytes:
    """A whole framed Produce request (v3-v8 share this body): acks=all,
    no transactional id, one batch for partition 0."""
    partitions = wire.int32(1) + wire.int32(0) + wire.int32(len(batch)) + batch
    body = wire.string(None) + wire.int16(-1) + wire.int32(10_000) + wire.int32(1) + wire.string(topic) + partitions
    return wire.frame(wire.request_header(wire.API_PRODUCE, version, correlation_id) + body)


def read_produce_response(conn, version: int, correlation_id: int, topic: str) -> tuple[int, int]:
    """The (error code, base offset) of partition 0 in a Produce v3-v8 response."""
    r = conn.response(correlation_id)

    def partition(r):
        answer = {"index": r.int32(), "error_code": r.int16(), "base_offset": r.int64()}
        r.int64()  # log_append_time_ms
        if version >= 5:
            r.int64()  # log_start_offset
        if version >= 8:
            answer["record_errors"] = r.array(lambda r: (r.int32(), r.string()))
            answer["error_message"] = r.string()
        return answer

    topics = r.array(lambda r: (r.string(), r.array(partition)))
    r.int32()  # throttle_time_ms
    r.done()
    [(name, [answer])] = topics
    assert (name, answer["index"]) == (topic, 0), topics
    if version >= 8:
        assert not answer["record_errors"] and answer["error_message"] is None, answer
    return answer["error_code"], answer["base_offset"]


def send_raw(broker, request: bytes, version: int, correlation_id: int, topic: str) -> tuple[int, int]:
    """`request` on a fresh connection; its (error code, base offset)."""
    with wire.Connection(broker) as conn:
        conn.send(request)
        return read_produce_response(conn, version, correlation_id, topic)


def read_partition(broker, topic: str, count: int) -> list[tuple[int, bytes]]:
    """Exactly `count` records of partition 0 from offset 0: [(offset, value)]."""
    consumer = make_consumer(broker)
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        messages = consume_exactly(consumer, count, timeout=30, grace=1.0)
        return [(m.offset(), m.value()) for m in messages]
    finally:
        call_within(consumer.close, CLOSE_TIMEOUT_S, "consumer close")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", [3, 8])
def test_replayed_idempotent_produce_is_appended_once(broker, version):
    """The same Produce bytes (producer id from InitProducerId, epoch 0,
    base sequence 0, three records) sent again on the same connection, on a
    new one, and after a kill -9 and restart: every answer is the first
    one's (no error, base offset 0) and the log holds the records once; the
    next sequence number still appends after them."""
    topic = unique("replay")
    create_topic(make_admin(broker), topic, 1)
    values = [f"replayed {i}".encode() for i in range(3)]
    with wire.Connection(broker) as conn:
        error, producer_id, epoch = init_producer_id_v1(conn)
        assert (error, epoch) == (wire.ERROR_NONE, 0) and producer_id >= 0
        correlation_id = 7
        request = produce_request(version, correlation_id, topic,
                                  idempotent_batch(producer_id, 0, 0, values, int(time.time() * 1000)))
        conn.send(request)
        assert read_produce_response(conn, version, correlation_id, topic) == (wire.ERROR_NONE, 0)
        conn.send(request)
        assert read_produce_response(conn, version, correlation_id, topic) == (wire.ERROR_NONE, 0), (
            "the same bytes again on the same connection")
    assert send_raw(broker, request, version, correlation_id, topic) == (wire.ERROR_NONE, 0), (
        "the same bytes on a new connection")
    assert read_partition(broker, topic, 3) == list(enumerate(values))

    broker.kill()
    broker.start()
    assert send_raw(broker, request, version, correlation_id, topic) == (wire.ERROR_NONE, 0), (
        "the same bytes after kill -9 and restart")
    assert read_partition(broker, topic, 3) == list(enumerate(values))
    consumer = make_consumer(broker)
    try:
        assert watermarks(consumer, topic, 0) == (0, 3)
    finally:
        call_within(consumer.close, CLOSE_TIMEOUT_S, "consumer close")

    more = [f"next {i}".encode() for i in range(2)]
    next_request = produce_request(version, 8, topic, idempotent_batch(producer_id, 0, 3, more, int(time.time() * 1000)))
    assert send_raw(broker, next_request, version, 8, topic) == (wire.ERROR_NONE, 3)
    assert read_partition(broker, topic, 5) == list(enumerate(values + more))


# --- 3. exactly-once copy A -> B -------------------------------------------------

# consume (read_committed) -> begin -> produce to the target -> process
# (sleep, inside the transaction) -> send_offsets_to_transaction -> commit.
# Retriable errors are retried; an abortable one aborts the transaction and
# rewinds the consumer to its committed offsets; a fatal one exits with 3.
# A copier given `stall_after` stops for good inside its transaction number
# stall_after + 1, once that transaction's records are written to the target.
COPIER = r"""
import json, signal, sys, time
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

consumer_config, producer_config = json.loads(sys.argv[1]), json.loads(sys.argv[2])
source, target, batch_size, pause_s = sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
stall_after = int(sys.argv[7])
CALL_TIMEOUT_S = 30
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

def say(**event):
    print(json.dumps(event), flush=True)

def recorder(kind):
    return lambda _consumer, partitions: say(event=kind, partitions=sorted(p.partition for p in partitions))

class Aborted(Exception):
    pass

def attempt(call, what):
    deadline = time.monotonic() + 60
    while True:
        try:
            return call()
        except KafkaException as exception:
            error = exception.args[0]
            say(event="txn_error", call=what, error=str(error), retriable=error.retriable(),
                abortable=error.txn_requires_abort(), fatal=error.fatal())
            if error.fatal():
                sys.exit(3)
            if error.txn_requires_abort():
                raise Aborted(what)
            if not error.retriable() or time.monotonic() > deadline:
                raise

def rewind():
    assignment = consumer.assignment()
    if not assignment:
        return
    committed = consumer.committed(assignment, timeout=CALL_TIMEOUT_S)
    for tp in committed:
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
    say(event="rewound", offsets=[[tp.partition, tp.offset] for tp in committed])

consumer_config["error_cb"] = lambda error: say(event="client_error", error=str(error))
producer_config["error_cb"] = lambda error: say(event="producer_error", error=str(error))
consumer = Consumer(consumer_config)
producer = Producer(producer_config)
attempt(lambda: producer.init_transactions(CALL_TIMEOUT_S), "init_transactions")
say(event="ready")
consumer.subscribe([source], on_assign=recorder("assign"), on_revoke=recorder("revoke"), on_lost=recorder("lost"))
transactions = 0
while not stopping:
    messages = consumer.consume(batch_size, 0.2)
    good = []
    for message in messages:
        if message.error() is None:
            good.append(message)
        else:
            say(event="error", error=str(message.error()))
    if not good:
        continue
    offsets = {}
    for message in good:
        offsets[message.partition()] = message.offset() + 1
    say(event="begin", records=[[m.partition(), m.offset()] for m in good])
    try:
        producer.begin_transaction()
        for message in good:
            producer.produce(target, value=message.value(), partition=message.partition())
        if transactions == stall_after:
            producer.flush(CALL_TIMEOUT_S)
            say(event="stalled", records=[[m.partition(), m.offset(), m.value().decode()] for m in good])
            time.sleep(3600)
        time.sleep(pause_s)
        say(event="commit", offsets=sorted(offsets.items()))
        attempt(lambda: producer.send_offsets_to_transaction(
            [TopicPartition(source, p, o) for p, o in offsets.items()],
            consumer.consumer_group_metadata(), CALL_TIMEOUT_S), "send_offsets_to_transaction")
        attempt(lambda: producer.commit_transaction(CALL_TIMEOUT_S), "commit_transaction")
    except Aborted as aborted:
        attempt(lambda: producer.abort_transaction(CALL_TIMEOUT_S), "abort_transaction")
        say(event="aborted", after=str(aborted),
            records=[[m.partition(), m.offset(), m.value().decode()] for m in good])
        rewind()
        continue
    transactions += 1
    say(event="committed", records=[[m.partition(), m.offset(), m.value().decode()] for m in good],
        offsets=sorted(offsets.items()))
consumer.close()
say(event="closed")
"""


def read_all(broker, topic: str, partitions: int, expected: int, isolation: str = "read_committed",
             grace_s: float = 2.0) -> list[bytes]:
    """The values a consumer at `isolation` gets from offset 0 of all
    `partitions`: at least `expected` (or a failure after 60 s), then
    whatever else arrives within `grace_s`."""
    reader = make_consumer(broker, **{"isolation.level": isolation})
    values = []
    try:
        reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 60
        quiet_until = None
        while quiet_until is None or time.monotonic() < quiet_until:
            assert time.monotonic() < deadline, f"read {len(values)} of {expected} records of {topic} in 60s"
            for message in reader.consume(1000, timeout=0.2):
                assert message.error() is None, f"consumer error: {message.error()!r}"
                values.append(message.value())
            if quiet_until is None and len(values) >= expected:
                quiet_until = time.monotonic() + grace_s
    finally:
        call_within(reader.close, CLOSE_TIMEOUT_S, "consumer close")
    return values


def copied(copier: ScriptProcess) -> int:
    return sum(len(event["records"]) for event in copier.of("committed"))


def copier_report(copiers) -> str:
    lines = []
    for copier in copiers:
        interesting = [e for e in list(copier.events) if e["event"] not in ("committed", "begin", "commit")]
        interesting += [e for e in list(copier.events)[-3:] if e["event"] in ("begin", "commit")]
        lines.append(f"{copier.name}: {copied(copier)} copied in {len(copier.of('committed'))} transactions, "
                     f"exit {copier.proc.poll()}, other events {interesting[-15:]}\n{copier.stderr_tail(1500)}")
    return "\n".join(lines)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kill_broker", [False, True], ids=["copier-killed", "copier-and-broker-killed"])
def test_transactional_copy_survives_kill_9_exactly_once(broker, processes, kill_broker):
    """A → B by consume/produce/send_offsets/commit transactions; the copier
    is killed with SIGKILL midway, inside a transaction whose records are
    already in B, and a new one with the same transactional.id and group
    carries on — in the
    second variant the broker is also killed with SIGKILL while the new
    copier runs. A read_committed reader of B gets each value of A exactly
    once, and the group's committed offsets are A's log end."""
    partitions, per_partition = 3, 200
    source, target = unique("eos-a"), unique("eos-b")
    admin = make_admin(broker)
    create_topic(admin, source, partitions)
    create_topic(admin, target, partitions)
    produced = produce_values(broker, source, partitions, per_partition, "A")
    total = len(produced)
    group, transactional_id = unique("eos-copy"), unique("eos-tid")
    # As in the group test above: no copier starts without a committed offset.
    commit_start_offsets(broker, group, source, partitions)
    # librdkafka 2.16 re-bootstraps when its only broker goes down and
    # decommissions the learned broker, which may stay cached as the group
    # coordinator; send_offsets_to_transaction then hangs past its own
    # timeout (confluentinc/librdkafka#5511, open). Without re-bootstrap the
    # client simply reconnects, as it would to Apache Kafka.
    no_rebootstrap = {"metadata.recovery.strategy": "none"}
    consumer_config = script_config(broker, **no_rebootstrap, **{
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
    })
    producer_config = script_config(broker, **no_rebootstrap, **{"transactional.id": transactional_id, "linger.ms": 5})

    def start(name, stall_after=-1):
        return processes(name, COPIER, consumer_config, producer_config, source, target, 10, 0.08, stall_after)

    # 15 transactions of up to 10 records each, then the open one is killed.
    first = start("copier-1", stall_after=15)
    copiers = [first]

    def progress(at_least, copier, what):
        def check():
            assert copier.proc.poll() is None, f"{copier.name} exited\n{copier_report(copiers)}"
            return copied(copier) >= at_least
        try:
            wait_until(check, 60, what, interval=0.02)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{copier_report(copiers)}") from None

    try:
        wait_until(lambda: first.of("stalled"), 60, "copier-1 inside its 16th transaction", interval=0.02)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{copier_report(copiers)}") from None
    first.kill()
    [stalled] = first.of("stalled")
    assert len(first.of("committed")) == 15, copier_report(copiers)

    second = start("copier-2")
    copiers.append(second)
    if kill_broker:
        progress(total // 4, second, f"copier-2 to copy {total // 4} records")
        broker.kill()
        broker.start()
        assert copied(first) + copied(second) < total, "the copy finished before the broker kill"

    log_end = {p: per_partition for p in range(partitions)}

    def copy_done():
        assert second.proc.poll() is None, f"copier-2 exited\n{copier_report(copiers)}"
        return committed_offsets(broker, group, source, partitions) == log_end

    try:
        wait_until(copy_done, 60, f"the group's offsets at A's log end {log_end}", interval=0.5)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{copier_report(copiers)}") from None
    assert second.stop() == 0, copier_report(copiers)

    got = Counter(value.decode() for value in read_all(broker, target, partitions, total))
    want = Counter(produced.values())
    missing, extra = want - got, got - want
    assert not (missing or extra), (
        f"B read_committed: {sum(missing.values())} values of A missing (first {sorted(missing)[:5]}), "
        f"{sum(extra.values())} extra or repeated (first {sorted(extra)[:5]})\n{copier_report(copiers)}"
    )
    assert committed_offsets(broker, group, source, partitions) == log_end
    # What the killed transaction wrote is in B, aborted: read_uncommitted
    # sees those values once more, and at most the values of transactions
    # that copier-2 aborted itself besides.
    killed_open = Counter(value for _, _, value in stalled["records"])
    aborted = Counter(value for event in second.of("aborted") for _, _, value in event["records"])
    everything = Counter(v.decode() for v in read_all(broker, target, partitions, total + len(stalled["records"]),
                                                      isolation="read_uncommitted"))
    assert not (killed_open - (everything - want)) and not ((everything - want) - killed_open - aborted), (
        f"read_uncommitted beyond A's values: {sorted(everything - want)}\n{copier_report(copiers)}")
