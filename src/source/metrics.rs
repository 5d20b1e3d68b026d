//! What `source serve --metrics ADDR` reports (Prometheus text at `/metrics`): this source's
//! queue, the age of its oldest assignment, and what it filled, refused and failed. Each source
//! process reports its own; no party or resource appears in a label.

use std::sync::atomic::{AtomicU64, Ordering};

/// The source's counters and gauges.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    queue_depth: AtomicU64,
    oldest_age: AtomicU64,
    filled: AtomicU64,
    refused: AtomicU64,
    failures: AtomicU64,
}

impl SourceMetrics {
    pub fn new() -> SourceMetrics {
        SourceMetrics::default()
    }

    /// What the last listing held, and how old its oldest assignment was (seconds).
    pub fn queued(&self, depth: usize, oldest_age: Option<u64>) {
        self.queue_depth
            .store(u64::try_from(depth).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.oldest_age
            .store(oldest_age.unwrap_or(0), Ordering::Relaxed);
    }
    pub fn filled(&self) {
        self.filled.fetch_add(1, Ordering::Relaxed);
    }
    pub fn refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
    pub fn failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, v) in [
            (
                "sealrelay_source_queue_depth",
                "gauge",
                "Assignments waiting for this source at its last look.",
                &self.queue_depth,
            ),
            (
                "sealrelay_source_oldest_assignment_age_seconds",
                "gauge",
                "Age of the oldest assignment waiting at the last look.",
                &self.oldest_age,
            ),
            (
                "sealrelay_source_filled_total",
                "counter",
                "Assignments sealed at the data and submitted.",
                &self.filled,
            ),
            (
                "sealrelay_source_refused_total",
                "counter",
                "Assignments refused (the data owner's policy, no connector, unreadable).",
                &self.refused,
            ),
            (
                "sealrelay_source_failures_total",
                "counter",
                "Assignments that did not verify, and reads that failed.",
                &self.failures,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}
