//! The shell's timers that drive a service: the reload of the state nodes share.

use std::sync::Arc;
use std::time::Duration;

use crate::server::services::cluster;
use crate::server::services::relay::Relay;

/// How often the shared state is reloaded.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Runs [`cluster::sync_shared_state`] every [`SYNC_EVERY`] until aborted.
pub async fn cluster_sync(relay: Arc<Relay>) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    loop {
        tick.tick().await;
        let r = relay.clone();
        match tokio::task::spawn_blocking(move || cluster::sync_shared_state(&r)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot reload the shared state; retrying"),
            Err(_) => tracing::error!("the shared-state task failed"),
        }
    }
}
