#!/usr/bin/env bash
# The one command that runs Weir's whole test suite:
#   1. system tools the integration tests need (Debian's kcat),
#   2. a Python venv at .venv with tests/requirements.txt,
#   3. cargo build --release --workspace, cargo test --release --workspace,
#   4. pytest tests/ against target/release/weir.
# Works on a fresh Debian machine with only the Rust toolchain, python3 and
# git (as root, for apt-get). Extra arguments go to pytest, e.g.
#   scripts/test.sh -k restart -x
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

log() { printf '\n== %s\n' "$*" >&2; }

# --- 1. Debian packages ------------------------------------------------------
apt_packages=()
command -v kcat >/dev/null 2>&1 || apt_packages+=(kcat)
# Debian splits venv/ensurepip out of python3; without it `python3 -m venv`
# fails. Only needed when the venv does not exist yet.
if [[ ! -x .venv/bin/python ]] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_packages+=(python3-venv)
fi
if ((${#apt_packages[@]})); then
    log "apt-get install ${apt_packages[*]}"
    if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi
kcat -V 2>&1 | head -n 1 >&2

# --- 2. Python venv ----------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    log "python3 -m venv .venv"
    python3 -m venv .venv
fi
# Reinstall only when requirements.txt changed since the last install.
stamp=.venv/.weir-requirements.sha256
want="$(sha256sum tests/requirements.txt | cut -d' ' -f1)"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    log "pip install -r tests/requirements.txt"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
    echo "$want" >"$stamp"
fi

# --- 3. Rust -----------------------------------------------------------------
# Both commands use the release profile, so `cargo test` reuses every
# dependency (and the weir binary) that `cargo build` just compiled.
log "cargo build --release --workspace"
cargo build --release --workspace
log "cargo test --release --workspace"
cargo test --release --workspace

# --- 4. Integration tests against the real binary ----------------------------
log "pytest tests/"
export WEIR_BIN="$repo_root/target/release/weir"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/ "$@"
