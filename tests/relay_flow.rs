//! The relay end to end: a real QUIC + mutual TLS server on 127.0.0.1:0, driven through the
//! client library: grant → send → inbox → fetch → receipt, byte-exact, and the refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::path::Path;

use sealrelay::client::{AgentClient, GrantRequest, UserClient};
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::core::identity::Identity;
use sealrelay::local::provision::{agent, user};
use sealrelay::ErrorKind;

struct World {
    /// The shared in-process test relay (tests/common).
    t: common::TestRelay,
    dir: std::path::PathBuf,
    addr: String,
    alice: Identity,
    mallory: Identity,
    bot: Identity,
    other_bot: Identity,
}

impl std::ops::Deref for World {
    type Target = common::TestRelay;
    fn deref(&self) -> &common::TestRelay {
        &self.t
    }
}

async fn world() -> World {
    // The monitor's thresholds are raised here: these tests send bad bodies on purpose (the
    // monitor itself is tested in tests/policy_monitor.rs).
    let mut t = common::test_relay(
        &[
            user("alice", 2, &["engineer"]),
            user("mallory", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
            agent("other-bot", &["tickets/*"]),
        ],
        |config| {
            config.monitor.max_invalid_envelopes = 100;
            config.monitor.max_denials = 100;
        },
    )
    .await;
    let other_bot = t.ids.pop().unwrap();
    let bot = t.ids.pop().unwrap();
    let mallory = t.ids.pop().unwrap();
    let alice = t.ids.pop().unwrap();
    World {
        dir: t.dir.clone(),
        addr: t.addr.clone(),
        t,
        alice,
        mallory,
        bot,
        other_bot,
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
    w.t.relay.shutdown().await;
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
        .fetch(
            sealrelay::ids::EnvelopeId([0u8; 16]),
            &w.dir,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.message(), missing.message());
    assert!(mallory.inbox().await.unwrap().is_empty());
    // Agents cannot list or fetch envelopes.
    let err = bot
        .conn
        .call(
            sealrelay::core::wire::Request::Inbox {
                page: sealrelay::core::wire::Page::first(),
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    let err = bot
        .conn
        .call(
            sealrelay::core::wire::Request::Fetch {
                envelope_id: env,
                from_piece: 0,
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    // Alice still gets hers.
    let mut out = Vec::new();
    alice.fetch(env, &w.dir, &mut out).await.unwrap();
    assert_eq!(out, b"secret ticket");
    w.t.relay.shutdown().await;
}

/// Nothing was stored: no envelope records and no blobs.
fn nothing_stored(w: &World) {
    let store = w.relay.relay().store();
    assert!(
        store.envelope_ids().unwrap().is_empty(),
        "an envelope was stored"
    );
    assert_eq!(w.t.blobs_held(), 0, "blobs were left behind");
}

use common::{seal_for, submission as statement};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_expired_grants_and_races() {
    let w = world().await;
    let alice = UserClient::connect(&w.alice, &w.addr).await.unwrap();
    let bot = AgentClient::connect(&w.bot, &w.addr).await.unwrap();

    // A body over the grant's max bytes (sent raw: the client would refuse it itself).
    let mut small = grant_req("tickets/2");
    small.max_bytes = 1000;
    let g = alice.grant(&small).await.unwrap();
    let body = seal_for(&w.alice, &vec![7u8; 5000]);
    let err = bot
        .submit_raw(
            g,
            &statement(&w.bot, &w.alice, g, &body),
            body.len() as u64,
            &mut body.as_slice(),
        )
        .await
        .unwrap_err();
    assert!(err.message().contains("larger than the grant"), "{err}");
    nothing_stored(&w);

    // A body that is not a valid single-recipient age file: plaintext behind a forged header,
    // a file sealed to two recipients, and plain garbage.
    let g = alice.grant(&grant_req("tickets/3")).await.unwrap();
    // A header of the right shape (one hybrid stanza) over plaintext.
    let mut forged = sealrelay::core::envelope::header::Header {
        stanzas: vec![sealrelay::core::envelope::header::Stanza {
            tag: "mlkem768x25519".into(),
            args: vec![base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                [7u8; 1120],
            )],
            body: vec![9u8; 32],
        }],
        mac: [3u8; 32],
    }
    .to_bytes();
    forged.extend_from_slice(
        // Over the inline threshold, so that it is refused while streaming into a blob file.
        &b"CANARY the quarterly numbers, in plain text, smuggled as ciphertext.\n".repeat(1200),
    );
    let recipients = [
        w.alice.age_identity.as_ref().unwrap().to_public(),
        w.mallory.age_identity.as_ref().unwrap().to_public(),
    ];
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .unwrap();
    let mut two = Vec::new();
    let mut wr = enc.wrap_output(&mut two).unwrap();
    std::io::Write::write_all(&mut wr, b"hello").unwrap();
    wr.finish().unwrap();
    for (body, why) in [
        (forged, "not ciphertext"),
        // Two hybrid stanzas do not fit the relay's header cap.
        (two, "longer than"),
        (b"just some text".to_vec(), "not an age v1 file"),
    ] {
        let err = bot
            .submit_raw(
                g,
                &statement(&w.bot, &w.alice, g, &body),
                body.len() as u64,
                &mut body.as_slice(),
            )
            .await
            .unwrap_err();
        assert!(err.message().contains(why), "{err}");
        assert_eq!(err.kind(), ErrorKind::BadInput);
    }
    nothing_stored(&w);
    // The grant is still open after all those refusals.
    assert_eq!(bot.grants().await.unwrap().len(), 2);

    // A statement that does not match the body (a body big enough for a blob file, which must
    // not be left behind).
    let good = seal_for(&w.alice, &vec![1u8; 200_000]);
    let other = seal_for(&w.alice, b"other");
    let err = bot
        .submit_raw(
            g,
            &statement(&w.bot, &w.alice, g, &other),
            good.len() as u64,
            &mut good.as_slice(),
        )
        .await;
    assert!(err.is_err());
    nothing_stored(&w);
    // A blob-sized body shorter, then longer, than the length its statement declares.
    let mut claimed = good.clone();
    claimed.extend_from_slice(&[0u8; 1000]);
    let short = bot
        .submit_raw(
            g,
            &statement(&w.bot, &w.alice, g, &claimed),
            claimed.len() as u64,
            &mut good.as_slice(),
        )
        .await
        .unwrap_err();
    assert!(short.message().contains("ended before"), "{short}");
    nothing_stored(&w);
    let head = &good[..good.len() - 1000];
    let long = bot
        .submit_raw(
            g,
            &statement(&w.bot, &w.alice, g, head),
            head.len() as u64,
            &mut good.as_slice(),
        )
        .await
        .unwrap_err();
    assert!(long.message().contains("longer than"), "{long}");
    nothing_stored(&w);

    // 8 racing sends on one grant: exactly one wins.
    let bodies: Vec<Vec<u8>> = (0..8)
        .map(|i| seal_for(&w.alice, format!("race {i}").as_bytes()))
        .collect();
    let st: Vec<_> = bodies
        .iter()
        .map(|b| statement(&w.bot, &w.alice, g, b))
        .collect();
    let send = |i: usize| {
        let bot = &bot;
        let b = bodies[i].clone();
        let s = st[i].clone();
        async move {
            bot.submit_raw(g, &s, b.len() as u64, &mut b.as_slice())
                .await
        }
    };
    let r = tokio::join!(
        send(0),
        send(1),
        send(2),
        send(3),
        send(4),
        send(5),
        send(6),
        send(7)
    );
    let results = [r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7];
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::Conflict, "{r:?}");
    }
    assert_eq!(w.relay.relay().store().envelope_ids().unwrap().len(), 1);
    // Small envelopes are stored inline: no blob file for the winner, none left by the losers.
    let winner = w.relay.relay().store().envelope_ids().unwrap()[0];
    assert!(w
        .relay
        .relay()
        .store()
        .inline_body(&winner)
        .unwrap()
        .is_some());
    assert_eq!(w.t.blobs_held(), 0, "losing racers left blobs");

    // An expired grant.
    let mut short = grant_req("tickets/5");
    short.ttl_secs = 1;
    let g = alice.grant(&short).await.unwrap();
    w.clock.advance(2);
    assert!(
        bot.grants()
            .await
            .unwrap()
            .iter()
            .all(|x| x.grant.grant_id != g),
        "an expired grant is listed"
    );
    let body = seal_for(&w.alice, b"late");
    let err = bot
        .submit_raw(
            g,
            &statement(&w.bot, &w.alice, g, &body),
            body.len() as u64,
            &mut body.as_slice(),
        )
        .await
        .unwrap_err();
    assert!(err.message().contains("expired"), "{err}");
    assert_eq!(w.relay.relay().store().envelope_ids().unwrap().len(), 1);
    w.t.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_on_an_open_connection() {
    let w = world().await;
    let alice = UserClient::connect(&w.alice, &w.addr).await.unwrap();
    let bot = AgentClient::connect(&w.bot, &w.addr).await.unwrap();
    alice.grant(&grant_req("tickets/9")).await.unwrap();
    assert_eq!(bot.grants().await.unwrap().len(), 1);
    // The admin revokes research-bot and pushes the revocation.
    harness::revoke_and_push(
        &w.dir.join("keys"),
        &w.admin,
        &w.addr,
        w.bot.id.as_ref().unwrap(),
        "compromised",
        sealrelay::clock::now(),
    )
    .await;
    // Same connection, next request: refused (the relay closed the connection as revoked).
    let err = bot.grants().await.expect_err("a revoked agent was served");
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.message().contains("revoked"), "{err}");
    // A new connection: refused by the relay, request by request.
    let again = AgentClient::connect(&w.bot, &w.addr).await.unwrap();
    let err = again
        .grants()
        .await
        .expect_err("a revoked agent was served");
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.message().contains("revoked"), "{err}");
    // And alice can no longer grant to it.
    let err = alice.grant(&grant_req("tickets/10")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.message().contains("not enrolled"), "{err}");
    // Denials are events.
    let events = w.relay.relay().store().events(0, 1000).unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| e.kind == "deny" && e.detail.contains("revoked")),
        "{events:?}"
    );
    w.t.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_or_from_another_ca_are_refused() {
    let w = world().await;
    // A certificate for alice's own key from another CA, presented by a client that trusts any
    // relay, so that the relay's own check is what refuses it (a client holding the other
    // trust root would refuse our relay first and hide the relay's check).
    let cert = harness::pki::mint(
        &w.dir.join("keys"),
        &w.alice,
        harness::pki::Bad::ForeignCa,
        sealrelay::clock::now(),
    );
    let o = harness::pki::RawClient::new(Some((&w.alice, cert)), sealrelay::core::wire::ALPN)
        .request(
            w.relay.local_addr,
            sealrelay::core::wire::Request::Inbox {
                page: sealrelay::core::wire::Page::first(),
            },
        )
        .await;
    assert!(
        matches!(o, harness::pki::Outcome::TlsAlert(_)),
        "a foreign CA's certificate: {o:?}"
    );

    // No client certificate at all.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            w.alice.ca_cert.clone().unwrap(),
        ))
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![sealrelay::core::wire::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    let served = async {
        let conn = endpoint
            .connect(w.relay.local_addr, "localhost")
            .unwrap()
            .await
            .ok()?;
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        let frame = sealrelay::core::wire::encode_frame(&sealrelay::core::wire::RequestFrame {
            version: 1,
            request: sealrelay::core::wire::Request::Inbox {
                page: sealrelay::core::wire::Page::first(),
            },
        })
        .unwrap();
        send.write_all(&frame).await.ok()?;
        let _ = send.finish();
        let mut prefix = [0u8; 4];
        recv.read_exact(&mut prefix).await.ok()?;
        Some(())
    }
    .await;
    assert!(
        served.is_none(),
        "a client without a certificate got an answer"
    );
    nothing_stored(&w);
    w.t.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_envelopes_expire_and_are_deleted() {
    let w = common::test_relay(
        &[user("alice", 2, &[]), agent("research-bot", &["tickets/*"])],
        |config| {
            config.envelope_ttl_secs = 60;
            // The test sweeps by hand; the background sweep would race it.
            config.sweep_interval_secs = 3600;
        },
    )
    .await;
    let (ids, addr, tmp, relay) = (&w.ids, &w.addr, &w.tmp, &w.relay);
    let alice = UserClient::connect(&ids[0], addr).await.unwrap();
    let bot = AgentClient::connect(&ids[1], addr).await.unwrap();
    alice.grant(&grant_req("tickets/1")).await.unwrap();
    let big = common::pattern(100_000, 4); // over the inline limit: a blob file
    let g = bot.grants().await.unwrap();
    bot.send(&g[0], &mut big.as_slice(), tmp.path())
        .await
        .unwrap();
    alice.grant(&grant_req("tickets/2")).await.unwrap();
    let g = bot.grants().await.unwrap();
    bot.send(&g[0], &mut &b"small"[..], tmp.path())
        .await
        .unwrap();
    assert_eq!(alice.inbox().await.unwrap().len(), 2);
    // The relay's clock moves past the time to live: listed no more, then swept.
    w.clock.advance(59);
    assert_eq!(relay.sweep_expired().await, 0);
    assert_eq!(alice.inbox().await.unwrap().len(), 2);
    w.clock.advance(1);
    assert!(alice.inbox().await.unwrap().is_empty());
    assert_eq!(relay.sweep_expired().await, 2);
    assert!(
        relay.relay().store().envelope_ids().unwrap().is_empty(),
        "expired envelopes remain"
    );
    assert_eq!(w.blobs_held(), 0, "an expired blob remains");
    let events = relay.relay().store().events(0, 1000).unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|(_, e)| e.kind == "envelope.expired")
            .count(),
        2
    );
    w.relay.shutdown().await;
}

/// PostgreSQL review: two admins' pushes of two different entries for one serial, through two
/// nodes of one database at once. The node that committed second stored nothing (the other
/// entry was there) but told its admin the push took effect. The store refuses such a push now,
/// on either store; the same entry again still takes effect (CI runs this on PostgreSQL too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_racing_another_nodes_entry_for_the_same_serial_is_refused() {
    use sealrelay::core::store::{Event, StoredSigned, WriteOp};
    let t = common::test_relay(&[user("alice", 2, &["engineer"])], |_| {}).await;
    let alice = t.ids[0].id.clone().unwrap();
    let root = sealrelay::local::trust_root::TrustRoot::load(&t.dir.join("keys")).unwrap();
    let (directory, _) =
        sealrelay::local::dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let current = directory.latest(&alice).unwrap().clone();
    // Serial 2, as two admins' folders would each issue it: other TLS keys, both signed.
    let issue = |tls: u8| {
        let mut e = current.clone();
        e.serial = 2;
        e.tls_spki_sha256 = [tls; 32];
        e.sign(&root.authority).unwrap()
    };
    let (a, b) = (issue(1), issue(2));
    // Another node stored `a` a moment ago: straight into the store, which this node's memory
    // does not know of yet.
    let store = t.relay.relay().store();
    let leaves = || store.directory_log(0, 10_000).unwrap().len();
    let before = leaves();
    let stored = |s: &sealrelay::core::sign::Signed| StoredSigned {
        statement: s.statement.clone(),
        signature: s.signature.to_vec(),
    };
    let put_both = |e: Vec<(String, u64, StoredSigned)>, r: Vec<(String, u64, StoredSigned)>| {
        WriteOp::PutDirectory {
            entries: e,
            revocations: r,
            event: Event {
                time: sealrelay::clock::now(),
                kind: "directory.push".into(),
                actor: t.admin.id.clone().unwrap().to_string(),
                subject: String::new(),
                decision: "allow".into(),
                detail: String::new(),
                digest: Vec::new(),
            },
            log_all: false,
            conflicts_refused: true,
        }
    };
    let put = |s: &sealrelay::core::sign::Signed| {
        put_both(vec![(alice.to_string(), 2, stored(s))], Vec::new())
    };
    let results = store.apply(&[put(&a)]).unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(leaves(), before + 1);
    // This node's admin pushes `b`: refused in one line, nothing stored.
    let admin = sealrelay::client::AdminClient::connect(&t.admin, &t.addr)
        .await
        .unwrap();
    let e = admin.push(&[b], &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(
        e.message()
            .contains(&format!("another entry for {alice} serial 2")),
        "{e}"
    );
    assert_eq!(leaves(), before + 1);
    // The same entry again takes effect (nothing new is logged).
    let results = store.apply(&[put(&a)]).unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(leaves(), before + 1);
    // Two admins' revocations of one serial revoke the same keys: the second is not refused
    // (an admin's folder holding it can still push the rest).
    let revoke = |reason: &str| {
        let r = sealrelay::core::directory::Revocation {
            id: alice.clone(),
            serial: 2,
            revoked_at: sealrelay::clock::now(),
            reason: reason.into(),
        }
        .sign(&root.authority)
        .unwrap();
        vec![(alice.to_string(), 2, stored(&r))]
    };
    for reason in ["lost", "stolen"] {
        let results = store
            .apply(&[put_both(Vec::new(), revoke(reason))])
            .unwrap();
        assert!(results[0].is_ok(), "{reason}: {results:?}");
    }
    t.relay.shutdown().await;
}

/// Review-found: two fetches of one identity at once (two envelopes opened in two tabs of the
/// web client, or `fetch` beside it) each read the saved checkpoint's size before filing; the
/// first to finish saved a newer checkpoint, and the second was refused after the relay had
/// recorded its receipt ("changed while this ran"): its receipt file was lost for good (the
/// relay no longer serves a delivered envelope). The receipt's proof is asked for again from
/// the newer checkpoint now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_at_once_on_one_identity_each_complete_their_receipt() {
    use sealrelay::local::checkpoint_state::CheckpointState;
    let w = world().await;
    let bot = AgentClient::connect(&w.bot, &w.addr).await.unwrap();
    let state = w.dir.join("alice.id");
    let log = w.alice.log_key.clone().unwrap();
    let mut clients = Vec::new();
    let mut envelopes = Vec::new();
    for i in 0..6 {
        let alice = UserClient::connect(&w.alice, &w.addr)
            .await
            .unwrap()
            .remember_checkpoints(CheckpointState::for_identity(&state, log.clone()));
        alice
            .grant(&grant_req(&format!("tickets/{i}")))
            .await
            .unwrap();
        let grant = bot.grants().await.unwrap().pop().unwrap();
        let env = bot
            .send(&grant, &mut &b"one of several"[..], scratch(&w.dir))
            .await
            .unwrap();
        clients.push(alice);
        envelopes.push(env);
    }
    let fetch = |i: usize| {
        let (alice, env) = (&clients[i], envelopes[i]);
        let dir = &w.dir;
        async move {
            let mut out = Vec::new();
            alice.fetch(env, dir, &mut out).await.map(|f| (f, out))
        }
    };
    let all = tokio::join!(fetch(0), fetch(1), fetch(2), fetch(3), fetch(4), fetch(5));
    for done in [all.0, all.1, all.2, all.3, all.4, all.5] {
        let (fetched, out) = done.expect("every fetch completes its receipt");
        assert_eq!(fetched.status, DeliveryStatus::Delivered);
        assert_eq!(out, b"one of several");
    }
    w.t.relay.shutdown().await;
}
