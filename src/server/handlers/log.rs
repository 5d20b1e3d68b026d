//! The transparency log: the latest signed checkpoint (with a consistency proof from the
//! caller's last one) and event leaves for auditors.

use crate::core::policy::Action;
use crate::core::wire::{Reply, PAGE_BYTES};
use crate::net::Peer;

use crate::server::services::effects::Cx;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

/// Most events in one reply.
pub const MAX_EVENTS: u32 = 1000;

pub async fn checkpoint(relay: &Relay, peer: &Peer, old_size: Option<u64>, cx: &Cx) -> Handled {
    relay.authorize_relay(cx, peer, Action::Checkpoint).await?;
    // Checkpoints are signed lazily: bring the latest up to the log's size first.
    let signer = relay.signer.clone();
    let store = relay.store.clone();
    cx.blocking(move || signer.sign_current(store.as_ref()))
        .await?;
    // The newest witnessed checkpoint when there is one at least as large as the caller's.
    let (cp, note) = relay
        .checkpoint_for(0, old_size, std::time::Duration::ZERO)
        .await?;
    let consistency = match old_size {
        Some(old) => relay.store.consistency_proof(old, cp.size)?,
        None => Vec::new(),
    };
    Ok(Reply::Checkpoint {
        checkpoint: note,
        consistency,
    })
}

/// An inclusion proof of leaf `index` against the newest witnessed checkpoint that covers it
/// (or the newest signed one), for upgrading a receipt answered before its checkpoint was
/// witnessed. The answer holds hashes only, never the leaf (reading leaves is for auditors,
/// through `Events`), so any enrolled party may ask, as for checkpoints.
pub async fn proof(
    relay: &Relay,
    peer: &Peer,
    index: u64,
    old_size: Option<u64>,
    cx: &Cx,
) -> Handled {
    relay.authorize_relay(cx, peer, Action::Checkpoint).await?;
    if index >= relay.store.log_size() {
        return Err(Refusal::not_found("log entry"));
    }
    let (cp, note) = relay
        .checkpoint_for(index.saturating_add(1), old_size, std::time::Duration::ZERO)
        .await?;
    let consistency = match old_size {
        Some(old) => relay.store.consistency_proof(old, cp.size)?,
        None => Vec::new(),
    };
    Ok(Reply::Proof {
        tree_size: cp.size,
        proof: relay.store.inclusion_proof(index, cp.size)?,
        checkpoint: note,
        consistency,
    })
}

pub async fn events(relay: &Relay, peer: &Peer, from: u64, limit: u32, cx: &Cx) -> Handled {
    relay.authorize_relay(cx, peer, Action::Audit).await?;
    let limit = usize::try_from(limit.clamp(1, MAX_EVENTS)).unwrap_or(1000);
    // Whole leaves only, under the page budget: the caller asks again from the next index.
    let mut events = Vec::new();
    let mut bytes = 0usize;
    for (i, e) in relay.store.events(from, limit)? {
        let leaf = e.leaf_bytes();
        if bytes + leaf.len() + 16 > PAGE_BYTES && !events.is_empty() {
            break;
        }
        bytes += leaf.len() + 16;
        events.push((i, leaf));
    }
    Ok(Reply::Events { events })
}
