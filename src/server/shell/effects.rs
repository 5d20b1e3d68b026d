//! The shell's side of [`Cx`]: blocking jobs on tokio's blocking pool, and alerts as the
//! configured alert command (`[monitor] alert_command`, run by `sh -c` with
//! `$SEALRELAY_ALERT_AGENT` and `$SEALRELAY_ALERT_REASON` set, as docs/config.md says).

use std::sync::Arc;

use crate::ids::SpiffeId;

use crate::server::services::effects::{AlertSink, Blocking, Cx, Job};
use crate::server::services::relay::Relay;

/// tokio's blocking pool.
pub struct TokioBlocking;

impl Blocking for TokioBlocking {
    fn run(&self, job: Job) {
        drop(tokio::task::spawn_blocking(job));
    }
}

/// Starts the configured alert command on each alert (nothing when none is configured).
pub struct CommandAlerts {
    command: Option<String>,
}

impl CommandAlerts {
    pub fn new(command: Option<String>) -> Self {
        CommandAlerts { command }
    }
}

impl AlertSink for CommandAlerts {
    fn quarantined(&self, agent: &SpiffeId, reason: &str) {
        let Some(cmd) = &self.command else {
            return;
        };
        let spawned = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("SEALRELAY_ALERT_AGENT", agent.to_string())
            .env("SEALRELAY_ALERT_REASON", reason)
            .stdin(std::process::Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            tracing::error!(target: "sealrelay::alert", error = %e, "the alert command did not start");
        }
    }
}

/// What the shell hands every request of `relay`: made once at start, cloned per request.
#[derive(Clone)]
pub struct Effects {
    blocking: Arc<dyn Blocking>,
    alerts: Arc<dyn AlertSink>,
}

impl Effects {
    pub fn new(relay: &Relay) -> Self {
        Effects {
            blocking: Arc::new(TokioBlocking),
            alerts: Arc::new(CommandAlerts::new(
                relay.config.monitor.alert_command.clone(),
            )),
        }
    }

    /// The context of a request that starts now (the relay's clock, read once).
    pub fn cx(&self, relay: &Relay) -> Cx {
        self.cx_at(relay, relay.clock().now())
    }

    /// The context of a request whose time is `now`.
    pub fn cx_at(&self, relay: &Relay, now: u64) -> Cx {
        Cx::new(
            now,
            relay.clock().clone(),
            self.blocking.clone(),
            self.alerts.clone(),
        )
    }
}
