#!/usr/bin/env bash
# Side-by-side benchmark: the same `weft bench` run against weft (release build) and against
# Synapse 1.163 from PyPI, both on SQLite (or both on PostgreSQL with BENCH_DB=postgres: a
# throwaway cluster with PostgreSQL's durable defaults), on this machine, one after the other. Each server
# is started by the tool (so start-up time and its process's CPU and memory are measured),
# with open registration and rate limits out of the way, and stopped at the end.
# Results: target/bench/{weft,synapse}-{sqlite,postgres}.json, and the tables on stdout.
#
#   scripts/bench.sh                 # full run (several minutes)
#   BENCH_ONLY=weft scripts/bench.sh # one server only (weft or synapse)
#   scripts/bench.sh --messages 50   # extra arguments go to both runs
#   BENCH_DB=postgres scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${BENCH_DB:-sqlite}" = postgres ] && [ -z "${WEFT_TEST_POSTGRES:-}" ]; then
    WEFT_PG_DURABLE=1 exec bash scripts/with-postgres.sh bash scripts/bench.sh "$@"
fi
. scripts/interop-lib.sh
engine=sqlite
[ -n "${WEFT_TEST_POSTGRES:-}" ] && engine=postgres
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
only=${BENCH_ONLY:-}
# The appservice scenario's bridge: the tool listens on this port and writes the
# registration file (before it starts the server) that both servers are given.
bridge_port=$(free_port)
bridge_args=(--appservice-port "$bridge_port" --appservice-registration "$work/bench-bridge.yaml")
cargo build --quiet --release --bin weft
tool=target/release/weft

if [ -z "$only" ] || [ "$only" = weft ]; then
    port=$(free_port)
    echo "== weft ($(git rev-parse --short HEAD 2>/dev/null || echo unknown)) on $engine"
    WEFT_DATA_DIR="$work/weft" WEFT_DATABASE__URL="$(test_database_url bench)" WEFT_LISTEN="127.0.0.1:$port" WEFT_FEDERATION__ENABLED=false \
        WEFT_REGISTRATION__ENABLED=true WEFT_RATE_LIMITS__ENABLED=false RUST_LOG=warn \
        WEFT_APP_SERVICE_CONFIG_FILES="[\"$work/bench-bridge.yaml\"]" \
        "$tool" bench --spawn "$tool serve" --url "http://127.0.0.1:$port" --label weft \
        --idle "${IDLE_WEFT:-15000}" --json "$out/weft-$engine.json" "${bridge_args[@]}" "$@"
fi

if [ -z "$only" ] || [ "$only" = synapse ]; then
    venv=$(scripts/install-synapse.sh)
    port=$(free_port)
    synapse_database="database: {name: sqlite3, args: {database: $work/synapse/homeserver.db}}"
    if [ "$engine" = postgres ]; then
        "$venv/bin/python" -c 'import psycopg2' 2>/dev/null || "$venv/bin/pip" install --quiet --disable-pip-version-check psycopg2-binary
        # Synapse wants C collation, as its docs say to create the database.
        psql -q "$WEFT_TEST_POSTGRES/postgres" -c "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        pg_port=${WEFT_TEST_POSTGRES##*:}
        synapse_database="database: {name: psycopg2, args: {user: weft, host: 127.0.0.1, port: $pg_port, database: synapse, cp_min: 5, cp_max: 10}}"
    fi
    mkdir -p "$work/synapse"
    cat > "$work/synapse/log.yaml" <<YAML
version: 1
formatters: {plain: {format: '%(asctime)s %(levelname)s %(name)s %(message)s'}}
handlers: {file: {class: logging.FileHandler, filename: $work/synapse/homeserver.log, formatter: plain}}
root: {level: WARNING, handlers: [file]}
disable_existing_loggers: false
YAML
    cat > "$work/synapse/homeserver.yaml" <<YAML
server_name: "localhost"
pid_file: $work/synapse/homeserver.pid
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources: [{names: [client], compress: false}]
$synapse_database
log_config: $work/synapse/log.yaml
media_store_path: $work/synapse/media
signing_key_path: $work/synapse/signing.key
report_stats: false
enable_registration: true
enable_registration_without_verification: true
suppress_key_server_warning: true
trusted_key_servers: []
rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
rc_joins:
  local: {per_second: 100000, burst_count: 100000}
  remote: {per_second: 100000, burst_count: 100000}
rc_invites:
  per_room: {per_second: 100000, burst_count: 100000}
  per_user: {per_second: 100000, burst_count: 100000}
YAML
    "$venv/bin/python" -m synapse.app.homeserver --generate-keys -c "$work/synapse/homeserver.yaml" >/dev/null
    # Added after key generation: the tool writes the file just before it starts Synapse.
    echo "app_service_config_files: [$work/bench-bridge.yaml]" >> "$work/synapse/homeserver.yaml"
    echo "== Synapse $("$venv/bin/python" -c 'import synapse; print(synapse.__version__)') on $engine"
    "$tool" bench --spawn "$venv/bin/python -m synapse.app.homeserver -c $work/synapse/homeserver.yaml" \
        --url "http://127.0.0.1:$port" --label synapse --idle "${IDLE_SYNAPSE:-5000}" \
        --json "$out/synapse-$engine.json" "${bridge_args[@]}" "$@"
fi
