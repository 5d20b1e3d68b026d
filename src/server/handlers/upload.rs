//! A submission's body: read exactly its declared length (and then the end of the stream),
//! checked as a single-recipient age file and hashed piece by piece on the way; a small body
//! is kept in memory, a large one written to an uncommitted blob one whole piece at a time. A
//! large body that breaks off hands back what it holds at its last whole piece, for the
//! submission to park and its sender to resume (`services::uploads`).

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::core::envelope::pieces;
use crate::core::envelope::validate::EnvelopeValidator;
use crate::core::wire::ErrorCode;
use crate::ids::EnvelopeId;
use crate::net::frame::CHUNK;
use crate::net::Peer;
use crate::store::blobs::{BlobWriter, PIECE};

use crate::server::services::effects::Cx;
use crate::server::services::misbehaviour::Signal;
use crate::server::services::refusal::Refusal;
use crate::server::services::relay::Relay;
use crate::server::services::uploads::{UploadSlot, UploadState};

/// A body taken whole: the bytes (inline) or the blob to commit, and the root of its pieces.
pub type Taken = (Option<Vec<u8>>, Option<Box<dyn BlobWriter>>, [u8; 32]);

/// A body not taken: why, and, when the transfer broke off (the stream was reset or the
/// connection lost before the declared length) or a resumed one found no room for the rest,
/// what a large one holds at its last whole piece.
pub type NotTaken = (Refusal, Option<UploadState>);

/// Reads the body of envelope `envelope_id` (`length` bytes in all). `resumed`: what a broken
/// upload kept (its pieces are not sent again: the body starts at the piece after them).
#[allow(clippy::too_many_arguments)]
pub async fn receive<B: AsyncRead + Unpin + Send>(
    relay: &Relay,
    peer: &Peer,
    envelope_id: &EnvelopeId,
    length: u64,
    inline: bool,
    resumed: Option<UploadState>,
    slot: &UploadSlot<'_>,
    cx: &Cx,
    body: &mut B,
) -> Result<Taken, NotTaken> {
    let validator = EnvelopeValidator::new().allowing_x25519(!relay.config.require_post_quantum);
    if inline {
        return match receive_inline(length, body, validator).await {
            Ok((kept, digest)) => Ok((Some(kept), None, digest)),
            Err(stop) => Err((refusal(relay, peer, cx, stop).await, None)),
        };
    }
    // Room for this body beside what the uploads receiving now will still write.
    let others = relay.uploads.outstanding(slot.grant());
    let state = match resumed {
        Some(state) => {
            let rest = length.saturating_sub(state.leaves.len() as u64 * PIECE as u64);
            // No room now: what is kept stays kept (parked again), for a try once there is.
            if let Err(r) = relay.store.ensure_room(rest.saturating_add(others)) {
                return Err((r.into(), Some(state)));
            }
            state
        }
        None => {
            if let Err(r) = relay.store.ensure_room(length.saturating_add(others)) {
                return Err((r.into(), None));
            }
            let (blobs, id) = (relay.blobs.clone(), *envelope_id);
            let blob = match cx.blocking(move || blobs.create(&id)).await {
                Ok(b) => b,
                Err(e) => return Err((e.into(), None)),
            };
            UploadState {
                envelope_id: *envelope_id,
                blob,
                validator,
                leaves: Vec::new(),
            }
        }
    };
    match receive_blob(cx, length, body, state, slot).await {
        (Some(state), Ok(digest)) => Ok((None, Some(state.blob), digest)),
        (state, Err(stop)) => {
            let broke = matches!(stop, Stop::Broke(_));
            let r = refusal(relay, peer, cx, stop).await;
            match state {
                Some(s) if broke && !s.leaves.is_empty() => Err((r, Some(s))),
                Some(s) => {
                    cx.discard(Some(s.blob)).await;
                    Err((r, None))
                }
                None => Err((r, None)),
            }
        }
        (None, Ok(_)) => Err((Refusal::internal(), None)),
    }
}

/// Why a body was not taken.
enum Stop {
    /// The bytes are not a valid envelope (the sender is signalled to the monitor).
    Invalid(String),
    /// The transfer broke off (a reset or lost stream) before the declared length.
    Broke(Refusal),
    Refused(Refusal),
}

async fn refusal(relay: &Relay, peer: &Peer, cx: &Cx, stop: Stop) -> Refusal {
    match stop {
        Stop::Invalid(message) => {
            relay
                .signal(cx, &peer.id, Signal::InvalidEnvelope, None, cx.now)
                .await;
            Refusal::new(ErrorCode::InvalidEnvelope, message)
        }
        Stop::Broke(r) | Stop::Refused(r) => r,
    }
}

fn upload_failed(e: std::io::Error) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, format!("the upload failed: {e}"))
}

fn ended_early() -> Refusal {
    Refusal::new(
        ErrorCode::BadRequest,
        "the body ended before its declared length",
    )
}

/// Reads what follows the declared length: nothing, then the end of the stream.
async fn expect_end<B: AsyncRead + Unpin + Send>(body: &mut B) -> Result<(), Refusal> {
    let mut extra = [0u8; 1];
    if body.read(&mut extra).await.map_err(upload_failed)? != 0 {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the body is longer than its declared length",
        ));
    }
    Ok(())
}

/// A small body, kept in memory and validated as it arrives.
async fn receive_inline<B: AsyncRead + Unpin + Send>(
    length: u64,
    body: &mut B,
    mut validator: EnvelopeValidator,
) -> Result<(Vec<u8>, [u8; 32]), Stop> {
    let len = usize::try_from(length).unwrap_or(0);
    let mut kept = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = body
            .read(&mut kept[got..])
            .await
            .map_err(|e| Stop::Refused(upload_failed(e)))?;
        if n == 0 {
            return Err(Stop::Refused(ended_early()));
        }
        validator
            .update(&kept[got..got + n])
            .map_err(|e| Stop::Invalid(e.to_string()))?;
        got += n;
    }
    expect_end(body).await.map_err(Stop::Refused)?;
    validator
        .finish()
        .map_err(|e| Stop::Invalid(e.to_string()))?;
    // One piece at most (INLINE_MAX ≤ PIECE): its leaf is the root.
    let digest = pieces::digest(&kept);
    Ok((kept, digest))
}

/// What the blocking jobs carry from one chunk to the next: the upload's state (whole pieces
/// checked, hashed and written) and the piece being filled.
struct Taker {
    up: UploadState,
    piece: Vec<u8>,
}

impl Taker {
    /// Fills the piece; each whole piece is checked, hashed and written.
    fn take(&mut self, chunk: &[u8]) -> Result<(), Stop> {
        let mut rest = chunk;
        while !rest.is_empty() {
            let take = rest.len().min(PIECE - self.piece.len());
            self.piece.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.piece.len() == PIECE {
                self.write_piece()?;
            }
        }
        Ok(())
    }

    /// The envelope checks see a piece only once it is whole, so that the state kept for a
    /// resumed upload is exactly that of the pieces written.
    fn write_piece(&mut self) -> Result<(), Stop> {
        self.up
            .validator
            .update(&self.piece)
            .map_err(|e| Stop::Invalid(e.to_string()))?;
        self.up.leaves.push(pieces::leaf(&self.piece));
        self.up
            .blob
            .write(&self.piece)
            .map_err(|e| Stop::Refused(e.into()))?;
        self.piece.clear();
        Ok(())
    }

    /// The last, short piece, then the piece list after the ciphertext (what a fetch checks
    /// each piece against).
    fn finish(&mut self) -> Result<(), Stop> {
        if !self.piece.is_empty() {
            self.write_piece()?;
        }
        let list = self.up.leaves.concat();
        for part in list.chunks(PIECE) {
            self.up
                .blob
                .write(part)
                .map_err(|e| Stop::Refused(e.into()))?;
        }
        Ok(())
    }
}

/// A blocking job: the state back, the outcome, and the chunk's buffer for the next read.
type Job = tokio::sync::oneshot::Receiver<(Taker, Result<(), Stop>, Vec<u8>)>;

/// A large body, from the piece after those `up` holds: each chunk read from the network is
/// checked, hashed and written by a blocking job while the next chunk is read, so receiving
/// and storing overlap; no thread waits on the network (a slow upload holds no blocking
/// thread). The state comes back for the caller to commit, park or discard. A failure of a job
/// (invalid bytes, a failed write) concerns earlier bytes than one seen by the reader after it,
/// so it is the one reported.
async fn receive_blob<B: AsyncRead + Unpin + Send>(
    cx: &Cx,
    length: u64,
    body: &mut B,
    up: UploadState,
    slot: &UploadSlot<'_>,
) -> (Option<UploadState>, Result<[u8; 32], Stop>) {
    let lost = || {
        Stop::Refused(Refusal::from(crate::error::Error::internal(
            "a blob write task failed",
        )))
    };
    let kept = (up.leaves.len() as u64).saturating_mul(PIECE as u64);
    let Some(mut remaining) = length.checked_sub(kept) else {
        return (Some(up), Err(Stop::Refused(Refusal::internal())));
    };
    let mut taker = Some(Taker {
        up,
        piece: Vec::with_capacity(PIECE),
    });
    let mut job: Option<Job> = None;
    let mut spare = vec![0u8; CHUNK];
    let mut read_failure = None;
    while remaining > 0 {
        let mut buf = std::mem::take(&mut spare);
        buf.resize(CHUNK, 0);
        let want = usize::try_from(remaining.min(CHUNK as u64)).unwrap_or(CHUNK);
        // A stream finished early is the sender's word that the body is done (refused); a
        // stream reset or a connection lost is a break (kept for the sender to resume).
        let n = match body.read(&mut buf[..want]).await {
            Ok(0) => Err(Stop::Refused(ended_early())),
            Ok(n) => Ok(n),
            Err(e) => Err(Stop::Broke(upload_failed(e))),
        };
        // The previous chunk's job: its state comes back for this chunk.
        if let Some(j) = job.take() {
            let Ok((t, r, back)) = j.await else {
                return (None, Err(lost()));
            };
            spare = back;
            if let Err(stop) = r {
                return (Some(t.up), Err(stop));
            }
            taker = Some(t);
        }
        let n = match n {
            Ok(n) => n,
            Err(r) => {
                read_failure = Some(r);
                break;
            }
        };
        buf.truncate(n);
        remaining -= n as u64;
        slot.took(n as u64);
        let Some(mut t) = taker.take() else {
            return (None, Err(lost()));
        };
        job = Some(cx.start(move || {
            let r = t.take(&buf);
            (t, r, buf)
        }));
    }
    if let Some(j) = job.take() {
        let Ok((t, r, _)) = j.await else {
            return (None, Err(lost()));
        };
        if let Err(stop) = r {
            return (Some(t.up), Err(stop));
        }
        taker = Some(t);
    }
    let Some(t) = taker else {
        return (None, Err(lost()));
    };
    if let Some(stop) = read_failure {
        // The piece being filled is dropped: the state is that of the whole pieces written.
        return (Some(t.up), Err(stop));
    }
    // The last, short piece and the piece list.
    let Ok((t, written)) = cx
        .start(move || {
            let mut t = t;
            let r = t.finish();
            (t, r)
        })
        .await
    else {
        return (None, Err(lost()));
    };
    if let Err(stop) = written {
        return (Some(t.up), Err(stop));
    }
    if let Err(r) = expect_end(body).await {
        return (Some(t.up), Err(Stop::Refused(r)));
    }
    let digest = pieces::root(&t.up.leaves);
    let mut up = t.up;
    let checked = std::mem::take(&mut up.validator).finish();
    (
        Some(up),
        checked
            .map(|_| digest)
            .map_err(|e| Stop::Invalid(e.to_string())),
    )
}
