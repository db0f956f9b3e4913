#!/usr/bin/env bash
# Interop test: matrix-sdk / matrix-sdk-ui (crates.io, the Rust SDK under Element X) drive a
# real weft binary over HTTP: sliding sync, room list, timelines, receipts, typing, E2EE, media.
# The client is its own Cargo project (tests/interop/matrix-sdk, pinned by its Cargo.lock),
# built into target/interop/matrix-sdk so it never touches weft's own build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

cargo build --quiet --bin weft
cargo build --quiet --locked --manifest-path tests/interop/matrix-sdk/Cargo.toml \
    --target-dir target/interop/matrix-sdk
client=target/interop/matrix-sdk/debug/weft-interop-matrix-sdk

start_work_dir

# One weft server, client API only.
port=$(free_port)
start_client_only_weft target/debug/weft "$port"

# MATRIX_SDK_LOG (e.g. matrix_sdk=debug) passes through as the client's RUST_LOG.
run "matrix-sdk / matrix-sdk-ui client (Element X flows)" \
    env RUST_LOG="${MATRIX_SDK_LOG:-}" "$client" "http://127.0.0.1:$port"
if [ "$failed" -ne 0 ]; then
    echo "--- weft log (tail)"; tail -n 40 "$work/weft.out"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
