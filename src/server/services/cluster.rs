//! A node that shares its store with other nodes (PostgreSQL) keeps its copies of the shared
//! state in step: every second (on the shell's timer, `server::shell::loops`) it reloads the
//! quarantines and, when the store holds directory statements it has not loaded (a push or
//! revocation through another node), the directory. A party revoked or an agent quarantined
//! through another node is refused here within about a second, and a newly quarantined
//! agent's connections here are closed.

use crate::core::wire::CloseCode;
use crate::ids::SpiffeId;

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
