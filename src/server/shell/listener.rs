//! The accept loop and the tasks it owns. Every task hangs off a [`tokio::task::JoinSet`] owned
//! by its parent (connections by the accept loop, streams by their connection), and the accept
//! loop and the sweep by [`Supervisor`], so dropping the supervisor aborts everything; shutdown
//! stops accepting connections and requests (a request on an open connection is refused as
//! Unavailable), lets the requests in flight finish, then closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::core::wire::CloseCode;
use crate::net;

use crate::server::services::expiry;
use crate::server::services::in_flight::InFlight;
use crate::server::services::relay::Relay;

use super::effects::Effects;
use super::stream;

/// Owns the relay's tasks: aborts them all when dropped.
pub struct Supervisor {
    accept: JoinHandle<()>,
    sweep: JoinHandle<()>,
    witness: JoinHandle<()>,
    /// The directory log's witnessing.
    dir_witness: JoinHandle<()>,
    /// The admin listener (`None` when off).
    admin: Option<JoinHandle<()>>,
    /// Reloads what other nodes change in a shared store (`None` on the embedded store).
    sync: Option<JoinHandle<()>>,
    /// Takes in what the admin writes to `DIR/directory`.
    dirwatch: JoinHandle<()>,
    stop: Arc<Notify>,
}

impl Supervisor {
    pub fn start(
        relay: Arc<Relay>,
        endpoint: quinn::Endpoint,
        admin: Option<tokio::net::TcpListener>,
    ) -> Self {
        let stop = Arc::new(Notify::new());
        let admin = admin.map(|l| tokio::spawn(super::admin_http::serve(relay.clone(), l)));
        let sync = relay
            .config
            .store
            .is_some()
            .then(|| tokio::spawn(super::loops::cluster_sync(relay.clone())));
        let effects = Effects::new(&relay);
        let accept = tokio::spawn(accept_loop(
            relay.clone(),
            effects.clone(),
            endpoint,
            stop.clone(),
        ));
        let witness = tokio::spawn(super::witnessing::run(relay.clone()));
        let dir_witness = tokio::spawn(super::witnessing::run_directory(relay.clone()));
        let dirwatch = tokio::spawn(super::dirwatch::run(relay.clone()));
        let sweep = tokio::spawn(sweep_loop(relay, effects));
        Supervisor {
            accept,
            sweep,
            witness,
            dir_witness,
            admin,
            sync,
            dirwatch,
            stop,
        }
    }

    /// Stops accepting connections and requests, lets the requests in flight finish (for the
    /// grace period), closes every connection.
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        let _ = (&mut self.accept).await;
        self.sweep.abort();
        self.witness.abort();
        self.dir_witness.abort();
        self.dirwatch.abort();
        for task in [&self.admin, &self.sync].into_iter().flatten() {
            task.abort();
        }
        let _ = (&mut self.sweep).await;
        let _ = (&mut self.witness).await;
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.accept.abort();
        self.sweep.abort();
        self.witness.abort();
        self.dir_witness.abort();
        self.dirwatch.abort();
        for task in [&self.admin, &self.sync].into_iter().flatten() {
            task.abort();
        }
    }
}

async fn sweep_loop(relay: Arc<Relay>, effects: Effects) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(relay.config.sweep_interval_secs.max(1)));
    loop {
        tick.tick().await;
        expiry::sweep_expired(&relay, &effects.cx(&relay)).await;
    }
}

/// Handshakes and connections per remote IP, released when the guard drops.
#[derive(Default)]
struct PerIp(std::sync::Mutex<HashMap<IpAddr, usize>>);

struct IpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<IpGuard> {
        let mut t = self.0.lock().ok()?;
        let n = t.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpGuard {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.0.lock() {
            if let Some(n) = t.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    t.remove(&self.ip);
                }
            }
        }
    }
}

/// What happens to a new connection attempt, decided without waiting for anything.
fn admit(
    incoming: quinn::Incoming,
    handshakes: &Arc<Semaphore>,
    limits: &net::Limits,
    per_ip: &Arc<PerIp>,
) -> Option<(quinn::Incoming, OwnedSemaphorePermit, IpGuard)> {
    let in_progress = limits
        .max_handshakes
        .saturating_sub(handshakes.available_permits());
    // Under load, a client must first show it receives at its address (stateless Retry).
    if in_progress >= limits.retry_above_handshakes
        && !incoming.remote_address_validated()
        && incoming.may_retry()
    {
        if let Err(e) = incoming.retry() {
            e.into_incoming().ignore();
        }
        return None;
    }
    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
        incoming.refuse();
        return None;
    };
    let Some(ip_guard) = per_ip.enter(
        incoming.remote_address().ip(),
        limits.max_connections_per_ip,
    ) else {
        incoming.refuse();
        return None;
    };
    Some((incoming, permit, ip_guard))
}

async fn accept_loop(
    relay: Arc<Relay>,
    effects: Effects,
    endpoint: quinn::Endpoint,
    stop: Arc<Notify>,
) {
    let limits = relay.config.limits.clone();
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
    let handshake_timeout = Duration::from_secs(limits.handshake_timeout_secs.max(1));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some((incoming, handshake, ip_guard)) =
                    admit(incoming, &handshakes, &limits, &per_ip)
                else {
                    continue;
                };
                let (r, fx, slots) = (relay.clone(), effects.clone(), slots.clone());
                connections.spawn(async move {
                    let _ip = ip_guard;
                    let conn = match tokio::time::timeout(handshake_timeout, incoming).await {
                        Ok(Ok(conn)) => conn,
                        Ok(Err(e)) => {
                            tracing::info!(error = %e, "handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!("handshake timed out");
                            return;
                        }
                    };
                    drop(handshake);
                    // The connection slot is taken after the handshake, never awaited.
                    let Ok(_slot) = slots.try_acquire_owned() else {
                        let code = CloseCode::Busy;
                        conn.close(code.code().into(), code.reason());
                        return;
                    };
                    serve_connection(r, fx, conn).await;
                });
            }
        }
    }
    // No new requests from here on, on open connections too (each is refused as Unavailable,
    // which clients retry elsewhere or later), and no new connections; the requests in flight
    // get a bounded grace period to finish, then everything closes.
    relay.in_flight.close();
    endpoint.set_server_config(None);
    let grace = Duration::from_secs(relay.config.shutdown_grace_secs);
    tracing::info!(
        in_flight = relay.in_flight.count(),
        grace_secs = grace.as_secs(),
        "shutting down: new requests are refused, those in flight may finish"
    );
    if tokio::time::timeout(grace, relay.in_flight.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace period: closing");
    }
    endpoint.close(
        CloseCode::ShuttingDown.code().into(),
        CloseCode::ShuttingDown.reason(),
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    connections.shutdown().await;
}

async fn serve_connection(relay: Arc<Relay>, effects: Effects, conn: quinn::Connection) {
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
    let Some(_registration) = relay.connections.register(
        &peer.id,
        &conn,
        relay.config.limits.max_connections_per_identity,
    ) else {
        let code = CloseCode::Busy;
        conn.close(code.code().into(), code.reason());
        tracing::info!(peer = %peer.id, "refused a connection: too many for this identity");
        return;
    };
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => {
                let Ok((send, recv)) = accepted else { break };
                // Counted in flight here, before its task runs, so a shutdown beginning now
                // either waits for this request or refuses it.
                match InFlight::enter(&relay.in_flight) {
                    Some(guard) => {
                        streams.spawn(stream::serve(
                            relay.clone(),
                            effects.clone(),
                            peer.clone(),
                            guard,
                            send,
                            recv,
                        ));
                    }
                    None => {
                        streams.spawn(stream::refuse_shutting_down(
                            relay.clone(),
                            peer.clone(),
                            send,
                            recv,
                        ));
                    }
                }
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // The connection is gone: let the streams already started end on their own errors.
    while streams.join_next().await.is_some() {}
}
