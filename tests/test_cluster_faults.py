"""The controller quorum under real faults: three `weir` nodes, each in its
own network namespace, with `kill -9`, SIGSTOP and nftables cuts between
them. What must hold: metadata changes keep committing within seconds
while a majority is up; a controller leader that is cut off or paused
commits nothing; a node that comes back catches up and is unfenced.

(Partition data is not replicated yet, so these are the metadata half of
issue 12's fault scenarios; the data half comes with replication.)
"""

from __future__ import annotations

import time

from faults.partitions import Partitions
from http_helpers import Http

CONTROLLER_PORT = 9093
CONVERGE_S = 30.0


def start_cluster(fault_network, fault_node, data_dirs: dict | None = None):
    """Three nodes, each in its own namespace and a controller voter.
    `data_dirs` maps a node id to a data directory of its own (one on a
    small disk), instead of one under the test's tmp dir."""
    network = fault_network(3)
    names = {node_id: f"n{node_id}" for node_id in (1, 2, 3)}
    voters = ",".join(
        f"{node_id}@{network.address(name)}:{CONTROLLER_PORT}" for node_id, name in names.items()
    )
    nodes = {}
    for node_id, name in names.items():
        node = fault_node(
            network,
            name,
            args=[
                "--node-id", str(node_id),
                "--controller-listen", f"{network.address(name)}:{CONTROLLER_PORT}",
                "--controller-quorum-voters", voters,
            ],
            start=False,
        )
        node.data_dir = (data_dirs or {}).get(node_id, node.data_dir)
        nodes[node_id] = node.start()
    return network, names, nodes


def status(node) -> dict | None:
    answer = Http(node.http_url).call("GET", "/api/cluster", timeout=3)
    return answer.json() if answer.status == 200 else None


def wait_until(what: str, check, timeout: float = CONVERGE_S):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting until {what}; last: {last!r}")


def agreed(nodes: dict, expect) -> dict | None:
    """The status of every node in `nodes` when they agree on a leader and
    `expect` holds on each."""
    statuses = [status(node) for node in nodes.values()]
    if any(s is None for s in statuses):
        return None
    leader = statuses[0]["controller_leader"]
    if leader is None or any(s["controller_leader"] != leader for s in statuses):
        return None
    return statuses[0] if all(expect(s) for s in statuses) else None


def fenced(status: dict) -> set[int]:
    return {node["id"] for node in status["nodes"] if node["fenced"]}


def all_registered(status: dict) -> bool:
    return len(status["nodes"]) == 3 and not fenced(status)


def topic_names(node) -> set[str]:
    return {topic["name"] for topic in Http(node.http_url).ok("GET", "/api/topics")}


def create_topic(node, name: str):
    return Http(node.http_url).call("POST", "/api/topics", {"name": name, "partitions": 1}, timeout=30)


def test_metadata_keeps_committing_through_controller_leader_kills(fault_network, fault_node):
    _, _, nodes = start_cluster(fault_network, fault_node)
    created = []
    for round_number in range(3):
        first = wait_until("one leader, all registered", lambda: agreed(nodes, all_registered))
        leader = first["controller_leader"]
        survivor = next(node for node_id, node in nodes.items() if node_id != leader)
        nodes[leader].kill()
        killed_at = time.monotonic()
        # The first create after the kill may wait out the election; it
        # must succeed within seconds, through a surviving node.
        name = f"after-kill-{round_number}"
        answer = create_topic(survivor, name)
        assert answer.status == 201, answer
        recovery_s = time.monotonic() - killed_at
        assert recovery_s < 15, f"metadata took {recovery_s:.1f} s to commit after the leader died"
        created.append(name)
        nodes[leader].start()
    everyone = wait_until(
        "all three agree and are unfenced again",
        lambda: agreed(nodes, all_registered),
    )
    assert everyone["cluster_id"] is not None
    for node_id, node in nodes.items():
        wait_until(
            f"node {node_id} has every topic created while nodes were down",
            lambda node=node: set(created) <= topic_names(node),
        )


def test_a_cut_off_controller_leader_commits_nothing_and_catches_up(fault_network, fault_node):
    network, names, nodes = start_cluster(fault_network, fault_node)
    first = wait_until("one leader, all registered", lambda: agreed(nodes, all_registered))
    leader = first["controller_leader"]
    majority = {node_id: node for node_id, node in nodes.items() if node_id != leader}
    cuts = Partitions(network)
    # Cut from the other nodes only: its clients still reach it.
    cuts.isolate(names[leader])
    wait_until(
        "the majority elects another leader and fences the cut-off one",
        lambda: agreed(majority, lambda s: s["controller_leader"] != leader and leader in fenced(s)),
    )
    # The cut-off node is asked to change metadata: it cannot commit.
    refused = create_topic(nodes[leader], "from-the-minority")
    assert refused.status == 503, refused
    assert create_topic(next(iter(majority.values())), "from-the-majority").status == 201
    cuts.heal_all()
    wait_until("all three agree and are unfenced again", lambda: agreed(nodes, all_registered))
    for node_id, node in nodes.items():
        wait_until(
            f"node {node_id} has exactly the majority's topic",
            lambda node=node: "from-the-majority" in topic_names(node),
        )
        assert "from-the-minority" not in topic_names(node)


def test_a_paused_controller_leader_is_deposed_and_follows_after_resuming(fault_network, fault_node):
    _, _, nodes = start_cluster(fault_network, fault_node)
    first = wait_until("one leader, all registered", lambda: agreed(nodes, all_registered))
    leader = first["controller_leader"]
    majority = {node_id: node for node_id, node in nodes.items() if node_id != leader}
    nodes[leader].pause()
    try:
        after = wait_until(
            "the others elect another leader and fence the paused one",
            lambda: agreed(majority, lambda s: s["controller_leader"] != leader and leader in fenced(s)),
        )
        assert after["term"] > first["term"]
        assert create_topic(next(iter(majority.values())), "while-paused").status == 201
    finally:
        nodes[leader].resume()
    resumed = wait_until("all three agree and are unfenced again", lambda: agreed(nodes, all_registered))
    assert resumed["controller_leader"] != leader or resumed["term"] > after["term"]
    wait_until("the resumed node has the topic", lambda: "while-paused" in topic_names(nodes[leader]))
