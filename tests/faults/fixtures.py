"""pytest fixtures of the fault harness (registered by conftest's
`pytest_plugins`).

The fault tests need root for namespaces and nftables. CI runs as root, so
a test run without it fails loudly instead of skipping: a skipped fault test
is a fault test that silently stopped guarding anything.
"""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import tear_down_brokers

from .disk import DiskError, LoopDisk
from .netns import Network
from .node import namespaced_node


def require_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("fault tests need root (network namespaces, nftables); CI runs them as root", pytrace=False)
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"fault tests need {missing}; scripts/test.sh installs iproute2 and nftables", pytrace=False)


@pytest.fixture
def fault_network():
    """Factory: `fault_network(size) -> Network`, torn down after the test
    (after the nodes in it are killed)."""
    require_root_and_tools()
    networks: list[Network] = []

    def make(size: int) -> Network:
        network = Network(size).create()
        networks.append(network)
        return network

    yield make
    for network in networks:
        network.teardown()


@pytest.fixture
def fault_node(request, tmp_path, fault_network):
    """Factory: `fault_node(network, node, args=(), env=None, start=True) -> Broker`
    running inside `node`'s namespace; killed at teardown, which fails the
    test if it died on its own or panicked, and its log tail is attached to
    a failed test's report."""
    brokers = []
    request.node._weir_brokers = brokers

    def make(network: Network, node: str, args=(), env=None, start: bool = True):
        broker = namespaced_node(network, node, tmp_path / node, args=args, env=env)
        brokers.append(broker)
        return broker.start() if start else broker

    yield make
    tear_down_brokers(brokers)


@pytest.fixture
def loop_disk(request, tmp_path, fault_node):
    """Factory: `loop_disk(name, size_bytes) -> LoopDisk`, a small ext4 file
    system mounted at tmp_path/name, for a node's data directory.

    It depends on `fault_node`, so it is torn down first: a node still
    running with its data there is killed (one that died on its own is
    left for `fault_node` to report), then the file system is unmounted
    and its image removed, also when the test failed."""
    missing = [tool for tool in ("mkfs.ext4", "mount", "umount") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the disk fault tests need {missing}; scripts/test.sh installs e2fsprogs and mount",
                    pytrace=False)
    disks: list[LoopDisk] = []

    def make(name: str, size_bytes: int) -> LoopDisk:
        disk = LoopDisk(tmp_path / f"{name}.img", tmp_path / name, size_bytes)
        disks.append(disk.create())
        return disk

    yield make
    failures = []
    for disk in disks:
        for broker in getattr(request.node, "_weir_brokers", []):
            if broker.alive() and broker.data_dir.is_relative_to(disk.mount):
                broker.kill()
        try:
            disk.unmount()
        except DiskError as error:
            failures.append(str(error))
    assert not failures, failures
