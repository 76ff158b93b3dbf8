#!/usr/bin/env bash
# What idempotence and transactions cost a producer, and how long a consumer
# group takes to form, for Weir against tansu, with librdkafka
# (`weir bench kafka`) as the client.
#
# For every repeat and every broker, in turn (weir, tansu, weir, tansu, ...),
# on one broker started on a fresh data directory:
#
# 1. Producer modes. For every partition count (default 1 and 3) and every
#    mode — plain, idempotent (enable.idempotence=true) and transactional
#    (begin / produce --txn-batch messages / commit, in a loop) — produce N
#    messages of S bytes with acks=all to a new topic, reading the broker's
#    CPU time from /proc/<pid>/stat before and after. The modes run in a
#    different order in every repeat (rotated), so none always goes first.
#    Then read everything back (read_committed, librdkafka's default) and
#    check that each message arrived exactly once, unless --no-verify.
# 2. Group formation. --rebalance-rounds times: start --consumers consumers
#    of a new group together on one topic of --rebalance-partitions
#    partitions and time how long until every one holds a share and has read
#    a message from it (`weir bench kafka rebalance`; see its module
#    documentation in crates/bench/src/kafka/rebalance.rs).
#
# At the end print markdown tables of medians, and each mode's ratio to the
# plain producer on the same broker.
#
# Usage: bench/kafka-features.sh [options]
#   -n, --messages N          messages per producer run           (default 2000000)
#   -s, --size BYTES          value size                          (default 100)
#   -r, --repeats N           broker starts per broker            (default 3)
#   -b, --brokers LIST        space-separated, from: weir tansu tansu-sqlite
#                                                                 (default "weir tansu")
#       --partitions LIST     partition counts for the producer modes (default "1 3";
#                             with more than one, messages go round-robin)
#       --modes LIST          from: plain idempotent transactional (default: all three)
#       --txn-batch N         messages per transaction            (default 1000)
#       --rebalance-rounds N  group formations per broker start, 0 = none (default 3)
#       --consumers N         consumers in the group              (default 3)
#       --rebalance-partitions N  partitions of the group's topic (default 6)
#   -P, --producer-property K=V   extra librdkafka producer property (repeatable)
#   -G, --group-property K=V      extra librdkafka property for the group's
#                                 consumers (repeatable), e.g. heartbeat.interval.ms=500
#       --no-verify           do not read the produced messages back
#       --pin                 broker on CPU 0, client on CPU 1 (default: both share)
#       --weir-rev REV        build Weir from this commit (a `git archive` copy under
#                             bench/.tools, target bench/target/weir) instead of the
#                             working tree, so a half-edited tree is not measured
#       --no-build            use the binaries already built
#       --out DIR             results directory (default bench/results/features-<utc time>)
# Producer settings are kafka-throughput.sh's: acks=all, linger.ms=5,
# batch.size=1000000, batch.num.messages=10000, no compression.
# Environment: WEIR_BIN, TANSU_BIN, BENCH_BIN override the binaries;
#   WEIR_ARGS / TANSU_ARGS add broker arguments; WEIR_PORT (19092),
#   TANSU_PORT (19093).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

MESSAGES=2000000
SIZE=100
REPEATS=3
BROKERS="weir tansu"
PARTITION_COUNTS="1 3"
MODES="plain idempotent transactional"
TXN_BATCH=1000
REBALANCE_ROUNDS=3
CONSUMERS=3
REBALANCE_PARTITIONS=6
VERIFY=1
PIN=0
BUILD=1
OUT=""
WEIR_REV=""
PRODUCER_PROPERTIES=()
GROUP_PROPERTIES=()
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        -n|--messages) MESSAGES=$2; shift 2 ;;
        -s|--size) SIZE=$2; shift 2 ;;
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -b|--brokers) BROKERS=$2; shift 2 ;;
        --partitions) PARTITION_COUNTS=$2; shift 2 ;;
        --modes) MODES=$2; shift 2 ;;
        --txn-batch) TXN_BATCH=$2; shift 2 ;;
        --rebalance-rounds) REBALANCE_ROUNDS=$2; shift 2 ;;
        --consumers) CONSUMERS=$2; shift 2 ;;
        --rebalance-partitions) REBALANCE_PARTITIONS=$2; shift 2 ;;
        -P|--producer-property) PRODUCER_PROPERTIES+=(-X "$2"); shift 2 ;;
        -G|--group-property) GROUP_PROPERTIES+=(-X "$2"); shift 2 ;;
        --no-verify) VERIFY=0; shift ;;
        --pin) PIN=1; shift ;;
        --weir-rev) WEIR_REV=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done
for mode in $MODES; do
    case $mode in
        plain|idempotent|transactional) ;;
        *) echo "unknown mode: $mode" >&2; exit 64 ;;
    esac
done

OUT=${OUT:-$BENCH/results/features-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
write_machine_report "$OUT/machine.md"

# `weir bench` prints one report per run; summarize_features.py reads the
# flat field names of the earlier kafka-load tool, so the details and rates
# are lifted to the top level.
COMPAT='. + (.details // {}) + {msgs_per_s: .rate_msgs_per_s, mb_per_s: ((.rate_bytes_per_s // 0) / 1e6), client_cpu_s: .client.cpu_s, client_cpu_us_per_msg: .client.cpu_us_per_msg, elapsed_s: .duration_s}'
kafka_bench() {
    local stderr_file=$1 result
    shift
    result=$(${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} "$BENCH_BIN" bench kafka "$@" --json --no-progress \
        2> "$stderr_file") || true
    if [[ -z $result ]] || ! jq -e . <<< "$result" > /dev/null 2>&1; then
        jq -cn --arg error "weir bench printed no result: $(tail -c 300 "$stderr_file")" '{error: $error}'
    else
        jq -c "$COMPAT" <<< "$result"
    fi
}

# ------------------------------------------------------ the producer modes --

mode_flags() {
    case $1 in
        plain) ;;
        idempotent) echo --idempotence ;;
        transactional) echo --transactional-batch "$TXN_BATCH" ;;
    esac
}

# produce_once BROKER RUN PARTITIONS MODE: one producer run and its read-back.
produce_once() {
    local broker=$1 run=$2 partitions=$3 mode=$4
    local topic=$mode-p$partitions-r$run partition=0
    [[ $partitions -gt 1 ]] && partition=-1
    local busy0 busy1 ticks0 ticks1 produce consume produced
    busy0=$(busy_ticks)
    ticks0=$(cpu_ticks "$BROKER_PID")
    # shellcheck disable=SC2046
    produce=$(kafka_bench "$OUT/$broker-$run-$mode-p$partitions.produce.stderr" produce \
        --label "$broker" --broker "127.0.0.1:$BROKER_PORT" --topic "$topic" \
        --partitions "$partitions" --partition "$partition" \
        -n "$MESSAGES" -s "$SIZE" --acks all --linger-ms 5 --batch-size 1000000 \
        --idle-timeout-s 30 $(mode_flags "$mode") \
        ${PRODUCER_PROPERTIES[@]+"${PRODUCER_PROPERTIES[@]}"})
    ticks1=$(cpu_ticks "$BROKER_PID" 2>/dev/null || echo null)
    busy1=$(busy_ticks)
    log "$broker run $run, $partitions partition(s), $mode: $(jq -c '{msgs_per_s, complete, transactions, commit_ms_p50, first_error, error}' <<< "$produce")"

    consume=null
    produced=$(jq -r 'if .complete then .messages else 0 end' <<< "$produce")
    if [[ $VERIFY == 1 && $produced -gt 0 ]]; then
        consume=$(kafka_bench "$OUT/$broker-$run-$mode-p$partitions.consume.stderr" consume \
            --label "$broker" --broker "127.0.0.1:$BROKER_PORT" --topic "$topic" \
            --partition "$partition" -n "$produced" -s "$SIZE" --idle-timeout-s 30 \
            --fetch-wait-ms 10)
        log "$broker run $run, $partitions partition(s), $mode: read back $(jq -c '{messages, complete, duplicates, missing, offset_gaps}' <<< "$consume")"
    fi
    jq -cn --arg broker "$broker" --argjson run "$run" --arg mode "$mode" \
        --argjson partitions "$partitions" --argjson produce "$produce" \
        --argjson consume "$consume" --argjson t0 "$ticks0" --argjson t1 "$ticks1" \
        --argjson hz "$CLOCK_TICKS" --argjson busy "$(( busy1 - busy0 ))" '
        {phase: "produce", broker: $broker, run: $run, mode: $mode,
         partitions: $partitions, produce: $produce, verify: $consume,
         broker_cpu_s: (if $t1 == null then null else ($t1 - $t0) / $hz end),
         other_cpu_s: (($busy - (($t1 // $t0) - $t0)) / $hz - ($produce.client_cpu_s // 0))}' \
        >> "$RESULTS"
}

# ------------------------------------------------------- group formation --

rebalance_once() {
    local broker=$1 run=$2 round=$3
    local ticks0 ticks1 result
    ticks0=$(cpu_ticks "$BROKER_PID")
    result=$(kafka_bench "$OUT/$broker-$run-rebalance-$round.stderr" rebalance \
        --label "$broker" --broker "127.0.0.1:$BROKER_PORT" --topic group-topic \
        --topic-partitions "$REBALANCE_PARTITIONS" --consumers "$CONSUMERS" \
        ${GROUP_PROPERTIES[@]+"${GROUP_PROPERTIES[@]}"})
    ticks1=$(cpu_ticks "$BROKER_PID" 2>/dev/null || echo null)
    log "$broker run $run, group round $round: $(jq -c '{ready_s, generations_seen, stable, errors, error}' <<< "$result")"
    jq -cn --arg broker "$broker" --argjson run "$run" --argjson round "$round" \
        --argjson rebalance "$result" --argjson t0 "$ticks0" --argjson t1 "$ticks1" \
        --argjson hz "$CLOCK_TICKS" '
        {phase: "rebalance", broker: $broker, run: $run, round: $round,
         rebalance: $rebalance,
         broker_cpu_s: (if $t1 == null then null else ($t1 - $t0) / $hz end)}' \
        >> "$RESULTS"
}

# ------------------------------------------------------------------ a run --

# The modes, rotated left by (run - 1), so each mode takes each position.
rotated_modes() {
    local run=$1
    local -a modes
    read -r -a modes <<< "$MODES"
    local count=${#modes[@]} index
    for (( index = 0; index < count; index++ )); do
        printf '%s ' "${modes[$(( (index + run - 1) % count ))]}"
    done
}

run_once() {
    local broker=$1 run=$2
    log "$broker run $run: start"
    if ! start_broker "$broker" "$OUT/$broker-$run.log"; then
        jq -cn --arg broker "$broker" --argjson run "$run" \
            '{phase: "broker", broker: $broker, run: $run, error: "broker did not start"}' >> "$RESULTS"
        return 0
    fi
    local partitions mode round
    for partitions in $PARTITION_COUNTS; do
        for mode in $(rotated_modes "$run"); do
            kill -0 "$BROKER_PID" 2>/dev/null || break 2
            produce_once "$broker" "$run" "$partitions" "$mode"
        done
    done
    for (( round = 1; round <= REBALANCE_ROUNDS; round++ )); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        rebalance_once "$broker" "$run" "$round"
    done
    local rss
    rss=$(peak_rss_kib "$BROKER_PID" 2>/dev/null || echo null)
    jq -cn --arg broker "$broker" --argjson run "$run" --argjson rss "$rss" \
        '{phase: "broker", broker: $broker, run: $run,
          broker_peak_rss_mib: (if $rss == null then null else $rss / 1024 end)}' >> "$RESULTS"
    stop_broker
}

log "results in $OUT"
for run in $(seq 1 "$REPEATS"); do
    for broker in $BROKERS; do
        run_once "$broker" "$run"
    done
done

# --------------------------------------------------------------- summary --

{
    echo "## Producer modes and group formation: $MESSAGES × $SIZE B per producer run, acks=all, partitions: $PARTITION_COUNTS, $TXN_BATCH messages per transaction; $CONSUMERS consumers on $REBALANCE_PARTITIONS partitions"
    echo
    command_line=bench/kafka-features.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\`"
    echo
    cat "$OUT/machine.md"
    echo
    python3 "$BENCH/summarize_features.py" "$RESULTS"
} | tee "$OUT/summary.md"
