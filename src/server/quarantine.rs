//! Quarantine: the monitor's signals, the durable quarantine record, closing the agent's
//! connections, and the operator's alert (a log line on `sealrelay::alert` and the configured
//! alert command).

use crate::core::store::WriteOp;
use crate::core::wire::CloseCode;
use crate::ids::{PartyKind, SpiffeId};

use super::events;
use super::monitor::Signal;
use super::refusal::Refusal;
use super::state::Relay;

impl Relay {
    /// Quarantines an agent: durable record and event, refused from the next request, its open
    /// connections closed, its grants held, and an alert raised.
    pub(crate) async fn quarantine(
        &self,
        agent: &SpiffeId,
        reason: &str,
        actor: &str,
        now: u64,
    ) -> Result<u64, Refusal> {
        let event = events::agent_quarantined(now, actor, agent, reason);
        let index = self
            .commit(WriteOp::Quarantine {
                agent: agent.clone(),
                reason: reason.to_owned(),
                event,
            })
            .await?;
        self.monitor.set_quarantined(&agent.to_string(), reason);
        self.metrics.quarantined();
        self.connections.close_all(agent, CloseCode::Quarantined);
        tracing::error!(target: "sealrelay::alert", agent = %agent, reason, "agent quarantined");
        if let Some(cmd) = self.monitor.config().alert_command.clone() {
            let spawned = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .env("SEALRELAY_ALERT_AGENT", agent.to_string())
                .env("SEALRELAY_ALERT_REASON", reason)
                .stdin(std::process::Stdio::null())
                .spawn();
            if let Err(e) = spawned {
                tracing::error!(target: "sealrelay::alert", error = %e, "the alert command did not start");
            }
        }
        Ok(index)
    }

    /// Counts a signal against an agent; quarantines it past the threshold.
    pub(crate) async fn signal(&self, agent: &SpiffeId, signal: Signal, now: u64) {
        self.signal_from(agent, signal, None, now).await;
    }

    /// [`Relay::signal`] raised by a party (undecryptable receipts count once per user).
    pub(crate) async fn signal_from(
        &self,
        agent: &SpiffeId,
        signal: Signal,
        claimant: Option<&SpiffeId>,
        now: u64,
    ) {
        if agent.kind() != PartyKind::Agent {
            return;
        }
        let claimant = claimant.map(ToString::to_string);
        let agent_s = agent.to_string();
        if self.monitor.is_quarantined(&agent_s) {
            return;
        }
        // On a store several nodes share, the signals of every node count together.
        let since = now.saturating_sub(self.monitor.config().window_secs);
        let shared = self.store.record_signal(
            &agent_s,
            signal.key(),
            claimant.as_deref(),
            now,
            since,
            signal.per_claimant(),
        );
        let verdict = match shared {
            Ok(Some(count)) => self.monitor.judge(signal, count),
            Ok(None) => self
                .monitor
                .record_from(&agent_s, signal, claimant.as_deref(), now),
            Err(e) => {
                // The database is out of reach: this node counts alone meanwhile.
                tracing::warn!(error = %e, "cannot record a monitor signal in the store");
                self.monitor
                    .record_from(&agent_s, signal, claimant.as_deref(), now)
            }
        };
        if let Some(reason) = verdict {
            let actor = self.actor("monitor");
            if let Err(e) = self
                .quarantine(agent, &format!("automatic: {reason}"), &actor, now)
                .await
            {
                tracing::error!(agent = %agent, error = %e.message, "could not quarantine");
            }
        }
    }
}
