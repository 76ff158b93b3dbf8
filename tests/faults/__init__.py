"""Fault-test harness: real `weir server` processes in network namespaces,
faults injected from outside (nftables cuts, kill -9, SIGSTOP), and a
Jepsen-style history of client operations checked afterwards.

* `netns`        — the namespaces, their veths and the bridge joining them
* `nft`          — one namespace's own drop table
* `partitions`   — cut / heal / isolate between namespaces
* `node`         — a weir node started inside a namespace
* `disk`         — a small loop-mounted file system that a test fills up
* `fixtures`     — `fault_network` and `fault_node` for pytest
* `history`      — writes and their outcomes (ok / failed / unknown)
* `kafka_client` — records produces into a history, tails and reads back
* `checker`      — decides whether a history and the logs agree
* `group_consumer`, `group_member`, `group_check` — a consumer-group member
  as a killable process, and the check that it resumes where it committed
* `txn_producer`, `txn_process`, `txn_check` — a transactional producer as
  a process of its own that records each transaction's outcome, and the
  check that read_committed shows committed ones once and whole, aborted
  ones never

A test reads like this:

    network = fault_network(3)
    nodes = [fault_node(network, name, args=[...]) for name in network.nodes]
    history = History()
    recorder = ProduceRecorder(bootstrap, topic, partitions, history).start()
    Partitions(network).isolate("n1"); nodes[1].kill(); nodes[1].start(); ...
    recorder.stop()
    assert_valid(check(history.writes, read_back(bootstrap, topic, partitions)))
"""
