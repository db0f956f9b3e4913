#!/usr/bin/env bash
# Interop test: synadm (PyPI, the admin CLI for Synapse's admin API) manages weft's
# accounts. Installs its own venv under target/interop/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

venv=target/interop/synadm-venv
if [ ! -x "$venv/bin/synadm" ]; then
    echo "== installing synadm into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'synadm==0.49.2'
fi

ensure_weft_bin
start_work_dir
port=$(free_port)
export WEFT_REGISTRATION__SHARED_SECRET=synadm-interop-secret
start_client_only_weft "$WEFT_BIN" "$port"

run "synadm manages accounts" python3 tests/interop/synadm_check.py "http://127.0.0.1:$port" "$WEFT_REGISTRATION__SHARED_SECRET" "$venv/bin/synadm"
if [ "$failed" -ne 0 ]; then
    echo "--- weft log (tail)"; tail -n 40 "$work/weft.out"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
