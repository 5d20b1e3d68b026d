#!/usr/bin/env bash
# Stores benchmark: builds the release binary, starts a PostgreSQL server of its own (a
# temporary data directory, a free loopback port, default settings), then runs
# benches/stores.rs: 1 KiB submissions and round trips on the embedded store and on PostgreSQL
# with one and two relay nodes, in one run. Writes the STORES section of docs/benchmarks.md.
# Needs Debian's postgresql package (initdb, pg_ctl); as root, the server runs as `postgres`.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_BIN=${SEALRELAY_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
    echo "benches/stores.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
fi
as_pg() {
    # initdb and postgres refuse to run as root.
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_dir=$(mktemp -d)
if [ "$(id -u)" = 0 ]; then chown postgres "$pg_dir"; fi
cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
}
trap cleanup EXIT
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PG_BIN/initdb" -D "$pg_dir/data" -A trust -U sealrelay -E UTF8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-k $pg_dir -p $pg_port -c listen_addresses=127.0.0.1" start >/dev/null
export SEALRELAY_BENCH_POSTGRES="postgres://sealrelay@127.0.0.1:$pg_port/postgres"
export SEALRELAY_BENCH_POSTGRES_PID=$(head -n 1 "$pg_dir/data/postmaster.pid")
export SEALRELAY_BENCH_POSTGRES_VERSION="PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
cargo build --release --quiet
cargo bench --quiet --bench stores
