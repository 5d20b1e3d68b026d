#!/usr/bin/env bash
# Envelope benchmark: seal and open 256 MiB to one recipient with the sealrelay CLI, the Go age
# CLI and rage, side by side in one run, plus raw ring ChaCha20-Poly1305 on 1 and 2 threads.
# Medians of RUNS runs (default 5), ratios, and peak resident memory (GNU time). Writes the
# "Envelopes" section of docs/benchmarks.md. Not part of CI: it installs rage with cargo.
#
#   bash benches/envelope.sh            # 256 MiB, 5 runs
#   MB=64 RUNS=3 bash benches/envelope.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${MB:-256}
RUNS=${RUNS:-5}
command -v age >/dev/null || { apt-get update -qq && apt-get install -y -qq age >/dev/null; }
command -v rage >/dev/null || cargo install --locked rage --version '^0.12' >/dev/null 2>&1 || cargo install rage
cargo build --release --quiet
BIN=$PWD/target/release/sealrelay
work=$(mktemp -d /dev/shm/sealrelay-bench.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
age-keygen -o k.txt 2>/dev/null; chmod 600 k.txt
R=$(age-keygen -y k.txt)
head -c $((MB * 1024 * 1024)) /dev/urandom > pt
"$BIN" seal --to "$R" -o ours.age pt
age -e -r "$R" -o go.age pt
rage -e -r "$R" -o rage.age pt

# measure NAME CMD...: prints "NAME seconds maxrss_kib" for each run into results.txt
measure() {
    local name=$1; shift
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f "%e %M" -o t.txt "$@" > /dev/null
        echo "$name $(cat t.txt)" >> results.txt
    done
}
: > results.txt
for _ in 1; do
    measure sealrelay_seal "$BIN" seal --to "$R" pt
    measure go_age_seal age -e -r "$R" pt
    measure rage_seal rage -e -r "$R" pt
    measure sealrelay_open "$BIN" open --identity k.txt ours.age
    measure go_age_open age -d -i k.txt go.age
    measure rage_open rage -d -i k.txt rage.age
done
# 1 GiB memory check (one run each).
head -c $((1024 * 1024 * 1024)) /dev/zero > big
"$BIN" seal --to "$R" -o big.age big
/usr/bin/time -f "%e %M" -o t.txt "$BIN" seal --to "$R" big > /dev/null; echo "sealrelay_seal_1g $(cat t.txt)" >> results.txt
/usr/bin/time -f "%e %M" -o t.txt "$BIN" open --identity k.txt big.age > /dev/null; echo "sealrelay_open_1g $(cat t.txt)" >> results.txt
rm -f big big.age
cd - >/dev/null
SEALRELAY_BENCH_MB=$MB SEALRELAY_BENCH_RUNS=$RUNS cargo bench --quiet --bench raw_aead > "$work/raw.txt"
python3 benches/report.py envelope "$work/results.txt" "$work/raw.txt" "$MB" "$RUNS"
