#!/usr/bin/env bash
# Interop test: a bridge on mautrix-python (PyPI), the application-service framework most
# bridges are built on, registered with weft through a Synapse-style registration file.
# Installs its own venv under target/interop/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

venv=target/interop/mautrix-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import mautrix' 2>/dev/null; then
    echo "== installing mautrix into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'mautrix==0.21.1'
fi

ensure_weft_bin
start_work_dir
port=$(free_port)
as_port=$(free_port)
as_token="mautrix-interop-as-token"
hs_token="mautrix-interop-hs-token"
cat >"$work/gossip.yaml" <<YAML
id: gossip
url: "http://127.0.0.1:$as_port"
as_token: $as_token
hs_token: $hs_token
sender_localpart: gossipbot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@gossip_.*:localhost"
  aliases: []
  rooms: []
YAML
export WEFT_APP_SERVICE_CONFIG_FILES="[\"$work/gossip.yaml\"]"
start_client_only_weft "$WEFT_BIN" "$port"

run "a mautrix bridge registers, receives transactions, puppets and answers queries" \
    "$venv/bin/python" tests/interop/mautrix_bridge.py "http://127.0.0.1:$port" "$as_port" "$as_token" "$hs_token"
if [ "$failed" -ne 0 ]; then
    echo "--- weft log (tail)"; tail -n 40 "$work/weft.out"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
