#!/usr/bin/env bash
# Kafka-protocol throughput of Weir against tansu, side by side, with
# librdkafka (bench/kafka-load) as the client.
#
# For every repeat and every broker, in turn (weir, tansu, weir, tansu, ...):
# start the broker on a fresh data directory, produce N messages of S bytes
# to a new one-partition topic (creating it through the Admin API), consume
# them back from the beginning, read the broker's CPU time from
# /proc/<pid>/stat before and after each phase, stop the broker. At the end
# print a markdown table of medians and the Weir/tansu ratios.
#
# Usage: bench/kafka-throughput.sh [options]
#   -n, --messages N        messages per run                  (default 5000000)
#   -s, --size BYTES        value size                        (default 100)
#   -r, --repeats N         runs per broker                   (default 3)
#   -b, --brokers LIST      space-separated, from: weir tansu tansu-sqlite
#                                                             (default "weir tansu")
#       --acks A            producer acks: 0, 1, all          (default all)
#       --linger-ms MS      producer linger.ms                (default 5)
#       --batch-size BYTES  producer batch.size               (default 1000000)
#       --compression C     none|gzip|snappy|lz4|zstd         (default none)
#       --fetch-wait-ms MS  consumer fetch.wait.max.ms       (default: librdkafka's, 500)
#       --consumer-defaults leave librdkafka's consumer fetch/queue settings at their
#                           defaults (kafka-load consume --client-defaults)
#   -P, --producer-property K=V   extra librdkafka producer property (repeatable)
#   -C, --consumer-property K=V   extra librdkafka consumer property (repeatable)
#       --pin               broker on CPU 0, client on CPU 1 (default: both share)
#       --weir-rev REV      build Weir from this commit (a `git archive` copy under
#                           bench/.tools, target bench/target/weir) instead of the
#                           working tree, so a half-edited tree is not measured
#       --no-build          use the binaries already built
#       --out DIR           results directory (default bench/results/<utc time>)
# Environment: WEIR_BIN, TANSU_BIN, KAFKA_LOAD_BIN override the binaries;
#   WEIR_ARGS / TANSU_ARGS add broker arguments; WEIR_PORT (19092),
#   TANSU_PORT (19093).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

MESSAGES=5000000
SIZE=100
REPEATS=3
BROKERS="weir tansu"
ACKS=all
LINGER_MS=5
BATCH_SIZE=1000000
COMPRESSION=none
PIN=0
BUILD=1
OUT=""
WEIR_REV=""
FETCH_WAIT_MS=""
CONSUMER_DEFAULTS=0
PRODUCER_PROPERTIES=()
CONSUMER_PROPERTIES=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        -n|--messages) MESSAGES=$2; shift 2 ;;
        -s|--size) SIZE=$2; shift 2 ;;
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
        --pin) PIN=1; shift ;;
        --weir-rev) WEIR_REV=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done

OUT=${OUT:-$BENCH/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"
[[ -n $FETCH_WAIT_MS ]] && CONSUMER_PROPERTIES+=(-X "fetch.wait.max.ms=$FETCH_WAIT_MS")
CONSUME_FLAGS=()
[[ $CONSUMER_DEFAULTS == 1 ]] && CONSUME_FLAGS+=(--client-defaults)

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
write_machine_report "$OUT/machine.md"

# ----------------------------------------------------------------- a run --

run_once() {
    local broker=$1 run=$2
    local topic=bench-$run
    log "$broker run $run: start"
    local busy_start wall_start
    busy_start=$(busy_ticks)
    wall_start=$(date +%s.%N)
    if ! start_broker "$broker" "$OUT/$broker-$run.log"; then
        jq -cn --arg broker "$broker" --argjson run "$run" \
            '{broker: $broker, run: $run, error: "broker did not start"}' >> "$RESULTS"
        return 0
    fi
    local ticks_start ticks_produced ticks_consumed produce consume produced
    ticks_start=$(cpu_ticks "$BROKER_PID")
    produce=$(${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} "$KAFKA_LOAD_BIN" produce --label "$broker" \
        --bootstrap "127.0.0.1:$BROKER_PORT" --topic "$topic" --create-topic \
        -n "$MESSAGES" -s "$SIZE" --acks "$ACKS" --linger-ms "$LINGER_MS" \
        --batch-size "$BATCH_SIZE" --compression "$COMPRESSION" \
        --idle-timeout-s 30 ${PRODUCER_PROPERTIES[@]+"${PRODUCER_PROPERTIES[@]}"} \
        2> "$OUT/$broker-$run.produce.stderr") || true
    [[ -n $produce ]] || produce='{"error": "kafka-load produce printed nothing"}'
    ticks_produced=$(cpu_ticks "$BROKER_PID" 2>/dev/null || echo null)
    log "$broker run $run: produce $(jq -c '{msgs_per_s, complete, failed, first_error, error}' <<< "$produce")"

    produced=$(jq -r '.messages // 0' <<< "$produce")
    if [[ $produced -gt 0 ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        consume=$(${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} "$KAFKA_LOAD_BIN" consume --label "$broker" \
            --bootstrap "127.0.0.1:$BROKER_PORT" --topic "$topic" \
            -n "$produced" -s "$SIZE" --idle-timeout-s 30 \
            ${CONSUMER_PROPERTIES[@]+"${CONSUMER_PROPERTIES[@]}"} \
            ${CONSUME_FLAGS[@]+"${CONSUME_FLAGS[@]}"} \
            2> "$OUT/$broker-$run.consume.stderr") || true
        [[ -n $consume ]] || consume='{"error": "kafka-load consume printed nothing"}'
    else
        consume='{"error": "nothing produced or broker gone"}'
    fi
    ticks_consumed=$(cpu_ticks "$BROKER_PID" 2>/dev/null || echo null)
    log "$broker run $run: consume $(jq -c '{msgs_per_s, complete, sequence_breaks, first_error, error}' <<< "$consume")"

    local rss
    rss=$(peak_rss_kib "$BROKER_PID" 2>/dev/null || echo null)
    stop_broker
    local busy_end wall_end
    busy_end=$(busy_ticks)
    wall_end=$(date +%s.%N)
    jq -cn --arg broker "$broker" --argjson run "$run" \
        --argjson busy "$(( busy_end - busy_start ))" \
        --argjson wall "$(awk -v a="$wall_end" -v b="$wall_start" 'BEGIN {printf "%.3f", a - b}')" \
        --argjson produce "$produce" --argjson consume "$consume" \
        --argjson t0 "$ticks_start" --argjson t1 "$ticks_produced" \
        --argjson t2 "$ticks_consumed" --argjson hz "$CLOCK_TICKS" \
        --argjson rss "$rss" '
        {broker: $broker, run: $run, produce: $produce, consume: $consume,
         broker_peak_rss_mib: (if $rss == null then null else $rss / 1024 end),
         broker_cpu_produce_s: (if $t1 == null then null else ($t1 - $t0) / $hz end),
         broker_cpu_consume_s: (if $t2 == null or $t1 == null then null else ($t2 - $t1) / $hz end),
         run_wall_s: $wall,
         machine_busy_cpu_s: ($busy / $hz),
         other_cpu_s: (($busy / $hz) - (($t2 // $t0) - $t0) / $hz
                       - ($produce.client_cpu_s // 0) - ($consume.client_cpu_s // 0))}' \
        >> "$RESULTS"
}

log "results in $OUT"
for run in $(seq 1 "$REPEATS"); do
    for broker in $BROKERS; do
        run_once "$broker" "$run"
    done
done

# --------------------------------------------------------------- summary --

{
    echo "## Kafka throughput: $MESSAGES × $SIZE B, 1 partition, acks=$ACKS, linger.ms=$LINGER_MS, batch.size=$BATCH_SIZE, compression=$COMPRESSION, fetch.wait.max.ms=${FETCH_WAIT_MS:-500 (default)}, consumer queue/fetch sizes: $([[ $CONSUMER_DEFAULTS == 1 ]] && echo "librdkafka defaults" || echo "kafka-load's (8 MiB per partition fetch, queued.min.messages 1000000)")"
    echo
    echo "Command: \`bench/kafka-throughput.sh -n $MESSAGES -s $SIZE -r $REPEATS -b \"$BROKERS\" --acks $ACKS --linger-ms $LINGER_MS --batch-size $BATCH_SIZE --compression $COMPRESSION$([[ $PIN == 1 ]] && echo ' --pin')$([[ -n $WEIR_REV ]] && echo " --weir-rev $WEIR_REV")$([[ -n $FETCH_WAIT_MS ]] && echo " --fetch-wait-ms $FETCH_WAIT_MS")$([[ $CONSUMER_DEFAULTS == 1 ]] && echo " --consumer-defaults")$(for p in ${PRODUCER_PROPERTIES[@]+"${PRODUCER_PROPERTIES[@]}"}; do [[ $p == -X ]] || printf ' -P %s' "$p"; done)$(for p in ${CONSUMER_PROPERTIES[@]+"${CONSUMER_PROPERTIES[@]}"}; do [[ $p == -X || $p == fetch.wait.max.ms=* ]] || printf ' -C %s' "$p"; done)\`"
    echo
    cat "$OUT/machine.md"
    echo
    python3 "$BENCH/summarize.py" "$RESULTS"
} | tee "$OUT/summary.md"
