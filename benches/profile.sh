#!/usr/bin/env bash
# Flame graphs of the round-trip path (grant → pushed to the agent → send → fetch and receipt on
# one stream, 32 user/agent pairs): `perf record` (cpu-clock, DWARF call graphs from the release build's line tables)
# over the relay benchmark in its round-trip-only mode, then inferno. Writes
# docs/flamegraphs/round-trip-relay-LABEL.svg (the relay process) and
# docs/flamegraphs/round-trip-clients-LABEL.svg (the clients' process).
#
#   bash benches/profile.sh before     # needs perf (Debian linux-perf) and inferno (cargo install inferno)
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL=${1:?usage: benches/profile.sh LABEL}
N=${N:-20}
command -v perf >/dev/null || { echo "install perf (apt-get install linux-perf)"; exit 1; }
command -v inferno-flamegraph >/dev/null || { echo "install inferno (cargo install inferno)"; exit 1; }
# BENCH (a relay bench binary) and SEALRELAY_BENCH_BIN (the relay it serves with) profile an
# older build side by side with this one: both from the same commit, as the old tree builds them.
if [ -z "${BENCH:-}" ]; then
    cargo build --release --quiet
    cargo bench --no-run --quiet --bench relay 2>/dev/null
    BENCH=$(ls -t target/release/deps/relay-* | grep -v '\.d$' | head -1)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
SEALRELAY_BENCH_ROUND_TRIPS_ONLY=$N perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 \
    -o "$work/perf.data" -- "$BENCH" --bench 2> "$work/bench.txt"
cat "$work/bench.txt"
relay=$(sed -n 's/^relay pid //p' "$work/bench.txt")
mkdir -p docs/flamegraphs
perf script -F +pid -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf --pid > "$work/all.folded"
# Split by process: the first frame is "comm-pid"; drop the pid so both graphs read by thread name.
python3 - "$relay" "$work/all.folded" "$work/relay.folded" "$work/clients.folded" <<'PY'
import re, sys
relay, path, relay_out, clients_out = sys.argv[1:5]
with open(relay_out, "w") as r, open(clients_out, "w") as c:
    for line in open(path):
        first, _, rest = line.partition(";")
        m = re.match(r"^(.*)-(\d+)$", first)
        if not m:
            continue
        (r if m.group(2) == relay else c).write(m.group(1) + ";" + rest)
PY
title="round trips ($LABEL): $(grep '^round trips' "$work/bench.txt")"
inferno-flamegraph --title "relay: $title" < "$work/relay.folded" > "docs/flamegraphs/round-trip-relay-$LABEL.svg"
inferno-flamegraph --title "clients: $title" < "$work/clients.folded" > "docs/flamegraphs/round-trip-clients-$LABEL.svg"
mkdir -p target/flame && cp "$work/relay.folded" "target/flame/relay-$LABEL.folded" && cp "$work/clients.folded" "target/flame/clients-$LABEL.folded"
ls -la docs/flamegraphs/
