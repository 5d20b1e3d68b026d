#!/usr/bin/env bash
# Envelope benchmark: seal and open 256 MiB to one recipient with the sealrelay CLI, the Go age
# CLI and rage, side by side in one run, plus raw ring ChaCha20-Poly1305 on 1 and 2 threads.
# Medians of RUNS runs (default 5), ratios, and peak resident memory (GNU time). Writes the
# "Envelopes" section of docs/benchmarks.md. Not part of CI: it installs rage with cargo.
#
#   bash benches/envelope.sh            # 256 MiB, 5 runs
#   MB=64 RUNS=3 bash benches/envelope.sh
#   OLD_BIN=/tmp/sealrelay-old bash benches/envelope.sh   # also the old binary's -o, interleaved
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

# measure NAME CMD...: appends "NAME seconds maxrss_kib user_s sys_s" per run to results.txt
# (wall time in nanoseconds around the process; peak RSS and CPU times from GNU time)
measure() {
    local name=$1; shift
    for _ in $(seq "$RUNS"); do
        local s e
        s=$(date +%s%N)
        /usr/bin/time -f "%M %U %S" -o t.txt "$@" > /dev/null
        e=$(date +%s%N)
        echo "$name $(python3 -c "print(($e - $s) / 1e9)") $(cat t.txt)" >> results.txt
    done
}
: > results.txt
measure read_only dd if=pt of=/dev/null bs=4M status=none
for _ in 1; do
    measure sealrelay_seal "$BIN" seal --to "$R" pt
    measure go_age_seal age -e -r "$R" pt
    measure rage_seal rage -e -r "$R" pt
    measure sealrelay_open "$BIN" open --identity k.txt ours.age
    measure go_age_open age -d -i k.txt go.age
    measure rage_open rage -d -i k.txt rage.age
    # What users run: -o FILE (in tmpfs here), sealrelay beside Go age.
    measure sealrelay_seal_o "$BIN" seal --to "$R" -o o1.age pt
    measure go_age_seal_o age -e -r "$R" -o o2.age pt
    measure sealrelay_open_o "$BIN" open --identity k.txt -o o1.pt ours.age
    measure go_age_open_o age -d -i k.txt -o o2.pt go.age
    if [ -n "${OLD_BIN:-}" ]; then
        measure old_seal_o "$OLD_BIN" seal --to "$R" -o o3.age pt
        measure old_open_o "$OLD_BIN" open --identity k.txt -o o3.pt ours.age
    fi
done
# 1 GiB memory check (one run each).
head -c $((1024 * 1024 * 1024)) /dev/zero > big
"$BIN" seal --to "$R" -o big.age big
RUNS=1 measure sealrelay_seal_1g "$BIN" seal --to "$R" big
RUNS=1 measure sealrelay_open_1g "$BIN" open --identity k.txt big.age
rm -f big big.age
cd - >/dev/null
SEALRELAY_BENCH_MB=$MB SEALRELAY_BENCH_RUNS=$RUNS cargo bench --quiet --bench raw_aead > "$work/raw.txt"
python3 benches/report.py envelope "$work/results.txt" "$work/raw.txt" "$MB" "$RUNS"
