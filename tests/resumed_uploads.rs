//! Resumed uploads against a real relay over QUIC (docs/protocol.md, "Resumed uploads"): an
//! upload cut at random points (a reset stream, a lost connection) resumes from the whole pieces
//! the relay kept and is stored byte-exact; what follows a resume is checked as a fresh upload is
//! (against the signed root, as a valid envelope), and only its sender resumes it; a parked
//! upload holds its quota, lapses (its window counted from the break), does not outlive a
//! restart, and goes when its grant is dispatched to a source; the agent library resumes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::time::Duration;

use harness::pki::RawClient;
use sealrelay::client::{AgentClient, UserClient};
use sealrelay::core::envelope::pieces::PIECE;
use sealrelay::core::identity::Identity;
use sealrelay::core::sign::Signed;
use sealrelay::core::wire::{self, ErrorCode, Reply, Request, RequestFrame, Response, WireSigned};
use sealrelay::ids::{EnvelopeId, GrantId};
use sealrelay::local::provision::{agent, source, user};

/// Nine pieces and a bit.
const LEN: usize = 9 * PIECE + 777;

use common::{seal_for as sealed_for, submission as statement};

fn raw(id: &Identity) -> RawClient {
    RawClient::new(Some((id, id.cert.clone().unwrap())), wire::ALPN)
}

fn frame(request: Request) -> Vec<u8> {
    wire::encode_frame(&RequestFrame {
        version: wire::PROTOCOL_VERSION,
        request,
    })
    .unwrap()
}

async fn read_response(recv: &mut quinn::RecvStream) -> Response {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.unwrap();
    let mut head = vec![0u8; wire::frame_len(prefix).unwrap()];
    recv.read_exact(&mut head).await.unwrap();
    wire::decode_frame(&head).unwrap()
}

/// What the relay kept of the caller's upload for `grant_id`.
async fn resumable(conn: &quinn::Connection, grant_id: GrantId) -> (u64, Option<[u8; 32]>) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(Request::Resumable { grant_id }))
        .await
        .unwrap();
    send.finish().unwrap();
    match read_response(&mut recv).await {
        Response::Ok(Reply::ResumeAt {
            from_piece,
            statement_sha256,
        }) => (from_piece, statement_sha256),
        other => panic!("{other:?}"),
    }
}

/// How a raw upload ends.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// Whole, and the stream finished: the relay answers.
    Whole,
    /// The stream is reset after the bytes: the relay answers the break.
    Reset,
    /// The connection is closed after the bytes (it is of no more use).
    Lost,
}

/// A raw `Submit` from piece `from` with `bytes` as its body (the rest of the envelope from
/// that piece, perhaps cut); its answer (none when the connection was lost).
async fn submit(
    conn: &quinn::Connection,
    grant_id: GrantId,
    statement: &Signed,
    length: u64,
    from: u64,
    bytes: &[u8],
    end: End,
) -> Option<Response> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(Request::Submit {
        grant_id,
        statement: WireSigned::from_signed(statement),
        length,
        from_piece: from,
    }))
    .await
    .unwrap();
    // A refusal before the body stops the relay reading: a write may then fail.
    let _ = send.write_all(bytes).await;
    match end {
        End::Whole => {
            let _ = send.finish();
            Some(read_response(&mut recv).await)
        }
        End::Reset => {
            // Let the bytes reach the relay before the reset (a reset may drop what is in
            // flight, which only means fewer pieces kept).
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = send.reset(0u32.into());
            Some(read_response(&mut recv).await)
        }
        End::Lost => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            conn.close(0u32.into(), b"gone");
            None
        }
    }
}

/// Waits for the relay to have parked the caller's upload (after a lost connection, it learns
/// of the loss when the connection times out or closes).
async fn parked(conn: &quinn::Connection, grant_id: GrantId) -> (u64, Option<[u8; 32]>) {
    for _ in 0..100 {
        let got = resumable(conn, grant_id).await;
        if got.1.is_some() {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing was parked")
}

/// Deterministic cut points.
fn cuts(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

fn err(r: Option<Response>) -> (ErrorCode, String) {
    match r {
        Some(Response::Err { code, message }) => (code, message),
        other => panic!("{other:?}"),
    }
}

struct World {
    t: common::TestRelay,
}

async fn world(adjust: impl FnOnce(&mut sealrelay::server::RelayConfig)) -> World {
    let t = common::test_relay(
        &[
            user("alice", 0, &[]),
            agent("research-bot", &["tickets/*"]),
            agent("other-bot", &["tickets/*"]),
        ],
        adjust,
    )
    .await;
    World { t }
}

impl World {
    /// Alice and the bot through the client library, and one open grant of 16 MiB from her.
    async fn library_grant(
        &self,
    ) -> (
        UserClient<'_>,
        AgentClient<'_>,
        sealrelay::client::OpenGrant,
    ) {
        let alice = UserClient::connect(self.alice(), &self.t.addr)
            .await
            .unwrap();
        let bot = AgentClient::connect(self.bot(), &self.t.addr)
            .await
            .unwrap();
        let mut request = common::grant_request("tickets/1");
        request.max_bytes = 16 * 1024 * 1024;
        alice.grant(&request).await.unwrap();
        let open = bot.grants().await.unwrap().remove(0);
        (alice, bot, open)
    }

    fn alice(&self) -> &Identity {
        &self.t.ids[0]
    }

    fn bot(&self) -> &Identity {
        &self.t.ids[1]
    }

    /// A new grant from alice to research-bot, and a sealed envelope for it with its statement.
    async fn grant(&self, seed: u8) -> (GrantId, Vec<u8>, Vec<u8>, Signed) {
        let alice = UserClient::connect(self.alice(), &self.t.addr)
            .await
            .unwrap();
        let mut request = common::grant_request("tickets/1");
        request.max_bytes = 16 * 1024 * 1024;
        let g = alice.grant(&request).await.unwrap();
        let plaintext = common::pattern(LEN - 300, seed);
        let sealed = sealed_for(self.alice(), &plaintext);
        let st = statement(self.bot(), self.alice(), g, &sealed);
        (g, plaintext, sealed, st)
    }

    /// Alice's fetch of `envelope_id`, opened.
    async fn opened(&self, envelope_id: EnvelopeId) -> Vec<u8> {
        let alice = UserClient::connect(self.alice(), &self.t.addr)
            .await
            .unwrap();
        let mut out = Vec::new();
        alice
            .fetch(envelope_id, &self.t.dir, &mut out)
            .await
            .unwrap();
        out
    }

    /// The stored ciphertext, `length` bytes (a blob file; `None` on PostgreSQL).
    fn stored(&self, envelope_id: EnvelopeId, length: usize) -> Option<Vec<u8>> {
        let path = self.t.dir.join("data/blobs").join(envelope_id.to_hex());
        std::fs::read(path).ok().map(|mut b| {
            b.truncate(length.min(b.len()));
            b
        })
    }
}

/// An upload cut at random points, by a reset stream or a lost connection, and resumed each
/// time from where the relay says, is stored byte-exact and opens to what was sealed; the relay
/// never claims more pieces than were sent whole, and a cut inside the first piece keeps
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_at_random_points_resumes_byte_exact() {
    let w = world(|_| {}).await;
    let client = raw(w.bot());
    for (round, seed) in [21u64, 22, 23].into_iter().enumerate() {
        let (g, plaintext, sealed, st) = w.grant(round as u8).await;
        let length = sealed.len() as u64;
        let mut conn = client.connect(w.t.relay.local_addr).await;
        let mut points = cuts(seed);
        let mut streams = 0;
        let mut kept_before = 0;
        let mut resumed = 0;
        let envelope_id = loop {
            let (from, sha) = resumable(&conn, g).await;
            assert!(
                from >= kept_before,
                "round {round}: the relay forgot pieces"
            );
            if from > 0 {
                assert_eq!(sha, Some(sha256(&st.statement)), "round {round}");
                resumed += 1;
            }
            let start = usize::try_from(from).unwrap() * PIECE;
            let rest = &sealed[start..];
            streams += 1;
            let end = match (round, streams) {
                (_, s) if s > 6 => End::Whole,
                (1, _) => End::Lost,
                (2, s) if s % 2 == 0 => End::Lost,
                _ => End::Reset,
            };
            let cut = match (round, streams, end) {
                (_, _, End::Whole) => rest.len(),
                // Inside the first piece: nothing worth keeping.
                (0, 1, _) => PIECE / 2,
                _ => usize::try_from(points.next().unwrap() % rest.len() as u64).unwrap(),
            };
            let answer = submit(&conn, g, &st, length, from, &rest[..cut], end).await;
            match end {
                End::Whole => match answer {
                    Some(Response::Ok(Reply::Submitted { envelope_id })) => break envelope_id,
                    other => panic!("round {round}: {other:?}"),
                },
                End::Reset => {
                    let (code, message) = err(answer);
                    assert_eq!(code, ErrorCode::BadRequest, "{message}");
                    assert!(message.contains("the upload failed"), "{message}");
                }
                End::Lost => {
                    conn = client.connect(w.t.relay.local_addr).await;
                }
            }
            let sent_whole = (start + cut) / PIECE;
            let (now_kept, _) = if sent_whole > 0 && end == End::Lost {
                parked(&conn, g).await
            } else {
                resumable(&conn, g).await
            };
            assert!(
                now_kept as usize <= sent_whole,
                "round {round}: {now_kept} pieces kept of {sent_whole} sent whole"
            );
            if sent_whole == 0 {
                assert_eq!(now_kept, 0, "a cut inside the first piece keeps nothing");
            }
            kept_before = now_kept;
        };
        assert!(streams > 3, "round {round}: cut {} times only", streams - 1);
        assert!(resumed >= 2, "round {round}: resumed {resumed} times only");
        if let Some(stored) = w.stored(envelope_id, sealed.len()) {
            assert!(stored == sealed, "round {round}: not byte-exact");
        }
        assert!(
            w.opened(envelope_id).await == plaintext,
            "round {round}: the plaintext differs"
        );
        // Nothing is kept for the grant once it is used.
        assert_eq!(resumable(&conn, g).await, (0, None));
    }
    // Delivered (and deleted after delivery), with no parked blob left behind.
    assert_eq!(w.t.blobs_held(), 0, "a blob was left behind");
    w.t.relay.shutdown().await;
}

/// What follows a resume is checked as a fresh body is: bytes that do not match the signed
/// root are refused with nothing stored and nothing kept. Only the sender resumes, with the
/// statement it started with, from exactly the pieces kept; anyone else is told nothing was
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_upload_is_checked_whole_and_only_its_sender_resumes_it() {
    let w = world(|_| {}).await;
    let (g, plaintext, sealed, st) = w.grant(7).await;
    let length = sealed.len() as u64;
    let conn = raw(w.bot()).connect(w.t.relay.local_addr).await;
    let cut = 3 * PIECE + 100;
    submit(&conn, g, &st, length, 0, &sealed[..cut], End::Reset).await;
    assert_eq!(resumable(&conn, g).await.0, 3);

    // Another agent: nothing kept for it, and the grant is not its own.
    let other = &w.t.ids[2];
    let oconn = raw(other).connect(w.t.relay.local_addr).await;
    assert_eq!(resumable(&oconn, g).await, (0, None));
    let their = statement(other, w.alice(), g, &sealed);
    let rest = &sealed[3 * PIECE..];
    let (code, _) = err(submit(&oconn, g, &their, length, 3, rest, End::Whole).await);
    assert_eq!(code, ErrorCode::NotFound);

    // From the wrong piece, or with another statement: refused, and what is kept stays.
    let (code, message) =
        err(submit(&conn, g, &st, length, 2, &sealed[2 * PIECE..], End::Whole).await);
    assert_eq!(code, ErrorCode::Conflict);
    assert!(message.contains("resume from piece 3"), "{message}");
    let mut other_body = sealed.clone();
    other_body[LEN - 10] ^= 1;
    let other_st = statement(w.bot(), w.alice(), g, &other_body);
    let (code, message) = err(submit(&conn, g, &other_st, length, 3, rest, End::Whole).await);
    assert_eq!(code, ErrorCode::Conflict);
    assert!(message.contains("another signed statement"), "{message}");
    assert_eq!(resumable(&conn, g).await.0, 3);

    // The rest altered: refused against the signed root, nothing stored, nothing kept.
    let mut altered = rest.to_vec();
    altered[PIECE + 5] ^= 0x40;
    let (code, message) = err(submit(&conn, g, &st, length, 3, &altered, End::Whole).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("does not match the digest"), "{message}");
    assert_eq!(resumable(&conn, g).await, (0, None));
    assert_eq!(w.t.blobs_held(), 0, "a refused upload left a blob");
    let store = w.t.relay.relay().store();
    assert!(store.envelope_ids().unwrap().is_empty());

    // The grant is still the sender's to fill, from the start.
    let answer = submit(&conn, g, &st, length, 0, &sealed, End::Whole).await;
    let Some(Response::Ok(Reply::Submitted { envelope_id })) = answer else {
        panic!("{answer:?}")
    };
    assert!(w.opened(envelope_id).await == plaintext);
    w.t.relay.shutdown().await;
}

/// A parked upload holds its claim on the sender's upload quota until it is resumed, lapses
/// after `upload_resume_secs` (its blob removed) or is superseded by a new upload from the first
/// piece; and a restart keeps nothing: the sender is told so and starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_upload_holds_its_quota_lapses_and_does_not_outlive_a_restart() {
    let w = world(|c| {
        c.quotas.max_uploads_per_agent = 1;
        c.upload_resume_secs = 30;
        c.sweep_interval_secs = 1;
    })
    .await;
    let (a, _, sealed_a, st_a) = w.grant(1).await;
    let (b, plaintext_b, sealed_b, st_b) = w.grant(2).await;
    let la = sealed_a.len() as u64;
    let lb = sealed_b.len() as u64;
    let conn = raw(w.bot()).connect(w.t.relay.local_addr).await;
    submit(
        &conn,
        a,
        &st_a,
        la,
        0,
        &sealed_a[..2 * PIECE + 9],
        End::Reset,
    )
    .await;
    assert_eq!(resumable(&conn, a).await.0, 2);
    assert_eq!(w.t.blobs_held(), 1);

    // The parked upload is the agent's one upload in progress.
    let (code, message) = err(submit(&conn, b, &st_b, lb, 0, &sealed_b, End::Whole).await);
    assert_eq!(code, ErrorCode::QuotaExceeded, "{message}");
    assert!(message.contains("max_uploads_per_agent"), "{message}");

    // Past its time it lapses at the next sweep: its blob goes, and the quota is free.
    w.t.clock.advance(31);
    let mut lapsed = false;
    for _ in 0..100 {
        if resumable(&conn, a).await == (0, None) {
            lapsed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lapsed, "the parked upload did not lapse");
    assert_eq!(w.t.blobs_held(), 0, "a lapsed upload's blob stayed");
    let (code, message) =
        err(submit(&conn, a, &st_a, la, 2, &sealed_a[2 * PIECE..], End::Whole).await);
    assert_eq!(code, ErrorCode::Conflict);
    assert!(message.contains("from the first piece"), "{message}");

    // Parked again, then superseded by an upload of the same grant from the first piece.
    submit(&conn, a, &st_a, la, 0, &sealed_a[..PIECE + 1], End::Reset).await;
    assert_eq!(resumable(&conn, a).await.0, 1);
    let answer = submit(&conn, a, &st_a, la, 0, &sealed_a, End::Whole).await;
    assert!(
        matches!(answer, Some(Response::Ok(Reply::Submitted { .. }))),
        "{answer:?}"
    );

    // Parked, then the relay restarts: nothing is kept, and the sender is told to start over.
    submit(&conn, b, &st_b, lb, 0, &sealed_b[..4 * PIECE], End::Reset).await;
    assert_eq!(resumable(&conn, b).await.0, 4);
    let t = w.t;
    let config = sealrelay::server::RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: t.dir.join("data"),
        dir: t.dir.join("keys"),
        metrics_listen: "off".into(),
        store: t.store_url.clone(),
        ..Default::default()
    };
    t.relay.shutdown().await;
    let relay = sealrelay::server::start_with(
        config,
        sealrelay::server::Dependencies {
            store: None,
            clock: t.clock.clone(),
        },
    )
    .await
    .unwrap();
    let conn = raw(&t.ids[1]).connect(relay.local_addr).await;
    assert_eq!(resumable(&conn, b).await, (0, None));
    let tmp = std::fs::read_dir(t.dir.join("data/blobs.tmp")).map_or(0, |r| r.count());
    assert_eq!(tmp, 0, "the parked upload's blob outlived the restart");
    let (code, message) =
        err(submit(&conn, b, &st_b, lb, 4, &sealed_b[4 * PIECE..], End::Whole).await);
    assert_eq!(code, ErrorCode::Conflict);
    assert!(message.contains("the relay restarted"), "{message}");
    let answer = submit(&conn, b, &st_b, lb, 0, &sealed_b, End::Whole).await;
    let Some(Response::Ok(Reply::Submitted { envelope_id })) = answer else {
        panic!("{answer:?}")
    };
    let alice = UserClient::connect(&t.ids[0], &relay.local_addr.to_string())
        .await
        .unwrap();
    let mut out = Vec::new();
    alice.fetch(envelope_id, &t.dir, &mut out).await.unwrap();
    assert!(out == plaintext_b);
    relay.shutdown().await;
    drop(t.tmp);
}

/// The agent library resumes an upload that broke off: it asks what the relay kept of its
/// statement and sends only the rest; an upload it never tried is sent whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_library_sends_only_what_the_relay_lacks() {
    let w = world(|_| {}).await;
    let (alice, bot, open) = w.library_grant().await;
    let plaintext = common::pattern(LEN, 9);
    let mut sealed = bot
        .seal(&open, &mut plaintext.as_slice(), &w.t.dir)
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut sealed.ciphertext().unwrap(), &mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, sealed.length);

    // A first try that broke off after five whole pieces and a bit.
    let conn = raw(w.bot()).connect(w.t.relay.local_addr).await;
    let g = sealed.grant_id;
    submit(
        &conn,
        g,
        &sealed.statement,
        sealed.length,
        0,
        &bytes[..5 * PIECE + 3],
        End::Reset,
    )
    .await;
    // Five whole pieces were sent; a reset may drop what was still in flight (under load), so
    // the relay keeps at most five, usually all of them.
    let kept = resumable(&conn, g).await.0;
    assert!(kept <= 5, "the relay kept {kept} pieces of five sent");

    let envelope_id = bot.resume_sealed(&mut sealed).await.unwrap();
    assert_eq!(
        sealed.resumed_from(),
        kept,
        "it sent other than what the relay lacked"
    );
    // Sent again after a lost answer: the relay answers with the same envelope.
    assert_eq!(bot.submit_sealed(&mut sealed).await.unwrap(), envelope_id);
    assert_eq!(sealed.resumed_from(), 0);
    let mut out = Vec::new();
    alice.fetch(envelope_id, &w.t.dir, &mut out).await.unwrap();
    assert!(out == plaintext);
    w.t.relay.shutdown().await;
}

/// A sealed envelope of at most one piece is kept in memory until it is sent: no scratch file
/// is made for it (a scratch directory that does not exist is no obstacle), and sending it
/// again gets the same answer. A longer one still goes to a scratch file, and says which directory
/// it could not use. Before, every sealed envelope made a scratch file, 1 KiB ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_sealed_envelope_is_kept_in_memory_and_a_large_one_in_a_scratch_file() {
    let w = world(|_| {}).await;
    let (alice, bot, open) = w.library_grant().await;
    let nowhere = w.t.dir.join("no-such-directory");
    let plaintext = common::pattern(1024, 3);
    let mut sealed = bot
        .seal(&open, &mut plaintext.as_slice(), &nowhere)
        .unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut sealed.ciphertext().unwrap(), &mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, sealed.length);
    let envelope_id = bot.submit_sealed(&mut sealed).await.unwrap();
    // Sent again (an answer lost): the relay answers the same statement with the same
    // envelope (reading back the kept bytes is `client::agent::ciphertext`'s unit test).
    assert_eq!(bot.submit_sealed(&mut sealed).await.unwrap(), envelope_id);
    let mut out = Vec::new();
    alice.fetch(envelope_id, &w.t.dir, &mut out).await.unwrap();
    assert!(out == plaintext, "not byte-exact");
    assert!(!nowhere.exists());
    // Longer than a piece: it needs its scratch directory, and the error names it.
    let large = common::pattern(PIECE + 1, 4);
    let e = bot
        .seal(&open, &mut large.as_slice(), &nowhere)
        .err()
        .expect("sealed more than a piece without a scratch directory");
    assert!(
        e.to_string().contains("no-such-directory"),
        "the error does not name the directory: {e}"
    );
    w.t.relay.shutdown().await;
}

/// The window a broken upload is kept for counts from the break, not from when the upload
/// began: an upload that took longer than the whole window is still kept once it breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resume_window_counts_from_the_break() {
    let w = world(|c| {
        c.upload_resume_secs = 30;
        c.sweep_interval_secs = 1;
    })
    .await;
    let (g, _, sealed, st) = w.grant(5).await;
    let conn = raw(w.bot()).connect(w.t.relay.local_addr).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(Request::Submit {
        grant_id: g,
        statement: WireSigned::from_signed(&st),
        length: sealed.len() as u64,
        from_piece: 0,
    }))
    .await
    .unwrap();
    send.write_all(&sealed[..2 * PIECE + 1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A minute passes, twice the window, before the upload breaks.
    w.t.clock.advance(60);
    send.reset(0u32.into()).unwrap();
    let (code, _) = err(Some(read_response(&mut recv).await));
    assert_eq!(code, ErrorCode::BadRequest);
    // Sweeps pass (every second): it is kept.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(resumable(&conn, g).await.0, 2);
    // Its own window, from the break, ends.
    w.t.clock.advance(31);
    let mut lapsed = false;
    for _ in 0..100 {
        if resumable(&conn, g).await == (0, None) {
            lapsed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lapsed, "it outlived its window");
    w.t.relay.shutdown().await;
}

/// A grant its agent dispatches to a source after the agent's own upload for it broke: what
/// was kept of that upload goes (the grant is the source's to fill now), and so does its hold
/// on the agent's upload quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_drops_what_was_kept_of_the_agents_own_upload() {
    let t = common::test_relay(
        &[
            user("alice", 1, &[]),
            agent("research-bot", &["customers/*"]),
            source("crm", &["customers/*"]),
        ],
        |c| c.quotas.max_uploads_per_agent = 1,
    )
    .await;
    let (alice_id, bot_id) = (&t.ids[0], &t.ids[1]);
    let alice = UserClient::connect(alice_id, &t.addr).await.unwrap();
    let bot = AgentClient::connect(bot_id, &t.addr).await.unwrap();
    let mut request = common::grant_request("customers/acme");
    request.max_bytes = 16 * 1024 * 1024;
    let g = alice.grant(&request).await.unwrap();
    let open = bot
        .grants()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.grant.grant_id == g)
        .unwrap();
    let sealed = sealed_for(alice_id, &common::pattern(LEN - 300, 4));
    let st = statement(bot_id, alice_id, g, &sealed);
    let length = sealed.len() as u64;
    let conn = raw(bot_id).connect(t.relay.local_addr).await;
    submit(
        &conn,
        g,
        &st,
        length,
        0,
        &sealed[..3 * PIECE + 5],
        End::Reset,
    )
    .await;
    // Three whole pieces were sent; a reset may drop what was still in flight (under load),
    // so the relay keeps at most three, usually all of them, and something to drop.
    let kept = resumable(&conn, g).await.0;
    assert!(
        (1..=3).contains(&kept),
        "the relay kept {kept} pieces of three sent"
    );

    bot.dispatch(&open, "crm").await.unwrap();
    assert_eq!(resumable(&conn, g).await, (0, None));
    assert_eq!(t.blobs_held(), 0, "the kept upload's blob stayed");
    // The agent's one upload at a time is free again.
    request.resource = "customers/beta".into();
    let g2 = alice.grant(&request).await.unwrap();
    let st2 = statement(bot_id, alice_id, g2, &sealed);
    let answer = submit(&conn, g2, &st2, length, 0, &sealed, End::Whole).await;
    assert!(
        matches!(answer, Some(Response::Ok(Reply::Submitted { .. }))),
        "{answer:?}"
    );
    t.relay.shutdown().await;
}
