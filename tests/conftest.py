"""Fixtures that run the real `weir server` binary for the integration tests.

Every test that takes `broker` (or calls `weir_broker(...)`) gets its own
broker process on a free 127.0.0.1 port with a fresh data directory under the
test's tmp_path. The process's stdout+stderr go to `weir.log` next to it; when
a test fails, the tail of that log is attached to the report. The process is
always killed at teardown, and teardown fails the test if the broker died on
its own or logged a panic, so a crash hidden behind a passing client check is
still caught.

The binary is $WEIR_BIN, or target/release/weir in the repository.

When the binary has an AMQP listener (`weir server --help` lists
`--amqp-listen`), every broker also gets its own free port for it
(`Broker.amqp_port`, `Broker.amqp_url`, `Broker.amqp_params()`), and a start
waits until both ports accept connections. A binary without that flag is
started exactly as before, so the Kafka tests do not depend on it.

Likewise, when the binary has the HTTP API (`--http-listen`), every broker
gets its own free port for it (`Broker.http_port`, `Broker.http_url`), so
brokers never compete for the default 127.0.0.1:15672, and a start also
waits for that port.

Every broker runs with `group.initial.rebalance.delay.ms` 0 (as Apache
Kafka's own test setups do), so the many groups the tests form do not each
wait the 3 s default; a test of the delay passes its own value in `env`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import pytest

# The AMQP tests' shared helpers (and fixtures): rewrite their asserts too.
pytest.register_assert_rewrite("amqp_helpers")

# Namespaces, nftables faults and nodes inside namespaces (tests/faults/).
pytest_plugins = ["faults.fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIR_BIN = Path(os.environ.get("WEIR_BIN") or REPO_ROOT / "target" / "release" / "weir")

# Environment every broker starts with unless the test's `env` says otherwise.
DEFAULT_BROKER_ENV = {"WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"}

# How long the broker may take to accept connections after exec, and to exit
# after SIGTERM. Generous for a loaded 2-core CI machine.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_BYTES = 20_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@lru_cache(maxsize=None)
def binary_has_amqp(binary: Path = WEIR_BIN) -> bool:
    """Whether `weir server --help` offers --amqp-listen (asked once per run)."""
    if not binary.is_file():
        return False
    try:
        help_text = subprocess.run(
            [str(binary), "server", "--help"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--amqp-listen" in help_text


@lru_cache(maxsize=None)
def binary_has_http(binary: Path = WEIR_BIN) -> bool:
    """Whether `weir server --help` offers --http-listen (asked once per run)."""
    if not binary.is_file():
        return False
    try:
        help_text = subprocess.run(
            [str(binary), "server", "--help"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--http-listen" in help_text


class BrokerError(AssertionError):
    """The broker process did not start, stop or behave as a process should."""


class Broker:
    """One `weir server` process (and its restarts) on a fixed port and data dir.

    `args` are extra command-line flags given on every start; `env` adds
    environment variables (WEIR_* from the test runner's own environment are
    dropped so that the runner's settings never leak into a test).
    """

    def __init__(
        self,
        workdir: Path,
        args=(),
        env=None,
        port: int | None = None,
        host: str = "127.0.0.1",
        amqp_port: int | None = None,
        http_port: int | None = None,
        launcher=(),
    ):
        """`host` and the ports default to free ports on loopback; the fault
        tests pass a network namespace's address and fixed ports (each
        namespace has its own port space) and a `launcher` such as
        `ip netns exec NS`, an argv prefix that must exec (not fork) the
        binary so that signals reach weir itself."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.log_path = workdir / "weir.log"
        self.port = port or free_port()
        self.amqp_port = amqp_port or free_port()
        self.http_port = http_port or free_port()
        self.host = host
        self.launcher = list(launcher)
        self.args = list(args)
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.paused = False
        # Set when the test itself stopped the process, so that teardown can
        # tell a requested exit from a crash.
        self._stopped_on_purpose = True

    @property
    def bootstrap(self) -> str:
        """host:port for a client's bootstrap.servers."""
        return f"{self.host}:{self.port}"

    @property
    def amqp_enabled(self) -> bool:
        return binary_has_amqp()

    @property
    def amqp_url(self) -> str:
        """The AMQP 0-9-1 URL of this broker, default vhost, guest/guest."""
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/%2F"

    @property
    def http_enabled(self) -> bool:
        return binary_has_http()

    @property
    def http_url(self) -> str:
        """Base URL of this broker's HTTP API and console, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.http_port}"

    def amqp_params(self, **overrides):
        """pika ConnectionParameters for this broker (guest/guest, vhost "/");
        keyword arguments override any ConnectionParameters setting."""
        import pika  # only the AMQP tests need it

        settings = {
            "host": self.host,
            "port": self.amqp_port,
            "virtual_host": "/",
            "credentials": pika.PlainCredentials("guest", "guest"),
        }
        settings.update(overrides)
        return pika.ConnectionParameters(**settings)

    def command(self, extra_args=()) -> list[str]:
        amqp = ["--amqp-listen", f"{self.host}:{self.amqp_port}"] if self.amqp_enabled else []
        http = ["--http-listen", f"{self.host}:{self.http_port}"] if self.http_enabled else []
        return [
            *self.launcher,
            str(WEIR_BIN),
            "server",
            "--data-dir",
            str(self.data_dir),
            "--kafka-listen",
            self.bootstrap,
            *amqp,
            *http,
            *self.args,
            *extra_args,
        ]

    def _environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(DEFAULT_BROKER_ENV)
        env.update(self.env)
        return env

    def start(self, extra_args=(), timeout: float = START_TIMEOUT_S) -> "Broker":
        """Start the process and wait until the Kafka port accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError("broker already running")
        if not WEIR_BIN.is_file():
            raise BrokerError(
                f"weir binary not found at {WEIR_BIN}; build it with "
                "`cargo build --release -p weir` or set WEIR_BIN"
            )
        cmd = self.command(extra_args)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd=self.workdir,
            )
        self._stopped_on_purpose = False
        self.paused = False
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the Kafka port (and the AMQP port, when enabled)
        accept connections."""
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.amqp_port] if self.amqp_enabled else [])
        ports += [self.http_port] if self.http_enabled else []
        for port in ports:
            while True:
                code = self.proc.poll()
                if code is not None:
                    self._stopped_on_purpose = True
                    raise BrokerError(
                        f"weir exited with code {code} before accepting connections\n"
                        f"{self.log_tail()}"
                    )
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"weir did not accept connections on {self.host}:{port} within "
                        f"{timeout}s\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets and files but answers
        nothing, as a long GC pause or a stalled VM would."""
        if not self.alive():
            raise BrokerError("cannot pause a broker that is not running")
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if not self.alive():
            raise BrokerError("cannot resume a broker that is not running")
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send `sig` and wait for the exit; returns the exit code.

        A negative code is the signal that ended the process (Popen's
        convention), so after SIGKILL it is -9.
        """
        if self.proc is None:
            raise BrokerError("broker was never started")
        self._stopped_on_purpose = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            if self.paused:
                # A stopped process keeps every signal but SIGKILL pending.
                # (send_signal does nothing once the process has exited.)
                self.proc.send_signal(signal.SIGCONT)
                self.paused = False
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise BrokerError(
                    f"weir did not exit within {timeout}s of signal {sig}\n{self.log_tail()}"
                )
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL: the crash case. Returns -9."""
        return self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM, extra_args=()) -> int:
        """Stop with `sig`, start again on the same port and data dir.

        Returns the exit code of the stopped process.
        """
        code = self.stop(sig)
        self.start(extra_args)
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, limit: int = LOG_TAIL_BYTES) -> str:
        text = self.log_text()
        if len(text) > limit:
            text = "[...]\n" + text[-limit:]
        return f"----- {self.log_path} -----\n{text}"

    def teardown(self) -> list[str]:
        """Kill the process; return the problems teardown should report."""
        problems = []
        if self.proc is not None:
            if self.proc.poll() is not None and not self._stopped_on_purpose:
                problems.append(
                    f"weir exited on its own with code {self.proc.returncode} during the test"
                )
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if "panicked at" in self.log_text():
            problems.append("weir logged a panic")
        return problems


@pytest.fixture
def weir_broker(request, tmp_path):
    """Factory: `weir_broker(args=[...], env={...}, start=True) -> Broker`.

    Every broker made here is killed at teardown; each gets its own
    subdirectory of tmp_path.
    """
    brokers: list[Broker] = []
    request.node._weir_brokers = brokers

    def make(args=(), env=None, start=True) -> Broker:
        for attempt in range(3):
            broker = Broker(tmp_path / f"broker{len(brokers)}", args=args, env=env)
            brokers.append(broker)
            if not start:
                return broker
            try:
                return broker.start()
            except BrokerError:
                # free_port() can race with another process taking the port.
                if attempt == 2 or "in use" not in broker.log_text().lower():
                    raise
        raise AssertionError("unreachable")

    yield make
    tear_down_brokers(brokers)


def tear_down_brokers(brokers) -> None:
    """Kill every broker; fail the test if any died on its own or panicked."""
    problems = []
    for broker in brokers:
        for problem in broker.teardown():
            problems.append(f"{problem}\n{broker.log_tail()}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def broker(weir_broker) -> Broker:
    """A running broker with default settings."""
    return weir_broker()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach each broker's log tail to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when != "teardown":
        for index, broker in enumerate(getattr(item, "_weir_brokers", [])):
            report.sections.append((f"weir log (broker {index})", broker.log_tail()))
