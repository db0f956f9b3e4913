#!/usr/bin/env bash
# Installs Synapse (PyPI matrix-synapse, pinned) into target/interop/synapse-venv on first
# use and prints the venv's path. Used by the interop and benchmark scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/interop/synapse-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import synapse' 2>/dev/null; then
    echo "== installing matrix-synapse into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'matrix-synapse==1.163.2' >&2
fi
echo "$venv"
