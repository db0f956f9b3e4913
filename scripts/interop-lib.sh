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
