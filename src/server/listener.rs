//! The accept loop and the tasks it owns. Every task hangs off a [`tokio::task::JoinSet`] owned
//! by its parent (connections by the accept loop, streams by their connection), and the accept
//! loop and the sweep by [`Supervisor`], so dropping the supervisor aborts everything; shutdown
//! stops accepting, lets the requests in flight finish, then closes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::core::wire::CloseCode;
use crate::net;

use super::state::Relay;
use super::{stream, sweep};

/// Counts requests in flight so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held while a request is served.
pub struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self)
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
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Owns the relay's tasks: aborts them all when dropped.
pub struct Supervisor {
    accept: JoinHandle<()>,
    sweep: JoinHandle<()>,
    stop: Arc<Notify>,
}

impl Supervisor {
    pub fn start(relay: Arc<Relay>, endpoint: quinn::Endpoint) -> Self {
        let stop = Arc::new(Notify::new());
        let accept = tokio::spawn(accept_loop(relay.clone(), endpoint, stop.clone()));
        let sweep = tokio::spawn(sweep_loop(relay));
        Supervisor {
            accept,
            sweep,
            stop,
        }
    }

    /// Stops accepting, lets the requests in flight finish, closes every connection.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        let _ = (&mut self.accept).await;
        self.sweep.abort();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.accept.abort();
        self.sweep.abort();
    }
}

async fn sweep_loop(relay: Arc<Relay>) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(relay.config.sweep_interval_secs.max(1)));
    loop {
        tick.tick().await;
        sweep::sweep_expired(&relay).await;
    }
}

async fn accept_loop(relay: Arc<Relay>, endpoint: quinn::Endpoint, stop: Arc<Notify>) {
    let slots = Arc::new(Semaphore::new(relay.config.limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let r = relay.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    match incoming.await {
                        Ok(conn) => serve_connection(r, conn).await,
                        Err(e) => tracing::info!(error = %e, "handshake failed"),
                    }
                });
            }
        }
    }
    // No new connections from here on; the requests in flight finish, then everything closes.
    endpoint.set_server_config(None);
    relay.in_flight.wait_idle().await;
    endpoint.close(
        CloseCode::ShuttingDown.code().into(),
        CloseCode::ShuttingDown.reason(),
    );
    endpoint.wait_idle().await;
    connections.shutdown().await;
}

async fn serve_connection(relay: Arc<Relay>, conn: quinn::Connection) {
    let peer = match net::peer(&conn) {
        Ok(p) => p,
        Err(e) => {
            conn.close(
                CloseCode::NoIdentity.code().into(),
                CloseCode::NoIdentity.reason(),
            );
            tracing::info!(error = %e, "refused a connection");
            return;
        }
    };
    tracing::debug!(peer = %peer.id, remote = %conn.remote_address(), "connection");
    let _registration = relay.connections.register(&peer.id, &conn);
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => {
                let Ok((send, recv)) = accepted else { break };
                streams.spawn(stream::serve(relay.clone(), peer.clone(), send, recv));
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // The connection is gone: let the streams already started end on their own errors.
    while streams.join_next().await.is_some() {}
}
