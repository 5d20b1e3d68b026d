#!/usr/bin/env bash
# The performance figures in one run: the round-trip profile (flame graphs), the relay
# benchmark (submissions, round trips, 256 MiB against raw quinn, RSS with 1,000 idle
# connections) and the envelope benchmark (seal/open to stdout and -o FILE beside Go age).
# Each writes its own section of docs/benchmarks.md; "Performance: the limits" there reads them.
#
#   bash benches/perf.sh after     # LABEL for the flame graphs (docs/flamegraphs/*-LABEL.svg)
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL=${1:-after}
bash benches/profile.sh "$LABEL"
bash benches/relay.sh
bash benches/envelope.sh
