#!/usr/bin/env bash
# What replication costs: Kafka produce with acks=all into a 3-node Weir
# cluster (replication factor 3, min.insync.replicas=2) against a single
# Weir node (replication factor 1), side by side, with `weir bench kafka
# produce` (librdkafka) as the client.
#
# 1. Throughput, closed loop. For every repeat, value size and partition
#    count, in turn a single node and the cluster (single, cluster, single,
#    cluster, …), each on fresh data directories: start the node(s) on
#    loopback, create the topic through the Admin API (confluent-kafka in
#    the repo's venv: RF 1 on the single node; RF 3 and
#    min.insync.replicas=2 on the cluster), wait until every partition has
#    a leader and, on the cluster, all three nodes in its ISR (polling
#    GET /api/topics/<name>), produce as fast as acknowledgements allow with
#    --no-create-topic, stop everything and delete the data.
# 2. Latency, open loop. Per size and partition count, R = --percents of the
#    cluster's median closed-loop rate from step 1 (default 50 %). For every
#    repeat, single then cluster again on fresh data directories, produce at
#    --rate R for --duration-s; each acknowledgement's latency runs from the
#    message's *scheduled* send time, so a stall is charged to every message
#    queued behind it (no coordinated omission).
#
# CPU seconds and peak RSS are read from /proc for every node and summed
# (one process for the single node, three for the cluster); "other CPU s"
# is what every other process on the machine used during the run.
# Results: runs.jsonl and summary.md (medians over complete runs and the
# cluster / single ratios) in bench/results/cluster-<utc time>/.
#
# Usage: bench/cluster.sh [options]
#       --sizes LIST        value sizes in bytes                   (default "100 1024")
#       --partitions LIST   partition counts                       (default "1 8")
#       --mb MB             payload per closed-loop run, MB (10^6 B);
#                           messages = MB / size                   (default 400)
#   -n, --messages N        messages per closed-loop run instead of --mb
#   -r, --repeats N         runs per setup and case                (default 3)
#   -d, --duration-s S      seconds per open-loop run              (default 10)
#       --percents LIST     open-loop rates as % of the cluster's median
#                           closed-loop rate; "" skips step 2      (default 50)
#       --acks A            producer acks                          (default all)
#       --linger-ms MS      producer linger.ms                     (default 5)
#       --batch-size BYTES  producer batch.size                    (default 1000000)
#       --min-insync N      the cluster topic's min.insync.replicas (default 2)
#   -P, --producer-property K=V   extra librdkafka producer property (repeatable)
#       --port-base P       ports used: P..P+2 (single node), P+10i..P+10i+3
#                           (cluster node i = 1..3: Kafka, AMQP, HTTP,
#                           controller)                            (default 21100)
#       --quick             smoke check in about a minute: 1 repeat, 10 MB,
#                           2 s open-loop runs
#       --pin               every node on CPU 0, the client on CPU 1
#       --weir-rev REV, --no-build, --out DIR   as in kafka-throughput.sh
# Environment: WEIR_BIN, BENCH_BIN override the binaries; WEIR_ARGS adds
#   arguments to every node; PYTHON is the interpreter with confluent-kafka
#   (default .venv/bin/python, which scripts/test.sh creates).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

SIZES="100 1024"
PARTITION_COUNTS="1 8"
MB=400
MESSAGES=""
REPEATS=3
DURATION_S=10
PERCENTS=50
ACKS=all
LINGER_MS=5
BATCH_SIZE=1000000
MIN_INSYNC=2
PORT_BASE=21100
PIN=0
BUILD=1
OUT=""
WEIR_REV=""
PRODUCER_PROPERTIES=()
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        --sizes) SIZES=$2; shift 2 ;;
        --partitions) PARTITION_COUNTS=$2; shift 2 ;;
        --mb) MB=$2; shift 2 ;;
        -n|--messages) MESSAGES=$2; shift 2 ;;
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -d|--duration-s) DURATION_S=$2; shift 2 ;;
        --percents) PERCENTS=$2; shift 2 ;;
        --acks) ACKS=$2; shift 2 ;;
        --linger-ms) LINGER_MS=$2; shift 2 ;;
        --batch-size) BATCH_SIZE=$2; shift 2 ;;
        --min-insync) MIN_INSYNC=$2; shift 2 ;;
        -P|--producer-property) PRODUCER_PROPERTIES+=(-X "$2"); shift 2 ;;
        --port-base) PORT_BASE=$2; shift 2 ;;
        --quick) REPEATS=1; MB=10; DURATION_S=2; shift ;;
        --pin) PIN=1; shift ;;
        --weir-rev) WEIR_REV=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done

OUT=${OUT:-$BENCH/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"
BROKERS=weir
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
if ! "$PYTHON" -c 'import confluent_kafka' 2>/dev/null; then
    echo "$PYTHON cannot import confluent_kafka (scripts/test.sh creates .venv with it; or set PYTHON)" >&2
    exit 1
fi

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"

# ------------------------------------------------------------- the nodes --

NODE_PIDS=()
NODES_DATA=""
BOOTSTRAP=""
HTTP_PORT=""

# stop_nodes: TERM to every node, up to 10 s for all of them to exit, then
# KILL; the data directories go with them. Also the EXIT trap, so a failed
# or interrupted run leaves no process and no data behind.
stop_nodes() {
    local pid
    for pid in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 100); do
        local alive=0
        for pid in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for pid in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    NODE_PIDS=()
    [[ -n $NODES_DATA ]] && rm -rf "$NODES_DATA"
    NODES_DATA=""
}
trap stop_nodes EXIT
trap 'exit 130' INT TERM

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_single NAME: one plain `weir server` (no cluster flags).
start_single() {
    local name=$1 port
    for port in $PORT_BASE $((PORT_BASE + 1)) $((PORT_BASE + 2)); do
        port_free "$port" || { log "port $port is taken by another process; choose --port-base"; return 1; }
    done
    NODES_DATA=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-single.XXXXXX")
    # shellcheck disable=SC2086
    ${BROKER_PIN[@]+"${BROKER_PIN[@]}"} "$WEIR_BIN" server --data-dir "$NODES_DATA/data" \
        --kafka-listen "127.0.0.1:$PORT_BASE" --amqp-listen "127.0.0.1:$((PORT_BASE + 1))" \
        --http-listen "127.0.0.1:$((PORT_BASE + 2))" ${WEIR_ARGS:-} > "$OUT/$name.log" 2>&1 &
    NODE_PIDS=($!)
    BOOTSTRAP=127.0.0.1:$PORT_BASE
    HTTP_PORT=$((PORT_BASE + 2))
    wait_for_port "$PORT_BASE" "${NODE_PIDS[0]}" && wait_for_port "$HTTP_PORT" "${NODE_PIDS[0]}" || {
        log "the single node did not start; see $OUT/$name.log"
        tail -20 "$OUT/$name.log" >&2 || true
        return 1
    }
}

# start_cluster NAME: three `weir server --node-id i` on loopback, each on
# its own data directory, until all three are registered and unfenced.
start_cluster() {
    local name=$1 i base voters="" port
    for i in 1 2 3; do
        base=$((PORT_BASE + 10 * i))
        for port in $base $((base + 1)) $((base + 2)) $((base + 3)); do
            port_free "$port" || { log "port $port is taken by another process; choose --port-base"; return 1; }
        done
        voters+="${voters:+,}$i@127.0.0.1:$((base + 3))"
    done
    NODES_DATA=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-cluster.XXXXXX")
    NODE_PIDS=()
    BOOTSTRAP=""
    for i in 1 2 3; do
        base=$((PORT_BASE + 10 * i))
        # shellcheck disable=SC2086
        ${BROKER_PIN[@]+"${BROKER_PIN[@]}"} "$WEIR_BIN" server --node-id "$i" \
            --data-dir "$NODES_DATA/node$i" --controller-listen "127.0.0.1:$((base + 3))" \
            --controller-quorum-voters "$voters" --kafka-listen "127.0.0.1:$base" \
            --amqp-listen "127.0.0.1:$((base + 1))" --http-listen "127.0.0.1:$((base + 2))" \
            ${WEIR_ARGS:-} > "$OUT/$name.node$i.log" 2>&1 &
        NODE_PIDS+=($!)
        BOOTSTRAP+="${BOOTSTRAP:+,}127.0.0.1:$base"
    done
    HTTP_PORT=$((PORT_BASE + 12))
    for i in 1 2 3; do
        wait_for_port "$((PORT_BASE + 10 * i + 2))" "${NODE_PIDS[$((i - 1))]}" || {
            log "cluster node $i did not start; see $OUT/$name.node$i.log"
            tail -20 "$OUT/$name.node$i.log" >&2 || true
            return 1
        }
    done
    for _ in $(seq 1 300); do
        if curl -fsS "http://127.0.0.1:$HTTP_PORT/api/cluster" 2>/dev/null | jq -e '
            .controller_leader != null and (.nodes | length) == 3
            and all(.nodes[]; .fenced == false)' > /dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    log "the cluster did not form in 60 s; see $OUT/$name.node*.log"
    return 1
}

# create_topic TOPIC PARTITIONS REPLICATION_FACTOR [NAME=VALUE...], through
# the Admin API (CreateTopics), so the same request serves both setups.
create_topic() {
    "$PYTHON" - "$BOOTSTRAP" "$@" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, partitions, replication_factor, *settings = sys.argv[1:]
admin = AdminClient({"bootstrap.servers": bootstrap})
config = dict(setting.split("=", 1) for setting in settings)
new_topic = NewTopic(topic, num_partitions=int(partitions),
                     replication_factor=int(replication_factor), config=config)
futures = admin.create_topics([new_topic], operation_timeout=30, request_timeout=60)
futures[topic].result(timeout=90)
PY
}

# wait_for_isr TOPIC PARTITIONS REPLICAS: every partition has a leader and
# REPLICAS nodes in its ISR (a single node shows itself as node 0).
wait_for_isr() {
    local topic=$1 partitions=$2 replicas=$3
    for _ in $(seq 1 600); do
        if curl -fsS "http://127.0.0.1:$HTTP_PORT/api/topics/$topic" 2>/dev/null \
            | jq -e --argjson partitions "$partitions" --argjson replicas "$replicas" '
                (.partitions | length) == $partitions
                and all(.partitions[]; .leader != null and .leader >= 0
                        and (.isr | length) == $replicas)' > /dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    log "$topic: not every partition had $replicas in-sync replicas within 60 s"
    return 1
}

# start_setup SETUP NAME TOPIC PARTITIONS: the node(s) up, the topic created
# and fully in sync.
start_setup() {
    local setup=$1 name=$2 topic=$3 partitions=$4
    if [[ $setup == single ]]; then
        start_single "$name" && create_topic "$topic" "$partitions" 1 \
            && wait_for_isr "$topic" "$partitions" 1
    else
        start_cluster "$name" && create_topic "$topic" "$partitions" 3 \
            "min.insync.replicas=$MIN_INSYNC" && wait_for_isr "$topic" "$partitions" 3
    fi
}

# nodes_sum FUNCTION: FUNCTION PID summed over the running nodes (a node
# that has exited counts 0).
nodes_sum() {
    local pid value total=0
    for pid in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
        value=$("$1" "$pid" 2>/dev/null || true)
        total=$(( total + ${value:-0} ))
    done
    echo "$total"
}

# produce SETUP RUN CASE TOPIC SIZE ARGS...: one `weir bench kafka produce`
# with the nodes' CPU read around it; appends one line to runs.jsonl.
produce() {
    local setup=$1 run=$2 case=$3 topic=$4 size=$5 stderr_file=$6
    shift 6
    local result cpu_before busy_before cpu_after busy_after rss
    cpu_before=$(nodes_sum cpu_ticks)
    busy_before=$(busy_ticks)
    result=$(${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} "$BENCH_BIN" bench kafka produce \
        --label "$setup" --broker "$BOOTSTRAP" --topic "$topic" --no-create-topic \
        -s "$size" --acks "$ACKS" --linger-ms "$LINGER_MS" --batch-size "$BATCH_SIZE" \
        --idle-timeout-s 60 --json --no-progress "$@" \
        ${PRODUCER_PROPERTIES[@]+"${PRODUCER_PROPERTIES[@]}"} 2> "$stderr_file") || true
    cpu_after=$(nodes_sum cpu_ticks)
    busy_after=$(busy_ticks)
    rss=$(nodes_sum peak_rss_kib)
    if [[ -z $result ]] || ! jq -e . <<< "$result" > /dev/null 2>&1; then
        result=$(jq -cn --arg error "weir bench printed no result: $(tail -c 300 "$stderr_file")" '{error: $error}')
    fi
    log "$setup run $run, $case: $(jq -c '{rate_msgs_per_s, p99_us: .latency_us.p99, complete, error}' <<< "$result")"
    jq -cn --arg setup "$setup" --argjson run "$run" --arg case "$case" --argjson produce "$result" \
        --argjson nodes "${#NODE_PIDS[@]}" --argjson ticks "$CLOCK_TICKS" \
        --argjson cpu "$(( cpu_after - cpu_before ))" --argjson busy "$(( busy_after - busy_before ))" \
        --argjson rss_kib "$rss" '
        def ms: if . == null then null else . / 1000 end;
        ($cpu / $ticks) as $nodes_cpu_s
        | {broker: $setup, run: $run, case: $case, nodes: $nodes,
           complete: ($produce.complete // false),
           status: ($produce.error // $produce.details.first_error // "ok"),
           figures: {
             "produce msg/s": $produce.rate_msgs_per_s,
             "produce MB/s": (($produce.rate_bytes_per_s // 0) / 1e6),
             "ack p50 ms": ($produce.latency_us.p50 | ms),
             "ack p99 ms": ($produce.latency_us.p99 | ms),
             "ack p99.9 ms": ($produce.latency_us.p999 | ms),
             "ack max ms": ($produce.latency_us.max | ms),
             "rate asked msg/s": $produce.parameters.load.rate_per_s,
             "broker CPU µs/msg (all nodes)":
               (if ($produce.messages // 0) > 0 then $nodes_cpu_s / $produce.messages * 1e6 else null end),
             "client CPU µs/msg": $produce.client.cpu_us_per_msg,
             "other CPU s": ($busy / $ticks - $nodes_cpu_s - ($produce.client.cpu_s // 0)),
             "broker peak RSS MiB (all nodes)": ($rss_kib / 1024)},
           nodes_cpu_s: $nodes_cpu_s, produce: $produce}' >> "$RESULTS"
}

record_failure() {
    jq -cn --arg setup "$1" --argjson run "$2" --arg case "$3" --arg status "$4" \
        '{broker: $setup, run: $run, case: $case, complete: false, status: $status}' >> "$RESULTS"
}

messages_for() {
    if [[ -n $MESSAGES ]]; then echo "$MESSAGES"; else echo $(( MB * 1000000 / $1 )); fi
}

case_name() {
    echo "$1 B, $2 partition$([[ $2 == 1 ]] || echo s)"
}

# run_case SETUP RUN SIZE PARTITIONS [RATE]: closed loop without RATE.
run_case() {
    local setup=$1 run=$2 size=$3 partitions=$4 rate=${5:-}
    local case name topic
    case=$(case_name "$size" "$partitions")
    if [[ -n $rate ]]; then
        case+=", open loop at $rate msg/s"
        name=$setup-$run-${size}B-p$partitions-rate$rate
    else
        case+=", closed loop"
        name=$setup-$run-${size}B-p$partitions
    fi
    topic=cluster-bench-$size-$partitions
    log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
    if ! start_setup "$setup" "$name" "$topic" "$partitions"; then
        record_failure "$setup" "$run" "$case" "$setup did not start or the topic did not get in sync"
        stop_nodes
        return 0
    fi
    if [[ -n $rate ]]; then
        produce "$setup" "$run" "$case" "$topic" "$size" "$OUT/$name.stderr" \
            --rate "$rate" --duration-s "$DURATION_S"
    else
        produce "$setup" "$run" "$case" "$topic" "$size" "$OUT/$name.stderr" \
            -n "$(messages_for "$size")"
    fi
    stop_nodes
}

# ------------------------------------------------------------------- runs --

write_machine_report "$OUT/machine.md"
log "results in $OUT"

for run in $(seq 1 "$REPEATS"); do
    for size in $SIZES; do
        for partitions in $PARTITION_COUNTS; do
            for setup in single cluster; do
                run_case "$setup" "$run" "$size" "$partitions"
            done
        done
    done
done

# The open-loop rates: PERCENTS of the cluster's median closed-loop rate.
declare -A CLUSTER_MAX=()
for size in $SIZES; do
    for partitions in $PARTITION_COUNTS; do
        CLUSTER_MAX[$size-$partitions]=$(jq -s --arg case "$(case_name "$size" "$partitions"), closed loop" '
            [.[] | select(.broker == "cluster" and .case == $case and .complete)
                 | .figures["produce msg/s"]]
            | sort | if length == 0 then 0 else .[(length - 1) / 2 | floor] end | floor' "$RESULTS")
        log "$(case_name "$size" "$partitions"): the cluster's median closed-loop rate is ${CLUSTER_MAX[$size-$partitions]} msg/s"
    done
done

if [[ -n $PERCENTS ]]; then
    for run in $(seq 1 "$REPEATS"); do
        for size in $SIZES; do
            for partitions in $PARTITION_COUNTS; do
                for percent in $PERCENTS; do
                    rate=$(( ${CLUSTER_MAX[$size-$partitions]} * percent / 100 ))
                    if [[ $rate -le 0 ]]; then
                        log "$(case_name "$size" "$partitions"): no complete closed-loop cluster run, no open-loop rate"
                        continue
                    fi
                    for setup in single cluster; do
                        run_case "$setup" "$run" "$size" "$partitions" "$rate"
                    done
                done
            done
        done
    done
fi

{
    echo "## Replication cost: a 3-node cluster (RF 3, min.insync.replicas=$MIN_INSYNC) against a single node (RF 1), Kafka produce, acks=$ACKS, linger.ms=$LINGER_MS, batch.size=$BATCH_SIZE, one producer"
    echo
    command_line=bench/cluster.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\` (closed-loop messages per run: $(for s in $SIZES; do printf '%s × %s B; ' "$(messages_for "$s")" "$s"; done)open-loop runs of ${DURATION_S} s at ${PERCENTS:-no} % of the cluster's median closed-loop rate)"
    echo
    echo "All nodes and the client on one machine over loopback; the cluster's three nodes share its CPUs and its disk."
    echo
    cat "$OUT/machine.md"
    echo
    "$PYTHON" "$BENCH/summarize_cluster.py" "$RESULTS"
} | tee "$OUT/summary.md"
