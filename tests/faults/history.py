"""A history of write operations and their outcomes, in Jepsen's terms.

A write is *invoked*, then *completes* with one of three outcomes:

* `ok`      — the broker acknowledged it (a Kafka delivery report with a
  partition and offset; an AMQP confirm); it must never be lost.
* `failed`  — the broker definitely did not take it (rejected, or never
  sent); it must never be seen.
* `unknown` — the client cannot tell (timeout, connection lost, broker
  gone); it may or may not be seen, but at most once.

A write still pending at the end of a run counts as unknown. The history
knows nothing about Kafka: `partition` is where the write was aimed (a
partition number, or a queue name) and `offset` the position the
acknowledgement named, so the same checker serves topics and queues.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OK = "ok"
FAILED = "failed"
UNKNOWN = "unknown"


@dataclass
class Write:
    """One write: `process` is the client that issued it and `index` its
    place in that client's own sequence, which is the order the client
    expects its writes to appear in within one partition."""

    process: str
    index: int
    value: str
    partition: int | str
    invoked_s: float
    completed_s: float | None = None
    outcome: str | None = None
    offset: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Read:
    """One record found when reading a partition (or queue) back."""

    partition: int | str
    offset: int
    value: str


class History:
    """Writes in invocation order; safe to fill from client callbacks."""

    def __init__(self):
        self._lock = threading.Lock()
        self.writes: list[Write] = []
        self._next_index: dict[str, int] = {}

    def invoke(self, process: str, partition: int | str, value: str) -> Write:
        with self._lock:
            index = self._next_index.get(process, 0)
            self._next_index[process] = index + 1
            write = Write(process, index, value, partition, time.monotonic())
            self.writes.append(write)
            return write

    def complete(self, write: Write, outcome: str, offset: int | None = None, error: str | None = None) -> None:
        if outcome not in (OK, FAILED, UNKNOWN):
            raise ValueError(f"unknown outcome {outcome!r}")
        with self._lock:
            if write.outcome is not None:
                raise ValueError(f"write {write.value!r} completed twice ({write.outcome}, then {outcome})")
            write.completed_s = time.monotonic()
            write.outcome, write.offset, write.error = outcome, offset, error

    def counts(self) -> dict[str, int]:
        """Writes per outcome; pending ones under `pending`."""
        counts = {OK: 0, FAILED: 0, UNKNOWN: 0, "pending": 0}
        with self._lock:
            for write in self.writes:
                counts[write.outcome or "pending"] += 1
        return counts

    def save(self, path: Path) -> None:
        """One JSON object per write, for reading after a failed run."""
        with self._lock, open(path, "w") as file:
            for write in self.writes:
                file.write(json.dumps(asdict(write)) + "\n")
