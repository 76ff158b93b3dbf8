#!/usr/bin/env bash
# Table 3: AMQP 0-9-1 publish with confirms, then consume, persistent
# messages on a durable queue: Weir against RabbitMQ (Debian's
# rabbitmq-server), with `weir bench amqp` (lapin) as the client.
#
# For every repeat, broker in turn and value size: start the broker on a
# fresh data directory (RabbitMQ as its own node, rabbit-bench@localhost on
# port 5674 / distribution port 25674 with its own mnesia, log and plugins
# files, so it never meets another node on the machine; it is stopped with
# rabbitmqctl at the end of each run), publish N persistent messages to a
# durable classic queue with confirms (at most --confirm-window
# unconfirmed), consume them with prefetch and acks (multiple, every
# --ack-every), stop the broker.
#
# Weir's column needs Weir's AMQP listener (`weir server --amqp-listen`);
# until a Weir build has it, its runs are skipped with a clear message and
# the table says "pending".
#
# Usage: bench/amqp.sh [options]
#       --sizes LIST          message sizes in bytes          (default "100 1024")
#   -n, --messages N          messages per run                (default 300000)
#   -r, --repeats N           runs per broker and size        (default 3)
#   -b, --brokers LIST        from: weir-amqp rabbitmq        (default "weir-amqp rabbitmq")
#       --confirm-window N    unconfirmed messages at most    (default 1000)
#       --prefetch N          consumer prefetch               (default 1000)
#       --ack-every N         ack (multiple) every N messages (default 100)
#       --publishers N        publishers (connections)        (default 1)
#       --quick               smoke check in under a minute: 20,000 messages,
#                             100 B only, 1 repeat
#       --pin, --weir-rev REV, --no-build, --out DIR   as in kafka-throughput.sh
# Environment: WEIR_AMQP_PORT (19672), RABBITMQ_PORT (5674),
#   RABBITMQ_DIST_PORT (25674), RABBITMQ_BENCH_NODE (rabbit-bench@localhost).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

SIZES="100 1024"
MESSAGES=300000
REPEATS=3
BROKERS="weir-amqp rabbitmq"
CONFIRM_WINDOW=1000
PREFETCH=1000
ACK_EVERY=100
PUBLISHERS=1
PIN=0
BUILD=1
OUT=""
WEIR_REV=""
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        --sizes|-s|--size) SIZES=$2; shift 2 ;;
        -n|--messages) MESSAGES=$2; shift 2 ;;
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -b|--brokers) BROKERS=$2; shift 2 ;;
        --confirm-window) CONFIRM_WINDOW=$2; shift 2 ;;
        --prefetch) PREFETCH=$2; shift 2 ;;
        --ack-every) ACK_EVERY=$2; shift 2 ;;
        --publishers) PUBLISHERS=$2; shift 2 ;;
        --quick) MESSAGES=20000; SIZES=100; REPEATS=1; shift ;;
        --pin) PIN=1; shift ;;
        --weir-rev) WEIR_REV=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done

OUT=${OUT:-$BENCH/results/amqp-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
write_machine_report "$OUT/machine.md"

run_case() {
    local broker=$1 run=$2 size=$3 name=$1-$2-${3}B publish consume status=0
    local label=${broker%-amqp}
    start_broker "$broker" "$OUT/$name.log" || status=$?
    if [[ $status != 0 ]]; then
        jq -cn --arg broker "$label" --argjson run "$run" --arg case "$size B" \
            --arg status "$([[ $status == 3 ]] && echo "pending Weir's AMQP listener" || echo "broker did not start")" \
            '{broker: $broker, run: $run, case: $case, complete: false, status: $status}' >> "$RESULTS"
        return 0
    fi
    publish=$(bench_json "$OUT/$name.publish.stderr" amqp publish --label "$label" \
        --broker "127.0.0.1:$BROKER_PORT" --queue "bench-$size" -n "$MESSAGES" -s "$size" \
        --publishers "$PUBLISHERS" --confirm-window "$CONFIRM_WINDOW" --idle-timeout-s 60)
    log "$broker run $run, $size B: publish $(jq -c '{rate_msgs_per_s, p99: .latency_us.p99, complete, error}' <<< "$publish")"
    consume=$(bench_json "$OUT/$name.consume.stderr" amqp consume --label "$label" \
        --broker "127.0.0.1:$BROKER_PORT" --queue "bench-$size" -n "$(jq -r '.messages // 1' <<< "$publish")" \
        -s "$size" --prefetch "$PREFETCH" --ack-every "$ACK_EVERY" --idle-timeout-s 60)
    log "$broker run $run, $size B: consume $(jq -c '{rate_msgs_per_s, complete, error}' <<< "$consume")"
    stop_broker
    jq -cn --arg broker "$label" --argjson run "$run" --arg case "$size B" \
        --argjson publish "$publish" --argjson consume "$consume" '
        def ms: if . == null then null else . / 1000 end;
        def mib: if . == null then null else . / 1048576 end;
        {broker: $broker, run: $run, case: $case,
         complete: (($publish.complete // false) and ($consume.complete // false)),
         status: ([$publish.error, $consume.error, $publish.details.first_error,
                   $consume.details.first_error] | map(select(. != null)) | first // "ok"),
         figures: {
           "publish msg/s (confirmed)": $publish.rate_msgs_per_s,
           "publish MB/s": (($publish.rate_bytes_per_s // 0) / 1e6),
           "confirm p50 ms": ($publish.latency_us.p50 | ms),
           "confirm p99 ms": ($publish.latency_us.p99 | ms),
           "consume msg/s": $consume.rate_msgs_per_s,
           "consume MB/s": (($consume.rate_bytes_per_s // 0) / 1e6),
           "broker CPU µs/msg (publish)": $publish.broker.cpu_us_per_msg,
           "broker CPU µs/msg (consume)": $consume.broker.cpu_us_per_msg,
           "broker peak RSS MiB": ([$publish.broker.rss_peak_bytes, $consume.broker.rss_peak_bytes]
                                   | map(select(. != null)) | max | mib)},
         publish: $publish, consume: $consume}' >> "$RESULTS"
}

log "results in $OUT"
for run in $(seq 1 "$REPEATS"); do
    for size in $SIZES; do
        for broker in $BROKERS; do
            log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
            run_case "$broker" "$run" "$size"
        done
    done
done

{
    echo "## Table 3. AMQP publish with confirms, then consume: $MESSAGES persistent messages per run, durable classic queue, $PUBLISHERS publisher(s), confirm window $CONFIRM_WINDOW, prefetch $PREFETCH, ack (multiple) every $ACK_EVERY"
    echo
    command_line=bench/amqp.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\`"
    echo
    cat "$OUT/machine.md"
    echo
    python3 "$BENCH/summarize_runs.py" "$RESULTS" --hardware "$HARDWARE_JSON" --every-run
} | tee "$OUT/summary.md"
