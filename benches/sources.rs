//! Sources benchmark (run by `bash benches/sources.sh`): a real `sealrelay serve` and a real
//! `sealrelay source serve` (release builds, file connector, 1 KiB records), against an agent
//! that seals itself, in one run on one machine:
//!
//! - latency: from the moment the agent holds a listed grant to the envelope stored at the
//!   relay, one grant at a time: `send` (the agent seals) against `dispatch` and waiting for the
//!   source (the agent polls `SubmissionStatus` every 2 ms), alternated in blocks;
//! - throughput: 500 grants, all sent by the agent, against all dispatched and filled by the
//!   source, from the first request to the last envelope stored.
//!
//! Writes the SOURCES section of docs/benchmarks.md.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sealrelay::client::{AgentClient, OpenGrant, UserClient};
use sealrelay::core::wire::SubmissionState;
use sealrelay::local::provision::{agent, provision, source, user};

const RECORD: usize = 1024;
const LATENCY_ROUNDS: usize = 4;
const PER_ROUND: usize = 25;
const THROUGHPUT: usize = 500;
/// The source's `--poll-ms` (SEALRELAY_BENCH_POLL_MS overrides it).
const POLL_MS: &str = "20";

async fn grants(alice: &UserClient<'_>, bot: &AgentClient<'_>, n: usize) -> Vec<OpenGrant> {
    for _ in 0..n {
        let mut g = grant_req("bot", 1 << 20);
        g.resource = "tickets/record".into();
        alice.grant(&g).await.or_fail("grant");
    }
    let listed = bot.grants().await.or_fail("list");
    if listed.len() != n {
        fail(format!("listed {} grants of {n}", listed.len()));
    }
    listed
}

async fn filled(bot: &AgentClient<'_>, g: &OpenGrant) -> bool {
    let s = bot
        .submission_status(g.grant.grant_id)
        .await
        .or_fail("status");
    matches!(s.state, SubmissionState::Submitted)
}

fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("SEALRELAY_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/sealrelay"));
    if !bin.exists() {
        fail("build the release binary first: cargo build --release (benches/sources.sh does)");
    }
    let tmp = tempfile::tempdir().or_fail("tempdir");
    let base = tmp.path();
    let specs = [
        user("alice", 2, &[]),
        agent("bot", &["tickets/*"]),
        source("src", &["tickets/*"]),
    ];
    let (ids, _) =
        provision(&base.join("keys"), &specs, sealrelay::clock::now()).or_fail("provision");
    sealrelay::local::identity_file::save(&base.join("src.id"), &ids[2], true).or_fail("save");
    std::fs::create_dir_all(base.join("records")).or_fail("mkdir");
    std::fs::write(base.join("records/record"), data(RECORD)).or_fail("record");
    std::fs::write(
        base.join("connectors.toml"),
        "[[connector]]\nresources = \"tickets/*\"\nfile_root = \"records\"\n",
    )
    .or_fail("connectors");
    // One agent and one user do everything here: their quotas and rate limits are raised so
    // that what is measured is the work, not the limits.
    std::fs::write(
        base.join("bench.toml"),
        "requests_per_second = 1000000\nrequest_burst = 1000000\n[quotas]\nmax_open_grants_per_user = 100000\nmax_open_grants_per_agent = 100000\nmax_open_grants_per_user_per_agent = 100000\n",
    )
    .or_fail("config");
    let relay = Relay::start_with(&bin, base, "data", &["--config", "bench.toml"]);
    let poll = std::env::var("SEALRELAY_BENCH_POLL_MS").unwrap_or_else(|_| POLL_MS.to_owned());
    let mut src = Command::new(&bin)
        .args([
            "source",
            "serve",
            "--identity",
            "src.id",
            "--connectors",
            "connectors.toml",
            "--relay",
            &relay.addr,
            "--poll-ms",
            &poll,
        ])
        .current_dir(base)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .or_fail("start the source");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .or_fail("runtime");
    let body = data(RECORD);
    let (self_lat, src_lat, self_rate, src_rate) = rt.block_on(async {
        let alice = UserClient::connect(&ids[0], &relay.addr)
            .await
            .or_fail("alice");
        let bot = AgentClient::connect(&ids[1], &relay.addr)
            .await
            .or_fail("bot");
        let mut self_lat = Vec::new();
        let mut src_lat = Vec::new();
        for _ in 0..LATENCY_ROUNDS {
            for g in grants(&alice, &bot, PER_ROUND).await {
                let t = Instant::now();
                bot.send(&g, &mut body.as_slice(), base)
                    .await
                    .or_fail("send");
                self_lat.push(t.elapsed());
            }
            for g in grants(&alice, &bot, PER_ROUND).await {
                let t = Instant::now();
                bot.dispatch(&g, "src").await.or_fail("dispatch");
                while !filled(&bot, &g).await {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                src_lat.push(t.elapsed());
            }
            // Envelopes leave the inbox so quotas never bind.
            drain(&alice, base).await;
        }
        self_lat.sort();
        src_lat.sort();
        // Throughput: all at once.
        let listed = grants(&alice, &bot, THROUGHPUT).await;
        let t = Instant::now();
        for g in &listed {
            bot.send(g, &mut body.as_slice(), base)
                .await
                .or_fail("send");
        }
        let self_rate = THROUGHPUT as f64 / t.elapsed().as_secs_f64();
        drain(&alice, base).await;
        let listed = grants(&alice, &bot, THROUGHPUT).await;
        let t = Instant::now();
        for g in &listed {
            bot.dispatch(g, "src").await.or_fail("dispatch");
        }
        loop {
            if alice.inbox().await.or_fail("inbox").len() >= THROUGHPUT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let src_rate = THROUGHPUT as f64 / t.elapsed().as_secs_f64();
        (self_lat, src_lat, self_rate, src_rate)
    });
    let _ = src.kill();
    let _ = src.wait();
    let (s50, s99) = (percentile(&self_lat, 0.5), percentile(&self_lat, 0.99));
    let (d50, d99) = (percentile(&src_lat, 0.5), percentile(&src_lat, 0.99));
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let body = format!(
        "## Sources: sealed where the data lives\n\n\
`bash benches/sources.sh` ({cores} cores; release builds of `sealrelay serve` and `sealrelay source serve --poll-ms {poll}` as processes, a file connector, {RECORD}-byte records, the agent in the bench process):\n\n\
| | agent seals itself (`send`) | dispatched to a source |\n|---|---|---|\n\
| latency, grant in hand → envelope stored, p50 | {s50:.2} ms | {d50:.2} ms |\n\
| latency, p99 | {s99:.2} ms | {d99:.2} ms |\n\
| added by the source, p50 | | {:.2} ms |\n\
| {THROUGHPUT} grants, first request → last envelope stored | {self_rate:.0}/s | {src_rate:.0}/s |\n\n\
{} latency samples each, in alternating blocks of {PER_ROUND}. The source polls its assignments every {poll} ms (`source serve` takes at least 10): an agent that dispatches one grant at a time does so just after the source's previous pass, so it waits nearly a whole interval, and polling is most of the added latency; the rest, {:.2} ms at p50, is the source listing, checking (signatures, the directory log's proofs, the data owner's policy), reading, sealing and submitting. The push of the performance issue removes the polling. The source fills its assignments one at a time, so its throughput is bounded by one round trip to the relay per assignment plus one listing per pass.\n",
        d50 - s50,
        self_lat.len(),
        d50 - poll.parse::<f64>().unwrap_or(0.0).max(10.0) - s50,
    );
    println!("{body}");
    replace_section(&root.join("docs/benchmarks.md"), "SOURCES", &body);
}

async fn drain(alice: &UserClient<'_>, scratch: &std::path::Path) {
    for e in alice.inbox().await.or_fail("inbox") {
        let mut sink = std::io::sink();
        alice
            .fetch(e.envelope_id, scratch, &mut sink)
            .await
            .or_fail("fetch");
    }
}
