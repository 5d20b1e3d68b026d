//! Witness benchmark (run by `bash benches/witness.sh`): 1 KiB submissions from 32 concurrent
//! agents to a real `sealrelay serve`, without witnesses and with one `sealrelay witness serve`
//! on loopback, alternated in one run (plain, witnessed, plain, witnessed) so both figures share
//! the machine's state. After each witnessed run the relay's checkpoint must carry the witness's
//! cosignature, or the bench fails.
//!
//! Writes the WITNESS section of docs/benchmarks.md.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use sealrelay::client::Connection;
use sealrelay::core::tlog::cosignature::{CosignerKey, WitnessPolicy};

/// `sealrelay witness serve` for the bench's log with its state in `state`: the process and URL.
fn start_witness(
    bin: &std::path::Path,
    base: &std::path::Path,
    state: &str,
) -> (std::process::Child, String) {
    let mut witness = Command::new(bin)
        .args([
            "witness",
            "serve",
            "--key",
            "w1.key",
            "--state",
            state,
            "--listen",
            "127.0.0.1:0",
            "--log",
            "keys/log.pub",
        ])
        .current_dir(base)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .or_fail("start the witness");
    let mut line = String::new();
    BufReader::new(witness.stdout.take().unwrap_or_else(|| fail("no stdout")))
        .read_line(&mut line)
        .or_fail("read the witness's first line");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    (witness, url)
}

fn main() {
    let (root, bin, tmp, ids) = bench_world();
    let base = tmp.path();
    let (users, agents) = ids.split_at(32);
    let status = Command::new(&bin)
        .args([
            "witness",
            "keygen",
            "--name",
            "bench.local/w1",
            "--out",
            "w1.key",
        ])
        .current_dir(base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .or_fail("witness keygen");
    if !status.success() {
        fail("witness keygen failed");
    }
    let w_pub = std::fs::read_to_string(base.join("w1.key.pub")).or_fail("w1.key.pub");
    let policy = WitnessPolicy::new(vec![CosignerKey::parse(&w_pub).or_fail("w1.key.pub")], None)
        .or_fail("policy");
    std::fs::write(base.join("plain.toml"), "").or_fail("config");
    let per_agent: usize = std::env::var("SEALRELAY_BENCH_PER_AGENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let mut figures: Vec<(bool, f64, f64, usize)> = Vec::new();
    for (round, witnessed) in [false, true, false, true].into_iter().enumerate() {
        // A fresh data directory per run: the same store size at the start of each.
        let data = format!("data{round}");
        // Each witnessed run is a new history under the same log key: it gets a witness with a
        // fresh state (the same witness would rightly refuse it as a fork of the run before).
        let witness = witnessed.then(|| start_witness(&bin, base, &format!("wstate{round}")));
        if let Some((_, url)) = &witness {
            std::fs::write(
                base.join("witnessed.toml"),
                format!("[[witness]]\nurl = \"{url}\"\nkey = \"{}\"\n", w_pub.trim()),
            )
            .or_fail("config");
        }
        let config = base.join(if witnessed {
            "witnessed.toml"
        } else {
            "plain.toml"
        });
        let config = config.to_string_lossy().into_owned();
        let relay = Relay::start_with(&bin, base, &data, &["--config", &config]);
        let pid = relay.child.id().to_string();
        let (rate, _p50, p99, n, _, _) = rt.block_on(submissions(
            std::slice::from_ref(&relay.addr),
            users,
            agents,
            per_agent,
            base,
            std::slice::from_ref(&pid),
        ));
        if witnessed {
            // The witness really cosigned: the relay's newest checkpoint carries its line.
            let note = rt.block_on(async {
                let mut tries = 0;
                loop {
                    let conn = Connection::connect(&users[0], &relay.addr)
                        .await
                        .or_fail("connect");
                    let (note, _) = conn.checkpoint(None).await.or_fail("checkpoint");
                    conn.close().await;
                    if policy.check(&note).is_ok() || tries == 20 {
                        break note;
                    }
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            });
            policy
                .check(&note)
                .or_fail("the witnessed relay's checkpoint");
        }
        eprintln!(
            "{}: {n} submissions at {rate:.0}/s, p99 {p99:.2} ms",
            if witnessed {
                "one witness"
            } else {
                "no witness"
            }
        );
        figures.push((witnessed, rate, p99, n));
        drop(relay);
        if let Some((mut w, _)) = witness {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
    let mean = |w: bool, f: fn(&(bool, f64, f64, usize)) -> f64| {
        let v: Vec<f64> = figures.iter().filter(|x| x.0 == w).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (plain, with) = (mean(false, |x| x.1), mean(true, |x| x.1));
    let (plain_p99, with_p99) = (mean(false, |x| x.2), mean(true, |x| x.2));
    let drop_pct = 100.0 * (plain - with) / plain.max(1e-9);
    let met = if drop_pct <= 10.0 {
        "met"
    } else {
        "**not met**"
    };
    let runs: Vec<String> = figures
        .iter()
        .map(|(w, r, p, _)| {
            format!(
                "{} {r:.0}/s (p99 {p:.2} ms)",
                if *w { "witnessed" } else { "plain" }
            )
        })
        .collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let body = format!(
        "## Witnessed checkpoints: 1 KiB submissions with and without a witness\n\n\
Command: `bash benches/witness.sh` ({per_agent} submissions per agent, 32 agents, per run). \
Machine: {cpu}, {cores} cores; relay, witness and clients on it together. Runs alternate \
plain and witnessed, each on a fresh data directory (and each witnessed run with a witness on \
a fresh state: a new history under the same log key); after each witnessed run the relay's \
checkpoint carried the witness's cosignature (checked).\n\n\
| figure | no witness | one witness on loopback | target |\n|---|---|---|---|\n\
| 1 KiB submissions/s (mean of 2 runs) | {plain:.0}/s | {with:.0}/s | drop ≤ 10%: {drop_pct:.1}% ({met}) |\n\
| p99 latency (mean of 2 runs) | {plain_p99:.2} ms | {with_p99:.2} ms | |\n\n\
Runs in order: {}. A negative drop means the witnessed runs were faster: on this shared \
machine the spread between runs of one kind can exceed the witness's cost, so compare the \
runs, not only the means.\n\n\
Cosigning is batched with checkpoint signing: the relay signs at most about one checkpoint a \
second while only submissions arrive, and the witnessing task always takes the newest, so a \
burst of submissions costs one `add-checkpoint` request (and one fsync at the witness) per \
second, off the submission path.",
        runs.join(", ")
    );
    replace_section(&root.join("docs/benchmarks.md"), "WITNESS", &body);
    eprintln!(
        "submissions: {plain:.0}/s without a witness, {with:.0}/s with one ({drop_pct:.1}% drop)"
    );
}
