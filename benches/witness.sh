#!/usr/bin/env bash
# Witness benchmark: builds the release binary, then runs benches/witness.rs, which measures
# 1 KiB submissions to a real relay without and with one real witness on loopback and writes
# the WITNESS section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo bench --quiet --bench witness
