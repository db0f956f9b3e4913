#!/usr/bin/env bash
# Interop test: matrix-nio (PyPI) drives a real weft binary over HTTP.
# Installs its own venv under target/interop/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

venv=$(ensure_nio_venv)

cargo build --quiet --bin weft
data_dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$data_dir"' EXIT

# Two federating weft servers: A (also used alone) and B.
start_weft() { # name client_port federation_port
    WEFT_DATA_DIR="$data_dir/$1" WEFT_DATABASE__URL="$(test_database_url "$1")" WEFT_SERVER_NAME="127.0.0.1:$3" WEFT_LISTEN="127.0.0.1:$2" \
        WEFT_FEDERATION__LISTEN="127.0.0.1:$3" WEFT_FEDERATION__VERIFY_TLS=false WEFT_FEDERATION__IP_RANGE_BLOCKLIST='[]' \
        WEFT_FEDERATION__MAX_RETRY_DELAY_MS=2000 WEFT_REGISTRATION__ENABLED=true WEFT_RATE_LIMITS__ENABLED=false \
        RUST_LOG=warn target/debug/weft serve &
    pids+=($!)
}
port=$(free_port); fed_a=$(free_port); port_b=$(free_port); fed_b=$(free_port)
start_weft a "$port" "$fed_a"
start_weft b "$port_b" "$fed_b"

wait_for_versions "$port" "$port_b"

run "matrix-nio client" "$venv/bin/python" tests/interop/nio_client.py "http://127.0.0.1:$port"
run "E2EE on one server" "$venv/bin/python" tests/interop/nio_e2ee.py "http://127.0.0.1:$port"
run "E2EE across two weft servers" "$venv/bin/python" tests/interop/nio_e2ee.py "http://127.0.0.1:$port" "http://127.0.0.1:$port_b"
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
