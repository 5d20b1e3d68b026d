//! The relay's services in one place ([`Relay`]: the state every request may read or change)
//! and the small lookups every handler uses. Nothing here starts a task, a thread or a
//! process: the shell (`server::shell`) does that.

use std::sync::{Arc, RwLock};

use crate::clock::Clock;
use crate::core::directory::{Directory, DirectoryEntry};
use crate::core::policy::{Authorizer, CedarPolicy, Principal, Target};
use crate::core::sign::PublicKey;
use crate::core::store::{GrantRecord, Store, WriteOp};
use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::wire::{ErrorCode, WireSigned};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{PartyKind, SpiffeId};
use crate::net::Peer;
use crate::store::blobs::BlobStore;

use super::checkpoints;
use super::committer::Committer;
use super::config::RelayConfig;
use super::connections::Connections;
use super::denials::Denials;
use super::effects::Cx;
use super::in_flight::InFlight;
use super::metrics::Metrics;
use super::misbehaviour::{Monitor, RateLimiter, Reach, Signal};
use super::refusal::Refusal;
use super::uploads::Uploads;
use super::witnessed::{Noted, Witnessed};

/// Everything a request may read or change, shared by every connection.
pub struct Relay {
    /// The configuration it started with (docs/config.md).
    pub(crate) config: RelayConfig,
    /// Durable state: grants, envelopes, the directory, quarantines, events and the log.
    pub(crate) store: Arc<dyn Store>,
    /// The one writer: batches writes into durable transactions (group commit).
    pub(crate) committer: Committer,
    /// The verified directory in force; replaced whole after a durable push.
    pub(crate) directory: RwLock<Directory>,
    /// The authority key every directory statement must be signed by.
    pub(crate) authority: PublicKey,
    /// The SPIFFE trust domain this relay serves.
    pub(crate) trust_domain: String,
    /// Files for envelopes too large to store inline.
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// The policy in force; `reload_policy` swaps it (SIGHUP).
    pub(crate) policy: RwLock<Arc<CedarPolicy>>,
    /// Requests in flight, so shutdown can let them finish.
    pub(crate) in_flight: Arc<InFlight>,
    /// The latest signed checkpoint (written by the commit thread).
    pub(crate) checkpoint: checkpoints::Latest,
    /// Signs checkpoints with the log key.
    pub(crate) signer: Arc<checkpoints::Signer>,
    /// The witnesses that cosign checkpoints, and the newest one they cosigned (`None`: the
    /// relay has no witnesses configured).
    pub(crate) witnessing: Option<Arc<Witnessed>>,
    /// The same for the directory log's checkpoints (docs/keys.md).
    pub(crate) dir_witnessing: Option<Arc<Witnessed>>,
    /// Per-agent counters and quarantines.
    pub(crate) monitor: Monitor,
    /// Per-identity token buckets.
    pub(crate) limiter: RateLimiter,
    /// Open connections per identity, so a quarantine can close an agent's at once.
    pub(crate) connections: Connections,
    /// Where `now` comes from: read once per request.
    pub(crate) clock: Arc<dyn Clock>,
    /// Uploads in progress (one per grant, per-agent caps).
    pub(crate) uploads: Uploads,
    /// Directory pushes one at a time: each builds on the directory the one before left, so two
    /// racing pushes cannot lose one (a revocation, say).
    pub(crate) push_lock: tokio::sync::Mutex<()>,
    /// How long a reset key waits before it is in force (the trust root's, docs/keys.md).
    pub(crate) reset_wait: u64,
    /// The event log's origin (the directory log's is this and `/directory`).
    pub(crate) log_origin: String,
    /// Signs the directory log's checkpoints (with the log key, under the directory origin).
    pub(crate) dir_signer: super::checkpoints::DirectorySigner,
    /// What `/metrics` reports (docs/operations.md).
    pub(crate) metrics: Arc<Metrics>,
    /// Denials per caller per minute, so a flood of them does not grow the log without bound.
    pub(crate) denials: Denials,
    /// The open subscriptions (`Subscribe`): handlers publish what became ready to them.
    pub(crate) feeds: super::feeds::Feeds,
    /// Where the sweep of grants waiting for an approval goes on from (`services::expiry`).
    pub(crate) approval_sweep: std::sync::Mutex<Option<crate::ids::GrantId>>,
}

impl Relay {
    /// The store (for tests, the demo and `audit`).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The relay's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<CedarPolicy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `spiffe://<td>/relay/<what>`: the actor of events the relay itself causes.
    pub(crate) fn actor(&self, what: &str) -> String {
        format!("spiffe://{}/relay/{what}", self.trust_domain)
    }

    pub(crate) fn latest_checkpoint(&self) -> Option<(Checkpoint, String)> {
        self.checkpoint.read().ok().and_then(|g| g.clone())
    }

    /// The directory log's newest checkpoint, signed (not yet witnessed).
    pub(crate) fn directory_checkpoint(&self) -> Option<(Checkpoint, String)> {
        let dir = self.directory.read().ok()?;
        let tree = dir.log_tree()?;
        let note = self.dir_signer.checkpoint(tree, tree.size()).ok()?;
        let cp = Checkpoint {
            origin: crate::core::keylog::directory_origin(&self.log_origin),
            size: tree.size(),
            root: tree.root(tree.size()).ok()?,
        };
        Some((cp, note))
    }

    /// The directory checkpoint a person's client reads: the newest signed one, with the
    /// witnesses' cosignatures when a quorum cosigned it (a reader that asks for a quorum
    /// waits until they have; one that does not is never shown an older tree).
    pub(crate) fn directory_checkpoint_for_readers(&self) -> Option<String> {
        let (cp, note) = self.directory_checkpoint()?;
        if let Some(w) = &self.dir_witnessing {
            if let Some((c, cosigned)) = w.witnessed.borrow().as_ref() {
                if c.size == cp.size && c.root == cp.root {
                    return Some(cosigned.clone());
                }
            }
        }
        Some(note)
    }

    /// The checkpoint to answer with, of at least `min_size` leaves and at least the caller's
    /// `old_size`: the newest *witnessed* one when it is that large (waiting up to `wait` for
    /// one), otherwise the newest signed one, not yet witnessed. A caller holding a larger
    /// checkpoint than the relay's newest is told the log was rolled back.
    pub(crate) async fn checkpoint_for(
        &self,
        min_size: u64,
        old_size: Option<u64>,
        wait: std::time::Duration,
    ) -> std::result::Result<(Checkpoint, String), Refusal> {
        let min = min_size.max(old_size.unwrap_or(0));
        if let Some(w) = &self.witnessing {
            let mut rx = w.witnessed.subscribe();
            let large = |n: &Noted| n.as_ref().is_some_and(|(c, _)| c.size >= min);
            if !large(&rx.borrow()) && !wait.is_zero() {
                let _ = tokio::time::timeout(wait, rx.wait_for(large)).await;
            }
            let got = rx.borrow().clone().filter(|(c, _)| c.size >= min);
            if let Some(found) = got {
                return Ok(found);
            }
        }
        let (cp, note) = self
            .latest_checkpoint()
            .ok_or_else(|| Refusal::new(ErrorCode::Unavailable, "no checkpoint signed yet"))?;
        if let Some(old) = old_size.filter(|o| *o > cp.size) {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!(
                    "your checkpoint has {old} entries but the relay's newest has {}: the log was rolled back",
                    cp.size
                ),
            ));
        }
        if cp.size < min {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "no checkpoint covers that entry yet; ask again shortly",
            ));
        }
        Ok((cp, note))
    }

    /// How long a receipt waits for a witnessed checkpoint.
    pub(crate) fn receipt_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.witness_receipt_wait_ms)
    }

    /// Commits one write with its event; maps the store's refusals to wire errors.
    pub(crate) async fn commit(&self, op: WriteOp) -> std::result::Result<u64, Refusal> {
        self.committer.commit(op).await
    }

    /// [`Committer::commit_or_refusal`]: a refusal by the store's rules kept apart.
    pub(crate) async fn commit_or_refusal(
        &self,
        op: WriteOp,
    ) -> std::result::Result<crate::core::store::OpResult, Refusal> {
        self.committer.commit_or_refusal(op).await
    }

    /// What acting on an agent's misbehaviour touches, with the request's alert sink.
    pub(crate) fn reach<'a>(&'a self, cx: &'a Cx) -> Reach<'a> {
        Reach {
            store: self.store.as_ref(),
            committer: &self.committer,
            connections: &self.connections,
            metrics: &self.metrics,
            alerts: cx.alerts.as_ref(),
            monitor_actor: self.actor("monitor"),
        }
    }

    /// Counts a signal against an agent (`claimant`: the party that raised it, if one did).
    pub(crate) async fn signal(
        &self,
        cx: &Cx,
        agent: &SpiffeId,
        signal: Signal,
        claimant: Option<&SpiffeId>,
        now: u64,
    ) {
        self.monitor
            .signal(&self.reach(cx), agent, signal, claimant, now)
            .await;
    }

    /// The active entry of `id` at `now` and its signed form.
    pub(crate) fn entry_for(
        &self,
        id: &SpiffeId,
        now: u64,
    ) -> std::result::Result<(DirectoryEntry, WireSigned), Refusal> {
        let dir = self.directory.read().map_err(|_| Refusal::internal())?;
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

    /// The latest signed entry of `id`, even if since revoked (clients judge it themselves).
    pub(crate) fn latest_signed(&self, id: &SpiffeId) -> std::result::Result<WireSigned, Refusal> {
        let dir = self.directory.read().map_err(|_| Refusal::internal())?;
        dir.latest_signed(id)
            .map(WireSigned::from_signed)
            .ok_or_else(|| Refusal::not_found("directory entry"))
    }

    /// The policy's view of a stored grant.
    pub(crate) fn grant_target(g: &GrantRecord) -> Target {
        Target::Grant {
            id: g.grant_id,
            requester: g.user.clone(),
            agent: g.agent.clone(),
            resource: g.resource.clone(),
            approved: g.approval.is_some(),
        }
    }

    /// The caller as the policy sees it (directory attributes, quarantine).
    pub(crate) fn principal_of(
        &self,
        peer: &Peer,
        now: u64,
    ) -> std::result::Result<Principal, Refusal> {
        let attributes = match peer.id.kind() {
            PartyKind::User | PartyKind::Agent | PartyKind::Source => {
                Some(self.entry_for(&peer.id, now)?.0.attributes)
            }
            _ => None,
        };
        if peer.id.kind() == PartyKind::Admin {
            self.entry_for(&peer.id, now)?;
        }
        Ok(Principal {
            id: peer.id.clone(),
            attributes,
            quarantined: self.monitor.is_quarantined(&peer.id.to_string()),
        })
    }

    /// One event for `count` denials of `caller` that were not logged one by one.
    pub(crate) async fn log_denial_summary(&self, caller: &SpiffeId, count: u64, now: u64) {
        let event = super::events::deny_summary(now, caller, count);
        if let Err(e) = self.committer.submit(WriteOp::Append { event }).await {
            tracing::error!(error = %e, "could not log a denial summary");
        }
    }

    /// Puts a reloaded policy in force (`loaded`: the policy and what was proved of it, or why
    /// it was refused; the shell reads and proves it, `server::reload_policy`). Either outcome
    /// is logged as an event, durably, before a new policy is in force; a refused one leaves
    /// the policy in force as it was.
    pub async fn reload_policy(&self, loaded: Result<(CedarPolicy, String)>) -> Result<String> {
        let result = loaded;
        let (decision, detail) = match &result {
            Ok((new, proved)) => ("allow", format!("policy {}: {proved}", new.policy_hash())),
            Err(e) => ("deny", format!("policy kept out: {}", e.message())),
        };
        let event = super::events::policy_reload(
            self.clock.now(),
            &self.actor("operator"),
            decision,
            detail,
        );
        // The change is logged durably first; only then is the new policy in force.
        self.commit(WriteOp::Append { event })
            .await
            .map_err(|r| Error::new(ErrorKind::Unavailable, r.message))?;
        let (new, _) = result?;
        let hash = new.policy_hash();
        if let Ok(mut slot) = self.policy.write() {
            *slot = Arc::new(new);
        }
        Ok(hash)
    }
}
