//! The relay as a real process: `sealrelay serve` killed with SIGKILL in the middle of a
//! stream of sends, twenty times over; every acked envelope must survive byte-exact and nothing
//! half-written may be visible. Then a scan of everything the relay wrote (data directory,
//! stdout, stderr logs) for the plaintext canary and for key material.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

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
    let base = t.path();
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
    let mut sent = 0usize;

    for cycle in 0..20 {
        let mut server = start(base);
        let addr = server.addr.clone();
        let first = sent;
        rt.block_on(async {
            let u = UserClient::connect(alice, &addr).await.unwrap();
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
            let acked = acked.clone();
            let scratch = base.to_path_buf();
            // Send concurrently; kill the relay at a point that moves from cycle to cycle.
            let sends = async {
                let mut futs = Vec::new();
                for (k, g) in grants.iter().enumerate() {
                    let i = first + k;
                    let a = &a;
                    let acked = acked.clone();
                    let scratch = scratch.clone();
                    futs.push(async move {
                        let p = payload(i);
                        if let Ok(id) = a.send(g, &mut p.as_slice(), &scratch).await {
                            acked.lock().unwrap().push((id, i));
                        }
                    });
                }
                for f in futs {
                    f.await;
                }
            };
            let delay = Duration::from_millis(5 + (cycle as u64 * 37) % 120);
            let _ = tokio::time::timeout(delay, sends).await;
        });
        sent += 6;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
    }

    // Restart once more: every acked envelope is there and opens byte-exact; every envelope
    // that is there (acked or not) is whole.
    let mut server = start(base);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "too few sends were acked before the kills ({}) to test anything",
        acked.len()
    );
    rt.block_on(async {
        let u = UserClient::connect(alice, &server.addr).await.unwrap();
        let inbox: Vec<sealrelay::ids::EnvelopeId> = u
            .inbox()
            .await
            .unwrap()
            .iter()
            .map(|e| e.envelope_id)
            .collect();
        for (id, _) in &acked {
            assert!(
                inbox.contains(id),
                "acked envelope {} is missing after the crashes",
                sealrelay::ids::hex(id)
            );
        }
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
    });
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    eprintln!("{} sends over 20 kills, {} acked", sent, acked.len());

    // Nothing the relay wrote holds the plaintext canary or key material.
    let mut files = Vec::new();
    files_under(&base.join("data"), &mut files);
    files.push(base.join("relay.stderr"));
    files.push(base.join("relay.stdout"));
    assert!(files.len() > 2);
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !contains(&bytes, CANARY),
            "{} holds the plaintext canary",
            f.display()
        );
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
