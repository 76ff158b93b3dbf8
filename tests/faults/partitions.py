"""Network partitions between the namespaces of a `Network`: cut, heal,
isolate, heal everything.

A cut between two nodes is written into both nodes' own drop tables (see
`nft`), so either side alone would already stop the traffic both ways and
healing one pair never disturbs another. `HOST` names the test process's
end of the bridge (where the clients are): `cut(node, HOST)` hides a node
from the clients while it still talks to the other nodes, and `isolate`
leaves the clients connected unless asked, because the interesting cluster
fault is a leader that its clients still reach but its peers do not.
"""

from __future__ import annotations

from . import nft
from .netns import HOST, Network


class Partitions:
    """The set of cut pairs of one network, applied with nftables.
    Creating it (re)installs every node's table, so it starts fully healed."""

    def __init__(self, network: Network):
        self.network = network
        self.cut_pairs: set[frozenset[str]] = set()
        for node in network.nodes:
            nft.install_table(network.namespace(node))

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between `a` and `b`, both directions (idempotent)."""
        pair = self._pair(a, b)
        if pair in self.cut_pairs:
            return
        for side, other in ((a, b), (b, a)):
            if side != HOST:
                nft.drop_peer(self.network.namespace(side), self._address(other))
        self.cut_pairs.add(pair)

    def heal(self, a: str, b: str) -> None:
        """Undo `cut(a, b)` (idempotent)."""
        pair = self._pair(a, b)
        if pair not in self.cut_pairs:
            return
        for side, other in ((a, b), (b, a)):
            if side != HOST:
                nft.allow_peer(self.network.namespace(side), self._address(other))
        self.cut_pairs.discard(pair)

    def isolate(self, node: str, from_clients: bool = False) -> None:
        """Cut `node` from every other node, and from the clients too when
        `from_clients`."""
        for other in self.network.nodes:
            if other != node:
                self.cut(node, other)
        if from_clients:
            self.cut(node, HOST)

    def heal_all(self) -> None:
        """Remove every cut."""
        for pair in list(self.cut_pairs):
            self.heal(*sorted(pair))

    def _pair(self, a: str, b: str) -> frozenset[str]:
        if a == b:
            raise ValueError(f"cannot cut {a!r} from itself")
        self._address(a), self._address(b)  # validates both names
        return frozenset((a, b))

    def _address(self, endpoint: str) -> str:
        return self.network.host_address if endpoint == HOST else self.network.address(endpoint)
