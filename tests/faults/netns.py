"""Network namespaces joined by one bridge, for real processes that a test
can partition from each other.

Layout of one run (prefix `weirf<pid>`, subnet 10.77.X.0/24):

    root ns  ── weirf<pid>h (10.77.X.254) ──┐
                                            │ veth
    weirf<pid>-hub:  br0 ── host ───────────┘
                      ├──── n1 ── veth ── weirf<pid>-n1: eth0 10.77.X.1
                      ├──── n2 ── veth ── weirf<pid>-n2: eth0 10.77.X.2
                      └──── ...

The bridge lives in a namespace of its own rather than the root namespace:
a CI machine with Docker has br_netfilter on and an iptables FORWARD policy
of DROP in the root namespace, which would silently drop bridged traffic
between the nodes. The only thing in the root namespace is one veth with an
address in the run's own /24, so that the test process itself (the Kafka
clients, the checker) reaches every node directly.

Everything is named after the process id, so a later run can tell a
crashed run's leftovers (its pid is gone) from a live parallel run's.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

NAME_PREFIX = "weirf"
# The test process's own end of the bridge, where the clients run; a
# source or target for `Network.connects` and for partitions.
HOST = "host"
SUBNET_FIRST_OCTETS = "10.77"
HOST_OCTET = 254
NODES_MAX = 200
# Held while a run picks its /24 and puts the address on its root veth, so
# two runs starting together cannot pick the same subnet.
SUBNET_LOCK_PATH = Path("/run/lock/weir-faults-subnet.lock")
COMMAND_TIMEOUT_S = 30.0

LEFTOVER_NAME = re.compile(rf"^{NAME_PREFIX}(\d+)(?:-|h$)")


class NetworkError(AssertionError):
    """A namespace, link or nft command failed."""


def run_command(argv: list[str], timeout: float = COMMAND_TIMEOUT_S, stdin: str | None = None) -> str:
    """Run `argv` (with `stdin` as its input), return its stdout; raise
    NetworkError with stderr on failure."""
    try:
        completed = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise NetworkError(f"`{' '.join(argv)}` did not finish within {timeout}s") from error
    if completed.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed.stdout


def namespace_names() -> list[str]:
    """Every network namespace `ip netns` knows, by name."""
    return [line.split()[0] for line in run_command(["ip", "netns", "list"]).splitlines() if line.strip()]


def root_link_names() -> list[str]:
    """Every link in the root namespace, by name (without the @peer suffix)."""
    names = []
    for line in run_command(["ip", "-o", "link", "show"]).splitlines():
        names.append(line.split(":", 2)[1].strip().split("@")[0])
    return names


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Delete namespaces and root links of earlier runs whose process is gone
    (a run killed before its teardown), and kill the processes that run
    left inside its namespaces (brokers outlive a SIGKILLed pytest); return
    what was removed.

    Deleting a namespace also deletes its nft table and the veth ends inside
    it, and with them their peers."""
    removed = []
    for name in namespace_names():
        match = LEFTOVER_NAME.match(name)
        if match and not pid_alive(int(match.group(1))):
            kill_processes_in(name)
            run_command(["ip", "netns", "delete", name])
            removed.append(name)
    for name in root_link_names():
        match = LEFTOVER_NAME.match(name)
        if match and not pid_alive(int(match.group(1))):
            run_command(["ip", "link", "delete", name])
            removed.append(name)
    return removed


def kill_processes_in(namespace: str) -> None:
    """SIGKILL every process inside `namespace`."""
    for pid in run_command(["ip", "netns", "pids", namespace]).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def subnets_in_use() -> set[int]:
    """Third octets of the 10.77.X.0/24 subnets with an address in the root namespace."""
    used = set()
    for line in run_command(["ip", "-4", "-o", "addr", "show"]).splitlines():
        address = ipaddress.ip_interface(line.split()[3])
        if str(address.ip).startswith(SUBNET_FIRST_OCTETS + "."):
            used.add(int(str(address.ip).split(".")[2]))
    return used


class Network:
    """`size` namespaces `n1`..`nN` on one bridge, reachable from the test
    process. Use as a context manager: the exit removes everything even when
    setting up failed half-way.

    Node names are the short names `n1`..; `namespace(name)` is the real
    namespace name and `address(name)` its IPv4 address.
    """

    def __init__(self, size: int):
        if not 1 <= size <= NODES_MAX:
            raise ValueError(f"size must be 1..{NODES_MAX}, got {size}")
        self.prefix = f"{NAME_PREFIX}{os.getpid()}"
        self.nodes = [f"n{index}" for index in range(1, size + 1)]
        self.hub = f"{self.prefix}-hub"
        self.root_link = f"{self.prefix}h"
        self.subnet_octet: int | None = None

    def namespace(self, node: str) -> str:
        self._check_node(node)
        return f"{self.prefix}-{node}"

    def address(self, node: str) -> str:
        self._check_node(node)
        return f"{SUBNET_FIRST_OCTETS}.{self.subnet_octet}.{self.nodes.index(node) + 1}"

    @property
    def host_address(self) -> str:
        """The test process's own address on the bridge (where clients connect from)."""
        return f"{SUBNET_FIRST_OCTETS}.{self.subnet_octet}.{HOST_OCTET}"

    def exec_prefix(self, node: str) -> list[str]:
        """argv prefix running a program inside `node`'s namespace. `ip netns
        exec` execs the program itself, so its pid is the program's."""
        return ["ip", "netns", "exec", self.namespace(node)]

    def run_in(self, node: str, argv: list[str], timeout: float = COMMAND_TIMEOUT_S) -> str:
        """Run `argv` inside `node`'s namespace; its stdout, or NetworkError."""
        return run_command(self.exec_prefix(node) + argv, timeout)

    def connects(self, source: str, address: str, port: int, timeout_s: float = 2.0) -> bool:
        """Whether a TCP connect from `source` (a node, or HOST) to
        address:port succeeds within `timeout_s`."""
        if source == HOST:
            try:
                with socket.create_connection((address, port), timeout=timeout_s):
                    return True
            except OSError:
                return False
        probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout={timeout_s})"
        completed = subprocess.run(
            self.exec_prefix(source) + [sys.executable, "-c", probe], capture_output=True, timeout=timeout_s + 30
        )
        return completed.returncode == 0

    def own_namespaces(self) -> list[str]:
        """This run's namespaces that exist right now (for teardown checks)."""
        return [name for name in namespace_names() if name.startswith(self.prefix + "-")]

    def own_root_links(self) -> list[str]:
        """This run's links in the root namespace that exist right now."""
        return [name for name in root_link_names() if name == self.root_link]

    def __enter__(self) -> "Network":
        return self.create()

    def __exit__(self, *exc_info) -> None:
        self.teardown()

    def create(self) -> "Network":
        """Remove crashed runs' leftovers, then build the namespaces; on any
        failure remove what was built so far."""
        remove_leftovers()
        if self.own_namespaces() or self.own_root_links():
            raise NetworkError(f"another network of this process ({self.prefix}) is still up")
        try:
            self._create()
        except BaseException:
            self.teardown()
            raise
        return self

    def teardown(self) -> None:
        """Delete every namespace and root link of this run; safe to repeat."""
        for name in self.own_namespaces():
            run_command(["ip", "netns", "delete", name])
        for name in self.own_root_links():
            run_command(["ip", "link", "delete", name])

    def _create(self) -> None:
        self._ip("netns", "add", self.hub)
        self._ip_in(self.hub, "link", "set", "lo", "up")
        self._ip_in(self.hub, "link", "add", "br0", "type", "bridge")
        self._ip_in(self.hub, "link", "set", "br0", "up")
        self._create_root_link()
        for node in self.nodes:
            self._create_node(node)

    def _create_root_link(self) -> None:
        SUBNET_LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        with open(SUBNET_LOCK_PATH, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet_octet = self._free_subnet_octet()
            self._ip("link", "add", self.root_link, "type", "veth", "peer", "name", "host", "netns", self.hub)
            self._ip("addr", "add", f"{self.host_address}/24", "dev", self.root_link)
        self._ip("link", "set", self.root_link, "up")
        self._ip_in(self.hub, "link", "set", "host", "master", "br0", "up")

    def _free_subnet_octet(self) -> int:
        used = subnets_in_use()
        start = os.getpid() % 250
        for step in range(250):
            octet = 1 + (start + step) % 250
            if octet not in used:
                return octet
        raise NetworkError(f"every {SUBNET_FIRST_OCTETS}.X.0/24 subnet is in use")

    def _create_node(self, node: str) -> None:
        namespace = self.namespace(node)
        self._ip("netns", "add", namespace)
        self._ip_in(namespace, "link", "set", "lo", "up")
        self._ip_in(self.hub, "link", "add", node, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        self._ip_in(self.hub, "link", "set", node, "master", "br0", "up")
        self._ip_in(namespace, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
        self._ip_in(namespace, "link", "set", "eth0", "up")

    def _check_node(self, node: str) -> None:
        if node not in self.nodes:
            raise ValueError(f"unknown node {node!r}; this network has {self.nodes}")

    @staticmethod
    def _ip(*args: str) -> str:
        return run_command(["ip", *args])

    @staticmethod
    def _ip_in(namespace: str, *args: str) -> str:
        return run_command(["ip", "-n", namespace, *args])
