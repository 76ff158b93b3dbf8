#!/usr/bin/env bash
# Table 2: Kafka end-to-end latency at fixed rates, Weir against tansu, with
# `weir bench kafka e2e` (librdkafka producer and consumer in one process).
#
# 1. Weir's maximum: for every repeat, start Weir on a fresh data directory
#    and run `kafka e2e` closed loop (as fast as the producer goes, the
#    consumer reading at once); the median of the consumed rates is "Weir's
#    max". tansu's closed-loop figure is measured the same way, for
#    reference.
# 2. For every repeat and broker in turn, start the broker and run `kafka
#    e2e --rate R --duration-s D` open loop at 10 %, 50 % and 80 % of
#    Weir's max. Each message's latency runs from its *scheduled* send time
#    to its receipt by the consumer, so a stall is charged to every message
#    queued behind it (no coordinated omission); HDR histograms give
#    p50 … p99.99 and max.
#
# Usage: bench/kafka-latency.sh [options]
#   -r, --repeats N         runs per broker                        (default 3)
#   -b, --brokers LIST      from: weir tansu tansu-sqlite          (default "weir tansu")
#   -s, --size BYTES        value size                             (default 100)
#   -d, --duration-s S      seconds per open-loop run              (default 10)
#       --max-messages N    messages of a closed-loop max run      (default 2000000)
#       --percents LIST     rates as % of Weir's max               (default "10 50 80")
#       --weir-max RATE     skip step 1 and use this rate (msg/s)
#       --linger-ms MS      producer linger.ms                     (default 1)
#       --fetch-wait-ms MS  consumer fetch.wait.max.ms             (default 10)
#   -P, --producer-property K=V   extra librdkafka producer property (repeatable)
#       --quick             smoke check in under a minute: 1 repeat, 2 s runs,
#                           200,000-message max run
#       --pin, --weir-rev REV, --no-build, --out DIR   as in kafka-throughput.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

REPEATS=3
BROKERS="weir tansu"
SIZE=100
DURATION_S=10
MAX_MESSAGES=2000000
PERCENTS="10 50 80"
WEIR_MAX=""
LINGER_MS=1
FETCH_WAIT_MS=10
PIN=0
BUILD=1
OUT=""
WEIR_REV=""
PRODUCER_PROPERTIES=()
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -b|--brokers) BROKERS=$2; shift 2 ;;
        -s|--size) SIZE=$2; shift 2 ;;
        -d|--duration-s) DURATION_S=$2; shift 2 ;;
        --max-messages) MAX_MESSAGES=$2; shift 2 ;;
        --percents) PERCENTS=$2; shift 2 ;;
        --weir-max) WEIR_MAX=$2; shift 2 ;;
        --linger-ms) LINGER_MS=$2; shift 2 ;;
        --fetch-wait-ms) FETCH_WAIT_MS=$2; shift 2 ;;
        -P|--producer-property) PRODUCER_PROPERTIES+=(-X "$2"); shift 2 ;;
        --quick) REPEATS=1; DURATION_S=2; MAX_MESSAGES=200000; shift ;;
        --pin) PIN=1; shift ;;
        --weir-rev) WEIR_REV=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done

OUT=${OUT:-$BENCH/results/latency-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
write_machine_report "$OUT/machine.md"

E2E_FLAGS=(--partitions 1 -s "$SIZE" --acks all --linger-ms "$LINGER_MS"
           --fetch-wait-ms "$FETCH_WAIT_MS" --idle-timeout-s 30)

# record BROKER RUN CASE JSON
record() {
    jq -cn --arg broker "$1" --argjson run "$2" --arg case "$3" --argjson e2e "$4" '
        def ms: if . == null then null else . / 1000 end;
        {broker: $broker, run: $run, case: $case, complete: ($e2e.complete // false),
         status: ($e2e.error // $e2e.details.first_error // "ok"),
         figures: {
           "rate asked msg/s": $e2e.parameters.load.rate_per_s,
           "received msg/s": $e2e.rate_msgs_per_s,
           "e2e p50 ms": ($e2e.latency_us.p50 | ms),
           "e2e p90 ms": ($e2e.latency_us.p90 | ms),
           "e2e p99 ms": ($e2e.latency_us.p99 | ms),
           "e2e p99.9 ms": ($e2e.latency_us.p999 | ms),
           "e2e p99.99 ms": ($e2e.latency_us.p9999 | ms),
           "e2e max ms": ($e2e.latency_us.max | ms),
           "produce ack p50 ms": ($e2e.details.produce_latency_us.p50 | ms),
           "produce ack p99 ms": ($e2e.details.produce_latency_us.p99 | ms),
           "broker CPU µs/msg": $e2e.broker.cpu_us_per_msg,
           "broker peak RSS MiB": (if $e2e.broker.rss_peak_bytes == null then null
                                   else $e2e.broker.rss_peak_bytes / 1048576 end)},
         e2e: $e2e}' >> "$RESULTS"
}

max_run() {
    local broker=$1 run=$2 result
    start_broker "$broker" "$OUT/$broker-max-$run.log" || return 0
    result=$(bench_json "$OUT/$broker-max-$run.stderr" kafka e2e --label "$broker" \
        --broker "127.0.0.1:$BROKER_PORT" --topic "max-$run" -n "$MAX_MESSAGES" \
        "${E2E_FLAGS[@]}" ${PRODUCER_PROPERTIES[@]+"${PRODUCER_PROPERTIES[@]}"})
    stop_broker
    log "$broker max run $run: $(jq -c '{rate_msgs_per_s, complete, error}' <<< "$result")"
    record "$broker" "$run" "closed loop (max)" "$result"
}

log "results in $OUT"
if [[ -z $WEIR_MAX ]]; then
    for run in $(seq 1 "$REPEATS"); do
        for broker in $BROKERS; do
            max_run "$broker" "$run"
        done
    done
    WEIR_MAX=$(jq -s '[.[] | select(.broker == "weir" and .complete) | .figures["received msg/s"]]
                      | sort | if length == 0 then 0 else .[(length - 1) / 2 | floor] end | floor' "$RESULTS")
fi
[[ $WEIR_MAX -gt 0 ]] || { log "no complete closed-loop run of Weir; cannot pick rates"; exit 1; }
log "Weir's max (median closed-loop e2e rate): $WEIR_MAX msg/s"

for run in $(seq 1 "$REPEATS"); do
    for broker in $BROKERS; do
        log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
        start_broker "$broker" "$OUT/$broker-$run.log" || continue
        for percent in $PERCENTS; do
            rate=$(( WEIR_MAX * percent / 100 ))
            result=$(bench_json "$OUT/$broker-$run-$percent.stderr" kafka e2e --label "$broker" \
                --broker "127.0.0.1:$BROKER_PORT" --topic "lat-$run-$percent" \
                --rate "$rate" --duration-s "$DURATION_S" "${E2E_FLAGS[@]}" \
                ${PRODUCER_PROPERTIES[@]+"${PRODUCER_PROPERTIES[@]}"})
            log "$broker run $run at $percent % ($rate msg/s): $(jq -c '{rate_msgs_per_s, p99: .latency_us.p99, complete, error}' <<< "$result")"
            record "$broker" "$run" "$percent % of Weir's max ($rate msg/s)" "$result"
        done
        stop_broker
    done
done

{
    echo "## Table 2. Kafka end-to-end latency, open loop: $SIZE B, 1 partition, acks=all, linger.ms=$LINGER_MS, fetch.wait.max.ms=$FETCH_WAIT_MS, ${DURATION_S} s per rate; Weir's max = $WEIR_MAX msg/s"
    echo
    command_line=bench/kafka-latency.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\`"
    echo
    cat "$OUT/machine.md"
    echo
    python3 "$BENCH/summarize_runs.py" "$RESULTS" --every-run
} | tee "$OUT/summary.md"
