//! Denials are events, but a flood of them must not grow the log without bound: per caller, the
//! first `max_denial_events_per_minute` denials in a minute are logged one by one, the rest are
//! counted and logged as one `deny.summary` event when the minute is over (at the caller's next
//! denial or the next sweep).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ids::SpiffeId;

/// The minute a caller's denials are counted in.
const WINDOW_SECS: u64 = 60;

#[derive(Default)]
struct Window {
    start: u64,
    logged: u64,
    suppressed: u64,
}

#[derive(Default)]
pub struct Denials {
    callers: Mutex<HashMap<SpiffeId, Window>>,
}

/// What to log for one denial.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    /// Log this denial as its own event.
    pub log: bool,
    /// Log a summary of this many denials suppressed in the caller's previous minute.
    pub summary: Option<u64>,
}

impl Denials {
    pub fn record(&self, caller: &SpiffeId, now: u64, per_minute: u64) -> Decision {
        let Ok(mut callers) = self.callers.lock() else {
            return Decision {
                log: true,
                summary: None,
            };
        };
        let w = callers.entry(caller.clone()).or_default();
        let mut summary = None;
        if now >= w.start.saturating_add(WINDOW_SECS) {
            if w.suppressed > 0 {
                summary = Some(w.suppressed);
            }
            *w = Window {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        let log = w.logged < per_minute;
        if log {
            w.logged += 1;
        } else {
            w.suppressed += 1;
        }
        Decision { log, summary }
    }

    /// Callers whose minute is over with denials still unlogged: (caller, count); forgets them.
    pub fn due(&self, now: u64) -> Vec<(SpiffeId, u64)> {
        let Ok(mut callers) = self.callers.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        callers.retain(|caller, w| {
            if now < w.start.saturating_add(WINDOW_SECS) {
                return true;
            }
            if w.suppressed > 0 {
                out.push((caller.clone(), w.suppressed));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ids::PartyKind;

    #[test]
    fn a_flood_is_logged_up_to_the_cap_then_summarized() {
        let d = Denials::default();
        let c = SpiffeId::new("t", PartyKind::Agent, "bot").unwrap();
        let logged = (0..50).filter(|_| d.record(&c, 100, 10).log).count();
        assert_eq!(logged, 10);
        assert!(d.due(159).is_empty());
        let next = d.record(&c, 160, 10);
        assert_eq!(
            next,
            Decision {
                log: true,
                summary: Some(40)
            }
        );
        d.record(&c, 161, 1);
        d.record(&c, 162, 1);
        assert_eq!(d.due(230), vec![(c, 2)]);
    }
}
