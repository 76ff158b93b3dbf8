#!/usr/bin/env bash
# Table 6: the physical limits of this machine, measured the same way every
# time, so every Weir figure can be shown as a fraction of what the hardware
# allows:
#
# * loopback TCP: iperf3, one stream, client and server on 127.0.0.1;
# * sequential write with fdatasync: fio, 1 MiB blocks, fdatasync after
#   every 8 MiB (the size of a busy group commit), the throughput a log
#   that syncs what it acknowledges can reach;
# * fsync latency: fio, 4 KiB appends, fdatasync after each, percentiles of
#   the sync call (what one acknowledged write waits for at least).
#
# Installs Debian's iperf3 and fio when missing. Writes
# bench/results/hardware.json (read by the other scripts' summaries) and a
# Markdown table; medians of --repeats runs.
#
# Usage: bench/hardware.sh [options]
#   -r, --repeats N     runs of each measurement             (default 3)
#   -t, --seconds S     seconds per iperf3 / fio run         (default 10)
#       --dir DIR       where fio writes (default: a fresh directory under
#                       ${TMPDIR:-/tmp}, the same filesystem the brokers use)
#       --quick         1 run of 3 s each
#       --out DIR       results directory (default bench/results/hardware-<utc time>)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

REPEATS=3
SECONDS_PER_RUN=10
FIO_DIR=""
OUT=""
IPERF_PORT=${IPERF_PORT:-15201}
ARGS=("$@")

while [[ $# -gt 0 ]]; do
    case "$1" in
        -r|--repeats) REPEATS=$2; shift 2 ;;
        -t|--seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        --dir) FIO_DIR=$2; shift 2 ;;
        --quick) REPEATS=1; SECONDS_PER_RUN=3; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 64 ;;
    esac
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

install_missing() {
    local missing=()
    command -v iperf3 > /dev/null || missing+=(iperf3)
    command -v fio > /dev/null || missing+=(fio)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "apt-get install ${missing[*]}"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}
install_missing

OUT=${OUT:-$BENCH/results/hardware-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=$OUT/runs.jsonl
: > "$RESULTS"
WORK=${FIO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-hardware.XXXXXX")}
mkdir -p "$WORK"
IPERF_PID=""
cleanup() {
    [[ -n $IPERF_PID ]] && kill "$IPERF_PID" 2>/dev/null || true
    rm -f "$WORK"/fio-*
    [[ -z $FIO_DIR ]] && rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

loopback_mb_per_s() {
    iperf3 -c 127.0.0.1 -p "$IPERF_PORT" -t "$SECONDS_PER_RUN" -J 2> /dev/null \
        | jq '.end.sum_received.bits_per_second / 8 / 1e6'
}

seq_write_mb_per_s() {
    fio --name=fio-seq --directory="$WORK" --rw=write --bs=1M --size=4G \
        --time_based --runtime="$SECONDS_PER_RUN" --ioengine=psync --fdatasync=8 \
        --end_fsync=1 --output-format=json 2> /dev/null \
        | jq '.jobs[0].write.bw_bytes / 1e6'
    rm -f "$WORK"/fio-seq*
}

# fdatasync latency percentiles (ms) of 4 KiB appends: {p50, p99, p999}.
fsync_latency_ms() {
    fio --name=fio-sync --directory="$WORK" --rw=write --bs=4k --size=256M \
        --time_based --runtime="$SECONDS_PER_RUN" --ioengine=psync --fdatasync=1 \
        --output-format=json 2> /dev/null \
        | jq -c '.jobs[0].sync.lat_ns.percentile as $p
                 | {p50: ($p["50.000000"] / 1e6), p99: ($p["99.000000"] / 1e6),
                    p999: ($p["99.900000"] / 1e6), syncs_per_s: (.jobs[0].sync.lat_ns.N / '"$SECONDS_PER_RUN"')}'
    rm -f "$WORK"/fio-sync*
}

iperf3 -s -p "$IPERF_PORT" > "$OUT/iperf3-server.log" 2>&1 &
IPERF_PID=$!
sleep 0.5
log "results in $OUT; fio writes in $WORK ($(df --output=fstype,source "$WORK" | tail -1))"
for run in $(seq 1 "$REPEATS"); do
    log "load: $(cut -d' ' -f1-3 /proc/loadavg)"
    loopback=$(loopback_mb_per_s)
    write=$(seq_write_mb_per_s)
    sync=$(fsync_latency_ms)
    log "run $run: loopback $loopback MB/s, sequential write $write MB/s, fdatasync $sync"
    jq -cn --argjson run "$run" --argjson loopback "${loopback:-null}" --argjson write "${write:-null}" \
        --argjson sync "${sync:-null}" '
        {broker: "machine", run: $run, case: "hardware", complete: true,
         figures: {"loopback TCP MB/s (iperf3, 1 stream)": $loopback,
                   "sequential write MB/s (1 MiB blocks, fdatasync every 8 MiB)": $write,
                   "fdatasync of a 4 KiB append p50 ms": $sync.p50,
                   "fdatasync of a 4 KiB append p99 ms": $sync.p99,
                   "fdatasync of a 4 KiB append p99.9 ms": $sync.p999,
                   "fdatasyncs per second (one writer)": $sync.syncs_per_s}}' >> "$RESULTS"
done

jq -s --arg at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
    def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
    {measured_at: $at,
     loopback_tcp_mb_per_s: (map(.figures["loopback TCP MB/s (iperf3, 1 stream)"]) | median),
     disk_write_fdatasync_mb_per_s: (map(.figures["sequential write MB/s (1 MiB blocks, fdatasync every 8 MiB)"]) | median),
     fdatasync_p50_ms: (map(.figures["fdatasync of a 4 KiB append p50 ms"]) | median),
     fdatasync_p99_ms: (map(.figures["fdatasync of a 4 KiB append p99 ms"]) | median)}' \
    "$RESULTS" > "$OUT/hardware.json"
cp "$OUT/hardware.json" "$BENCH/results/hardware.json"

{
    echo "## Table 6. The machine's limits (medians of $REPEATS runs of ${SECONDS_PER_RUN} s)"
    echo
    command_line=bench/hardware.sh
    [[ ${#ARGS[@]} -gt 0 ]] && command_line+=$(printf ' %q' "${ARGS[@]}")
    echo "Command: \`$command_line\`"
    echo
    echo "- CPUs: $(nproc) × $(lscpu | sed -n 's/^Model name: *//p' | head -1); memory $(free -g | awk '/^Mem:/ {print $2}') GiB; kernel $(uname -sr)"
    echo "- Disk: $(lsblk -dno NAME,SIZE,ROTA,MODEL 2>/dev/null | awk '$2 != "0B" {printf "%s%s %s (%s)", sep, $1, $2, ($3 == 1 ? "rotational" : "non-rotational"); sep="; "}'); fio wrote to $(df --output=fstype,source "$WORK" | tail -1 | xargs)"
    echo "- $(iperf3 --version | head -1); $(fio --version)"
    echo "- Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    python3 "$BENCH/summarize_runs.py" "$RESULTS" --every-run
} | tee "$OUT/summary.md"
