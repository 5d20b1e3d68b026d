//! Reference throughput for the envelope benchmark: raw ring ChaCha20-Poly1305 over 64 KiB
//! chunks, on 1 and 2 threads, in memory (no age framing, no I/O). `benches/envelope.sh`
//! runs it beside the CLI measurements. Prints `raw_seal_1t <MB/s>` style lines (medians).

use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

const CHUNK: usize = 64 * 1024;

fn run(buf: &mut [u8], threads: usize, open: bool) -> f64 {
    let key = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).unwrap_or_else(|_| std::process::exit(2)),
    );
    let slot = CHUNK + 16;
    let start = Instant::now();
    std::thread::scope(|s| {
        let per = buf.len().div_ceil(threads).div_ceil(slot) * slot;
        for (t, part) in buf.chunks_mut(per).enumerate() {
            let key = &key;
            s.spawn(move || {
                for (i, c) in part.chunks_mut(slot).enumerate() {
                    let mut n = [0u8; 12];
                    n[..8].copy_from_slice(&((t * 1_000_000 + i) as u64).to_be_bytes());
                    let nonce = Nonce::assume_unique_for_key(n);
                    let (pt, tag) = c.split_at_mut(c.len() - 16);
                    if open {
                        // Tags are not valid here; measure the decrypt+verify work the same way
                        // ring does it (open computes the tag over the ciphertext and decrypts).
                        let _ = key.open_in_place(nonce, Aad::empty(), &mut c[..]);
                    } else {
                        let t = key
                            .seal_in_place_separate_tag(nonce, Aad::empty(), pt)
                            .unwrap_or_else(|_| std::process::exit(2));
                        tag.copy_from_slice(t.as_ref());
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    buf.len() as f64 / secs / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let size: usize = std::env::var("SEALRELAY_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
        * 1024
        * 1024;
    let runs: usize = std::env::var("SEALRELAY_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let slots = size / CHUNK;
    let mut buf = vec![1u8; slots * (CHUNK + 16)];
    for threads in [1usize, 2] {
        for open in [false, true] {
            let figures: Vec<f64> = (0..runs).map(|_| run(&mut buf, threads, open)).collect();
            // Report plaintext MB/s, like the CLI figures.
            let mbs = median(figures) * CHUNK as f64 / (CHUNK + 16) as f64;
            println!(
                "raw_{}_{}t {mbs:.0}",
                if open { "open" } else { "seal" },
                threads
            );
        }
    }
}
