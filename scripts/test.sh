#!/usr/bin/env bash
# The whole test suite: unit and in-process integration tests (cargo test), then interop
# tests against real third-party software, each installing what it needs itself; then the
# integration and interop tests again on PostgreSQL, in a throwaway cluster this script
# starts (scripts/with-postgres.sh, which installs Debian's postgresql if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

interop() {
    echo "== interop: matrix-nio"
    bash scripts/interop-nio.sh

    echo "== interop: matrix-sdk / matrix-sdk-ui (Element X's engine)"
    bash scripts/interop-matrix-sdk.sh

    echo "== interop: matrix-js-sdk (Element Web's engine)"
    bash scripts/interop-js-sdk.sh

    echo "== interop: Hydrogen (hydrogen-view-sdk in headless Chromium)"
    bash scripts/interop-hydrogen.sh

    echo "== interop: Synapse federation"
    bash scripts/interop-synapse.sh

    echo "== interop: synadm (Synapse's admin CLI)"
    bash scripts/interop-synadm.sh

    echo "== interop: a mautrix-python bridge (application service)"
    bash scripts/interop-mautrix.sh
}

if [ "${1:-}" = "--postgres-part" ]; then
    # Run by with-postgres.sh below: WEFT_TEST_POSTGRES names the cluster, and every server
    # the tests start gets a database of its own on it.
    echo "== cargo test on PostgreSQL (integration tests)"
    cargo test --locked --no-fail-fast --tests 2>&1
    interop
    echo "== interop: weft migrate-db, filled by matrix-nio on SQLite, read by it on PostgreSQL"
    bash scripts/interop-migrate.sh
    exit 0
fi

echo "== cargo test"
cargo test --locked --no-fail-fast 2>&1

interop

echo "== the same on PostgreSQL"
bash scripts/with-postgres.sh bash scripts/test.sh --postgres-part
