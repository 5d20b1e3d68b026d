//! The relay's metrics (Prometheus text format, docs/operations.md lists each with what to
//! alert on) and the store wrapper that counts its errors. Labels are small fixed sets
//! (actions, outcomes, decisions): never a user's or an agent's id.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::core::store::{
    DeliveryRecord, EnvelopeRecord, Event, GrantRecord, OpResult, Store, StoredSigned, Usage,
    WriteOp,
};
use crate::core::wire::ErrorCode;
use crate::error::{Error, Result};
use crate::ids::{EnvelopeId, GrantId, SpiffeId};

/// Request-duration buckets, in seconds: a fetch of a few KiB takes a millisecond, a bulk
/// envelope many seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    policy_decisions: IntCounterVec,
    quarantines: IntCounter,
    pub(crate) quarantined_agents: IntGauge,
    pub(crate) log_entries: IntGauge,
    pub(crate) checkpoint_size: IntGauge,
    pub(crate) witnessed_size: IntGauge,
    pub(crate) witness_quorum: IntGauge,
    pub(crate) ready: IntGauge,
    store_errors: IntCounterVec,
    storage_full: IntCounter,
    envelope_bytes: IntCounterVec,
    uploads_broken: IntCounterVec,
    pub(crate) connections: IntGauge,
    pub(crate) subscriptions: IntGauge,
    commit_batch: Histogram,
}

fn metric_err(e: prometheus::Error) -> Error {
    Error::internal(format!("cannot register a metric: {e}"))
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(metric_err)?;
    registry.register(Box::new(c.clone())).map_err(metric_err)?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge> {
    let g = IntGauge::new(name, help).map_err(metric_err)?;
    registry.register(Box::new(g.clone())).map_err(metric_err)?;
    Ok(g)
}

impl Metrics {
    /// Every metric, registered (an error only if two share a name: a bug caught by tests).
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "sealrelay_requests_total",
            "Requests answered, by action and outcome (ok, or the refusal's code).",
            &["action", "outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sealrelay_request_duration_seconds",
                "Time from a request's frame to its last byte answered, by action.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["action"],
        )
        .map_err(metric_err)?;
        registry
            .register(Box::new(request_duration.clone()))
            .map_err(metric_err)?;
        let policy_decisions = counter_vec(
            &registry,
            "sealrelay_policy_decisions_total",
            "Policy decisions, by decision (allow, deny) and principal kind.",
            &["decision", "principal"],
        )?;
        let quarantines = IntCounter::new(
            "sealrelay_quarantines_total",
            "Agents quarantined (automatically or by an admin) since the relay started.",
        )
        .map_err(metric_err)?;
        registry
            .register(Box::new(quarantines.clone()))
            .map_err(metric_err)?;
        let quarantined_agents = gauge(
            &registry,
            "sealrelay_quarantined_agents",
            "Agents quarantined now.",
        )?;
        let log_entries = gauge(
            &registry,
            "sealrelay_log_entries",
            "Entries (leaves) in the transparency log.",
        )?;
        let checkpoint_size = gauge(
            &registry,
            "sealrelay_checkpoint_tree_size",
            "Tree size of the latest checkpoint the relay signed.",
        )?;
        let witnessed_size = gauge(
            &registry,
            "sealrelay_witnessed_tree_size",
            "Tree size of the latest checkpoint cosigned by a quorum of witnesses (0: none).",
        )?;
        let witness_quorum = gauge(
            &registry,
            "sealrelay_witness_quorum",
            "Witness cosignatures a checkpoint needs (0: no witnesses configured).",
        )?;
        let ready = gauge(
            &registry,
            "sealrelay_ready",
            "1 while the relay is ready (what /readyz answers), else 0.",
        )?;
        let store_errors = counter_vec(
            &registry,
            "sealrelay_store_errors_total",
            "Store operations that failed (I/O, the database unavailable), by kind (read, write).",
            &["kind"],
        )?;
        let storage_full = IntCounter::new(
            "sealrelay_storage_full_total",
            "Writes refused because the data directory's file system is (nearly) full (min_free_bytes).",
        )
        .map_err(metric_err)?;
        registry
            .register(Box::new(storage_full.clone()))
            .map_err(metric_err)?;
        let envelope_bytes = counter_vec(
            &registry,
            "sealrelay_envelope_bytes_total",
            "Ciphertext bytes of envelopes, by direction (received, sent).",
            &["direction"],
        )?;
        let uploads_broken = counter_vec(
            &registry,
            "sealrelay_broken_uploads_total",
            "Uploads that broke off before their declared length, by what became of them (parked for their sender to resume, resumed, or expired unresumed).",
            &["outcome"],
        )?;
        let connections = gauge(
            &registry,
            "sealrelay_connections",
            "Authenticated QUIC connections open now.",
        )?;
        let subscriptions = gauge(
            &registry,
            "sealrelay_subscriptions",
            "Subscriptions (grant feeds and inboxes) open now.",
        )?;
        let commit_batch = Histogram::with_opts(
            HistogramOpts::new(
                "sealrelay_commit_batch_operations",
                "Write operations per durable transaction (group commit).",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
            ]),
        )
        .map_err(metric_err)?;
        registry
            .register(Box::new(commit_batch.clone()))
            .map_err(metric_err)?;
        // Series that alerts watch exist from the start, at zero.
        for kind in ["read", "write"] {
            store_errors.with_label_values(&[kind]);
        }
        for direction in ["received", "sent"] {
            envelope_bytes.with_label_values(&[direction]);
        }
        for outcome in ["parked", "resumed", "expired"] {
            uploads_broken.with_label_values(&[outcome]);
        }
        let build = IntGauge::with_opts(
            Opts::new("sealrelay_build_info", "The relay's version (always 1).")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .map_err(metric_err)?;
        build.set(1);
        registry.register(Box::new(build)).map_err(metric_err)?;
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            policy_decisions,
            quarantines,
            quarantined_agents,
            log_entries,
            checkpoint_size,
            witnessed_size,
            witness_quorum,
            ready,
            store_errors,
            storage_full,
            envelope_bytes,
            uploads_broken,
            connections,
            subscriptions,
            commit_batch,
        })
    }

    /// One request answered: `outcome` is `None` for success.
    pub fn request(&self, action: &str, outcome: Option<ErrorCode>, seconds: f64) {
        self.request_ended(action, outcome.map_or("ok", code_label), seconds);
    }

    /// One request ended: `outcome` is `ok`, a refusal's code label, or `aborted` (the client
    /// went away before its answer was written: not the relay's failure).
    pub fn request_ended(&self, action: &str, outcome: &str, seconds: f64) {
        self.requests.with_label_values(&[action, outcome]).inc();
        self.request_duration
            .with_label_values(&[action])
            .observe(seconds);
    }

    pub fn policy_decision(&self, allow: bool, principal: &str) {
        self.policy_decisions
            .with_label_values(&[if allow { "allow" } else { "deny" }, principal])
            .inc();
    }

    pub fn quarantined(&self) {
        self.quarantines.inc();
    }

    pub fn envelope_bytes(&self, received: bool, bytes: u64) {
        self.envelope_bytes
            .with_label_values(&[if received { "received" } else { "sent" }])
            .inc_by(bytes);
    }

    /// A broken upload `"parked"`, `"resumed"` or `"expired"` unresumed.
    pub fn broken_upload(&self, outcome: &'static str, n: usize) {
        self.uploads_broken
            .with_label_values(&[outcome])
            .inc_by(n as u64);
    }

    pub fn commit_batch(&self, operations: usize) {
        self.commit_batch.observe(operations as f64);
    }

    fn store_error(&self, kind: &str) {
        self.store_errors.with_label_values(&[kind]).inc();
    }

    /// Everything, in the text format (`/metrics`); the gauges are the caller's to set first.
    pub fn render(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| Error::internal(format!("cannot encode the metrics: {e}")))?;
        String::from_utf8(out).map_err(|_| Error::internal("the metrics are not UTF-8"))
    }
}

/// A refusal code as a label value.
pub fn code_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::NotFound => "not_found",
        ErrorCode::Conflict => "conflict",
        ErrorCode::TooLarge => "too_large",
        ErrorCode::InvalidEnvelope => "invalid_envelope",
        ErrorCode::Expired => "expired",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
        ErrorCode::QuotaExceeded => "quota_exceeded",
        ErrorCode::Integrity => "integrity",
    }
}

/// Any store, with its failures counted (`sealrelay_store_errors_total`).
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }

    fn read<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.metrics.store_error("read");
        }
        r
    }
}

impl Store for MeteredStore {
    fn apply(&self, ops: &[WriteOp]) -> Result<Vec<OpResult>> {
        let r = self.inner.apply(ops);
        match &r {
            Ok(_) => self.metrics.commit_batch(ops.len()),
            // A full disk (or the free-space reserve) has its own series and alert.
            Err(e) if e.is_storage_full() => self.metrics.storage_full.inc(),
            Err(_) => self.metrics.store_error("write"),
        }
        r
    }
    fn directory(&self) -> Result<(Vec<StoredSigned>, Vec<StoredSigned>)> {
        self.read(self.inner.directory())
    }
    fn directory_log(&self, from: u64, n: usize) -> Result<Vec<Vec<u8>>> {
        self.read(self.inner.directory_log(from, n))
    }
    fn grant(&self, grant_id: &GrantId) -> Result<Option<GrantRecord>> {
        self.read(self.inner.grant(grant_id))
    }
    fn assignment(
        &self,
        grant_id: &GrantId,
    ) -> Result<Option<crate::core::store::AssignmentRecord>> {
        self.read(self.inner.assignment(grant_id))
    }
    fn assignments_for(
        &self,
        source: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<crate::core::store::AssignmentRecord>> {
        self.read(self.inner.assignments_for(source, after, limit))
    }
    fn open_grants_for(
        &self,
        agent: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>> {
        self.read(self.inner.open_grants_for(agent, after, limit))
    }
    fn envelope(&self, envelope_id: &EnvelopeId) -> Result<Option<EnvelopeRecord>> {
        self.read(self.inner.envelope(envelope_id))
    }
    fn grants_by(
        &self,
        user: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>> {
        self.read(self.inner.grants_by(user, after, limit))
    }
    fn delivery(&self, envelope_id: &EnvelopeId) -> Result<Option<DeliveryRecord>> {
        self.read(self.inner.delivery(envelope_id))
    }
    fn inbox(
        &self,
        user: &SpiffeId,
        after: Option<&EnvelopeId>,
        limit: usize,
    ) -> Result<Vec<EnvelopeRecord>> {
        self.read(self.inner.inbox(user, after, limit))
    }
    fn inline_body(&self, envelope_id: &EnvelopeId) -> Result<Option<Vec<u8>>> {
        self.read(self.inner.inline_body(envelope_id))
    }
    fn envelope_ids(&self) -> Result<Vec<EnvelopeId>> {
        self.read(self.inner.envelope_ids())
    }
    fn events(&self, from: u64, limit: usize) -> Result<Vec<(u64, Event)>> {
        self.read(self.inner.events(from, limit))
    }
    fn event_count(&self) -> Result<u64> {
        self.read(self.inner.event_count())
    }
    fn usage(&self, party: &SpiffeId) -> Result<Usage> {
        self.read(self.inner.usage(party))
    }
    fn ensure_room(&self, incoming: u64) -> Result<()> {
        // "Storage full" is a refusal the store keeps to, not a failure of the store.
        let r = self.inner.ensure_room(incoming);
        if r.is_err() {
            self.metrics.storage_full.inc();
        }
        r
    }
    fn health(&self) -> Result<()> {
        // Probes are not store operations: a store that is down is counted by what fails.
        self.inner.health()
    }
    fn quarantined(&self) -> Result<Vec<(String, String)>> {
        self.read(self.inner.quarantined())
    }
    fn record_signal(
        &self,
        agent: &str,
        signal: &'static str,
        claimant: Option<&str>,
        at: u64,
        since: u64,
        per_claimant: bool,
    ) -> Result<Option<u64>> {
        self.read(
            self.inner
                .record_signal(agent, signal, claimant, at, since, per_claimant),
        )
    }
    fn clear_signals(&self, agent: &str) -> Result<()> {
        self.read(self.inner.clear_signals(agent))
    }
    fn prune_signals(&self, before: u64) -> Result<()> {
        self.read(self.inner.prune_signals(before))
    }
    fn pending_approvals(&self, after: Option<&GrantId>, limit: usize) -> Result<Vec<GrantRecord>> {
        self.read(self.inner.pending_approvals(after, limit))
    }
    fn expired_grants(&self, now: u64, limit: usize) -> Result<Vec<GrantId>> {
        self.read(self.inner.expired_grants(now, limit))
    }
    fn log_size(&self) -> u64 {
        self.inner.log_size()
    }
    fn log_root(&self, size: u64) -> Result<crate::core::tlog::Hash> {
        self.read(self.inner.log_root(size))
    }
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<crate::core::tlog::Hash>> {
        self.read(self.inner.inclusion_proof(index, size))
    }
    fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<crate::core::tlog::Hash>> {
        self.read(self.inner.consistency_proof(old_size, new_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_its_labels_and_no_ids() {
        let m = Metrics::new().unwrap();
        m.request("submit", None, 0.002);
        m.request("fetch", Some(ErrorCode::Forbidden), 0.001);
        m.policy_decision(true, "agent");
        m.policy_decision(false, "user");
        m.quarantined();
        m.envelope_bytes(true, 1024);
        m.commit_batch(3);
        m.store_error("read");
        m.log_entries.set(7);
        let text = m.render().unwrap();
        for needle in [
            "sealrelay_requests_total{action=\"submit\",outcome=\"ok\"} 1",
            "sealrelay_requests_total{action=\"fetch\",outcome=\"forbidden\"} 1",
            "sealrelay_request_duration_seconds_bucket{action=\"submit\",le=\"0.0025\"} 1",
            "sealrelay_policy_decisions_total{decision=\"deny\",principal=\"user\"} 1",
            "sealrelay_quarantines_total 1",
            "sealrelay_store_errors_total{kind=\"read\"} 1",
            "sealrelay_envelope_bytes_total{direction=\"received\"} 1024",
            "sealrelay_log_entries 7",
            "sealrelay_commit_batch_operations_count 1",
            "# TYPE sealrelay_quarantined_agents gauge",
            "sealrelay_build_info{version=",
        ] {
            assert!(text.contains(needle), "{needle} not in:\n{text}");
        }
        assert!(!text.contains("spiffe://"));
    }
}
