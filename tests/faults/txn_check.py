"""Decides, after a run, whether what read_committed consumers found agrees
with the transactions a transactional producer recorded (see
`txn_producer`).

Each transaction wrote values to several partitions and ended with an
outcome the client got:

* `committed` — commit_transaction() returned: every value must be in the
  log exactly once, in the partition it was written to.
* `aborted`   — the transaction can never commit: abort_transaction()
  returned, or commit_transaction() was never called. None of its values
  may be seen by a read_committed consumer.
* `unknown`   — commit_transaction() was called and failed without saying
  whether it took effect (or the run ended before it answered). The
  transaction may be visible or not, but never in part.

Violations, by kind (the shared ones as in `checker`):

* `txn-lost`          — a committed transaction of which no value is seen.
* `txn-partial`       — a committed or unknown transaction of which some
  values are seen and others not.
* `aborted-txn-seen`  — a value of an aborted transaction was read, in the
  final read-back or by a consumer during the run.
* `duplicated`        — one value at two positions.
* `changed`           — a value found in another partition than written.
* `reordered`         — in one partition, committed values appear out of
  the order the producer wrote them in (transaction after transaction,
  record after record).
* `never-written`     — a value no transaction carries.
* `read-taken-back`   — a consumer read a record during the run that the
  final read-back does not have at that offset.

The values a read_committed consumer sees during the run are only checked
for aborted data and records taken back: a transaction's markers reach its
partitions one after the other, so a reader may well see part of a
committed transaction before the rest becomes visible.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .checker import CHANGED, DUPLICATED, NEVER_WRITTEN, REORDERED, CheckResult, Violation, _reads_taken_back
from .history import Read

COMMITTED = "committed"
ABORTED = "aborted"
UNKNOWN = "unknown"
OUTCOMES = (COMMITTED, ABORTED, UNKNOWN)

TXN_LOST = "txn-lost"
TXN_PARTIAL = "txn-partial"
ABORTED_TXN_SEEN = "aborted-txn-seen"


@dataclass
class Transaction:
    """One transaction: its number in the producer's sequence (the order
    it was run in), the values it wrote to each partition in produce
    order, and the outcome the client got (`unknown` while none)."""

    number: int
    values: dict[int, list[str]]
    outcome: str = UNKNOWN
    error: str | None = None
    producer: int | None = None

    def describe(self) -> str:
        error = f", error {self.error}" if self.error else ""
        return f"transaction {self.number} ({self.outcome}{error}, {self.value_count()} values)"

    def value_count(self) -> int:
        return sum(len(values) for values in self.values.values())


def transactions_from_events(events: list[dict]) -> list[Transaction]:
    """The transactions in `txn_producer` events, in the order begun; one
    begun and never ended (the producer was killed) is `unknown`."""
    transactions: dict[int, Transaction] = {}
    for event in events:
        if event["event"] == "begin":
            values = {int(partition): list(values) for partition, values in event["values"].items()}
            transactions[event["txn"]] = Transaction(event["txn"], values, producer=event.get("producer"))
        elif event["event"] == "end":
            transaction = transactions[event["txn"]]
            if event["outcome"] not in OUTCOMES:
                raise ValueError(f"unknown outcome in {event}")
            transaction.outcome, transaction.error = event["outcome"], event.get("error")
    return sorted(transactions.values(), key=lambda t: t.number)


@dataclass(frozen=True)
class Written:
    """Where a value came from: its transaction, the partition it was
    written to, and its place among that transaction's values there."""

    transaction: Transaction
    partition: int
    index: int

    @property
    def order(self) -> tuple[int, int]:
        return self.transaction.number, self.index


def check_transactions(
    transactions: list[Transaction], reads: list[Read], observed: list[Read] = ()
) -> CheckResult:
    """Check `reads` (the final read_committed read-back of every
    partition) and what read_committed consumers `observed` during the run
    against the recorded `transactions`."""
    written = _written_by_value(transactions)
    positions = defaultdict(set)
    for read in reads:
        positions[read.value].add((read.partition, read.offset))
    violations = (
        _never_written(positions, written)
        + _duplicates(positions)
        + _in_another_partition(positions, written)
        + _lost_partial_or_aborted(transactions, positions)
        + _aborted_seen_during_the_run(observed, written)
        + _out_of_order(reads, written)
        + _reads_taken_back(observed, reads)
    )
    return CheckResult(_counts(transactions, reads, observed, positions), violations)


def _written_by_value(transactions: list[Transaction]) -> dict[str, Written]:
    written = {}
    for transaction in transactions:
        for partition, values in transaction.values.items():
            for index, value in enumerate(values):
                if value in written:
                    raise ValueError(f"{value!r} is written by two transactions; values must be unique")
                written[value] = Written(transaction, partition, index)
    return written


def _counts(transactions, reads, observed, positions) -> dict[str, int]:
    counts = {outcome: 0 for outcome in OUTCOMES}
    counts["unknown seen"] = 0
    for transaction in transactions:
        counts[transaction.outcome] += 1
        if transaction.outcome == UNKNOWN and _seen_values(transaction, positions):
            counts["unknown seen"] += 1
    counts["values written"] = sum(t.value_count() for t in transactions)
    counts["records read"] = len(reads)
    counts["observed during the run"] = len(observed)
    return counts


def _seen_values(transaction: Transaction, positions) -> list[str]:
    return [value for values in transaction.values.values() for value in values if value in positions]


def _never_written(positions, written) -> list[Violation]:
    return [
        Violation(NEVER_WRITTEN, f"{value!r} read at {sorted(where)} but no transaction wrote it")
        for value, where in positions.items()
        if value not in written
    ]


def _duplicates(positions) -> list[Violation]:
    return [
        Violation(DUPLICATED, f"{value!r} is at {len(where)} positions: {sorted(where)}")
        for value, where in positions.items()
        if len(where) > 1
    ]


def _in_another_partition(positions, written) -> list[Violation]:
    violations = []
    for value, where in positions.items():
        origin = written.get(value)
        if origin is not None and any(partition != origin.partition for partition, _ in where):
            violations.append(Violation(
                CHANGED, f"{value!r} of {origin.transaction.describe()}, written to partition {origin.partition}, "
                         f"is at {sorted(where)}",
            ))
    return violations


def _lost_partial_or_aborted(transactions: list[Transaction], positions) -> list[Violation]:
    violations = []
    for transaction in transactions:
        seen = _seen_values(transaction, positions)
        if transaction.outcome == ABORTED and seen:
            violations.append(Violation(
                ABORTED_TXN_SEEN, f"{transaction.describe()}: {len(seen)} values are visible, first {seen[:3]}",
            ))
        elif transaction.outcome == COMMITTED and not seen:
            violations.append(Violation(TXN_LOST, f"{transaction.describe()}: none of its values is in the log"))
        elif transaction.outcome in (COMMITTED, UNKNOWN) and seen and len(seen) < transaction.value_count():
            missing = [v for values in transaction.values.values() for v in values if v not in positions]
            violations.append(Violation(
                TXN_PARTIAL, f"{transaction.describe()}: {len(seen)} values seen, {len(missing)} missing, "
                             f"first missing {missing[:3]}",
            ))
    return violations


def _aborted_seen_during_the_run(observed: list[Read], written) -> list[Violation]:
    return [
        Violation(
            ABORTED_TXN_SEEN,
            f"{read.value!r} of {written[read.value].transaction.describe()} was read at "
            f"{read.partition}/{read.offset} during the run",
        )
        for read in observed
        if read.value in written and written[read.value].transaction.outcome == ABORTED
    ]


def _out_of_order(reads: list[Read], written) -> list[Violation]:
    """In each partition, read in offset order, the values must come in
    the order they were written: by transaction, then within it."""
    violations = []
    previous: dict = {}
    for read in sorted(reads, key=lambda r: (str(r.partition), r.offset)):
        origin = written.get(read.value)
        if origin is None or origin.partition != read.partition:
            continue  # never written, or in another partition: reported as such
        before = previous.get(read.partition)
        if before is not None and origin.order <= before[1].order:
            violations.append(Violation(
                REORDERED,
                f"partition {read.partition}: {read.value!r} (transaction {origin.transaction.number} "
                f"#{origin.index}) at offset {read.offset} comes after {before[0].value!r} (transaction "
                f"{before[1].transaction.number} #{before[1].index}) at offset {before[0].offset}",
            ))
        previous[read.partition] = (read, origin)
    return violations
