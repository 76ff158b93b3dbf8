"""Fault-test harness: real `weir server` processes in network namespaces,
faults injected from outside (nftables cuts, kill -9, SIGSTOP), and a
Jepsen-style history of client operations checked afterwards.

* `netns`      — the namespaces, their veths and the bridge joining them
* `nft`        — one namespace's own drop table
* `partitions` — cut / heal / isolate between namespaces
* `node`       — a weir node started inside a namespace
* `history`    — operations and their outcomes (ok / failed / unknown)
* `kafka_client` — records produces into a history, reads partitions back
* `checker`    — decides whether a history and a read-back are valid
* `group_check` and `group_consumer` — consumer groups resume where they committed
"""
