"""Runs `group_consumer` sessions as child processes, one at a time, all
appending to one events file: start one, wait for its commits, kill -9 it,
start the next, and finally drain the topic."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent


def read_events(path: Path) -> list[dict]:
    """The events written so far; a line cut short by a kill is dropped."""
    events = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


class GroupMember:
    """Successive sessions of one consumer-group member (`session` counts them)."""

    def __init__(self, bootstrap: str, topic: str, group: str, events_path: Path):
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.events_path = events_path
        self.session = 0
        self.process: subprocess.Popen | None = None

    def start(self, idle_exit_s: float | None = None) -> None:
        """Start the next session; with `idle_exit_s` it exits by itself once drained."""
        if self.process is not None and self.process.poll() is None:
            raise AssertionError("the previous session is still running")
        self.session += 1
        argv = [sys.executable, "-m", "faults.group_consumer", self.bootstrap, self.topic, self.group,
                str(self.events_path), str(self.session)]
        argv += [str(idle_exit_s)] if idle_exit_s is not None else []
        self.process = subprocess.Popen(argv, cwd=TESTS_DIR, stdin=subprocess.DEVNULL)

    def wait_for_commits(self, count: int, timeout_s: float) -> None:
        """Block until the running session has logged `count` successful commits."""
        deadline = time.monotonic() + timeout_s
        while self._committed_in_session() < count:
            if self.process.poll() is not None:
                raise AssertionError(f"group session {self.session} exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError(f"group session {self.session}: fewer than {count} commits in {timeout_s}s")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 the running session: no close, no leave-group, no last commit."""
        self.process.kill()
        self.process.wait()

    def wait_until_drained(self, timeout_s: float) -> None:
        """Wait for a session started with `idle_exit_s` to exit by itself."""
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"group session {self.session} did not drain the topic within {timeout_s}s")
        if code != 0:
            raise AssertionError(f"group session {self.session} exited with {code}")

    def stop(self) -> None:
        """Kill the running session, if any (teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def _committed_in_session(self) -> int:
        return sum(1 for event in read_events(self.events_path)
                   if event["session"] == self.session and event["event"] == "committed")
