//! The relay: a QUIC server that authenticates every caller by its client certificate, checks
//! the directory and the policy on every request, keeps only ciphertext (durably, fsync before
//! ack), and hands an envelope only to the user who asked for it.
//!
//! Three rooms, each importing only the ones below it:
//! - `shell`: sockets, tasks, processes and timers, the only place that spawns or waits on the
//!   network. `startup` builds the [`Relay`], `listener` accepts connections and owns every
//!   task, `stream` reads a request and writes its reply.
//! - `handlers`: the rules, one module per kind of request; each gets what it touches besides
//!   the relay's state explicitly (`services::effects::Cx`: the time, the clock, a blocking
//!   executor, an alert sink). Every request is first put to `handlers::auth` (rate limit,
//!   directory, policy).
//! - `services`: the relay's state and what keeps it (`relay::Relay`, the committer, the
//!   checkpoints, the misbehaviour monitor, uploads, events, metrics, config). Every state
//!   change goes through the committer with the event that records it (the transparency log).

pub(crate) mod handlers;
pub(crate) mod services;
pub(crate) mod shell;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use handlers::submit::INLINE_MAX;
pub use services::committer::Committer;
pub use services::config::{self, RelayConfig};
pub use services::metrics;
pub use services::misbehaviour::MonitorConfig;
pub use services::refusal::Refusal;
pub use services::relay::Relay;
pub use shell::policy_gate::reload as reload_policy;

use crate::clock::{Clock, SystemClock};
use crate::core::store::Store;
use crate::error::{Error, Result};
use crate::net;

/// What a relay runs on besides its configuration: tests give a failing store or a clock they
/// move by hand.
#[derive(Clone)]
pub struct Dependencies {
    /// `None`: the embedded redb store in `data/state.redb`.
    pub store: Option<Arc<dyn Store>>,
    pub clock: Arc<dyn Clock>,
}

impl Default for Dependencies {
    fn default() -> Self {
        Dependencies {
            store: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A started relay. Dropping it aborts every task at once; [`RunningRelay::shutdown`] drains.
pub struct RunningRelay {
    pub local_addr: SocketAddr,
    /// The admin listener (`/metrics`, `/livez`, `/readyz`), unless `metrics_listen = "off"`.
    pub metrics_addr: Option<SocketAddr>,
    relay: Arc<Relay>,
    supervisor: shell::listener::Supervisor,
}

impl RunningRelay {
    /// Stops accepting connections and requests at once (a new request on an open connection
    /// is answered Unavailable: "the relay is shutting down; …"), lets the requests in flight
    /// finish (for the grace period), closes, and commits what is queued; the store is released
    /// when this returns.
    pub async fn shutdown(self) {
        self.supervisor.shutdown().await;
        self.relay.committer.stop().await;
        // A task still ending (a connection's last stream, a blocking job) holds the relay's
        // state and with it the store's lock: wait for it, a bounded while, so that a relay
        // started next on the same data finds the store free.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while Arc::strong_count(&self.relay) > 1 && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The relay's state (for tests and the demo).
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// Runs the expiry sweep now (tests move the clock, then sweep).
    pub async fn sweep_expired(&self) -> usize {
        let cx = shell::effects::Effects::new(&self.relay).cx(&self.relay);
        services::expiry::sweep_expired(&self.relay, &cx).await
    }
}

/// Loads the relay's keys and state and starts serving on `config.listen`.
pub async fn start(config: RelayConfig) -> Result<RunningRelay> {
    start_with(config, Dependencies::default()).await
}

/// [`start`] with the given dependencies.
pub async fn start_with(config: RelayConfig, deps: Dependencies) -> Result<RunningRelay> {
    let listen = config.listen;
    let limits = config.limits.clone();
    let metrics_at = config.metrics_addr()?;
    let (relay, tls) = shell::startup::load(config, deps.store, deps.clock)?;
    // Bound after the state loads (its errors come first) and before serving.
    let admin = match metrics_at {
        Some(addr) => Some(shell::admin_http::bind(addr).await?),
        None => None,
    };
    let metrics_addr = match &admin {
        Some(l) => Some(
            l.local_addr()
                .map_err(|e| Error::io(format!("cannot read the metrics address: {e}")))?,
        ),
        None => None,
    };
    let server_config =
        net::server_config(&tls.cert, &tls.key, &tls.ca, &limits, relay.clock().clone())?;
    let endpoint = quinn::Endpoint::server(server_config, listen)
        .map_err(|e| Error::io(format!("cannot listen on {listen}: {e}")))?;
    let local_addr = endpoint
        .local_addr()
        .map_err(|e| Error::io(format!("cannot read the listening address: {e}")))?;
    let relay = Arc::new(relay);
    let supervisor = shell::listener::Supervisor::start(relay.clone(), endpoint, admin);
    tracing::info!(%local_addr, "relay listening");
    if let Some(addr) = metrics_addr {
        tracing::info!(%addr, "metrics, livez and readyz on http://{addr}");
    }
    Ok(RunningRelay {
        local_addr,
        metrics_addr,
        relay,
        supervisor,
    })
}

/// Starts a relay for `dir`/`data` in this process on 127.0.0.1 with a random port.
pub async fn start_local(dir: &Path, data: &Path) -> Result<RunningRelay> {
    let config = RelayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: data.to_path_buf(),
        dir: dir.to_path_buf(),
        // The demo and tests run beside other relays: no fixed admin port.
        metrics_listen: "off".into(),
        ..RelayConfig::default()
    };
    start(config).await
}
