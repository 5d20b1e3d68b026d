//! What a request may touch beyond the relay's state, handed to every handler explicitly in
//! [`Cx`]: the time the request started, the clock (read again only where a rule says so: a
//! submission's expiry is judged when its body has arrived), a way to run blocking work (store
//! blobs, signing a checkpoint) off the async threads, and where alerts go. The shell
//! (`server::shell::effects`) implements them with tokio and processes; handlers and services
//! never start a task, a thread or a process themselves (`tests/architecture.rs` checks it).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::{EnvelopeId, SpiffeId};
use crate::store::blobs::{BlobStore, BlobWriter};

/// A job for the blocking executor.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs blocking jobs off the async threads.
pub trait Blocking: Send + Sync {
    /// Starts `job`; it runs to its end even if nobody waits for it.
    fn run(&self, job: Job);
}

/// Where the relay's alerts go besides the log (`sealrelay::alert`).
pub trait AlertSink: Send + Sync {
    /// An agent was quarantined, for `reason`.
    fn quarantined(&self, agent: &SpiffeId, reason: &str);
}

/// Everything a request touches besides the relay's state.
#[derive(Clone)]
pub struct Cx {
    /// When the request started (Unix seconds): read once, by the shell.
    pub now: u64,
    /// Read again only by [`Cx::commit_time`].
    clock: Arc<dyn Clock>,
    blocking: Arc<dyn Blocking>,
    pub alerts: Arc<dyn AlertSink>,
}

impl Cx {
    pub fn new(
        now: u64,
        clock: Arc<dyn Clock>,
        blocking: Arc<dyn Blocking>,
        alerts: Arc<dyn AlertSink>,
    ) -> Self {
        Cx {
            now,
            clock,
            blocking,
            alerts,
        }
    }

    /// The time a submission commits at: its grant's expiry is judged when the body has
    /// arrived, not when the request started (the one second read of the clock).
    pub fn commit_time(&self) -> u64 {
        self.clock.now()
    }

    /// Unix milliseconds, read when asked: only to order a new envelope's id
    /// (`EnvelopeId::ordered`); nothing is decided on them.
    pub fn millis(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Runs `f` on the blocking executor and waits for its answer.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        run_blocking(self.blocking.as_ref(), f).await
    }
}

/// Runs `f` on `executor` and waits for its answer (an error if the job died).
pub async fn run_blocking<T: Send + 'static>(
    executor: &dyn Blocking,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    executor.run(Box::new(move || {
        let _ = tx.send(f());
    }));
    rx.await
        .map_err(|_| Error::internal("a blocking job failed"))?
}

impl Cx {
    /// Starts `f` on the blocking executor; its answer arrives on the receiver.
    pub fn start<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        self.blocking.run(Box::new(move || {
            let _ = tx.send(f());
        }));
        rx
    }

    /// Discards an uncommitted blob (its writer's clean-up is I/O) off the async threads.
    pub async fn discard(&self, w: Option<Box<dyn BlobWriter>>) {
        if let Some(w) = w {
            let _ = self
                .blocking(move || {
                    drop(w);
                    Ok(())
                })
                .await;
        }
    }

    /// [`BlobStore::remove`] off the async threads.
    pub async fn remove_blob(&self, blobs: &Arc<dyn BlobStore>, id: EnvelopeId) {
        let blobs = blobs.clone();
        let _ = self
            .blocking(move || {
                blobs.remove(&id);
                Ok(())
            })
            .await;
    }
}
