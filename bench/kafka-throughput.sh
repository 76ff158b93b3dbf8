#!/usr/bin/env bash
# Table 1: Kafka produce and consume throughput, Weir against tansu, side by
# side, with `weir bench` (librdkafka) as the client.
#
# For every repeat, every broker in turn (weir, tansu, weir, tansu, …), and
# every value size × partition count: start the broker on a fresh data
# directory, produce to a new topic (created through the Admin API, messages
# round-robin over its partitions) with `weir bench kafka produce`, read
# everything back from the first offset with `weir bench kafka consume`
# (which checks nothing was lost, duplicated or reordered), stop the broker.
# `--broker-pid` gives each phase the broker's CPU seconds and peak RSS.
# At the end: a Markdown table of medians over complete runs and the
# Weir / tansu ratios, in bench/results/<time>/summary.md.
#
# Usage: bench/kafka-throughput.sh [options]
#       --sizes LIST        value sizes in bytes                   (default "100 1024")
#       --partitions LIST   partition counts                       (default "1 8")
#       --mb MB             payload per run, MB (10^6 B); messages = MB / size
#                                                                  (default 400)
#   -n, --messages N        messages per run instead of --mb
#   -r, --repeats N         runs per broker and case               (default 3)
#   -b, --brokers LIST      from: weir tansu tansu-sqlite          (default "weir tansu")
#       --acks A            producer acks: 0, 1, all               (default all)
#       --linger-ms MS      producer linger.ms                     (default 5)
#       --batch-size BYTES  producer batch.size                    (default 1000000)
#       --compression C     none|gzip|snappy|lz4|zstd              (default none)
#       --fetch-wait-ms MS  consumer fetch.wait.max.ms; "" = librdkafka's 500
#                           (default 10: tansu holds every fetch for the whole
#                           wait, see BENCHMARKS.md)
#       --consumer-defaults librdkafka's own consumer fetch/queue settings
#   -P, --producer-property K=V   extra librdkafka producer property (repeatable)
#   -C, --consumer-property K=V   extra librdkafka consumer property (repeatable)
#       --quick             smoke check in under a minute: 20 MB, 1 repeat,
#                           100 B and 1 KiB on 1 partition
#       --pin               broker on CPU 0, client on CPU 1
#       --weir-rev REV      measure the Weir broker built from this commit
#       --no-build          use the binaries already built
#       --out DIR           results directory (default bench/results/throughput-<utc time>)
# Environment: WEIR_BIN, TANSU_BIN, BENCH_BIN override the binaries;
#   WEIR_ARGS / TANSU_ARGS add broker arguments; WEIR_PORT (19092),
#   TANSU_PORT (19093).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

SIZES="100 1024"
PARTITION_COUNTS="1 8"
MB=400
MESSAGES=""
REPEATS=3
BROKERS="weir tansu"
ACKS=all
LINGER_MS=5
BATCH_SIZE=1000000
COMPRESSION=none
FETCH_WAIT_MS=10
CONSUMER_DEFAULTS=0
PIN=0
BUILD=1
OUT=""
WEIR_REV=""
PRODUCER_PROPERTIES=()
CONSUMER_PROPERTIES=()
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        --sizes) SIZES=$2; shift 2 ;;
        --partitions) PARTITION_COUNTS=$2; shift 2 ;;
        --mb) MB=$2; shift 2 ;;
        -n|--messages) MESSAGES=$2; shift 2 ;;
        -s|--size) SIZES=$2; shift 2 ;;
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -b|--brokers) BROKERS=$2; shift 2 ;;
        --acks) ACKS=$2; shift 2 ;;
        --linger-ms) LINGER_MS=$2; shift 2 ;;
        --batch-size) BATCH_SIZE=$2; shift 2 ;;
        --compression) COMPRESSION=$2; shift 2 ;;
        --fetch-wait-ms) FETCH_WAIT_MS=$2; shift 2 ;;
        --consumer-defaults) CONSUMER_DEFAULTS=1; shift ;;
        -P|--producer-property) PRODUCER_PROPERTIES+=(-X "$2"); shift 2 ;;
        -C|--consumer-property) CONSUMER_PROPERTIES+=(-X "$2"); shift 2 ;;
        --quick) MB=20; REPEATS=1; PARTITION_COUNTS=1; shift ;;
        --pin) PIN=1; shift ;;
        --weir-rev) WEIR_REV=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done

OUT=${OUT:-$BENCH/results/throughput-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"
CONSUME_FLAGS=()
[[ -n $FETCH_WAIT_MS ]] && CONSUME_FLAGS+=(--fetch-wait-ms "$FETCH_WAIT_MS")
[[ $CONSUMER_DEFAULTS == 1 ]] && CONSUME_FLAGS+=(--client-defaults)

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
write_machine_report "$OUT/machine.md"

messages_for() {
    if [[ -n $MESSAGES ]]; then echo "$MESSAGES"; else echo $(( MB * 1000000 / $1 )); fi
}

run_case() {
    local broker=$1 run=$2 size=$3 partitions=$4
    local name="$broker-$run-${size}B-p$partitions" topic=bench-$run-$size-$partitions
    local case="$size B, $partitions partition$([[ $partitions == 1 ]] || echo s)"
    local messages produce consume
    messages=$(messages_for "$size")
    if ! start_broker "$broker" "$OUT/$name.log"; then
        jq -cn --arg broker "$broker" --argjson run "$run" --arg case "$case" \
            '{broker: $broker, run: $run, case: $case, complete: false, status: "broker did not start"}' >> "$RESULTS"
        return 0
    fi
    produce=$(bench_json "$OUT/$name.produce.stderr" kafka produce --label "$broker" \
        --broker "127.0.0.1:$BROKER_PORT" --topic "$topic" --partitions "$partitions" \
        -n "$messages" -s "$size" --acks "$ACKS" --linger-ms "$LINGER_MS" \
        --batch-size "$BATCH_SIZE" --compression "$COMPRESSION" --idle-timeout-s 30 \
        ${PRODUCER_PROPERTIES[@]+"${PRODUCER_PROPERTIES[@]}"})
    log "$broker run $run, $case: produce $(jq -c '{rate_msgs_per_s, complete, error}' <<< "$produce")"
    consume=$(bench_json "$OUT/$name.consume.stderr" kafka consume --label "$broker" \
        --broker "127.0.0.1:$BROKER_PORT" --topic "$topic" -n "$(jq -r '.messages // 1' <<< "$produce")" \
        -s "$size" --idle-timeout-s 30 ${CONSUME_FLAGS[@]+"${CONSUME_FLAGS[@]}"} \
        ${CONSUMER_PROPERTIES[@]+"${CONSUMER_PROPERTIES[@]}"})
    log "$broker run $run, $case: consume $(jq -c '{rate_msgs_per_s, complete, error}' <<< "$consume")"
    stop_broker
    jq -cn --arg broker "$broker" --argjson run "$run" --arg case "$case" \
        --argjson produce "$produce" --argjson consume "$consume" '
        {broker: $broker, run: $run, case: $case,
         complete: (($produce.complete // false) and ($consume.complete // false)),
         status: ([$produce.error, $consume.error, $produce.details.first_error,
                   $consume.details.first_error] | map(select(. != null)) | first // "ok"),
         figures: {
           "produce msg/s": $produce.rate_msgs_per_s,
           "produce MB/s": (($produce.rate_bytes_per_s // 0) / 1e6),
           "consume msg/s": $consume.rate_msgs_per_s,
           "consume MB/s": (($consume.rate_bytes_per_s // 0) / 1e6),
           "broker CPU µs/msg (produce)": $produce.broker.cpu_us_per_msg,
           "broker CPU µs/msg (consume)": $consume.broker.cpu_us_per_msg,
           "client CPU µs/msg (produce)": $produce.client.cpu_us_per_msg,
           "client CPU µs/msg (consume)": $consume.client.cpu_us_per_msg,
           "broker peak RSS MiB": ((([$produce.broker.rss_peak_bytes, $consume.broker.rss_peak_bytes]
                                      | map(select(. != null)) | max) // null)
                                    | if . == null then null else . / 1048576 end)},
         produce: $produce, consume: $consume}' >> "$RESULTS"
}

log "results in $OUT"
for run in $(seq 1 "$REPEATS"); do
    for size in $SIZES; do
        for partitions in $PARTITION_COUNTS; do
            for broker in $BROKERS; do
                log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
                run_case "$broker" "$run" "$size" "$partitions"
            done
        done
    done
done

{
    echo "## Table 1. Kafka throughput: acks=$ACKS, linger.ms=$LINGER_MS, batch.size=$BATCH_SIZE, compression=$COMPRESSION, fetch.wait.max.ms=${FETCH_WAIT_MS:-500 (default)}, one producer and one consumer"
    echo
    command_line=bench/kafka-throughput.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\` (messages per run: $(for s in $SIZES; do printf '%s × %s B; ' "$(messages_for "$s")" "$s"; done))"
    echo
    cat "$OUT/machine.md"
    echo
    python3 "$BENCH/summarize_runs.py" "$RESULTS" --hardware "$HARDWARE_JSON" --every-run
} | tee "$OUT/summary.md"
