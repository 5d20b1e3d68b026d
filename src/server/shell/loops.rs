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
    let mut tail = relay.store.log_size();
    loop {
        tick.tick().await;
        let r = relay.clone();
        let synced = tokio::task::spawn_blocking(move || {
            cluster::sync_shared_state(&r)?;
            cluster::publish_from_log(&r, &mut tail)?;
            Ok::<_, crate::error::Error>(tail)
        })
        .await;
        match synced.map(|r| r.map(|t| tail = t)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload the shared state; retrying"),
            Err(_) => tracing::error!("the shared-state task failed"),
        }
    }
}
