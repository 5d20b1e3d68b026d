//! The relay end to end: a real QUIC + mutual TLS server on 127.0.0.1:0, driven through the
//! client library: grant → send → inbox → fetch → receipt, byte-exact, and the refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use sealrelay::client::{AgentClient, GrantRequest, UserClient};
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::core::identity::Identity;
use sealrelay::local::provision::{agent, provision, user};
use sealrelay::server::{start_local, RunningRelay};
use sealrelay::ErrorKind;

struct World {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    relay: RunningRelay,
    addr: String,
    alice: Identity,
    mallory: Identity,
    bot: Identity,
    other_bot: Identity,
    #[allow(dead_code)]
    admin: Identity,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let keys = dir.join("keys");
    let (mut ids, admin) = provision(
        &keys,
        &[
            user("alice", 2, &["engineer"]),
            user("mallory", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
            agent("other-bot", &["tickets/*"]),
        ],
        sealrelay::clock::now(),
    )
    .unwrap();
    let relay = start_local(&keys, &dir.join("data")).await.unwrap();
    let addr = relay.local_addr.to_string();
    let other_bot = ids.pop().unwrap();
    let bot = ids.pop().unwrap();
    let mallory = ids.pop().unwrap();
    let alice = ids.pop().unwrap();
    World {
        _tmp: tmp,
        dir,
        relay,
        addr,
        alice,
        mallory,
        bot,
        other_bot,
        admin,
    }
}

fn grant_req(resource: &str) -> GrantRequest {
    GrantRequest {
        agent: "research-bot".into(),
        resource: resource.into(),
        purpose: "triage".into(),
        ttl_secs: 600,
        max_bytes: 16 * 1024 * 1024,
    }
}

fn scratch(dir: &Path) -> &Path {
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_send_inbox_fetch_receipt_byte_exact() {
    let w = world().await;
    let alice = UserClient::connect(&w.alice, &w.addr).await.unwrap();
    let grant_id = alice.grant(&grant_req("tickets/4711")).await.unwrap();

    let bot = AgentClient::connect(&w.bot, &w.addr).await.unwrap();
    let grants = bot.grants().await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grant.grant_id, grant_id);
    assert_eq!(grants[0].grant.resource, "tickets/4711");
    let plaintext = common::pattern(3 * 65_536 + 123, 9);
    let envelope_id = bot
        .send(&grants[0], &mut plaintext.as_slice(), scratch(&w.dir))
        .await
        .unwrap();
    // The grant is consumed: it is no longer listed.
    assert!(bot.grants().await.unwrap().is_empty());

    let inbox = alice.inbox().await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].envelope_id, envelope_id);
    let mut out = Vec::new();
    let fetched = alice.fetch(envelope_id, &w.dir, &mut out).await.unwrap();
    assert_eq!(fetched.status, DeliveryStatus::Delivered);
    assert!(out == plaintext, "plaintext differs");
    assert_eq!(fetched.plaintext_len, plaintext.len() as u64);
    assert!(
        alice.inbox().await.unwrap().is_empty(),
        "a delivered envelope leaves the inbox"
    );

    // The relay's event log has the whole story, with no plaintext in it.
    let events = w.relay.relay().store().events(0, 1000).unwrap();
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e.kind.as_str()).collect();
    for k in [
        "directory.load",
        "grant.created",
        "envelope.submitted",
        "receipt.recorded",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    w.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let w = world().await;
    let alice = UserClient::connect(&w.alice, &w.addr).await.unwrap();
    let mallory = UserClient::connect(&w.mallory, &w.addr).await.unwrap();
    let bot = AgentClient::connect(&w.bot, &w.addr).await.unwrap();
    let other_bot = AgentClient::connect(&w.other_bot, &w.addr).await.unwrap();

    let g = alice.grant(&grant_req("tickets/1")).await.unwrap();
    let grants = bot.grants().await.unwrap();
    let open = grants.iter().find(|x| x.grant.grant_id == g).unwrap();
    // A grant addressed to another agent is invisible to this one and cannot be used.
    assert!(other_bot.grants().await.unwrap().is_empty());
    let err = other_bot
        .send(open, &mut &b"data"[..], &w.dir)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let env = bot
        .send(open, &mut &b"secret ticket"[..], &w.dir)
        .await
        .unwrap();
    // A used grant cannot be used again.
    let err = bot
        .send(open, &mut &b"again"[..], &w.dir)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // Mallory cannot fetch alice's envelope, and the answer is the same as for a missing one.
    let err = mallory
        .fetch(env, &w.dir, &mut Vec::new())
        .await
        .unwrap_err();
    let missing = mallory
        .fetch([0u8; 16], &w.dir, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.message(), missing.message());
    assert!(mallory.inbox().await.unwrap().is_empty());
    // Agents cannot list or fetch envelopes.
    let err = bot
        .conn
        .call(sealrelay::core::wire::Request::Inbox, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    let err = bot
        .conn
        .call(
            sealrelay::core::wire::Request::Fetch { envelope_id: env },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    // Alice still gets hers.
    let mut out = Vec::new();
    alice.fetch(env, &w.dir, &mut out).await.unwrap();
    assert_eq!(out, b"secret ticket");
    w.relay.shutdown().await;
}
