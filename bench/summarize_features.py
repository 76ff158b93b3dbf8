#!/usr/bin/env python3
"""Summarise bench/kafka-features.sh runs (runs.jsonl) as markdown.

Producer modes: per partition count, per broker and mode, the median over
complete runs (every message acknowledged and, when verified, read back
exactly once) of msgs/s and of broker and client CPU per message, with each
median's ratio to the plain producer's median on the same broker.

Group formation: per broker, the median, spread and every value of the
time until all consumers held a share and had read from it.
"""

import json
import statistics
import sys

MODES = ["plain", "idempotent", "transactional"]


def fmt(value, digits=2):
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def ratio(mine, plain):
    return f"{mine / plain:.2f}×" if mine is not None and plain else "–"


def produce_complete(run):
    produce = run.get("produce") or {}
    verify = run.get("verify")
    return bool(produce.get("complete")) and (verify is None or bool(verify.get("complete")))


def produce_status(run):
    produce = run.get("produce") or {}
    verify = run.get("verify")
    if produce.get("error"):
        return f"failed: {produce['error']}"
    if not produce.get("complete"):
        return (
            f"produce incomplete: {produce.get('messages')}/{produce.get('requested')} acked, "
            f"{produce.get('transactions')} transactions, "
            f"{produce.get('first_error') or produce.get('error')}"
        )
    if verify is not None and not verify.get("complete"):
        return (
            f"read back {verify.get('messages')}: duplicates={verify.get('duplicates')}, "
            f"missing={verify.get('missing')}, {verify.get('first_error') or verify.get('error')}"
        )
    return "ok" if verify is not None else "ok (not read back)"


def produce_figures(run):
    produce = run.get("produce") or {}
    messages = produce.get("messages")
    cpu = run.get("broker_cpu_s")
    return {
        "msgs/s": produce.get("msgs_per_s"),
        "broker µs/msg": cpu / messages * 1e6 if cpu is not None and messages else None,
        "client µs/msg": produce.get("client_cpu_us_per_msg"),
        "commit p50 ms": produce.get("commit_ms_p50"),
        "commit p99 ms": produce.get("commit_ms_p99"),
    }


def print_every_produce_run(runs):
    print("### Every producer run\n")
    print(
        "| broker | run | partitions | mode | msg/s | broker CPU s | client CPU s "
        "| other processes' CPU s | commit p50 / p99 ms | status |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        produce = run.get("produce") or {}
        figures = produce_figures(run)
        commits = (
            f"{fmt(figures['commit p50 ms'], 1)} / {fmt(figures['commit p99 ms'], 1)}"
            if produce.get("transactions")
            else "–"
        )
        print(
            f"| {run['broker']} | {run['run']} | {run['partitions']} | {run['mode']} "
            f"| {fmt(figures['msgs/s'])} | {fmt(run.get('broker_cpu_s'))} "
            f"| {fmt(produce.get('client_cpu_s'))} | {fmt(run.get('other_cpu_s'))} "
            f"| {commits} | {produce_status(run)} |"
        )


def print_produce_medians(runs):
    brokers = list(dict.fromkeys(run["broker"] for run in runs))
    partition_counts = sorted({run["partitions"] for run in runs})
    modes = [mode for mode in MODES if any(run["mode"] == mode for run in runs)]
    for partitions in partition_counts:
        print(f"\n### Producer modes, {partitions} partition(s): medians over complete runs\n")
        print(
            "| broker | mode | complete runs | msg/s | msg/s min–max | × plain "
            "| broker CPU µs/msg | × plain | client CPU µs/msg | commit p50 / p99 ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for broker in brokers:
            medians = {}
            for mode in modes:
                mine = [
                    run
                    for run in runs
                    if run["broker"] == broker
                    and run["partitions"] == partitions
                    and run["mode"] == mode
                ]
                good = [run for run in mine if produce_complete(run)]
                figures = [produce_figures(run) for run in good]
                medians[mode] = {
                    name: median([f[name] for f in figures])
                    for name in produce_figures({}).keys()
                }
                rates = [f["msgs/s"] for f in figures if f["msgs/s"] is not None]
                spread = f"{fmt(min(rates))}–{fmt(max(rates))}" if rates else "–"
                plain = medians.get("plain", {})
                m = medians[mode]
                commits = (
                    f"{fmt(m['commit p50 ms'], 1)} / {fmt(m['commit p99 ms'], 1)}"
                    if m["commit p50 ms"] is not None
                    else "–"
                )
                note = ""
                if not good and mine:
                    note = f" ({produce_status(mine[0])})"
                print(
                    f"| {broker} | {mode} | {len(good)}/{len(mine)}{note} | {fmt(m['msgs/s'])} "
                    f"| {spread} | {ratio(m['msgs/s'], plain.get('msgs/s'))} "
                    f"| {fmt(m['broker µs/msg'])} | {ratio(m['broker µs/msg'], plain.get('broker µs/msg'))} "
                    f"| {fmt(m['client µs/msg'])} | {commits} |"
                )


def print_rebalance(runs):
    brokers = list(dict.fromkeys(run["broker"] for run in runs))
    print("\n### Every group formation\n")
    print(
        "| broker | run | round | ready s | all assigned s | assignments per member "
        "| stable after | close s | status |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        result = run.get("rebalance") or {}
        members = result.get("members") or []
        per_member = "/".join(str(m.get("assign_events")) for m in members) or "–"
        status = "ok" if result.get("complete") else (
            result.get("error") or f"not ready or not stable (errors={result.get('errors')})"
        )
        print(
            f"| {run['broker']} | {run['run']} | {run['round']} | {fmt(result.get('ready_s'), 3)} "
            f"| {fmt(result.get('all_assigned_s'), 3)} | {per_member} "
            f"| {result.get('settle_s')} s: {result.get('stable')} | {fmt(result.get('close_s'), 3)} "
            f"| {status} |"
        )
    print("\n### Group formation: time until every consumer holds a share and has read from it\n")
    print(
        "| broker | complete | median s | min–max s | every value, sorted (s) "
        "| formations needing a second rebalance | median close s |"
    )
    print("|---|---|---|---|---|---|---|")
    for broker in brokers:
        mine = [run.get("rebalance") or {} for run in runs if run["broker"] == broker]
        good = [result for result in mine if result.get("complete")]
        ready = sorted(result["ready_s"] for result in good)
        again = sum(1 for result in good if (result.get("generations_seen") or 0) > 1)
        print(
            f"| {broker} | {len(good)}/{len(mine)} | {fmt(median(ready), 3)} "
            f"| {fmt(ready[0] if ready else None, 3)}–{fmt(ready[-1] if ready else None, 3)} "
            f"| {', '.join(f'{value:.2f}' for value in ready)} | {again}/{len(good)} "
            f"| {fmt(median([result.get('close_s') for result in good]), 3)} |"
        )


def print_memory(runs):
    brokers = list(dict.fromkeys(run["broker"] for run in runs))
    cells = []
    for broker in brokers:
        peak = median([run.get("broker_peak_rss_mib") for run in runs if run["broker"] == broker])
        cells.append(f"{broker} {fmt(peak)} MiB")
    print("\nBroker peak RSS over a whole broker start (median): " + ", ".join(cells))


def main(path):
    with open(path, encoding="utf-8") as lines:
        runs = [json.loads(line) for line in lines if line.strip()]
    produce_runs = [run for run in runs if run.get("phase") == "produce"]
    rebalance_runs = [run for run in runs if run.get("phase") == "rebalance"]
    broker_runs = [run for run in runs if run.get("phase") == "broker"]
    for run in broker_runs:
        if "error" in run:
            print(f"- {run['broker']} run {run['run']}: {run['error']}")
    if produce_runs:
        print_every_produce_run(produce_runs)
        print_produce_medians(produce_runs)
    if rebalance_runs:
        print_rebalance(rebalance_runs)
    if broker_runs:
        print_memory(broker_runs)


if __name__ == "__main__":
    main(sys.argv[1])
