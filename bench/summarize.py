#!/usr/bin/env python3
"""Summarise bench/kafka-throughput.sh runs (runs.jsonl) as markdown.

Prints a per-run table, then the median of every figure per broker over the
runs that completed (every message acknowledged and read back), then
Weir / other-broker ratios of those medians.
"""

import json
import statistics
import sys


def per_message_us(seconds, messages):
    if seconds is None or not messages:
        return None
    return seconds / messages * 1e6


def figures(run):
    """The figures of one run, or None for a figure it does not have."""
    produce = run.get("produce") or {}
    consume = run.get("consume") or {}
    return {
        "produce msg/s": produce.get("msgs_per_s"),
        "produce MB/s": produce.get("mb_per_s"),
        "consume msg/s": consume.get("msgs_per_s"),
        "consume MB/s": consume.get("mb_per_s"),
        "broker CPU µs/msg (produce)": per_message_us(
            run.get("broker_cpu_produce_s"), produce.get("messages")
        ),
        "broker CPU µs/msg (consume)": per_message_us(
            run.get("broker_cpu_consume_s"), consume.get("messages")
        ),
        "client CPU µs/msg (produce)": produce.get("client_cpu_us_per_msg"),
        "client CPU µs/msg (consume)": consume.get("client_cpu_us_per_msg"),
        "broker peak RSS MiB": run.get("broker_peak_rss_mib"),
    }


def complete(run):
    produce = run.get("produce") or {}
    consume = run.get("consume") or {}
    return bool(produce.get("complete")) and bool(consume.get("complete"))


def status(run):
    if "error" in run:
        return run["error"]
    produce = run.get("produce") or {}
    consume = run.get("consume") or {}
    notes = []
    if not produce.get("complete"):
        notes.append(
            f"produce incomplete: {produce.get('messages')}/{produce.get('requested')} acked, "
            f"{produce.get('failed')} failed, {produce.get('first_error') or produce.get('error')}"
        )
    if not consume.get("complete"):
        notes.append(
            f"consume incomplete: {consume.get('messages')}/{consume.get('requested')} read, "
            f"{consume.get('first_error') or consume.get('error')}"
        )
    for key in ("sequence_breaks", "offset_gaps", "offset_regressions", "wrong_size"):
        if consume.get(key):
            notes.append(f"{key}={consume[key]}")
    return "; ".join(notes) or "ok"


def fmt(value):
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def main(path):
    with open(path, encoding="utf-8") as lines:
        runs = [json.loads(line) for line in lines if line.strip()]
    brokers = list(dict.fromkeys(run["broker"] for run in runs))
    names = list(figures({}).keys())

    print("### Every run\n")
    print(
        "| broker | run | produce msg/s | consume msg/s | broker CPU s (produce / consume) "
        "| client CPU s (produce / consume) | other processes' CPU s, run wall s | status |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        f = figures(run)
        cpu = f"{fmt(run.get('broker_cpu_produce_s'))} / {fmt(run.get('broker_cpu_consume_s'))}"
        client = (
            f"{fmt((run.get('produce') or {}).get('client_cpu_s'))} / "
            f"{fmt((run.get('consume') or {}).get('client_cpu_s'))}"
        )
        other = f"{fmt(run.get('other_cpu_s'))}, {fmt(run.get('run_wall_s'))}"
        print(
            f"| {run['broker']} | {run['run']} | {fmt(f['produce msg/s'])} | "
            f"{fmt(f['consume msg/s'])} | {cpu} | {client} | {other} | {status(run)} |"
        )

    medians = {}
    counts = {}
    for broker in brokers:
        good = [run for run in runs if run["broker"] == broker and complete(run)]
        counts[broker] = (len(good), sum(run["broker"] == broker for run in runs))
        medians[broker] = {}
        for name in names:
            values = [figures(run)[name] for run in good]
            values = [value for value in values if value is not None]
            medians[broker][name] = statistics.median(values) if values else None

    print("\n### Medians over complete runs\n")
    print("| figure | " + " | ".join(brokers) + " |")
    print("|---|" + "---|" * len(brokers))
    print("| complete runs | " + " | ".join(f"{counts[b][0]}/{counts[b][1]}" for b in brokers) + " |")
    for name in names:
        print(f"| {name} | " + " | ".join(fmt(medians[b][name]) for b in brokers) + " |")

    others = [b for b in brokers if b != "weir"]
    if "weir" in brokers and others:
        print("\n### Ratio Weir / other (medians; > 1 means Weir higher)\n")
        print("| figure | " + " | ".join(f"weir / {b}" for b in others) + " |")
        print("|---|" + "---|" * len(others))
        for name in names:
            cells = []
            for other in others:
                mine, theirs = medians["weir"][name], medians[other][name]
                cells.append(f"{mine / theirs:.2f}×" if mine and theirs else "–")
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
