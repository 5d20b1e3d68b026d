//! Whether the relay can serve now (`/readyz`), and its metrics with the gauges read now
//! (`/metrics`); the admin listener (`server::shell::admin_http`) serves them.

use crate::error::Result;

use super::relay::Relay;

/// Why the relay cannot serve now, if it cannot: the store answers (and has not failed a
/// write it could not recover from), the log's root can be read and its checkpoints signed,
/// and the commit thread runs. (A policy is always in force: a relay never starts on, or
/// reloads to, one that does not validate.)
pub fn readiness(relay: &Relay) -> std::result::Result<(), String> {
    relay
        .store
        .health()
        .map_err(|e| format!("store: {}", e.message()))?;
    let size = relay.store.log_size();
    relay
        .store
        .log_root(size)
        .map_err(|e| format!("log: {}", e.message()))?;
    if let Some(why) = relay.signer.failure() {
        return Err(format!("log: cannot sign a checkpoint: {why}"));
    }
    if !relay.committer.is_running() {
        return Err("store: the commit thread has stopped".into());
    }
    Ok(())
}

/// The metrics, with the gauges read now.
pub fn render_metrics(relay: &Relay) -> Result<String> {
    let m = &relay.metrics;
    m.log_entries.set(gauge_value(relay.store.log_size()));
    if let Ok(latest) = relay.checkpoint.read() {
        m.checkpoint_size
            .set(gauge_value(latest.as_ref().map_or(0, |(cp, _)| cp.size)));
    }
    if let Some(w) = &relay.witnessing {
        let size = w.witnessed.borrow().as_ref().map_or(0, |(cp, _)| cp.size);
        m.witnessed_size.set(gauge_value(size));
        m.witness_quorum.set(gauge_value(w.policy.quorum as u64));
    }
    m.ready.set(i64::from(readiness(relay).is_ok()));
    m.quarantined_agents
        .set(gauge_value(relay.monitor.quarantined_count() as u64));
    m.connections
        .set(gauge_value(relay.connections.count() as u64));
    m.subscriptions
        .set(gauge_value(relay.feeds.subscribers() as u64));
    m.render()
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
