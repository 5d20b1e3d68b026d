//! The requester's side through the real binary: `inbox` and `inbox --json` show who sent each
//! envelope, for what, why, under whose approval, and whether it verifies; `fetch` prints the
//! same header before the plaintext; an envelope whose agent signature is broken (a store that
//! serves it altered) is shown as unverifiable, is never opened, and yields an `undecryptable`
//! receipt; `approvals` shows the whole grant and `deny` closes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{ok_in, run_in};
use sealrelay::client::{AgentClient, GrantRequest, UserClient};
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::core::store::Store;
use sealrelay::ids::hex;
use sealrelay::local::identity_file::save;
use sealrelay::local::provision::{agent, user};
use serde_json::Value;

/// The binary, off the async threads (the relay runs in this process).
async fn cli(dir: &std::path::Path, args: &[&str], relay: &str) -> (i32, String, String) {
    let dir = dir.to_owned();
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    args.extend(["--relay".to_owned(), relay.to_owned()]);
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_in(&dir, &a)
    })
    .await
    .unwrap()
}

fn request(resource: &str, purpose: &str) -> GrantRequest {
    GrantRequest {
        agent: "research-bot".into(),
        resource: resource.into(),
        purpose: purpose.into(),
        ttl_secs: 600,
        max_bytes: 1 << 20,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_shows_who_what_why_and_an_unverifiable_envelope_is_never_opened() {
    let store = Arc::new(common::hooked::Hooked::in_memory());
    let tamper = store.tamper.clone();
    let w = common::test_relay_with(
        &[
            user("alice", 3, &["engineer"]),
            user("bob", 3, &["approver"]),
            agent("research-bot", &["tickets/*", "payroll/*"]),
        ],
        |_| {},
        Some(store.clone() as Arc<dyn Store>),
    )
    .await;
    let (alice_id, bob_id, bot_id) = (&w.ids[0], &w.ids[1], &w.ids[2]);
    let dir = w.dir.clone();
    save(&dir.join("alice.id"), alice_id, false).unwrap();
    save(&dir.join("bob.id"), bob_id, false).unwrap();
    let alice = UserClient::connect(alice_id, &w.addr).await.unwrap();
    let bob = UserClient::connect(bob_id, &w.addr).await.unwrap();
    let bot = AgentClient::connect(bot_id, &w.addr).await.unwrap();

    // A plain grant, one that needs bob's approval, and one whose envelope the store alters.
    let plain = alice
        .grant(&request("tickets/4711", "summarise the incident"))
        .await
        .unwrap();
    let payroll = alice
        .grant(&request("payroll/2026", "check my own payslip"))
        .await
        .unwrap();
    let altered = alice
        .grant(&request("tickets/4712", "draft the reply"))
        .await
        .unwrap();
    bob.approve(payroll).await.unwrap();
    let mut sent = std::collections::HashMap::new();
    for g in bot.grants().await.unwrap() {
        let body = format!("the data for {}", g.grant.resource);
        let env = bot.send(&g, &mut body.as_bytes(), &dir).await.unwrap();
        sent.insert(g.grant.grant_id, env);
    }
    assert_eq!(sent.len(), 3);
    *tamper.lock().unwrap() = Some(sent[&altered]);

    let (code, json, err) = cli(
        &dir,
        &["inbox", "--identity", "alice.id", "--json"],
        &w.addr,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let list: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(list.len(), 3, "{json}");
    let entry = |g| {
        list.iter()
            .find(|e| e["envelope_id"] == hex(sent[&g]))
            .unwrap()
            .clone()
    };
    let e = entry(plain);
    assert!(
        e["agent"]
            .as_str()
            .unwrap()
            .ends_with("/agent/research-bot"),
        "{e}"
    );
    assert_eq!(e["resource"], "tickets/4711");
    assert_eq!(e["purpose"], "summarise the incident");
    assert_eq!(e["approver"], Value::Null);
    assert_eq!(e["verified"], true, "{e}");
    assert!(e["asked"].as_str().unwrap().ends_with('Z'));
    let e = entry(payroll);
    assert!(
        e["approver"].as_str().unwrap().ends_with("/user/bob"),
        "{e}"
    );
    assert!(e["approved_at"].is_string());
    assert_eq!(e["verified"], true, "{e}");
    let e = entry(altered);
    assert_eq!(e["verified"], false, "{e}");
    assert_eq!(e["resource"], "tickets/4712");
    assert!(
        e["problem"]
            .as_str()
            .unwrap()
            .contains("the agent's signed statement does not verify"),
        "{e}"
    );

    let (code, table, err) = cli(&dir, &["inbox", "--identity", "alice.id"], &w.addr).await;
    assert_eq!(code, 0, "{err}");
    for needle in [
        "from      spiffe://",
        "/agent/research-bot",
        "resource  tickets/4711",
        "purpose   \"summarise the incident\"",
        "resource  payroll/2026",
        "/user/bob at ",
        "UNVERIFIABLE: the agent's signed statement does not verify (it will not be opened)",
    ] {
        assert!(table.contains(needle), "{needle}: {table}");
    }
    assert_eq!(table.matches("  verified").count(), 2, "{table}");

    // The altered one: fetch refuses to open it (exit 1), writes no plaintext, prints the
    // header, and files an undecryptable receipt. Asked to write where an earlier envelope's
    // plaintext and receipt are, it leaves both (review-found: its receipt replaced the
    // earlier one) and puts its own under its id.
    let out = dir.join("altered.txt");
    std::fs::write(&out, b"an earlier envelope").unwrap();
    std::fs::write(dir.join("altered.txt.receipt"), b"the earlier receipt").unwrap();
    let (code, stdout, stderr) = cli(
        &dir,
        &[
            "fetch",
            "--identity",
            "alice.id",
            &hex(sent[&altered]),
            "-o",
            out.to_str().unwrap(),
        ],
        &w.addr,
    )
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("UNVERIFIABLE"), "{stderr}");
    assert!(
        stderr.contains("an undecryptable receipt was filed"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "an earlier envelope",
        "plaintext written for an unverifiable envelope"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("altered.txt.receipt")).unwrap(),
        "the earlier receipt"
    );
    assert!(dir
        .join(format!("{}.receipt", hex(sent[&altered])))
        .exists());
    let d = store.delivery(&sent[&altered]).unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Undecryptable);

    // A good one: the header before the plaintext.
    let (code, stdout, stderr) = cli(
        &dir,
        &["fetch", "--identity", "alice.id", &hex(sent[&payroll])],
        &w.addr,
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "the data for payroll/2026");
    assert!(
        stderr.contains("resource  payroll/2026") && stderr.contains("/user/bob at "),
        "{stderr}"
    );
    assert_eq!(
        store.delivery(&sent[&payroll]).unwrap().unwrap().status,
        DeliveryStatus::Delivered
    );
    alice.conn.close().await;
    bob.conn.close().await;
    bot.conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_show_the_whole_grant_and_deny_closes_it() {
    let w = common::test_relay(
        &[
            user("alice", 3, &["engineer"]),
            user("bob", 3, &["approver"]),
            agent("research-bot", &["payroll/*"]),
        ],
        |_| {},
    )
    .await;
    let dir = w.dir.clone();
    save(&dir.join("bob.id"), &w.ids[1], false).unwrap();
    save(&dir.join("alice.id"), &w.ids[0], false).unwrap();
    let alice = UserClient::connect(&w.ids[0], &w.addr).await.unwrap();
    let bot = AgentClient::connect(&w.ids[2], &w.addr).await.unwrap();
    let g = alice
        .grant(&request("payroll/2026", "check my own payslip"))
        .await
        .unwrap();
    let relay = w.addr.clone();
    let dir2 = dir.clone();
    let (listed, denied, again, mine) = tokio::task::spawn_blocking(move || {
        let r = ["--relay", relay.as_str()];
        let listed = ok_in(
            &dir2,
            &[&["approvals", "--identity", "bob.id"][..], &r].concat(),
        );
        let denied = ok_in(
            &dir2,
            &[
                &[
                    "deny",
                    "--identity",
                    "bob.id",
                    &hex(g),
                    "--reason",
                    "not needed for triage",
                ][..],
                &r,
            ]
            .concat(),
        );
        let again = run_in(
            &dir2,
            &[&["approve", "--identity", "bob.id", &hex(g)][..], &r].concat(),
        );
        // The requester may not decide on her own grant.
        let mine = run_in(
            &dir2,
            &[&["deny", "--identity", "alice.id", &hex(g)][..], &r].concat(),
        );
        (listed, denied, again, mine)
    })
    .await
    .unwrap();
    for needle in [
        &hex(g),
        "requester       spiffe://",
        "/user/alice",
        "agent           spiffe://",
        "resource        payroll/2026",
        "purpose         \"check my own payslip\"",
        "classification  3",
        "expires         ",
        "sha256          ",
    ] {
        assert!(listed.contains(needle), "{needle}: {listed}");
    }
    assert!(denied.contains("denied grant"), "{denied}");
    assert_ne!(again.0, 0, "approving a denied grant: {again:?}");
    assert_ne!(mine.0, 0, "{mine:?}");
    // Closed: the agent never sees it; the log has it; the requester's grants say denied.
    assert!(bot.grants().await.unwrap().is_empty());
    let kinds: Vec<String> = w
        .relay
        .relay()
        .store()
        .events(0, 1000)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "grant.denied"), "{kinds:?}");
    let mine = alice.my_grants().await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].progress.as_str(), "denied");
    assert!(mine[0]
        .decided_by
        .as_ref()
        .unwrap()
        .to_string()
        .ends_with("/user/bob"));
    alice.conn.close().await;
    bot.conn.close().await;
}
