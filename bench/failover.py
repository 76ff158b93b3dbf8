#!/usr/bin/env python3
"""Failover time of a partition leader's `kill -9` in a 3-node Weir cluster.

Starts three `weir server --node-id i` on loopback (fresh data directories
in a temporary directory), creates a topic of 1 partition, replication
factor 3 and min.insync.replicas=2 through the Admin API, and waits until
all three nodes are in its ISR. A confluent-kafka producer (idempotent,
acks=all, linger.ms=0) then sends one message every --interval-ms, each
value its sequence number, and records when it sent each one and every
delivery report: the time it arrived, the offset, or the error.

Then, --rounds times: find the partition's leader (GET /api/topics/<name>),
`kill -9` it, and wait for the acknowledgement of a message sent after the
killed process was gone (only the new leader can have given that one).

    failover time = first ack from the new leader - last ack from the old

as the producer saw them; the detection of the dead node (3 s of missed
heartbeats) is part of it. A delivery report does not say which node gave
it, and answers the old leader wrote just before it died still arrive a
moment after the kill, so the two acks are found as the ends of the
longest stretch without any ack between the last ack before the kill and
that first ack of a message sent after it. Then restart the killed node on
its data directory, wait until it is back in the ISR and the leader again
(preferred leadership returns by itself) and until the producer has an ack
of a message sent after that, let acks flow for --settle-s, next round.
The longest gap between two acks while the node rejoined and took its
leadership back is recorded too.

At the end the producer is flushed and a consumer reads the partition from
offset 0 to its high watermark; the check (a Jepsen-style history check)
says whether every acknowledged value is present exactly once and at the
offset its acknowledgement gave, and counts values whose delivery failed
(outcome unknown) but which are present anyway.

Output in bench/results/failover-<utc time>/: summary.md, summary.json
(every round, the percentiles, the check), history.csv (every delivery
report), machine.md and each node's log.

Usage: .venv/bin/python bench/failover.py [options]
    --rounds N           kills (default 10)
    --interval-ms MS     time between sends (default 2)
    --settle-s S         acks flowing between rounds (default 3)
    --min-insync N       the topic's min.insync.replicas (default 2)
    --port-base P        node i uses P+10i .. P+10i+3: Kafka, AMQP, HTTP,
                         controller (default 21200)
    --round-timeout-s S  give up a round after this long (default 120)
    -X KEY=VALUE         extra librdkafka producer property (repeatable)
    --quick              2 rounds, 1 s settle (smoke check, about a minute)
    --out DIR            results directory
Environment: WEIR_BIN (default target/release/weir).
"""

import argparse
import bisect
import csv
import json
import logging
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timezone

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC = "failover"
NODE_IDS = (1, 2, 3)
# setpriv (util-linux) makes each node get SIGKILL if this script dies
# without reaching its cleanup; it then execs the node, so its pid is the
# node's.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(what, check, timeout_s, interval_s=0.1):
    """Polls check() until it returns something true; raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)


class Cluster:
    """Three weir nodes on loopback, each on its own data directory."""

    def __init__(self, weir_bin, port_base, out_dir):
        self.weir_bin = weir_bin
        self.port_base = port_base
        self.out_dir = out_dir
        self.data_root = tempfile.mkdtemp(prefix="weir-bench-failover.")
        self.processes = {}
        self.voters = ",".join(f"{i}@127.0.0.1:{self.port(i, 3)}" for i in NODE_IDS)

    def port(self, node_id, which):
        """which: 0 Kafka, 1 AMQP, 2 HTTP, 3 controller."""
        return self.port_base + 10 * node_id + which

    def bootstrap(self):
        return ",".join(f"127.0.0.1:{self.port(i, 0)}" for i in NODE_IDS)

    def start(self, node_id):
        for which in range(4):
            port = self.port(node_id, which)
            if port_taken(port):
                raise RuntimeError(f"port {port} is taken by another process; choose --port-base")
        command = DIE_WITH_PARENT + [
            self.weir_bin, "server", "--node-id", str(node_id),
            "--data-dir", os.path.join(self.data_root, f"node{node_id}"),
            "--controller-listen", f"127.0.0.1:{self.port(node_id, 3)}",
            "--controller-quorum-voters", self.voters,
            "--kafka-listen", f"127.0.0.1:{self.port(node_id, 0)}",
            "--amqp-listen", f"127.0.0.1:{self.port(node_id, 1)}",
            "--http-listen", f"127.0.0.1:{self.port(node_id, 2)}",
        ]
        with open(os.path.join(self.out_dir, f"node{node_id}.log"), "ab") as node_log:
            self.processes[node_id] = subprocess.Popen(
                command, stdout=node_log, stderr=subprocess.STDOUT
            )

    def kill(self, node_id):
        process = self.processes.pop(node_id)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def alive(self):
        return [i for i, process in self.processes.items() if process.poll() is None]

    def get(self, path, node_ids=None):
        """GET path from the first live node that answers, as JSON, or None."""
        for node_id in node_ids or self.alive():
            url = f"http://127.0.0.1:{self.port(node_id, 2)}{path}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return json.load(response)
            except (urllib.error.URLError, OSError, ValueError):
                continue
        return None

    def formed(self):
        status = self.get("/api/cluster")
        return bool(
            status
            and status.get("controller_leader") is not None
            and len(status.get("nodes", [])) == 3
            and not any(node.get("fenced") for node in status["nodes"])
        )

    def partition(self, node_ids=None):
        """Partition 0 of the topic as a node reports it, or None."""
        topic = self.get(f"/api/topics/{TOPIC}", node_ids)
        if not topic or not topic.get("partitions"):
            return None
        return topic["partitions"][0]

    def agreed_partition(self):
        """Partition 0 when every live node reports the same leader, epoch and ISR.

        A node just restarted may answer from its own stale metadata for a
        moment; asking every node keeps that from ending a wait early.
        """
        views = [self.partition([node_id]) for node_id in self.alive()]
        if not views or any(view is None for view in views):
            return None
        keys = {(v["leader"], v["leader_epoch"], tuple(sorted(v.get("isr", [])))) for v in views}
        return views[0] if len(keys) == 1 else None

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        shutil.rmtree(self.data_root, ignore_errors=True)


def port_taken(port):
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def fully_in_sync(partition):
    return bool(
        partition
        and partition.get("leader") is not None
        and partition["leader"] >= 0
        and sorted(partition.get("isr", [])) == list(NODE_IDS)
    )


def back_to_preferred(partition):
    return fully_in_sync(partition) and partition["leader"] == partition["replicas"][0]


class History:
    """Every send and delivery report, with the time each report arrived.

    Reports are appended in the order they arrive (one thread runs the
    callbacks), so ack_times is sorted and searched by bisection: the
    lookups must not hold the lock long enough to delay a report's stamp.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.acks = []  # (sequence, monotonic s, offset)
        self.ack_times = []  # the monotonic s of each ack, ascending
        self.failures = []  # (sequence, monotonic s, error)
        self.sent_times = []  # the monotonic s each sequence was handed to librdkafka

    @property
    def sent(self):
        return len(self.sent_times)

    def record_send(self, moment):
        with self.lock:
            self.sent_times.append(moment)

    def first_sequence_sent_after(self, moment):
        """The first sequence handed to the producer after moment (may be unsent yet)."""
        with self.lock:
            return bisect.bisect_right(self.sent_times, moment)

    def on_delivery(self, error, message):
        arrived = time.monotonic()
        sequence = int(message.value())
        with self.lock:
            if error is not None:
                self.failures.append((sequence, arrived, str(error)))
            else:
                self.acks.append((sequence, arrived, message.offset()))
                self.ack_times.append(arrived)

    def first_ack_after(self, moment):
        with self.lock:
            index = bisect.bisect_right(self.ack_times, moment)
            return self.acks[index] if index < len(self.acks) else None

    def last_ack_before(self, moment):
        with self.lock:
            index = bisect.bisect_right(self.ack_times, moment)
            return self.acks[index - 1] if index > 0 else None

    def first_ack_of_sequence_from(self, sequence, after):
        """The first ack arriving after `after` of a sequence >= sequence, or None."""
        with self.lock:
            index = bisect.bisect_right(self.ack_times, after)
            return next((ack for ack in self.acks[index:] if ack[0] >= sequence), None)

    def times_between(self, start, end):
        with self.lock:
            low = bisect.bisect_left(self.ack_times, start)
            high = bisect.bisect_right(self.ack_times, end)
            return self.ack_times[low:high]


class SteadyProducer:
    """One idempotent acks=all producer sending a sequence every interval."""

    def __init__(self, bootstrap, interval_s, properties, history, logger):
        self.config = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
            "message.timeout.ms": 120000,
        }
        self.config.update(properties)
        self.producer = Producer(self.config, logger=logger)
        self.interval_s = interval_s
        self.history = history
        self.stopping = threading.Event()
        self.sender = threading.Thread(target=self.send_loop, name="sender", daemon=True)
        self.poller = threading.Thread(target=self.poll_loop, name="poller", daemon=True)

    def start(self):
        self.poller.start()
        self.sender.start()

    def send_loop(self):
        sequence = 0
        next_send = time.monotonic()
        while not self.stopping.is_set():
            handed_at = time.monotonic()
            try:
                self.producer.produce(
                    TOPIC, value=str(sequence).encode(), partition=0,
                    on_delivery=self.history.on_delivery,
                )
            except BufferError:
                time.sleep(0.01)
                continue
            self.history.record_send(handed_at)
            sequence += 1
            next_send += self.interval_s
            pause = next_send - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def poll_loop(self):
        # Delivery callbacks run inside poll(); a thread of its own polling
        # all the time stamps each report as soon as librdkafka has it.
        while not self.stopping.is_set():
            self.producer.poll(0.05)

    def stop(self, flush_timeout_s=150):
        self.stopping.set()
        self.sender.join()
        self.poller.join()
        return self.producer.flush(flush_timeout_s)


def create_topic(bootstrap, min_insync, logger):
    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=logger)
    topic = NewTopic(TOPIC, num_partitions=1, replication_factor=3,
                     config={"min.insync.replicas": str(min_insync)})
    admin.create_topics([topic], operation_timeout=30, request_timeout=60)[TOPIC].result(timeout=90)


def controller_leader(cluster):
    status = cluster.get("/api/cluster")
    return status.get("controller_leader") if status else None


def largest_gap_s(history, start, end):
    """The longest time without an ack between start and end."""
    points = [start] + history.times_between(start, end) + [end]
    return max(b - a for a, b in zip(points, points[1:]))


def longest_silence(history, start, end):
    """(from, to): the consecutive acks in [start, end] furthest apart."""
    times = history.times_between(start, end)
    return max(zip(times, times[1:]), key=lambda pair: pair[1] - pair[0])


def ack_of_message_sent_after(history, moment, timeout_s, what):
    """Waits for an ack of a message handed to the producer after moment."""
    sequence = history.first_sequence_sent_after(moment)
    return wait_until(what, lambda: history.first_ack_of_sequence_from(sequence, moment),
                      timeout_s, interval_s=0.01)


def settled_partition(cluster):
    partition = cluster.agreed_partition()
    return partition if back_to_preferred(partition) else None


def acks_flowing(history):
    return history.first_ack_after(time.monotonic() - 0.2)


def run_round(number, cluster, history, args):
    partition = wait_until("a leader with all three nodes in sync",
                           lambda: settled_partition(cluster), args.round_timeout_s)
    leader, epoch = partition["leader"], partition["leader_epoch"]
    controller = controller_leader(cluster)
    wait_until("acks flowing before the kill", lambda: acks_flowing(history), args.round_timeout_s)
    killed_at = time.monotonic()
    cluster.kill(leader)
    gone_at = time.monotonic()
    new_ack = ack_of_message_sent_after(history, gone_at, args.round_timeout_s,
                                        "an ack of a message sent after the kill")
    last = history.last_ack_before(killed_at)
    if last is None:
        raise RuntimeError("no ack before the kill")
    old_end, new_start = longest_silence(history, last[1], new_ack[1])
    failover_s = new_start - old_end
    new_partition = cluster.partition() or {}
    log(f"round {number}: killed leader {leader} (epoch {epoch}"
        f"{', also the controller leader' if controller == leader else ''}); "
        f"failover {failover_s * 1000:.0f} ms, new leader {new_partition.get('leader')} "
        f"(epoch {new_partition.get('leader_epoch')})")

    restarted_at = time.monotonic()
    cluster.start(leader)
    wait_until(f"node {leader} back in the ISR and the leader again",
               lambda: settled_partition(cluster), args.round_timeout_s)
    ack_of_message_sent_after(history, time.monotonic(), args.round_timeout_s,
                              "an ack after the leadership came back")
    rejoined_at = time.monotonic()
    time.sleep(args.settle_s)
    return {
        "round": number,
        "killed_node": leader,
        "killed_leader_epoch": epoch,
        "killed_controller_leader": controller == leader,
        "failover_ms": failover_s * 1000,
        "kill_to_first_new_leader_ack_ms": (new_start - killed_at) * 1000,
        "acks_arriving_after_the_kill_from_the_old_leader":
            len(history.times_between(killed_at + 1e-9, old_end)),
        "kill_to_ack_of_a_message_sent_after_it_ms": (new_ack[1] - killed_at) * 1000,
        "new_leader": new_partition.get("leader"),
        "new_leader_epoch": new_partition.get("leader_epoch"),
        "rejoin_and_leadership_back_s": rejoined_at - restarted_at,
        "largest_ack_gap_while_rejoining_ms":
            largest_gap_s(history, restarted_at, rejoined_at) * 1000,
    }


def client_logger(out_dir):
    """librdkafka's own log lines (disconnects, retries) go to client.log."""
    logger = logging.getLogger("librdkafka")
    logger.propagate = False
    handler = logging.FileHandler(os.path.join(out_dir, "client.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger


def read_back(bootstrap, logger):
    """Every (offset, value) of the partition from offset 0 to its high watermark."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"failover-check-{os.getpid()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }, logger=logger)
    try:
        partition = TopicPartition(TOPIC, 0)
        _, high = consumer.get_watermark_offsets(partition, timeout=30)
        consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
        records = []
        deadline = time.monotonic() + 120
        while (not records or records[-1][0] < high - 1) and high > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read back stopped at offset {records[-1][0] if records else None} of {high}")
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"read back: {message.error()}")
            records.append((message.offset(), message.value()))
        return high, records
    finally:
        consumer.close()


def check(history, high_watermark, records):
    """Is every acknowledged value present exactly once, at its offset?"""
    values = []
    unparsable = 0
    for offset, value in records:
        try:
            values.append((offset, int(value)))
        except (TypeError, ValueError):
            unparsable += 1
    present = Counter(sequence for _, sequence in values)
    at_offset = dict(values)
    acked = {ack[0]: ack for ack in history.acks}
    failed = {failure[0] for failure in history.failures} - set(acked)
    missing = sorted(s for s in acked if present[s] == 0)
    duplicated = sorted(s for s in acked if present[s] > 1)
    wrong_offset = sorted(s for s, ack in acked.items() if at_offset.get(ack[2]) != s)
    order_breaks = sum(1 for (_, a), (_, b) in zip(values, values[1:]) if b <= a)
    result = {
        "sent": history.sent,
        "acknowledged": len(acked),
        "failed_deliveries": len(failed),
        "no_delivery_report": history.sent - len(acked) - len(failed),
        "failed_but_present": sum(1 for s in failed if present[s] > 0),
        "high_watermark": high_watermark,
        "records_read": len(records),
        "acknowledged_missing": len(missing),
        "acknowledged_duplicated": len(duplicated),
        "acknowledged_at_another_offset": len(wrong_offset),
        "any_value_duplicated": sum(1 for count in present.values() if count > 1),
        "values_never_sent": sum(1 for s in present if s >= history.sent or s < 0),
        "unparsable_records": unparsable,
        "order_breaks": order_breaks,
        "examples": {"missing": missing[:10], "duplicated": duplicated[:10],
                     "at_another_offset": wrong_offset[:10]},
        "distinct_failure_errors": sorted({failure[2] for failure in history.failures})[:10],
    }
    result["every_ack_present_exactly_once"] = not missing and not duplicated
    return result


def nearest_rank(values, fraction):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def machine_report(out_dir, weir_bin):
    """bench/lib.sh's machine description, as the other scripts write it."""
    path = os.path.join(out_dir, "machine.md")
    script = ('set -euo pipefail; source "$BENCH/lib.sh"; write_machine_report "$OUT/machine.md"')
    environment = dict(os.environ, ROOT=ROOT, BENCH=os.path.join(ROOT, "bench"), OUT=out_dir,
                       BROKERS="weir", BUILD="0", PIN="0", WEIR_REV="", WEIR_BIN=weir_bin,
                       BENCH_BIN=weir_bin)
    subprocess.run(["bash", "-c", script], env=environment, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as report:
            report.write(f"- CPUs: {os.cpu_count()}\n- Load average at the start: "
                         f"{' '.join(open('/proc/loadavg').read().split()[:3])}\n")
    with open(path, encoding="utf-8") as report:
        return report.read()


def write_summary(out_dir, command, machine, parameters, rounds, verdict, error):
    times = [r["failover_ms"] for r in rounds]
    percentiles = None
    if times:
        percentiles = {"p50_ms": statistics.median(times), "p99_ms": nearest_rank(times, 0.99),
                       "max_ms": max(times), "min_ms": min(times), "rounds": len(times)}
    summary = {"command": command, "parameters": parameters, "failover": percentiles,
               "rounds": rounds, "check": verdict, "error": error}
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as output:
        json.dump(summary, output, indent=2)
    lines = [
        "## Failover: kill -9 of a partition leader in a 3-node cluster",
        "",
        f"Command: `{command}`",
        "",
        "1 partition, replication factor 3, min.insync.replicas="
        f"{parameters['min_insync']}; one idempotent acks=all producer (confluent-kafka "
        f"{parameters['confluent_kafka']}, librdkafka {parameters['librdkafka']}, linger.ms=0) "
        f"sending one message every {parameters['interval_ms']} ms. Failover time = first "
        "acknowledgement from the new leader − last acknowledgement from the old one, as the "
        "producer saw them (the ends of the longest stretch without an ack between the last "
        "ack before the kill and the first ack of a message sent after it). The killed node is restarted on its data directory and the next round waits "
        "until it is back in the ISR and the leader again. All nodes and the client on one "
        "machine over loopback.",
        "",
        machine.rstrip(),
        "",
    ]
    if error:
        lines += [f"**The run stopped early:** {error}", ""]
    if percentiles:
        lines += [
            f"| failover over {len(times)} kills | p50 | p99 | max | min |",
            "|---|---:|---:|---:|---:|",
            f"| ms | {percentiles['p50_ms']:.0f} | {percentiles['p99_ms']:.0f} | "
            f"{percentiles['max_ms']:.0f} | {percentiles['min_ms']:.0f} |",
            "",
            "(p99 is the nearest-rank percentile: below 100 kills it is the largest.)",
            "",
            "| round | killed node (epoch) | also controller leader | failover ms "
            "| kill → first ack of the new leader ms | new leader (epoch) "
            "| rejoin + leadership back s | largest ack gap while rejoining ms |",
            "|---|---|---|---:|---:|---|---:|---:|",
        ]
        for r in rounds:
            lines.append(
                f"| {r['round']} | {r['killed_node']} ({r['killed_leader_epoch']}) | "
                f"{'yes' if r['killed_controller_leader'] else 'no'} | {r['failover_ms']:.0f} | "
                f"{r['kill_to_first_new_leader_ack_ms']:.0f} | {r['new_leader']} ({r['new_leader_epoch']}) | "
                f"{r['rejoin_and_leadership_back_s']:.1f} | "
                f"{r['largest_ack_gap_while_rejoining_ms']:.0f} |"
            )
        lines.append("")
    if verdict:
        lines += [
            "### Read back",
            "",
            f"**Every acknowledged value present exactly once: "
            f"{'yes' if verdict['every_ack_present_exactly_once'] else 'NO'}.**",
            "",
            "| figure | count |",
            "|---|---:|",
        ]
        lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in verdict.items()
                  if isinstance(value, int) and not isinstance(value, bool)]
        if verdict["distinct_failure_errors"]:
            lines += ["", "Delivery errors seen: " + "; ".join(verdict["distinct_failure_errors"])]
        lines.append("")
    text = "\n".join(lines)
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as output:
        output.write(text)
    print(text)


def write_history(out_dir, history):
    with open(os.path.join(out_dir, "history.csv"), "w", newline="", encoding="utf-8") as output:
        writer = csv.writer(output)
        writer.writerow(["sequence", "sent_monotonic_s", "report_monotonic_s", "offset", "error"])
        with history.lock:
            reports = [(s, t, offset, "") for s, t, offset in history.acks]
            reports += [(s, t, "", error) for s, t, error in history.failures]
            for sequence, arrived, offset, error in sorted(reports):
                sent = history.sent_times[sequence] if sequence < len(history.sent_times) else ""
                writer.writerow([sequence, f"{sent:.6f}" if sent != "" else "", f"{arrived:.6f}",
                                 offset, error])


def interrupt(_signal_number, _frame):
    """SIGTERM ends the run the way Ctrl-C does, through main's cleanup."""
    raise KeyboardInterrupt


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval-ms", type=float, default=2.0)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--min-insync", type=int, default=2)
    parser.add_argument("--port-base", type=int, default=21200)
    parser.add_argument("--round-timeout-s", type=float, default=120.0)
    parser.add_argument("-X", dest="properties", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.settle_s = 2, 1.0
    return args


def main():
    args = parse_args()
    command = "bench/failover.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    weir_bin = os.environ.get("WEIR_BIN", os.path.join(ROOT, "target", "release", "weir"))
    if not os.access(weir_bin, os.X_OK):
        sys.exit(f"missing {weir_bin} (set WEIR_BIN)")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out or os.path.join(ROOT, "bench", "results", f"failover-{stamp}")
    os.makedirs(out_dir, exist_ok=True)
    log(f"results in {out_dir}")
    machine = machine_report(out_dir, weir_bin)
    parameters = {
        "rounds": args.rounds, "interval_ms": args.interval_ms, "settle_s": args.settle_s,
        "min_insync": args.min_insync, "port_base": args.port_base, "weir_bin": weir_bin,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "producer_properties": args.properties,
    }
    signal.signal(signal.SIGTERM, interrupt)

    cluster = Cluster(weir_bin, args.port_base, out_dir)
    history = History()
    producer = None
    rounds, verdict, error = [], None, None
    try:
        for node_id in NODE_IDS:
            cluster.start(node_id)
        wait_until("the cluster to form", cluster.formed, 60, interval_s=0.2)
        logger = client_logger(out_dir)
        create_topic(cluster.bootstrap(), args.min_insync, logger)
        wait_until("all three nodes in the topic's ISR",
                   lambda: fully_in_sync(cluster.agreed_partition()), 60)
        properties = dict(p.split("=", 1) for p in args.properties)
        producer = SteadyProducer(cluster.bootstrap(), args.interval_ms / 1000, properties,
                                  history, logger)
        parameters["producer_config"] = {k: v for k, v in producer.config.items()
                                         if k != "bootstrap.servers"}
        producer.start()
        time.sleep(args.settle_s)
        try:
            for number in range(1, args.rounds + 1):
                rounds.append(run_round(number, cluster, history, args))
        except (TimeoutError, RuntimeError) as failure:
            error = f"round {len(rounds) + 1}: {failure}"
            log(error)
        left = producer.stop()
        producer = None
        if left:
            log(f"{left} messages still unacknowledged after the flush")
        high_watermark, records = read_back(cluster.bootstrap(), logger)
        verdict = check(history, high_watermark, records)
        log(f"read back {len(records)} records: every acknowledged value present exactly once: "
            f"{verdict['every_ack_present_exactly_once']}")
    except KeyboardInterrupt:
        error = "interrupted"
        raise
    except Exception as failure:  # noqa: BLE001 - recorded in the summary, then exit 1
        error = f"{type(failure).__name__}: {failure}"
        log(traceback.format_exc())
    finally:
        if producer is not None:
            producer.stopping.set()
        cluster.stop()
        write_history(out_dir, history)
        write_summary(out_dir, command, machine, parameters, rounds, verdict, error)
    return 0 if not error and verdict and verdict["every_ack_present_exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
