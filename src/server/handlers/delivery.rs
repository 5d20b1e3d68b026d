//! Delivery to the user who asked: the inbox, fetching an envelope (the shell streams its
//! ciphertext), the user's signed receipt with its inclusion proof, and the agent's view of
//! what became of its submission.

use crate::core::grant::{DeliveryStatus, Receipt};
use crate::core::policy::{Action, Context, Target};
use crate::core::sign::StatementType;
use crate::core::store::{AssignmentState, EnvelopeRecord, GrantState, StoredSigned, WriteOp};
use crate::core::wire::{
    EnvelopeView, ErrorCode, Page, Reply, SealedBy, SubmissionState, WireSigned,
};
use crate::ids::{EnvelopeId, GrantId, PartyKind};
use crate::net::Peer;

use super::page::paginate;
use crate::server::services::effects::Cx;
use crate::server::services::events;
use crate::server::services::integrity::{checked_body, StoredBody};
use crate::server::services::misbehaviour::Signal;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

/// A page of the caller's envelopes that have not expired and have no receipt yet.
pub async fn inbox(relay: &Relay, peer: &Peer, page: Page, cx: &Cx) -> Handled {
    relay.authorize_relay(cx, peer, Action::Inbox).await?;
    inbox_page(relay, peer, page, cx)
}

/// One envelope pushed to its user's subscription, as `inbox` would list it (`None`: not the
/// caller's, or not waiting any more).
pub(crate) fn pushed(
    relay: &Relay,
    peer: &Peer,
    envelope_id: EnvelopeId,
    cx: &Cx,
) -> Result<Option<Reply>, Refusal> {
    let now = cx.now;
    let previous = previous_key(relay, peer, now)?;
    let Some(e) = relay.store.envelope(&envelope_id)?.filter(|e| {
        e.user == peer.id
            && now < e.expires_at
            && e.receipt.is_none()
            && sealed_for(relay, e, previous.as_ref())
    }) else {
        return Ok(None);
    };
    Ok(Some(Reply::Inbox {
        envelopes: vec![view(relay, &e)?],
        next: None,
    }))
}

/// [`inbox`]'s page once the caller is authorized.
pub(crate) fn inbox_page(relay: &Relay, peer: &Peer, page: Page, cx: &Cx) -> Handled {
    let now = cx.now;
    let previous = previous_key(relay, peer, now)?;
    let (envelopes, next) = paginate(
        page.after,
        page.capped_limit(),
        |after, limit| {
            Ok(relay
                .store
                .inbox(&peer.id, after.map(EnvelopeId).as_ref(), limit)?)
        },
        |e| e.envelope_id.0,
        |e| {
            if now < e.expires_at && sealed_for(relay, &e, previous.as_ref()) {
                view(relay, &e).map(Some)
            } else {
                Ok(None)
            }
        },
    )?;
    Ok(Reply::Inbox { envelopes, next })
}

/// For a previous identity (within the grace after its rotation), the key of its superseded
/// entry; `None` for the party's current identity.
fn previous_key(
    relay: &Relay,
    peer: &Peer,
    now: u64,
) -> Result<Option<crate::core::sign::PublicKey>, Refusal> {
    let caller = relay.caller_entry(peer, now)?;
    let current = relay.entry_for(&peer.id, now).ok().map(|(e, _)| e.serial);
    Ok((current != Some(caller.serial)).then_some(caller.signing_key))
}

/// A previous identity (within the grace after its rotation) may read only its own inbox: not
/// the approvals listing (with the new entry's roles) nor the grants made with the new key.
pub(super) fn refuse_previous_identity(
    relay: &Relay,
    peer: &Peer,
    now: u64,
) -> Result<(), Refusal> {
    match previous_key(relay, peer, now)? {
        None => Ok(()),
        Some(_) => Err(Refusal::new(
            ErrorCode::Unauthenticated,
            "this identity's key was rotated: it may only list, fetch and file receipts for what was sealed to it; use the new identity",
        )),
    }
}

/// Whether a previous identity may see `e`: only what was asked for with its own key (and so
/// sealed to it). Its current identity sees everything of the user's.
fn sealed_for(
    relay: &Relay,
    e: &EnvelopeRecord,
    previous: Option<&crate::core::sign::PublicKey>,
) -> bool {
    previous.is_none_or(|key| grant_signed_by(relay, &e.grant_id, key))
}

/// Whether the grant was signed with `key` (true when it cannot be read: the agent is then
/// counted as before).
fn grant_signed_by(relay: &Relay, grant_id: &GrantId, key: &crate::core::sign::PublicKey) -> bool {
    let Ok(Some(g)) = relay.store.grant(grant_id) else {
        return true;
    };
    let wire = WireSigned {
        statement: g.grant.statement,
        signature: g.grant.signature,
    };
    wire.to_signed(StatementType::Grant)
        .map_or(true, |s| s.verify(key).is_ok())
}

/// The signed entry of `id` whose key verifies `signed` (the one the party held when it
/// signed: a party may have rotated since), else its latest.
fn entry_that_signed(
    relay: &Relay,
    id: &crate::ids::SpiffeId,
    signed: &WireSigned,
    ty: StatementType,
) -> Result<WireSigned, Refusal> {
    if let (Ok(dir), Ok(s)) = (relay.directory.read(), signed.to_signed(ty)) {
        let history: Vec<_> = dir.history(id).collect();
        // A party with one entry: nothing to choose between (what it signed was verified when
        // it was stored, and the client verifies it again).
        if let [only] = history.as_slice() {
            return Ok(WireSigned::from_signed(&only.1));
        }
        for (e, es) in history {
            if s.verify(&e.signing_key).is_ok() {
                return Ok(WireSigned::from_signed(es));
            }
        }
    }
    relay
        .latest_signed(id)
        .map_err(|_| Refusal::not_found("directory entry"))
}

/// The envelope as its user sees it: the grant, the agent's statement and the agent's entry.
fn view(relay: &Relay, e: &EnvelopeRecord) -> Result<EnvelopeView, Refusal> {
    let grant = relay
        .store
        .grant(&e.grant_id)?
        .ok_or_else(|| Refusal::not_found("grant"))?;
    // The agent's entry whose key signed the statement (it may have rotated since), even if
    // since revoked: the client judges the signature.
    let statement = WireSigned {
        statement: e.statement.statement.clone(),
        signature: e.statement.signature.clone(),
    };
    // Sealed by a source at the data: the agent signed the dispatch, the source the statement.
    let filled_by = relay.store.assignment(&e.grant_id)?.filter(|a| {
        matches!(a.state, AssignmentState::Filled { envelope_id } if envelope_id == e.envelope_id)
    });
    let (agent_entry, sealed_by) = match filled_by {
        None => (
            entry_that_signed(relay, &e.agent, &statement, StatementType::Submission)
                .map_err(|_| Refusal::not_found("agent entry"))?,
            None,
        ),
        Some(a) => {
            let dispatch = WireSigned {
                statement: a.dispatch.statement,
                signature: a.dispatch.signature,
            };
            let agent_entry =
                entry_that_signed(relay, &e.agent, &dispatch, StatementType::Dispatch)
                    .map_err(|_| Refusal::not_found("agent entry"))?;
            let source_entry = entry_that_signed(
                relay,
                &a.source,
                &statement,
                StatementType::SourceSubmission,
            )
            .map_err(|_| Refusal::not_found("source entry"))?;
            (
                agent_entry,
                Some(SealedBy {
                    source_entry,
                    dispatch,
                }),
            )
        }
    };
    // The approval and its approver's entry, for the client to verify and show.
    let approval = grant.approval.as_ref().map(|a| WireSigned {
        statement: a.statement.clone(),
        signature: a.signature.clone(),
    });
    let approver_entry = approval.as_ref().and_then(|w| {
        let a = crate::core::grant::Approval::decode(&w.statement).ok()?;
        entry_that_signed(relay, &a.approver, w, StatementType::Approval).ok()
    });
    Ok(EnvelopeView {
        envelope_id: e.envelope_id,
        grant: WireSigned {
            statement: grant.grant.statement,
            signature: grant.grant.signature,
        },
        statement: WireSigned {
            statement: e.statement.statement.clone(),
            signature: e.statement.signature.clone(),
        },
        agent_entry,
        length: e.length,
        received_at: e.received_at,
        approval,
        approver_entry,
        sealed_by,
    })
}

/// For a user, another user's envelope and a missing one get the same answer (the denial is
/// still logged).
fn hide_others(peer: &Peer, r: Refusal) -> Refusal {
    if peer.id.kind() == PartyKind::User && r.code == ErrorCode::Forbidden {
        Refusal::not_found("envelope")
    } else {
        r
    }
}

/// The envelope's view and where its ciphertext is (from piece `from_piece` on); the policy
/// decides on the envelope's owner.
pub async fn fetch(
    relay: &Relay,
    peer: &Peer,
    envelope_id: EnvelopeId,
    from_piece: u64,
    cx: &Cx,
) -> Result<(EnvelopeView, StoredBody), Refusal> {
    let now = cx.now;
    let record = relay.store.envelope(&envelope_id)?;
    let owner = record
        .as_ref()
        .map_or_else(|| peer.id.clone(), |r| r.user.clone());
    let ctx = Context {
        target: Target::Envelope {
            id: envelope_id,
            owner,
        },
        now,
        ..Context::default()
    };
    relay
        .authorize(cx, peer, Action::Fetch, &ctx)
        .await
        .map_err(|r| hide_others(peer, r))?;
    // A previous identity (after a rotation) reaches only what was sealed to its own key: a
    // stolen old key cannot take or close what was sealed to the new one.
    let previous = previous_key(relay, peer, now)?;
    let record = record
        .filter(|e| e.user == peer.id && now < e.expires_at && e.receipt.is_none())
        .filter(|e| sealed_for(relay, e, previous.as_ref()))
        .ok_or_else(|| Refusal::not_found("envelope"))?;
    let view = view(relay, &record)?;
    // Nothing is sent that does not match what the agent signed for.
    let body = checked_body(relay, cx, &record, from_piece).await?;
    Ok((view, body))
}

/// Records the user's signed receipt (delivered or undecryptable) and answers with its log
/// entry, inclusion proof and the checkpoint that covers it.
pub async fn receipt(
    relay: &Relay,
    peer: &Peer,
    receipt: WireSigned,
    old_size: Option<u64>,
    delivered: Option<EnvelopeId>,
    cx: &Cx,
) -> Handled {
    let now = cx.now;
    let signed = receipt.to_signed(StatementType::Receipt)?;
    let claimed = Receipt::decode(&signed.statement)?;
    // On a `Deliver` stream the receipt is for the envelope sent on it (THREATS.md 26: a
    // receipt for another delivery is refused). Told before anything else: the caller named
    // both envelopes, and nothing is looked up or changed.
    if delivered.is_some_and(|d| d != claimed.envelope_id) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the receipt names another envelope than the one delivered on this stream: nothing was recorded (file each receipt on its own delivery, or with `Receipt`)",
        ));
    }
    let owner = match relay.store.envelope(&claimed.envelope_id)? {
        Some(e) => e.user,
        None => peer.id.clone(),
    };
    let ctx = Context {
        target: Target::Envelope {
            id: claimed.envelope_id,
            owner,
        },
        now,
        ..Context::default()
    };
    relay
        .authorize(cx, peer, Action::Receipt, &ctx)
        .await
        .map_err(|r| hide_others(peer, r))?;
    // The caller's own entry: its current one, or the previous identity (within the grace
    // after a rotation) whose key sealed envelopes were made for.
    let user_entry = relay.caller_entry(peer, now)?;
    let r = Receipt::verify(&signed, &user_entry.signing_key)?;
    let previous = previous_key(relay, peer, now)?;
    let record = relay
        .store
        .envelope(&r.envelope_id)?
        .filter(|e| e.user == peer.id)
        .filter(|e| sealed_for(relay, e, previous.as_ref()));
    let record = match record {
        Some(e) if e.receipt.is_none() => e,
        // No envelope waiting for a receipt (deleted on delivery, or its receipt recorded): the
        // same receipt again (its answer was lost, the client files it on its own) gets the
        // entry it already has (THREATS.md 26). Looked up only here, off the common path.
        _ => {
            return match recorded_already(relay, peer, &r, &signed, old_size).await? {
                Some(answer) => Ok(answer),
                None => Err(Refusal::not_found("envelope")),
            }
        }
    };
    // A previous identity (within the grace after a rotation) that cannot open an envelope of
    // a grant it made, received since the rotation: the agent may have sealed it to the user's
    // newest key. Recorded, that receipt would delete the ciphertext the current identity can
    // open, and count against the agent. (One received before the rotation was sealed to the
    // previous key: its undecryptable receipt stands.)
    let since_rotation = || {
        relay
            .entry_for(&peer.id, now)
            .is_ok_and(|(current, _)| record.received_at >= current.not_before)
    };
    if previous.is_some() && r.status == DeliveryStatus::Undecryptable && since_rotation() {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            "this identity's key was rotated and it cannot open this envelope: it may be sealed to the newer key; open it with your current identity file (nothing was recorded)",
        ));
    }
    if r.user != peer.id
        || r.grant_id != record.grant_id
        || r.agent != record.agent
        || r.ciphertext_root != record.sha256
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the receipt does not describe this envelope",
        ));
    }
    let event = events::receipt_recorded(now, &peer.id, &r, &signed);
    let leaf = event.leaf_bytes();
    let delete = relay.config.delete_after_delivery;
    let committed = relay
        .commit(WriteOp::RecordReceipt {
            envelope_id: r.envelope_id,
            user: peer.id.clone(),
            receipt: StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            status: r.status,
            delete,
            event,
        })
        .await;
    let index = match committed {
        Ok(index) => index,
        // The same receipt, filed twice at once: the other one's entry.
        Err(refusal) => {
            return match recorded_already(relay, peer, &r, &signed, old_size).await? {
                Some(answer) => Ok(answer),
                None => Err(refusal),
            }
        }
    };
    if delete && !record.inline {
        cx.remove_blob(&relay.blobs, r.envelope_id).await;
    }
    // Only the user's client can tell a file was not sealed to it: count it against the agent,
    // unless the user's key changed between the grant and this receipt (the grant was signed
    // with another of the user's keys, so the agent sealed to that one): the user's own key
    // change is not the agent's doing. Nor is an envelope a source sealed (docs/sources.md):
    // the agent never held its bytes.
    let sealed_by_source = relay
        .store
        .assignment(&record.grant_id)?
        .is_some_and(|a| matches!(a.state, AssignmentState::Filled { envelope_id } if envelope_id == record.envelope_id));
    if r.status == DeliveryStatus::Undecryptable
        && !sealed_by_source
        && grant_signed_by(relay, &record.grant_id, &user_entry.signing_key)
    {
        relay
            .signal(cx, &r.agent, Signal::Undecryptable, Some(&peer.id), now)
            .await;
    }
    proved(relay, index, leaf, old_size).await
}

/// The answer to a recorded receipt at `index`: its leaf, inclusion proof and the checkpoint
/// that covers it (and its consistency with the client's `old_size`).
async fn proved(relay: &Relay, index: u64, leaf: Vec<u8>, old_size: Option<u64>) -> Handled {
    // The commit thread signed a checkpoint covering this event before answering; with
    // witnesses, the answer waits a little for one they cosigned.
    let (cp, note) = relay
        .checkpoint_for(index + 1, old_size, relay.receipt_wait())
        .await
        .map_err(|r| {
            if r.code == ErrorCode::Unavailable {
                Refusal::new(
                    ErrorCode::Unavailable,
                    "the receipt is recorded but no checkpoint covers it yet; fetch its proof later",
                )
            } else {
                r
            }
        })?;
    let proof = relay.store.inclusion_proof(index, cp.size)?;
    let consistency = match old_size {
        Some(old) => relay.store.consistency_proof(old, cp.size)?,
        None => Vec::new(),
    };
    Ok(Reply::ReceiptRecorded {
        event_index: index,
        leaf,
        tree_size: cp.size,
        proof,
        checkpoint: note,
        consistency,
    })
}

/// The answer for a receipt already recorded: `None` when none is recorded for its envelope (or
/// another user's is, shown as none); the recorded entry when it is this very receipt (the
/// same statement and signature); refused when the envelope has another receipt.
async fn recorded_already(
    relay: &Relay,
    peer: &Peer,
    r: &Receipt,
    signed: &crate::core::sign::Signed,
    old_size: Option<u64>,
) -> std::result::Result<Option<Reply>, Refusal> {
    let Some(delivery) = relay.store.delivery(&r.envelope_id)? else {
        return Ok(None);
    };
    let entry = relay
        .store
        .events(delivery.receipt_index, 1)?
        .into_iter()
        .next()
        .filter(|(i, e)| {
            *i == delivery.receipt_index
                && e.kind == "receipt.recorded"
                && e.actor == peer.id.to_string()
        });
    let Some((index, event)) = entry else {
        return Ok(None);
    };
    if event.digest != crate::core::store::statement_digest(signed) {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            "another receipt is already recorded for this envelope",
        ));
    }
    proved(relay, index, event.leaf_bytes(), old_size)
        .await
        .map(Some)
}

/// Where the envelope an agent submitted for one of its grants is: the agent learns the outcome
/// (and the receipt's log index), never the content. A grant addressed to another agent is "no
/// such grant", as on submit.
pub async fn submission_status(relay: &Relay, peer: &Peer, grant_id: GrantId, cx: &Cx) -> Handled {
    let now = cx.now;
    let grant = relay.store.grant(&grant_id)?.filter(|g| g.agent == peer.id);
    let Some(grant) = grant else {
        relay.authorize_relay(cx, peer, Action::ListGrants).await?;
        return Err(Refusal::not_found("grant"));
    };
    let ctx = Context {
        target: Relay::grant_target(&grant),
        user: Some(grant.user.clone()),
        agent: Some(peer.id.clone()),
        now,
        ..Context::default()
    };
    // Its own grant: a denial here comes of the policy or catalog changing since the grant was
    // made (a resource dropped), which the agent could not have avoided: not counted.
    relay
        .authorize_counting(cx, peer, Action::SubmissionStatus, &ctx, false)
        .await?;
    let assignment = relay.store.assignment(&grant_id)?;
    let refusal = assignment.as_ref().and_then(|a| match &a.state {
        AssignmentState::Refused { refusal } => Some(WireSigned {
            statement: refusal.statement.clone(),
            signature: refusal.signature.clone(),
        }),
        _ => None,
    });
    let (state, envelope_id, receipt_index) = match grant.state {
        // Closed when its source refused it.
        GrantState::Open | GrantState::Expired if refusal.is_some() => {
            (SubmissionState::RefusedAtSource, None, None)
        }
        GrantState::Open if grant.expires <= now => (SubmissionState::Expired, None, None),
        GrantState::Open if assignment.as_ref().is_some_and(|a| a.queued()) => {
            (SubmissionState::Queued, None, None)
        }
        GrantState::Open => (SubmissionState::Open, None, None),
        GrantState::Expired => (SubmissionState::Expired, None, None),
        GrantState::Denied => (SubmissionState::Denied, None, None),
        GrantState::Used { envelope_id } => match relay.store.delivery(&envelope_id)? {
            Some(d) => (
                match d.status {
                    DeliveryStatus::Delivered => SubmissionState::Delivered,
                    DeliveryStatus::Undecryptable => SubmissionState::Undecryptable,
                },
                Some(envelope_id),
                Some(d.receipt_index),
            ),
            None if relay.store.envelope(&envelope_id)?.is_some() => {
                (SubmissionState::Submitted, Some(envelope_id), None)
            }
            // Gone without a receipt: its time to live passed unfetched.
            None => (SubmissionState::Expired, Some(envelope_id), None),
        },
    };
    Ok(Reply::SubmissionStatus {
        state,
        envelope_id,
        receipt_index,
        source: assignment.map(|a| a.source.name().to_owned()),
        refusal,
    })
}
