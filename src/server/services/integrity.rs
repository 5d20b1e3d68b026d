//! The stored-ciphertext integrity check, in one place for inline and blob bodies alike:
//! nothing is sent that does not match the digest the agent signed for (THREATS.md 30). The
//! digest is the root of the ciphertext's piece tree (`core::envelope::pieces`): here the
//! stored piece list is checked against it before the reply, and the shell checks each piece
//! against its leaf just before it sends it (`Pieces::check`), so there is no whole pass
//! over the ciphertext before the first byte. A mismatch is an alert, an event, and a refusal
//! (before the reply) or a reset stream (after it) with nothing altered sent.

use std::fmt;

use crate::core::envelope::pieces::{self, Pieces};
use crate::core::store::{EnvelopeRecord, WriteOp};
use crate::core::wire::ErrorCode;
use crate::ids::EnvelopeId;
use crate::store::blobs::BlobReader;

use super::effects::Cx;
use super::events;
use super::refusal::Refusal;
use super::relay::Relay;

/// Where a fetched envelope's ciphertext is.
pub enum Stored {
    /// Small envelopes (one piece), kept in the store itself.
    Inline(Vec<u8>),
    /// A blob, its reader at the first piece to send.
    Blob(Box<dyn BlobReader>),
}

/// A fetched envelope's ciphertext, its piece list checked against the signed digest, for the
/// shell to stream after the reply from piece `from` on, checking each piece as it goes.
pub struct StoredBody {
    pub envelope_id: EnvelopeId,
    pub pieces: Pieces,
    pub from: u64,
    pub data: Stored,
}

impl fmt::Debug for StoredBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredBody")
            .field("length", &self.pieces.len)
            .field("from", &self.from)
            .field("inline", &matches!(self.data, Stored::Inline(_)))
            .finish()
    }
}

/// The ciphertext of `record` from piece `from` on, its piece list checked against the signed
/// digest.
pub async fn checked_body(
    relay: &Relay,
    cx: &Cx,
    record: &EnvelopeRecord,
    from: u64,
) -> Result<StoredBody, Refusal> {
    let envelope_id = record.envelope_id;
    let length = record.length;
    if from > pieces::count(length) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "there is no piece {from}: this envelope has {} (ask from 0 for all of it)",
                pieces::count(length)
            ),
        ));
    }
    if record.inline {
        let bytes = relay
            .store
            .inline_body(&envelope_id)?
            .ok_or_else(|| Refusal::not_found("envelope"))?;
        // Its leaves (one, as INLINE_MAX ≤ PIECE) hashed once: they give the digest checked
        // here and the list sent ahead of it.
        let leaves: Vec<_> = bytes.chunks(pieces::PIECE).map(pieces::leaf).collect();
        if bytes.len() as u64 != length || pieces::root(&leaves) != record.sha256 {
            if crate::core::directory::sha256(&bytes) == record.sha256 {
                return Err(stored_before_pieces());
            }
            return Err(integrity_failure(relay, &envelope_id, cx.now).await);
        }
        return Ok(StoredBody {
            envelope_id,
            pieces: Pieces {
                leaves,
                len: length,
            },
            from,
            data: Stored::Inline(bytes),
        });
    }
    let blobs = relay.blobs.clone();
    let reader = cx
        .blocking(move || blobs.open(&envelope_id))
        .await?
        .ok_or_else(|| {
            tracing::error!(envelope = %envelope_id, "blob missing");
            Refusal::not_found("envelope")
        })?;
    let max = pieces::leaves_bytes(length)?;
    let (reader, list) = cx
        .blocking(move || {
            let mut reader = reader;
            let list = reader.trailer(length, max)?;
            reader.seek_piece(from)?;
            Ok((reader, list))
        })
        .await?;
    let Ok(pieces) = Pieces::checked(&list, length, &record.sha256) else {
        // No list, and a blob whose plain SHA-256 is the recorded digest: stored before
        // protocol 9, not damaged (a blob cut short or stripped of its list is not that).
        if list.is_empty() && length > 0 {
            let blobs = relay.blobs.clone();
            let old = cx
                .blocking(move || plain_sha256(blobs.as_ref(), &envelope_id, length))
                .await
                .ok()
                .flatten();
            if old == Some(record.sha256) {
                return Err(stored_before_pieces());
            }
        }
        // A database blob deleted while it was read (delivered or expired through another
        // node) reads short: that is no envelope, not a damaged one.
        if !still_waiting(relay, cx, &envelope_id).await {
            return Err(Refusal::not_found("envelope"));
        }
        return Err(integrity_failure(relay, &envelope_id, cx.now).await);
    };
    Ok(StoredBody {
        envelope_id,
        pieces,
        from,
        data: Stored::Blob(reader),
    })
}

/// Whether `envelope_id` still has its blob and its record, not yet receipted: what tells a
/// blob that reads wrong (damage) from one deleted meanwhile through another node.
pub async fn still_waiting(relay: &Relay, cx: &Cx, envelope_id: &EnvelopeId) -> bool {
    let (blobs, id) = (relay.blobs.clone(), *envelope_id);
    let blob_kept = cx
        .blocking(move || blobs.open(&id).map(|r| r.is_some()))
        .await
        .unwrap_or(false);
    blob_kept
        && relay
            .store
            .envelope(envelope_id)
            .ok()
            .flatten()
            .is_some_and(|e| e.receipt.is_none())
}

/// The plain SHA-256 of a blob's first `length` bytes, if it has exactly that many (the digest
/// a relay before protocol version 9 recorded).
fn plain_sha256(
    blobs: &dyn crate::store::blobs::BlobStore,
    envelope_id: &EnvelopeId,
    length: u64,
) -> crate::error::Result<Option<[u8; 32]>> {
    let Some(mut reader) = blobs.open(envelope_id)? else {
        return Ok(None);
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut buf, mut read) = (Vec::new(), 0u64);
    loop {
        reader.read(&mut buf)?;
        if buf.is_empty() {
            break;
        }
        read = read.saturating_add(buf.len() as u64);
        ctx.update(&buf);
    }
    if read != length {
        return Ok(None);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(Some(out))
}

/// An envelope a relay before protocol version 9 stored (its digest is a plain SHA-256, and a
/// blob has no piece list): not damaged, but no client of this version can check it.
fn stored_before_pieces() -> Refusal {
    Refusal::new(
        ErrorCode::Conflict,
        "this envelope was stored by a relay older than protocol version 9 and cannot be delivered by this one: ask its agent to send it again",
    )
}

/// Stored ciphertext does not match its digest: an alert, an event, and the refusal the caller
/// gets (nothing of the envelope is sent).
pub async fn integrity_failure(relay: &Relay, envelope_id: &EnvelopeId, now: u64) -> Refusal {
    tracing::error!(target: "sealrelay::alert", envelope = %envelope_id, "stored ciphertext does not match its digest");
    let event = events::integrity_failure(now, &relay.actor("store"), envelope_id);
    if let Err(e) = relay.committer.commit(WriteOp::Append { event }).await {
        tracing::error!(error = %e.message, "could not log an integrity failure");
    }
    Refusal::new(
        ErrorCode::Integrity,
        "the stored envelope is damaged (it does not match what the agent signed): nothing was sent; the relay's operator was alerted",
    )
}
