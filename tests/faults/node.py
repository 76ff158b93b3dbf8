"""A weir node started inside a network namespace.

It is conftest's `Broker` (start, `kill()` for kill -9, `pause()` /
`resume()` for SIGSTOP / SIGCONT, `restart()` on the same data dir, the log
in `weir.log`, `wait_ready()` until the ports answer), launched through
`ip netns exec` and listening on the namespace's own address. Every
namespace has its own port space, so every node uses the protocols'
standard ports, as the cluster's voter list will expect.
"""

from __future__ import annotations

from pathlib import Path

from conftest import Broker

from .netns import Network

KAFKA_PORT = 9092
AMQP_PORT = 5672
HTTP_PORT = 15672


def namespaced_node(network: Network, node: str, workdir: Path, args=(), env=None) -> Broker:
    """A not yet started broker for `node` of `network`, its data and log under `workdir`."""
    return Broker(
        workdir,
        args=args,
        env=env,
        host=network.address(node),
        port=KAFKA_PORT,
        amqp_port=AMQP_PORT,
        http_port=HTTP_PORT,
        launcher=network.exec_prefix(node),
    )
