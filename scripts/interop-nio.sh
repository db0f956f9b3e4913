#!/usr/bin/env bash
# Interop test: matrix-nio (PyPI) drives a real weft binary over HTTP.
# Installs its own venv under target/interop/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/interop/nio-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import nio, vodozemac' 2>/dev/null; then
    echo "== installing matrix-nio (with its vodozemac E2EE support) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'matrix-nio[e2e]==0.26.0'
fi

cargo build --quiet --bin weft
data_dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
WEFT_DATA_DIR="$data_dir" WEFT_LISTEN="127.0.0.1:$port" WEFT_FEDERATION__LISTEN=127.0.0.1:0 WEFT_REGISTRATION__ENABLED=true \
    WEFT_RATE_LIMITS__ENABLED=false RUST_LOG=warn target/debug/weft serve &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data_dir"' EXIT

python3 - "$port" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/_matrix/client/versions"
for _ in range(300):
    try:
        urllib.request.urlopen(url, timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("weft did not start")
PY

passed=0
failed=0
for script in tests/interop/nio_client.py tests/interop/nio_e2ee.py; do
    echo "== $script"
    if "$venv/bin/python" "$script" "http://127.0.0.1:$port"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
