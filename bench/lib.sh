# Shared by bench/kafka-throughput.sh and bench/kafka-features.sh: finding
# and building the binaries, describing the machine, starting and stopping a
# broker on a fresh data directory, and reading CPU time from /proc.
#
# Source it after setting ROOT, BENCH, OUT, BROKERS, BUILD (0/1), PIN (0/1)
# and WEIR_REV (may be empty). It sets KAFKA_LOAD_BIN, WEIR_BIN, TANSU_BIN,
# CLOCK_TICKS, BROKER_PIN, CLIENT_PIN, and while a broker runs BROKER_PID,
# BROKER_PORT and DATA_DIR.

WEIR_PORT=${WEIR_PORT:-19092}
TANSU_PORT=${TANSU_PORT:-19093}
CLOCK_TICKS=$(getconf CLK_TCK)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- binaries --

KAFKA_LOAD_BIN=${KAFKA_LOAD_BIN:-$BENCH/target/release/kafka-load}
WEIR_SOURCE=$ROOT
WEIR_TARGET=$ROOT/target
if [[ -n $WEIR_REV ]]; then
    WEIR_REV=$(cd "$ROOT" && git rev-parse --short "$WEIR_REV")
    WEIR_SOURCE=$BENCH/.tools/weir-src-$WEIR_REV
    WEIR_TARGET=$BENCH/target/weir
fi
WEIR_BIN=${WEIR_BIN:-$WEIR_TARGET/release/weir}
if [[ -z "${TANSU_BIN:-}" ]]; then
    if [[ -x $BENCH/.tools/bin/tansu ]]; then
        TANSU_BIN=$BENCH/.tools/bin/tansu
    else
        TANSU_BIN=$(command -v tansu || true)
    fi
fi

build_binaries() {
    log "building kafka-load"
    (cd "$BENCH/kafka-load" && CARGO_TARGET_DIR=$BENCH/target cargo build --release --quiet)
    if [[ " $BROKERS " == *" weir "* ]]; then
        if [[ -n $WEIR_REV && ! -d $WEIR_SOURCE ]]; then
            mkdir -p "$WEIR_SOURCE"
            (cd "$ROOT" && git archive "$WEIR_REV") | tar -x -C "$WEIR_SOURCE"
        fi
        log "building weir (release) from $WEIR_SOURCE"
        (cd "$WEIR_SOURCE" && CARGO_TARGET_DIR=$WEIR_TARGET cargo build --release --quiet -p weir)
    fi
}

check_binaries() {
    [[ -x $KAFKA_LOAD_BIN ]] || { echo "missing $KAFKA_LOAD_BIN" >&2; exit 1; }
    local broker
    for broker in $BROKERS; do
        case $broker in
            weir) [[ -x $WEIR_BIN ]] || { echo "missing $WEIR_BIN" >&2; exit 1; } ;;
            tansu|tansu-sqlite)
                [[ -n $TANSU_BIN && -x $TANSU_BIN ]] || {
                    echo "tansu not found: cargo install tansu --locked --features dynostore,libsql --root $BENCH/.tools" >&2
                    exit 1
                } ;;
            *) echo "unknown broker: $broker" >&2; exit 64 ;;
        esac
    done
}

if [[ $BUILD == 1 ]]; then
    build_binaries
fi
check_binaries

CLIENT_PIN=()
BROKER_PIN=()
if [[ $PIN == 1 ]]; then
    BROKER_PIN=(taskset -c 0)
    CLIENT_PIN=(taskset -c 1)
fi

# ------------------------------------------------------------ the machine --

fsync_probe() {
    python3 - "$1" <<'PY'
import os, statistics, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
block = os.urandom(4096)
latencies = []
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
try:
    for _ in range(200):
        os.write(fd, block)
        started = time.perf_counter()
        os.fsync(fd)
        latencies.append((time.perf_counter() - started) * 1000)
finally:
    os.close(fd)
    os.unlink(path)
latencies.sort()
print(f"fsync of a 4 KiB append: median {statistics.median(latencies):.3f} ms, "
      f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.3f} ms (200 samples)")
PY
}

# Writes the machine's description to $1 and shows it on stderr.
write_machine_report() {
    local report=$1 probe_dir
    probe_dir=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-probe.XXXXXX")
    {
        echo "- CPUs: $(nproc) × $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
        echo "- Memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
        echo "- Kernel: $(uname -sr)"
        echo "- Load average when the benchmark started: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shares the same CPUs)"
        echo "- Data directory filesystem: $(df --output=fstype "$probe_dir" | tail -1) on $(df --output=source "$probe_dir" | tail -1)"
        echo "- $(fsync_probe "$probe_dir")"
        if [[ -n $WEIR_REV ]]; then
            echo "- Weir: commit $WEIR_REV (release build)"
        else
            echo "- Weir: working tree at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- crates vendor Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes') (release build)"
        fi
        [[ -n $TANSU_BIN ]] && echo "- tansu: $("$TANSU_BIN" --version 2>/dev/null | head -1)"
        echo "- librdkafka: $("$KAFKA_LOAD_BIN" --version 2>/dev/null) (rdkafka 0.39 / librdkafka 2.12.1, bundled)"
        echo "- Client and broker on the same machine$([[ $PIN == 1 ]] && echo ', broker pinned to CPU 0 and client to CPU 1' || echo ', sharing all CPUs (no pinning)')"
    } > "$report"
    rmdir "$probe_dir"
    cat "$report" >&2
}

# ------------------------------------------------------------- the broker --

BROKER_PID=""
BROKER_PORT=""
DATA_DIR=""

cpu_ticks() {
    # Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted after the
    # ")" that closes the command name, which may itself hold spaces.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

busy_ticks() {
    # Every CPU's non-idle time (user nice system - - irq softirq steal) from
    # /proc/stat, so that work by other processes during a run shows up.
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

peak_rss_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

wait_for_port() {
    local port=$1 pid=$2
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# start_broker BROKER LOGFILE: a fresh data directory, the broker listening.
start_broker() {
    local broker=$1 logfile=$2
    DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-$broker.XXXXXX")
    case $broker in
        weir)
            BROKER_PORT=$WEIR_PORT
            # shellcheck disable=SC2086
            ${BROKER_PIN[@]+"${BROKER_PIN[@]}"} "$WEIR_BIN" server --data-dir "$DATA_DIR" \
                --kafka-listen "127.0.0.1:$BROKER_PORT" ${WEIR_ARGS:-} \
                > "$logfile" 2>&1 &
            ;;
        tansu|tansu-sqlite)
            BROKER_PORT=$TANSU_PORT
            # memory:// is tansu's in-memory engine (object_store InMemory);
            # sqlite://<name> is a libSQL file relative to the working
            # directory, so tansu runs inside the fresh data directory (which
            # also keeps it from loading a stray .env).
            local storage=memory://tansu/
            [[ $broker == tansu-sqlite ]] && storage=sqlite://tansu.db
            # shellcheck disable=SC2086
            (cd "$DATA_DIR" && exec ${BROKER_PIN[@]+"${BROKER_PIN[@]}"} "$TANSU_BIN" broker \
                --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
                --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
                --storage-engine "$storage" \
                ${TANSU_ARGS:-}) > "$logfile" 2>&1 &
            ;;
    esac
    BROKER_PID=$!
    if ! wait_for_port "$BROKER_PORT" "$BROKER_PID"; then
        log "$broker did not start listening on $BROKER_PORT; see $logfile"
        tail -20 "$logfile" >&2 || true
        stop_broker
        return 1
    fi
}

stop_broker() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
    if [[ -n $DATA_DIR ]]; then
        rm -rf "$DATA_DIR"
    fi
    DATA_DIR=""
}
trap stop_broker EXIT
