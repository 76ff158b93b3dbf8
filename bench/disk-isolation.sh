#!/usr/bin/env bash
# Disk work off the async threads: does one partition's disk work (fsync,
# 64 MiB segment rolls, index writes, retention deletes) delay another
# partition's readers?
#
# For every repeat, and for every broker binary in turn (interleaved, so
# both see the same machine load), start `weir server` on a fresh data
# directory and run two loads at once:
#
# * partition A (topic `roll-a`, segment.bytes = 64 MiB, retention.bytes =
#   256 MiB, retention checked every second): `weir bench kafka produce`,
#   acks=all, open loop at --heavy-rate messages of --heavy-size bytes, so
#   it rolls a segment every 64 MiB and retention deletes the oldest;
# * partition B (topic `light-b`, flush.ms = 1000, so its own writes wait
#   for no fsync and its latency shows only how fast the broker's threads
#   answer): `weir bench kafka e2e`, open loop at --light-rate, consumer
#   long-polling (fetch.wait.max.ms = --fetch-wait-ms). Each message's
#   latency runs from its scheduled send time to its receipt by the
#   consumer: produce request, append, the long poll waking, the fetch.
#
# Reported: B's end-to-end latency p50 / p99 / p99.9 / max, A's delivered
# rate and acknowledgement latency, segments rolled on A; medians over the
# repeats per binary, and after/before ratios.
#
# Usage: bench/disk-isolation.sh --before BIN --after BIN [options]
#       --before BIN, --after BIN   `weir` binaries to compare (the load tool,
#                                   `weir bench`, is --after's)
#   -r, --repeats N         runs per binary                     (default 3)
#   -d, --duration-s S      seconds per run                     (default 30)
#       --heavy-rate R      messages/s produced to A            (default 40000)
#       --heavy-size B      message size on A                   (default 2048)
#       --light-rate R      messages/s produced to B            (default 200)
#       --fetch-wait-ms MS  B's consumer fetch.wait.max.ms      (default 500)
#       --out DIR           where results go (default bench/results/disk-isolation-<time>)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

BEFORE=""
AFTER=""
REPEATS=3
DURATION_S=30
HEAVY_RATE=40000
HEAVY_SIZE=2048
LIGHT_RATE=200
FETCH_WAIT_MS=500
OUT=""
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        --before) BEFORE=$2; shift 2 ;;
        --after) AFTER=$2; shift 2 ;;
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -d|--duration-s) DURATION_S=$2; shift 2 ;;
        --heavy-rate) HEAVY_RATE=$2; shift 2 ;;
        --heavy-size) HEAVY_SIZE=$2; shift 2 ;;
        --light-rate) LIGHT_RATE=$2; shift 2 ;;
        --fetch-wait-ms) FETCH_WAIT_MS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done
[[ -x $BEFORE && -x $AFTER ]] || { echo "give --before BIN and --after BIN (executables)" >&2; exit 64; }

OUT=${OUT:-$BENCH/results/disk-isolation-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"

# lib.sh starts and stops brokers; it builds nothing here.
BROKERS=weir
BUILD=0
PIN=0
WEIR_REV=""
BENCH_BIN=$AFTER
WEIR_BIN=$AFTER
# Ports of their own: other brokers may run on the machine (lib.sh's defaults).
WEIR_PORT=${WEIR_PORT:-29092}
WEIR_AMQP_PORT=${WEIR_AMQP_PORT:-29672}
HTTP_PORT=${HTTP_PORT:-29080}
export WEIR_LOG_RETENTION_CHECK_INTERVAL_MS=1000
WEIR_ARGS="--http-listen 127.0.0.1:$HTTP_PORT"
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
write_machine_report "$OUT/machine.md"
echo "- Binaries: before = \`$BEFORE\`, after = \`$AFTER\`" >> "$OUT/machine.md"

one_run() {
    local label=$1 binary=$2 run=$3 heavy_pid light heavy segments
    WEIR_BIN=$binary
    start_broker weir "$OUT/$label-$run.log" || return 0
    local api=(--api "http://127.0.0.1:$HTTP_PORT")
    "$binary" topic create "${api[@]}" roll-a --partitions 1 \
        --config segment.bytes=67108864 --config retention.bytes=268435456 > /dev/null
    "$binary" topic create "${api[@]}" light-b --partitions 1 --config flush.ms=1000 > /dev/null
    # A starts first and outlasts B by a second at each end.
    "$BENCH_BIN" bench kafka produce --broker "127.0.0.1:$BROKER_PORT" --topic roll-a \
        --no-create-topic --acks all --linger-ms 5 -s "$HEAVY_SIZE" \
        --rate "$HEAVY_RATE" --duration-s $((DURATION_S + 2)) --idle-timeout-s 30 \
        --json --no-progress > "$OUT/$label-$run-heavy.json" 2> "$OUT/$label-$run-heavy.stderr" &
    heavy_pid=$!
    sleep 1
    light=$(bench_json "$OUT/$label-$run-light.stderr" kafka e2e --label "$label" \
        --broker "127.0.0.1:$BROKER_PORT" --topic light-b --no-create-topic \
        --acks all --linger-ms 0 --fetch-wait-ms "$FETCH_WAIT_MS" \
        --rate "$LIGHT_RATE" --duration-s "$DURATION_S" -s 100 --idle-timeout-s 30)
    wait "$heavy_pid" || true
    heavy=$(cat "$OUT/$label-$run-heavy.json" 2>/dev/null)
    jq -e . <<< "$heavy" > /dev/null 2>&1 || heavy='{"error": "no result"}'
    segments=$(find "$DATA_DIR/topics/roll-a" -name '*.log' 2>/dev/null | wc -l)
    stop_broker
    jq -cn --arg which "$label" --argjson run "$run" --argjson light "$light" \
        --argjson heavy "$heavy" --argjson segments_left "$segments" '
        def ms: if . == null then null else . / 1000 end;
        {"label": $which, run: $run,
         complete: (($light.complete // false) and ($heavy.complete // false)),
         figures: {
           "B e2e p50 ms": ($light.latency_us.p50 | ms),
           "B e2e p99 ms": ($light.latency_us.p99 | ms),
           "B e2e p99.9 ms": ($light.latency_us.p999 | ms),
           "B e2e max ms": ($light.latency_us.max | ms),
           "A delivered MB/s": (if $heavy.rate_msgs_per_s == null then null
                                else $heavy.rate_msgs_per_s * ($heavy.parameters.load.size_bytes // 0) / 1e6 end),
           "A ack p99 ms": ($heavy.latency_us.p99 | ms),
           "A segments kept": $segments_left},
         light: $light, heavy: $heavy}' >> "$RESULTS"
    log "$label run $run: $(tail -1 "$RESULTS" | jq -c '.figures')"
}

log "results in $OUT"
for run in $(seq 1 "$REPEATS"); do
    log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
    one_run before "$BEFORE" "$run"
    log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
    one_run after "$AFTER" "$run"
done

{
    echo "## Disk work and readers: partition B's end-to-end latency while partition A rolls 64 MiB segments"
    echo
    command_line=bench/disk-isolation.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\`"
    echo
    cat "$OUT/machine.md"
    echo
    jq -rs '
        def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
        def fmt: if . == null then "–" elif . >= 100 then (. | round | tostring)
                 else ((. * 100 | round) / 100 | tostring) end;
        (map(.figures | keys_unsorted) | first) as $names
        | (group_by(.label) | map({key: .[0].label,
              value: (. as $runs | [$names[] as $n | {key: $n,
                  value: ([$runs[] | .figures[$n] | select(. != null)] | median)}] | from_entries),
              runs: length, complete: (map(select(.complete)) | length)})) as $groups
        | ($groups | map({(.key): .}) | add) as $by
        | "| figure (median of runs) | before | after | after / before |",
          "|---|---:|---:|---:|",
          ($names[] as $n
            | ($by.before.value[$n]) as $b | ($by.after.value[$n]) as $a
            | "| \($n) | \($b | fmt) | \($a | fmt) | \(if $a == null or $b == null or $b == 0 then "–" else ($a / $b * 100 | round / 100 | tostring) end) |"),
          "",
          "Runs: before \($by.before.runs) (\($by.before.complete) complete), after \($by.after.runs) (\($by.after.complete) complete).",
          "",
          "Every run:",
          "",
          "| binary | run | " + ($names | join(" | ")) + " |",
          "|---|---:|" + ($names | map("---:") | join("|")) + "|",
          (.[] | . as $r | "| \($r.label) | \($r.run) | " + ([$names[] | $r.figures[.] | fmt] | join(" | ")) + " |")
    ' "$RESULTS"
} | tee "$OUT/summary.md"
