#!/usr/bin/env bash
# Interop test: the Hydrogen web client SDK (npm hydrogen-view-sdk, the library under Hydrogen
# Web) runs in headless Chromium against a real weft binary: password login and first sync,
# an invite accepted, messages both ways, back-pagination to the room's creation, and an
# encrypted room between two Hydrogen sessions (olm/megolm). The client is tests/interop/hydrogen,
# pinned by its package-lock.json and installed with `npm ci`; its test page is built with vite
# into a temp dir and served from loopback; test.mjs drives it with playwright-core.
# Chromium comes from Debian (apt-get install chromium) and is installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

ensure_weft_bin
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
    echo "== installing chromium (apt)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
    fi
fi
export CHROMIUM
(cd tests/interop/hydrogen && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

start_work_dir

# The test page: Hydrogen, olm and page.js bundled by vite into the temp dir.
if ! (cd tests/interop/hydrogen && node_modules/.bin/vite build --outDir "$work/page" >"$work/vite.out" 2>&1); then
    cat "$work/vite.out"
    exit 1
fi

# One weft server, client API only.
port=$(free_port)
start_client_only_weft "$WEFT_BIN" "$port"

# The page's origin (another loopback port, so the client API is cross-origin as in real use).
web_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$work/page" "$web_port" >"$work/http.out" 2>&1 &
pids+=($!)

python3 - "$web_port" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/index.html", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("the test page server did not start")
PY

# The browser's console, failed requests and Hydrogen's state go to $work/browser.log.
run "Hydrogen (hydrogen-view-sdk) in headless Chromium" \
    node tests/interop/hydrogen/test.mjs "http://127.0.0.1:$port" "http://127.0.0.1:$web_port/index.html" "$work"
if [ "$failed" -ne 0 ]; then
    echo "--- browser log (tail)"; tail -n 40 "$work/browser.log" 2>/dev/null || true
    echo "--- weft log (tail)"; tail -n 40 "$work/weft.out"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
