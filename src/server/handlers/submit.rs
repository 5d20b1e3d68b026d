//! An agent's (or a source's) submission: every check that can be made before the body is,
//! then the body is streamed (`upload`: to memory when small, piece by piece to an uncommitted
//! blob otherwise) while it is validated as a single-recipient age file and hashed, and the
//! grant is consumed and the envelope stored in one durable transaction. A large body that
//! breaks off is parked for its sender to resume (`Resumable`, then `Submit { from_piece }`).

use tokio::io::AsyncRead;

use crate::core::envelope::pieces;
use crate::core::envelope::submission::Submission;
use crate::core::grant_state;
use crate::core::policy::{Action, Context};
use crate::core::sign::StatementType;
use crate::core::store::{EnvelopeRecord, GrantState, StoredSigned, WriteOp, WriteRefusal};
use crate::core::wire::{ErrorCode, Feed, Reply, WireSigned};
use crate::ids::{EnvelopeId, GrantId, PartyKind};
use crate::net::Peer;

use crate::server::services::effects::Cx;
use crate::server::services::events;
use crate::server::services::misbehaviour::Signal;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

/// Envelopes up to this size are stored inline in the store (committed with their batch, no
/// blob and no per-envelope fsync); larger ones stream to the relay's blob store.
pub const INLINE_MAX: u64 = 64 * 1024;
const _: () = assert!(INLINE_MAX <= pieces::PIECE as u64);

/// How long after its envelope was stored a repeated submission still tells the user's
/// subscriptions of it again (seconds).
pub const REPUBLISH_WITHIN: u64 = 60;

/// A submission whose body starts at piece `from_piece` (0: all of it; more: the rest of a
/// parked upload).
#[allow(clippy::too_many_arguments)]
pub async fn submit<B: AsyncRead + Unpin + Send>(
    relay: &Relay,
    peer: &Peer,
    grant_id: GrantId,
    statement: WireSigned,
    length: u64,
    from_piece: u64,
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
            // not the agent's doing: such a denial is not counted against it. Only a grant
            // still awaiting its approval was the agent's to wait for; a late or repeated
            // submission is refused as such (never counted) under an unchanged catalog, and
            // is not counted under a changed one either.
            let avoidable = grant_state::awaits_approval(&grant, now);
            relay
                .authorize_counting(cx, peer, Action::Submit, &ctx, avoidable)
                .await?;
        }
    }
    // A submission repeated after a lost answer (the same signed statement on a used grant)
    // gets the original answer, without its body being read again.
    if let GrantState::Used { envelope_id } = grant.state {
        let same = relay.store.envelope(&envelope_id)?.filter(|e| {
            e.agent == acting
                && e.statement.statement == statement.statement
                && e.statement.signature == statement.signature
        });
        if let Some(e) = same {
            // Its first answer may have been lost with a commit that did land: the user's
            // subscriptions hear of it now (they send nothing twice), unless nothing is left
            // to deliver, they heard of it lately, or it is older than a retry after a lost
            // answer would be (an agent repeating old submissions in turn, more of them than
            // a subscription queues, would otherwise put the user's subscriptions behind).
            if e.receipt.is_none()
                && now < e.expires_at
                && now.saturating_sub(e.received_at) <= REPUBLISH_WITHIN
            {
                relay
                    .feeds
                    .publish_again(&grant.user, Feed::Inbox, envelope_id.0);
            }
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
    // A grant dispatched to a source is the source's to fill, even once it refused (which
    // closed it; the store checks it again).
    if assignment.is_none() && relay.store.assignment(&grant_id)?.is_some() {
        return Err(WriteRefusal::AlreadyDispatched.into());
    }
    grant_state::check_consume(&grant, &acting, length, now)?;
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
    let (signed, claimed_root) = match &assignment {
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

    // One upload per grant at a time, and the agent's caps, claimed before any body byte is
    // read (and once the statement verified: a parked upload is taken back only by one that
    // could go on); the claim ends with this request, or passes to the upload parked when it
    // breaks.
    let (slot, resumed) = if from_piece == 0 {
        let (slot, superseded) =
            relay
                .uploads
                .begin(grant_id, &peer.id, length, &relay.config.quotas)?;
        if let Some(old) = superseded {
            cx.discard(Some(old.state.blob)).await;
        }
        (slot, None)
    } else {
        let (slot, state) = relay
            .uploads
            .resume(grant_id, &peer.id, &statement, length, from_piece)?;
        relay.metrics.broken_upload("resumed", 1);
        (slot, Some(state))
    };

    let envelope_id = match &resumed {
        Some(state) => state.envelope_id,
        None => EnvelopeId::ordered(cx.millis())?,
    };
    let inline = length <= INLINE_MAX;
    // A refused body leaves nothing: the uncommitted blob is discarded. One that broke off is
    // kept, at its last whole piece, for its sender to resume.
    // On the heap: the body's state is large, and a handler's future may be polled on a
    // small stack (the policy engine needs room of its own).
    let received = Box::pin(super::upload::receive(
        relay,
        peer,
        &envelope_id,
        length,
        inline,
        resumed,
        &slot,
        cx,
        body,
    ))
    .await;
    let (inline_body, blob, digest) = match received {
        Ok(taken) => taken,
        // Not for a grant dispatched to a source meanwhile (the sender can no longer fill it,
        // and a parked upload of its would keep the source from filling it).
        Err((r, Some(state)))
            if relay.config.upload_resume_secs > 0
                && !dispatched_elsewhere(relay, &grant_id, &peer.id) =>
        {
            // From when it broke, not from when the request began (a large upload can take
            // longer than the whole window).
            let until = cx
                .commit_time()
                .saturating_add(relay.config.upload_resume_secs);
            relay.metrics.broken_upload("parked", 1);
            slot.park(statement, length, state, until);
            return Err(r);
        }
        Err((r, kept)) => {
            if let Some(state) = kept {
                cx.discard(Some(state.blob)).await;
            }
            return Err(r);
        }
    };
    let checked = if digest != claimed_root {
        // Not what the sender signed: counted as an invalid envelope, as bytes that are not an
        // envelope are, or a sender could upload wrong bodies on one grant for ever.
        relay
            .signal(cx, &peer.id, Signal::InvalidEnvelope, None, cx.now)
            .await;
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
            // A source fills for the grant's agent: that agent quarantined or revoked during
            // the upload ends it as it ends the agent's own (its grants are held).
            if assignment.is_some() {
                super::sources::agent_still_active(relay, &acting, now)?;
            }
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
        sha256: claimed_root,
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
        &claimed_root,
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
    match relay.commit_or_refusal(op).await {
        Ok(Ok(_)) => {
            relay.metrics.envelope_bytes(true, length);
            relay.feeds.publish(&grant.user, Feed::Inbox, envelope_id.0);
            Ok(Reply::Submitted { envelope_id })
        }
        // A refusal by the store's rules (the free-space reserve included) committed nothing:
        // the blob goes.
        Ok(Err(refusal)) => {
            if !inline {
                cx.remove_blob(&relay.blobs, envelope_id).await;
            }
            Err(Refusal::from_write(&refusal))
        }
        Err(r) => {
            // After an I/O failure the record's fate is unknown (a failed fsync may still be
            // read back), so the blob stays for a repeated submission to find; if no record
            // names it, the start-up sweep removes it.
            if !inline && !matches!(r.code, ErrorCode::Unavailable | ErrorCode::Internal) {
                cx.remove_blob(&relay.blobs, envelope_id).await;
            }
            Err(r)
        }
    }
}

/// Whether `grant_id` was dispatched to a source other than `sender` (an unreadable store
/// counts as not: the upload is kept, as before).
fn dispatched_elsewhere(relay: &Relay, grant_id: &GrantId, sender: &crate::ids::SpiffeId) -> bool {
    matches!(relay.store.assignment(grant_id), Ok(Some(a)) if a.source != *sender)
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

/// How much of the caller's broken upload for `grant_id` the relay kept (nothing, for anyone
/// but its sender: the answer is then the same as for an upload that never broke).
pub async fn resumable(relay: &Relay, peer: &Peer, grant_id: GrantId, cx: &Cx) -> Handled {
    let action = match peer.id.kind() {
        PartyKind::Source => Action::Assignments,
        _ => Action::ListGrants,
    };
    relay.authorize_relay(cx, peer, action).await?;
    let (from_piece, statement_sha256) = relay.uploads.resume_point(&grant_id, &peer.id);
    Ok(Reply::ResumeAt {
        from_piece,
        statement_sha256,
    })
}
