//! Sources as their own party (docs/sources.md): an agent dispatches one of its grants to a
//! source (`Dispatch`), the source lists what waits for it (`Assignments`) and fills it (a
//! `Submit` of its own, `handlers::submit`) or refuses it (`RefuseAssignment`).

use crate::core::dispatch::{check_dispatch, Dispatch, SourceRefusal, SourceSubmission};
use crate::core::policy::{Action, Context};
use crate::core::sign::StatementType;
use crate::core::store::{statement_digest, AssignmentRecord, AssignmentState, GrantRecord};
use crate::core::store::{StoredSigned, WriteOp, WriteRefusal};
use crate::core::wire::{AssignmentView, ErrorCode, Page, Reply, WireSigned};
use crate::ids::{GrantId, PartyKind, SpiffeId};
use crate::net::Peer;

use super::page::paginate;
use crate::server::services::effects::Cx;
use crate::server::services::events;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

/// The context of a request about a grant dispatched to `source`: the grant, its user and
/// agent, the agent's standing and the patterns the source serves.
pub(crate) fn fill_context(
    relay: &Relay,
    grant: &GrantRecord,
    source: &SpiffeId,
    now: u64,
) -> Context {
    Context {
        target: Relay::grant_target(grant),
        user: Some(grant.user.clone()),
        agent: Some(grant.agent.clone()),
        agent_attributes: relay
            .entry_for(&grant.agent, now)
            .ok()
            .map(|(e, _)| e.attributes),
        agent_quarantined: relay.monitor.is_quarantined(&grant.agent.to_string()),
        source_attributes: relay.entry_for(source, now).ok().map(|(e, _)| e.attributes),
        now,
        ..Context::default()
    }
}

/// Right before a source's fill commits: the grant's agent is still enrolled and not
/// quarantined (checked when the fill began, through the policy's `agent_active`; a
/// quarantine or revocation that came during the upload holds the grant as it would hold the
/// agent's own submission). Not counted against the source: it could not have known.
pub(crate) fn agent_still_active(relay: &Relay, agent: &SpiffeId, now: u64) -> Result<(), Refusal> {
    if relay.monitor.is_quarantined(&agent.to_string()) {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            format!(
                "the grant's agent {} was quarantined during the upload: its grants are held, and nothing was stored",
                agent.short()
            ),
        ));
    }
    relay.entry_for(agent, now).map(|_| ()).map_err(|_| {
        Refusal::new(
            ErrorCode::Forbidden,
            format!(
                "the grant's agent {} is no longer enrolled (revoked or expired): nothing was stored",
                agent.short()
            ),
        )
    })
}

/// An agent has a source fill one of its open grants. The relay checks the agent's signature,
/// that the dispatch names exactly the grant the agent holds (id, digest, user, resource), that
/// the source is enrolled and serves the resource, and the policy; then queues the assignment
/// durably. The same signed dispatch again is answered as done.
pub async fn dispatch(relay: &Relay, peer: &Peer, dispatch: WireSigned, cx: &Cx) -> Handled {
    let now = cx.now;
    let signed = dispatch.to_signed(StatementType::Dispatch)?;
    let d = Dispatch::decode(&signed.statement)?;
    // A grant addressed to another agent is "no such grant", as for a submission.
    let grant = relay
        .store
        .grant(&d.grant_id)?
        .filter(|g| g.agent == peer.id);
    let Some(grant) = grant else {
        relay.authorize_relay(cx, peer, Action::ListGrants).await?;
        return Err(Refusal::not_found("grant"));
    };
    let ctx = fill_context(relay, &grant, &d.source, now);
    // A source that does not serve the resource, or is not enrolled, is the agent's to know
    // (its grant listing names the sources that serve each grant): that denial counts against
    // it. A denial of a source the listing named (a policy without the `dispatch` permit, a
    // source revoked since) is not the agent's doing.
    let listed = {
        let dir = relay.directory.read().map_err(|_| Refusal::internal())?;
        super::grants::serving(&dir, &grant.resource, now)
            .iter()
            .any(|s| s == d.source.name())
    };
    relay
        .authorize_counting(cx, peer, Action::Dispatch, &ctx, !listed)
        .await?;
    let (agent_entry, _) = relay.entry_for(&peer.id, now)?;
    signed.verify(&agent_entry.signing_key).map_err(|e| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("the dispatch does not verify: {e}"),
        )
    })?;
    let grant_signed = WireSigned {
        statement: grant.grant.statement.clone(),
        signature: grant.grant.signature.clone(),
    }
    .to_signed(StatementType::Grant)?;
    let g = crate::core::grant::Grant::decode(&grant_signed.statement)?;
    if d.agent != peer.id {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the dispatch names another agent than the caller",
        ));
    }
    check_dispatch(&d, &g, &statement_digest(&grant_signed))
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.message()))?;
    let record = AssignmentRecord {
        grant_id: d.grant_id,
        source: d.source.clone(),
        agent: peer.id.clone(),
        user: grant.user.clone(),
        dispatch: StoredSigned {
            statement: signed.statement.clone(),
            signature: signed.signature.to_vec(),
        },
        dispatched_at: now,
        state: AssignmentState::Queued,
    };
    let event = events::grant_dispatched(now, &peer.id, &d.grant_id, &d.source, &signed);
    match relay.commit(WriteOp::Dispatch { record, now, event }).await {
        Ok(_) => {
            // The grant is the source's to fill now: an upload of the agent's own that broke
            // and was kept for it would only hold the grant and the agent's quota.
            if let Some(parked) = relay.uploads.abandon(&d.grant_id) {
                cx.discard(Some(parked.state.blob)).await;
            }
            Ok(Reply::Done)
        }
        // The same dispatch again (a lost answer): done already.
        Err(r) if r.message == WriteRefusal::Duplicate.to_error().message() => Ok(Reply::Done),
        Err(r) => Err(r),
    }
}

/// A page of what was dispatched to the calling source and still waits, each assignment with
/// what the source needs to check it itself.
pub async fn assignments(
    relay: &Relay,
    peer: &Peer,
    page: Page,
    dir_size: Option<u64>,
    cx: &Cx,
) -> Handled {
    let now = cx.now;
    relay.authorize_relay(cx, peer, Action::Assignments).await?;
    if peer.id.kind() != PartyKind::Source {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "only a source has assignments",
        ));
    }
    let size = relay
        .directory
        .read()
        .map_err(|_| Refusal::internal())?
        .log_size();
    let (assignments, next) = paginate(
        page.after,
        page.capped_limit(),
        |after, limit| {
            Ok(relay
                .store
                .assignments_for(&peer.id, after.map(GrantId).as_ref(), limit)?)
        },
        |a| a.grant_id.0,
        |a| Ok(assignment_view(relay, a, now, size)),
    )?;
    let directory = {
        let dir = relay.directory.read().map_err(|_| Refusal::internal())?;
        super::keylog::checkpoint_at(relay, &dir, size, dir_size)?
    };
    Ok(Reply::Assignments {
        assignments,
        next,
        directory,
    })
}

/// An assignment as its source sees it; `None` once its grant is no longer open or its user
/// or agent has no entry in force (the source could not check it).
fn assignment_view(
    relay: &Relay,
    a: AssignmentRecord,
    now: u64,
    size: u64,
) -> Option<AssignmentView> {
    let grant = relay.store.grant(&a.grant_id).ok()??;
    // A grant no longer ready, or whose agent is no longer in force (revoked, expired), is not
    // the source's to fill: the relay would refuse the envelope.
    // A quarantined agent's grants are held: not listed to its source either.
    if !crate::core::grant_state::is_ready(&grant, now)
        || relay.entry_for(&a.agent, now).is_err()
        || relay.monitor.is_quarantined(&a.agent.to_string())
    {
        return None;
    }
    let dispatch = WireSigned {
        statement: a.dispatch.statement,
        signature: a.dispatch.signature,
    };
    // The agent's entry whose key signed the dispatch (it may have rotated since), else its
    // newest: the source judges the signature itself.
    let agent_entry = {
        let dir = relay.directory.read().ok()?;
        let signed = dispatch.to_signed(StatementType::Dispatch).ok()?;
        let found = dir
            .history(&a.agent)
            .find(|(e, _)| signed.verify(&e.signing_key).is_ok())
            .map(|(_, es)| WireSigned::from_signed(es));
        match found {
            Some(e) => e,
            None => relay.latest_signed(&a.agent).ok()?,
        }
    };
    let view = super::grants::view(relay, grant, now, size)?;
    Some(AssignmentView {
        view,
        dispatch,
        agent_entry,
        dispatched_at: a.dispatched_at,
    })
}

/// A source's signed refusal of an assignment of its own: kept, logged, shown to the agent. It
/// is not counted against the agent, which could not have known the data owner's policy.
pub async fn refuse(relay: &Relay, peer: &Peer, refusal: WireSigned, cx: &Cx) -> Handled {
    let now = cx.now;
    let signed = refusal.to_signed(StatementType::SourceRefusal)?;
    let r = SourceRefusal::decode(&signed.statement)?;
    let assigned = relay
        .store
        .assignment(&r.grant_id)?
        .filter(|a| a.source == peer.id);
    let grant = match assigned {
        Some(_) => relay.store.grant(&r.grant_id)?,
        None => None,
    };
    let Some(grant) = grant else {
        relay.authorize_relay(cx, peer, Action::Assignments).await?;
        return Err(Refusal::not_found("assignment"));
    };
    let ctx = fill_context(relay, &grant, &peer.id, now);
    relay.authorize(cx, peer, Action::Fill, &ctx).await?;
    let (source_entry, _) = relay.entry_for(&peer.id, now)?;
    signed.verify(&source_entry.signing_key).map_err(|e| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("the refusal does not verify: {e}"),
        )
    })?;
    if r.source != peer.id || r.user != grant.user || r.agent != grant.agent {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the refusal names another source, user or agent than the assignment",
        ));
    }
    let event = events::source_refused(now, &peer.id, &r.grant_id, r.reason.sentence(), &signed);
    let refused = relay
        .commit(WriteOp::RefuseAssignment {
            grant_id: r.grant_id,
            source: peer.id.clone(),
            refusal: StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            event,
        })
        .await;
    match refused {
        Ok(_) => Ok(Reply::Done),
        // The same refusal again (a lost answer): done already.
        Err(r) if r.message == WriteRefusal::Duplicate.to_error().message() => Ok(Reply::Done),
        Err(r) => Err(r),
    }
}

/// A source's statement of what it sealed, checked before its body is read: signed by the
/// source's key in force, answering exactly the agent's dispatch of this grant, for this user
/// and length. Returns the statement and the ciphertext digest it claims.
pub(crate) fn checked_statement(
    relay: &Relay,
    peer: &Peer,
    grant: &GrantRecord,
    a: &AssignmentRecord,
    statement: &WireSigned,
    length: u64,
    now: u64,
) -> Result<(crate::core::sign::Signed, [u8; 32]), Refusal> {
    let (source_entry, _) = relay.entry_for(&peer.id, now)?;
    let signed = statement.to_signed(StatementType::SourceSubmission)?;
    let s = SourceSubmission::decode(&signed.statement)?;
    signed.verify(&source_entry.signing_key).map_err(|e| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("the source's statement does not verify: {e}"),
        )
    })?;
    let dispatch = WireSigned {
        statement: a.dispatch.statement.clone(),
        signature: a.dispatch.signature.clone(),
    }
    .to_signed(StatementType::Dispatch)?;
    let d = Dispatch::decode(&dispatch.statement)?;
    s.answers(&d, &statement_digest(&dispatch))
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.message()))?;
    if s.grant_id != grant.grant_id || s.user != grant.user || s.ciphertext_len != length {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the source's statement does not match this grant and length",
        ));
    }
    Ok((signed, s.ciphertext_root))
}
