//! The transparency log end to end: receipts verify offline with only the authority and log
//! public keys and fail, naming the check, when anything in them changes; a rolled-back relay
//! is caught by `audit verify` and refused at start; every kind of event is in `audit tail`
//! with its leaf index and no content; and an action whose event cannot be written is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{ok_in, run_in};
use sealrelay::core::directory::DirectoryEntry;
use sealrelay::core::receipt_file::{ReceiptFile, ReceiptVerifier};
use sealrelay::core::sign::VerifierKey;

/// An edit of a receipt file.
type Edit = Box<dyn Fn(&mut ReceiptFile)>;

fn serve(dir: &Path) -> (Child, String) {
    common::serve(dir, &[])
}

fn stop(child: Child) {
    common::terminate(child);
}

/// Provisions alice (auditor), research-bot; returns nothing (files in `dir`).
fn setup(dir: &Path) {
    common::admin_world(dir, &[("alice", &["auditor"])]);
}

/// One grant → send → fetch; returns the receipt path.
fn deliver(dir: &Path, addr: &str, n: u32, data: &str) -> std::path::PathBuf {
    let relay = ["--relay", addr];
    let g = ok_in(
        dir,
        &[
            &[
                "grant",
                "--identity",
                "alice.id",
                "--agent",
                "research-bot",
                "--resource",
                &format!("tickets/{n}"),
            ][..],
            &relay,
        ]
        .concat(),
    );
    let g = g.trim().to_owned();
    std::fs::write(dir.join("data.txt"), data).unwrap();
    ok_in(
        dir,
        &[
            &["send", "--identity", "bot.id", "--grant", &g, "data.txt"][..],
            &relay,
        ]
        .concat(),
    );
    let out = dir.join(format!("out{n}"));
    ok_in(
        dir,
        &[
            &[
                "fetch",
                "--identity",
                "alice.id",
                "--all",
                "-o",
                out.to_str().unwrap(),
            ][..],
            &relay,
        ]
        .concat(),
    );
    let receipt = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "receipt"))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(receipt.with_extension("")).unwrap(),
        data
    );
    receipt
}

#[test]
fn receipts_verify_offline_and_any_change_fails_naming_the_check() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    setup(dir);
    let (relay, addr) = serve(dir);
    let receipt = deliver(dir, &addr, 1, "CANARY-TLOG ticket one\n");
    let receipt2 = deliver(dir, &addr, 2, "CANARY-TLOG ticket two\n");
    stop(relay);

    // Offline, somewhere else, with only the two public keys.
    let auditor = dir.join("auditor");
    std::fs::create_dir(&auditor).unwrap();
    for f in ["authority.pub", "log.pub"] {
        std::fs::copy(dir.join("keys").join(f), auditor.join(f)).unwrap();
    }
    std::fs::copy(&receipt, auditor.join("r.receipt")).unwrap();
    let out = ok_in(
        &auditor,
        &[
            "receipt",
            "verify",
            "r.receipt",
            "--authority",
            "authority.pub",
            "--log-key",
            "log.pub",
        ],
    );
    assert!(
        out.starts_with("ok: envelope ") && out.contains("delivered to spiffe://"),
        "{out}"
    );
    // A batch of receipts in one call.
    std::fs::copy(&receipt2, auditor.join("r2.receipt")).unwrap();
    let out = ok_in(
        &auditor,
        &[
            "receipt",
            "verify",
            "r.receipt",
            "r2.receipt",
            "--authority",
            "authority.pub",
            "--log-key",
            "log.pub",
        ],
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("ok: envelope"))
            .count(),
        2,
        "{out}"
    );

    // Edits that keep the file well-formed: each fails, naming its check.
    let original = std::fs::read(&receipt).unwrap();
    let file = ReceiptFile::from_json(&original).unwrap();
    let authority = VerifierKey::parse(
        std::fs::read_to_string(auditor.join("authority.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let log = VerifierKey::parse(
        std::fs::read_to_string(auditor.join("log.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    file.verify(&authority.key, &log).unwrap();
    let cases: Vec<(&str, Edit)> = vec![
        (
            "user signature on the receipt",
            Box::new(|f| f.receipt.signature[10] ^= 1),
        ),
        (
            "user signature on the receipt",
            Box::new(|f| {
                let n = f.receipt.statement.len() - 1;
                f.receipt.statement[n] ^= 1
            }),
        ),
        (
            "user directory entry",
            Box::new(|f| f.user_entry.signature[0] ^= 1),
        ),
        // The leaf's recorded digest (its last bytes) no longer matches the receipt.
        (
            "log entry",
            Box::new(|f| {
                let n = f.leaf.len() - 1;
                f.leaf[n] ^= 1
            }),
        ),
        // Any other leaf byte: the leaf is another leaf, not the one the proof covers.
        (
            "inclusion proof",
            Box::new(|f| {
                let n = f.leaf.len() - 40;
                f.leaf[n] ^= 1
            }),
        ),
        ("inclusion proof", Box::new(|f| f.proof[0][5] ^= 1)),
        ("inclusion proof", Box::new(|f| f.leaf_index ^= 1)),
        ("inclusion proof", Box::new(|f| f.proof.push([0u8; 32]))),
        ("inclusion proof", Box::new(|f| f.tree_size += 1)),
        (
            "checkpoint signature",
            Box::new(|f| f.checkpoint = f.checkpoint.replacen('=', "A", 1)),
        ),
        (
            "checkpoint signature",
            Box::new(|f| {
                let mut lines: Vec<String> = f.checkpoint.lines().map(str::to_owned).collect();
                lines[1] = (lines[1].parse::<u64>().unwrap() + 1).to_string();
                f.checkpoint = lines.join("\n") + "\n";
            }),
        ),
    ];
    for (check, edit) in &cases {
        let mut f = file.clone();
        edit(&mut f);
        std::fs::write(auditor.join("bad.receipt"), f.to_json()).unwrap();
        let (code, _, err) = run_in(
            &auditor,
            &[
                "receipt",
                "verify",
                "bad.receipt",
                "--authority",
                "authority.pub",
                "--log-key",
                "log.pub",
            ],
        );
        assert_eq!(code, 1, "{check}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("receipt check failed: {check}")),
            "expected {check:?}: {err}"
        );
    }
    // The client that signed a receipt checks the relay's answer to it without checking its own
    // signature again (`signed_here`): every edit above still fails, naming its check, since a
    // receipt that differs by a byte from the one it signed is checked in full.
    let user_key = DirectoryEntry::verify(&file.user_entry, &authority.key)
        .unwrap()
        .signing_key;
    let here =
        || ReceiptVerifier::new(authority.key, log.clone()).signed_here(&file.receipt, user_key);
    here().verify(&file).unwrap();
    for (check, edit) in &cases {
        let mut f = file.clone();
        edit(&mut f);
        let err = here().verify(&f).unwrap_err();
        assert!(
            err.message()
                .contains(&format!("receipt check failed: {check}")),
            "expected {check:?}: {}",
            err.message()
        );
    }
    // Skipped only under the key the client signed with: a client whose entry names another
    // key (a stale entry) checks the signature, and an edited one fails.
    let other_key = sealrelay::core::sign::SigningKey::generate()
        .unwrap()
        .public();
    let mut edited = file.clone();
    edited.receipt.signature[10] ^= 1;
    let err = ReceiptVerifier::new(authority.key, log.clone())
        .signed_here(&edited.receipt, other_key)
        .verify(&edited)
        .unwrap_err();
    assert!(
        err.message()
            .contains("receipt check failed: user signature on the receipt"),
        "{}",
        err.message()
    );
    // Every single flipped byte of the file fails (as a parse error or a named check).
    for i in 0..original.len() {
        let mut b = original.clone();
        b[i] ^= 0x01;
        let ok = ReceiptFile::from_json(&b).and_then(|f| f.verify(&authority.key, &log));
        assert!(
            ok.is_err(),
            "flipping byte {i} of the receipt file went unnoticed"
        );
    }
    // Another authority's or log's key fails.
    let other = tempfile::tempdir().unwrap();
    ok_in(other.path(), &["keys", "init", "--dir", "k"]);
    let (code, _, err) = run_in(
        &auditor,
        &[
            "receipt",
            "verify",
            "r.receipt",
            "--authority",
            other.path().join("k/authority.pub").to_str().unwrap(),
            "--log-key",
            "log.pub",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("user directory entry"), "{err}");
    let (code, _, err) = run_in(
        &auditor,
        &[
            "receipt",
            "verify",
            "r.receipt",
            "--authority",
            "authority.pub",
            "--log-key",
            other.path().join("k/log.pub").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("checkpoint signature"), "{err}");
}

#[test]
fn rollback_is_caught_by_audit_verify_and_by_the_relay() {
    if std::env::var_os("SEALRELAY_TEST_POSTGRES").is_some() {
        // This test rolls back the embedded store's file; the redb run of the suite covers it.
        eprintln!("SKIPPED on PostgreSQL: the rollback here copies data/state.redb");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    setup(dir);
    let (relay, addr) = serve(dir);
    deliver(dir, &addr, 1, "one\n");
    let out = ok_in(
        dir,
        &[
            "audit",
            "verify",
            "--identity",
            "alice.id",
            "--relay",
            &addr,
        ],
    );
    assert!(out.starts_with("ok: the log has"), "{out}");
    stop(relay);
    // A copy of the whole data directory (state and the relay's own checkpoint file).
    let copy = dir.join("data-copy");
    copy_dir(&dir.join("data"), &copy);

    let (relay, addr) = serve(dir);
    deliver(dir, &addr, 2, "two\n");
    let out = ok_in(
        dir,
        &[
            "audit",
            "verify",
            "--identity",
            "alice.id",
            "--relay",
            &addr,
        ],
    );
    assert!(out.contains("consistent with your checkpoint"), "{out}");
    stop(relay);

    // 1. Only the state goes back; the relay's checkpoint file remembers: it refuses to start.
    std::fs::copy(copy.join("state.redb"), dir.join("data/state.redb")).unwrap();
    let out = Command::new(common::bin())
        .args([
            "serve",
            "--dir",
            "keys",
            "--data",
            "data",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir)
        .env("SEALRELAY_METRICS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rolled back"), "{err}");

    // 2. The whole directory goes back (checkpoint file too): the relay starts, but a client
    //    that saw the newer checkpoint catches the rollback.
    std::fs::remove_dir_all(dir.join("data")).unwrap();
    copy_dir(&copy, &dir.join("data"));
    let (relay, addr) = serve(dir);
    let (code, _, err) = run_in(
        dir,
        &[
            "audit",
            "verify",
            "--identity",
            "alice.id",
            "--relay",
            &addr,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ROLLBACK"), "{err}");
    stop(relay);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn every_kind_of_event_is_in_audit_tail_with_no_content() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    setup(dir);
    let (relay, addr) = serve(dir);
    deliver(dir, &addr, 1, "CANARY-TLOG secret ticket\n");
    // A denial, a directory push and a revocation.
    let (code, _, _) = run_in(
        dir,
        &[
            "grant",
            "--identity",
            "alice.id",
            "--agent",
            "research-bot",
            "--resource",
            "payroll/1",
            "--relay",
            &addr,
        ],
    );
    assert_ne!(code, 0);
    ok_in(
        dir,
        &[
            "user", "add", "carol", "--dir", "keys", "--out", "carol.id", "--relay", &addr,
        ],
    );
    ok_in(
        dir,
        &["user", "revoke", "carol", "--dir", "keys", "--relay", &addr],
    );
    let out = ok_in(
        dir,
        &[
            "audit",
            "tail",
            "--identity",
            "alice.id",
            "--relay",
            &addr,
            "-n",
            "100",
            "--json",
        ],
    );
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["index"].as_u64().unwrap(),
            i as u64,
            "leaf indexes run 0..n"
        );
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "directory.load",
        "grant.created",
        "envelope.submitted",
        "receipt.recorded",
        "deny",
        "directory.push",
    ] {
        assert!(kinds.contains(&k), "{k} missing from audit tail: {kinds:?}");
    }
    assert!(
        !out.contains("CANARY-TLOG")
            && !out.contains("AGE-SECRET-KEY")
            && !out.contains("tickets/1")
            && !out.contains("payroll/1"),
        "content leaked into the log: {out}"
    );
    let table = ok_in(
        dir,
        &["audit", "tail", "--identity", "alice.id", "--relay", &addr],
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("#") && l.contains("receipt.recorded")),
        "{table}"
    );
    // Agents are not auditors.
    let (code, _, err) = run_in(
        dir,
        &["audit", "tail", "--identity", "bot.id", "--relay", &addr],
    );
    assert_eq!(code, 6, "{err}");
    stop(relay);
    // The whole data directory holds no plaintext either.
    let mut stack = vec![dir.join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap();
                assert!(
                    !b.windows(11).any(|w| w == b"CANARY-TLOG"),
                    "{} holds plaintext",
                    p.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_whose_event_cannot_be_written_is_refused_and_changes_nothing() {
    use sealrelay::client::{AgentClient, GrantRequest, UserClient};
    use sealrelay::local::provision::{agent, user};
    let fail = Arc::new(AtomicBool::new(false));
    let store = Arc::new(common::hooked::Hooked {
        fail: fail.clone(),
        ..common::hooked::Hooked::in_memory()
    });
    let w = common::test_relay_with(
        &[user("alice", 2, &[]), agent("research-bot", &["tickets/*"])],
        |config| {
            let policy = config.data.with_file_name("policy.cedar");
            std::fs::write(&policy, sealrelay::core::policy::DEFAULT_POLICY).unwrap();
            config.policy_file = Some(policy);
        },
        Some(store),
    )
    .await;
    let (ids, addr, relay) = (&w.ids, &w.addr, &w.relay);
    let alice = UserClient::connect(&ids[0], addr).await.unwrap();
    let bot = AgentClient::connect(&ids[1], addr).await.unwrap();
    let req = GrantRequest {
        agent: "research-bot".into(),
        resource: "tickets/1".into(),
        purpose: String::new(),
        ttl_secs: 600,
        max_bytes: 1 << 20,
    };
    alice.grant(&req).await.unwrap();
    let grants = bot.grants().await.unwrap();
    let events_before = relay.relay().store().event_count().unwrap();
    let size_before = relay.relay().store().log_size();

    fail.store(true, Ordering::SeqCst);
    let err = alice.grant(&req).await.unwrap_err();
    assert_eq!(err.kind(), sealrelay::ErrorKind::Unavailable, "{err}");
    assert!(
        err.message()
            .contains("could not complete the request durably"),
        "{err}"
    );
    let err = bot
        .send(&grants[0], &mut &b"data"[..], w.dir.as_path())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), sealrelay::ErrorKind::Unavailable, "{err}");
    // A policy reload whose event cannot be written does not take effect (found by reading:
    // the new policy was in force before its event was durable).
    use sealrelay::core::policy::Authorizer;
    let in_force = relay.relay().policy().policy_hash();
    let policy = w.dir.join("policy.cedar");
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str("\n// a change\n");
    std::fs::write(&policy, text).unwrap();
    assert!(sealrelay::server::reload_policy(relay.relay())
        .await
        .is_err());
    assert_eq!(relay.relay().policy().policy_hash(), in_force);
    fail.store(false, Ordering::SeqCst);

    // Nothing changed: no new grant, the old grant still open, no envelope, no events, same log.
    assert_eq!(bot.grants().await.unwrap().len(), 1);
    assert!(relay.relay().store().envelope_ids().unwrap().is_empty());
    assert_eq!(relay.relay().store().event_count().unwrap(), events_before);
    assert_eq!(relay.relay().store().log_size(), size_before);
    assert_eq!(
        std::fs::read_dir(w.dir.as_path().join("data/blobs"))
            .unwrap()
            .count(),
        0
    );
    // And it works again once the store does.
    bot.send(&grants[0], &mut &b"data"[..], w.dir.as_path())
        .await
        .unwrap();
    w.relay.shutdown().await;
}
