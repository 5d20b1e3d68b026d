//! Admins: the kill switch that quarantines an agent at once, and its release.

use crate::core::policy::{Action, Context, Target};
use crate::core::store::WriteOp;
use crate::core::wire::{ErrorCode, Reply};
use crate::ids::{PartyKind, SpiffeId};
use crate::net::Peer;

use super::super::events;
use super::super::refusal::{Handled, Refusal};
use super::super::state::Relay;

async fn authorize_on_agent(
    relay: &Relay,
    peer: &Peer,
    action: Action,
    agent: &str,
    now: u64,
) -> Result<SpiffeId, Refusal> {
    let id = SpiffeId::new(&relay.trust_domain, PartyKind::Agent, agent)?;
    let ctx = Context {
        target: Target::Agent { id: id.clone() },
        now,
        ..Context::default()
    };
    relay.authorize(peer, action, &ctx).await?;
    Ok(id)
}

pub async fn quarantine(
    relay: &Relay,
    peer: &Peer,
    agent: &str,
    reason: &str,
    now: u64,
) -> Handled {
    let id = authorize_on_agent(relay, peer, Action::Quarantine, agent, now).await?;
    if relay.monitor.is_quarantined(&id.to_string()) {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!("{} is already quarantined", id.short()),
        ));
    }
    relay
        .quarantine(
            &id,
            &format!("manual (kill switch): {reason}"),
            &peer.id.to_string(),
            now,
        )
        .await?;
    Ok(Reply::Done)
}

pub async fn release(relay: &Relay, peer: &Peer, agent: &str, now: u64) -> Handled {
    let id = authorize_on_agent(relay, peer, Action::Release, agent, now).await?;
    relay
        .commit(WriteOp::Release {
            agent: id.clone(),
            event: events::agent_released(now, &peer.id, &id),
        })
        .await?;
    relay.monitor.release(&id.to_string());
    if let Err(e) = relay.store.clear_signals(&id.to_string()) {
        // Released all the same; old signals age out of the window.
        tracing::warn!(error = %e, "cannot clear the agent's monitor signals");
    }
    Ok(Reply::Done)
}
