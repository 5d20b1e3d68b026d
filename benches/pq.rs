//! Post-quantum hybrid (mlkem768x25519) beside X25519, in process, release build: seal and open
//! of 256 MiB (one run each), and the per-envelope cost of sealing and opening 1 KiB (median of
//! 2,000). Prints a Markdown table for docs/benchmarks.md. Run: `cargo bench --bench pq`.

use std::time::Instant;

use sealrelay::core::envelope::keys::AgeIdentity;
use sealrelay::core::envelope::{self, stream::default_threads};

fn key(x25519: bool) -> AgeIdentity {
    AgeIdentity::generate(x25519).unwrap_or_else(|_| std::process::exit(2))
}

fn seal(id: &AgeIdentity, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + plain.len() / 1000 + 4096);
    envelope::seal(
        id.to_public().as_recipient(),
        &mut &plain[..],
        &mut out,
        default_threads(),
    )
    .unwrap_or_else(|_| std::process::exit(2));
    out
}

fn open(id: &AgeIdentity, sealed: &[u8], into: &mut Vec<u8>) {
    into.clear();
    envelope::open(
        &[id.as_identity()],
        &mut &sealed[..],
        into,
        default_threads(),
    )
    .unwrap_or_else(|_| std::process::exit(2));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let big: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i * 2_654_435_761) as u8)
        .collect();
    let small = vec![42u8; 1024];
    println!("| key type | seal 256 MiB | open 256 MiB | seal 1 KiB (median of 2,000) | open 1 KiB (median of 2,000) | header bytes |");
    println!("|---|---|---|---|---|---|");
    let mut plain = Vec::with_capacity(big.len());
    for (name, x25519) in [("hybrid ML-KEM-768 + X25519", false), ("X25519", true)] {
        let id = key(x25519);
        let t = Instant::now();
        let sealed = seal(&id, &big);
        let s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        open(&id, &sealed, &mut plain);
        let o = t.elapsed().as_secs_f64();
        assert_eq!(plain.len(), big.len());
        let (mut ss, mut os) = (Vec::new(), Vec::new());
        let mut header = 0;
        let mut out = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            let sealed = seal(&id, &small);
            ss.push(t.elapsed().as_secs_f64() * 1e6);
            header = sealed.len() - 16 - small.len() - 16;
            let t = Instant::now();
            open(&id, &sealed, &mut out);
            os.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let mb = big.len() as f64 / 1e6;
        println!(
            "| {name} | {:.3} s ({:.0} MB/s) | {:.3} s ({:.0} MB/s) | {:.0} µs | {:.0} µs | {header} |",
            s,
            mb / s,
            o,
            mb / o,
            median(ss),
            median(os)
        );
    }
}
