#!/usr/bin/env bash
# The one command that runs Weir's whole test suite:
#   1. system tools the build and the integration tests need (make and g++
#      for the bundled librdkafka of `weir bench`, Debian's kcat, amqp-tools,
#      python3-venv, prometheus for promtool, chromium, node and npm,
#      iproute2 and nftables for the fault tests, e2fsprogs and mount for
#      the disk-full tests;
#      playwright-core from npm in tests/browser),
#   2. a Python venv at .venv with tests/requirements.txt,
#   3. cargo build --release --workspace, then cargo test --release --workspace,
#   4. pytest tests/ against target/release/weir.
# Works on a fresh Debian machine with only the Rust toolchain, python3 and
# git (as root, or with sudo, for apt-get). Extra arguments go to pytest:
#   scripts/test.sh -k restart -x
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

log() { printf '\n== %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

apt_updated=false
apt_install() {
    log "apt-get install $*"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    if ! $apt_updated; then
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. Debian packages ------------------------------------------------------
command -v kcat >/dev/null 2>&1 || apt_install kcat
# `weir bench` links librdkafka built from the sources bundled in rdkafka-sys
# (its own ./configure and make, C and C++); no cmake, no system librdkafka.
command -v make >/dev/null 2>&1 || apt_install make
command -v g++ >/dev/null 2>&1 || apt_install g++
log "kcat $(kcat -V 2>&1 | sed -n 's/^Version //p')"
# amqp-publish / amqp-consume (librabbitmq) for the AMQP round-trip test.
command -v amqp-publish >/dev/null 2>&1 && command -v amqp-consume >/dev/null 2>&1 || apt_install amqp-tools

# promtool (Debian's prometheus package) checks /metrics in tests/test_metrics.py.
command -v promtool >/dev/null 2>&1 || apt_install prometheus
# Headless Chromium drives the web console in tests/test_console.py.
[[ -x /usr/bin/chromium ]] || apt_install chromium
# The fault tests (tests/test_faults_*.py, tests/faults/) put nodes in network
# namespaces joined by veths and a bridge (ip) and cut them apart (nft).
command -v ip >/dev/null 2>&1 || apt_install iproute2
command -v nft >/dev/null 2>&1 || apt_install nftables
# The disk-full tests (tests/test_disk_full.py, a follower's full disk in
# tests/test_replication_faults.py) loop-mount small ext4 file systems.
command -v mkfs.ext4 >/dev/null 2>&1 || apt_install e2fsprogs
command -v mount >/dev/null 2>&1 || apt_install mount

# --- 2. Python venv ----------------------------------------------------------
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    rm -rf .venv
    log "python3 -m venv .venv"
    # Debian's python3 has no ensurepip until python3-venv is installed.
    if ! python3 -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        apt_install python3-venv
        python3 -m venv .venv
    fi
fi
# Install only when requirements.txt changed since the last install.
stamp=.venv/.weir-requirements.sha256
want="$(sha256sum tests/requirements.txt | cut -d' ' -f1)"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    log "pip install -r tests/requirements.txt"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
    echo "$want" >"$stamp"
fi

# playwright-core (pinned in tests/browser/package-lock.json) drives Chromium
# in tests/test_console.py; Debian's node and npm when the machine has none.
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
browser_stamp=tests/browser/node_modules/.weir-lock.sha256
browser_want="$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)"
if [[ ! -f $browser_stamp || "$(cat "$browser_stamp")" != "$browser_want" ]]; then
    log "npm ci (tests/browser)"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    echo "$browser_want" >"$browser_stamp"
fi

# --- 3. Rust -----------------------------------------------------------------
# Both use the release profile, so `cargo test` reuses every dependency that
# `cargo build` just compiled.
log "cargo build --release --workspace"
cargo build --release --workspace
log "cargo test --release --workspace"
cargo test --release --workspace

# --- 4. Integration tests against the real binary ----------------------------
log "pytest tests/"
export WEIR_BIN="$repo_root/target/release/weir"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/ "$@"
