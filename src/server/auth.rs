//! Every request passes here first: the rate limit, then the caller's directory entry (checked
//! per request, so revocation and expiry take effect at once), then the policy. Each refusal is
//! logged as a `deny` event.

use crate::core::directory::EntryProblem;
use crate::core::policy::{Action, Authorizer, Context, Decision, Principal};
use crate::core::store::WriteOp;
use crate::core::wire::ErrorCode;
use crate::ids::{PartyKind, SpiffeId};
use crate::net::Peer;

use super::events;
use super::monitor::Signal;
use super::refusal::Refusal;
use super::state::Relay;

impl Relay {
    /// Authenticates the caller and asks the policy about `action` in `ctx` (`ctx.now` is the
    /// request's time).
    pub(crate) async fn authorize(
        &self,
        peer: &Peer,
        action: Action,
        ctx: &Context,
    ) -> Result<Principal, Refusal> {
        let now = ctx.now;
        if let Err(wait) = self.limiter.take(&peer.id.to_string()) {
            self.signal(&peer.id, Signal::RateLimited, now).await;
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!("rate limited, retry after {} ms", wait.as_millis().max(1)),
            ));
        }
        let principal = match self.authenticate(peer, now) {
            Ok(p) => p,
            Err(reason) => {
                self.log_denial(peer, action, reason, now).await;
                return Err(Refusal::new(ErrorCode::Unauthenticated, reason));
            }
        };
        let decision = self.policy().authorize(&principal, action, ctx);
        self.metrics
            .policy_decision(matches!(decision, Decision::Allow), peer.id.kind().as_str());
        match decision {
            Decision::Allow => Ok(principal),
            Decision::Deny { reasons } => {
                let reason = reasons.join("; ");
                self.log_denial(peer, action, &reason, now).await;
                if !principal.quarantined {
                    self.signal(&peer.id, Signal::Denial, now).await;
                }
                let message = if principal.quarantined {
                    format!("this agent is quarantined ({reason}); an admin must release it")
                } else {
                    format!("denied by policy: {reason}")
                };
                Err(Refusal::new(ErrorCode::Forbidden, message))
            }
        }
    }

    /// [`Relay::authorize`] for requests about no particular resource.
    pub(crate) async fn authorize_relay(
        &self,
        peer: &Peer,
        action: Action,
        now: u64,
    ) -> Result<Principal, Refusal> {
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

    /// Right before a submission commits: the time now (a grant's expiry is judged when the
    /// body has arrived, not when the request started) and the caller checked again (a
    /// revocation or quarantine that came during a slow upload ends it).
    pub(crate) fn commit_time_check(&self, peer: &Peer) -> Result<u64, Refusal> {
        let now = self.clock.now();
        let principal = self
            .authenticate(peer, now)
            .map_err(|reason| Refusal::new(ErrorCode::Unauthenticated, reason))?;
        if principal.quarantined {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "this agent was quarantined during the upload; an admin must release it",
            ));
        }
        Ok(now)
    }

    /// The caller as a principal, or why it may not call at all.
    fn authenticate(&self, peer: &Peer, now: u64) -> Result<Principal, &'static str> {
        match peer.id.kind() {
            // Admins too are directory entries, pinned to their TLS key and revocable: a
            // certificate from the CA alone is not enough.
            PartyKind::User | PartyKind::Agent | PartyKind::Admin => {
                let dir = self.directory.read().map_err(|_| "internal error")?;
                match dir.active(&peer.id, now) {
                    Ok(entry) if entry.tls_spki_sha256 == peer.spki_sha256 => Ok(Principal {
                        id: peer.id.clone(),
                        attributes: (peer.id.kind() != PartyKind::Admin)
                            .then(|| entry.attributes.clone()),
                        quarantined: self.monitor.is_quarantined(&peer.id.to_string()),
                    }),
                    Ok(_) => Err("the certificate's key is not the one in the directory entry (superseded?)"),
                    Err(EntryProblem::Revoked) => Err("this identity has been revoked"),
                    Err(EntryProblem::Expired) => Err("this identity's directory entry has expired"),
                    Err(EntryProblem::NotYetValid) => Err("this identity's directory entry is not valid yet"),
                    Err(EntryProblem::Unknown) => Err("this identity is not in the relay's directory (the admin pushes it: `sealrelay directory push`)"),
                }
            }
            _ => Err("this kind of identity may not call the relay"),
        }
    }

    async fn log_denial(&self, peer: &Peer, action: Action, reason: &str, now: u64) {
        let decision = self
            .denials
            .record(&peer.id, now, self.config.max_denial_events_per_minute);
        if let Some(count) = decision.summary {
            self.log_denial_summary(&peer.id, count, now).await;
        }
        if !decision.log {
            return;
        }
        let event = events::deny(
            now,
            &peer.id,
            action.as_str(),
            reason,
            &self.policy().policy_hash(),
        );
        if let Err(e) = self.committer.submit(WriteOp::Append { event }).await {
            tracing::error!(error = %e, "could not log a denial");
        }
    }

    /// One event for `count` denials of `caller` that were not logged one by one.
    pub(crate) async fn log_denial_summary(&self, caller: &SpiffeId, count: u64, now: u64) {
        let event = events::deny_summary(now, caller, count);
        if let Err(e) = self.committer.submit(WriteOp::Append { event }).await {
            tracing::error!(error = %e, "could not log a denial summary");
        }
    }
}
