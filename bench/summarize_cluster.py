#!/usr/bin/env python3
"""Summarise bench/cluster.sh (runs.jsonl) as Markdown.

runs.jsonl has one line per run, as summarize_runs.py reads it, with the
setup ("single" or "cluster") in "broker" and cases named
"<size> B, <n> partition(s), closed loop" or "…, open loop at <R> msg/s".

Prints a headline table (throughput and its cluster / single ratio per
closed-loop case; ack latency per open-loop case), the median of every
figure per case and setup over the complete runs with the cluster / single
ratio, then every run.

Usage: summarize_cluster.py runs.jsonl [--base single] [--other cluster]
"""

import argparse

from summarize_runs import complete_cell, fmt, load, medians, ordered, print_every_run


def ratio(mine, base):
    return f"{mine / base:.2f}×" if mine and base else "–"


def print_headline(runs, table, counts, base, other):
    closed = [case for case in table if case.endswith(", closed loop")]
    opened = [case for case in table if ", open loop at " in case]
    if closed:
        print(
            f"| case | {base} msg/s | {other} msg/s | {other} / {base} "
            f"| {base} MB/s | {other} MB/s | complete runs ({base}, {other}) |"
        )
        print("|---|---:|---:|---:|---:|---:|---|")
        for case in closed:
            mine = table[case].get(other, {})
            theirs = table[case].get(base, {})
            cells = [
                case.removesuffix(", closed loop"),
                fmt(theirs.get("produce msg/s")),
                fmt(mine.get("produce msg/s")),
                ratio(mine.get("produce msg/s"), theirs.get("produce msg/s")),
                fmt(theirs.get("produce MB/s")),
                fmt(mine.get("produce MB/s")),
                ", ".join(
                    complete_cell(runs, case, setup, counts[case].get(setup, (0, 0)))
                    for setup in (base, other)
                ),
            ]
            print("| " + " | ".join(cells) + " |")
        print()
    if opened:
        print(
            f"| case (open loop) | {base} ack p50 ms | {other} ack p50 ms "
            f"| {base} ack p99 ms | {other} ack p99 ms | {other} / {base} p99 "
            f"| {base} ack max ms | {other} ack max ms |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for case in opened:
            mine = table[case].get(other, {})
            theirs = table[case].get(base, {})
            cells = [
                case,
                fmt(theirs.get("ack p50 ms")),
                fmt(mine.get("ack p50 ms")),
                fmt(theirs.get("ack p99 ms")),
                fmt(mine.get("ack p99 ms")),
                ratio(mine.get("ack p99 ms"), theirs.get("ack p99 ms")),
                fmt(theirs.get("ack max ms")),
                fmt(mine.get("ack max ms")),
            ]
            print("| " + " | ".join(cells) + " |")
        print()


def print_medians(runs, table, counts, base, other):
    setups = ordered(run["broker"] for run in runs)
    header = ["case", "figure"] + setups + [f"{other} / {base}"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case, by_setup in table.items():
        cells = [case, "complete runs"]
        cells += [complete_cell(runs, case, s, counts[case].get(s, (0, 0))) for s in setups]
        print("| " + " | ".join(cells + [""]) + " |")
        names = ordered(name for figures in by_setup.values() for name in figures)
        for name in names:
            values = [by_setup.get(setup, {}).get(name) for setup in setups]
            if all(value is None for value in values):
                continue
            row = [case, name] + [fmt(value) for value in values]
            row.append(ratio(by_setup.get(other, {}).get(name), by_setup.get(base, {}).get(name)))
            print("| " + " | ".join(row) + " |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("runs")
    parser.add_argument("--base", default="single")
    parser.add_argument("--other", default="cluster")
    args = parser.parse_args()
    runs = load(args.runs)
    if not runs:
        print("No runs recorded.")
        return
    table, counts = medians(runs)
    print("### Headline (medians over complete runs)\n")
    print_headline(runs, table, counts, args.base, args.other)
    print("### Medians of every figure over complete runs\n")
    print_medians(runs, table, counts, args.base, args.other)
    print("\n### Every run\n")
    print_every_run(runs)


if __name__ == "__main__":
    main()
