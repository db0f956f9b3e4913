#!/usr/bin/env bash
# Interop test: matrix-js-sdk (npm, the SDK under Element Web) drives a real weft binary over
# HTTP: registration, refresh tokens, /sync, invites, messages, pagination, receipts, typing,
# authenticated media and Rust-crypto E2EE. The client is tests/interop/js-sdk, pinned by its
# package-lock.json and installed with `npm ci` from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

if [ -z "${WEFT_BIN:-}" ]; then
    cargo build --quiet --bin weft
    WEFT_BIN=target/debug/weft
fi
(cd tests/interop/js-sdk && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP_INTEROP_LOGS:-}" ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# One weft server, client API only.
port=$(free_port)
WEFT_DATA_DIR="$work/weft" WEFT_LISTEN="127.0.0.1:$port" \
    WEFT_REGISTRATION__ENABLED=true WEFT_RATE_LIMITS__ENABLED=false WEFT_FEDERATION__ENABLED=false \
    RUST_LOG="${WEFT_LOG:-warn}" "$WEFT_BIN" serve >"$work/weft.out" 2>&1 &
pids+=($!)

wait_for_versions "$port"

# JS_SDK_LOG (e.g. debug) sets the SDK's log level.
run "matrix-js-sdk client (Element Web flows)" node tests/interop/js-sdk/test.mjs "http://127.0.0.1:$port"
if [ "$failed" -ne 0 ]; then
    echo "--- weft log (tail)"; tail -n 40 "$work/weft.out"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
