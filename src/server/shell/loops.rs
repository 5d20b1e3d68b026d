//! The shell's timers that drive a service: the reload of the state nodes share, and the tail
//! of their shared log for this node's subscriptions.

use std::sync::Arc;
use std::time::Duration;

use crate::server::services::cluster;
use crate::server::services::relay::Relay;

/// How often the shared state is reloaded.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Runs [`cluster::sync_shared_state`] and [`cluster::publish_from_log`] every [`SYNC_EVERY`]
/// until aborted.
pub async fn cluster_sync(relay: Arc<Relay>) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    // Where the tail of the shared log is (read on the blocking pool at the first pass).
    let mut tail: Option<u64> = None;
    loop {
        tick.tick().await;
        let r = relay.clone();
        let synced = tokio::task::spawn_blocking(move || {
            // Each runs whatever the other did; the tail keeps what it published.
            let synced = cluster::sync_shared_state(&r);
            let mut at = tail.unwrap_or_else(|| r.store.log_size());
            let published = cluster::publish_from_log(&r, &mut at);
            (Some(at), synced.and(published))
        })
        .await;
        match synced.map(|(t, r)| {
            tail = t;
            r
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload the shared state; retrying"),
            Err(_) => tracing::error!("the shared-state task failed"),
        }
    }
}
