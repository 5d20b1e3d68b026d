//! The stored-ciphertext integrity check, in one place for inline and blob bodies alike:
//! nothing is sent that does not match the digest the agent signed for (THREATS.md 30). A
//! mismatch is an alert, an event, and a refusal that sends nothing of the envelope.

use std::fmt;

use crate::core::store::{EnvelopeRecord, WriteOp};
use crate::core::wire::ErrorCode;
use crate::ids::EnvelopeId;
use crate::net::frame::CHUNK;
use crate::store::blobs::BlobReader;

use super::effects::Cx;
use super::events;
use super::refusal::Refusal;
use super::relay::Relay;

/// A fetched envelope's ciphertext, checked, for the shell to stream after the reply.
pub enum StoredBody {
    /// Small envelopes, kept in the store itself.
    Inline(Vec<u8>),
    /// A blob of `length` bytes, read once already to check it and rewound.
    Blob {
        reader: Box<dyn BlobReader>,
        length: u64,
    },
}

impl fmt::Debug for StoredBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredBody::Inline(b) => f.debug_tuple("Inline").field(&b.len()).finish(),
            StoredBody::Blob { length, .. } => {
                f.debug_struct("Blob").field("length", length).finish()
            }
        }
    }
}

/// The ciphertext of `record`, checked against its signed digest.
pub async fn checked_body(
    relay: &Relay,
    cx: &Cx,
    record: &EnvelopeRecord,
) -> Result<StoredBody, Refusal> {
    let envelope_id = record.envelope_id;
    if record.inline {
        let bytes = relay
            .store
            .inline_body(&envelope_id)?
            .ok_or_else(|| Refusal::not_found("envelope"))?;
        if crate::core::directory::sha256(&bytes) != record.sha256 {
            return Err(integrity_failure(relay, &envelope_id, cx.now).await);
        }
        return Ok(StoredBody::Inline(bytes));
    }
    let blobs = relay.blobs.clone();
    let reader = cx
        .blocking(move || blobs.open(&envelope_id))
        .await?
        .ok_or_else(|| {
            tracing::error!(envelope = %envelope_id, "blob missing");
            Refusal::not_found("envelope")
        })?;
    // Hash the whole blob first (a file's second read comes from the page cache).
    let (reader, digest) = cx.blocking(move || blob_digest(reader)).await?;
    if digest != record.sha256 {
        // A database blob deleted while it was read (delivered or expired through another
        // node) reads short: that is no envelope, not a damaged one.
        let blobs = relay.blobs.clone();
        let blob_kept = cx
            .blocking(move || blobs.open(&envelope_id).map(|r| r.is_some()))
            .await
            .unwrap_or(false);
        let waiting = relay
            .store
            .envelope(&envelope_id)
            .ok()
            .flatten()
            .is_some_and(|e| e.receipt.is_none());
        if !(blob_kept && waiting) {
            return Err(Refusal::not_found("envelope"));
        }
        return Err(integrity_failure(relay, &envelope_id, cx.now).await);
    }
    Ok(StoredBody::Blob {
        reader,
        length: record.length,
    })
}

/// The SHA-256 of a whole blob, then the blob rewound.
fn blob_digest(
    mut reader: Box<dyn BlobReader>,
) -> crate::error::Result<(Box<dyn BlobReader>, [u8; 32])> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        reader.read(&mut buf)?;
        if buf.is_empty() {
            break;
        }
        ctx.update(&buf);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    reader.rewind()?;
    Ok((reader, out))
}

/// Stored ciphertext does not match its digest: an alert, an event, and the refusal the caller
/// gets (nothing of the envelope is sent).
async fn integrity_failure(relay: &Relay, envelope_id: &EnvelopeId, now: u64) -> Refusal {
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
