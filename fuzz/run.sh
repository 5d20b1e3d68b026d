#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 20) from a seed corpus made from ../shared/vectors
# and from files the relay's own CLI writes. Usage: fuzz/run.sh [SECONDS] [TARGET...]
# Builds with `cargo fuzz` on the stable toolchain (RUSTC_BOOTSTRAP=1 allows the sanitizer
# flags that cargo-fuzz passes; no nightly toolchain can be fetched on these machines).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Seeds: the CCTV age files (their bodies, after the test-vector header), and the files a
# fresh trust root and identities hold (bundles, requests, identity files, no secrets kept).
vectors=../../shared/vectors
mkdir -p "$work/seeds/age_envelope" "$work/seeds/identity_files" "$work/seeds/statements"
if [ -d "$vectors/cctv-age/testdata" ]; then
    python3 - "$vectors/cctv-age/testdata" "$work/seeds/age_envelope" <<'PY'
import os, sys, zlib
src, dst = sys.argv[1], sys.argv[2]
for name in os.listdir(src):
    raw = open(os.path.join(src, name), 'rb').read()
    head, _, body = raw.partition(b'\n\n')
    if b'compressed: zlib' in head:
        body = zlib.decompress(body)
    open(os.path.join(dst, name), 'wb').write(body)
PY
elif [ -n "${SEALRELAY_REQUIRE_VECTORS:-}" ]; then
    echo "fuzz/run.sh: $vectors/cctv-age is missing" >&2
    exit 1
fi
env -u RUSTC_BOOTSTRAP cargo build --quiet --manifest-path ../Cargo.toml --bin sealrelay 2>/dev/null || true
bin="$(cd .. && pwd)/target/debug/sealrelay"
if [ -x "$bin" ]; then
    ( cd "$work" && "$bin" keys init --dir keys >/dev/null \
        && "$bin" keys gen --name alice --kind user --out alice.id >/dev/null ) || true
    cp "$work"/alice.id.request "$work"/seeds/identity_files/ 2>/dev/null || true
    cp "$work"/alice.id.request "$work"/seeds/statements/ 2>/dev/null || true
    rm -rf "$work/keys" "$work"/alice.id
fi

# Seeds for the witness request, cosignature and connector-file targets: one well-formed
# example each (libFuzzer mutates from there).
mkdir -p "$work/seeds/witness_request" "$work/seeds/cosignatures" "$work/seeds/connector_file"
printf 'old 2\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n\nrelay.example/log\n3\nAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\n\n\u2014 relay.example/log AAAAAGVhc3Q=\n' \
    > "$work/seeds/witness_request/one"
printf 'quorum = 1\nwitnesses = ["witness.example/w1+6d4a0b1c+BCpY8G1+9nE3r6bT2Zl0x5JH7cLwq7nE1m3dBPVn0aJ8"]\n' \
    > "$work/seeds/cosignatures/policy"
printf '[[connector]]\nresources = "tickets/*"\nhttp = "http://127.0.0.1:8080/api/tickets/{rest}"\nmax_bytes = 1048576\ntimeout_secs = 30\n\n[[connector]]\nresources = "docs/*"\nfile_root = "docs"\n\n[[connector]]\nresources = "reports/*"\ncommand = ["/usr/local/bin/make-report", "{rest}"]\n' \
    > "$work/seeds/connector_file/three"

sanitizer=${FUZZ_SANITIZER:-address}
# FUZZ_PROFILE=dev builds unoptimized: minutes faster to build, slower to run (CI's short runs).
if [ "${FUZZ_PROFILE:-release}" = dev ]; then profile=(--dev); else profile=(-O); fi
cargo fuzz build "${profile[@]}" -s "$sanitizer" >/dev/null
for t in "${targets[@]}"; do
    corpus="$work/corpus/$t"
    mkdir -p "$corpus"
    [ -d "$work/seeds/$t" ] && cp -r "$work/seeds/$t/." "$corpus/"
    echo "== fuzz $t for ${secs}s ($(ls "$corpus" | wc -l) seeds)"
    cargo fuzz run "${profile[@]}" -s "$sanitizer" "$t" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>"$work/$t.log" \
        || { tail -40 "$work/$t.log"; echo "FAIL: fuzz target $t" >&2; exit 1; }
    grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^#[0-9]+.*DONE" "$work/$t.log" | tr '\n' ' '
    echo
done
