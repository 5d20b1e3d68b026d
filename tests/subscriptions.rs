//! Subscriptions (`Subscribe`, docs/protocol.md) against a real relay over QUIC: an agent
//! follows its grants and a user their inbox; what waits comes first, then `Live`, then each
//! new grant or envelope as it is committed. A subscriber that disconnects and comes back
//! misses nothing and gets nothing twice; a thousand subscriptions each get what is theirs,
//! once; a delivery's receipt goes back on the envelope's own stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::collections::HashSet;
use std::time::Duration;

use sealrelay::client::{
    AgentClient, FeedEvent, Followed, GrantFeed, GrantRequest, InboxFeed, UserClient,
};
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::ids::{EnvelopeId, GrantId};
use sealrelay::local::provision::{agent, user};

fn grant_req(agent: &str, resource: &str) -> GrantRequest {
    GrantRequest {
        agent: agent.into(),
        resource: resource.into(),
        purpose: "triage".into(),
        ttl_secs: 600,
        max_bytes: 1024 * 1024,
    }
}

/// The next grants the feed hands out (`None`: `Live`), within 10 s.
async fn next_grants(bot: &AgentClient<'_>, feed: &mut GrantFeed) -> Option<Vec<GrantId>> {
    let next = tokio::time::timeout(Duration::from_secs(10), bot.next_grants(feed))
        .await
        .expect("the feed said nothing within 10 s")
        .unwrap();
    match next {
        FeedEvent::Items(items) => Some(
            items
                .into_iter()
                .map(|(_, g)| g.unwrap().grant.grant_id)
                .collect(),
        ),
        FeedEvent::Live => None,
    }
}

/// Everything the feed hands out up to its `Live`.
async fn until_live(bot: &AgentClient<'_>, feed: &mut GrantFeed) -> Vec<GrantId> {
    let mut all = Vec::new();
    while let Some(ids) = next_grants(bot, feed).await {
        all.extend(ids);
    }
    all
}

fn set(ids: &[GrantId]) -> HashSet<GrantId> {
    ids.iter().copied().collect()
}

async fn next_envelopes(feed: &mut InboxFeed) -> Option<Vec<EnvelopeId>> {
    let next = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("the inbox feed said nothing within 10 s")
        .unwrap();
    match next {
        FeedEvent::Items(views) => Some(views.into_iter().map(|v| v.envelope_id).collect()),
        FeedEvent::Live => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_comes_back_misses_nothing_and_gets_nothing_twice() {
    let t = common::test_relay(
        &[
            user("alice", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
        ],
        |_| {},
    )
    .await;
    let (alice_id, bot_id) = (&t.ids[0], &t.ids[1]);
    let alice = UserClient::connect(alice_id, &t.addr).await.unwrap();
    let g1 = alice
        .grant(&grant_req("research-bot", "tickets/1"))
        .await
        .unwrap();

    // What waits comes first, then Live.
    let bot = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    let mut feed = bot.subscribe(&mut Followed::default()).await.unwrap();
    assert_eq!(until_live(&bot, &mut feed).await, vec![g1]);

    // Then each new grant as it is committed: pushed, not listed.
    let g2 = alice
        .grant(&grant_req("research-bot", "tickets/2"))
        .await
        .unwrap();
    assert_eq!(next_grants(&bot, &mut feed).await, Some(vec![g2]));

    // The agent goes away; two grants are made while it is gone.
    let mut followed = feed.into_followed();
    bot.conn.close().await;
    let g3 = alice
        .grant(&grant_req("research-bot", "tickets/3"))
        .await
        .unwrap();
    let g4 = alice
        .grant(&grant_req("research-bot", "tickets/4"))
        .await
        .unwrap();

    // Back: exactly the two it missed (g1 and g2 are still open, and not handed out again).
    let bot = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    let mut feed = bot.subscribe(&mut followed).await.unwrap();
    let caught_up = until_live(&bot, &mut feed).await;
    assert_eq!(caught_up.len(), 2, "{caught_up:?}");
    assert_eq!(set(&caught_up), set(&[g3, g4]));
    let g5 = alice
        .grant(&grant_req("research-bot", "tickets/5"))
        .await
        .unwrap();
    assert_eq!(next_grants(&bot, &mut feed).await, Some(vec![g5]));

    // A subscriber with no memory (a new process) gets everything still open, once.
    let fresh = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    let mut fresh_feed = fresh.subscribe(&mut Followed::default()).await.unwrap();
    let all = until_live(&fresh, &mut fresh_feed).await;
    assert_eq!(all.len(), 5);
    assert_eq!(set(&all), set(&[g1, g2, g3, g4, g5]));

    // The user follows their inbox; an envelope sent reaches it without a listing.
    let mut inbox = alice.subscribe(&mut Followed::default()).await.unwrap();
    assert_eq!(
        next_envelopes(&mut inbox).await,
        None,
        "an empty inbox: Live"
    );
    let open = bot
        .grants()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.grant.grant_id == g2)
        .unwrap();
    let plaintext = common::pattern(300_000, 3);
    let envelope = bot
        .send(&open, &mut plaintext.as_slice(), &t.dir)
        .await
        .unwrap();
    assert_eq!(next_envelopes(&mut inbox).await, Some(vec![envelope]));
    // The used grant leaves the listing, and a catch-up does not bring it back.
    assert!(!set(&until_live(&fresh, &mut {
        fresh.subscribe(&mut Followed::default()).await.unwrap()
    })
    .await)
    .contains(&g2));

    // Fetched with its receipt on the same stream: delivered, byte-exact, and recorded.
    let mut out = Vec::new();
    let fetched = alice.fetch(envelope, &t.dir, &mut out).await.unwrap();
    assert_eq!(fetched.status, DeliveryStatus::Delivered);
    assert!(out == plaintext);
    assert!(alice.inbox().await.unwrap().is_empty());
    let kinds: Vec<String> = t
        .relay
        .relay()
        .store()
        .events(0, 1000)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "receipt.recorded").count(),
        1,
        "{kinds:?}"
    );
    t.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscriptions_each_get_what_is_theirs_once() {
    const AGENTS: usize = 20;
    const PER_AGENT: usize = 50;
    let names: Vec<String> = (0..AGENTS).map(|i| format!("bot-{i}")).collect();
    let mut parties = vec![user("alice", 2, &["engineer"])];
    parties.extend(names.iter().map(|n| agent(n, &["tickets/*"])));
    let t = common::test_relay(&parties, |_| {}).await;
    let alice = UserClient::connect(&t.ids[0], &t.addr).await.unwrap();

    // Each agent: one connection, 50 subscriptions on it; all of them live before any grant.
    let mut bots = Vec::new();
    for id in &t.ids[1..] {
        bots.push(AgentClient::connect(id, &t.addr).await.unwrap());
    }
    let mut feeds: Vec<(usize, GrantFeed)> = Vec::new();
    for (i, bot) in bots.iter().enumerate() {
        for _ in 0..PER_AGENT {
            let mut feed = bot.subscribe(&mut Followed::default()).await.unwrap();
            assert!(until_live(bot, &mut feed).await.is_empty());
            feeds.push((i, feed));
        }
    }
    assert_eq!(feeds.len(), 1000);

    // One grant to each agent: every one of its 50 subscriptions gets it, once; no other does.
    let mut granted = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let g = alice
            .grant(&grant_req(n, &format!("tickets/{i}")))
            .await
            .unwrap();
        granted.push(g);
    }
    let mut got = 0usize;
    for (i, feed) in &mut feeds {
        assert_eq!(
            next_grants(&bots[*i], feed).await,
            Some(vec![granted[*i]]),
            "subscription of bot-{i}"
        );
        got += 1;
    }
    assert_eq!(got, 1000);
    // A second grant to bot-0 only: bot-0's subscriptions get it, and nothing else comes to
    // the others (the next thing bot-1's feeds get is bot-1's own next grant).
    let g0 = alice
        .grant(&grant_req("bot-0", "tickets/second"))
        .await
        .unwrap();
    let g1 = alice
        .grant(&grant_req("bot-1", "tickets/second"))
        .await
        .unwrap();
    for (i, feed) in feeds.iter_mut().filter(|(i, _)| *i < 2) {
        let want = if *i == 0 { g0 } else { g1 };
        assert_eq!(next_grants(&bots[*i], feed).await, Some(vec![want]));
    }
    t.relay.shutdown().await;
}

/// A client of the protocol before piece lists (version 8) is told in one line which version
/// the relay speaks, and nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_the_previous_protocol_version_is_told_which_one_the_relay_speaks() {
    use harness::pki::{Outcome, RawClient};
    use sealrelay::core::wire::{self, ErrorCode, Page, Request, RequestFrame, Response};
    let t = common::test_relay(&[user("alice", 2, &["engineer"])], |_| {}).await;
    let alice = &t.ids[0];
    let client = RawClient::new(Some((alice, alice.cert.clone().unwrap())), wire::ALPN);
    let frame = |version| {
        wire::encode_frame(&RequestFrame {
            version,
            request: Request::Inbox {
                page: Page::first(),
            },
        })
        .unwrap()
    };
    let old = client
        .send_bytes(t.relay.local_addr, &frame(wire::PROTOCOL_VERSION - 1), true)
        .await;
    match old {
        Outcome::Answered(Response::Err { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert_eq!(
                message,
                format!(
                    "protocol version {} is not supported (this relay speaks {})",
                    wire::PROTOCOL_VERSION - 1,
                    wire::PROTOCOL_VERSION
                )
            );
        }
        other => panic!("an old client got {other:?}"),
    }
    let current = client
        .send_bytes(t.relay.local_addr, &frame(wire::PROTOCOL_VERSION), true)
        .await;
    assert!(
        matches!(current, Outcome::Answered(Response::Ok(_))),
        "{current:?}"
    );
    assert_eq!(wire::PROTOCOL_VERSION, 9);
    t.relay.shutdown().await;
}

/// A subscription holds nothing for whoever may no longer follow it: a quarantined agent's and
/// a revoked one's end (their connections are closed), and a grant addressed to another agent
/// never reaches this one's feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_or_revoked_subscriber_gets_nothing_more_and_no_one_gets_anothers() {
    let t = common::test_relay(
        &[
            user("alice", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
            agent("other-bot", &["tickets/*"]),
        ],
        |_| {},
    )
    .await;
    let (alice_id, bot_id, other_id) = (&t.ids[0], &t.ids[1], &t.ids[2]);
    let alice = UserClient::connect(alice_id, &t.addr).await.unwrap();
    let bot = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    let other = AgentClient::connect(other_id, &t.addr).await.unwrap();
    let mut feed = bot.subscribe(&mut Followed::default()).await.unwrap();
    let mut other_feed = other.subscribe(&mut Followed::default()).await.unwrap();
    assert!(until_live(&bot, &mut feed).await.is_empty());
    assert!(until_live(&other, &mut other_feed).await.is_empty());

    // research-bot's grant reaches research-bot's feed only.
    let g = alice
        .grant(&grant_req("research-bot", "tickets/1"))
        .await
        .unwrap();
    assert_eq!(next_grants(&bot, &mut feed).await, Some(vec![g]));
    let quiet = tokio::time::timeout(
        Duration::from_millis(500),
        other.next_grants(&mut other_feed),
    )
    .await;
    assert!(quiet.is_err(), "another agent's grant reached other-bot");

    // Quarantined: its subscription ends, and nothing more comes.
    let admin = sealrelay::client::AdminClient::connect(&t.admin, &t.addr)
        .await
        .unwrap();
    admin
        .quarantine("research-bot", "suspicious")
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), bot.next_grants(&mut feed))
        .await
        .expect("the quarantined agent's subscription did not end");
    assert!(
        ended.is_err(),
        "a quarantined agent still follows its grants"
    );
    // Subscribing again is refused.
    let again: sealrelay::error::Result<()> = async {
        let c = AgentClient::connect(bot_id, &t.addr).await?;
        let mut f = c.subscribe(&mut Followed::default()).await?;
        c.next_grants(&mut f).await.map(|_| ())
    }
    .await;
    let err = again.expect_err("a quarantined agent subscribed again");
    assert!(err.message().contains("quarantined"), "{err}");

    // Revoked: the same.
    harness::revoke_and_push(
        &t.dir.join("keys"),
        &t.admin,
        &t.addr,
        other.identity().id.as_ref().unwrap(),
        "compromised",
        sealrelay::clock::Clock::now(t.clock.as_ref()),
    )
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(10), other.next_grants(&mut other_feed))
        .await
        .expect("the revoked agent's subscription did not end");
    assert!(ended.is_err(), "a revoked agent still follows its grants");
    t.relay.shutdown().await;
}

/// Threat 33 where `Deliver` meets the receipt: a client that takes the envelope and never
/// sends its receipt holds the stream only for the body's own time, then the relay resets it;
/// nothing is recorded (the envelope still waits), and a proper fetch afterwards delivers it
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_receipt_never_comes_is_cut_off_and_records_nothing() {
    use harness::pki::RawClient;
    use sealrelay::core::wire;
    let t = common::test_relay(
        &[
            user("alice", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
        ],
        |config| config.body_grace_secs = 1,
    )
    .await;
    let (alice_id, bot_id) = (&t.ids[0], &t.ids[1]);
    let alice = UserClient::connect(alice_id, &t.addr).await.unwrap();
    let bot = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    alice
        .grant(&grant_req("research-bot", "tickets/1"))
        .await
        .unwrap();
    let open = bot.grants().await.unwrap().pop().unwrap();
    let envelope = bot
        .send(&open, &mut &b"held back"[..], &t.dir)
        .await
        .unwrap();

    // The raw client takes the whole envelope, then sends nothing and keeps its side open.
    let raw = RawClient::new(Some((alice_id, alice_id.cert.clone().unwrap())), wire::ALPN);
    let conn = raw.connect(t.relay.local_addr).await;
    let (send, mut recv) = raw_deliver(&conn, envelope).await;
    // The relay gives up on the receipt and resets the stream (within the grace and the
    // body's time at the minimum rate), instead of holding it.
    let mut more = [0u8; 1];
    let cut = tokio::time::timeout(Duration::from_secs(20), recv.read(&mut more))
        .await
        .expect("the relay held a delivery's stream open without a receipt");
    assert!(cut.is_err(), "the stream ended without a reset: {cut:?}");
    drop(send);
    conn.close(0u32.into(), b"done");

    // Nothing was recorded: the envelope still waits, and a proper fetch delivers it, once.
    assert_eq!(alice.inbox().await.unwrap().len(), 1);
    let mut out = Vec::new();
    let fetched = alice.fetch(envelope, &t.dir, &mut out).await.unwrap();
    assert_eq!(fetched.status, DeliveryStatus::Delivered);
    assert_eq!(out, b"held back");
    let receipts = t
        .relay
        .relay()
        .store()
        .events(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == "receipt.recorded")
        .count();
    assert_eq!(receipts, 1);
    t.relay.shutdown().await;
}

/// What a quota lets one party do to another: one agent's subscriptions to its grants are capped
/// at 64 open at once, over all its connections; the 65th is refused in one line
/// (`QuotaExceeded`), and another agent still subscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_holds_at_most_64_subscriptions_to_one_feed_and_others_are_not_affected() {
    let t = common::test_relay(
        &[
            user("alice", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
            agent("other-bot", &["tickets/*"]),
        ],
        |_| {},
    )
    .await;
    // Two connections (64 streams each at most): 40 and 24 subscriptions.
    let a = AgentClient::connect(&t.ids[1], &t.addr).await.unwrap();
    let b = AgentClient::connect(&t.ids[1], &t.addr).await.unwrap();
    let mut held = Vec::new();
    for (client, n) in [(&a, 40), (&b, 24)] {
        for _ in 0..n {
            let mut feed = client.subscribe(&mut Followed::default()).await.unwrap();
            // Live: the relay holds it (and counts it).
            assert_eq!(next_grants(client, &mut feed).await, None);
            held.push(feed);
        }
    }
    let mut over = b.subscribe(&mut Followed::default()).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), b.next_grants(&mut over))
        .await
        .expect("the 65th subscription was neither refused nor served")
        .expect_err("a 65th subscription was served");
    assert!(
        err.message().contains("at most 64 subscriptions") && !err.message().contains('\n'),
        "{err}"
    );
    // Another agent is not affected.
    let other = AgentClient::connect(&t.ids[2], &t.addr).await.unwrap();
    let mut feed = other.subscribe(&mut Followed::default()).await.unwrap();
    assert_eq!(next_grants(&other, &mut feed).await, None);
    // The 64 still get what is pushed.
    let alice = UserClient::connect(&t.ids[0], &t.addr).await.unwrap();
    let gid = alice
        .grant(&grant_req("research-bot", "tickets/1"))
        .await
        .unwrap();
    let feed = held.last_mut().unwrap();
    assert_eq!(next_grants(&b, feed).await, Some(vec![gid]));
    t.relay.shutdown().await;
}

/// Bytes after a `Deliver`'s body that are not one well-formed receipt frame are refused in
/// one line (`BadRequest`), and nothing is recorded: the envelope still waits, and a proper
/// fetch delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_receipt_frame_on_a_delivery_records_nothing() {
    use harness::pki::RawClient;
    use sealrelay::core::wire::{self, ErrorCode, Request, RequestFrame, Response};
    let t = common::test_relay(
        &[
            user("alice", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
        ],
        |_| {},
    )
    .await;
    let (alice_id, bot_id) = (&t.ids[0], &t.ids[1]);
    let alice = UserClient::connect(alice_id, &t.addr).await.unwrap();
    let bot = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    alice
        .grant(&grant_req("research-bot", "tickets/1"))
        .await
        .unwrap();
    let open = bot.grants().await.unwrap().pop().unwrap();
    let envelope = bot.send(&open, &mut &b"kept"[..], &t.dir).await.unwrap();

    let raw = RawClient::new(Some((alice_id, alice_id.cert.clone().unwrap())), wire::ALPN);
    let conn = raw.connect(t.relay.local_addr).await;
    // A frame of the wrong type, a truncated one, and garbage with a huge length prefix.
    let wrong = wire::encode_frame(&RequestFrame {
        version: wire::PROTOCOL_VERSION,
        request: Request::Inbox {
            page: wire::Page::first(),
        },
    })
    .unwrap();
    let truncated = wrong[..wrong.len() - 1].to_vec();
    let huge = vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    // Helper-found: a whole length prefix and no body was taken for "no receipt" (no answer).
    let prefix_only = vec![0, 0, 0, 16];
    for (what, bytes) in [
        ("wrong type", wrong),
        ("truncated", truncated),
        ("huge", huge),
        ("a prefix only", prefix_only),
    ] {
        let (mut send, mut recv) = raw_deliver(&conn, envelope).await;
        send.write_all(&bytes).await.unwrap();
        send.finish().unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(64 * 1024))
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer"))
            .unwrap();
        let head = &answer[4..];
        match wire::decode_frame::<Response>(head).unwrap() {
            Response::Err { code, message } => {
                assert_eq!(code, ErrorCode::BadRequest, "{what}: {message}");
                assert!(!message.contains('\n'), "{what}: {message}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    conn.close(0u32.into(), b"done");
    // Nothing recorded: it still waits, and a proper fetch delivers it, once.
    assert_eq!(alice.inbox().await.unwrap().len(), 1);
    let mut out = Vec::new();
    let fetched = alice.fetch(envelope, &t.dir, &mut out).await.unwrap();
    assert_eq!(fetched.status, DeliveryStatus::Delivered);
    assert_eq!(out, b"kept");
    t.relay.shutdown().await;
}

/// THREATS.md 26: a receipt on a `Deliver` stream is for the envelope sent on it. Helper-found:
/// a receipt for another of the user's envelopes was recorded on it (that envelope deleted as
/// delivered, while the one sent on the stream still waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_for_another_envelope_on_a_delivery_is_refused_and_records_nothing() {
    use harness::pki::RawClient;
    use sealrelay::core::envelope::submission::Submission;
    use sealrelay::core::grant::Receipt;
    use sealrelay::core::wire::{self, ErrorCode, ReceiptFrame, Response, WireSigned};
    let t = common::test_relay(
        &[
            user("alice", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
        ],
        |_| {},
    )
    .await;
    let (alice_id, bot_id) = (&t.ids[0], &t.ids[1]);
    let alice = UserClient::connect(alice_id, &t.addr).await.unwrap();
    let bot = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    let mut sent = Vec::new();
    for (resource, body) in [("tickets/1", &b"one"[..]), ("tickets/2", &b"two"[..])] {
        alice
            .grant(&grant_req("research-bot", resource))
            .await
            .unwrap();
        let open = bot.grants().await.unwrap().pop().unwrap();
        sent.push(bot.send(&open, &mut &body[..], &t.dir).await.unwrap());
    }
    let (a, b) = (sent[0], sent[1]);
    // A well-formed receipt, signed by alice, for b.
    let views = alice.inbox().await.unwrap();
    let vb = views.iter().find(|v| v.envelope_id == b).unwrap();
    let sb = Submission::decode(&vb.statement.statement).unwrap();
    let r = Receipt {
        envelope_id: b,
        grant_id: sb.grant_id,
        user: alice_id.id.clone().unwrap(),
        agent: bot_id.id.clone().unwrap(),
        ciphertext_root: sb.ciphertext_root,
        status: DeliveryStatus::Delivered,
        time: sealrelay::clock::now(),
    }
    .sign(&alice_id.signing_key);
    // Sent on a's delivery.
    let raw = RawClient::new(Some((alice_id, alice_id.cert.clone().unwrap())), wire::ALPN);
    let conn = raw.connect(t.relay.local_addr).await;
    let (mut send, mut recv) = raw_deliver(&conn, a).await;
    let frame = wire::encode_frame(&ReceiptFrame {
        receipt: WireSigned::from_signed(&r),
        old_size: None,
    })
    .unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(64 * 1024))
        .await
        .expect("no answer")
        .unwrap();
    match wire::decode_frame::<Response>(&answer[4..]).unwrap() {
        Response::Err { code, message } => {
            assert_eq!(code, ErrorCode::BadRequest, "{message}");
            assert!(message.contains("another envelope"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
        other => panic!("recorded on another envelope's stream: {other:?}"),
    }
    conn.close(0u32.into(), b"done");
    // Nothing recorded: both wait, and each is delivered by a proper fetch.
    assert_eq!(alice.inbox().await.unwrap().len(), 2);
    for (id, body) in [(a, &b"one"[..]), (b, &b"two"[..])] {
        let mut out = Vec::new();
        let fetched = alice.fetch(id, &t.dir, &mut out).await.unwrap();
        assert_eq!(fetched.status, DeliveryStatus::Delivered);
        assert_eq!(out, body);
    }
    t.relay.shutdown().await;
}

/// A raw `Deliver` of `envelope`, its whole body read (the piece list and the ciphertext); the
/// stream, this side still open for a receipt.
async fn raw_deliver(
    conn: &quinn::Connection,
    envelope: EnvelopeId,
) -> (quinn::SendStream, quinn::RecvStream) {
    use sealrelay::core::wire::{self, Reply, Request, RequestFrame, Response};
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let frame = wire::encode_frame(&RequestFrame {
        version: wire::PROTOCOL_VERSION,
        request: Request::Deliver {
            envelope_id: envelope,
            from_piece: 0,
        },
    })
    .unwrap();
    send.write_all(&frame).await.unwrap();
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.unwrap();
    let mut head = vec![0u8; wire::frame_len(prefix).unwrap()];
    recv.read_exact(&mut head).await.unwrap();
    let Response::Ok(Reply::Envelope { view }) = wire::decode_frame(&head).unwrap() else {
        panic!("not an envelope")
    };
    let list = sealrelay::core::envelope::pieces::leaves_bytes(view.length).unwrap();
    let mut body = vec![0u8; list + usize::try_from(view.length).unwrap()];
    recv.read_exact(&mut body).await.unwrap();
    (send, recv)
}
