"""Decides, after a run, whether the records read back agree with the
history of writes (see `history`).

Violations, by kind:

* `lost`        — an acknowledged write is nowhere in the read-back.
* `changed`     — an acknowledged write is found at another partition or
  offset than acknowledged, or its acknowledged offset now holds another
  value.
* `duplicated`  — one value at two positions.
* `reordered`   — one client's writes to one partition appear (or were
  acknowledged) out of the order the client issued them.
* `offset-went-backwards` — reading a partition returned an offset not
  above the one before it, or a write that began after another write to the
  same partition had been acknowledged got an offset not above it.
* `failed-write-seen` — a write the client was told definitely failed.
* `never-written` — a value no write in the history carries.
* `read-taken-back` — a consumer saw a record during the run that the final
  read-back does not have at the same offset: the broker served data it
  later took back (above a high watermark, or a deposed leader's tail).

Writes with an unknown outcome (or still pending) may or may not appear;
they only count for duplicates and ordering.

An acknowledged write may carry no offset: librdkafka's idempotent
producer acknowledges a batch *implicitly*, without an offset, when a later
batch of the same producer succeeds while that one's answer was an error
that may have been spurious (the broker accepted the next sequence number,
so it holds this one). Such a write must be in its partition exactly once,
anywhere; it is left out of the checks that compare offsets.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .history import FAILED, OK, Read, Write

LOST = "lost"
CHANGED = "changed"
DUPLICATED = "duplicated"
REORDERED = "reordered"
OFFSET_WENT_BACKWARDS = "offset-went-backwards"
FAILED_WRITE_SEEN = "failed-write-seen"
NEVER_WRITTEN = "never-written"
READ_TAKEN_BACK = "read-taken-back"


@dataclass(frozen=True)
class Violation:
    kind: str
    description: str


@dataclass
class CheckResult:
    """What the checker found: counts of writes by outcome and of records
    read, and every violation."""

    counts: dict[str, int]
    violations: list[Violation] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.violations

    def by_kind(self) -> dict[str, list[Violation]]:
        kinds: dict[str, list[Violation]] = defaultdict(list)
        for violation in self.violations:
            kinds[violation.kind].append(violation)
        return dict(kinds)

    def report(self, examples_per_kind: int = 5) -> str:
        """A readable summary: the counts, then each kind with its first examples."""
        counts = ", ".join(f"{name} {number}" for name, number in self.counts.items())
        lines = [f"history: {counts}"]
        if self.valid:
            lines.append("no violations")
        for kind, violations in self.by_kind().items():
            lines.append(f"{kind}: {len(violations)}")
            lines += [f"  - {violation.description}" for violation in violations[:examples_per_kind]]
            if len(violations) > examples_per_kind:
                lines.append(f"  ... and {len(violations) - examples_per_kind} more")
        return "\n".join(lines)


def check(writes: list[Write], reads: list[Read], observed: list[Read] = ()) -> CheckResult:
    """Check `reads` (the final read-back: each partition's records in the
    order they were read) against the history `writes`, and against what
    consumers `observed` while the faults were happening."""
    positions_by_value = _positions_by_value(reads)
    write_by_value = {write.value: write for write in writes}
    counts = _counts(writes, reads, positions_by_value)
    counts["observed during the run"] = len(observed)
    violations = (
        _offsets_going_backwards_in_reads(reads)
        + _values_never_written(positions_by_value, write_by_value)
        + _duplicates(positions_by_value)
        + _lost_or_changed(writes, reads, positions_by_value)
        + _failed_writes_seen(writes, positions_by_value)
        + _acknowledged_out_of_order(writes)
        + _read_out_of_order(reads, write_by_value)
        + _offsets_going_backwards_in_real_time(writes)
        + _reads_taken_back(observed, reads)
    )
    return CheckResult(counts, violations)


def assert_valid(result: CheckResult, history_path: Path | None = None, examples_per_kind: int = 5) -> None:
    """Fail with the checker's report when it found any violation."""
    if not result.valid:
        saved = f"\n(history saved at {history_path})" if history_path else ""
        raise AssertionError(f"the history is not valid\n{result.report(examples_per_kind)}{saved}")


def _positions_by_value(reads: list[Read]) -> dict[str, set[tuple]]:
    positions = defaultdict(set)
    for read in reads:
        positions[read.value].add((read.partition, read.offset))
    return positions


def _counts(writes, reads, positions_by_value) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0, "unknown": 0, "unknown seen": 0, "records read": len(reads)}
    for write in writes:
        outcome = write.outcome if write.outcome in (OK, FAILED) else "unknown"
        counts[outcome] += 1
        if outcome == OK and write.offset is None:
            counts["ok without offset"] = counts.get("ok without offset", 0) + 1
        if outcome == "unknown" and write.value in positions_by_value:
            counts["unknown seen"] += 1
    return counts


def _describe(write: Write) -> str:
    acked = f" acknowledged at {write.partition}/{write.offset}" if write.outcome == OK else ""
    return f"{write.value!r} ({write.process} #{write.index}, {write.outcome}{acked})"


def _offsets_going_backwards_in_reads(reads: list[Read]) -> list[Violation]:
    violations = []
    last_offset: dict = {}
    for read in reads:
        previous = last_offset.get(read.partition)
        if previous is not None and read.offset <= previous:
            violations.append(Violation(
                OFFSET_WENT_BACKWARDS,
                f"reading partition {read.partition}: offset {read.offset} came after offset {previous}",
            ))
        last_offset[read.partition] = read.offset
    return violations


def _values_never_written(positions_by_value, write_by_value) -> list[Violation]:
    return [
        Violation(NEVER_WRITTEN, f"{value!r} read at {sorted(positions)} but never written")
        for value, positions in positions_by_value.items()
        if value not in write_by_value
    ]


def _duplicates(positions_by_value) -> list[Violation]:
    return [
        Violation(DUPLICATED, f"{value!r} is at {len(positions)} positions: {sorted(positions)}")
        for value, positions in positions_by_value.items()
        if len(positions) > 1
    ]


def _lost_or_changed(writes, reads, positions_by_value) -> list[Violation]:
    value_at = {(read.partition, read.offset): read.value for read in reads}
    violations = []
    for write in writes:
        if write.outcome != OK:
            continue
        acked = (write.partition, write.offset)
        found = positions_by_value.get(write.value, set())
        if write.offset is None:
            if not found:
                violations.append(Violation(LOST, f"{_describe(write)} (without an offset) is not in the log"))
            elif all(partition != write.partition for partition, _ in found):
                violations.append(Violation(CHANGED, f"{_describe(write)} is found at {sorted(found)} instead"))
            continue
        if not found and acked in value_at:
            violations.append(Violation(CHANGED, f"{_describe(write)}: that offset now holds {value_at[acked]!r}"))
        elif not found:
            violations.append(Violation(LOST, f"{_describe(write)} is not in the log"))
        elif acked not in found:
            violations.append(Violation(CHANGED, f"{_describe(write)} is found at {sorted(found)} instead"))
    return violations


def _failed_writes_seen(writes, positions_by_value) -> list[Violation]:
    return [
        Violation(FAILED_WRITE_SEEN, f"{_describe(write)} (error {write.error}) is at {sorted(positions_by_value[write.value])}")
        for write in writes
        if write.outcome == FAILED and write.value in positions_by_value
    ]


def _acknowledged_out_of_order(writes) -> list[Violation]:
    """One client's acknowledged offsets in one partition must rise with the
    order it issued the writes in."""
    violations = []
    previous: dict[tuple, Write] = {}
    for write in sorted(writes, key=lambda w: (w.process, w.index)):
        if write.outcome != OK or write.offset is None:
            continue
        key = (write.process, write.partition)
        before = previous.get(key)
        if before is not None and write.offset <= before.offset:
            violations.append(Violation(
                REORDERED, f"{_describe(write)} was issued after {_describe(before)} but acknowledged before it",
            ))
        previous[key] = write
    return violations


def _read_out_of_order(reads, write_by_value) -> list[Violation]:
    """In each partition, read in offset order, one client's writes must
    appear in the order it issued them."""
    violations = []
    previous: dict[tuple, tuple[Read, Write]] = {}
    for read in sorted(reads, key=lambda r: (str(r.partition), r.offset)):
        write = write_by_value.get(read.value)
        if write is None:
            continue
        key = (write.process, read.partition)
        before = previous.get(key)
        if before is not None and write.index < before[1].index:
            violations.append(Violation(
                REORDERED,
                f"partition {read.partition}: {write.process} #{write.index} {write.value!r} at offset "
                f"{read.offset} comes after its #{before[1].index} at offset {before[0].offset}",
            ))
        previous[key] = (read, write)
    return violations


def _offsets_going_backwards_in_real_time(writes) -> list[Violation]:
    """A write invoked after another write to the same partition was
    acknowledged must get a higher offset, whichever client wrote them."""
    violations = []
    acknowledged = defaultdict(list)
    for write in writes:
        if write.outcome == OK and write.offset is not None:
            acknowledged[write.partition].append(write)
    for partition_writes in acknowledged.values():
        by_completion = sorted(partition_writes, key=lambda w: w.completed_s)
        highest: Write | None = None
        done = 0
        for write in sorted(partition_writes, key=lambda w: w.invoked_s):
            while done < len(by_completion) and by_completion[done].completed_s < write.invoked_s:
                if highest is None or by_completion[done].offset > highest.offset:
                    highest = by_completion[done]
                done += 1
            if highest is not None and write.offset <= highest.offset:
                violations.append(Violation(
                    OFFSET_WENT_BACKWARDS,
                    f"{_describe(write)} began after {_describe(highest)} was acknowledged, at a lower offset",
                ))
    return violations


def _reads_taken_back(observed: list[Read], reads: list[Read]) -> list[Violation]:
    value_at = {(read.partition, read.offset): read.value for read in reads}
    return [
        Violation(
            READ_TAKEN_BACK,
            f"{read.value!r} was read at {read.partition}/{read.offset} during the run; "
            f"that offset now holds {value_at.get((read.partition, read.offset), 'nothing')!r}",
        )
        for read in observed
        if value_at.get((read.partition, read.offset)) != read.value
    ]
