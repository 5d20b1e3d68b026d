//! Agent misbehaviour, in one place: the signals that count against an agent, the thresholds,
//! quarantine (the kill switch and the automatic one) and release, and the per-identity rate
//! limits whose hits are one of the signals.
//!
//! The monitor counts, per agent and over a sliding window, what an agent does wrong: policy
//! denials, envelopes its users could not open (`undecryptable` receipts), envelopes the relay
//! refused as invalid, and rate-limit hits. Past a threshold the agent is quarantined (the relay
//! refuses its requests, closes its connections, holds its grants, logs an event and raises an
//! alert); only an admin's `agent release` lifts it, or the manual kill switch sets it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::core::store::{Store, WriteOp};
use crate::core::wire::CloseCode;
use crate::ids::{PartyKind, SpiffeId};

use super::committer::Committer;
use super::connections::Connections;
use super::effects::AlertSink;
use super::events;
use super::metrics::Metrics;
use super::refusal::Refusal;

/// Thresholds and the alert hook (`[monitor]` in the relay config).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// The sliding window, in seconds.
    pub window_secs: u64,
    /// Quarantine after this many `undecryptable` receipts in the window.
    pub max_undecryptable: u32,
    /// … this many policy denials.
    pub max_denials: u32,
    /// … this many envelopes refused as invalid.
    pub max_invalid_envelopes: u32,
    /// … this many rate-limit hits.
    pub max_rate_limited: u32,
    /// A command run (by `sh -c`) on every quarantine, with $SEALRELAY_ALERT_AGENT and
    /// $SEALRELAY_ALERT_REASON set. Alerts are also logged at error level on target
    /// `sealrelay::alert`.
    pub alert_command: Option<String>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            window_secs: 3600,
            max_undecryptable: 3,
            max_denials: 20,
            max_invalid_envelopes: 3,
            max_rate_limited: 100,
            alert_command: None,
        }
    }
}

/// What counts against an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Denial,
    Undecryptable,
    InvalidEnvelope,
    RateLimited,
}

impl Signal {
    /// How a shared store records the signal.
    pub fn key(self) -> &'static str {
        match self {
            Signal::Denial => "denial",
            Signal::Undecryptable => "undecryptable",
            Signal::InvalidEnvelope => "invalid_envelope",
            Signal::RateLimited => "rate_limited",
        }
    }

    /// Whether each party that raises it counts once (one user cannot quarantine an agent
    /// that everyone shares).
    pub fn per_claimant(self) -> bool {
        self == Signal::Undecryptable
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Denial => "policy denials",
            Signal::Undecryptable => "undecryptable receipts",
            Signal::InvalidEnvelope => "invalid envelopes",
            Signal::RateLimited => "rate-limit hits",
        }
    }
}

/// A signal as counted: when, what, and who raised it (if a party did).
type Raised = (u64, Signal, Option<String>);

pub struct Monitor {
    config: MonitorConfig,
    /// Per agent: (time, signal, who raised it). Undecryptable receipts count once per user, so
    /// one user cannot quarantine an agent that everyone shares.
    counters: Mutex<HashMap<String, VecDeque<Raised>>>,
    quarantined: RwLock<HashMap<String, String>>,
    /// Bumped by every local quarantine and release, so a reload from a shared store read
    /// before one of them does not undo it.
    generation: std::sync::atomic::AtomicU64,
}

impl Monitor {
    pub fn new(config: MonitorConfig, quarantined: Vec<(String, String)>) -> Self {
        Monitor {
            config,
            counters: Mutex::new(HashMap::new()),
            quarantined: RwLock::new(quarantined.into_iter().collect()),
            generation: Default::default(),
        }
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Agents quarantined now.
    pub fn quarantined_count(&self) -> usize {
        self.quarantined.read().map(|q| q.len()).unwrap_or(0)
    }

    pub fn is_quarantined(&self, agent: &str) -> bool {
        self.quarantined
            .read()
            .map(|q| q.contains_key(agent))
            .unwrap_or(true)
    }

    /// Records a signal raised by a party (`claimant`, if one did), returning the reason to
    /// quarantine when a threshold is crossed now. Signals of a kind that
    /// counts per claimant (undecryptable receipts) count once for each.
    pub fn record_from(
        &self,
        agent: &str,
        signal: Signal,
        claimant: Option<&str>,
        now: u64,
    ) -> Option<String> {
        if self.is_quarantined(agent) {
            return None;
        }
        let mut counters = self.counters.lock().ok()?;
        let list = counters.entry(agent.to_owned()).or_default();
        list.push_back((now, signal, claimant.map(str::to_owned)));
        let horizon = now.saturating_sub(self.config.window_secs);
        while list.front().is_some_and(|(t, _, _)| *t < horizon) {
            list.pop_front();
        }
        let of_kind = list.iter().filter(|(_, s, _)| *s == signal);
        let count = if signal.per_claimant() {
            let claimants: std::collections::HashSet<_> =
                of_kind.map(|(_, _, c)| c.as_deref()).collect();
            claimants.len()
        } else {
            of_kind.count()
        };
        self.judge(signal, count as u64)
    }

    /// The reason to quarantine when `count` signals of a kind in the window reach its
    /// threshold (a count from [`Monitor::record_from`], or from the shared store).
    pub fn judge(&self, signal: Signal, count: u64) -> Option<String> {
        let limit = match signal {
            Signal::Denial => self.config.max_denials,
            Signal::Undecryptable => self.config.max_undecryptable,
            Signal::InvalidEnvelope => self.config.max_invalid_envelopes,
            Signal::RateLimited => self.config.max_rate_limited,
        };
        let from = if signal.per_claimant() {
            " from different users"
        } else {
            ""
        };
        (limit > 0 && count >= u64::from(limit)).then(|| {
            format!(
                "{count} {}{from} within {} s (threshold {limit})",
                signal.name(),
                self.config.window_secs
            )
        })
    }

    /// Where local quarantines and releases stand (read before reading the shared store).
    pub fn quarantine_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces every quarantine with `now` (what the shared store held when
    /// [`Monitor::quarantine_generation`] was `generation`); returns the agents quarantined that
    /// were not before. Nothing changes if a local quarantine or release came in between (the
    /// next reload sees it in the store).
    pub fn replace_quarantined(&self, now: Vec<(String, String)>, generation: u64) -> Vec<String> {
        let Ok(mut q) = self.quarantined.write() else {
            return Vec::new();
        };
        if self.quarantine_generation() != generation {
            return Vec::new();
        }
        let added = now
            .iter()
            .filter(|(a, _)| !q.contains_key(a))
            .map(|(a, _)| a.clone())
            .collect();
        *q = now.into_iter().collect();
        added
    }

    pub fn set_quarantined(&self, agent: &str, reason: &str) {
        if let Ok(mut q) = self.quarantined.write() {
            q.insert(agent.to_owned(), reason.to_owned());
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn release(&self, agent: &str) {
        if let Ok(mut q) = self.quarantined.write() {
            q.remove(agent);
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if let Ok(mut c) = self.counters.lock() {
            c.remove(agent);
        }
    }
}

/// What acting on misbehaviour touches: the store (signals counted across nodes, the durable
/// quarantine), the committer (every change with its event), the open connections (closed on a
/// quarantine), the metrics and the alert sink.
pub struct Reach<'a> {
    pub store: &'a dyn Store,
    pub committer: &'a Committer,
    pub connections: &'a Connections,
    pub metrics: &'a Metrics,
    pub alerts: &'a dyn AlertSink,
    /// The actor of automatic quarantines (`spiffe://<td>/relay/monitor`).
    pub monitor_actor: String,
}

impl Monitor {
    /// Quarantines an agent: durable record and event, refused from the next request, its open
    /// connections closed, its grants held, and an alert raised.
    pub async fn quarantine(
        &self,
        reach: &Reach<'_>,
        agent: &SpiffeId,
        reason: &str,
        actor: &str,
        now: u64,
    ) -> Result<u64, Refusal> {
        let event = events::agent_quarantined(now, actor, agent, reason);
        let index = reach
            .committer
            .commit(WriteOp::Quarantine {
                agent: agent.clone(),
                reason: reason.to_owned(),
                event,
            })
            .await?;
        self.set_quarantined(&agent.to_string(), reason);
        reach.metrics.quarantined();
        reach.connections.close_all(agent, CloseCode::Quarantined);
        tracing::error!(target: "sealrelay::alert", agent = %agent, reason, "agent quarantined");
        reach.alerts.quarantined(agent, reason);
        Ok(index)
    }

    /// An admin's release: durable record and event, the agent's counts cleared.
    pub async fn release_agent(
        &self,
        reach: &Reach<'_>,
        agent: &SpiffeId,
        by: &SpiffeId,
        now: u64,
    ) -> Result<u64, Refusal> {
        let index = reach
            .committer
            .commit(WriteOp::Release {
                agent: agent.clone(),
                event: events::agent_released(now, by, agent),
            })
            .await?;
        self.release(&agent.to_string());
        if let Err(e) = reach.store.clear_signals(&agent.to_string()) {
            // Released all the same; old signals age out of the window.
            tracing::warn!(error = %e, "cannot clear the agent's monitor signals");
        }
        Ok(index)
    }

    /// Counts a signal against an agent (raised by `claimant`, a party, when one did:
    /// undecryptable receipts count once per user); quarantines it past the threshold.
    pub async fn signal(
        &self,
        reach: &Reach<'_>,
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
        if self.is_quarantined(&agent_s) {
            return;
        }
        // On a store several nodes share, the signals of every node count together.
        let since = now.saturating_sub(self.config.window_secs);
        let shared = reach.store.record_signal(
            &agent_s,
            signal.key(),
            claimant.as_deref(),
            now,
            since,
            signal.per_claimant(),
        );
        let verdict = match shared {
            Ok(Some(count)) => self.judge(signal, count),
            Ok(None) => self.record_from(&agent_s, signal, claimant.as_deref(), now),
            Err(e) => {
                // The database is out of reach: this node counts alone meanwhile.
                tracing::warn!(error = %e, "cannot record a monitor signal in the store");
                self.record_from(&agent_s, signal, claimant.as_deref(), now)
            }
        };
        if let Some(reason) = verdict {
            let reason = format!("automatic: {reason}");
            if let Err(e) = self
                .quarantine(reach, agent, &reason, &reach.monitor_actor, now)
                .await
            {
                tracing::error!(agent = %agent, error = %e.message, "could not quarantine");
            }
        }
    }
}

/// Token buckets per identity.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `who`, or says how long until one is available.
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let (tokens, last) = buckets.entry(who.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_window_and_release() {
        let m = Monitor::new(
            MonitorConfig {
                window_secs: 100,
                max_undecryptable: 3,
                ..MonitorConfig::default()
            },
            vec![],
        );
        let claim = |who: &str, t: u64| m.record_from("a", Signal::Undecryptable, Some(who), t);
        assert!(claim("u1", 10).is_none());
        assert!(claim("u2", 20).is_none());
        // The first falls out of the window: still two.
        assert!(claim("u3", 115).is_none());
        // One user's repeated claims count once.
        assert!(claim("u3", 115).is_none());
        assert!(claim("u2", 115).is_none());
        let reason = claim("u4", 116).unwrap();
        assert!(reason.contains("3 undecryptable receipts"), "{reason}");
        m.set_quarantined("a", &reason);
        assert!(m.is_quarantined("a") && !m.is_quarantined("b"));
        m.release("a");
        assert!(!m.is_quarantined("a"));
        assert!(claim("u5", 117).is_none(), "release clears the counters");
    }

    #[test]
    fn token_bucket() {
        let r = RateLimiter::new(1, 3);
        assert!(r.take("x").is_ok() && r.take("x").is_ok() && r.take("x").is_ok());
        let wait = r.take("x").unwrap_err();
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        assert!(r.take("y").is_ok(), "buckets are per identity");
    }
}
