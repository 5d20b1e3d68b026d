//! The stream shell: one request per bidirectional QUIC stream. It reads the request frame
//! (with a deadline), reads the clock once, hands the decoded request and the body stream to
//! the handlers, and writes the reply (and a fetched envelope's ciphertext, at the same minimum
//! pace as a request body: threat 33). Once shutdown has begun, a new stream gets
//! [`SHUTTING_DOWN`] instead (threat 45). All of the relay's network I/O for a request is here
//! (the handlers reach the store and blobs through `Cx`'s blocking executor).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tokio::io::AsyncReadExt;

use crate::core::wire::{ErrorCode, Reply, RequestFrame, Response, PROTOCOL_VERSION};
use crate::error::{Error, ErrorKind, Result};
use crate::net::frame::{read_frame, write_frame, WriteFrameError};
use crate::net::Peer;
use crate::store::blobs::BlobReader;

use crate::core::envelope::pieces::{self, Pieces};
use crate::core::wire::Request;
use crate::ids::EnvelopeId;
use crate::server::handlers::{self, Outcome, StoredBody};
use crate::server::services::effects::Cx;
use crate::server::services::in_flight::InFlightGuard;
use crate::server::services::integrity::{integrity_failure, still_waiting, Stored};
use crate::server::services::metrics::code_label;
use crate::server::services::refusal::Refusal;
use crate::server::services::relay::Relay;

use super::deadline::{Pace, Paced};
use super::effects::Effects;
use super::receipt::Step;

/// The answer to a request that arrives once shutdown has begun (one line; Unavailable, which
/// clients treat as "try again").
pub const SHUTTING_DOWN: &str =
    "the relay is shutting down; retry on another node or after it restarts";

/// Serves one stream to its end; `_in_flight` counts it in until then (taken by the connection
/// before this task was spawned).
pub async fn serve(
    relay: Arc<Relay>,
    effects: Effects,
    peer: Peer,
    _in_flight: InFlightGuard,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let started = Instant::now();
    // The request frame must arrive within the body's grace period (slowloris, threat 33).
    let frame_deadline = Duration::from_secs(relay.config.body_grace_secs.max(1));
    let frame =
        match tokio::time::timeout(frame_deadline, read_frame::<RequestFrame>(&mut recv)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let refusal = Refusal::new(ErrorCode::BadRequest, e.into_error().message());
                refuse_early(&relay, &mut send, refusal, started).await;
                return;
            }
            Err(_) => {
                let refusal = Refusal::new(ErrorCode::BadRequest, "request frame timed out");
                refuse_early(&relay, &mut send, refusal, started).await;
                return;
            }
        };
    if frame.version != PROTOCOL_VERSION {
        let refusal = Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "protocol version {} is not supported (this relay speaks {PROTOCOL_VERSION})",
                frame.version
            ),
        );
        refuse_early(&relay, &mut send, refusal, started).await;
        return;
    }
    let action = frame.request.action();
    let cx = effects.cx(&relay);
    let mut body = Paced::new(
        &mut recv,
        Duration::from_secs(relay.config.body_grace_secs),
        relay.config.min_body_bytes_per_sec,
    );
    // A delivery's client sends its receipt on the stream once it has the body.
    let deliver = matches!(frame.request, Request::Deliver { .. });
    if !matches!(
        frame.request,
        Request::Submit { .. } | Request::Deliver { .. }
    ) {
        // Only a submission has a body: anything after another request's frame is refused
        // (threat 34), and the stream must end (the client finishes it after the frame).
        let mut extra = [0u8; 1];
        let refusal = match body.read(&mut extra).await {
            Ok(0) => None,
            Ok(_) => Some("trailing bytes after the request frame: only a submission has a body"),
            Err(_) => Some("the request stream did not end after its frame"),
        };
        if let Some(why) = refusal {
            tracing::info!(caller = %peer.id, action, reason = why, "refused");
            let _ = respond(&mut send, Err(Refusal::new(ErrorCode::BadRequest, why))).await;
            let seconds = started.elapsed().as_secs_f64();
            relay
                .metrics
                .request(action, Some(ErrorCode::BadRequest), seconds);
            return;
        }
    }
    if let Request::Subscribe { feed, dir_size } = frame.request {
        drop(body);
        drop(recv);
        super::subscription::serve(relay, effects, peer, _in_flight, feed, dir_size, send).await;
        return;
    }
    let outcome = handlers::handle(&relay, &peer, frame.request, &cx, &mut body).await;
    drop(body);
    let outcome = match (outcome, deliver) {
        (Ok(Outcome::Envelope { view, body }), false) => {
            send_envelope(&relay, &cx, &mut send, Reply::Envelope { view }, body, true).await
        }
        (Ok(Outcome::Envelope { view, body }), true) => {
            let (length, delivered) = (view.length, view.envelope_id);
            match send_envelope(
                &relay,
                &cx,
                &mut send,
                Reply::Envelope { view },
                body,
                false,
            )
            .await
            {
                Ok(()) => {
                    match super::receipt::on_stream(
                        &relay, &effects, &peer, &mut recv, length, delivered,
                    )
                    .await
                    {
                        Ok(Step::Recorded(reply)) => respond(&mut send, Ok(reply))
                            .await
                            .map_err(|_| Failure::Gone),
                        Ok(Step::NoReceipt) => {
                            let _ = send.finish();
                            Ok(())
                        }
                        // The client went, or did not send its receipt in time: it files it on its
                        // own (`Receipt`).
                        Ok(Step::Gone) => {
                            let _ = send.reset(0u32.into());
                            Err(Failure::Gone)
                        }
                        Err(r) => Err(Failure::Refused(r)),
                    }
                }
                Err(f) => Err(f),
            }
        }
        (Ok(Outcome::Reply(reply)), _) => respond(&mut send, Ok(reply))
            .await
            .map_err(|_| Failure::Gone),
        (Err(r), _) => Err(Failure::Refused(r)),
    };

    // Whether the whole answer was handed to QUIC (then the request waits for it to arrive).
    let (label, answered) = match outcome {
        Ok(()) => {
            tracing::info!(caller = %peer.id, action, ms = started.elapsed().as_millis() as u64, "ok");
            ("ok", true)
        }
        Err(Failure::Gone) => {
            tracing::info!(caller = %peer.id, action, "the client went away before its answer was written");
            ("aborted", false)
        }
        Err(Failure::TooSlow { taken }) => {
            tracing::info!(
                caller = %peer.id,
                action,
                taken,
                min_bytes_per_sec = relay.config.min_body_bytes_per_sec,
                grace_secs = relay.config.body_grace_secs,
                "the client took its answer too slowly: stream reset"
            );
            ("aborted", false)
        }
        Err(Failure::Refused(r)) => {
            tracing::info!(caller = %peer.id, action, code = ?r.code, reason = %r.message, "refused");
            let label = code_label(r.code);
            let answered = respond(&mut send, Err(r)).await.is_ok();
            (label, answered)
        }
    };
    relay
        .metrics
        .request_ended(action, label, started.elapsed().as_secs_f64());
    drop(recv);
    if answered {
        // The request stays in flight until the client has taken the rest of its answer (the
        // last write returns once the data is buffered, so this waits for the client to read
        // it, at most `body_grace_secs`): a shutdown waiting for the requests in flight must not
        // close the connection under an answer still on its way.
        let settle = Duration::from_secs(relay.config.body_grace_secs.max(1));
        let _ = tokio::time::timeout(settle, send.stopped()).await;
    }
}

/// A stream opened once shutdown has begun: answered [`SHUTTING_DOWN`] without reading the
/// request, and not counted in flight (shutdown does not wait for it).
pub async fn refuse_shutting_down(
    relay: Arc<Relay>,
    peer: Peer,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let started = Instant::now();
    tracing::debug!(caller = %peer.id, "refused a request: shutting down");
    let limit = Duration::from_secs(relay.config.body_grace_secs.max(1));
    let refusal = Refusal::new(ErrorCode::Unavailable, SHUTTING_DOWN);
    let _ = tokio::time::timeout(limit, respond(&mut send, Err(refusal))).await;
    // A body that follows is not wanted (the client still reads the answer).
    let _ = recv.stop(0u32.into());
    relay.metrics.request(
        "unknown",
        Some(ErrorCode::Unavailable),
        started.elapsed().as_secs_f64(),
    );
}

/// Why a request did not end with its answer written.
enum Failure {
    /// Refused: the refusal is the answer (if the stream still takes one).
    Refused(Refusal),
    /// The client stopped reading or reset the stream: nothing more can be written.
    Gone,
    /// The client took a fetched body slower than the minimum rate (after the grace period):
    /// the stream was reset after `taken` bytes of it.
    TooSlow { taken: u64 },
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

/// A refusal before the request's action is known (counted under action `unknown`).
async fn refuse_early(relay: &Relay, send: &mut SendStream, refusal: Refusal, started: Instant) {
    let code = refusal.code;
    let _ = respond(send, Err(refusal)).await;
    relay
        .metrics
        .request("unknown", Some(code), started.elapsed().as_secs_f64());
}

/// Writes the response frame and finishes the stream.
async fn respond(
    send: &mut SendStream,
    outcome: std::result::Result<Reply, Refusal>,
) -> Result<()> {
    let response = match outcome {
        Ok(reply) => Response::Ok(reply),
        Err(r) => Response::Err {
            code: r.code,
            message: r.message,
        },
    };
    write_response(send, &response).await?;
    let _ = send.finish();
    Ok(())
}

async fn write_response(send: &mut SendStream, response: &Response) -> Result<()> {
    write_frame(send, response).await.map_err(|e| match e {
        WriteFrameError::Encode(e) => e,
        WriteFrameError::Stream(e) => {
            Error::new(ErrorKind::Unavailable, format!("cannot answer: {e}"))
        }
    })
}

/// A stored piece that does not match its leaf: the operator alerted and the event logged, then
/// the stream reset with `RESET_DAMAGED` instead of the piece.
async fn damaged(relay: &Relay, send: &mut SendStream, envelope_id: &EnvelopeId) -> Failure {
    let _ = integrity_failure(relay, envelope_id, relay.clock.now()).await;
    let _ = send.reset(crate::core::wire::RESET_DAMAGED.into());
    Failure::Gone
}

/// A failure after the `Ok` header went out: the body cannot be followed by an error frame (the
/// client would read it as ciphertext), so the stream is reset; the client sees the body cut
/// short and verifies nothing.
fn after_header(send: &mut SendStream, f: Failure) -> Failure {
    let _ = send.reset(0u32.into());
    f
}

/// Runs blocking blob I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::internal("a blob task failed"))?
}

/// A piece read from a blob, and whether it matched its leaf.
struct Read {
    reader: Box<dyn BlobReader>,
    /// The piece (shorter than the piece when the blob ended before it).
    piece: Vec<u8>,
    /// Whole and matching its leaf.
    good: bool,
}

/// Piece `index` of a blob, read and checked against its leaf off the async threads (so the
/// hashing runs beside the connection's own work, not in its way).
async fn next_piece(
    reader: Box<dyn BlobReader>,
    buf: Vec<u8>,
    tree: Arc<Pieces>,
    index: u64,
) -> std::result::Result<Read, Refusal> {
    Ok(blocking(move || {
        let (mut reader, mut piece) = (reader, buf);
        reader.read(&mut piece)?;
        let want = pieces::piece_len(tree.len, index);
        let good = piece.len() >= want && {
            piece.truncate(want);
            tree.check(index, &piece).is_ok()
        };
        Ok(Read {
            reader,
            piece,
            good,
        })
    })
    .await?)
}

/// The pace a fetched body must be taken at, from now: the request body's rule, the other way.
fn download_pace(relay: &Relay) -> Pace {
    Pace::new(
        Duration::from_secs(relay.config.body_grace_secs),
        relay.config.min_body_bytes_per_sec,
    )
}

/// Writes the envelope reply's header by the pace's grace period.
async fn paced_header(
    send: &mut SendStream,
    pace: &Pace,
    reply: Reply,
) -> std::result::Result<(), Failure> {
    let header = Response::Ok(reply);
    match pace.within(0, write_response(send, &header)).await {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err(Failure::Gone),
        None => Err(after_header(send, Failure::TooSlow { taken: 0 })),
    }
}

/// Writes `piece` of a fetched body, `taken` bytes of which the client has already taken, by
/// the pace's deadline for `taken + piece.len()` bytes; a client that reads slower than that
/// has its stream reset. The piece is handed over, not copied.
async fn paced_write(
    send: &mut SendStream,
    pace: &Pace,
    taken: u64,
    piece: Bytes,
) -> std::result::Result<(), Failure> {
    let total = taken.saturating_add(piece.len() as u64);
    match pace.within(total, send.write_chunk(piece)).await {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err(after_header(send, Failure::Gone)),
        None => Err(after_header(send, Failure::TooSlow { taken })),
    }
}

/// The envelope reply, the piece list, then the ciphertext from the piece asked for, each
/// piece checked against its leaf just before it is sent (the list was checked against the
/// signed digest by the handler): an altered piece is never sent, and there is no whole pass
/// over the ciphertext before the first byte.
async fn send_envelope(
    relay: &Relay,
    cx: &Cx,
    send: &mut SendStream,
    reply: Reply,
    body: StoredBody,
    finish: bool,
) -> std::result::Result<(), Failure> {
    let StoredBody {
        envelope_id,
        pieces: tree,
        from,
        data,
    } = body;
    // The pace starts here: checking the list (the handler did) is the relay's time.
    let pace = download_pace(relay);
    paced_header(send, &pace, reply).await?;
    let list = tree.to_bytes();
    let mut sent = list.len() as u64;
    paced_write(send, &pace, 0, list.into()).await?;
    let length = tree.len;
    let tree = Arc::new(tree);
    let count = pieces::count(length);
    let mut index = from;
    match data {
        Stored::Inline(bytes) => {
            // These very bytes in memory were checked against the signed digest by the handler
            // a moment ago (`checked_body`): not hashed again.
            if index < count {
                let n = bytes.len() as u64;
                paced_write(send, &pace, sent, bytes.into()).await?;
                sent += n;
            }
        }
        Stored::Blob(reader) => {
            // The next piece is read and checked while this one is written.
            let read = |reader, index| {
                let buf = Vec::with_capacity(pieces::PIECE);
                tokio::spawn(next_piece(reader, buf, tree.clone(), index))
            };
            let mut next = (index < count).then(|| read(reader, index));
            while let Some(ahead) = next.take() {
                let Read {
                    reader,
                    piece,
                    good,
                } = ahead
                    .await
                    .map_err(|_| Refusal::from(Error::internal("a blob read failed")))
                    .and_then(|piece| piece)
                    .map_err(|r| after_header(send, r.into()))?;
                if piece.len() < pieces::piece_len(length, index) {
                    // Cut short at rest, or deleted meanwhile through another node (delivered or
                    // expired there): only the first is damage.
                    if still_waiting(relay, cx, &envelope_id).await {
                        return Err(damaged(relay, send, &envelope_id).await);
                    }
                    let r = Refusal::from(Error::io("the envelope went while it was sent"));
                    return Err(after_header(send, r.into()));
                }
                if !good {
                    return Err(damaged(relay, send, &envelope_id).await);
                }
                next = (index + 1 < count).then(|| read(reader, index + 1));
                let n = piece.len() as u64;
                paced_write(send, &pace, sent, piece.into()).await?;
                sent += n;
                index += 1;
            }
        }
    }
    relay.metrics.envelope_bytes(false, sent);
    if finish {
        let _ = send.finish();
    }
    Ok(())
}
