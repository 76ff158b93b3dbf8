"""One namespace's own nftables table that drops traffic to and from a set
of peer addresses.

Each node namespace gets the table below; a fault adds a peer's address to
`cut_peers` and healing removes it. Nothing outside the test's namespaces is
touched, and deleting the namespace deletes the table.

Packets are dropped, not rejected, as a real partition does: a connect
times out rather than failing fast.
"""

from __future__ import annotations

from .netns import run_command

TABLE = "weir_faults"
PEER_SET = "cut_peers"

# Declaring the table, deleting it and defining it again makes installing
# idempotent: whatever was there before, the result is an empty drop set.
TABLE_DEFINITION = f"""
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    set {PEER_SET} {{ type ipv4_addr; }}
    chain input {{ type filter hook input priority 0; policy accept; ip saddr @{PEER_SET} drop; }}
    chain output {{ type filter hook output priority 0; policy accept; ip daddr @{PEER_SET} drop; }}
}}
"""


def nft_in(namespace: str, *args: str, stdin: str | None = None) -> str:
    """Run `nft` inside `namespace`, so it sees only that namespace's ruleset."""
    return run_command(["ip", "netns", "exec", namespace, "nft", *args], stdin=stdin)


def install_table(namespace: str) -> None:
    nft_in(namespace, "-f", "-", stdin=TABLE_DEFINITION)


def drop_peer(namespace: str, address: str) -> None:
    nft_in(namespace, "add", "element", "inet", TABLE, PEER_SET, f"{{ {address} }}")


def allow_peer(namespace: str, address: str) -> None:
    nft_in(namespace, "delete", "element", "inet", TABLE, PEER_SET, f"{{ {address} }}")
