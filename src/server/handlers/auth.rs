//! Every request passes here first: the rate limit, then the caller's directory entry (checked
//! per request, so revocation and expiry take effect at once), then the policy. Each refusal is
//! logged as a `deny` event.

use crate::core::directory::EntryProblem;
use crate::core::policy::{Action, Authorizer, Context, Decision, Principal};
use crate::core::store::WriteOp;
use crate::core::wire::ErrorCode;
use crate::ids::PartyKind;
use crate::net::Peer;

use crate::server::services::effects::Cx;
use crate::server::services::events;
use crate::server::services::misbehaviour::Signal;
use crate::server::services::refusal::Refusal;
use crate::server::services::relay::Relay;

/// Who is calling: the party's current entry, or a previous one within the grace period after
/// its rotation (with that entry's serial).
pub(crate) enum Caller {
    Current(Principal),
    Superseded(Principal, u64),
}

/// What a previous identity may still do after its key was rotated: read its inbox and fetch,
/// open and file receipts for what was sealed to its key (and read public entries and
/// checkpoints). Nothing it could start anew (a grant, an approval, a submission).
const SUPERSEDED_MAY: [Action; 5] = [
    Action::Inbox,
    Action::Fetch,
    Action::Receipt,
    Action::GetEntry,
    Action::Checkpoint,
];

impl Relay {
    /// The caller's own directory entry: its current one, or, for a previous identity within
    /// the grace after a rotation, the superseded entry its certificate belongs to (its
    /// receipts are signed with that entry's key).
    pub(crate) fn caller_entry(
        &self,
        peer: &Peer,
        now: u64,
    ) -> Result<crate::core::directory::DirectoryEntry, Refusal> {
        let dir = self.directory.read().map_err(|_| Refusal::internal())?;
        if let Ok(e) = dir.active(&peer.id, now) {
            if e.tls_spki_sha256 == peer.spki_sha256 {
                return Ok(e.clone());
            }
        }
        dir.superseded(
            &peer.id,
            &peer.spki_sha256,
            now,
            self.config.rotation_grace_secs,
        )
        .cloned()
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::Unauthenticated,
                "the certificate's key is not the one in the directory entry",
            )
        })
    }

    /// Authenticates the caller and asks the policy about `action` in `ctx` (`ctx.now` is the
    /// request's time).
    pub(crate) async fn authorize(
        &self,
        cx: &Cx,
        peer: &Peer,
        action: Action,
        ctx: &Context,
    ) -> Result<Principal, Refusal> {
        self.authorize_counting(cx, peer, action, ctx, true).await
    }

    /// [`Relay::authorize`]; a policy denial counts against an agent only when `avoidable`
    /// (the agent could have known not to ask: docs/security.md, "who pays for a refusal").
    pub(crate) async fn authorize_counting(
        &self,
        cx: &Cx,
        peer: &Peer,
        action: Action,
        ctx: &Context,
        avoidable: bool,
    ) -> Result<Principal, Refusal> {
        self.decide(cx, peer, action, ctx, avoidable, true).await
    }

    /// The checks of [`Relay::authorize_relay`] again for what a subscription pushes: the
    /// caller's standing and the policy, as of now, but not the rate limit (the caller asked
    /// for nothing: the relay sends what happened).
    pub(crate) async fn authorize_pushed(
        &self,
        cx: &Cx,
        peer: &Peer,
        action: Action,
    ) -> Result<Principal, Refusal> {
        let ctx = Context {
            now: cx.now,
            ..Context::default()
        };
        // Not counted against an agent: it asked for nothing (the relay pushed).
        self.decide(cx, peer, action, &ctx, false, false).await
    }

    async fn decide(
        &self,
        cx: &Cx,
        peer: &Peer,
        action: Action,
        ctx: &Context,
        avoidable: bool,
        limited: bool,
    ) -> Result<Principal, Refusal> {
        let now = ctx.now;
        let within_limit = if limited {
            self.limiter.take(&peer.id.to_string())
        } else {
            Ok(())
        };
        if let Err(wait) = within_limit {
            self.signal(cx, &peer.id, Signal::RateLimited, None, now)
                .await;
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!("rate limited, retry after {} ms", wait.as_millis().max(1)),
            ));
        }
        let principal = match self.authenticate(peer, now) {
            Ok(Caller::Current(p)) => p,
            // A previous identity, within the grace after its rotation: it may read and finish
            // what was sealed to its key, nothing else.
            Ok(Caller::Superseded(p, serial)) if SUPERSEDED_MAY.contains(&action) => {
                let _ = serial;
                p
            }
            Ok(Caller::Superseded(_, serial)) => {
                let reason = "this identity's key was rotated: it may only list, fetch and file receipts for what was sealed to it, for a while; use the new identity";
                self.log_denial(peer, action, reason, now).await;
                return Err(Refusal::new(
                    ErrorCode::Unauthenticated,
                    format!("{reason} (this is serial {serial}, superseded)"),
                ));
            }
            Err(reason) => {
                self.log_denial(peer, action, &reason, now).await;
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
                if !principal.quarantined && avoidable {
                    self.signal(cx, &peer.id, Signal::Denial, None, now).await;
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
        cx: &Cx,
        peer: &Peer,
        action: Action,
    ) -> Result<Principal, Refusal> {
        self.authorize(
            cx,
            peer,
            action,
            &Context {
                now: cx.now,
                ..Context::default()
            },
        )
        .await
    }

    /// Right before a submission commits: the time now (a grant's expiry is judged when the
    /// body has arrived, not when the request started) and the caller checked again (a
    /// revocation or quarantine that came during a slow upload ends it).
    pub(crate) fn commit_time_check(&self, cx: &Cx, peer: &Peer) -> Result<u64, Refusal> {
        let now = cx.commit_time();
        let principal = match self
            .authenticate(peer, now)
            .map_err(|reason| Refusal::new(ErrorCode::Unauthenticated, reason))?
        {
            Caller::Current(p) => p,
            Caller::Superseded(..) => {
                return Err(Refusal::new(
                    ErrorCode::Unauthenticated,
                    "this identity's key was rotated during the upload; use the new identity",
                ))
            }
        };
        if principal.quarantined {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "this agent was quarantined during the upload; an admin must release it",
            ));
        }
        Ok(now)
    }

    /// The caller as a principal, or why it may not call at all.
    fn authenticate(&self, peer: &Peer, now: u64) -> Result<Caller, String> {
        match peer.id.kind() {
            // Admins too are directory entries, pinned to their TLS key and revocable: a
            // certificate from the CA alone is not enough.
            PartyKind::User | PartyKind::Agent | PartyKind::Admin | PartyKind::Source => {
                let dir = self
                    .directory
                    .read()
                    .map_err(|_| "internal error".to_owned())?;
                // A reset key within its waiting period may do nothing yet (docs/keys.md).
                if let Some(w) = dir.waiting_with_tls_key(&peer.id, &peer.spki_sha256, now) {
                    return Err(waiting_message(&w));
                }
                let principal = |entry: &crate::core::directory::DirectoryEntry| Principal {
                    id: peer.id.clone(),
                    attributes: (peer.id.kind() != PartyKind::Admin)
                        .then(|| entry.attributes.clone()),
                    quarantined: self.monitor.is_quarantined(&peer.id.to_string()),
                };
                match dir.active(&peer.id, now) {
                    Ok(entry) if entry.tls_spki_sha256 == peer.spki_sha256 => {
                        Ok(Caller::Current(principal(entry)))
                    }
                    Ok(_) => match dir.superseded(
                        &peer.id,
                        &peer.spki_sha256,
                        now,
                        self.config.rotation_grace_secs,
                    ) {
                        Some(old) => Ok(Caller::Superseded(principal(old), old.serial)),
                        None => Err("the certificate's key is not the one in the directory entry (superseded by a rotation, and past the grace period for the previous identity: use the new identity)".into()),
                    },
                    Err(EntryProblem::Revoked) => Err("this identity has been revoked".into()),
                    Err(EntryProblem::Expired) => Err("this identity's directory entry has expired".into()),
                    Err(EntryProblem::NotYetValid) => Err("this identity's directory entry is not valid yet".into()),
                    Err(EntryProblem::Waiting(until)) => Err(format!("this identity's key waits until {} before it is in force (a reset: docs/keys.md)", crate::clock::rfc3339(until))),
                    Err(EntryProblem::Unknown) => Err("this identity is not in the relay's directory (the admin pushes it: `sealrelay directory push`)".into()),
                }
            }
            _ => Err("this kind of identity may not call the relay".into()),
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
}

/// What a reset key within its waiting period is told (one line).
pub(crate) fn waiting_message(w: &crate::core::directory::WaitingKey) -> String {
    format!(
        "this key of {} was enrolled by {} as a reset (not signed by the previous key) and is not in force until {}: it can make no grants and nothing is sealed to it before then (docs/keys.md); if you did not ask for it, tell your security team",
        w.entry.id.short(),
        if w.entry.enrolled_by.is_empty() { "the authority" } else { &w.entry.enrolled_by },
        crate::clock::rfc3339(w.until)
    )
}
