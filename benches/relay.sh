#!/usr/bin/env bash
# Relay benchmark: builds the release binary, then runs benches/relay.rs, which starts a real
# `sealrelay serve` on 127.0.0.1 and writes the RELAY section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo bench --quiet --bench relay
