#!/usr/bin/env bash
# Interop test of `weft migrate-db`: matrix-nio fills a weft on SQLite (tests/interop/
# nio_client.py), the server stops, migrate-db moves its database to PostgreSQL, weft
# starts again on PostgreSQL with the same data dir, and nio finds everything there
# (tests/interop/nio_after_migration.py). Needs WEFT_TEST_POSTGRES (scripts/with-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh
if [ -z "${WEFT_TEST_POSTGRES:-}" ]; then
    echo "no WEFT_TEST_POSTGRES: run under scripts/with-postgres.sh"; exit 1
fi
venv=$(ensure_nio_venv)
ensure_weft_bin
start_work_dir
port=$(free_port)

serve() { # database url
    WEFT_DATA_DIR="$work/weft" WEFT_DATABASE__URL="$1" WEFT_LISTEN="127.0.0.1:$port" \
        WEFT_REGISTRATION__ENABLED=true WEFT_RATE_LIMITS__ENABLED=false WEFT_FEDERATION__ENABLED=false \
        RUST_LOG="${WEFT_LOG:-warn}" "$WEFT_BIN" serve >>"$work/weft.out" 2>&1 &
    server_pid=$!
    pids+=($server_pid)
    wait_for_versions "$port"
}

serve ""
run "matrix-nio fills weft on SQLite" "$venv/bin/python" tests/interop/nio_client.py "http://127.0.0.1:$port"
kill -TERM "$server_pid"; wait "$server_pid" || true

target=$(test_database_url migrated)
run "weft migrate-db to PostgreSQL" "$WEFT_BIN" migrate-db --from "sqlite://$work/weft/weft.db" --to "$target"

serve "$target"
run "matrix-nio finds it all on PostgreSQL" "$venv/bin/python" tests/interop/nio_after_migration.py "http://127.0.0.1:$port"
if [ "$failed" -ne 0 ]; then
    echo "--- weft log (tail)"; tail -n 40 "$work/weft.out"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
