#!/usr/bin/env bash
# Table 5: backlog. Fill 10 million 100-byte messages with no consumer,
# then drain them, for a Kafka topic (Weir vs tansu) and for an AMQP queue
# (Weir vs RabbitMQ). Reports the broker's RSS during the fill (sampled
# every 100 ms by `weir bench --broker-pid`; it must stay flat for Weir)
# and the fill and drain rates.
#
# Usage: bench/backlog.sh [options]
#   -n, --messages N        messages to fill                  (default 10000000)
#   -s, --size BYTES        value size                        (default 100)
#   -r, --repeats N         runs per broker                   (default 3)
#   -b, --brokers LIST      from: weir tansu (Kafka), weir-amqp rabbitmq (AMQP)
#                                                             (default "weir tansu weir-amqp rabbitmq")
#       --kafka-only        brokers "weir tansu"
#       --amqp-only         brokers "weir-amqp rabbitmq"
#       --quick             smoke check in under a minute: 100,000 messages, 1 repeat
#       --pin, --weir-rev REV, --no-build, --out DIR   as in kafka-throughput.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

MESSAGES=10000000
SIZE=100
REPEATS=3
BROKERS="weir tansu weir-amqp rabbitmq"
PIN=0
BUILD=1
OUT=""
WEIR_REV=""
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        -n|--messages) MESSAGES=$2; shift 2 ;;
        -s|--size) SIZE=$2; shift 2 ;;
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -b|--brokers) BROKERS=$2; shift 2 ;;
        --kafka-only) BROKERS="weir tansu"; shift ;;
        --amqp-only) BROKERS="weir-amqp rabbitmq"; shift ;;
        --quick) MESSAGES=100000; REPEATS=1; shift ;;
        --pin) PIN=1; shift ;;
        --weir-rev) WEIR_REV=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done

OUT=${OUT:-$BENCH/results/backlog-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
write_machine_report "$OUT/machine.md"

fill_and_drain() {
    local broker=$1 run=$2 name=$1-$2 fill drain
    case $broker in
        weir|tansu|tansu-sqlite)
            fill=$(bench_json "$OUT/$name.fill.stderr" kafka produce --label "$broker" \
                --broker "127.0.0.1:$BROKER_PORT" --topic backlog -n "$MESSAGES" -s "$SIZE" \
                --acks all --linger-ms 5 --idle-timeout-s 60)
            drain=$(bench_json "$OUT/$name.drain.stderr" kafka consume --label "$broker" \
                --broker "127.0.0.1:$BROKER_PORT" --topic backlog -n "$(jq -r '.messages // 1' <<< "$fill")" \
                -s "$SIZE" --fetch-wait-ms 10 --idle-timeout-s 60)
            ;;
        *)
            fill=$(bench_json "$OUT/$name.fill.stderr" amqp publish --label "$broker" \
                --broker "127.0.0.1:$BROKER_PORT" --queue backlog -n "$MESSAGES" -s "$SIZE" \
                --confirm-window 1000 --idle-timeout-s 60)
            drain=$(bench_json "$OUT/$name.drain.stderr" amqp consume --label "$broker" \
                --broker "127.0.0.1:$BROKER_PORT" --queue backlog -s "$SIZE" \
                --prefetch 1000 --ack-every 100 --idle-timeout-s 60)
            ;;
    esac
    log "$broker run $run: fill $(jq -c '{rate_msgs_per_s, rss_peak: .broker.rss_peak_bytes, complete, error}' <<< "$fill"), drain $(jq -c '{rate_msgs_per_s, complete, error}' <<< "$drain")"
    jq -cn --arg broker "$broker" --argjson run "$run" --argjson fill "$fill" --argjson drain "$drain" '
        def mib: if . == null then null else . / 1048576 end;
        def rss_at($fraction): ($fill.broker.rss_curve // []) as $curve
            | if ($curve | length) == 0 then null
              else $curve[(($curve | length) - 1) * $fraction | floor][1] | mib end;
        {broker: ($broker | sub("-amqp$"; "")), run: $run,
         case: (if ($broker | test("amqp|rabbit")) then "AMQP queue" else "Kafka topic" end),
         complete: (($fill.complete // false) and ($drain.complete // false)),
         status: ([$fill.error, $drain.error, $fill.details.first_error, $drain.details.first_error]
                  | map(select(. != null)) | first // "ok"),
         figures: {
           "fill msg/s": $fill.rate_msgs_per_s,
           "fill MB/s": (($fill.rate_bytes_per_s // 0) / 1e6),
           "RSS MiB at 10 % of the fill": rss_at(0.1),
           "RSS MiB at 50 % of the fill": rss_at(0.5),
           "RSS MiB at the end of the fill": ($fill.broker.rss_end_bytes | mib),
           "RSS MiB peak during the fill": ($fill.broker.rss_peak_bytes | mib),
           "drain msg/s": $drain.rate_msgs_per_s,
           "drain MB/s": (($drain.rate_bytes_per_s // 0) / 1e6),
           "RSS MiB peak during the drain": ($drain.broker.rss_peak_bytes | mib),
           "broker CPU µs/msg (fill)": $fill.broker.cpu_us_per_msg,
           "broker CPU µs/msg (drain)": $drain.broker.cpu_us_per_msg},
         fill: $fill, drain: $drain}' >> "$RESULTS"
}

log "results in $OUT"
for run in $(seq 1 "$REPEATS"); do
    for broker in $BROKERS; do
        log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
        status=0
        start_broker "$broker" "$OUT/$broker-$run.log" || status=$?
        if [[ $status == 3 ]]; then
            jq -cn --arg broker "$broker" --argjson run "$run" \
                '{broker: ($broker | sub("-amqp$"; "")), run: $run, case: "AMQP queue", complete: false,
                  status: "pending Weir'"'"'s AMQP listener"}' >> "$RESULTS"
            continue
        fi
        [[ $status == 0 ]] || continue
        fill_and_drain "$broker" "$run"
        stop_broker
    done
done

{
    echo "## Table 5. Backlog: fill $MESSAGES × $SIZE B with no consumer, then drain (Kafka: 1 partition, acks=all; AMQP: durable queue, persistent, confirms window 1000, prefetch 1000, ack every 100)"
    echo
    command_line=bench/backlog.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\`"
    echo
    cat "$OUT/machine.md"
    echo
    python3 "$BENCH/summarize_runs.py" "$RESULTS" --hardware "$HARDWARE_JSON" --every-run
} | tee "$OUT/summary.md"
