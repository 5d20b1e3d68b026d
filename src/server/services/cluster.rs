//! A node that shares its store with other nodes (PostgreSQL) keeps its copies of the shared
//! state in step: every second (on the shell's timer, `server::shell::loops`) it reloads the
//! quarantines and, when the store holds directory statements it has not loaded (a push or
//! revocation through another node), the directory. A party revoked or an agent quarantined
//! through another node is refused here within about a second, and a newly quarantined
//! agent's connections here are closed. It also tails the shared event log
//! ([`publish_from_log`]), so that a grant or envelope another node committed reaches the
//! subscriptions open here within about a second.

use crate::core::store::Event;
use crate::core::wire::{CloseCode, Feed};
use crate::ids::{parse_hex, GrantId, SpiffeId};

use super::relay::Relay;

/// Reloads the quarantines and, if the store holds statements this node has not loaded,
/// the directory.
pub fn sync_shared_state(relay: &Relay) -> crate::error::Result<()> {
    let generation = relay.monitor.quarantine_generation();
    let added = relay
        .monitor
        .replace_quarantined(relay.store.quarantined()?, generation);
    for agent in added {
        if let Ok(id) = agent.parse::<SpiffeId>() {
            relay.connections.close_all(&id, CloseCode::Quarantined);
        }
    }
    let size = relay
        .directory
        .read()
        .map_err(|_| crate::error::Error::internal("the directory lock is poisoned"))?
        .log_size();
    if !relay.store.directory_log(size, 1)?.is_empty() {
        // Not while this node pushes (it replaces the directory after its commit).
        let _one_at_a_time = relay.push_lock.blocking_lock();
        let mut next = relay
            .directory
            .read()
            .map_err(|_| crate::error::Error::internal("the directory lock is poisoned"))?
            .clone();
        super::loading::catch_up(&mut next, relay.store.as_ref(), &relay.authority)?;
        let revoked: Vec<SpiffeId> = next.revocations().map(|(r, _)| r.id.clone()).collect();
        if let Ok(mut d) = relay.directory.write() {
            *d = next;
        }
        for id in &revoked {
            relay.connections.close_all(id, CloseCode::Revoked);
        }
    }
    Ok(())
}

/// Most events read per pass: a node further behind than this tells every subscription here to
/// list again instead.
pub const TAIL_MAX: u64 = 10_000;

/// Publishes to this node's subscriptions the grants and envelopes in the shared log from
/// `from` on (this node's own too: a subscription sends nothing twice), and moves `from` to
/// the log's end.
pub fn publish_from_log(relay: &Relay, from: &mut u64) -> crate::error::Result<()> {
    let size = relay.store.log_size();
    if size.saturating_sub(*from) > TAIL_MAX {
        relay.feeds.resync_all();
        *from = size;
        return Ok(());
    }
    while *from < size {
        let batch = relay.store.events(*from, 1000)?;
        let Some((last, _)) = batch.last() else { break };
        let next = last + 1;
        for (_, e) in &batch {
            publish(relay, e);
        }
        *from = next;
    }
    Ok(())
}

/// The party and feed an event makes something new for, if any.
fn publish(relay: &Relay, e: &Event) {
    let Ok(id) = parse_hex::<16>(&e.subject) else {
        return;
    };
    let field = |name: &str| {
        e.detail
            .split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<SpiffeId>().ok())
    };
    match e.kind.as_str() {
        "grant.created" if e.decision == "allow" => {
            if let Some(agent) = field("agent") {
                relay.feeds.publish(&agent, Feed::Grants, id);
            }
        }
        "grant.approved" => {
            if let Ok(Some(g)) = relay.store.grant(&GrantId(id)) {
                relay.feeds.publish(&g.agent, Feed::Grants, id);
            }
        }
        "envelope.submitted" => {
            if let Some(user) = field("user") {
                relay.feeds.publish(&user, Feed::Inbox, id);
            }
        }
        _ => {}
    }
}
