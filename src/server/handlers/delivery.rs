//! Delivery to the user who asked: the inbox, fetching an envelope (the shell streams its
//! ciphertext), and the user's signed receipt with its inclusion proof.

use crate::core::grant::{DeliveryStatus, Receipt};
use crate::core::policy::{Action, Context, Target};
use crate::core::sign::StatementType;
use crate::core::store::{EnvelopeRecord, StoredSigned, WriteOp};
use crate::core::wire::{EnvelopeView, ErrorCode, Page, Reply, WireSigned};
use crate::ids::{EnvelopeId, PartyKind};
use crate::net::Peer;

use super::super::events;
use super::super::monitor::Signal;
use super::super::refusal::{Handled, Refusal};
use super::super::state::Relay;
use super::{paginate, StoredBody};

/// A page of the caller's envelopes that have not expired and have no receipt yet.
pub async fn inbox(relay: &Relay, peer: &Peer, page: Page, now: u64) -> Handled {
    relay.authorize_relay(peer, Action::Inbox, now).await?;
    let limit = page.capped_limit();
    let after = page.after.map(EnvelopeId);
    let records = relay.store.inbox(&peer.id, after.as_ref(), limit)?;
    let (envelopes, next) = paginate(
        records,
        limit,
        |e| e.envelope_id.0,
        |e| {
            if now < e.expires_at {
                view(relay, &e).map(Some)
            } else {
                Ok(None)
            }
        },
    )?;
    Ok(Reply::Inbox { envelopes, next })
}

/// The envelope as its user sees it: the grant, the agent's statement and the agent's entry.
fn view(relay: &Relay, e: &EnvelopeRecord) -> Result<EnvelopeView, Refusal> {
    let grant = relay
        .store
        .grant(&e.grant_id)?
        .ok_or_else(|| Refusal::not_found("grant"))?;
    // The agent's latest entry, even if since revoked: the client judges the signature.
    let agent_entry = relay
        .latest_signed(&e.agent)
        .map_err(|_| Refusal::not_found("agent entry"))?;
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

/// The envelope's view and where its ciphertext is; the policy decides on the envelope's owner.
pub async fn fetch(
    relay: &Relay,
    peer: &Peer,
    envelope_id: EnvelopeId,
    now: u64,
) -> Result<(EnvelopeView, StoredBody), Refusal> {
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
        .authorize(peer, Action::Fetch, &ctx)
        .await
        .map_err(|r| hide_others(peer, r))?;
    let record = record
        .filter(|e| e.user == peer.id && now < e.expires_at && e.receipt.is_none())
        .ok_or_else(|| Refusal::not_found("envelope"))?;
    let view = view(relay, &record)?;
    let body = if record.inline {
        let bytes = relay
            .store
            .inline_body(&envelope_id)?
            .ok_or_else(|| Refusal::not_found("envelope"))?;
        // Nothing is sent that does not match what the agent signed for.
        if crate::core::directory::sha256(&bytes) != record.sha256 {
            return Err(relay.integrity_failure(&envelope_id, now).await);
        }
        StoredBody::Inline(bytes)
    } else {
        StoredBody::Blob {
            path: relay.blobs.path(&envelope_id),
            length: record.length,
            sha256: record.sha256,
        }
    };
    Ok((view, body))
}

/// Records the user's signed receipt (delivered or undecryptable) and answers with its log
/// entry, inclusion proof and the checkpoint that covers it.
pub async fn receipt(relay: &Relay, peer: &Peer, receipt: WireSigned, now: u64) -> Handled {
    let signed = receipt.to_signed(StatementType::Receipt)?;
    let claimed = Receipt::decode(&signed.statement)?;
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
        .authorize(peer, Action::Receipt, &ctx)
        .await
        .map_err(|r| hide_others(peer, r))?;
    let (user_entry, _) = relay.entry_for(&peer.id, now)?;
    let r = Receipt::verify(&signed, &user_entry.signing_key)?;
    let record = relay
        .store
        .envelope(&r.envelope_id)?
        .filter(|e| e.user == peer.id)
        .ok_or_else(|| Refusal::not_found("envelope"))?;
    if r.user != peer.id
        || r.grant_id != record.grant_id
        || r.agent != record.agent
        || r.ciphertext_sha256 != record.sha256
    {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the receipt does not describe this envelope",
        ));
    }
    let event = events::receipt_recorded(now, &peer.id, &r, &signed);
    let leaf = event.leaf_bytes();
    let delete = relay.config.delete_after_delivery;
    let index = relay
        .commit(WriteOp::RecordReceipt {
            envelope_id: r.envelope_id,
            user: peer.id.clone(),
            receipt: StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            delete,
            event,
        })
        .await?;
    if delete {
        relay.blobs.remove(&r.envelope_id);
    }
    if r.status == DeliveryStatus::Undecryptable {
        // Only the user's client can tell a file was not sealed to it: count it against the agent.
        relay
            .signal_from(&r.agent, Signal::Undecryptable, Some(&peer.id), now)
            .await;
    }
    // The commit thread signed a checkpoint covering this event before answering.
    let (cp, note) = relay
        .latest_checkpoint()
        .filter(|(cp, _)| cp.size > index)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::Unavailable,
                "the receipt is recorded but no checkpoint covers it yet; fetch its proof later",
            )
        })?;
    let proof = relay.store.inclusion_proof(index, cp.size)?;
    Ok(Reply::ReceiptRecorded {
        event_index: index,
        leaf,
        tree_size: cp.size,
        proof,
        checkpoint: note,
    })
}
