//! The adversarial suite over the network: bad certificates presented by a client that trusts
//! any relay (so that the relay's own checks are what is tested), 0-RTT, and a lossy,
//! duplicating, reordering network. Threat numbers are those of `../shared/THREATS.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::chaos::{ChaosProxy, Faults};
use harness::oracles::{canary, canary_hits, files_under, Auditor, Ledger};
use harness::pki::{mint, Bad, Outcome, RawClient};
use sealrelay::client::{AgentClient, Connection, UserClient};
use sealrelay::clock::Clock;
use sealrelay::core::grant::{DeliveryStatus, Grant};
use sealrelay::core::sign::StatementType;
use sealrelay::core::wire::{ErrorCode, Page, Reply, Request, Response, ALPN};
use sealrelay::local::provision::{agent, user};

// TLS alerts (RFC 8446 §6.2) as QUIC carries them.
const UNKNOWN_CA: u8 = 48;
const DECRYPT_ERROR: u8 = 51;
const CERTIFICATE_EXPIRED: u8 = 45;
const UNSUPPORTED_CERTIFICATE: u8 = 43;
const CERTIFICATE_REQUIRED: u8 = 116;

fn inbox() -> Request {
    Request::Inbox {
        page: Page::first(),
    }
}

fn served(o: &Outcome) -> bool {
    matches!(o, Outcome::Answered(Response::Ok(Reply::Inbox { .. })))
}

/// Threats 15, 16, 17: the relay itself refuses every bad client certificate in the TLS
/// handshake (the client here trusts any relay, so no client-side check hides the relay's);
/// the same client with a good certificate is served, so each refusal is the certificate's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_15_16_17_bad_client_certificates_are_refused_by_the_relay() {
    let t = common::test_relay(&[user("alice", 2, &[])], |_| {}).await;
    let alice = &t.ids[0];
    let keys = t.dir.join("keys");
    let now = t.clock.now();
    let addr = t.relay.local_addr;
    let ask = |bad: Bad| {
        let cert = mint(&keys, alice, bad, now);
        async move {
            RawClient::new(Some((alice, cert)), ALPN)
                .request(addr, inbox())
                .await
        }
    };

    let good = ask(Bad::Good).await;
    assert!(served(&good), "the control was not served: {good:?}");

    // threat 15: none, foreign CA, self-signed.
    let none = RawClient::new(None, ALPN).request(addr, inbox()).await;
    assert!(
        matches!(none, Outcome::TlsAlert(CERTIFICATE_REQUIRED)),
        "no certificate: {none:?}"
    );
    // A foreign CA with our CA's very name: found by name, its signature fails.
    let o = ask(Bad::ForeignCa).await;
    assert!(
        matches!(o, Outcome::TlsAlert(DECRYPT_ERROR)),
        "foreign CA: {o:?}"
    );
    let o = ask(Bad::SelfSigned).await;
    assert!(
        matches!(o, Outcome::TlsAlert(UNKNOWN_CA)),
        "self-signed: {o:?}"
    );
    // threat 17: a certificate for servers only; names the directory does not hold.
    let o = ask(Bad::WrongEku).await;
    assert!(
        matches!(o, Outcome::TlsAlert(UNSUPPORTED_CERTIFICATE)),
        "wrong EKU: {o:?}"
    );
    // No SPIFFE ID: the relay closes the connection as having no identity.
    let o = ask(Bad::NoSpiffe).await;
    let no_identity = u64::from(sealrelay::core::wire::CloseCode::NoIdentity.code());
    assert!(
        matches!(o, Outcome::Closed(c) if c == no_identity),
        "no SPIFFE ID: {o:?}"
    );
    // A name the directory does not hold: unauthenticated, request by request.
    let o = ask(Bad::OtherName).await;
    assert!(
        matches!(
            o,
            Outcome::Answered(Response::Err {
                code: ErrorCode::Unauthenticated,
                ..
            })
        ),
        "a name outside the directory: {o:?}"
    );

    // threat 16: validity judged on the relay's clock, to the second at each edge.
    let edge = now + 1_000;
    let expires = mint(&keys, alice, Bad::ExpiredAt { at: edge }, now);
    let starts = mint(&keys, alice, Bad::NotYetValidAt { at: edge }, now);
    let with = |cert: &Vec<u8>| RawClient::new(Some((alice, cert.clone())), ALPN);
    t.clock.set(edge - 1);
    let o = with(&starts).request(addr, inbox()).await;
    assert!(
        matches!(o, Outcome::TlsAlert(CERTIFICATE_EXPIRED)),
        "a certificate one second before its not-before: {o:?}"
    );
    let o = with(&expires).request(addr, inbox()).await;
    assert!(served(&o), "one second before not-after: {o:?}");
    t.clock.set(edge);
    for (what, cert) in [("at not-before", &starts), ("at not-after", &expires)] {
        let o = with(cert).request(addr, inbox()).await;
        assert!(served(&o), "{what}: {o:?}");
    }
    t.clock.set(edge + 1);
    let o = with(&expires).request(addr, inbox()).await;
    assert!(
        matches!(o, Outcome::TlsAlert(CERTIFICATE_EXPIRED)),
        "one second after not-after: {o:?}"
    );
    let o = with(&starts).request(addr, inbox()).await;
    assert!(served(&o), "one second after not-before: {o:?}");
}

/// Records what the relay gives a client to resume with.
#[derive(Debug)]
struct TicketCounter {
    tickets: Mutex<usize>,
    inner: rustls::client::ClientSessionMemoryCache,
}

impl rustls::client::ClientSessionStore for TicketCounter {
    fn set_kx_hint(&self, n: rustls::pki_types::ServerName<'static>, g: rustls::NamedGroup) {
        self.inner.set_kx_hint(n, g)
    }
    fn kx_hint(&self, n: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(n)
    }
    fn set_tls12_session(
        &self,
        n: rustls::pki_types::ServerName<'static>,
        v: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(n, v)
    }
    fn tls12_session(
        &self,
        n: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(n)
    }
    fn remove_tls12_session(&self, n: &rustls::pki_types::ServerName<'static>) {
        self.inner.remove_tls12_session(n)
    }
    fn insert_tls13_ticket(
        &self,
        n: rustls::pki_types::ServerName<'static>,
        v: rustls::client::Tls13ClientSessionValue,
    ) {
        *self.tickets.lock().unwrap() += 1;
        self.inner.insert_tls13_ticket(n, v)
    }
    fn take_tls13_ticket(
        &self,
        n: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(n)
    }
}

/// Threat 23 (and 19's "a resumed session cannot bypass revocation"): the relay issues no
/// session tickets, so a client that asks for early data cannot send any: `into_0rtt` is
/// refused and every request runs after a full handshake with a verified certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_23_no_session_tickets_so_no_0rtt() {
    let t = common::test_relay(&[user("alice", 2, &[])], |_| {}).await;
    let alice = &t.ids[0];
    let store = Arc::new(TicketCounter {
        tickets: Mutex::new(0),
        inner: rustls::client::ClientSessionMemoryCache::new(16),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            alice.ca_cert.clone().unwrap(),
        ))
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![rustls::pki_types::CertificateDer::from(
                alice.cert.clone().unwrap(),
            )],
            rustls::pki_types::PrivateKeyDer::Pkcs8(alice.tls_key.pkcs8().to_vec().into()),
        )
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = true;
    tls.resumption = rustls::client::Resumption::store(store.clone());
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));

    for round in 0..3 {
        let connecting = endpoint.connect(t.relay.local_addr, "localhost").unwrap();
        let conn = match connecting.into_0rtt() {
            Ok(_) => panic!("round {round}: the relay accepted 0-RTT"),
            Err(connecting) => connecting.await.unwrap(),
        };
        // A full round trip, so that any ticket the relay sends has arrived.
        let (mut s, mut r) = conn.open_bi().await.unwrap();
        let frame = sealrelay::core::wire::encode_frame(&sealrelay::core::wire::RequestFrame {
            version: sealrelay::core::wire::PROTOCOL_VERSION,
            request: inbox(),
        })
        .unwrap();
        s.write_all(&frame).await.unwrap();
        s.finish().unwrap();
        let mut prefix = [0u8; 4];
        r.read_exact(&mut prefix).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.close(0u32.into(), b"");
    }
    assert_eq!(
        *store.tickets.lock().unwrap(),
        0,
        "the relay issued session tickets"
    );
}

/// Threats 35 and 14: 500 submissions through a network that loses 10% of datagrams,
/// duplicates 5%, reorders 5% and delays by up to 20 ms, in both directions. Each submission
/// is acked and stored once, or fails cleanly (a retry of the same sealed submission is
/// answered with the original ack); afterwards every acked envelope opens byte-exact, its
/// receipt is in the log, and the log is consistent with every checkpoint seen on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_35_five_hundred_submissions_through_a_lossy_network() {
    const N: usize = 500;
    let t = common::test_relay(
        &[
            user("alice", 2, &["auditor"]),
            agent("research-bot", &["tickets/*"]),
        ],
        |c| {
            c.requests_per_second = 100_000;
            c.request_burst = 100_000;
            c.quotas.max_open_grants_per_user = 10_000;
            c.quotas.max_open_grants_per_agent = 10_000;
            c.quotas.max_open_grants_per_user_per_agent = 10_000;
            c.quotas.max_pending_envelopes_per_user = 10_000;
        },
    )
    .await;
    let (alice, bot) = (&t.ids[0], &t.ids[1]);
    let seed = harness::Rng::seed_from_env("threat 35 chaos proxy");
    let faults = Faults {
        drop: 0.10,
        duplicate: 0.05,
        reorder: 0.05,
        truncate: 0.0,
        jitter: Duration::from_millis(20),
    };
    let proxy = ChaosProxy::start(t.relay.local_addr, faults, seed).await;
    let canary = canary();
    let mut auditor = Auditor::new(
        alice.log_key.clone().unwrap(),
        alice.authority.as_ref().unwrap().key,
    );
    let direct = Connection::connect(alice, &t.addr).await.unwrap();
    auditor.audit(&direct).await;

    let u = UserClient::connect(alice, &t.addr).await.unwrap();
    for i in 0..N {
        u.grant(&common::grant_request(&format!("tickets/t{i}")))
            .await
            .unwrap();
    }
    let payload = |i: usize| {
        let mut p = canary.to_vec();
        p.extend_from_slice(format!(" ticket {i} ").as_bytes());
        p.extend(common::pattern(200 + i * 37 % 3000, i as u8));
        p
    };

    // The agent, through the proxy, with 16 workers.
    let via = proxy.addr.to_string();
    let mut tries = 0;
    let (a, grants) = loop {
        tries += 1;
        assert!(
            tries <= 10,
            "could not list grants through the proxy (seed {seed})"
        );
        let a = match AgentClient::connect(bot, &via).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("connect through the proxy: {e}");
                continue;
            }
        };
        match a.grants().await {
            Ok(g) => break (a, g),
            Err(e) => eprintln!("list through the proxy: {e}"),
        }
    };
    assert_eq!(grants.len(), N, "the agent sees every grant");
    let queue = Mutex::new(grants.into_iter().enumerate().collect::<Vec<_>>());
    let ledger = Mutex::new(Ledger::default());
    let failed = Mutex::new(Vec::new());
    let retried = std::sync::atomic::AtomicUsize::new(0);
    let client = tokio::sync::RwLock::new(a);
    let scratch = t.dir.clone();
    let worker = || async {
        loop {
            let Some((i, g)) = queue.lock().unwrap().pop() else {
                return;
            };
            let p = payload(i);
            let mut sealed = client
                .read()
                .await
                .seal(&g, &mut p.as_slice(), &scratch)
                .unwrap();
            let mut last = None;
            for attempt in 0..6 {
                if attempt > 0 {
                    retried.fetch_add(1, Ordering::Relaxed);
                }
                let r = client.read().await.submit_sealed(&mut sealed).await;
                match r {
                    Ok(id) => {
                        ledger.lock().unwrap().ack(id, g.grant.grant_id, &p);
                        last = None;
                        break;
                    }
                    Err(e) => {
                        // A refusal that is not the network's is a defect here.
                        assert!(
                            matches!(e.kind(), sealrelay::ErrorKind::Unavailable),
                            "submission {i} refused: {e} (seed {seed})"
                        );
                        if let Ok(fresh) = AgentClient::connect(bot, &via).await {
                            *client.write().await = fresh;
                        }
                        last = Some(e.to_string());
                    }
                }
            }
            if let Some(e) = last {
                failed.lock().unwrap().push((i, e));
            }
        }
    };
    let workers: Vec<_> = (0..16).map(|_| worker()).collect();
    harness::join_all(workers).await;
    let mid = auditor.audit(&direct).await.len();
    let ledger = ledger.into_inner().unwrap();
    let failed = failed.into_inner().unwrap();
    eprintln!(
        "seed {seed}: {} acked, {} failed cleanly, {} retries; proxy {}",
        ledger.acked.len(),
        failed.len(),
        retried.load(Ordering::Relaxed),
        proxy.counts.summary()
    );
    assert!(
        proxy.counts.dropped.load(Ordering::Relaxed) > 100
            && proxy.counts.duplicated.load(Ordering::Relaxed) > 50
            && proxy.counts.reordered.load(Ordering::Relaxed) > 50,
        "the proxy did not disturb the traffic: {}",
        proxy.counts.summary()
    );
    assert!(
        ledger.acked.len() >= N * 9 / 10,
        "too few acks to mean anything: {} (seed {seed})",
        ledger.acked.len()
    );

    // Every acked envelope is listed once; no grant holds two.
    let views = u.inbox().await.unwrap();
    let listed: Vec<_> = views
        .iter()
        .map(|v| {
            let g = Grant::verify(
                &v.grant.to_signed(StatementType::Grant).unwrap(),
                &alice.signing_key.public(),
            )
            .unwrap();
            (v.envelope_id, g.grant_id)
        })
        .collect();
    let (lost, duplicated) = ledger.against_inbox(&listed);
    assert_eq!((lost, duplicated), (0, 0), "lost, duplicated (seed {seed})");
    assert!(listed.len() <= N);

    // Every listed envelope opens; acked ones byte-exact; their receipts are in the log.
    let mut receipts = Vec::new();
    for (id, _) in &listed {
        let mut out = Vec::new();
        let f = u.fetch(*id, &t.dir, &mut out).await.unwrap();
        assert_eq!(f.status, DeliveryStatus::Delivered);
        if let Some((_, digest)) = ledger.acked.get(id) {
            assert_eq!(
                &sealrelay::core::directory::sha256(&out),
                digest,
                "envelope differs"
            );
        }
        receipts.push(f.receipt_file);
    }
    let leaves = auditor.audit(&direct).await;
    assert!(leaves.len() > mid, "the receipts added no leaves");
    for r in &receipts {
        auditor.check_receipt(r, &leaves);
    }
    let hits = canary_hits(&canary, &files_under(&t.dir.join("data")), &[]);
    assert!(hits.is_empty(), "the canary leaked: {hits:?}");
}

/// Threat 34: garbage on a stream (an oversized length prefix, a cut frame, random bytes, a
/// frame with trailing bytes, an empty stream, an unknown version) gets an error answer or a
/// reset, never a panic (a process-wide panic hook counts them) and never an allocation of the
/// claimed length; the relay serves a good request afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_34_garbage_streams_get_errors_and_never_a_panic() {
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    let t = common::test_relay(&[user("alice", 2, &[])], |c| c.body_grace_secs = 2).await;
    let alice = &t.ids[0];
    let cert = mint(&t.dir.join("keys"), alice, Bad::Good, t.clock.now());
    let client = RawClient::new(Some((alice, cert)), ALPN);
    let addr = t.relay.local_addr;
    let good = sealrelay::core::wire::encode_frame(&sealrelay::core::wire::RequestFrame {
        version: sealrelay::core::wire::PROTOCOL_VERSION,
        request: inbox(),
    })
    .unwrap();
    let mut rng = harness::Rng::new(harness::Rng::seed_from_env("threat 34 garbage"));
    let mut cases: Vec<(String, Vec<u8>, bool)> = vec![
        ("a 4 GiB length prefix".into(), vec![0xff; 4], true),
        (
            "a prefix just over the cap".into(),
            ((sealrelay::core::wire::MAX_FRAME + 1) as u32)
                .to_be_bytes()
                .to_vec(),
            false,
        ),
        ("an empty stream".into(), vec![], true),
        ("half a prefix".into(), vec![0, 0], true),
        (
            "a frame cut short".into(),
            good[..good.len() - 3].to_vec(),
            true,
        ),
        (
            "a frame with trailing bytes".into(),
            [&good[..], b"xyz"].concat(),
            true,
        ),
        (
            "a prefix and no body, held open".into(),
            good[..4].to_vec(),
            false,
        ),
    ];
    let mut versioned = good.clone();
    versioned[4] ^= 0x7f; // the version field
    cases.push(("an unknown version".into(), versioned, true));
    for i in 0..40 {
        let n = rng.below(300) as usize;
        let mut junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        if i % 2 == 0 && n >= 4 {
            junk[..4].copy_from_slice(&((n - 4) as u32).to_be_bytes()); // a plausible prefix
        }
        cases.push((format!("random bytes #{i}"), junk, true));
    }
    for (what, bytes, finish) in &cases {
        let o = tokio::time::timeout(
            Duration::from_secs(8),
            client.send_bytes(addr, bytes, *finish),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: the relay neither answered nor reset"));
        let refused = match &o {
            Outcome::Answered(Response::Err { code, .. }) => {
                matches!(code, ErrorCode::BadRequest | ErrorCode::TooLarge)
            }
            Outcome::Other(_) | Outcome::Closed(_) => true,
            _ => false,
        };
        assert!(refused, "{what}: {o:?}");
    }
    let o = client.request(addr, inbox()).await;
    assert!(served(&o), "a good request after the garbage: {o:?}");
    let _ = std::panic::take_hook();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the relay panicked");
}

/// Threat 18: a stolen agent credential used from another address is still bounded by the
/// agent's grants: the thief can only do what the agent may (submit on a grant it holds, once),
/// cannot read, cannot use another agent's grant; revocation ends both the agent's and the
/// thief's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_18_a_stolen_agent_key_is_bounded_by_grants_and_revocation() {
    let t = common::test_relay(
        &[
            user("alice", 2, &[]),
            agent("research-bot", &["tickets/*"]),
            agent("other-bot", &["tickets/*"]),
        ],
        |_| {},
    )
    .await;
    let (alice, bot) = (&t.ids[0], &t.ids[1]);
    let u = UserClient::connect(alice, &t.addr).await.unwrap();
    u.grant(&common::grant_request("tickets/1")).await.unwrap();
    let mut other = common::grant_request("tickets/2");
    other.agent = "other-bot".into();
    let other_grant = u.grant(&other).await.unwrap();

    // The agent and the thief: one identity, two endpoints (two source ports).
    let owner = AgentClient::connect(bot, &t.addr).await.unwrap();
    let thief = AgentClient::connect(bot, &t.addr).await.unwrap();
    let grants = thief.grants().await.unwrap();
    assert_eq!(grants.len(), 1, "the thief sees only the agent's grants");
    let id = thief
        .send(&grants[0], &mut &b"what the thief sends"[..], &t.dir)
        .await
        .unwrap();
    // Once: the owner's send on the same grant is refused.
    let err = owner
        .send(&grants[0], &mut &b"late"[..], &t.dir)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), sealrelay::ErrorKind::Conflict, "{err}");
    // Reads are refused by the relay (the raw request: no client-side check in the way).
    let cert = mint(&t.dir.join("keys"), bot, Bad::Good, t.clock.now());
    let raw = RawClient::new(Some((bot, cert)), ALPN);
    for request in [
        inbox(),
        Request::Fetch {
            envelope_id: id,
            from_piece: 0,
        },
        Request::PendingApprovals {
            page: Page::first(),
        },
    ] {
        let o = raw.request(t.relay.local_addr, request.clone()).await;
        assert!(
            matches!(
                o,
                Outcome::Answered(Response::Err {
                    code: ErrorCode::Forbidden | ErrorCode::NotFound,
                    ..
                })
            ),
            "the thief's {request:?}: {o:?}"
        );
    }
    // Another agent's grant: the statement names the wrong agent, or the grant is not its own.
    let body = b"x".to_vec();
    let st = sealrelay::core::envelope::submission::Submission {
        grant_id: other_grant,
        user: alice.id.clone().unwrap(),
        agent: bot.id.clone().unwrap(),
        ciphertext_root: sealrelay::core::envelope::pieces::digest(&body),
        ciphertext_len: 1,
    }
    .sign(&bot.signing_key);
    let err = thief
        .submit_raw(other_grant, &st, 1, &mut body.as_slice())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), sealrelay::ErrorKind::NotFound, "{err}");

    // Revocation: both connections are refused from their next request.
    harness::revoke_and_push(
        &t.dir.join("keys"),
        &t.admin,
        &t.addr,
        bot.id.as_ref().unwrap(),
        "key stolen",
        t.clock.now(),
    )
    .await;
    for (who, c) in [("owner", &owner), ("thief", &thief)] {
        let err = c.grants().await.expect_err("a revoked key was served");
        assert!(err.message().contains("revoked"), "{who}: {err}");
    }
}

/// Threat 27 (and 9, 10 through the relay): an envelope whose last chunk was altered after the
/// agent signed it (its statement signs the altered bytes, so only the AEAD can tell) is never
/// receipted as delivered: the user's client releases at most the authenticated chunks and
/// files an `undecryptable` receipt, which verifies and is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_27_a_partial_decrypt_never_gets_a_positive_receipt() {
    let t = common::test_relay(
        &[
            user("alice", 2, &["auditor"]),
            agent("research-bot", &["tickets/*"]),
        ],
        |_| {},
    )
    .await;
    let (alice, bot) = (&t.ids[0], &t.ids[1]);
    let u = UserClient::connect(alice, &t.addr).await.unwrap();
    let a = AgentClient::connect(bot, &t.addr).await.unwrap();
    let plaintext = common::pattern(3 * 65_536 + 100, 9); // four chunks
    let recipient = alice.age_identity.as_ref().unwrap().to_public();
    let mut sealed = Vec::new();
    sealrelay::core::envelope::seal(&recipient, &mut plaintext.as_slice(), &mut sealed, 1).unwrap();
    for (what, cut) in [
        ("a flipped byte in the last chunk", false),
        ("the final chunk dropped", true),
    ] {
        let g = u.grant(&common::grant_request("tickets/x")).await.unwrap();
        let mut body = sealed.clone();
        if cut {
            // Dropping the whole final chunk keeps a valid-looking length: 3 full chunks.
            body.truncate(body.len() - (100 + 16));
        } else {
            let n = body.len();
            body[n - 20] ^= 1;
        }
        let st = sealrelay::core::envelope::submission::Submission {
            grant_id: g,
            user: alice.id.clone().unwrap(),
            agent: bot.id.clone().unwrap(),
            ciphertext_root: sealrelay::core::envelope::pieces::digest(&body),
            ciphertext_len: body.len() as u64,
        }
        .sign(&bot.signing_key);
        let id = a
            .submit_raw(g, &st, body.len() as u64, &mut body.as_slice())
            .await
            .unwrap_or_else(|e| panic!("{what}: the relay refused a well-formed envelope: {e}"));
        let mut out = Vec::new();
        let f = u.fetch(id, &t.dir, &mut out).await.unwrap();
        assert_eq!(f.status, DeliveryStatus::Undecryptable, "{what}");
        assert!(
            out.len() < plaintext.len() && plaintext.starts_with(&out),
            "{what}: released {} bytes that are not an authenticated prefix",
            out.len()
        );
        let log = alice.log_key.clone().unwrap();
        let authority = alice.authority.as_ref().unwrap().key;
        let v = f.receipt_file.verify(&authority, &log).unwrap();
        assert_eq!(v.receipt.status, DeliveryStatus::Undecryptable, "{what}");
    }
}
