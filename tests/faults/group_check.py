"""Checks that a consumer group resumes exactly where it committed.

Input: the events of successive `group_consumer` sessions (in the order
written) and the records a read-back found (see `kafka_client.read_back`).
Per partition, each time a member starts reading it (a new session, or a
new assignment after a rebalance), the first offset it reads must be the
committed position: the first record at or after the last committed offset.
Reading earlier is a `group-rewind` (committed records delivered again);
reading later, or skipping a record inside a session, is a `group-gap`
(records never delivered to the group). A commit whose outcome the member
never learnt (killed mid-commit, or the commit call failed) may or may not
have taken effect, so both positions are accepted. At the end every record
in the log must have been consumed by some session.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

from .checker import CheckResult, Violation
from .history import Read

GROUP_GAP = "group-gap"
GROUP_REWIND = "group-rewind"


class PartitionProgress:
    """One partition's committed positions and reading position, walked in event order."""

    def __init__(self, partition: int, log_offsets: list[int]):
        self.partition = partition
        self.log_offsets = log_offsets
        self.committed = 0
        self.unconfirmed_commits: set[int] = set()
        self.expected_next: int | None = None
        self.consumed: set[int] = set()

    def start_reading(self) -> None:
        self.expected_next = None

    def commit_invoked(self, offset: int) -> None:
        self.unconfirmed_commits.add(offset)

    def commit_confirmed(self, offset: int) -> None:
        self.committed = offset
        self.unconfirmed_commits = set()

    def consume(self, session: int, offset: int) -> list[Violation]:
        """Note that `session` read `offset`; the violations that reading it there shows."""
        self.consumed.add(offset)
        if self.expected_next is None:
            allowed = sorted({self._record_at_or_after(c) for c in {self.committed} | self.unconfirmed_commits})
            violation = self._compare(session, offset, allowed, f"resumed at offset {offset}, committed position {allowed}")
        else:
            violation = self._compare(session, offset, [self.expected_next], f"read offset {offset} after {self.expected_next - 1}")
        self.expected_next = self._record_at_or_after(offset + 1)
        return violation

    def never_consumed(self) -> list[int]:
        return [offset for offset in self.log_offsets if offset not in self.consumed]

    def _compare(self, session: int, offset: int, allowed: list[int], what: str) -> list[Violation]:
        if offset in allowed:
            return []
        kind = GROUP_GAP if offset > max(allowed) else GROUP_REWIND
        return [Violation(kind, f"session {session}, partition {self.partition}: {what}")]

    def _record_at_or_after(self, offset: int) -> int:
        """The offset of the first record at or after `offset` (or `offset`
        itself past the end), so that offsets without a record (transaction
        markers) are not counted as gaps."""
        index = bisect.bisect_left(self.log_offsets, offset)
        return self.log_offsets[index] if index < len(self.log_offsets) else offset


def check_group(events: list[dict], reads: list[Read]) -> CheckResult:
    """Check the `group_consumer` events of all sessions, in the order
    written, against the records `reads` found in the log."""
    log_offsets = defaultdict(list)
    for read in reads:
        log_offsets[read.partition].append(read.offset)
    progress = {partition: PartitionProgress(partition, sorted(offsets)) for partition, offsets in log_offsets.items()}

    def of(partition) -> PartitionProgress:
        partition = int(partition)
        if partition not in progress:
            progress[partition] = PartitionProgress(partition, [])
        return progress[partition]

    violations: list[Violation] = []
    sessions = set()
    for event in events:
        kind = event["event"]
        if event["session"] not in sessions:
            sessions.add(event["session"])
            for partition in progress.values():
                partition.start_reading()
        if kind == "assigned":
            for partition in event["partitions"]:
                of(partition).start_reading()
        elif kind == "consumed":
            violations += of(event["partition"]).consume(event["session"], event["offset"])
        elif kind in ("commit", "commit-failed"):
            for partition, offset in event["offsets"].items():
                of(partition).commit_invoked(offset)
        elif kind == "committed":
            for partition, offset in event["offsets"].items():
                of(partition).commit_confirmed(offset)
    for partition in progress.values():
        missing = partition.never_consumed()
        if missing:
            violations.append(Violation(
                GROUP_GAP, f"partition {partition.partition}: {len(missing)} records never consumed, first {missing[:5]}"
            ))
    counts = {
        "sessions": len(sessions),
        "records consumed": sum(1 for event in events if event["event"] == "consumed"),
        "commits": sum(1 for event in events if event["event"] == "committed"),
        "records in the log": len(reads),
    }
    return CheckResult(counts, violations)
