//! The piece tree against a real relay over QUIC (docs/protocol.md, "Pieces"): a fetch cut at
//! random points resumes from the first piece not yet held and comes out byte-exact; a stored
//! piece altered at rest is never sent (the stream is reset before it, with code 2) and a
//! resumed fetch cannot get past it; an altered piece list is refused before any byte; the
//! client releases nothing of a damaged envelope, into a stream or into a file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use harness::pki::RawClient;
use sealrelay::client::{AgentClient, Destination, UserClient};
use sealrelay::core::envelope::pieces::{self, Pieces};
use sealrelay::core::envelope::submission::Submission;
use sealrelay::core::sign::StatementType;
use sealrelay::core::wire::{self, ErrorCode, Reply, Request, RequestFrame, Response};
use sealrelay::ids::EnvelopeId;
use sealrelay::local::provision::{agent, user};

/// Six pieces and a bit: a blob, with a short last piece.
const LEN: usize = 6 * pieces::PIECE + 4321;

/// Sends a raw fetch from piece `from`; the stream to read the answer from.
async fn send_fetch(
    conn: &quinn::Connection,
    envelope_id: EnvelopeId,
    from: u64,
) -> quinn::RecvStream {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let frame = wire::encode_frame(&RequestFrame {
        version: wire::PROTOCOL_VERSION,
        request: Request::Fetch {
            envelope_id,
            from_piece: from,
        },
    })
    .unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    recv
}

/// A raw fetch from piece `from`: the reply (or refusal), and the stream to read the body from.
async fn raw_fetch(
    conn: &quinn::Connection,
    envelope_id: EnvelopeId,
    from: u64,
) -> (Response, quinn::RecvStream) {
    let mut recv = send_fetch(conn, envelope_id, from).await;
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.unwrap();
    let mut head = vec![0u8; wire::frame_len(prefix).unwrap()];
    recv.read_exact(&mut head).await.unwrap();
    (wire::decode_frame(&head).unwrap(), recv)
}

/// The signed digest of an envelope view's agent statement.
fn signed_root(view: &sealrelay::core::wire::EnvelopeView) -> [u8; 32] {
    let signed = view.statement.to_signed(StatementType::Submission).unwrap();
    Submission::decode(&signed.statement)
        .unwrap()
        .ciphertext_root
}

/// Deterministic cut points.
fn cuts(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

struct World {
    t: common::TestRelay,
    envelope_id: EnvelopeId,
    plaintext: Vec<u8>,
}

async fn world(seed: u8) -> World {
    let t = common::test_relay(
        &[user("alice", 0, &[]), agent("research-bot", &["tickets/*"])],
        |_| {},
    )
    .await;
    let alice = UserClient::connect(&t.ids[0], &t.addr).await.unwrap();
    let bot = AgentClient::connect(&t.ids[1], &t.addr).await.unwrap();
    let mut request = common::grant_request("tickets/1");
    request.max_bytes = 16 * 1024 * 1024;
    alice.grant(&request).await.unwrap();
    let g = bot.grants().await.unwrap();
    let plaintext = common::pattern(LEN - 300, seed);
    let envelope_id = bot
        .send(&g[0], &mut plaintext.as_slice(), &t.dir)
        .await
        .unwrap();
    World {
        t,
        envelope_id,
        plaintext,
    }
}

/// A fetch cut at random points (in the list, mid-piece, on a boundary) and resumed from the
/// first piece not yet held comes out byte-exact: the same ciphertext as an uncut fetch, each
/// piece matching its leaf, the list matching the signed digest, and it opens to what the
/// agent sent. A resumed fetch of a piece past the end is refused in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_cut_at_random_points_resumes_byte_exact() {
    let w = world(3).await;
    let alice_id = &w.t.ids[0];
    let raw = RawClient::new(Some((alice_id, alice_id.cert.clone().unwrap())), wire::ALPN);
    let conn = raw.connect(w.t.relay.local_addr).await;

    // The reference: one uncut fetch.
    let (reply, mut recv) = raw_fetch(&conn, w.envelope_id, 0).await;
    let Response::Ok(Reply::Envelope { view }) = reply else {
        panic!("{reply:?}")
    };
    let length = view.length;
    let list_len = pieces::leaves_bytes(length).unwrap();
    let mut whole = vec![0u8; list_len + usize::try_from(length).unwrap()];
    recv.read_exact(&mut whole).await.unwrap();
    let tree = Pieces::checked(&whole[..list_len], length, &signed_root(&view)).unwrap();
    let reference = whole[list_len..].to_vec();
    for (i, piece) in reference.chunks(pieces::PIECE).enumerate() {
        tree.check(i as u64, piece).unwrap();
    }

    for (round, seed) in [11u64, 12, 13, 14].into_iter().enumerate() {
        let mut held: Vec<u8> = Vec::new();
        let mut points = cuts(seed, 16).into_iter();
        let mut streams = 0;
        loop {
            let from = (held.len() / pieces::PIECE) as u64;
            held.truncate(usize::try_from(from).unwrap() * pieces::PIECE);
            let (reply, mut recv) = raw_fetch(&conn, w.envelope_id, from).await;
            let Response::Ok(Reply::Envelope { view: again }) = reply else {
                panic!("{reply:?}")
            };
            assert_eq!(again.statement, view.statement);
            let mut list = vec![0u8; list_len];
            recv.read_exact(&mut list).await.unwrap();
            assert_eq!(
                list,
                tree.to_bytes(),
                "the list differs on a resumed stream"
            );
            let rest = usize::try_from(length).unwrap() - held.len();
            streams += 1;
            // Where this stream is cut (the last one is not).
            let take = if streams > 5 {
                rest
            } else {
                match (round, streams) {
                    (0, 1) => 0,
                    (0, _) => pieces::PIECE,
                    _ => usize::try_from(points.next().unwrap() % (rest as u64 + 1)).unwrap(),
                }
            };
            let mut got = vec![0u8; take];
            recv.read_exact(&mut got).await.unwrap();
            held.extend_from_slice(&got);
            if take == rest {
                break;
            }
            // The client goes away mid-body.
            drop(recv);
        }
        assert!(streams > 2, "round {round}: cut {streams} times only");
        assert!(held == reference, "round {round}: not byte-exact");
    }

    // It opens to what the agent sent.
    let mut out = Vec::new();
    let age = alice_id.age_identity.as_ref().unwrap();
    sealrelay::core::envelope::open(&[age.as_identity()], &mut reference.as_slice(), &mut out, 2)
        .unwrap();
    assert!(out == w.plaintext, "the plaintext differs");

    // Past the end: one line, nothing sent.
    let past = pieces::count(length) + 1;
    let (reply, _) = raw_fetch(&conn, w.envelope_id, past).await;
    let Response::Err { code, message } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(
        message.contains(&format!("there is no piece {past}")) && !message.contains('\n'),
        "{message}"
    );
    // And the client library takes it whole, once.
    let alice = UserClient::connect(alice_id, &w.t.addr).await.unwrap();
    let mut out = Vec::new();
    alice
        .fetch(w.envelope_id, &w.t.dir, &mut out)
        .await
        .unwrap();
    assert!(out == w.plaintext);
    w.t.relay.shutdown().await;
}

/// Any stored piece altered at rest is never sent: the relay sends the pieces before it, then
/// resets the stream with code 2 and logs an `integrity.failure`; a resumed fetch from that
/// piece gets nothing of it either; the client library fails naming the piece and releases no
/// plaintext. An altered piece list is refused before any byte (`Integrity`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_stored_piece_is_never_sent_or_opened() {
    let w = world(5).await;
    let alice_id = &w.t.ids[0];
    let raw = RawClient::new(Some((alice_id, alice_id.cert.clone().unwrap())), wire::ALPN);
    let conn = raw.connect(w.t.relay.local_addr).await;
    let blob = w.t.dir.join("data/blobs").join(w.envelope_id.to_hex());
    let good = std::fs::read(&blob).unwrap();
    let (reply, _) = raw_fetch(&conn, w.envelope_id, 0).await;
    let Response::Ok(Reply::Envelope { view }) = reply else {
        panic!("{reply:?}")
    };
    let length = view.length;
    let list_len = pieces::leaves_bytes(length).unwrap();
    assert_eq!(
        good.len() as u64,
        length + list_len as u64,
        "ciphertext then list"
    );

    let alice = UserClient::connect(alice_id, &w.t.addr).await.unwrap();
    for k in [0u64, 3, pieces::count(length) - 1] {
        let mut bad = good.clone();
        let at = usize::try_from(k).unwrap() * pieces::PIECE + 17;
        bad[at] ^= 0x20;
        std::fs::write(&blob, &bad).unwrap();
        let failures_before = integrity_failures(&w);

        // From the start: at most the pieces before k, each as stored, then a reset with code
        // 2 (a reset may discard what was in flight, so fewer may arrive, never more).
        let before = usize::try_from(k).unwrap() * pieces::PIECE;
        let (got, end) = read_until_reset(&conn, w.envelope_id, 0).await;
        assert!(
            got.len() <= list_len + before,
            "piece {k}: a byte of it was sent"
        );
        let good_body = [&good[usize::try_from(length).unwrap()..], &good[..before]].concat();
        assert!(
            got[..] == good_body[..got.len()],
            "piece {k}: what came differs"
        );
        assert_eq!(end, Some(2), "piece {k}");
        // Resumed at k: nothing of it either.
        let (got, end) = read_until_reset(&conn, w.envelope_id, k).await;
        assert!(
            got.len() <= list_len,
            "piece {k}: a byte of it was sent on a resumed fetch"
        );
        assert_eq!(end, Some(2), "piece {k}");
        assert!(integrity_failures(&w) >= failures_before + 2, "piece {k}");

        // The client library: one line, nothing released.
        let mut out = Vec::new();
        let err = alice
            .fetch(w.envelope_id, &w.t.dir, &mut out)
            .await
            .unwrap_err();
        damage_in_one_line(&err);
        assert!(out.is_empty(), "piece {k}: plaintext was released");
        // Into a file (`fetch -o`, opened while it arrives): the same, and no file is left.
        let path = w.t.dir.join(format!("out-{k}.txt"));
        let err = alice
            .fetch_to(w.envelope_id, Destination::Path(&path), &w.t.dir)
            .await
            .unwrap_err();
        damage_in_one_line(&err);
        assert!(!path.exists(), "piece {k}: an output file was left");
        assert_eq!(
            leftovers(&w.t.dir),
            0,
            "piece {k}: a temporary file was left"
        );
    }

    // The list altered: refused before the reply, nothing sent.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&blob, &bad).unwrap();
    let (reply, _) = raw_fetch(&conn, w.envelope_id, 0).await;
    let Response::Err { code, .. } = reply else {
        panic!("an altered list was answered: {reply:?}")
    };
    assert_eq!(code, ErrorCode::Integrity);

    // The list stripped, or the blob cut short: damage (not an envelope of an older relay).
    for cut in [usize::try_from(length).unwrap(), 1000] {
        std::fs::write(&blob, &good[..cut]).unwrap();
        let before = integrity_failures(&w);
        let (reply, _) = raw_fetch(&conn, w.envelope_id, 0).await;
        let Response::Err { code, .. } = reply else {
            panic!("a blob cut to {cut} bytes was answered: {reply:?}")
        };
        assert_eq!(code, ErrorCode::Integrity, "cut to {cut}");
        assert_eq!(integrity_failures(&w), before + 1, "cut to {cut}");
    }

    // Put back, it is delivered whole, once, into a file opened while it arrived.
    std::fs::write(&blob, &good).unwrap();
    let path = w.t.dir.join("out.txt");
    let saved = alice
        .fetch_to(w.envelope_id, Destination::Path(&path), &w.t.dir)
        .await
        .unwrap();
    assert_eq!(
        saved.fetched.status,
        sealrelay::core::grant::DeliveryStatus::Delivered
    );
    assert!(std::fs::read(&path).unwrap() == w.plaintext);
    w.t.relay.shutdown().await;
}

/// The client library's refusal of a damaged envelope: one line, `Io`.
fn damage_in_one_line(err: &sealrelay::Error) {
    assert!(
        err.message().contains("damaged") && !err.message().contains('\n'),
        "{err}"
    );
    assert_eq!(err.kind(), sealrelay::ErrorKind::Io, "{err}");
}

/// Temporary files an atomic output left in `dir`.
fn leftovers(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .count()
}

/// A raw fetch from piece `from` read until the stream ends: what came after the reply frame,
/// and the reset code (`None`: it ended cleanly). A reset that overtook the reply frame itself
/// counts as nothing received.
async fn read_until_reset(
    conn: &quinn::Connection,
    envelope_id: EnvelopeId,
    from: u64,
) -> (Vec<u8>, Option<u64>) {
    let mut recv = send_fetch(conn, envelope_id, from).await;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => all.extend_from_slice(&buf[..n]),
            Ok(None) => break None,
            Err(quinn::ReadError::Reset(code)) => break Some(code.into_inner()),
            Err(e) => panic!("{e}"),
        }
    };
    // Past the reply frame.
    if all.len() < 4 {
        return (Vec::new(), end);
    }
    let head = 4 + wire::frame_len([all[0], all[1], all[2], all[3]]).unwrap();
    if all.len() < head {
        return (Vec::new(), end);
    }
    let reply: Response = wire::decode_frame(&all[4..head]).unwrap();
    assert!(
        matches!(reply, Response::Ok(Reply::Envelope { .. })),
        "{reply:?}"
    );
    (all[head..].to_vec(), end)
}

fn integrity_failures(w: &World) -> usize {
    w.t.relay
        .relay()
        .store()
        .events(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == "integrity.failure")
        .count()
}

/// Helper-found defect (data loss): `fetch -o` filed its "delivered" receipt before it moved the
/// opened plaintext into place, so anything failing after the receipt (a proof that does not
/// verify, a checkpoint behind the one the client saw, an identity without its directory
/// entry, a lost answer) dropped the temporary file, while the relay had recorded the delivery
/// and deleted the ciphertext: the user had neither. Now the output is final before the receipt
/// is filed, and a failure after it says the plaintext is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_that_fails_after_it_is_filed_leaves_the_plaintext_saved() {
    let mut w = world(7).await;
    // The receipt is filed and recorded, then the client cannot build its receipt file.
    w.t.ids[0].entry = None;
    let alice = UserClient::connect(&w.t.ids[0], &w.t.addr).await.unwrap();
    let path = w.t.dir.join("kept.txt");
    let err = alice
        .fetch_to(w.envelope_id, Destination::Path(&path), &w.t.dir)
        .await
        .expect_err("a receipt file without the user's entry");
    assert!(
        err.message().contains("plaintext saved") && err.message().contains("no directory entry"),
        "{err}"
    );
    assert!(
        std::fs::read(&path).ok().as_deref() == Some(&w.plaintext[..]),
        "the delivered plaintext was not kept"
    );
    assert_eq!(leftovers(&w.t.dir), 0, "a temporary file was left");
    // The relay recorded the delivery and let the ciphertext go: the file is the only copy.
    let mut out = Vec::new();
    let gone = alice
        .fetch(w.envelope_id, &w.t.dir, &mut out)
        .await
        .expect_err("a delivered envelope was served again");
    assert_eq!(gone.kind(), sealrelay::ErrorKind::NotFound, "{gone}");
    w.t.relay.shutdown().await;
}
