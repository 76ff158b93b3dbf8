"""Runs `txn_producer` as a child process: start it, wait until it is
ready and until it has ended transactions with some outcome, stop it
after its current transaction (SIGTERM), and read what it recorded."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException

from .group_member import read_events
from .txn_check import Transaction, transactions_from_events
from .txn_producer import INIT_FAILED_EXIT

TESTS_DIR = Path(__file__).resolve().parent.parent
# Enough for the current transaction's calls and their retries to end.
STOP_TIMEOUT_S = 120.0


class TransactionalProducerProcess:
    """One `txn_producer` process writing to `topic` as `transactional_id`,
    its events in `events_path` and its output in `log_path`."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, transactional_id: str,
                 events_path: Path, log_path: Path):
        self.argv = [sys.executable, "-m", "faults.txn_producer", bootstrap, topic, str(partitions),
                     transactional_id, str(events_path)]
        self.events_path, self.log_path = events_path, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "TransactionalProducerProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=TESTS_DIR, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self

    def wait_until_ready(self, timeout_s: float) -> None:
        """Block until the first producer initialised transactions. When it
        could not, raise its error as the client did: a KafkaException."""
        deadline = time.monotonic() + timeout_s
        while not any(event["event"] == "ready" for event in self.events()):
            if self.process.poll() == INIT_FAILED_EXIT:
                failures = [event for event in self.events() if event["event"] == "init-failed"]
                error = failures[-1]["error"]
                raise KafkaException(KafkaError(error["code"], error["text"], fatal=error["fatal"],
                                                retriable=error["retriable"]))
            self._check_running()
            if time.monotonic() > deadline:
                raise AssertionError(f"the transactional producer was not ready within {timeout_s} s{self._log_tail()}")
            time.sleep(0.1)

    def outcomes(self) -> Counter:
        """How many transactions ended with each outcome so far."""
        return Counter(event["outcome"] for event in self.events() if event["event"] == "end")

    def event_counts(self) -> Counter:
        """How many events of each kind (retries, replaced producers, ...) so far."""
        return Counter(event["event"] for event in self.events())

    def mark(self, outcome: str) -> tuple[float, int]:
        """Now, and how many transactions ended with `outcome` so far."""
        return time.monotonic(), self.outcomes()[outcome]

    def wait_for_outcomes(self, outcome: str, count: int, timeout_s: float, what: str, since=None) -> float:
        """Block until `count` more transactions ended with `outcome` than
        at `since` (a `mark()`; now by default); returns how long that took
        since then."""
        start, before = since or self.mark(outcome)
        while self.outcomes()[outcome] < before + count:
            self._check_running()
            if time.monotonic() - start > timeout_s:
                raise AssertionError(
                    f"{what}: fewer than {count} transactions {outcome} within {timeout_s} s; outcomes so far "
                    f"{dict(self.outcomes())}, producers replaced {self.replacements()}{self._log_tail()}"
                )
            time.sleep(0.1)
        return time.monotonic() - start

    def replacements(self) -> list[dict]:
        """The errors for which a producer was replaced by a fresh one."""
        return [event["error"] for event in self.events() if event["event"] == "replaced"]

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM: the process ends its current transaction and exits."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the transactional producer did not stop within {timeout_s} s{self._log_tail()}")
        if code != 0:
            raise AssertionError(f"the transactional producer exited with {code}{self._log_tail()}")

    def kill(self) -> None:
        """kill -9, if still running (teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def events(self) -> list[dict]:
        return read_events(self.events_path)

    def transactions(self) -> list[Transaction]:
        return transactions_from_events(self.events())

    def _check_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the transactional producer exited with {self.process.returncode}{self._log_tail()}")

    def _log_tail(self, limit: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"\nits output ({self.log_path}):\n{text[-limit:]}" if text else ""
