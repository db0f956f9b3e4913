#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL cluster: initdb into a temp dir, a server on
# a free loopback port, stopped and deleted when the command ends. The command sees
# WEFT_TEST_POSTGRES=postgres://weft@127.0.0.1:PORT (a superuser with trust auth on
# loopback); tests create one database per server under test from it.
#
#   bash scripts/with-postgres.sh cargo test
#
# Installs Debian's postgresql when no initdb is found.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

find_bin() {
    command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1
}
if [ -z "$(find_bin initdb)" ]; then
    echo "== installing PostgreSQL (Debian's postgresql package)"
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; fi
fi
initdb=$(find_bin initdb)
pg_ctl=$(find_bin pg_ctl)

cluster=$(mktemp -d /tmp/weft-pg.XXXXXX)
port=$(free_port)
# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user
# (created by Debian's package).
as_owner() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$cluster"
    as_owner() { runuser -u postgres -- "$@"; }
fi
stop() {
    as_owner "$pg_ctl" -D "$cluster/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$cluster"
}
trap stop EXIT

as_owner "$initdb" -D "$cluster/data" -U weft --auth=trust -E UTF8 >"$cluster/initdb.log" 2>&1 \
    || { cat "$cluster/initdb.log"; exit 1; }
# A test cluster: no fsync (the data is thrown away; a server killed with -9 still loses
# nothing, PostgreSQL itself keeps running), room for many servers' pools. Benchmarks set
# WEFT_PG_DURABLE=1: PostgreSQL's defaults, every commit flushed.
durability="-c fsync=off -c full_page_writes=off"
[ -n "${WEFT_PG_DURABLE:-}" ] && durability=""
as_owner "$pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w start \
    -o "-p $port -k $cluster -c listen_addresses=127.0.0.1 $durability -c max_connections=400" >/dev/null \
    || { cat "$cluster/server.log"; exit 1; }
echo "== PostgreSQL $("$(find_bin postgres)" --version | awk '{print $3}') on 127.0.0.1:$port ($cluster)"

export WEFT_TEST_POSTGRES="postgres://weft@127.0.0.1:$port"
# A command that restarts the cluster (fast: open connections are cut), for the test that
# weft rides out a database restart.
export WEFT_TEST_POSTGRES_RESTART="$( [ "$(id -u)" -eq 0 ] && echo "runuser -u postgres -- ")$pg_ctl -D $cluster/data -m fast -w restart"
"$@"
