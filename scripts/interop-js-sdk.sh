#!/usr/bin/env bash
# Interop test: matrix-js-sdk (npm, the SDK under Element Web) drives a real weft binary over
# HTTP: registration, refresh tokens, /sync, invites, messages, pagination, receipts, typing,
# authenticated media and Rust-crypto E2EE. The client is tests/interop/js-sdk, pinned by its
# package-lock.json and installed with `npm ci` from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

ensure_weft_bin
(cd tests/interop/js-sdk && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

start_work_dir

# One weft server, client API only.
port=$(free_port)
start_client_only_weft "$WEFT_BIN" "$port"

# JS_SDK_LOG (e.g. debug) sets the SDK's log level.
run "matrix-js-sdk client (Element Web flows)" node tests/interop/js-sdk/test.mjs "http://127.0.0.1:$port"
if [ "$failed" -ne 0 ]; then
    echo "--- weft log (tail)"; tail -n 40 "$work/weft.out"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
