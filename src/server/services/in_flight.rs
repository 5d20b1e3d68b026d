//! Requests in flight, so shutdown can let them finish (threat 45: a shutdown lets what is in
//! flight finish, and starts nothing new).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts requests in flight so shutdown can wait for them, and refuses new ones once shutdown
/// has begun (threat 45: a shutdown lets what is in flight finish, and starts nothing new).
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
    closing: AtomicBool,
}

/// Held while a request is served. It owns its counter, so it is taken before the request's
/// task is spawned: a request is counted from the moment its stream is accepted.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    /// Counts a new request in, unless shutdown has begun (`None`: refuse it). The count is
    /// raised before the flag is read, and shutdown sets the flag before it reads the count, so
    /// every request is either refused or waited for.
    pub fn enter(this: &Arc<InFlight>) -> Option<InFlightGuard> {
        this.count.fetch_add(1, Ordering::SeqCst);
        let guard = InFlightGuard(this.clone());
        if this.closing.load(Ordering::SeqCst) {
            drop(guard);
            return None;
        }
        Some(guard)
    }

    /// Shutdown has begun: every request from now on is refused.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Requests in flight now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.leave();
    }
}
