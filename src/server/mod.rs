//! The relay: a QUIC server that authenticates every caller by its client certificate, checks
//! the directory and the policy on every request, keeps only ciphertext (durably, fsync before
//! ack), and hands an envelope only to the user who asked for it.
//!
//! Every state change goes through `Relay::commit`, which appends the event that records it
//! in the same durable transaction (the seam the transparency log hangs off), and every request
//! is first put to the [`Authorizer`] (the seam the Cedar policy plugs into).

pub mod checkpoints;
mod committer;
pub mod config;
pub mod monitor;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use quinn::{RecvStream, SendStream};
use tokio::sync::{Notify, Semaphore};

pub use committer::Committer;
pub use config::RelayConfig;

use crate::clock;
use crate::core::directory::{sha256, Directory, DirectoryEntry, EntryProblem};
use crate::core::envelope::submission::Submission;
use crate::core::envelope::validate::EnvelopeValidator;
use crate::core::grant::{random_id, Grant, Receipt};
use crate::core::policy::{Action, Authorizer, CedarPolicy, Context, Decision, Principal, Target};
use crate::core::sign::{PublicKey, StatementType};
use crate::core::store::{
    statement_digest, EnvelopeRecord, Event, GrantRecord, GrantState, Store, StoredSigned, WriteOp,
};
use crate::core::wire::{
    self, EnvelopeView, ErrorCode, GrantView, Reply, Request, RequestFrame, Response, WireSigned,
    PROTOCOL_VERSION,
};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{hex, PartyKind, SpiffeId};
use crate::local::{dirstore, trust_root};
use crate::net::{self, Peer};
use crate::store::blobs::BlobDir;
use crate::store::redb::RedbStore;
use monitor::{Monitor, RateLimiter, Signal};

/// How long a client may take to send its request frame.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes per read when streaming bodies.
const IO_CHUNK: usize = 256 * 1024;
/// Envelopes up to this size are stored inline in the store (committed with their batch, no
/// file and no per-envelope fsync); larger ones stream to blob files.
pub const INLINE_MAX: u64 = 64 * 1024;

/// An error as the relay answers it: a wire code and a one-line message.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
    fn not_found(what: &str) -> Self {
        Refusal::new(ErrorCode::NotFound, format!("no such {what}"))
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::BadInput | ErrorKind::Verification => ErrorCode::BadRequest,
            ErrorKind::Conflict => ErrorCode::Conflict,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::Refused => ErrorCode::Forbidden,
            ErrorKind::Unavailable | ErrorKind::Io => ErrorCode::Unavailable,
            ErrorKind::Internal => ErrorCode::Internal,
        };
        // I/O and internal details stay in the relay's log, not on the wire.
        let message = match code {
            ErrorCode::Unavailable => {
                "the relay could not complete the request durably; nothing was changed, try again"
                    .to_owned()
            }
            ErrorCode::Internal => "internal error".to_owned(),
            _ => e.message().to_owned(),
        };
        if matches!(code, ErrorCode::Unavailable | ErrorCode::Internal) {
            tracing::error!(error = %e, "request failed");
        }
        Refusal { code, message }
    }
}

type Handled = std::result::Result<Reply, Refusal>;

/// Counts requests in flight so shutdown can wait for them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

struct Guard<'a>(&'a InFlight);

impl InFlight {
    fn enter(&self) -> Guard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Guard(self)
    }
    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The relay's shared state.
pub struct Relay {
    config: RelayConfig,
    store: Arc<dyn Store>,
    committer: Committer,
    directory: RwLock<Directory>,
    authority: PublicKey,
    trust_domain: String,
    blobs: BlobDir,
    /// The policy in force; `reload_policy` swaps it (SIGHUP).
    policy: RwLock<Arc<CedarPolicy>>,
    in_flight: InFlight,
    /// The latest signed checkpoint (written by the commit thread).
    checkpoint: checkpoints::Latest,
    signer: Arc<checkpoints::Signer>,
    monitor: Monitor,
    limiter: RateLimiter,
    /// Open connections per SPIFFE ID, so a quarantine can close an agent's at once.
    connections: std::sync::Mutex<std::collections::HashMap<String, Vec<quinn::Connection>>>,
}

/// A started relay.
pub struct RunningRelay {
    pub local_addr: SocketAddr,
    relay: Arc<Relay>,
    endpoint: quinn::Endpoint,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    /// Stops accepting, lets in-flight requests finish, then closes.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
        self.relay.in_flight.wait_idle().await;
        self.endpoint.close(0u32.into(), b"relay shutting down");
        self.endpoint.wait_idle().await;
    }

    /// The relay's state (for tests and the demo).
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }
}

/// Loads the relay's keys and state and starts serving on `config.listen`.
pub async fn start(config: RelayConfig) -> Result<RunningRelay> {
    start_with(config, None).await
}

/// [`start`] with a given store (tests inject failing stores); `None` opens the embedded one.
pub async fn start_with(
    config: RelayConfig,
    store: Option<Arc<dyn Store>>,
) -> Result<RunningRelay> {
    let dir = config.dir.clone();
    let meta = trust_root::read_meta(&dir)?;
    let cert = trust_root::read_cert_pem(&dir.join("relay.crt"))?;
    let key = trust_root::read_key_pem(&dir.join("relay.key"))?;
    let ca = trust_root::read_cert_pem(&dir.join("ca.crt"))?;
    let authority = trust_root::read_verifier_key(&dir.join("authority.pub"))?.key;
    std::fs::create_dir_all(&config.data).map_err(|e| {
        Error::io(format!(
            "cannot create the data directory {}: {e}",
            config.data.display()
        ))
    })?;
    let store: Arc<dyn Store> = match store {
        Some(s) => s,
        None => Arc::new(RedbStore::open(&config.data.join("state.redb"))?),
    };
    // The policy: a relay never starts on one that does not validate.
    let policy_text = match &config.policy_file {
        Some(p) => String::from_utf8(crate::local::fs::read_capped(p, 1 << 20)?)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8", p.display())))?,
        None => crate::core::policy::DEFAULT_POLICY.to_owned(),
    };
    let catalog_text = match &config.catalog_file {
        Some(p) => String::from_utf8(crate::local::fs::read_capped(p, 1 << 20)?)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8", p.display())))?,
        None => crate::core::policy::DEFAULT_CATALOG.to_owned(),
    };
    let policy = CedarPolicy::new(&policy_text, &catalog_text)
        .map_err(|e| e.context("refusing to start on an invalid policy"))?;
    let monitor = Monitor::new(config.monitor.clone(), store.quarantined()?);
    let limiter = RateLimiter::new(config.requests_per_second, config.request_burst);
    // The log key signs checkpoints; a store behind the last one signed is refused.
    let log_key =
        crate::core::sign::SigningKey::from_pkcs8(&trust_root::read_key_pem(&dir.join("log.key"))?)
            .map_err(|e| e.context("log.key"))?;
    let log_vk = trust_root::read_verifier_key(&dir.join("log.pub"))?;
    let signer = Arc::new(checkpoints::Signer::new(log_key, log_vk, &config.data)?);
    signer.check_store(store.as_ref())?;
    let blobs = BlobDir::open(&config.data)?;

    // The directory: what was pushed before (in the store) plus what is in DIR/directory.
    let mut directory = Directory::new();
    let (stored_entries, stored_revocations) = store.directory()?;
    for s in &stored_entries {
        let signed = to_signed(s, StatementType::DirectoryEntry)?;
        directory.insert_entry(signed, &authority)?;
    }
    for s in &stored_revocations {
        directory.insert_revocation(&to_signed(s, StatementType::Revocation)?, &authority)?;
    }
    let disk_dir = dir.join("directory");
    if disk_dir.is_dir() {
        let (disk, _) = dirstore::load(&disk_dir, &authority)?;
        let (entries, revocations) = directory_statements(&disk)?;
        let mut merged = directory.clone();
        for (_, _, s) in &entries {
            merged.insert_entry(to_signed(s, StatementType::DirectoryEntry)?, &authority)?;
        }
        for (_, _, s) in &revocations {
            merged.insert_revocation(&to_signed(s, StatementType::Revocation)?, &authority)?;
        }
        if !entries.is_empty() || !revocations.is_empty() {
            let event = Event {
                time: clock::now(),
                kind: "directory.load".into(),
                actor: format!("spiffe://{}/relay/{}", meta.trust_domain, meta.relay_name),
                subject: format!(
                    "{} entries, {} revocations",
                    entries.len(),
                    revocations.len()
                ),
                decision: "allow".into(),
                detail: String::new(),
                digest: Vec::new(),
            };
            let op = WriteOp::PutDirectory {
                entries,
                revocations,
                event,
            };
            store.apply(std::slice::from_ref(&op))?;
        }
        directory = merged;
    }
    // From here on every batch is checkpointed; the first checkpoint covers what is there now.
    signer.sign_current(store.as_ref())?;
    let checkpoint = signer.latest.clone();
    let committer = Committer::start(store.clone(), Some(signer.clone()))?;
    // Blobs whose envelope never committed (or was deleted) go.
    let live: HashSet<[u8; 16]> = store.envelope_ids()?.into_iter().collect();
    let swept = blobs.sweep(&live)?;
    if swept > 0 {
        tracing::info!(swept, "removed blobs with no envelope record");
    }

    let server_config = net::server_config(&cert, &key, &ca, &config.limits)?;
    let endpoint = quinn::Endpoint::server(server_config, config.listen)
        .map_err(|e| Error::io(format!("cannot listen on {}: {e}", config.listen)))?;
    let local_addr = endpoint
        .local_addr()
        .map_err(|e| Error::io(format!("cannot read the listening address: {e}")))?;
    let relay = Arc::new(Relay {
        config,
        store,
        committer,
        directory: RwLock::new(directory),
        authority,
        trust_domain: meta.trust_domain,
        blobs,
        policy: RwLock::new(Arc::new(policy)),
        in_flight: InFlight::default(),
        checkpoint,
        signer,
        monitor,
        limiter,
        connections: std::sync::Mutex::new(std::collections::HashMap::new()),
    });
    let stop = Arc::new(Notify::new());
    let task = tokio::spawn(accept_loop(relay.clone(), endpoint.clone(), stop.clone()));
    tracing::info!(%local_addr, "relay listening");
    Ok(RunningRelay {
        local_addr,
        relay,
        endpoint,
        stop,
        task,
    })
}

fn to_signed(s: &StoredSigned, ty: StatementType) -> Result<crate::core::sign::Signed> {
    WireSigned {
        statement: s.statement.clone(),
        signature: s.signature.clone(),
    }
    .to_signed(ty)
}

type DirStatements = (
    Vec<(String, u64, StoredSigned)>,
    Vec<(String, u64, StoredSigned)>,
);

/// Every statement of a verified directory, as store rows.
fn directory_statements(d: &Directory) -> Result<DirStatements> {
    let mut entries = Vec::new();
    for e in d.parties() {
        if let Some(s) = d.latest_signed(&e.id) {
            entries.push((
                e.id.to_string(),
                e.serial,
                StoredSigned {
                    statement: s.statement.clone(),
                    signature: s.signature.to_vec(),
                },
            ));
        }
    }
    let revocations = d
        .revocations()
        .map(|(r, s)| {
            (
                r.id.to_string(),
                r.serial,
                StoredSigned {
                    statement: s.statement.clone(),
                    signature: s.signature.to_vec(),
                },
            )
        })
        .collect();
    Ok((entries, revocations))
}

async fn accept_loop(relay: Arc<Relay>, endpoint: quinn::Endpoint, stop: Arc<Notify>) {
    let slots = Arc::new(Semaphore::new(relay.config.limits.max_connections.max(1)));
    let mut sweep =
        tokio::time::interval(Duration::from_secs(relay.config.sweep_interval_secs.max(1)));
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            _ = sweep.tick() => {
                let r = relay.clone();
                tokio::spawn(async move { r.sweep_expired().await });
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let r = relay.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match incoming.await {
                        Ok(conn) => r.serve_connection(conn).await,
                        Err(e) => tracing::info!(error = %e, "handshake failed"),
                    }
                });
            }
        }
    }
    // No new connections from here on.
    endpoint.set_server_config(None);
}

impl Relay {
    async fn serve_connection(self: Arc<Self>, conn: quinn::Connection) {
        let peer = match net::peer(&conn) {
            Ok(p) => p,
            Err(e) => {
                conn.close(1u32.into(), b"no valid SPIFFE identity");
                tracing::info!(error = %e, "refused a connection");
                return;
            }
        };
        tracing::debug!(peer = %peer.id, remote = %conn.remote_address(), "connection");
        let key = peer.id.to_string();
        if let Ok(mut c) = self.connections.lock() {
            c.entry(key.clone()).or_default().push(conn.clone());
        }
        while let Ok((send, recv)) = conn.accept_bi().await {
            let r = self.clone();
            let p = peer.clone();
            tokio::spawn(async move { r.serve_stream(p, send, recv).await });
        }
        if let Ok(mut c) = self.connections.lock() {
            if let Some(list) = c.get_mut(&key) {
                list.retain(|x| x.stable_id() != conn.stable_id());
                if list.is_empty() {
                    c.remove(&key);
                }
            }
        }
    }

    /// Quarantines an agent: durable record and event, refused from the next request, its open
    /// connections closed, its grants held, and an alert raised.
    async fn quarantine(
        &self,
        agent: &SpiffeId,
        reason: &str,
        actor: &str,
    ) -> std::result::Result<u64, Refusal> {
        let event = Event {
            time: clock::now(),
            kind: "agent.quarantined".into(),
            actor: actor.to_owned(),
            subject: agent.to_string(),
            decision: "quarantine".into(),
            detail: reason.to_owned(),
            digest: Vec::new(),
        };
        let index = self
            .commit(WriteOp::Quarantine {
                agent: agent.to_string(),
                reason: reason.to_owned(),
                event,
            })
            .await?;
        self.monitor.set_quarantined(&agent.to_string(), reason);
        let conns = self
            .connections
            .lock()
            .ok()
            .and_then(|mut c| c.remove(&agent.to_string()))
            .unwrap_or_default();
        for c in conns {
            c.close(2u32.into(), b"agent quarantined");
        }
        tracing::error!(target: "sealrelay::alert", agent = %agent, reason, "agent quarantined");
        if let Some(cmd) = self.monitor.config().alert_command.clone() {
            let spawned = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .env("SEALRELAY_ALERT_AGENT", agent.to_string())
                .env("SEALRELAY_ALERT_REASON", reason)
                .stdin(std::process::Stdio::null())
                .spawn();
            if let Err(e) = spawned {
                tracing::error!(target: "sealrelay::alert", error = %e, "the alert command did not start");
            }
        }
        Ok(index)
    }

    /// Counts a signal against an agent; quarantines it past the threshold.
    async fn signal(&self, agent: &SpiffeId, signal: Signal) {
        if agent.kind() != PartyKind::Agent {
            return;
        }
        if let Some(reason) = self
            .monitor
            .record(&agent.to_string(), signal, clock::now())
        {
            let actor = format!("spiffe://{}/relay/monitor", self.trust_domain);
            if let Err(e) = self
                .quarantine(agent, &format!("automatic: {reason}"), &actor)
                .await
            {
                tracing::error!(agent = %agent, error = %e.message, "could not quarantine");
            }
        }
    }

    async fn serve_stream(self: Arc<Self>, peer: Peer, mut send: SendStream, mut recv: RecvStream) {
        let _guard = self.in_flight.enter();
        let started = Instant::now();
        let request = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            read_frame::<RequestFrame>(&mut recv),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = respond(
                    &mut send,
                    Err(Refusal::new(ErrorCode::BadRequest, e.message())),
                )
                .await;
                return;
            }
            Err(_) => {
                let _ = respond(
                    &mut send,
                    Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "request frame timed out",
                    )),
                )
                .await;
                return;
            }
        };
        if request.version != PROTOCOL_VERSION {
            let _ = respond(&mut send, Err(Refusal::new(ErrorCode::BadRequest, format!(
                "protocol version {} is not supported (this relay speaks {PROTOCOL_VERSION})", request.version)))).await;
            return;
        }
        let action = request.request.action();
        let outcome = self
            .handle(&peer, request.request, &mut send, &mut recv)
            .await;
        let ok = outcome.is_ok();
        match &outcome {
            Ok(_) => {
                tracing::info!(caller = %peer.id, action, ms = started.elapsed().as_millis() as u64, "ok")
            }
            Err(r) => {
                tracing::info!(caller = %peer.id, action, code = ?r.code, reason = %r.message, "refused")
            }
        }
        match outcome {
            Ok(Some(reply)) => {
                let _ = respond(&mut send, Ok(reply)).await;
            }
            Ok(None) => {} // the handler already answered (fetch streams its body)
            Err(r) => {
                let _ = respond(&mut send, Err(r)).await;
            }
        }
        let _ = ok;
    }

    /// Authenticates the caller against the directory (per request: revocation and expiry take
    /// effect at once) and asks the policy. Denials are logged as events.
    async fn authorize(
        &self,
        peer: &Peer,
        action: Action,
        ctx: &Context,
    ) -> std::result::Result<Principal, Refusal> {
        let now = clock::now();
        if let Err(wait) = self.limiter.take(&peer.id.to_string()) {
            self.signal(&peer.id, Signal::RateLimited).await;
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!("rate limited, retry after {} ms", wait.as_millis().max(1)),
            ));
        }
        let principal = match peer.id.kind() {
            PartyKind::Admin if peer.id.trust_domain() == self.trust_domain => Principal {
                id: peer.id.clone(),
                attributes: None,
                quarantined: false,
            },
            PartyKind::User | PartyKind::Agent => {
                let checked: std::result::Result<Principal, &str> = {
                    let dir = self
                        .directory
                        .read()
                        .map_err(|_| Refusal::new(ErrorCode::Internal, "internal error"))?;
                    match dir.active(&peer.id, now) {
                        Ok(entry) if entry.tls_spki_sha256 == peer.spki_sha256 => {
                            Ok(Principal {
                                id: peer.id.clone(),
                                attributes: Some(entry.attributes.clone()),
                                quarantined: self.monitor.is_quarantined(&peer.id.to_string()),
                            })
                        }
                        Ok(_) => Err("the certificate's key is not the one in the directory entry (superseded?)"),
                        Err(EntryProblem::Revoked) => Err("this identity has been revoked"),
                        Err(EntryProblem::Expired) => Err("this identity's directory entry has expired"),
                        Err(EntryProblem::NotYetValid) => Err("this identity's directory entry is not valid yet"),
                        Err(EntryProblem::Unknown) => Err("this identity is not in the relay's directory (push it with `sealrelay user add --relay`)"),
                    }
                };
                match checked {
                    Ok(p) => p,
                    Err(reason) => return Err(self.deny_auth(peer, action, reason).await),
                }
            }
            _ => {
                return Err(self
                    .deny_auth(peer, action, "this kind of identity may not call the relay")
                    .await)
            }
        };
        match self.policy().authorize(&principal, action, ctx) {
            Decision::Allow => Ok(principal),
            Decision::Deny { reasons } => {
                let reason = reasons.join("; ");
                self.log_denial(peer, action, &reason).await;
                if !principal.quarantined {
                    self.signal(&peer.id, Signal::Denial).await;
                }
                let message = if principal.quarantined {
                    format!(
                        "this agent is quarantined ({}); an admin must release it",
                        reason
                    )
                } else {
                    format!("denied by policy: {reason}")
                };
                Err(Refusal::new(ErrorCode::Forbidden, message))
            }
        }
    }

    /// [`Relay::authorize`] for requests about no particular resource.
    async fn authorize_relay(
        &self,
        peer: &Peer,
        action: Action,
        now: u64,
    ) -> std::result::Result<Principal, Refusal> {
        self.authorize(
            peer,
            action,
            &Context {
                now,
                ..Context::default()
            },
        )
        .await
    }

    async fn deny_auth(&self, peer: &Peer, action: Action, reason: &str) -> Refusal {
        self.log_denial(peer, action, reason).await;
        Refusal::new(ErrorCode::Unauthenticated, reason)
    }

    async fn log_denial(&self, peer: &Peer, action: Action, reason: &str) {
        let event = Event {
            time: clock::now(),
            kind: "deny".into(),
            actor: peer.id.to_string(),
            subject: action.as_str().into(),
            decision: "deny".into(),
            detail: format!(
                "{reason} (policy {})",
                self.policy().policy_hash().get(..16).unwrap_or_default()
            ),
            digest: Vec::new(),
        };
        if let Err(e) = self.committer.submit(WriteOp::Append { event }).await {
            tracing::error!(error = %e, "could not log a denial");
        }
    }

    /// Commits one write with its event; maps the store's refusals to wire errors.
    async fn commit(&self, op: WriteOp) -> std::result::Result<u64, Refusal> {
        match self.committer.submit(op).await? {
            Ok(index) => Ok(index),
            Err(refusal) => Err(refusal.to_error().into()),
        }
    }

    fn entry_for(
        &self,
        id: &SpiffeId,
        now: u64,
    ) -> std::result::Result<(DirectoryEntry, WireSigned), Refusal> {
        let dir = self
            .directory
            .read()
            .map_err(|_| Refusal::new(ErrorCode::Internal, "internal error"))?;
        let entry = dir.active(id, now).map_err(|_| {
            Refusal::new(
                ErrorCode::NotFound,
                format!("{} has no active directory entry", id.short()),
            )
        })?;
        let signed = dir
            .latest_signed(id)
            .ok_or_else(|| Refusal::not_found("directory entry"))?;
        Ok((entry.clone(), WireSigned::from_signed(signed)))
    }

    async fn handle(
        &self,
        peer: &Peer,
        request: Request,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> std::result::Result<Option<Reply>, Refusal> {
        let now = clock::now();
        match request {
            Request::PushDirectory {
                entries,
                revocations,
            } => {
                self.authorize_relay(peer, Action::PushDirectory, now)
                    .await?;
                self.push_directory(peer, entries, revocations, now)
                    .await
                    .map(Some)
            }
            Request::GetEntry { id } => {
                self.authorize_relay(peer, Action::GetEntry, now).await?;
                let id: SpiffeId = id
                    .parse()
                    .map_err(|e: Error| Refusal::new(ErrorCode::BadRequest, e.message()))?;
                let dir = self
                    .directory
                    .read()
                    .map_err(|_| Refusal::new(ErrorCode::Internal, "internal error"))?;
                let signed = dir
                    .latest_signed(&id)
                    .ok_or_else(|| Refusal::not_found("directory entry"))?;
                Ok(Some(Reply::Entry {
                    entry: WireSigned::from_signed(signed),
                }))
            }
            Request::CreateGrant { grant } => self.create_grant(peer, grant, now).await.map(Some),
            Request::ListGrants => {
                self.authorize_relay(peer, Action::ListGrants, now).await?;
                let records = self.store.open_grants_for(&peer.id.to_string())?;
                let mut grants = Vec::new();
                // Grants that await a second person's approval stay invisible to the agent.
                let ready = |g: &GrantRecord| {
                    now < g.expires && (!g.needs_approval || g.approval.is_some())
                };
                for g in records.into_iter().filter(|g| ready(g)) {
                    let user: SpiffeId = g.user.parse()?;
                    if let Ok((_, user_entry)) = self.entry_for(&user, now) {
                        grants.push(GrantView {
                            grant: WireSigned {
                                statement: g.grant.statement,
                                signature: g.grant.signature,
                            },
                            user_entry,
                        });
                    }
                }
                Ok(Some(Reply::Grants { grants }))
            }
            Request::Submit {
                grant_id,
                statement,
                length,
            } => self
                .submit(peer, grant_id, statement, length, recv, now)
                .await
                .map(Some),
            Request::PendingApprovals => {
                self.authorize_relay(peer, Action::Checkpoint, now).await?;
                let mut grants = Vec::new();
                for g in self
                    .store
                    .pending_approvals()?
                    .into_iter()
                    .filter(|g| now < g.expires)
                {
                    let target = self.grant_target(&g)?;
                    let principal = self.principal_of(peer, now)?;
                    // Listed only where this caller could approve it.
                    if self
                        .policy()
                        .authorize(
                            &principal,
                            Action::Approve,
                            &Context {
                                target,
                                now,
                                ..Context::default()
                            },
                        )
                        .is_allow()
                    {
                        let user: SpiffeId = g.user.parse()?;
                        if let Ok((_, user_entry)) = self.entry_for(&user, now) {
                            grants.push(GrantView {
                                grant: WireSigned {
                                    statement: g.grant.statement,
                                    signature: g.grant.signature,
                                },
                                user_entry,
                            });
                        }
                    }
                }
                Ok(Some(Reply::Pending { grants }))
            }
            Request::Approve { approval } => self.approve(peer, approval, now).await.map(Some),
            Request::Quarantine { agent, reason } => {
                let id = SpiffeId::new(&self.trust_domain, PartyKind::Agent, &agent)?;
                self.authorize(
                    peer,
                    Action::Quarantine,
                    &Context {
                        target: Target::Agent { id: id.clone() },
                        now,
                        ..Context::default()
                    },
                )
                .await?;
                if self.monitor.is_quarantined(&id.to_string()) {
                    return Err(Refusal::new(
                        ErrorCode::Conflict,
                        format!("{} is already quarantined", id.short()),
                    ));
                }
                self.quarantine(
                    &id,
                    &format!("manual (kill switch): {reason}"),
                    &peer.id.to_string(),
                )
                .await?;
                Ok(Some(Reply::Done))
            }
            Request::Release { agent } => {
                let id = SpiffeId::new(&self.trust_domain, PartyKind::Agent, &agent)?;
                self.authorize(
                    peer,
                    Action::Release,
                    &Context {
                        target: Target::Agent { id: id.clone() },
                        now,
                        ..Context::default()
                    },
                )
                .await?;
                let event = Event {
                    time: now,
                    kind: "agent.released".into(),
                    actor: peer.id.to_string(),
                    subject: id.to_string(),
                    decision: "release".into(),
                    detail: String::new(),
                    digest: Vec::new(),
                };
                self.commit(WriteOp::Release {
                    agent: id.to_string(),
                    event,
                })
                .await?;
                self.monitor.release(&id.to_string());
                Ok(Some(Reply::Done))
            }
            Request::Inbox => {
                self.authorize_relay(peer, Action::Inbox, now).await?;
                let records = self.store.inbox(&peer.id.to_string())?;
                let mut envelopes = Vec::new();
                for e in records.into_iter().filter(|e| now < e.expires_at) {
                    envelopes.push(self.view(&e, now)?);
                }
                Ok(Some(Reply::Inbox { envelopes }))
            }
            Request::Fetch { envelope_id } => {
                let record = self.store.envelope(&envelope_id)?;
                // The policy decides on the envelope's owner; for a user, another user's
                // envelope and a missing one are the same answer (the denial is still logged).
                let owner = match &record {
                    Some(r) => r.user.parse::<SpiffeId>()?,
                    None => peer.id.clone(),
                };
                let ctx = Context {
                    target: Target::Envelope {
                        id: envelope_id,
                        owner,
                    },
                    now,
                    ..Context::default()
                };
                if let Err(r) = self.authorize(peer, Action::Fetch, &ctx).await {
                    return Err(
                        if peer.id.kind() == PartyKind::User && r.code == ErrorCode::Forbidden {
                            Refusal::not_found("envelope")
                        } else {
                            r
                        },
                    );
                }
                let record = record
                    .filter(|e| {
                        e.user == peer.id.to_string() && now < e.expires_at && e.receipt.is_none()
                    })
                    .ok_or_else(|| Refusal::not_found("envelope"))?;
                let view = self.view(&record, now)?;
                if record.inline {
                    let body = self
                        .store
                        .inline_body(&envelope_id)?
                        .ok_or_else(|| Refusal::not_found("envelope"))?;
                    respond(send, Ok(Reply::Envelope { view }))
                        .await
                        .map_err(Refusal::from)?;
                    send.write_all(&body).await.map_err(|e| {
                        Refusal::from(Error::new(
                            ErrorKind::Unavailable,
                            format!("cannot send: {e}"),
                        ))
                    })?;
                    let _ = send.finish();
                    return Ok(None);
                }
                let file = tokio::fs::File::open(self.blobs.path(&envelope_id))
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, envelope = %hex(&envelope_id), "blob missing");
                        Refusal::not_found("envelope")
                    })?;
                respond(send, Ok(Reply::Envelope { view }))
                    .await
                    .map_err(Refusal::from)?;
                stream_file(file, send, record.length)
                    .await
                    .map_err(Refusal::from)?;
                Ok(None)
            }
            Request::Receipt { receipt } => self.receipt(peer, receipt, now).await.map(Some),
            Request::GetCheckpoint { old_size } => {
                self.authorize_relay(peer, Action::Checkpoint, now).await?;
                // Checkpoints are signed lazily: bring the latest up to the log's size first.
                let signer = self.signer.clone();
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || signer.sign_current(store.as_ref()))
                    .await
                    .map_err(|_| Error::internal("checkpoint task failed"))??;
                let (cp, note) = self.latest_checkpoint().ok_or_else(|| {
                    Refusal::new(ErrorCode::Unavailable, "no checkpoint signed yet")
                })?;
                let consistency = match old_size {
                    Some(old) if old > cp.size => {
                        return Err(Refusal::new(
                            ErrorCode::Conflict,
                            format!("your checkpoint has {old} entries but the relay's newest has {}: the log was rolled back", cp.size),
                        ))
                    }
                    Some(old) => self.store.consistency_proof(old, cp.size)?,
                    None => Vec::new(),
                };
                Ok(Some(Reply::Checkpoint {
                    checkpoint: note,
                    consistency,
                }))
            }
            Request::Events { from, limit } => {
                self.authorize_relay(peer, Action::Audit, now).await?;
                let events = self
                    .store
                    .events(from, usize::try_from(limit.min(1000)).unwrap_or(1000))?
                    .into_iter()
                    .map(|(i, e)| (i, e.leaf_bytes()))
                    .collect();
                Ok(Some(Reply::Events { events }))
            }
        }
    }

    fn view(&self, e: &EnvelopeRecord, now: u64) -> std::result::Result<EnvelopeView, Refusal> {
        let grant = self
            .store
            .grant(&e.grant_id)?
            .ok_or_else(|| Refusal::not_found("grant"))?;
        let agent: SpiffeId = e.agent.parse()?;
        let dir = self
            .directory
            .read()
            .map_err(|_| Refusal::new(ErrorCode::Internal, "internal error"))?;
        // The agent's latest entry, even if since revoked: the client judges the signature.
        let agent_entry = dir
            .latest_signed(&agent)
            .ok_or_else(|| Refusal::not_found("agent entry"))?;
        let _ = now;
        Ok(EnvelopeView {
            envelope_id: e.envelope_id,
            grant: WireSigned {
                statement: grant.grant.statement,
                signature: grant.grant.signature,
            },
            statement: WireSigned {
                statement: e.statement.statement.clone(),
                signature: e.statement.signature.clone(),
            },
            agent_entry: WireSigned::from_signed(agent_entry),
            length: e.length,
            received_at: e.received_at,
        })
    }

    async fn push_directory(
        &self,
        peer: &Peer,
        entries: Vec<WireSigned>,
        revocations: Vec<WireSigned>,
        now: u64,
    ) -> Handled {
        let mut next = self
            .directory
            .read()
            .map_err(|_| Refusal::new(ErrorCode::Internal, "internal error"))?
            .clone();
        let mut rows_e = Vec::new();
        let mut rows_r = Vec::new();
        let mut names = Vec::new();
        for w in &entries {
            let signed = w.to_signed(StatementType::DirectoryEntry)?;
            let e = next.insert_entry(signed, &self.authority)?;
            if e.id.trust_domain() != self.trust_domain {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("{} is not in this relay's trust domain", e.id),
                ));
            }
            names.push(format!("{}#{}", e.id.short(), e.serial));
            rows_e.push((
                e.id.to_string(),
                e.serial,
                StoredSigned {
                    statement: w.statement.clone(),
                    signature: w.signature.clone(),
                },
            ));
        }
        for w in &revocations {
            let signed = w.to_signed(StatementType::Revocation)?;
            let r = next.insert_revocation(&signed, &self.authority)?;
            names.push(format!("revoke {}#{}", r.id.short(), r.serial));
            rows_r.push((
                r.id.to_string(),
                r.serial,
                StoredSigned {
                    statement: w.statement.clone(),
                    signature: w.signature.clone(),
                },
            ));
        }
        let event = Event {
            time: now,
            kind: "directory.push".into(),
            actor: peer.id.to_string(),
            subject: names.join(", "),
            decision: "allow".into(),
            detail: String::new(),
            digest: Vec::new(),
        };
        self.commit(WriteOp::PutDirectory {
            entries: rows_e,
            revocations: rows_r,
            event,
        })
        .await?;
        // Only after the commit is durable does the new directory take effect.
        *self
            .directory
            .write()
            .map_err(|_| Refusal::new(ErrorCode::Internal, "internal error"))? = next;
        Ok(Reply::Done)
    }

    async fn create_grant(&self, peer: &Peer, grant: WireSigned, now: u64) -> Handled {
        let signed = grant.to_signed(StatementType::Grant)?;
        let g = Grant::decode(&signed.statement)?;
        let (agent_entry, agent_attrs) = match self.entry_for(&g.agent, now) {
            Ok((e, _)) => (Some(e.clone()), Some(e.attributes)),
            Err(_) => (None, None),
        };
        let ctx = Context {
            target: Target::Resource {
                name: g.resource.clone(),
            },
            user: Some(g.user.clone()),
            agent: Some(g.agent.clone()),
            agent_attributes: agent_attrs,
            agent_quarantined: self.monitor.is_quarantined(&g.agent.to_string()),
            now,
            size: Some(g.max_bytes),
        };
        self.authorize(peer, Action::Grant, &ctx).await?;
        if g.user != peer.id {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "a grant must be created by the user it names",
            ));
        }
        if agent_entry.is_none() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("{} has no active directory entry", g.agent.short()),
            ));
        }
        let (user_entry, _) = self.entry_for(&peer.id, now)?;
        Grant::verify(&signed, &user_entry.signing_key)?;
        if g.expires <= now {
            return Err(Refusal::new(
                ErrorCode::Expired,
                "the grant has already expired",
            ));
        }
        if g.expires.saturating_sub(now) > self.config.max_grant_ttl_secs {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "a grant may last at most {} seconds",
                    self.config.max_grant_ttl_secs
                ),
            ));
        }
        if g.max_bytes > self.config.max_envelope_bytes {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "max bytes is above the relay's limit of {}",
                    self.config.max_envelope_bytes
                ),
            ));
        }
        let record = GrantRecord {
            grant_id: g.grant_id,
            user: g.user.to_string(),
            agent: g.agent.to_string(),
            expires: g.expires,
            max_bytes: g.max_bytes,
            created: now,
            grant: StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            state: GrantState::Open,
            resource: g.resource.clone(),
            needs_approval: self
                .policy()
                .catalog()
                .lookup(&g.resource)
                .is_some_and(|c| c.approval),
            approval: None,
        };
        let awaiting = record.needs_approval;
        let event = Event {
            time: now,
            kind: "grant.created".into(),
            actor: peer.id.to_string(),
            subject: hex(&g.grant_id),
            decision: if awaiting {
                "awaiting approval"
            } else {
                "allow"
            }
            .into(),
            detail: format!(
                "agent={} resource_sha256={}",
                g.agent,
                hex(&sha256(g.resource.as_bytes()))
            ),
            digest: statement_digest(&signed).to_vec(),
        };
        self.commit(WriteOp::CreateGrant { record, event }).await?;
        Ok(Reply::GrantCreated {
            grant_id: g.grant_id,
            expires: g.expires,
        })
    }

    async fn submit(
        &self,
        peer: &Peer,
        grant_id: [u8; 16],
        statement: WireSigned,
        length: u64,
        recv: &mut RecvStream,
        now: u64,
    ) -> Handled {
        // The grant the submission is for; one addressed to another agent is "no such grant".
        let record = self.store.grant(&grant_id)?;
        let target = match record.as_ref().filter(|g| g.agent == peer.id.to_string()) {
            Some(g) => self.grant_target(g)?,
            None => Target::Relay,
        };
        let ctx = Context {
            target,
            user: record.as_ref().and_then(|g| g.user.parse().ok()),
            agent: Some(peer.id.clone()),
            now,
            size: Some(length),
            ..Context::default()
        };
        if record
            .as_ref()
            .is_some_and(|g| g.agent == peer.id.to_string())
        {
            self.authorize(peer, Action::Submit, &ctx).await?;
        } else {
            // Still authenticate (and rate-limit, and refuse a quarantined agent) first.
            match self
                .authorize(
                    peer,
                    Action::ListGrants,
                    &Context {
                        now,
                        ..Context::default()
                    },
                )
                .await
            {
                Ok(_) => return Err(Refusal::not_found("grant")),
                Err(r) => return Err(r),
            }
        }
        if length > self.config.max_envelope_bytes {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "the envelope is over the relay's limit of {} bytes",
                    self.config.max_envelope_bytes
                ),
            ));
        }
        // Early checks, so a refused body is not read; the store re-checks inside the commit.
        let grant = record
            .filter(|g| g.agent == peer.id.to_string())
            .ok_or_else(|| Refusal::not_found("grant"))?;
        if grant.state != GrantState::Open {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                "the grant was already used (a grant serves one submission)",
            ));
        }
        if now >= grant.expires {
            return Err(Refusal::new(ErrorCode::Expired, "the grant has expired"));
        }
        if length > grant.max_bytes {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "the envelope is larger than the grant's {} bytes",
                    grant.max_bytes
                ),
            ));
        }
        let (agent_entry, _) = self.entry_for(&peer.id, now)?;
        let signed = statement.to_signed(StatementType::Submission)?;
        let claimed = Submission::decode(&signed.statement)?;
        signed.verify(&agent_entry.signing_key).map_err(|e| {
            Refusal::new(
                ErrorCode::BadRequest,
                format!("the submission statement does not verify: {e}"),
            )
        })?;
        let user: SpiffeId = grant.user.parse()?;
        if claimed.grant_id != grant_id
            || claimed.user != user
            || claimed.agent != peer.id
            || claimed.ciphertext_len != length
        {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "the submission statement does not match this grant and length",
            ));
        }

        // Stream the body (to a temporary blob, or memory when small) while validating and
        // hashing it.
        let envelope_id = random_id()?;
        let inline = length <= INLINE_MAX;
        let mut blob = if inline {
            None
        } else {
            Some(self.blobs.create(&envelope_id)?)
        };
        let mut body = Vec::with_capacity(if inline {
            usize::try_from(length).unwrap_or(0)
        } else {
            0
        });
        let mut validator = EnvelopeValidator::new();
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut remaining = length;
        let mut buf = vec![0u8; IO_CHUNK.min(usize::try_from(length).unwrap_or(IO_CHUNK).max(1))];
        while remaining > 0 {
            let want = usize::try_from(remaining.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = match recv.read(&mut buf[..want]).await {
                Ok(Some(n)) => n,
                Ok(None) => {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "the body ended before its declared length",
                    ))
                }
                Err(e) => {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        format!("the upload failed: {e}"),
                    ))
                }
            };
            let chunk = &buf[..n];
            if let Err(e) = validator.update(chunk) {
                self.signal(&peer.id, Signal::InvalidEnvelope).await;
                return Err(Refusal::new(ErrorCode::InvalidEnvelope, e.to_string()));
            }
            hasher.update(chunk);
            match &mut blob {
                Some(b) => std::io::Write::write_all(b, chunk)
                    .map_err(|e| Error::io(format!("cannot write a blob: {e}")))?,
                None => body.extend_from_slice(chunk),
            }
            remaining -= n as u64;
        }
        let mut extra = [0u8; 1];
        match recv.read(&mut extra).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "the body is longer than its declared length",
                ))
            }
            Err(e) => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("the upload failed: {e}"),
                ))
            }
        }
        if let Err(e) = validator.finish() {
            self.signal(&peer.id, Signal::InvalidEnvelope).await;
            return Err(Refusal::new(ErrorCode::InvalidEnvelope, e.to_string()));
        }
        let digest = hasher.finish();
        if digest.as_ref() != claimed.ciphertext_sha256.as_slice() {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "the body does not match the SHA-256 in the signed statement",
            ));
        }
        if let Some(b) = blob {
            // fsync, rename, fsync the directory: off the async threads.
            let blobs = self.blobs.clone();
            tokio::task::spawn_blocking(move || blobs.commit(b, &envelope_id))
                .await
                .map_err(|_| Error::internal("blob commit task failed"))??;
        }
        let record = EnvelopeRecord {
            envelope_id,
            grant_id,
            user: grant.user.clone(),
            agent: peer.id.to_string(),
            length,
            sha256: claimed.ciphertext_sha256,
            received_at: now,
            expires_at: now.saturating_add(self.config.envelope_ttl_secs),
            statement: StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            receipt: None,
            inline,
        };
        let event = Event {
            time: now,
            kind: "envelope.submitted".into(),
            actor: peer.id.to_string(),
            subject: hex(&envelope_id),
            decision: "allow".into(),
            detail: format!(
                "grant={} user={} sha256={} length={length}",
                hex(&grant_id),
                grant.user,
                hex(&claimed.ciphertext_sha256)
            ),
            digest: statement_digest(&signed).to_vec(),
        };
        let op = WriteOp::ConsumeGrant {
            agent: peer.id.to_string(),
            envelope: record,
            inline_body: inline.then_some(body),
            now,
            event,
        };
        match self.commit(op).await {
            Ok(_) => Ok(Reply::Submitted { envelope_id }),
            Err(r) => {
                if !inline {
                    self.blobs.remove(&envelope_id);
                }
                Err(r)
            }
        }
    }

    async fn receipt(&self, peer: &Peer, receipt: WireSigned, now: u64) -> Handled {
        let signed = receipt.to_signed(StatementType::Receipt)?;
        let claimed = Receipt::decode(&signed.statement)?;
        let owner = match self.store.envelope(&claimed.envelope_id)? {
            Some(e) => e.user.parse::<SpiffeId>()?,
            None => peer.id.clone(),
        };
        let ctx = Context {
            target: Target::Envelope {
                id: claimed.envelope_id,
                owner,
            },
            now,
            ..Context::default()
        };
        if let Err(r) = self.authorize(peer, Action::Receipt, &ctx).await {
            return Err(
                if peer.id.kind() == PartyKind::User && r.code == ErrorCode::Forbidden {
                    Refusal::not_found("envelope")
                } else {
                    r
                },
            );
        }
        let (user_entry, _) = self.entry_for(&peer.id, now)?;
        let r = Receipt::verify(&signed, &user_entry.signing_key)?;
        let record = self
            .store
            .envelope(&r.envelope_id)?
            .filter(|e| e.user == peer.id.to_string())
            .ok_or_else(|| Refusal::not_found("envelope"))?;
        if r.user != peer.id
            || r.grant_id != record.grant_id
            || r.agent.to_string() != record.agent
            || r.ciphertext_sha256 != record.sha256
        {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "the receipt does not describe this envelope",
            ));
        }
        let event = Event {
            time: now,
            kind: "receipt.recorded".into(),
            actor: peer.id.to_string(),
            subject: hex(&r.envelope_id),
            decision: r.status.as_str().into(),
            detail: format!(
                "grant={} agent={} sha256={} receipt_sha256={}",
                hex(&r.grant_id),
                r.agent,
                hex(&r.ciphertext_sha256),
                hex(&statement_digest(&signed))
            ),
            digest: statement_digest(&signed).to_vec(),
        };
        let leaf = event.leaf_bytes();
        let delete = self.config.delete_after_delivery;
        let index = self
            .commit(WriteOp::RecordReceipt {
                envelope_id: r.envelope_id,
                user: peer.id.to_string(),
                receipt: StoredSigned {
                    statement: signed.statement.clone(),
                    signature: signed.signature.to_vec(),
                },
                delete,
                event,
            })
            .await?;
        if delete {
            self.blobs.remove(&r.envelope_id);
        }
        if r.status == crate::core::grant::DeliveryStatus::Undecryptable {
            // Only the user's client can tell a file was not sealed to it: count it against the agent.
            self.signal(&r.agent, Signal::Undecryptable).await;
        }
        // The commit thread signed a checkpoint covering this event before answering.
        let (cp, note) = self
            .latest_checkpoint()
            .filter(|(cp, _)| cp.size > index)
            .ok_or_else(|| Refusal::new(ErrorCode::Unavailable, "the receipt is recorded but no checkpoint covers it yet; fetch its proof later"))?;
        let proof = self.store.inclusion_proof(index, cp.size)?;
        Ok(Reply::ReceiptRecorded {
            event_index: index,
            leaf,
            tree_size: cp.size,
            proof,
            checkpoint: note,
        })
    }

    fn latest_checkpoint(&self) -> Option<(crate::core::tlog::checkpoint::Checkpoint, String)> {
        self.checkpoint.read().ok().and_then(|g| g.clone())
    }

    fn policy(&self) -> Arc<CedarPolicy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the policy and catalog files. A valid policy takes effect for the next request
    /// (on every connection) and is logged as an event; an invalid one is refused, logged, and
    /// the policy in force stays.
    pub async fn reload_policy(&self) -> Result<String> {
        let read = |p: &Option<std::path::PathBuf>, default: &str| -> Result<String> {
            match p {
                Some(p) => String::from_utf8(crate::local::fs::read_capped(p, 1 << 20)?)
                    .map_err(|_| Error::bad_input(format!("{} is not UTF-8", p.display()))),
                None => Ok(default.to_owned()),
            }
        };
        let result = read(
            &self.config.policy_file,
            crate::core::policy::DEFAULT_POLICY,
        )
        .and_then(|p| {
            let c = read(
                &self.config.catalog_file,
                crate::core::policy::DEFAULT_CATALOG,
            )?;
            CedarPolicy::new(&p, &c)
        });
        let (decision, detail, outcome) = match result {
            Ok(new) => {
                let hash = new.policy_hash();
                if let Ok(mut slot) = self.policy.write() {
                    *slot = Arc::new(new);
                }
                ("allow", format!("policy {hash}"), Ok(hash))
            }
            Err(e) => (
                "deny",
                format!("invalid policy kept out: {}", e.message()),
                Err(e),
            ),
        };
        let event = Event {
            time: clock::now(),
            kind: "policy.reload".into(),
            actor: format!("spiffe://{}/relay/operator", self.trust_domain),
            subject: "policy".into(),
            decision: decision.into(),
            detail,
            digest: Vec::new(),
        };
        self.commit(WriteOp::Append { event })
            .await
            .map_err(|r| Error::new(ErrorKind::Unavailable, r.message))?;
        outcome
    }

    /// The policy's view of a stored grant.
    fn grant_target(&self, g: &GrantRecord) -> std::result::Result<Target, Refusal> {
        Ok(Target::Grant {
            id: g.grant_id,
            requester: g.user.parse()?,
            agent: g.agent.parse()?,
            resource: g.resource.clone(),
            approved: g.approval.is_some(),
        })
    }

    /// The caller as the policy sees it (directory attributes, quarantine).
    fn principal_of(&self, peer: &Peer, now: u64) -> std::result::Result<Principal, Refusal> {
        let attributes = match peer.id.kind() {
            PartyKind::User | PartyKind::Agent => Some(self.entry_for(&peer.id, now)?.0.attributes),
            _ => None,
        };
        Ok(Principal {
            id: peer.id.clone(),
            attributes,
            quarantined: self.monitor.is_quarantined(&peer.id.to_string()),
        })
    }

    /// A second person's approval of a grant that needs one.
    async fn approve(&self, peer: &Peer, approval: WireSigned, now: u64) -> Handled {
        let signed = approval.to_signed(StatementType::Approval)?;
        let a = crate::core::grant::Approval::decode(&signed.statement)?;
        let g = self
            .store
            .grant(&a.grant_id)?
            .ok_or_else(|| Refusal::not_found("grant"))?;
        let ctx = Context {
            target: self.grant_target(&g)?,
            now,
            ..Context::default()
        };
        self.authorize(peer, Action::Approve, &ctx).await?;
        let (entry, _) = self.entry_for(&peer.id, now)?;
        crate::core::grant::Approval::verify(&signed, &entry.signing_key)?;
        if a.approver != peer.id {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "the approval names another approver",
            ));
        }
        if a.grant_sha256 != sha256(&g.grant.statement) {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "the approval is for a different version of this grant (it was modified): it does not count",
            ));
        }
        if now >= g.expires {
            return Err(Refusal::new(
                ErrorCode::Expired,
                "the grant expired before it was approved; it stays closed",
            ));
        }
        let event = Event {
            time: now,
            kind: "grant.approved".into(),
            actor: peer.id.to_string(),
            subject: hex(&g.grant_id),
            decision: "approve".into(),
            detail: format!("requester={} grant_sha256={}", g.user, hex(&a.grant_sha256)),
            digest: statement_digest(&signed).to_vec(),
        };
        self.commit(WriteOp::Approve {
            grant_id: g.grant_id,
            approval: StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            event,
        })
        .await?;
        Ok(Reply::Done)
    }

    /// Deletes envelopes past their TTL.
    async fn sweep_expired(&self) {
        let now = clock::now();
        let Ok(ids) = self.store.envelope_ids() else {
            return;
        };
        for id in ids {
            let Ok(Some(e)) = self.store.envelope(&id) else {
                continue;
            };
            if now < e.expires_at {
                continue;
            }
            let event = Event {
                time: now,
                kind: "envelope.expired".into(),
                actor: format!("spiffe://{}/relay", self.trust_domain),
                subject: hex(&id),
                decision: "delete".into(),
                detail: String::new(),
                digest: Vec::new(),
            };
            if let Ok(Ok(_)) = self
                .committer
                .submit(WriteOp::DeleteEnvelope {
                    envelope_id: id,
                    event,
                })
                .await
            {
                self.blobs.remove(&id);
            }
        }
    }

    /// The store (for tests, the demo and `audit`).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Reads one header frame.
pub async fn read_frame<T: for<'a> serde::Deserialize<'a>>(recv: &mut RecvStream) -> Result<T> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| Error::bad_input(format!("cannot read a frame: {e}")))?;
    let len = wire::frame_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| Error::bad_input(format!("cannot read a frame: {e}")))?;
    wire::decode_frame(&body)
}

async fn respond(
    send: &mut SendStream,
    outcome: std::result::Result<Reply, Refusal>,
) -> Result<()> {
    let response = match outcome {
        Ok(reply) => Response::Ok(reply),
        Err(r) => Response::Err {
            code: r.code,
            message: r.message,
        },
    };
    let frame = wire::encode_frame(&response)?;
    send.write_all(&frame)
        .await
        .map_err(|e| Error::new(ErrorKind::Unavailable, format!("cannot answer: {e}")))?;
    let is_envelope = matches!(response, Response::Ok(Reply::Envelope { .. }));
    if !is_envelope {
        let _ = send.finish();
    }
    Ok(())
}

async fn stream_file(mut file: tokio::fs::File, send: &mut SendStream, length: u64) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; IO_CHUNK];
    let mut sent = 0u64;
    while sent < length {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(format!("cannot read a blob: {e}")))?;
        if n == 0 {
            return Err(Error::io("a blob is shorter than its record"));
        }
        send.write_all(&buf[..n])
            .await
            .map_err(|e| Error::new(ErrorKind::Unavailable, format!("cannot send: {e}")))?;
        sent += n as u64;
    }
    let _ = send.finish();
    Ok(())
}

/// Starts a relay for `dir`/`data` in this process on 127.0.0.1 with a random port.
pub async fn start_local(dir: &Path, data: &Path) -> Result<RunningRelay> {
    let config = RelayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: data.to_path_buf(),
        dir: dir.to_path_buf(),
        ..RelayConfig::default()
    };
    start(config).await
}
