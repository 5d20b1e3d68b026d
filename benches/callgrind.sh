#!/usr/bin/env bash
# Instructions the relay executes per full round trip (grant → pushed to the agent → send →
# fetch and receipt on one stream), counted by callgrind: unlike CPU time on this shared
# machine, the count repeats run after run, so a change of a few percent shows. The relay bench
# runs its round trips twice under one relay each (N and 2N rounds of 32 user/agent pairs); the
# difference of the relay's totals over the difference of round trips leaves out start-up and
# handshakes. Needs valgrind.
#
#   bash benches/callgrind.sh                      # this tree's release builds
#   BENCH=/tmp/old-relay-bench RELAY=/tmp/old-sealrelay bash benches/callgrind.sh   # another build
#
# Prints the instructions per round trip and leaves the two profiles in target/callgrind/
# (callgrind_annotate --inclusive=yes FILE shows where they go).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "install valgrind (apt-get install valgrind)"; exit 1; }
N=${N:-4}
if [ -z "${BENCH:-}" ]; then
    cargo build --release --quiet
    cargo bench --no-run --quiet --bench relay 2>/dev/null
    BENCH=$(ls -t target/release/deps/relay-* | grep -v '\.d$' | head -1)
fi
RELAY=${RELAY:-$PWD/target/release/sealrelay}
out_dir=$PWD/target/callgrind
mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The bench ends its relay with SIGKILL, which callgrind cannot outlive to write its profile:
# the wrapper leaves valgrind running as its child, and this script ends it with SIGTERM (the
# relay shuts down cleanly and callgrind writes).
cat > "$work/relay" <<'EOF'
#!/bin/sh
valgrind --tool=callgrind --callgrind-out-file="$CALLGRIND_OUT" "$REAL_RELAY" "$@" &
wait
EOF
chmod +x "$work/relay"

# Runs `rounds` rounds; prints "ROUND_TRIPS INSTRUCTIONS".
run() {
    local rounds=$1 out="$out_dir/relay-$1.out"
    rm -f "$out"
    # To a file: the relay left running holds the bench's output open.
    CALLGRIND_OUT=$out REAL_RELAY=$RELAY SEALRELAY_BENCH_BIN=$work/relay \
        SEALRELAY_BENCH_ROUND_TRIPS_ONLY=$rounds "$BENCH" --bench > "$work/bench-$rounds.txt" 2>&1
    pkill -TERM -f "callgrind-out-file=$out" || true
    local trips
    trips=$(sed -n 's/^round trips: \([0-9]*\) .*/\1/p' "$work/bench-$rounds.txt")
    for _ in $(seq 120); do
        [ -s "$out" ] && ! pgrep -f "callgrind-out-file=$out" >/dev/null && break
        sleep 1
    done
    local total
    total=$(callgrind_annotate "$out" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
    echo "$trips $total"
}

read -r t1 i1 < <(run "$N")
read -r t2 i2 < <(run $((2 * N)))
echo "relay: $i1 instructions over $t1 round trips, $i2 over $t2"
python3 -c "print(f'relay instructions per round trip: {($i2 - $i1) / ($t2 - $t1) / 1e6:.2f} M')"
