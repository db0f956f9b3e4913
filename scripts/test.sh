#!/usr/bin/env bash
# The whole test suite: unit and in-process integration tests (cargo test), then interop
# tests against real third-party software, each installing what it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test"
cargo test --locked --no-fail-fast 2>&1

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
