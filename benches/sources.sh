#!/usr/bin/env bash
# Sources benchmark: builds the release binary, then runs benches/sources.rs, which measures a
# real relay and a real `sealrelay source serve` against an agent that seals itself (latency and
# throughput) and writes the SOURCES section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo bench --quiet --bench sources
