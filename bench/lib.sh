# Shared by the scripts in bench/: finding and building the binaries,
# describing the machine, starting and stopping a broker on a fresh data
# directory, reading CPU time from /proc, and running `weir bench`.
#
# Source it after setting ROOT, BENCH, OUT, BROKERS, BUILD (0/1), PIN (0/1)
# and WEIR_REV (may be empty). It sets BENCH_BIN (the `weir` binary whose
# `bench` subcommand is the load tool), WEIR_BIN (the broker), TANSU_BIN,
# CLOCK_TICKS, BROKER_PIN, CLIENT_PIN, and while a broker runs BROKER_PID,
# BROKER_PORT and DATA_DIR.
#
# Brokers: weir, tansu, tansu-sqlite (Kafka protocol), weir-amqp and
# rabbitmq (AMQP 0-9-1; rabbitmq is Debian's rabbitmq-server run as its own
# node, rabbit-bench@localhost, with its own ports and directories).

WEIR_PORT=${WEIR_PORT:-19092}
TANSU_PORT=${TANSU_PORT:-19093}
WEIR_AMQP_PORT=${WEIR_AMQP_PORT:-19672}
RABBITMQ_PORT=${RABBITMQ_PORT:-5674}
RABBITMQ_DIST_PORT=${RABBITMQ_DIST_PORT:-25674}
RABBITMQ_BENCH_NODE=${RABBITMQ_BENCH_NODE:-rabbit-bench@localhost}
CLOCK_TICKS=$(getconf CLK_TCK)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- binaries --

BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/weir}
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
    log "building weir (the load tool, weir bench) from the working tree"
    (cd "$ROOT" && cargo build --release --quiet -p weir)
    if [[ -n $WEIR_REV && " $BROKERS " == *" weir"* ]]; then
        if [[ -n $WEIR_REV && ! -d $WEIR_SOURCE ]]; then
            mkdir -p "$WEIR_SOURCE"
            (cd "$ROOT" && git archive "$WEIR_REV") | tar -x -C "$WEIR_SOURCE"
        fi
        log "building weir (release) from $WEIR_SOURCE"
        (cd "$WEIR_SOURCE" && CARGO_TARGET_DIR=$WEIR_TARGET cargo build --release --quiet -p weir)
    fi
}

check_binaries() {
    [[ -x $BENCH_BIN ]] || { echo "missing $BENCH_BIN" >&2; exit 1; }
    local broker
    for broker in $BROKERS; do
        case $broker in
            weir|weir-amqp) [[ -x $WEIR_BIN ]] || { echo "missing $WEIR_BIN" >&2; exit 1; } ;;
            rabbitmq)
                command -v rabbitmq-server >/dev/null || {
                    echo "rabbitmq-server not found: apt-get install rabbitmq-server" >&2
                    exit 1
                } ;;
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
        echo "- Disk: $(lsblk -dno NAME,SIZE,ROTA,MODEL 2>/dev/null | awk '$2 != "0B" {printf "%s%s %s (%s)", sep, $1, $2, ($3 == 1 ? "rotational" : "non-rotational"); sep="; "}')"
        echo "- Data directory filesystem: $(df --output=fstype "$probe_dir" | tail -1) on $(df --output=source "$probe_dir" | tail -1)"
        echo "- $(fsync_probe "$probe_dir")"
        if [[ -n $WEIR_REV ]]; then
            echo "- Weir: commit $WEIR_REV (release build)"
        else
            echo "- Weir: working tree at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- crates vendor Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes') (release build)"
        fi
        [[ -n $TANSU_BIN ]] && echo "- tansu: $("$TANSU_BIN" --version 2>/dev/null | head -1)"
        echo "- Load tool: \`weir bench\` from the working tree at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null) (librdkafka 2.12.1 bundled in rdkafka 0.39; lapin 4)"
        [[ " $BROKERS " == *" rabbitmq "* ]] && echo "- RabbitMQ: $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null) (Debian package), Erlang $(dpkg-query -W -f '${Version}' erlang-base 2>/dev/null)"
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
# Returns 1 when it did not start, 3 when the broker cannot do what was
# asked (weir-amqp before Weir has an AMQP listener).
start_broker() {
    local broker=$1 logfile=$2 port
    case $broker in
        weir) port=$WEIR_PORT ;;
        weir-amqp) port=$WEIR_AMQP_PORT ;;
        tansu|tansu-sqlite) port=$TANSU_PORT ;;
        rabbitmq) port=$RABBITMQ_PORT ;;
    esac
    # Another process on the port would be measured in the broker's place.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        log "$broker: port $port is already taken by another process; choose another (WEIR_PORT, TANSU_PORT, WEIR_AMQP_PORT, RABBITMQ_PORT)"
        return 1
    fi
    DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-$broker.XXXXXX")
    case $broker in
        weir)
            BROKER_PORT=$WEIR_PORT
            # shellcheck disable=SC2086
            ${BROKER_PIN[@]+"${BROKER_PIN[@]}"} "$WEIR_BIN" server --data-dir "$DATA_DIR" \
                --kafka-listen "127.0.0.1:$BROKER_PORT" \
                --amqp-listen "127.0.0.1:$WEIR_AMQP_PORT" ${WEIR_ARGS:-} \
                > "$logfile" 2>&1 &
            ;;
        weir-amqp)
            if ! "$WEIR_BIN" server --help 2>/dev/null | grep -q -- '--amqp-listen'; then
                log "weir-amqp: this Weir build has no AMQP listener (\`weir server --help\` lists no --amqp-listen); skipping Weir's AMQP runs"
                rm -rf "$DATA_DIR"
                DATA_DIR=""
                return 3
            fi
            BROKER_PORT=$WEIR_AMQP_PORT
            # shellcheck disable=SC2086
            ${BROKER_PIN[@]+"${BROKER_PIN[@]}"} "$WEIR_BIN" server --data-dir "$DATA_DIR" \
                --kafka-listen "127.0.0.1:$WEIR_PORT" \
                --amqp-listen "127.0.0.1:$BROKER_PORT" ${WEIR_ARGS:-} \
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
        rabbitmq)
            start_rabbitmq "$logfile"
            return $?
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

# Debian's rabbitmq-server as its own node (name, ports, directories all
# under $DATA_DIR), so it never meets another node on this machine. Run as
# the current user through /usr/lib/rabbitmq/bin (the /usr/sbin wrapper
# would switch to the rabbitmq user, who cannot write $DATA_DIR).
RABBITMQ_LAUNCHER_PID=""
rabbitmq_env() {
    env RABBITMQ_NODENAME="$RABBITMQ_BENCH_NODE" RABBITMQ_NODE_PORT="$RABBITMQ_PORT" \
        RABBITMQ_DIST_PORT="$RABBITMQ_DIST_PORT" RABBITMQ_MNESIA_BASE="$DATA_DIR/mnesia" \
        RABBITMQ_LOG_BASE="$DATA_DIR/log" RABBITMQ_ENABLED_PLUGINS_FILE="$DATA_DIR/enabled_plugins" \
        RABBITMQ_PID_FILE="$DATA_DIR/rabbit.pid" RABBITMQ_CONFIG_FILE="$DATA_DIR/rabbitmq" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$DATA_DIR/advanced.config" "$@"
}

start_rabbitmq() {
    local logfile=$1
    BROKER_PORT=$RABBITMQ_PORT
    if (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null; then
        log "rabbitmq: port $BROKER_PORT is already taken; set RABBITMQ_PORT"
        return 1
    fi
    mkdir -p "$DATA_DIR/mnesia" "$DATA_DIR/log"
    echo '[].' > "$DATA_DIR/enabled_plugins"
    : > "$DATA_DIR/rabbitmq.conf"
    rabbitmq_env /usr/lib/rabbitmq/bin/rabbitmq-server > "$logfile" 2>&1 &
    RABBITMQ_LAUNCHER_PID=$!
    if ! wait_for_port "$BROKER_PORT" "$RABBITMQ_LAUNCHER_PID"; then
        log "rabbitmq did not start listening on $BROKER_PORT; see $logfile"
        tail -20 "$logfile" >&2 || true
        stop_broker
        return 1
    fi
    rabbitmq_env /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBITMQ_BENCH_NODE" wait "$DATA_DIR/rabbit.pid" \
        >> "$logfile" 2>&1 || true
    BROKER_PID=$(cat "$DATA_DIR/rabbit.pid" 2>/dev/null || echo "$RABBITMQ_LAUNCHER_PID")
}

stop_broker() {
    if [[ -n $RABBITMQ_LAUNCHER_PID ]]; then
        rabbitmq_env /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBITMQ_BENCH_NODE" stop \
            > /dev/null 2>&1 || true
        wait "$RABBITMQ_LAUNCHER_PID" 2>/dev/null || true
        RABBITMQ_LAUNCHER_PID=""
    fi
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

# ------------------------------------------------------------ weir bench --

# bench_json STDERR_FILE ARGS...: runs `weir bench ARGS --json --no-progress`
# against the running broker (its CPU and RSS measured through
# --broker-pid) and prints its JSON, or {"error": ...} when it printed none.
bench_json() {
    local stderr_file=$1 result
    shift
    result=$(${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} "$BENCH_BIN" bench "$@" --json --no-progress \
        --broker-pid "$BROKER_PID" 2> "$stderr_file") || true
    if [[ -z $result ]] || ! jq -e . <<< "$result" > /dev/null 2>&1; then
        result=$(jq -cn --arg error "weir bench printed no result: $(tail -c 300 "$stderr_file")" '{error: $error}')
    fi
    printf '%s\n' "$result"
}

# The machine's limits measured by bench/hardware.sh, if it ran, for
# "fraction of the hardware" rows.
HARDWARE_JSON=${HARDWARE_JSON:-$BENCH/results/hardware.json}
