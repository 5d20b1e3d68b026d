//! An agent's submission: every check that can be made before the body is, then the body is
//! streamed (to memory when small, piece by piece to an uncommitted blob otherwise) while it is
//! validated as a
//! single-recipient age file and hashed, and the grant is consumed and the envelope stored in
//! one durable transaction.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::core::envelope::pieces;
use crate::core::envelope::submission::Submission;
use crate::core::envelope::validate::EnvelopeValidator;
use crate::core::grant_state;
use crate::core::policy::{Action, Context};
use crate::core::sign::StatementType;
use crate::core::store::{EnvelopeRecord, GrantState, StoredSigned, WriteOp, WriteRefusal};
use crate::core::wire::{ErrorCode, Feed, Reply, WireSigned};
use crate::ids::{EnvelopeId, GrantId, PartyKind};
use crate::net::frame::CHUNK;
use crate::net::Peer;
use crate::store::blobs::{BlobWriter, PIECE};

use crate::server::services::effects::Cx;
use crate::server::services::events;
use crate::server::services::misbehaviour::Signal;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

/// Envelopes up to this size are stored inline in the store (committed with their batch, no
/// blob and no per-envelope fsync); larger ones stream to the relay's blob store.
pub const INLINE_MAX: u64 = 64 * 1024;
const _: () = assert!(INLINE_MAX <= pieces::PIECE as u64);

pub async fn submit<B: AsyncRead + Unpin + Send>(
    relay: &Relay,
    peer: &Peer,
    grant_id: GrantId,
    statement: WireSigned,
    length: u64,
    cx: &Cx,
    body: &mut B,
) -> Handled {
    let now = cx.now;
    // A source submits for a grant dispatched to it (docs/sources.md), an agent for a grant
    // addressed to it; any other grant is "no such grant".
    let assignment = match peer.id.kind() {
        PartyKind::Source => Some(
            relay
                .store
                .assignment(&grant_id)?
                .filter(|a| a.source == peer.id),
        ),
        _ => None,
    };
    let grant = relay.store.grant(&grant_id)?.filter(|g| match &assignment {
        Some(a) => a.is_some(),
        None => g.agent == peer.id,
    });
    let Some(grant) = grant else {
        // Still authenticate (and rate-limit, and refuse a quarantined agent) first.
        relay.authorize_relay(cx, peer, Action::ListGrants).await?;
        return Err(Refusal::not_found("grant"));
    };
    let assignment = assignment.flatten();
    // The agent the grant is addressed to: the caller, or the one that dispatched it.
    let acting = grant.agent.clone();
    match &assignment {
        Some(_) => {
            let ctx = Context {
                size: Some(length),
                ..super::sources::fill_context(relay, &grant, &peer.id, now)
            };
            relay.authorize(cx, peer, Action::Fill, &ctx).await?;
        }
        None => {
            let ctx = Context {
                target: Relay::grant_target(&grant),
                user: Some(grant.user.clone()),
                agent: Some(peer.id.clone()),
                now,
                size: Some(length),
                ..Context::default()
            };
            // A grant listed to the agent as ready, but denied now (the catalog was reloaded
            // and the resource needs an approval it did not need when the grant was made) is
            // not the agent's doing: such a denial is not counted against it.
            let avoidable = !grant_state::is_ready(&grant, now);
            relay
                .authorize_counting(cx, peer, Action::Submit, &ctx, avoidable)
                .await?;
        }
    }
    // A submission repeated after a lost answer (the same signed statement on a used grant)
    // gets the original answer, without its body being read again.
    if let GrantState::Used { envelope_id } = grant.state {
        let same = relay.store.envelope(&envelope_id)?.is_some_and(|e| {
            e.agent == acting
                && e.statement.statement == statement.statement
                && e.statement.signature == statement.signature
        });
        if same {
            // Its first answer may have been lost with a commit that did land: the user's
            // subscriptions hear of it now (they send nothing twice).
            relay.feeds.publish(&grant.user, Feed::Inbox, envelope_id.0);
            return Ok(Reply::Submitted { envelope_id });
        }
    }
    if length > relay.config.max_envelope_bytes {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "the envelope is over the relay's limit of {} bytes",
                relay.config.max_envelope_bytes
            ),
        ));
    }
    // Early checks, so a refused body is not read; the store checks the same rules again
    // inside the commit.
    grant_state::check_consume(&grant, &acting, length, now)?;
    // A grant dispatched to a source is the source's to fill, even once it refused (the store
    // checks it again).
    if assignment.is_none() && relay.store.assignment(&grant_id)?.is_some() {
        return Err(WriteRefusal::AlreadyDispatched.into());
    }
    // A grant whose user holds only an X25519 key cannot be filled while post-quantum
    // recipients are required (one made before the setting, or before a rotation): refused
    // before the body, and not counted against the agent, which could not have avoided it.
    // Nothing is stored for a user who is no longer enrolled (revoked, expired): no client of
    // theirs could fetch it. Not the agent's doing either.
    user_enrolled(relay, &grant.user, now)?;
    if !super::grants::fillable(relay, &grant.user, now) {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            super::grants::UNFILLABLE,
        ));
    }
    // One upload per grant at a time, and the agent's caps, claimed before any body byte is
    // read; the claim ends with this request.
    let _slot = relay
        .uploads
        .begin(grant_id, &peer.id, length, &relay.config.quotas)?;
    let (signed, claimed_sha256) = match &assignment {
        Some(a) => {
            super::sources::checked_statement(relay, peer, &grant, a, &statement, length, now)?
        }
        None => {
            let (agent_entry, _) = relay.entry_for(&peer.id, now)?;
            let signed = statement.to_signed(StatementType::Submission)?;
            let claimed = Submission::decode(&signed.statement)?;
            signed.verify(&agent_entry.signing_key).map_err(|e| {
                Refusal::new(
                    ErrorCode::BadRequest,
                    format!("the submission statement does not verify: {e}"),
                )
            })?;
            if claimed.grant_id != grant_id
                || claimed.user != grant.user
                || claimed.agent != peer.id
                || claimed.ciphertext_len != length
            {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "the submission statement does not match this grant and length",
                ));
            }
            (signed, claimed.ciphertext_root)
        }
    };

    let envelope_id = EnvelopeId::random()?;
    let inline = length <= INLINE_MAX;
    // A refused body leaves nothing: the uncommitted blob is discarded.
    let (inline_body, blob, digest) =
        receive(relay, peer, &envelope_id, length, inline, cx, body).await?;
    let checked = if digest != claimed_sha256 {
        Err(Refusal::new(
            ErrorCode::BadRequest,
            "the body does not match the digest in the signed statement",
        ))
    } else {
        // The body took time: judge the grant's expiry and the caller's standing as of now.
        relay.commit_time_check(cx, peer).and_then(|now| {
            grant_state::check_consume(&grant, &acting, length, now)?;
            // A revocation of the user that came during a slow upload ends it too.
            user_enrolled(relay, &grant.user, now)?;
            Ok(now)
        })
    };
    let now = match checked {
        Ok(now) => now,
        Err(r) => {
            cx.discard(blob).await;
            return Err(r);
        }
    };
    if let Some(b) = blob {
        // Durable before the record that names it (a file's fsync and rename, a database's
        // synchronous commit): off the async threads.
        if let Err(e) = cx.blocking(move || b.commit()).await {
            // The rename may have happened before the failure: no blob without its record.
            cx.remove_blob(&relay.blobs, envelope_id).await;
            return Err(e.into());
        }
    }
    let record = EnvelopeRecord {
        envelope_id,
        grant_id,
        user: grant.user.clone(),
        agent: acting.clone(),
        length,
        sha256: claimed_sha256,
        received_at: now,
        expires_at: now.saturating_add(relay.config.envelope_ttl_secs),
        statement: StoredSigned {
            statement: signed.statement.clone(),
            signature: signed.signature.to_vec(),
        },
        receipt: None,
        inline,
    };
    let event = events::envelope_submitted(
        now,
        &peer.id,
        &envelope_id,
        &grant_id,
        &grant.user,
        &claimed_sha256,
        length,
        &signed,
    );
    let op = WriteOp::ConsumeGrant {
        agent: acting.clone(),
        source: assignment.as_ref().map(|a| a.source.clone()),
        envelope: record,
        inline_body,
        now,
        quotas: relay.config.quotas.store_quotas(),
        event,
    };
    match relay.commit(op).await {
        Ok(_) => {
            relay.metrics.envelope_bytes(true, length);
            relay.feeds.publish(&grant.user, Feed::Inbox, envelope_id.0);
            Ok(Reply::Submitted { envelope_id })
        }
        Err(r) => {
            // A refusal by the store's rules committed nothing: the blob goes. After an I/O
            // failure the record's fate is unknown (a failed fsync may still be read back), so
            // the blob stays for a repeated submission to find; if no record names it, the
            // start-up sweep removes it.
            if !inline && !matches!(r.code, ErrorCode::Unavailable | ErrorCode::Internal) {
                cx.remove_blob(&relay.blobs, envelope_id).await;
            }
            Err(r)
        }
    }
}

/// The grant's user still has an active directory entry at `now`.
fn user_enrolled(relay: &Relay, user: &crate::ids::SpiffeId, now: u64) -> Result<(), Refusal> {
    relay.entry_for(user, now).map(|_| ()).map_err(|_| {
        Refusal::new(
            ErrorCode::Forbidden,
            format!(
                "the grant's user {} is no longer enrolled (revoked or expired): nothing can be delivered to them; this is not counted against the agent",
                user.short()
            ),
        )
    })
}

/// Reads exactly `length` body bytes (and then the end of the stream), validating and hashing
/// them on the way; small bodies are returned, large ones written to a blob in whole pieces
/// (one piece in memory at a time).
async fn receive<B: AsyncRead + Unpin + Send>(
    relay: &Relay,
    peer: &Peer,
    envelope_id: &EnvelopeId,
    length: u64,
    inline: bool,
    cx: &Cx,
    body: &mut B,
) -> Result<(Option<Vec<u8>>, Option<Box<dyn BlobWriter>>, [u8; 32]), Refusal> {
    let mut blob = if inline {
        None
    } else {
        relay.store.ensure_room(length)?;
        let (blobs, id) = (relay.blobs.clone(), *envelope_id);
        Some(cx.blocking(move || blobs.create(&id)).await?)
    };
    match receive_into(relay, peer, length, inline, cx, body, &mut blob).await {
        Ok((kept, digest)) => Ok((kept, blob, digest)),
        Err(r) => {
            cx.discard(blob).await;
            Err(r)
        }
    }
}

/// [`receive`]'s body: the bytes kept (inline), or streamed into `blob`.
async fn receive_into<B: AsyncRead + Unpin + Send>(
    relay: &Relay,
    peer: &Peer,
    length: u64,
    inline: bool,
    cx: &Cx,
    body: &mut B,
    blob: &mut Option<Box<dyn BlobWriter>>,
) -> Result<(Option<Vec<u8>>, [u8; 32]), Refusal> {
    let validator = EnvelopeValidator::new().allowing_x25519(!relay.config.require_post_quantum);
    match blob.take() {
        Some(b) => {
            let (b, outcome) = receive_blob(cx, length, body, b, validator).await;
            *blob = b;
            match outcome {
                Ok(digest) => Ok((None, digest)),
                Err(Stop::Invalid(message)) => {
                    relay
                        .signal(cx, &peer.id, Signal::InvalidEnvelope, None, cx.now)
                        .await;
                    Err(Refusal::new(ErrorCode::InvalidEnvelope, message))
                }
                Err(Stop::Refused(r)) => Err(r),
            }
        }
        None if inline => receive_inline(relay, peer, length, cx, body, validator).await,
        None => Err(Refusal::from(crate::error::Error::internal(
            "a large body without a blob to hold it",
        ))),
    }
}

/// Why a body was not taken.
enum Stop {
    /// The bytes are not a valid envelope (the agent is signalled to the monitor).
    Invalid(String),
    Refused(Refusal),
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

/// A small body, kept in memory and validated and hashed as it arrives.
async fn receive_inline<B: AsyncRead + Unpin + Send>(
    relay: &Relay,
    peer: &Peer,
    length: u64,
    cx: &Cx,
    body: &mut B,
    mut validator: EnvelopeValidator,
) -> Result<(Option<Vec<u8>>, [u8; 32]), Refusal> {
    let len = usize::try_from(length).unwrap_or(0);
    let mut kept = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = body.read(&mut kept[got..]).await.map_err(upload_failed)?;
        if n == 0 {
            return Err(ended_early());
        }
        if let Err(e) = validator.update(&kept[got..got + n]) {
            relay
                .signal(cx, &peer.id, Signal::InvalidEnvelope, None, cx.now)
                .await;
            return Err(Refusal::new(ErrorCode::InvalidEnvelope, e.to_string()));
        }
        got += n;
    }
    expect_end(body).await?;
    if let Err(e) = validator.finish() {
        relay
            .signal(cx, &peer.id, Signal::InvalidEnvelope, None, cx.now)
            .await;
        return Err(Refusal::new(ErrorCode::InvalidEnvelope, e.to_string()));
    }
    // One piece at most (INLINE_MAX ≤ PIECE): its leaf is the root.
    let digest = pieces::digest(&kept);
    Ok((Some(kept), digest))
}

/// What the blocking jobs carry from one chunk to the next: the blob, the validator, the leaf
/// hashes of the pieces written and the piece being filled.
struct Taker {
    blob: Box<dyn BlobWriter>,
    validator: EnvelopeValidator,
    leaves: Vec<[u8; 32]>,
    piece: Vec<u8>,
}

impl Taker {
    /// Validates a chunk, and hashes and writes each piece it fills.
    fn take(&mut self, chunk: &[u8]) -> Result<(), Stop> {
        self.validator
            .update(chunk)
            .map_err(|e| Stop::Invalid(e.to_string()))?;
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

    fn write_piece(&mut self) -> Result<(), Stop> {
        self.leaves.push(pieces::leaf(&self.piece));
        self.blob
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
        let list = self.leaves.concat();
        for part in list.chunks(PIECE) {
            self.blob.write(part).map_err(|e| Stop::Refused(e.into()))?;
        }
        Ok(())
    }
}

/// A blocking job: the state back, the outcome, and the chunk's buffer for the next read.
type Job = tokio::sync::oneshot::Receiver<(Taker, Result<(), Stop>, Vec<u8>)>;

/// A large body: each chunk read from the network is validated, hashed and written by a
/// blocking job while the next chunk is read, so receiving and storing overlap; no thread
/// waits on the network (a slow upload holds no blocking thread). The writer comes back for
/// the caller to commit or discard. A failure of a job (invalid bytes, a failed write)
/// concerns earlier bytes than one seen by the reader after it, so it is the one reported.
async fn receive_blob<B: AsyncRead + Unpin + Send>(
    cx: &Cx,
    length: u64,
    body: &mut B,
    blob: Box<dyn BlobWriter>,
    validator: EnvelopeValidator,
) -> (Option<Box<dyn BlobWriter>>, Result<[u8; 32], Stop>) {
    let lost = || {
        Stop::Refused(Refusal::from(crate::error::Error::internal(
            "a blob write task failed",
        )))
    };
    let mut taker = Some(Taker {
        blob,
        validator,
        leaves: Vec::new(),
        piece: Vec::with_capacity(PIECE),
    });
    let mut job: Option<Job> = None;
    let mut spare = vec![0u8; CHUNK];
    let mut remaining = length;
    let mut read_failure = None;
    while remaining > 0 {
        let mut buf = std::mem::take(&mut spare);
        buf.resize(CHUNK, 0);
        let want = usize::try_from(remaining.min(CHUNK as u64)).unwrap_or(CHUNK);
        let n = match body.read(&mut buf[..want]).await {
            Ok(0) => Err(ended_early()),
            Ok(n) => Ok(n),
            Err(e) => Err(upload_failed(e)),
        };
        // The previous chunk's job: its state comes back for this chunk.
        if let Some(j) = job.take() {
            let Ok((t, r, back)) = j.await else {
                return (None, Err(lost()));
            };
            spare = back;
            if let Err(stop) = r {
                return (Some(t.blob), Err(stop));
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
            return (Some(t.blob), Err(stop));
        }
        taker = Some(t);
    }
    let Some(t) = taker else {
        return (None, Err(lost()));
    };
    if let Some(r) = read_failure {
        return (Some(t.blob), Err(Stop::Refused(r)));
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
        return (Some(t.blob), Err(stop));
    }
    let outcome = match expect_end(body).await {
        Err(r) => Err(Stop::Refused(r)),
        Ok(()) => {
            let digest = pieces::root(&t.leaves);
            t.validator
                .finish()
                .map(|_| digest)
                .map_err(|e| Stop::Invalid(e.to_string()))
        }
    };
    (Some(t.blob), outcome)
}
