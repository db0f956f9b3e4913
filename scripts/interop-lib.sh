# Helpers the interop scripts share (sourced, not run).

# A free loopback port (bound and released).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (30 s at most) until a client API answers /versions on each given port.
wait_for_versions() {
    python3 - "$@" <<'PY'
import sys, time, urllib.request
for port in sys.argv[1:]:
    url = f"http://127.0.0.1:{port}/_matrix/client/versions"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"no server answered on port {port}")
PY
}

# Runs one interop test, counting it in $passed / $failed.
passed=0
failed=0
run() { # description, then the command
    echo "== $1"
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# A temp dir ($work) for the run's data and logs, and an exit trap that stops the processes
# listed in $pids and removes it (kept, and its path printed, with KEEP_INTEROP_LOGS=1).
start_work_dir() {
    work=$(mktemp -d)
    pids=()
    trap interop_cleanup EXIT
}
interop_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP_INTEROP_LOGS:-}" ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}

# The database url for a weft under test named $1: with WEFT_TEST_POSTGRES set
# (scripts/with-postgres.sh), a new PostgreSQL database on that cluster; otherwise empty
# (SQLite in the server's data dir).
test_database_url() {
    if [ -n "${WEFT_TEST_POSTGRES:-}" ]; then
        local name="weft_interop_$$_$1"
        psql -q "$WEFT_TEST_POSTGRES/postgres" -c "CREATE DATABASE $name" >/dev/null
        echo "$WEFT_TEST_POSTGRES/$name"
    fi
}

# Starts the weft binary $1 with the client API only on port $2 (registration open, no rate
# limits, no federation), data in $work/weft, log in $work/weft.out; waits until it answers.
start_client_only_weft() {
    WEFT_DATA_DIR="$work/weft" WEFT_DATABASE__URL="$(test_database_url client)" WEFT_LISTEN="127.0.0.1:$2" \
        WEFT_REGISTRATION__ENABLED=true WEFT_RATE_LIMITS__ENABLED=false WEFT_FEDERATION__ENABLED=false \
        RUST_LOG="${WEFT_LOG:-warn}" "$1" serve >"$work/weft.out" 2>&1 &
    pids+=($!)
    wait_for_versions "$2"
}

# Sets $WEFT_BIN to a built weft (the debug build, made now) unless the caller gave one.
ensure_weft_bin() {
    if [ -z "${WEFT_BIN:-}" ]; then
        cargo build --quiet --bin weft
        WEFT_BIN=target/debug/weft
    fi
}

# Prints the path of a venv with matrix-nio (and its vodozemac E2EE support), installing
# it under target/interop/ on first use.
ensure_nio_venv() {
    local venv=target/interop/nio-venv
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import nio, vodozemac' 2>/dev/null; then
        echo "== installing matrix-nio (with its vodozemac E2EE support) into $venv" >&2
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'matrix-nio[e2e]==0.26.0' >&2
    fi
    echo "$venv"
}
