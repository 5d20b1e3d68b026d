//! The data owner's sealing service (`sealrelay source serve`, docs/sources.md): it polls the
//! relay for the grants agents dispatched to it, checks each itself ([`SourceClient`]), asks
//! the data owner's Cedar policy ([`SourcePolicy`]), reads the data through its own connectors,
//! seals it to the user and submits it signed as the source, or refuses with a signed reason.
//! The agent's host never holds the data or the connectors' credentials.
//!
//! Every assignment is filled at most once: the relay consumes the grant and marks the
//! assignment filled in one transaction, so a source that crashes mid-way and starts again
//! finds only what was not filled yet.

pub mod metrics;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{command_env, Assignment, OpenGrant, SerialPins, SourceClient};
use crate::clock;
use crate::connect::Connectors;
use crate::core::dispatch::RefusalReason;
use crate::core::identity::Identity;
use crate::core::source_policy::SourcePolicy;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{hex, GrantId};

pub use metrics::SourceMetrics;

/// Tries to read the data of one assignment before the source refuses it as unreadable.
pub const MAX_READ_TRIES: u32 = 3;

/// A source: its identity, relay, connectors and policy.
pub struct SourceService {
    pub identity: Arc<Identity>,
    pub relay: String,
    pub connectors: Arc<Connectors>,
    pub policy: Arc<SourcePolicy>,
    /// Where sealed envelopes wait before they are sent (ciphertext only).
    pub scratch: PathBuf,
    pub pins: Arc<SerialPins>,
    pub metrics: Arc<SourceMetrics>,
    /// How often the relay is asked for new assignments.
    pub poll: Duration,
    /// Failed reads per grant (this process's; a restart starts again, bounded by the grant's
    /// expiry).
    failures: Mutex<HashMap<GrantId, u32>>,
    /// Grants whose envelope the relay refused (a quota, a policy change): how often, and not
    /// tried again before when. The data is not read again at every pass.
    held: Mutex<HashMap<GrantId, (u32, std::time::Instant)>>,
}

/// The longest a grant whose envelope the relay refused waits before it is tried again.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// What one pass over the assignments did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub listed: usize,
    pub filled: usize,
    pub refused: usize,
    pub failed: usize,
}

impl SourceService {
    pub fn new(
        identity: Arc<Identity>,
        relay: String,
        connectors: Connectors,
        policy: SourcePolicy,
        scratch: PathBuf,
    ) -> SourceService {
        SourceService {
            identity,
            relay,
            connectors: Arc::new(connectors),
            policy: Arc::new(policy),
            scratch,
            pins: Arc::new(SerialPins::in_memory()),
            metrics: Arc::new(SourceMetrics::new()),
            poll: Duration::from_millis(500),
            failures: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Serves until the process is stopped: a connection that fails is made again with backoff.
    pub async fn run(&self) -> Result<()> {
        let mut wait = crate::client::FIRST_WAIT;
        loop {
            match SourceClient::connect(&self.identity, &self.relay).await {
                Ok(client) => {
                    let client = client.with_pins(self.pins.clone());
                    wait = crate::client::FIRST_WAIT;
                    loop {
                        match self.round(&client).await {
                            Ok(_) => tokio::time::sleep(self.poll).await,
                            Err(e) if e.kind() == ErrorKind::Unavailable => {
                                tracing::warn!(error = %e, "lost the relay; connecting again");
                                break;
                            }
                            // A listing that cannot be trusted (a directory log that does not
                            // extend what this source saw) stops the source: an operator must
                            // look.
                            Err(e) if e.kind() == ErrorKind::Verification => return Err(e),
                            Err(e) => {
                                tracing::warn!(error = %e, "a pass over the assignments failed");
                                tokio::time::sleep(self.poll).await;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot reach the relay; trying again"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(crate::client::MAX_WAIT);
        }
    }

    /// One pass: every assignment listed is checked, then filled or refused (or left for the
    /// next pass after a failed read).
    pub async fn round(&self, client: &SourceClient<'_>) -> Result<Round> {
        let listed = client.assignments().await?;
        let now = clock::now();
        self.metrics.queued(
            listed.len(),
            listed
                .iter()
                .filter_map(|l| l.verdict.as_ref().ok().map(|a| a.dispatched_at))
                .min()
                .map(|t| now.saturating_sub(t)),
        );
        let mut round = Round {
            listed: listed.len(),
            ..Round::default()
        };
        for l in listed {
            let grant_id = l.grant_id;
            let outcome = match l.verdict {
                Err(e) => {
                    // Nothing is read for it, and nothing is signed about it: the source cannot
                    // tell what it is. It stays queued until its grant expires (or the relay
                    // serves it as it was made).
                    tracing::warn!(grant = %hex(grant_id), error = %e, "an assignment does not verify: nothing read, nothing sent");
                    self.metrics.failure();
                    Ok(Outcome::Later)
                }
                Ok(_) if self.is_held(&grant_id) => Ok(Outcome::Later),
                Ok(a) => self.serve_one(client, &a).await,
            };
            match outcome {
                Ok(Outcome::Filled) => round.filled += 1,
                Ok(Outcome::Refused) => round.refused += 1,
                Ok(Outcome::Later) => round.failed += 1,
                // The relay gone (or closing the connection) ends the pass; its refusal of one
                // request for now (a refusal sent back) holds back that assignment only.
                Err(e) if e.kind() == ErrorKind::Unavailable && !e.refused_this_request() => {
                    return Err(e)
                }
                Err(e) => {
                    round.failed += 1;
                    tracing::warn!(grant = %hex(grant_id), error = %e, "an assignment failed");
                }
            }
        }
        Ok(round)
    }

    async fn serve_one(&self, client: &SourceClient<'_>, a: &Assignment) -> Result<Outcome> {
        let g = &a.grant.grant;
        let id = g.grant_id;
        let now = clock::now();
        if let Err(why) = self
            .policy
            .allows(g, &a.grant.user_entry, &a.agent_entry, now)
        {
            // The policy's ids stay here, in the source's own log: the agent is told the
            // fixed sentence only.
            tracing::info!(grant = %hex(id), reason = %why, "refused by the data owner's policy");
            self.metrics.refusal();
            client
                .refuse(id, &g.user, &g.agent, RefusalReason::Policy)
                .await?;
            return Ok(Outcome::Refused);
        }
        if self.connectors.for_resource(&g.resource).is_err() {
            tracing::warn!(grant = %hex(id), "no connector serves the resource: refused");
            self.metrics.refusal();
            client
                .refuse(id, &g.user, &g.agent, RefusalReason::NotServed)
                .await?;
            return Ok(Outcome::Refused);
        }
        let sealed = {
            let identity = self.identity.clone();
            let connectors = self.connectors.clone();
            let scratch = self.scratch.clone();
            let a = a.clone();
            tokio::task::spawn_blocking(move || {
                let connector = connectors.for_resource(&a.grant.grant.resource)?;
                let env = command_env(&a.grant);
                let mut input =
                    connector.open(&a.grant.grant.resource, a.grant.grant.max_bytes, &env)?;
                match SourceClient::seal(&identity, &a, &mut input, &scratch) {
                    Err(e) => Err(input.failure().cloned().unwrap_or(e)),
                    Ok(sealed) => input.finish().map(|()| sealed),
                }
            })
            .await
            .map_err(|_| Error::internal("the sealing task failed"))?
        };
        let mut sealed = match sealed {
            Ok(s) => s,
            Err(e) => return self.read_failed(client, &a.grant, e).await,
        };
        match client.submit(&mut sealed).await {
            Ok(envelope) => {
                self.metrics.filled();
                self.forget(&id);
                tracing::info!(grant = %hex(id), envelope = %hex(envelope), bytes = sealed.length, "sealed at the data and submitted");
                Ok(Outcome::Filled)
            }
            // Filled already (an answer lost before this source stopped): nothing twice.
            Err(e) if e.kind() == ErrorKind::Conflict => {
                self.forget(&id);
                Ok(Outcome::Filled)
            }
            // The relay gone: the pass ends, and the source connects again.
            Err(e) if e.kind() == ErrorKind::Unavailable && !e.refused_this_request() => Err(e),
            // Refused by the relay (a quota, the agent quarantined since, a policy change, or
            // "unavailable, try again" for this envelope: its free-space reserve, a busy
            // database): this grant is tried again later, each time later, without reading the
            // data at every pass, and the others are served meanwhile.
            Err(e) => {
                self.metrics.failure();
                let wait = self.hold(id);
                tracing::warn!(grant = %hex(id), error = %e, wait_secs = wait.as_secs(), "the relay refused the envelope; trying again later");
                Ok(Outcome::Later)
            }
        }
    }

    /// A read that failed: tried again next pass, refused as unreadable after
    /// [`MAX_READ_TRIES`].
    async fn read_failed(
        &self,
        client: &SourceClient<'_>,
        grant: &OpenGrant,
        e: Error,
    ) -> Result<Outcome> {
        self.metrics.failure();
        let id = grant.grant.grant_id;
        // A backend down or slow for now (a timeout, a host not found, a connection that
        // failed) is not the data's fault: not counted toward refusing it as unreadable, tried
        // again later, each time later (until the grant expires).
        if e.kind() == ErrorKind::Unavailable {
            let wait = self.hold(id);
            tracing::warn!(grant = %hex(id), error = %e, wait_secs = wait.as_secs(), "could not read the data for now; trying again later");
            return Ok(Outcome::Later);
        }
        let tries = {
            let mut f = self
                .failures
                .lock()
                .map_err(|_| Error::internal("failure counts poisoned"))?;
            let n = f.entry(id).or_insert(0);
            *n += 1;
            *n
        };
        tracing::warn!(grant = %hex(id), error = %e, tries, "could not read the data");
        if tries < MAX_READ_TRIES {
            return Ok(Outcome::Later);
        }
        self.forget(&id);
        self.metrics.refusal();
        client
            .refuse(
                id,
                &grant.grant.user,
                &grant.grant.agent,
                RefusalReason::Unreadable,
            )
            .await?;
        Ok(Outcome::Refused)
    }

    fn forget(&self, id: &GrantId) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(id);
        }
        if let Ok(mut h) = self.held.lock() {
            h.remove(id);
        }
    }

    /// Holds `id` back: twice as long as the last time, from one poll interval to
    /// [`MAX_HOLD`]. Returns the wait.
    fn hold(&self, id: GrantId) -> Duration {
        let Ok(mut h) = self.held.lock() else {
            return self.poll;
        };
        let tries = h.get(&id).map_or(0, |(n, _)| *n) + 1;
        let wait = self.poll.saturating_mul(1 << tries.min(16)).min(MAX_HOLD);
        h.insert(id, (tries, std::time::Instant::now() + wait));
        wait
    }

    fn is_held(&self, id: &GrantId) -> bool {
        self.held.lock().is_ok_and(|h| {
            h.get(id)
                .is_some_and(|(_, until)| std::time::Instant::now() < *until)
        })
    }
}

enum Outcome {
    Filled,
    Refused,
    Later,
}

#[cfg(test)]
mod tests {
    /// A refusal the relay sent back for one request is told apart from the relay closing the
    /// whole connection (busy, shutting down): `source serve` holds back one assignment for the
    /// first and ends its pass for the second (review of this session's diff).
    #[test]
    fn a_refusal_of_one_request_is_not_a_closed_connection() {
        let refused =
            crate::client::refused(crate::core::wire::ErrorCode::Unavailable, "storage full");
        assert!(refused.refused_this_request());
        for code in [
            crate::core::wire::CloseCode::Busy,
            crate::core::wire::CloseCode::ShuttingDown,
        ] {
            let closed = crate::client::connection_error(
                &quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                    error_code: code.code().into(),
                    reason: bytes::Bytes::new(),
                }),
            );
            assert_eq!(closed.kind(), crate::ErrorKind::Unavailable, "{closed}");
            assert!(
                closed.is_relay_answer() && !closed.refused_this_request(),
                "{closed}"
            );
        }
    }
}
