#!/usr/bin/env bash
# Table 4: topic scale. Aggregate produce throughput into one topic of 10,
# 100, 1,000 and 10,000 partitions (messages round-robin over every
# partition, so every partition is written all the time), Weir against
# tansu, with `weir bench kafka produce`. The target: Weir loses less than
# 20 % from 10 to 10,000 partitions.
#
# For every repeat, broker and partition count: start the broker on a fresh
# data directory, create the topic, produce (the warm-up, one acknowledged
# message per partition, is outside the clock), stop the broker.
#
# Usage: bench/topic-scale.sh [options]
#       --partitions LIST   partition counts                 (default "10 100 1000 10000")
#   -n, --messages N        messages per run                 (default 3000000)
#   -s, --size BYTES        value size                       (default 100)
#       --producers N       producers (threads)              (default 1)
#   -r, --repeats N         runs per broker and count        (default 3)
#   -b, --brokers LIST      from: weir tansu tansu-sqlite    (default "weir tansu")
#   -P, --producer-property K=V   extra librdkafka producer property (repeatable)
#       --nofile N          raise the open-file limit (soft and hard, needs root
#                           or CAP_SYS_RESOURCE) for the brokers to N; "" keeps
#                           the shell's. Weir keeps 3 files open per partition
#                           (.log, .index, .timeindex), Apache Kafka's docs ask
#                           for 100,000+ (default 200000)
#       --quick             smoke check in under a minute: 10 and 1000
#                           partitions, 200,000 messages, 1 repeat
#       --pin, --weir-rev REV, --no-build, --out DIR   as in kafka-throughput.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

PARTITION_COUNTS="10 100 1000 10000"
MESSAGES=3000000
SIZE=100
PRODUCERS=1
REPEATS=3
BROKERS="weir tansu"
PIN=0
BUILD=1
OUT=""
WEIR_REV=""
PRODUCER_PROPERTIES=()
NOFILE=200000
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        --partitions) PARTITION_COUNTS=$2; shift 2 ;;
        -n|--messages) MESSAGES=$2; shift 2 ;;
        -s|--size) SIZE=$2; shift 2 ;;
        --producers) PRODUCERS=$2; shift 2 ;;
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -b|--brokers) BROKERS=$2; shift 2 ;;
        -P|--producer-property) PRODUCER_PROPERTIES+=(-X "$2"); shift 2 ;;
        --nofile) NOFILE=$2; shift 2 ;;
        --quick) PARTITION_COUNTS="10 1000"; MESSAGES=200000; REPEATS=1; shift ;;
        --pin) PIN=1; shift ;;
        --weir-rev) WEIR_REV=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done

OUT=${OUT:-$BENCH/results/topic-scale-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
if [[ -n $NOFILE ]]; then
    ulimit -Hn "$NOFILE" 2>/dev/null || log "cannot raise the hard open-file limit to $NOFILE"
    ulimit -n "$NOFILE" 2>/dev/null || log "cannot raise the open-file limit to $NOFILE"
fi
write_machine_report "$OUT/machine.md"
echo "- Open-file limit of the brokers: $(ulimit -n) (ulimit -n)" >> "$OUT/machine.md"

log "results in $OUT"
for run in $(seq 1 "$REPEATS"); do
    for partitions in $PARTITION_COUNTS; do
        for broker in $BROKERS; do
            log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
            name=$broker-$run-p$partitions
            start_broker "$broker" "$OUT/$name.log" || continue
            created_at=$(date +%s.%N)
            result=$(bench_json "$OUT/$name.stderr" kafka produce --label "$broker" \
                --broker "127.0.0.1:$BROKER_PORT" --topic "scale-$partitions" \
                --partitions "$partitions" --producers "$PRODUCERS" -n "$MESSAGES" -s "$SIZE" \
                --acks all --linger-ms 5 --idle-timeout-s 60 \
                ${PRODUCER_PROPERTIES[@]+"${PRODUCER_PROPERTIES[@]}"})
            setup_s=$(awk -v a="$(date +%s.%N)" -v b="$created_at" -v d="$(jq '.duration_s // 0' <<< "$result")" 'BEGIN {printf "%.2f", a - b - d}')
            stop_broker
            log "$broker run $run, $partitions partitions: $(jq -c '{rate_msgs_per_s, complete, error}' <<< "$result")"
            jq -cn --arg broker "$broker" --argjson run "$run" --argjson partitions "$partitions" \
                --argjson result "$result" --argjson setup "$setup_s" '
                {broker: $broker, run: $run, case: "\($partitions) partitions",
                 complete: ($result.complete // false),
                 status: ($result.error // $result.details.first_error // "ok"),
                 figures: {
                   "produce msg/s": $result.rate_msgs_per_s,
                   "produce MB/s": (($result.rate_bytes_per_s // 0) / 1e6),
                   "ack p50 ms": (if $result.latency_us == null then null else $result.latency_us.p50 / 1000 end),
                   "ack p99 ms": (if $result.latency_us == null then null else $result.latency_us.p99 / 1000 end),
                   "broker CPU µs/msg": $result.broker.cpu_us_per_msg,
                   "broker peak RSS MiB": (if $result.broker.rss_peak_bytes == null then null
                                           else $result.broker.rss_peak_bytes / 1048576 end),
                   "topic creation + warm-up s": $setup},
                 result: $result}' >> "$RESULTS"
        done
    done
done

{
    echo "## Table 4. Topic scale: $MESSAGES × $SIZE B into one topic, round-robin over every partition, $PRODUCERS producer(s), acks=all, linger.ms=5"
    echo
    command_line=bench/topic-scale.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\`"
    echo
    cat "$OUT/machine.md"
    echo
    python3 "$BENCH/summarize_runs.py" "$RESULTS" --hardware "$HARDWARE_JSON" --every-run
    echo
    echo "### Throughput kept from the fewest to the most partitions (medians)"
    echo
    jq -rs '
        [.[] | select(.complete)] | group_by(.broker)[] |
        (.[0].broker) as $broker |
        (group_by(.case) | map({case: .[0].case, partitions: (.[0].case | split(" ")[0] | tonumber),
                                rate: (map(.figures["produce msg/s"]) | sort | .[(length - 1) / 2 | floor])})
         | sort_by(.partitions)) as $rows |
        "- \($broker): \($rows[0].case) \($rows[0].rate | floor) msg/s → \($rows[-1].case) \($rows[-1].rate | floor) msg/s: \(($rows[-1].rate / $rows[0].rate * 100) | floor) % kept"' "$RESULTS"
} | tee "$OUT/summary.md"
