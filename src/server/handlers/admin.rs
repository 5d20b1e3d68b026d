//! Admins: the kill switch that quarantines an agent at once, and its release.

use crate::core::policy::{Action, Context, Target};
use crate::core::wire::{ErrorCode, Reply};
use crate::ids::{PartyKind, SpiffeId};
use crate::net::Peer;

use crate::server::services::effects::Cx;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

async fn authorize_on_agent(
    relay: &Relay,
    peer: &Peer,
    action: Action,
    agent: &str,
    cx: &Cx,
) -> Result<SpiffeId, Refusal> {
    let now = cx.now;
    let id = SpiffeId::new(&relay.trust_domain, PartyKind::Agent, agent)?;
    let ctx = Context {
        target: Target::Agent { id: id.clone() },
        now,
        ..Context::default()
    };
    relay.authorize(cx, peer, action, &ctx).await?;
    Ok(id)
}

pub async fn quarantine(relay: &Relay, peer: &Peer, agent: &str, reason: &str, cx: &Cx) -> Handled {
    let now = cx.now;
    let id = authorize_on_agent(relay, peer, Action::Quarantine, agent, cx).await?;
    // The reason goes into the log, an auditor's terminal and the store's text columns.
    crate::core::grant::check_reason(reason)?;
    if relay.monitor.is_quarantined(&id.to_string()) {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!("{} is already quarantined", id.short()),
        ));
    }
    relay
        .monitor
        .quarantine(
            &relay.reach(cx),
            &id,
            &format!("manual (kill switch): {reason}"),
            &peer.id.to_string(),
            now,
        )
        .await?;
    Ok(Reply::Done)
}

pub async fn release(relay: &Relay, peer: &Peer, agent: &str, cx: &Cx) -> Handled {
    let now = cx.now;
    let id = authorize_on_agent(relay, peer, Action::Release, agent, cx).await?;
    relay
        .monitor
        .release_agent(&relay.reach(cx), &id, &peer.id, now)
        .await?;
    Ok(Reply::Done)
}
