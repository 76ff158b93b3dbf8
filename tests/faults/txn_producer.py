"""A transactional producer as a process of its own, run through faults:
`python -m faults.txn_producer BOOTSTRAP TOPIC PARTITIONS TRANSACTIONAL_ID EVENTS_FILE`.

It loops until SIGTERM: begin a transaction, produce RECORDS_PER_PARTITION
unique values to every partition, then commit it — or abort it, every
ABORT_EVERY-th. SIGTERM ends the loop after the current transaction, so
no transaction is left open. Every step is appended to EVENTS_FILE as one
JSON line, written before the next step starts, so a kill loses at most
the line of the step it interrupted:

    {"event": "ready", "producer": P}                  (init_transactions done)
    {"event": "init-failed", "producer": P, "error": {...}}
    {"event": "begin", "txn": N, "producer": P, "intent": "commit", "values": {"0": [...], ...}}
    {"event": "retry", "txn": N, "call": "commit", "error": {...}}
    {"event": "end", "txn": N, "outcome": "committed" | "aborted" | "unknown", "error": "..."}
    {"event": "replaced", "producer": P, "error": {...}}  (a fatal error: a fresh producer follows)

Outcomes, as the client knows them (see `txn_check`): `committed` when
commit_transaction() returned; `aborted` when abort_transaction() returned,
or when commit_transaction() was never called (nothing can commit such a
transaction); `unknown` when commit_transaction() was called and neither it
nor an abort after it succeeded. As librdkafka documents: a retriable
error is retried, an abortable one leads to abort_transaction(), and
anything else is fatal for the producer, which is replaced by a fresh one
with the same transactional.id; its init_transactions() completes or
aborts whatever the old one left.

When the first producer's init_transactions() fails with an error that is
not retriable, or keeps failing for INIT_DEADLINE_S, the process exits
with INIT_FAILED_EXIT: the parent (`txn_process`) raises that error as the
client's KafkaException.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from confluent_kafka import KafkaError, KafkaException, Producer

RECORDS_PER_PARTITION = 3
# Every ABORT_EVERY-th transaction (the 4th, 8th, ...) is aborted on purpose.
ABORT_EVERY = 4
# Deadline of each transactional call; a call that runs out is retried or
# counts as failed, as its error says.
CALL_TIMEOUT_S = 15.0
CALL_ATTEMPTS_MAX = 3
# How long a fresh producer keeps trying init_transactions() (the
# coordinator may be moving) before the process gives up.
INIT_DEADLINE_S = 60.0
# An abandoned transaction (the process killed) is aborted by the
# coordinator after this long, so that it does not hold back the last
# stable offset for Kafka's default of a minute.
TRANSACTION_TIMEOUT_MS = 10_000
INIT_FAILED_EXIT = 3

COMMITTED = "committed"
ABORTED = "aborted"
UNKNOWN = "unknown"


class EventLog:
    def __init__(self, path: str):
        self.file = open(path, "a", buffering=1)

    def write(self, event: str, **fields) -> None:
        self.file.write(json.dumps({"event": event, "at_s": time.monotonic(), **fields}) + "\n")


def kafka_error(exception: Exception) -> KafkaError:
    """The KafkaError a client call raised (a BufferError or a bare
    KafkaException becomes a generic one)."""
    if isinstance(exception, KafkaException) and exception.args and isinstance(exception.args[0], KafkaError):
        return exception.args[0]
    return KafkaError(KafkaError._FAIL, repr(exception))


def describe(error: KafkaError) -> dict:
    return {"code": error.code(), "name": error.name(), "text": error.str(), "fatal": error.fatal(),
            "retriable": error.retriable(), "abortable": error.txn_requires_abort()}


def summary(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"


class InitFailed(Exception):
    """The first producer could not initialise transactions."""


class TransactionalLoop:
    """The producer (`producer_number` counts the fresh ones) and the
    transactions it runs, one after the other."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, transactional_id: str, events: EventLog):
        self.topic, self.partitions, self.events = topic, partitions, events
        self.config = {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "transactional.id": transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "linger.ms": 5,
            "reconnect.backoff.max.ms": 500,
            "socket.connection.setup.timeout.ms": 3000,
        }
        self.producer_number = 0
        self.producer: Producer | None = None
        self.stopping = False

    def run(self) -> None:
        self.producer = self.fresh_producer()
        number = 0
        while not self.stopping:
            try:
                self.producer.begin_transaction()
            except KafkaException as exception:
                self.replace(kafka_error(exception))
                continue
            self.run_transaction(number)
            number += 1

    def fresh_producer(self) -> Producer:
        """A new producer after init_transactions(), retried while the
        coordinator is unavailable."""
        self.producer_number += 1
        producer = Producer(self.config)
        deadline = time.monotonic() + INIT_DEADLINE_S
        while True:
            try:
                producer.init_transactions(CALL_TIMEOUT_S)
            except KafkaException as exception:
                error = kafka_error(exception)
                self.events.write("init-failed", producer=self.producer_number, error=describe(error))
                first = self.producer_number == 1
                if (first and not error.retriable()) or time.monotonic() > deadline:
                    raise InitFailed(summary(error)) from exception
                if error.fatal():
                    self.producer_number += 1
                    producer = Producer(self.config)
                time.sleep(0.5)
            else:
                self.events.write("ready", producer=self.producer_number)
                return producer

    def replace(self, error: KafkaError) -> None:
        """Drop a producer that went fatal (fenced, or lost track of its
        transaction) for a fresh one with the same transactional.id."""
        self.events.write("replaced", producer=self.producer_number, error=describe(error))
        try:
            self.producer.purge()
        except KafkaException:
            pass
        self.producer = self.fresh_producer()

    def run_transaction(self, number: int) -> None:
        intent = "abort" if number % ABORT_EVERY == ABORT_EVERY - 1 else "commit"
        values = {
            partition: [f"t{number}-p{partition}-r{record}" for record in range(RECORDS_PER_PARTITION)]
            for partition in range(self.partitions)
        }
        self.events.write("begin", txn=number, producer=self.producer_number, intent=intent,
                          values={str(partition): written for partition, written in values.items()})
        try:
            for record in range(RECORDS_PER_PARTITION):
                for partition in range(self.partitions):
                    self.producer.produce(self.topic, value=values[partition][record].encode(), partition=partition)
                    self.producer.poll(0)
        except (KafkaException, BufferError) as exception:
            self.abort(number, committing=False, cause=kafka_error(exception))
            return
        if intent == "abort":
            self.abort(number, committing=False)
        else:
            self.commit(number)

    def commit(self, number: int) -> None:
        for attempt in range(1, CALL_ATTEMPTS_MAX + 1):
            try:
                self.producer.commit_transaction(CALL_TIMEOUT_S)
            except KafkaException as exception:
                error = kafka_error(exception)
                if error.txn_requires_abort():
                    self.abort(number, committing=True, cause=error)
                    return
                if error.retriable() and not error.fatal() and attempt < CALL_ATTEMPTS_MAX:
                    self.events.write("retry", txn=number, call="commit", error=describe(error))
                    continue
                self.end(number, UNKNOWN, error)
                self.replace(error)
                return
            self.end(number, COMMITTED)
            return

    def abort(self, number: int, committing: bool, cause: KafkaError | None = None) -> None:
        """Abort transaction `number`. Its outcome is `aborted` once the
        abort returned — and also when it did not, if no commit was ever
        asked for."""
        for attempt in range(1, CALL_ATTEMPTS_MAX + 1):
            try:
                self.producer.abort_transaction(CALL_TIMEOUT_S)
            except KafkaException as exception:
                error = kafka_error(exception)
                if error.retriable() and not error.fatal() and attempt < CALL_ATTEMPTS_MAX:
                    self.events.write("retry", txn=number, call="abort", error=describe(error))
                    continue
                self.end(number, UNKNOWN if committing else ABORTED, cause or error, abort_error=error)
                self.replace(error)
                return
            self.end(number, ABORTED, cause)
            return

    def end(self, number: int, outcome: str, error: KafkaError | None = None,
            abort_error: KafkaError | None = None) -> None:
        fields = {"error": summary(error)} if error is not None else {}
        if abort_error is not None and abort_error is not error:
            fields["abort_error"] = summary(abort_error)
        self.events.write("end", txn=number, outcome=outcome, **fields)


def main(argv: list[str]) -> int:
    bootstrap, topic, partitions, transactional_id, events_path = argv[:5]
    loop = TransactionalLoop(bootstrap, topic, int(partitions), transactional_id, EventLog(events_path))

    def stop(_signal, _frame) -> None:
        loop.stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        loop.run()
    except InitFailed as failure:
        print(f"init_transactions failed: {failure}", file=sys.stderr)
        return INIT_FAILED_EXIT
    loop.producer.flush(CALL_TIMEOUT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
