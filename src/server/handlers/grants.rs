//! Grants: a user creates one, the addressed agent lists the ones ready for it, approvers list
//! and approve the ones that need a second person.

use crate::core::directory::sha256;
use crate::core::grant::{Approval, DeliveryStatus, Denial, Grant};
use crate::core::grant_state;
use crate::core::policy::{Action, Authorizer, Context, Target};
use crate::core::sign::StatementType;
use crate::core::store::{GrantRecord, GrantState, StoredSigned, WriteOp, WriteRefusal};
use crate::core::wire::{
    ErrorCode, Feed, GrantProgress, GrantView, MyGrantView, Page, PendingView, Reply, WireSigned,
};
use crate::ids::GrantId;
use crate::net::Peer;

use super::page::paginate;
use crate::server::services::effects::Cx;
use crate::server::services::events;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

/// A user's signed grant: policy (clearance, scope, quarantine), signature, limits, then stored
/// with a `grant.created` event.
pub async fn create(relay: &Relay, peer: &Peer, grant: WireSigned, cx: &Cx) -> Handled {
    let now = cx.now;
    let signed = grant.to_signed(StatementType::Grant)?;
    let g = Grant::decode(&signed.statement)?;
    let agent_entry = relay.entry_for(&g.agent, now).ok().map(|(e, _)| e);
    let ctx = Context {
        target: Target::Resource {
            name: g.resource.clone(),
        },
        user: Some(g.user.clone()),
        agent: Some(g.agent.clone()),
        agent_attributes: agent_entry.as_ref().map(|e| e.attributes.clone()),
        agent_quarantined: relay.monitor.is_quarantined(&g.agent.to_string()),
        source_attributes: None,
        now,
        size: Some(g.max_bytes),
    };
    relay.authorize(cx, peer, Action::Grant, &ctx).await?;
    if g.user != peer.id {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "a grant must be created by the user it names",
        ));
    }
    if agent_entry.is_none() {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            format!("{} has no active directory entry", g.agent.short()),
        ));
    }
    let (user_entry, _) = relay.entry_for(&peer.id, now)?;
    Grant::verify(&signed, &user_entry.signing_key)?;
    // A grant no envelope could ever fill is refused now, not left for the agent to fail on
    // (and be counted for): threat 51.
    if relay.config.require_post_quantum && !recipient_is_post_quantum(&user_entry) {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "your age key is X25519 (`keys gen --x25519`), but this relay requires post-quantum recipients (require_post_quantum), so no agent could fill this grant: make a new key with `sealrelay keys gen` and have your admin enroll it (`user add REQUEST --rotate`), or the relay's operator sets require_post_quantum = false",
        ));
    }
    crate::core::grant::check_display_text(&g.purpose, "purpose")?;
    if g.expires <= now {
        return Err(Refusal::new(
            ErrorCode::Expired,
            "the grant has already expired",
        ));
    }
    let max_ttl = relay.config.max_grant_ttl_secs;
    if g.expires.saturating_sub(now) > max_ttl {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("a grant may last at most {max_ttl} seconds"),
        ));
    }
    if g.max_bytes > relay.config.max_envelope_bytes {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "max bytes is above the relay's limit of {}",
                relay.config.max_envelope_bytes
            ),
        ));
    }
    let needs_approval = relay
        .policy()
        .catalog()
        .lookup(&g.resource)
        .is_some_and(|c| c.approval);
    let record = GrantRecord {
        grant_id: g.grant_id,
        user: g.user.clone(),
        agent: g.agent.clone(),
        expires: g.expires,
        max_bytes: g.max_bytes,
        created: now,
        grant: StoredSigned {
            statement: signed.statement.clone(),
            signature: signed.signature.to_vec(),
        },
        state: GrantState::Open,
        resource: g.resource.clone(),
        needs_approval,
        approval: None,
    };
    let event = events::grant_created(now, &peer.id, &g, &signed, needs_approval);
    let quotas = relay.config.quotas.store_quotas();
    relay
        .commit(WriteOp::CreateGrant {
            record,
            quotas,
            event,
        })
        .await?;
    if !needs_approval {
        relay.feeds.publish(&g.agent, Feed::Grants, g.grant_id.0);
    }
    Ok(Reply::GrantCreated {
        grant_id: g.grant_id,
        expires: g.expires,
    })
}

/// The sources in force whose entries say they serve `resource` (names, in name order).
pub(crate) fn serving(
    dir: &crate::core::directory::Directory,
    resource: &str,
    now: u64,
) -> Vec<String> {
    let mut names: Vec<String> = dir
        .parties()
        .filter(|e| e.id.kind() == crate::ids::PartyKind::Source)
        .filter(|e| dir.active(&e.id, now).is_ok())
        .filter(|e| {
            e.attributes
                .scopes
                .iter()
                .any(|s| crate::core::resource::matches(s, resource))
        })
        .map(|e| e.id.name().to_owned())
        .collect();
    names.sort();
    names
}

/// Why a grant of a user with only an X25519 key cannot be filled on this relay.
pub const UNFILLABLE: &str = "the grant's user has an X25519 age key and this relay requires post-quantum recipients (require_post_quantum): no envelope can fill this grant until the user enrolls a post-quantum key; this is not counted against the agent";

/// Whether an envelope for `user` can be accepted at all: always, unless post-quantum
/// recipients are required and the user's current entry has none (a user with no active entry
/// is refused by the other checks).
pub fn fillable(relay: &Relay, user: &crate::ids::SpiffeId, now: u64) -> bool {
    !relay.config.require_post_quantum
        || relay
            .entry_for(user, now)
            .ok()
            .is_none_or(|(e, _)| recipient_is_post_quantum(&e))
}

/// Whether the entry's age recipient is the post-quantum hybrid (an entry without one is not).
/// Every entry the relay holds was decoded, which checks that its recipient parses, so its
/// prefix says: parsing it again here, on every submission and every grant pushed, took about
/// 5% of the relay's CPU per round trip (bech32 and an ML-KEM key of 1,184 bytes).
fn recipient_is_post_quantum(entry: &crate::core::directory::DirectoryEntry) -> bool {
    entry
        .age_recipient
        .as_deref()
        .is_some_and(crate::core::envelope::keys::names_post_quantum)
}

/// The grant and its requester's newest logged entry (with its place in the directory log
/// under the checkpoint at `size`, and the earlier entries a client needs to judge it), as an
/// agent or approver sees it; `None` when the requester has no entry in force any more, or
/// when no logged entry of the requester signed the grant: the agent could not verify it,
/// and one such grant must not break a listing for everyone.
pub(crate) fn view(relay: &Relay, g: GrantRecord, now: u64, size: u64) -> Option<GrantView> {
    let dir = relay.directory.read().ok()?;
    dir.active(&g.user, now).ok()?;
    let signed = WireSigned {
        statement: g.grant.statement.clone(),
        signature: g.grant.signature.clone(),
    }
    .to_signed(StatementType::Grant)
    .ok()?;
    let (user_entry, user_log, earlier, approvals) = super::keylog::logged_user(
        &dir,
        &g.user,
        &signed,
        size,
        relay.reset_wait,
        now,
        relay.config.store.is_none(),
    )?;
    Some(GrantView {
        grant: WireSigned {
            statement: g.grant.statement,
            signature: g.grant.signature,
        },
        user_entry,
        user_log,
        earlier,
        approvals,
        sources: serving(&dir, &g.resource, now),
    })
}

/// The agent's view of `g` if it is ready for the agent: open, unexpired, approved where
/// needed, fillable, and not dispatched to a source (a grant dispatched to a source is the
/// source's now, waiting there or refused: the agent has nothing to do for it, and
/// `SubmissionStatus` says where it is).
fn ready_view(
    relay: &Relay,
    g: GrantRecord,
    now: u64,
    size: u64,
) -> Result<Option<GrantView>, Refusal> {
    let ready = grant_state::is_ready(&g, now)
        && fillable(relay, &g.user, now)
        && relay.store.assignment(&g.grant_id)?.is_none();
    Ok(ready.then(|| view(relay, g, now, size)).flatten())
}

/// The directory log's size now: every proof of a page is against one checkpoint (the
/// directory only grows).
fn directory_size(relay: &Relay) -> Result<u64, Refusal> {
    Ok(relay
        .directory
        .read()
        .map_err(|_| Refusal::internal())?
        .log_size())
}

/// A page of the agent's grants that are ready: open, unexpired, approved where needed.
pub async fn list(
    relay: &Relay,
    peer: &Peer,
    page: Page,
    dir_size: Option<u64>,
    cx: &Cx,
) -> Handled {
    relay.authorize_relay(cx, peer, Action::ListGrants).await?;
    Ok(list_page(relay, peer, page, dir_size, cx)?.0)
}

/// [`list`]'s page once the caller is authorized, with the directory log size its proofs are
/// against (a subscription proves its next frame from there).
pub(crate) fn list_page(
    relay: &Relay,
    peer: &Peer,
    page: Page,
    dir_size: Option<u64>,
    cx: &Cx,
) -> Result<(Reply, u64), Refusal> {
    let now = cx.now;
    let size = directory_size(relay)?;
    let (grants, next) = paginate(
        page.after,
        page.capped_limit(),
        |after, limit| {
            Ok(relay
                .store
                .open_grants_for(&peer.id, after.map(GrantId).as_ref(), limit)?)
        },
        |g| g.grant_id.0,
        |g| ready_view(relay, g, now, size),
    )?;
    let directory = {
        let dir = relay.directory.read().map_err(|_| Refusal::internal())?;
        super::keylog::checkpoint_at(relay, &dir, size, dir_size)?
    };
    Ok((
        Reply::Grants {
            grants,
            next,
            directory,
        },
        size,
    ))
}

/// One grant pushed to its agent's subscription, as `list` would list it (`None`: not the
/// caller's, or not ready any more), with the directory log size its proofs are against.
pub(crate) fn pushed(
    relay: &Relay,
    peer: &Peer,
    grant_id: GrantId,
    dir_size: Option<u64>,
    cx: &Cx,
) -> Result<Option<(Reply, u64)>, Refusal> {
    let Some(g) = relay.store.grant(&grant_id)?.filter(|g| g.agent == peer.id) else {
        return Ok(None);
    };
    let size = directory_size(relay)?;
    let Some(view) = ready_view(relay, g, cx.now, size)? else {
        return Ok(None);
    };
    let directory = {
        let dir = relay.directory.read().map_err(|_| Refusal::internal())?;
        super::keylog::checkpoint_at(relay, &dir, size, dir_size)?
    };
    Ok(Some((
        Reply::Grants {
            grants: vec![view],
            next: None,
            directory,
        },
        size,
    )))
}

/// A page of the grants awaiting approval, listed only where this caller could approve them.
pub async fn pending_approvals(relay: &Relay, peer: &Peer, page: Page, cx: &Cx) -> Handled {
    let now = cx.now;
    // Reading what awaits the caller is a user's read, like its inbox: agents are write-only
    // and are refused (and logged), not answered with an empty list.
    relay.authorize_relay(cx, peer, Action::Inbox).await?;
    super::delivery::refuse_previous_identity(relay, peer, now)?;
    let principal = relay.principal_of(peer, now)?;
    let size = relay
        .directory
        .read()
        .map_err(|_| Refusal::internal())?
        .log_size();
    let policy = relay.policy();
    let may_approve = |g: &GrantRecord| {
        let ctx = Context {
            target: Relay::grant_target(g),
            now,
            ..Context::default()
        };
        grant_state::awaits_approval(g, now)
            && !grant_state::approval_lapsed(g, now, relay.config.approval_ttl_secs)
            && policy
                .authorize(&principal, Action::Approve, &ctx)
                .is_allow()
    };
    let (grants, next) = paginate(
        page.after,
        page.capped_limit(),
        |after, limit| {
            Ok(relay
                .store
                .pending_approvals(after.map(GrantId).as_ref(), limit)?)
        },
        |g| g.grant_id.0,
        |g| {
            let classification = policy
                .catalog()
                .lookup(&g.resource)
                .map_or(0, |c| c.classification);
            Ok(may_approve(&g)
                .then(|| view(relay, g, now, size))
                .flatten()
                .map(|view| PendingView {
                    view,
                    classification,
                }))
        },
    )?;
    Ok(Reply::Pending { grants, next })
}

/// A second person's signed approval of a grant that needs one.
pub async fn approve(relay: &Relay, peer: &Peer, approval: WireSigned, cx: &Cx) -> Handled {
    let now = cx.now;
    let signed = approval.to_signed(StatementType::Approval)?;
    let a = Approval::decode(&signed.statement)?;
    let g = relay
        .store
        .grant(&a.grant_id)?
        .ok_or_else(|| Refusal::not_found("grant"))?;
    let ctx = Context {
        target: Relay::grant_target(&g),
        now,
        ..Context::default()
    };
    relay.authorize(cx, peer, Action::Approve, &ctx).await?;
    let (entry, _) = relay.entry_for(&peer.id, now)?;
    Approval::verify(&signed, &entry.signing_key)?;
    if a.approver != peer.id {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the approval names another approver",
        ));
    }
    if a.grant_sha256 != sha256(&g.grant.statement) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the approval is for a different version of this grant (it was modified): it does not count",
        ));
    }
    let approval_refused = |r: WriteRefusal| {
        match r {
        WriteRefusal::GrantExpired => Refusal::new(
            ErrorCode::Expired,
            format!(
                "the grant expired, or waited longer than approval_ttl_secs ({} s) for an approval, before it was approved; it stays closed (the requester asks again)",
                relay.config.approval_ttl_secs
            ),
        ),
        other => Refusal::from(other),
    }
    };
    let approval_ttl = relay.config.approval_ttl_secs;
    grant_state::check_approve(&g, now, approval_ttl).map_err(approval_refused)?;
    let event = events::grant_approved(now, &peer.id, &g.user, &a, &signed);
    relay
        .commit(WriteOp::Approve {
            grant_id: g.grant_id,
            approval: StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            now,
            approval_ttl,
            event,
        })
        .await
        .map_err(|r| {
            if r.code == ErrorCode::Expired {
                approval_refused(WriteRefusal::GrantExpired)
            } else {
                r
            }
        })?;
    relay.feeds.publish(&g.agent, Feed::Grants, g.grant_id.0);
    Ok(Reply::Done)
}

/// A second person's signed denial of a grant that awaits approval: the same rule as an
/// approval decides who may (an approver, not the requester); the grant closes for good and the
/// denial is logged.
pub async fn deny(relay: &Relay, peer: &Peer, denial: WireSigned, cx: &Cx) -> Handled {
    let now = cx.now;
    let signed = denial.to_signed(StatementType::Denial)?;
    let d = Denial::decode(&signed.statement)?;
    let g = relay
        .store
        .grant(&d.grant_id)?
        .ok_or_else(|| Refusal::not_found("grant"))?;
    let ctx = Context {
        target: Relay::grant_target(&g),
        now,
        ..Context::default()
    };
    relay.authorize(cx, peer, Action::Approve, &ctx).await?;
    let (entry, _) = relay.entry_for(&peer.id, now)?;
    Denial::verify(&signed, &entry.signing_key)?;
    if d.approver != peer.id {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the denial names another approver",
        ));
    }
    if d.grant_sha256 != sha256(&g.grant.statement) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the denial is for a different version of this grant",
        ));
    }
    let approval_ttl = relay.config.approval_ttl_secs;
    grant_state::check_approve(&g, now, approval_ttl)?;
    let event = events::grant_denied(now, &peer.id, &g.user, &d, &signed);
    relay
        .commit(WriteOp::Deny {
            grant_id: g.grant_id,
            denial: StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            now,
            approval_ttl,
            event,
        })
        .await?;
    Ok(Reply::Done)
}

/// A page of the grants the caller made, each with where it is now.
pub async fn mine(relay: &Relay, peer: &Peer, page: Page, cx: &Cx) -> Handled {
    let now = cx.now;
    relay.authorize_relay(cx, peer, Action::Inbox).await?;
    super::delivery::refuse_previous_identity(relay, peer, now)?;
    let (grants, next) = paginate(
        page.after,
        page.capped_limit(),
        |after, limit| {
            Ok(relay
                .store
                .grants_by(&peer.id, after.map(GrantId).as_ref(), limit)?)
        },
        |g| g.grant_id.0,
        |g| progress(relay, g, now).map(Some),
    )?;
    Ok(Reply::MyGrants { grants, next })
}

fn progress(relay: &Relay, g: GrantRecord, now: u64) -> Result<MyGrantView, Refusal> {
    let (progress, envelope_id, receipt_index) = match g.state {
        GrantState::Denied => (GrantProgress::Denied, None, None),
        // Closed when its source refused it.
        GrantState::Expired
            if relay.store.assignment(&g.grant_id)?.is_some_and(|a| {
                matches!(a.state, crate::core::store::AssignmentState::Refused { .. })
            }) =>
        {
            (GrantProgress::RefusedAtSource, None, None)
        }
        GrantState::Expired => (GrantProgress::Expired, None, None),
        GrantState::Open if now >= g.expires => (GrantProgress::Expired, None, None),
        GrantState::Open if grant_state::awaits_approval(&g, now) => {
            (GrantProgress::AwaitingApproval, None, None)
        }
        GrantState::Open => match relay.store.assignment(&g.grant_id)?.map(|a| a.state) {
            Some(crate::core::store::AssignmentState::Queued) => {
                (GrantProgress::AtSource, None, None)
            }
            Some(crate::core::store::AssignmentState::Refused { .. }) => {
                (GrantProgress::RefusedAtSource, None, None)
            }
            _ => (GrantProgress::Open, None, None),
        },
        GrantState::Used { envelope_id } => match relay.store.delivery(&envelope_id)? {
            Some(d) => (
                match d.status {
                    DeliveryStatus::Delivered => GrantProgress::Delivered,
                    DeliveryStatus::Undecryptable => GrantProgress::Undecryptable,
                },
                Some(envelope_id),
                Some(d.receipt_index),
            ),
            None if relay.store.envelope(&envelope_id)?.is_some() => {
                (GrantProgress::Sent, Some(envelope_id), None)
            }
            None => (GrantProgress::Expired, Some(envelope_id), None),
        },
    };
    Ok(MyGrantView {
        grant: WireSigned {
            statement: g.grant.statement,
            signature: g.grant.signature,
        },
        progress,
        envelope_id,
        receipt_index,
        decision: g.approval.map(|a| WireSigned {
            statement: a.statement,
            signature: a.signature,
        }),
    })
}
