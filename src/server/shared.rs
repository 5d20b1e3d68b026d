//! A node that shares its store with other nodes (PostgreSQL) keeps its copies of the shared
//! state in step: every second it reloads the quarantines and, when the store holds directory
//! statements it has not loaded (a push or revocation through another node), the directory.
//! A party revoked or an agent quarantined through another node is refused here within about a
//! second, and a newly quarantined agent's connections here are closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::core::wire::CloseCode;
use crate::ids::SpiffeId;

use super::state::Relay;

/// How often the shared state is reloaded.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Directory statements this node last loaded from the store (0: reload at the next sync).
#[derive(Default)]
pub struct Synced {
    statements: AtomicUsize,
}

impl Synced {
    /// This node changed the directory itself: the next sync reloads it from the store.
    pub fn directory_changed(&self) {
        self.statements.store(0, Ordering::SeqCst);
    }
}

/// Runs [`Relay::sync_shared_state`] every [`SYNC_EVERY`] until aborted.
pub async fn run(relay: Arc<Relay>) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    loop {
        tick.tick().await;
        let r = relay.clone();
        match tokio::task::spawn_blocking(move || r.sync_shared_state()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload the shared state; retrying"),
            Err(_) => tracing::error!("the shared-state task failed"),
        }
    }
}

impl Relay {
    /// Reloads the quarantines and, if the store holds statements this node has not loaded,
    /// the directory.
    pub fn sync_shared_state(&self) -> crate::error::Result<()> {
        let generation = self.monitor.quarantine_generation();
        let added = self
            .monitor
            .replace_quarantined(self.store.quarantined()?, generation);
        for agent in added {
            if let Ok(id) = agent.parse::<SpiffeId>() {
                self.connections.close_all(&id, CloseCode::Quarantined);
            }
        }
        let (entries, revocations) = self.store.directory()?;
        let count = entries.len() + revocations.len();
        if count != self.synced.statements.load(Ordering::SeqCst) {
            // Not while this node pushes (it replaces the directory after its commit).
            let _one_at_a_time = self.push_lock.blocking_lock();
            let (directory, count) =
                super::startup::directory_from_store(self.store.as_ref(), &self.authority)?;
            let revoked: Vec<SpiffeId> =
                directory.revocations().map(|(r, _)| r.id.clone()).collect();
            if let Ok(mut d) = self.directory.write() {
                *d = directory;
            }
            for id in &revoked {
                self.connections.close_all(id, CloseCode::Revoked);
            }
            self.synced.statements.store(count, Ordering::SeqCst);
        }
        Ok(())
    }
}
