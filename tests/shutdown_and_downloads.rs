//! Threats 33 and 45 where a request's answer goes out, and at shutdown: a fetched body must be
//! taken at the same minimum pace a request body must arrive at (a client that stops reading
//! loses its stream, and the relay goes on serving), and a shutdown refuses new requests on the
//! connections already open at once while the requests in flight finish.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use sealrelay::client::{AgentClient, GrantRequest, UserClient};
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::core::identity::Identity;
use sealrelay::core::wire::{Reply, Request};
use sealrelay::ids::EnvelopeId;
use sealrelay::local::provision::{agent, user};
use sealrelay::ErrorKind;

/// Plaintext bytes of the large envelope. Its ciphertext is larger than a client's 8 MiB stream
/// window, so a client that reads none of it stops the relay's writes; and far above
/// `INLINE_MAX`, so it is a blob.
const BIG: usize = 10 << 20;

/// The relay's one-line answer to a request made once its shutdown has begun.
const SHUTTING_DOWN: &str =
    "the relay is shutting down; retry on another node or after it restarts";

/// A new grant from alice to research-bot, and `plaintext` sealed to alice and submitted on it
/// by the bot (on a connection of its own): the envelope id and its ciphertext.
async fn submit_big(
    addr: &str,
    alice: &UserClient<'_>,
    alice_id: &Identity,
    bot_id: &Identity,
    plaintext: &[u8],
) -> (EnvelopeId, Vec<u8>) {
    let grant_id = alice
        .grant(&GrantRequest {
            agent: "research-bot".into(),
            resource: "tickets/big".into(),
            purpose: "bulk".into(),
            ttl_secs: 600,
            max_bytes: 32 << 20,
        })
        .await
        .unwrap();
    let recipient = alice_id.age_identity.as_ref().unwrap().to_public();
    let mut body = Vec::new();
    sealrelay::core::envelope::seal(&recipient, &mut &plaintext[..], &mut body, 2).unwrap();
    let statement = sealrelay::core::envelope::submission::Submission {
        grant_id,
        user: alice_id.id.clone().unwrap(),
        agent: bot_id.id.clone().unwrap(),
        ciphertext_root: sealrelay::core::envelope::pieces::digest(&body),
        ciphertext_len: body.len() as u64,
    }
    .sign(&bot_id.signing_key);
    let bot = AgentClient::connect(bot_id, addr).await.unwrap();
    let envelope_id = bot
        .submit_raw(
            grant_id,
            &statement,
            body.len() as u64,
            &mut body.as_slice(),
        )
        .await
        .unwrap();
    (envelope_id, body)
}

/// Threat 33 (slowloris), on the way out: a client that fetches a large envelope, reads its
/// first bytes and then nothing has its stream reset by the relay once the body falls behind
/// `min_body_bytes_per_sec` after `body_grace_secs`. The relay goes on serving: the envelope is
/// still waiting, and a client that reads at speed gets all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_33_a_client_that_stops_reading_a_fetched_body_loses_its_stream() {
    let mut t = common::test_relay(
        &[user("alice", 0, &[]), agent("research-bot", &["tickets/*"])],
        |c| {
            // A second of grace, then 1 MiB/s: the upload has 11 s to arrive, and a fetch whose
            // client stops reading is reset some 9 s after its first write (the relay stops at
            // the client's 8 MiB window).
            c.body_grace_secs = 1;
            c.min_body_bytes_per_sec = 1 << 20;
        },
    )
    .await;
    let bot_id = t.ids.pop().unwrap();
    let alice_id = t.ids.pop().unwrap();
    let alice = UserClient::connect(&alice_id, &t.addr).await.unwrap();
    let plaintext = common::pattern(BIG, 33);
    let (envelope_id, body) = submit_big(&t.addr, &alice, &alice_id, &bot_id, &plaintext).await;

    // The raw request, as a client that stops reading would make it.
    let (reply, mut recv) = alice
        .conn
        .call(
            Request::Fetch {
                envelope_id,
                from_piece: 0,
            },
            None,
        )
        .await
        .unwrap();
    let Reply::Envelope { view } = reply else {
        panic!("not an envelope: {reply:?}");
    };
    assert_eq!(view.length, body.len() as u64);
    // The piece list, then the ciphertext.
    let mut list = vec![0u8; sealrelay::core::envelope::pieces::leaves_bytes(view.length).unwrap()];
    recv.read_exact(&mut list).await.unwrap();
    let mut first = [0u8; 1024];
    recv.read_exact(&mut first).await.unwrap();
    assert_eq!(&first[..], &body[..1024]);
    // Then nothing: the relay must end the stream itself (a bound, not a speed: the reset is
    // due after about 9 s).
    let ended = tokio::time::timeout(Duration::from_secs(30), recv.received_reset())
        .await
        .expect("the relay still held the stream 30 s after its client stopped reading");
    assert!(
        matches!(ended, Ok(Some(_))),
        "the stream was not reset: {ended:?}"
    );

    // The relay goes on serving, on the same connection.
    let inbox = alice.inbox().await.unwrap();
    assert!(
        inbox.iter().any(|v| v.envelope_id == envelope_id),
        "the envelope is no longer waiting"
    );
    let mut out = Vec::new();
    let fetched = alice.fetch(envelope_id, &t.dir, &mut out).await.unwrap();
    assert_eq!(fetched.status, DeliveryStatus::Delivered);
    assert!(out == plaintext, "the plaintext differs");
    t.relay.shutdown().await;
}

/// Threat 45 (the relay goes away mid-request), at a planned shutdown: once it begins, a new
/// request on a connection already open is refused at once as Unavailable, with one line that
/// says so (clients retry that on another node or later), while the request already in flight
/// (a fetch whose client has not read its body yet) is let finish, whole, within the grace
/// period; the shutdown then ends without waiting the grace period out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_45_a_shutdown_refuses_new_requests_and_lets_those_in_flight_finish() {
    const GRACE: u64 = 60;
    let mut t = common::test_relay(
        &[user("alice", 0, &[]), agent("research-bot", &["tickets/*"])],
        |c| {
            c.shutdown_grace_secs = GRACE;
        },
    )
    .await;
    let bot_id = t.ids.pop().unwrap();
    let alice_id = t.ids.pop().unwrap();
    let alice = UserClient::connect(&alice_id, &t.addr).await.unwrap();
    let plaintext = common::pattern(BIG, 45);
    let (envelope_id, body) = submit_big(&t.addr, &alice, &alice_id, &bot_id, &plaintext).await;

    // In flight: a fetch whose client reads nothing yet, so the relay's writes wait on it (at
    // the default pace it has minutes before it is too slow).
    let (reply, mut recv) = alice
        .conn
        .call(
            Request::Fetch {
                envelope_id,
                from_piece: 0,
            },
            None,
        )
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Envelope { .. }), "{reply:?}");

    let relay = t.relay;
    let started = Instant::now();
    let client = async {
        // The shutdown has begun once a request on alice's open connection is refused.
        let refused = loop {
            match alice.inbox().await {
                Ok(_) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "new requests were still served 10 s after the shutdown began"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => break e,
            }
        };
        assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
        assert!(refused.message().contains(SHUTTING_DOWN), "{refused}");
        assert_eq!(refused.message().lines().count(), 1, "{refused}");
        // Refused again: the connection is open, its new requests are not served.
        let again = alice.inbox().await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Unavailable, "{again}");
        // The fetch in flight finishes, whole.
        let got = recv.read_to_end(64 << 20).await.unwrap();
        // The piece list, then the ciphertext.
        let list = sealrelay::core::envelope::pieces::leaves_bytes(body.len() as u64).unwrap();
        assert_eq!(got.len(), list + body.len());
        assert!(got[list..] == body, "the fetched body differs");
    };
    // The shutdown ends once its request in flight is done, well before its grace period.
    tokio::time::timeout(Duration::from_secs(GRACE - 15), async {
        tokio::join!(relay.shutdown(), client)
    })
    .await
    .expect("the shutdown did not end once its request in flight had finished");
}
