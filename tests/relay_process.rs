//! The relay as a real process: `sealrelay serve` killed with SIGKILL in the middle of a
//! stream of sends, twenty times over; every acked envelope must survive byte-exact and nothing
//! half-written may be visible. Then a scan of everything the relay wrote (data directory,
//! stdout, stderr logs) for the plaintext canary and for key material.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealrelay::client::{AgentClient, GrantRequest, UserClient};
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::local::provision::{agent, provision, user};

const CANARY: &[u8] = b"CANARY-PLAINTEXT-7f3a9c51";

/// (envelope id, payload index) of every acked send.
type Acked = Arc<Mutex<Vec<(sealrelay::ids::EnvelopeId, usize)>>>;

struct Server {
    child: Child,
    addr: String,
}

fn start(base: &Path) -> Server {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(base.join("relay.stderr"))
        .unwrap();
    let mut child = Command::new(common::bin())
        .args([
            "serve",
            "--dir",
            "keys",
            "--data",
            "data",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .current_dir(base)
        .envs(common::store_env(base))
        .env("SEALRELAY_METRICS_LISTEN", "127.0.0.1:0")
        // 200 cycles leave the grants of unacknowledged sends open: more than one user's
        // default share of an agent.
        .env(
            "SEALRELAY_QUOTAS__MAX_OPEN_GRANTS_PER_USER_PER_AGENT",
            "10000",
        )
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("relay printed nothing").unwrap();
    let addr = first.rsplit(' ').next().unwrap().to_owned();
    assert!(first.starts_with("sealrelay relay listening on"), "{first}");
    // Keep the rest of stdout, for the scan.
    let out_path = base.join("relay.stdout");
    std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out_path)
            .unwrap();
        for l in lines.map_while(Result::ok) {
            let _ = writeln!(f, "{l}");
        }
    });
    Server { child, addr }
}

fn payload(i: usize) -> Vec<u8> {
    let mut p = CANARY.to_vec();
    p.extend(common::pattern(1000 + (i * 7919) % 150_000, i as u8));
    p.extend_from_slice(CANARY);
    p
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn kill_9_during_sends_twenty_times_loses_no_acked_envelope() {
    let t = tempfile::tempdir().unwrap();
    crash_loop(t.path(), 20);
    scan(t.path());
}

/// The crash loop at scale (threats 36 and 45): 200 kill -9 cycles. Ignored by default (it
/// takes minutes); run it with `cargo test --release --test relay_process -- --ignored`.
#[test]
#[ignore]
fn kill_9_during_sends_two_hundred_times_loses_no_acked_envelope() {
    let t = tempfile::tempdir().unwrap();
    let cycles = std::env::var("SEALRELAY_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    crash_loop(t.path(), cycles);
    scan(t.path());
}

/// `cycles` rounds of: start the relay; fetch (and check) up to two acked envelopes; six
/// concurrent sends; SIGKILL at a delay that moves from round to round; note how long each
/// unacked send took to fail. Then: every acked envelope was fetched byte-exact or is still
/// listed, none is listed twice, no grant holds two, and every listed envelope is whole.
fn crash_loop(base: &Path, cycles: usize) {
    let (ids, _) = provision(
        &base.join("keys"),
        &[user("alice", 2, &[]), agent("research-bot", &["tickets/*"])],
        sealrelay::clock::now(),
    )
    .unwrap();
    let (alice, bot) = (&ids[0], &ids[1]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Acked = Arc::default();
    let mut delivered: Vec<sealrelay::ids::EnvelopeId> = Vec::new();
    let mut fail_times: Vec<Duration> = Vec::new();
    let mut sent = 0usize;

    for cycle in 0..cycles {
        let mut server = start(base);
        let addr = server.addr.clone();
        let first = sent;
        rt.block_on(async {
            let u = UserClient::connect(alice, &addr).await.unwrap();
            // Regular fetches of what earlier rounds acked.
            let pending: Vec<_> = acked
                .lock()
                .unwrap()
                .iter()
                .filter(|(id, _)| !delivered.contains(id))
                .take(2)
                .cloned()
                .collect();
            for (id, i) in pending {
                let mut out = Vec::new();
                let f = u.fetch(id, base, &mut out).await.unwrap();
                assert_eq!(f.status, DeliveryStatus::Delivered);
                assert!(out == payload(i), "a fetched envelope differs");
                delivered.push(id);
            }
            for _ in 0..6 {
                u.grant(&GrantRequest {
                    agent: "research-bot".into(),
                    resource: "tickets/x".into(),
                    purpose: String::new(),
                    ttl_secs: 3600,
                    max_bytes: 1 << 20,
                })
                .await
                .unwrap();
            }
            let a = AgentClient::connect(bot, &addr).await.unwrap();
            let grants = a.grants().await.unwrap();
            // Grants whose sends failed in earlier rounds are open still: they go again.
            sent += grants.len();
            let failed_at = Mutex::new(Vec::new());
            let sends: Vec<_> = grants
                .iter()
                .enumerate()
                .map(|(k, g)| {
                    let (a, acked, failed_at) = (&a, &acked, &failed_at);
                    async move {
                        let i = first + k;
                        let p = payload(i);
                        match a.send(g, &mut p.as_slice(), base).await {
                            Ok(id) => acked.lock().unwrap().push((id, i)),
                            Err(_) => failed_at.lock().unwrap().push(std::time::Instant::now()),
                        }
                    }
                })
                .collect();
            // Kill at a point that moves from round to round: every other round within the first
            // few milliseconds, while sends are surely in flight (on a fast machine six sends
            // can all be acked within the later points, and then nothing measures how fast an
            // unacked send fails), the others anywhere in the first 125 ms.
            let delay = if cycle % 2 == 0 {
                Duration::from_millis(1 + (cycle as u64 * 3) % 8)
            } else {
                Duration::from_millis(5 + (cycle as u64 * 37) % 120)
            };
            let killer = async {
                tokio::time::sleep(delay).await;
                let killed = std::time::Instant::now();
                server.child.kill().unwrap(); // SIGKILL
                server.child.wait().unwrap();
                killed
            };
            let ((), killed) = tokio::join!(harness::join_all(sends), killer);
            for at in failed_at.into_inner().unwrap() {
                fail_times.push(at.saturating_duration_since(killed));
            }
        });
    }

    // Restart once more and check the ledger.
    let mut server = start(base);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= cycles / 2,
        "too few sends were acked before the kills ({}) to test anything",
        acked.len()
    );
    let (lost, duplicated) = rt.block_on(async {
        let u = UserClient::connect(alice, &server.addr).await.unwrap();
        let views = u.inbox().await.unwrap();
        let inbox: Vec<sealrelay::ids::EnvelopeId> = views.iter().map(|e| e.envelope_id).collect();
        let mut grants: Vec<Vec<u8>> = views.iter().map(|v| v.grant.statement.clone()).collect();
        grants.sort();
        let before = grants.len();
        grants.dedup();
        let mut unique = inbox.clone();
        unique.sort();
        unique.dedup();
        let duplicated = (inbox.len() - unique.len()) + (before - grants.len());
        let lost = acked
            .iter()
            .filter(|(id, _)| !delivered.contains(id) && !inbox.contains(id))
            .count();
        for id in &inbox {
            let mut out = Vec::new();
            let f = u.fetch(*id, base, &mut out).await.unwrap();
            assert_eq!(
                f.status,
                DeliveryStatus::Delivered,
                "envelope {} is not whole",
                sealrelay::ids::hex(id)
            );
            if let Some((_, i)) = acked.iter().find(|(a, _)| a == id) {
                assert!(
                    out == payload(*i),
                    "envelope {} differs",
                    sealrelay::ids::hex(id)
                );
            }
        }
        (lost, duplicated)
    });
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    fail_times.sort();
    let pct = |p: usize| {
        fail_times
            .get((fail_times.len() * p / 100).min(fail_times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "crash loop: {cycles} kills, {sent} sends, {} acked, {} fetched along the way, {lost} lost, {duplicated} duplicated; {} unacked sends failed after the kill in median {:?}, p99 {:?}, max {:?}",
        acked.len(),
        delivered.len(),
        fail_times.len(),
        pct(50),
        pct(99),
        fail_times.last().copied().unwrap_or_default()
    );
    assert_eq!((lost, duplicated), (0, 0), "lost, duplicated");
    // threat 45: a client notices a dead relay within seconds, not the 30 s of a default.
    assert!(
        !fail_times.is_empty(),
        "no send was cut by a kill: nothing measured how fast unacked sends fail"
    );
    assert!(
        fail_times.last().copied().unwrap_or_default() < Duration::from_secs(15),
        "an unacked send took {:?} to fail",
        fail_times.last()
    );
}

/// Nothing the relay wrote holds the plaintext canary or key material.
fn scan(base: &Path) {
    let mut files = Vec::new();
    files_under(&base.join("data"), &mut files);
    files.push(base.join("relay.stderr"));
    files.push(base.join("relay.stdout"));
    assert!(files.len() > 2);
    let hits = harness::oracles::canary_hits(CANARY, &files, &[]);
    assert!(hits.is_empty(), "the plaintext canary leaked: {hits:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !contains(&bytes, b"AGE-SECRET-KEY-1"),
            "{} holds an age secret key",
            f.display()
        );
        assert!(
            !contains(&bytes, b"PRIVATE KEY"),
            "{} holds a private key",
            f.display()
        );
    }
    let log = std::fs::read_to_string(base.join("relay.stderr")).unwrap();
    assert!(
        log.contains("envelope") || log.contains("submit"),
        "the relay log is empty: the scan would prove nothing"
    );
}
