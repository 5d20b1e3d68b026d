//! Time. [`now`] is the one place that reads the wall clock (with [`now_millis`], which only
//! orders new envelope ids); the relay reads them through a
//! [`Clock`] given at start ([`SystemClock`] in production, [`ManualClock`] in tests), once per
//! request, and passes `now` (Unix seconds) down to everything else, so tests can move time
//! instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch. A clock set before 1970 reads as 0 (and then every
/// certificate and grant looks not-yet-valid, which fails closed).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 before 1970). Only for ordering: a new envelope's id
/// starts with them (`EnvelopeId::ordered`); nothing is decided on them.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A source of Unix seconds.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> u64;
    /// Unix milliseconds, only to order new envelope ids (a clock set by hand: its seconds).
    fn now_millis(&self) -> u64 {
        self.now().saturating_mul(1000)
    }
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        now()
    }
    fn now_millis(&self) -> u64 {
        now_millis()
    }
}

/// A clock that tests set and move by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Starts at `secs`.
    pub fn new(secs: u64) -> Self {
        ManualClock(AtomicU64::new(secs))
    }
    /// Starts at the wall clock's present.
    pub fn at_present() -> Self {
        ManualClock::new(now())
    }
    pub fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::SeqCst);
    }
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats Unix seconds as RFC 3339 UTC for messages (`2026-11-21T10:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let Ok(secs) = i64::try_from(secs) else {
        return format!("@{secs}");
    };
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| format!("@{secs}")),
        Err(_) => format!("@{secs}"),
    }
}

/// A duration in whole days, hours, minutes or seconds, as `keys init --reset-wait` takes it
/// (`24h`, `90m`, `2d`, `45s`).
pub fn human_duration(secs: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::{Clock, ManualClock};

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(100);
        assert_eq!(c.now(), 100);
        c.advance(5);
        assert_eq!(c.now(), 105);
        c.set(7);
        assert_eq!(c.now(), 7);
    }
}
