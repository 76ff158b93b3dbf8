#!/usr/bin/env python3
"""Summarise runs of the bench/ scripts (runs.jsonl) as Markdown.

Each line of runs.jsonl is one run of one broker on one case:

    {"broker": "weir", "run": 1, "case": "100 B, 1 partition",
     "complete": true, "status": "ok", "figures": {"produce msg/s": 1.0, ...}}

Prints the median of every figure per case and broker over the complete
runs, the ratio of Weir's median to every other broker's, and, when
--hardware names the JSON that bench/hardware.sh wrote, Weir's MB/s figures
as a fraction of what the machine measured: produce/publish/fill against
sequential write with fdatasync, consume/drain/e2e against loopback TCP.

Usage: summarize_runs.py runs.jsonl [--hardware hardware.json] [--every-run]
"""

import argparse
import json
import os
import statistics


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def load(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def ordered(values):
    return list(dict.fromkeys(values))


def hardware_limit(name, hardware):
    """The hardware figure a Weir MB/s figure is compared with, if any."""
    if not hardware or "MB/s" not in name:
        return None, None
    lowered = name.lower()
    if any(word in lowered for word in ("produce", "publish", "fill")):
        return hardware.get("disk_write_fdatasync_mb_per_s"), "disk write (fdatasync)"
    if any(word in lowered for word in ("consume", "drain", "e2e")):
        return hardware.get("loopback_tcp_mb_per_s"), "loopback TCP"
    return None, None


def medians(runs):
    """{case: {broker: {figure: median}}} and {case: {broker: (good, all)}}."""
    table, counts = {}, {}
    for case in ordered(run["case"] for run in runs):
        table[case], counts[case] = {}, {}
        for broker in ordered(run["broker"] for run in runs if run["case"] == case):
            mine = [run for run in runs if run["case"] == case and run["broker"] == broker]
            good = [run for run in mine if run.get("complete")]
            counts[case][broker] = (len(good), len(mine))
            figures = ordered(name for run in mine for name in (run.get("figures") or {}))
            table[case][broker] = {}
            for name in figures:
                values = [(run.get("figures") or {}).get(name) for run in good]
                values = [value for value in values if isinstance(value, (int, float))]
                table[case][broker][name] = statistics.median(values) if values else None
    return table, counts


def complete_cell(runs, case, broker, count):
    """`good/all`, with the reason when no run completed (e.g. pending)."""
    cell = "{}/{}".format(*count)
    if count[0] == 0 and count[1] > 0:
        reasons = ordered(
            run.get("status") or "incomplete"
            for run in runs
            if run["case"] == case and run["broker"] == broker
        )
        cell += " (" + "; ".join(reasons) + ")"
    return cell


def print_medians(runs, hardware):
    table, counts = medians(runs)
    brokers = ordered(run["broker"] for run in runs)
    others = [broker for broker in brokers if broker != "weir" and "weir" in brokers]
    header = ["case", "figure"] + brokers + [f"weir / {other}" for other in others]
    if hardware:
        header.append("weir / hardware")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case, by_broker in table.items():
        cells = [case, "complete runs"] + [
            complete_cell(runs, case, broker, counts[case].get(broker, (0, 0)))
            for broker in brokers
        ]
        cells += [""] * (len(header) - len(cells))
        print("| " + " | ".join(cells) + " |")
        names = ordered(name for figures in by_broker.values() for name in figures)
        for name in names:
            row = [case, name] + [fmt(by_broker.get(broker, {}).get(name)) for broker in brokers]
            mine = by_broker.get("weir", {}).get(name)
            for other in others:
                theirs = by_broker.get(other, {}).get(name)
                row.append(f"{mine / theirs:.2f}×" if mine and theirs else "–")
            if hardware:
                limit, what = hardware_limit(name, hardware)
                row.append(f"{mine / limit:.0%} of {what}" if mine and limit else "")
            print("| " + " | ".join(row) + " |")


def print_every_run(runs):
    names = ordered(name for run in runs for name in (run.get("figures") or {}))[:6]
    print("| case | broker | run | " + " | ".join(names) + " | status |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    for run in runs:
        figures = run.get("figures") or {}
        cells = [run["case"], run["broker"], str(run["run"])]
        cells += [fmt(figures.get(name)) for name in names]
        cells.append(run.get("status") or ("ok" if run.get("complete") else "incomplete"))
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("runs")
    parser.add_argument("--hardware")
    parser.add_argument("--every-run", action="store_true")
    args = parser.parse_args()
    runs = load(args.runs)
    hardware = None
    if args.hardware and os.path.exists(args.hardware):
        with open(args.hardware, encoding="utf-8") as source:
            hardware = json.load(source)
    print("### Medians over complete runs\n")
    print_medians(runs, hardware)
    if hardware:
        print(
            f"\nHardware (bench/hardware.sh, {hardware.get('measured_at', 'same machine')}): "
            f"sequential write with fdatasync {fmt(hardware.get('disk_write_fdatasync_mb_per_s'))} MB/s, "
            f"loopback TCP {fmt(hardware.get('loopback_tcp_mb_per_s'))} MB/s, "
            f"fdatasync of a 4 KiB write p50 {fmt(hardware.get('fdatasync_p50_ms'))} ms."
        )
    if args.every_run:
        print("\n### Every run\n")
        print_every_run(runs)


if __name__ == "__main__":
    main()
