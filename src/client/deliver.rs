//! Delivering for a grant, the one way every agent surface does it (`send`, `agent run`, the MCP
//! server's `retrieve`): the plaintext is read and sealed once, the envelope is submitted, and
//! when the answer is lost (the relay did not answer, or said to try again) the same sealed
//! envelope is submitted again on a new connection. The relay keeps one submission per grant and
//! answers a repeated statement with the original envelope id, so a retry never stores a second
//! copy. What differs between the surfaces is a parameter: where the plaintext comes from
//! ([`Plaintext`]), whether the grant is already in hand ([`ForGrant`]), whether the first try
//! uses a connection the caller holds, and how long a lost answer is retried ([`Retry`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connect::Connectors;
use crate::core::identity::Identity;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{hex, EnvelopeId, GrantId};

use super::agent::{seal_for, AgentClient, Sealed};
use super::verify::{OpenGrant, SerialPins};

/// The wait before the first retry; each next wait is twice the last, up to [`MAX_WAIT`].
pub const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait between two tries.
pub const MAX_WAIT: Duration = Duration::from_secs(4);

/// The agent that delivers, and what a new connection needs.
pub struct Courier {
    pub identity: Arc<Identity>,
    /// The relay's address (HOST:PORT).
    pub relay: String,
    /// The highest directory serial seen per user, shared by every connection (and kept across
    /// runs when made with [`SerialPins::for_identity`]).
    pub pins: Arc<SerialPins>,
    /// Where the sealed envelope waits between tries (ciphertext only).
    pub scratch: PathBuf,
}

impl Courier {
    /// A new connection to the relay, with the courier's pins.
    pub async fn connect(&self) -> Result<AgentClient<'_>> {
        Ok(AgentClient::connect(&self.identity, &self.relay)
            .await?
            .with_pins(self.pins.clone()))
    }
}

/// Which grant the envelope answers.
pub enum ForGrant<'a> {
    /// One the caller already listed (and so verified).
    Listed(&'a OpenGrant),
    /// Looked up by id among the agent's open grants, on the first connection that answers.
    Id(GrantId),
}

/// Where the plaintext comes from. It is read once, whatever becomes of the submission.
pub enum Plaintext<'a> {
    /// A reader (a file, stdin, a command's saved output), sealed on the calling task.
    Reader(&'a mut (dyn Read + Send)),
    /// The connector that serves the grant's resource, read and sealed as it streams on a
    /// blocking thread; nothing is sent unless the whole source was read and (for a command)
    /// it exited 0.
    Connector(Arc<Connectors>),
}

/// How long a lost answer is retried. Only [`ErrorKind::Unavailable`] failures of connecting,
/// looking the grant up or submitting are retried; sealing never is (the plaintext is gone).
/// Waits start at [`FIRST_WAIT`] and double up to [`MAX_WAIT`].
#[derive(Clone, Copy)]
pub struct Retry {
    /// Tries at most (1: no retry).
    pub attempts: u32,
    /// No retry whose wait would end at or after this.
    pub until: Option<Instant>,
    /// Told of each retry (the error and the wait), before the wait.
    pub on_retry: Option<fn(&Error, Duration)>,
}

impl Retry {
    /// One try: a lost answer is the caller's to handle (`agent run` tries again next poll).
    pub fn once() -> Retry {
        Retry::times(1)
    }

    /// Up to `attempts` tries, silently (the MCP server).
    pub fn times(attempts: u32) -> Retry {
        Retry {
            attempts,
            until: None,
            on_retry: None,
        }
    }

    /// As many tries as fit before `deadline`, each retry told to `on_retry` (`send`).
    pub fn until(deadline: Instant, on_retry: fn(&Error, Duration)) -> Retry {
        Retry {
            attempts: u32::MAX,
            until: Some(deadline),
            on_retry: Some(on_retry),
        }
    }

    /// Whether another try may follow `tried` tries after a wait of `wait`.
    fn allows(&self, tried: u32, wait: Duration) -> bool {
        tried < self.attempts && self.until.is_none_or(|d| Instant::now() + wait < d)
    }
}

/// What `deliver` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub envelope_id: EnvelopeId,
    pub grant_id: GrantId,
    /// Ciphertext bytes stored at the relay.
    pub length: u64,
    /// The ciphertext's digest: the root of its piece tree (never of the plaintext).
    pub ciphertext_root: [u8; 32],
}

/// The grant's facts, as a command gets them in its environment (a connector's command, and
/// `agent run`'s).
pub fn command_env(grant: &OpenGrant) -> [(&'static str, String); 4] {
    [
        ("SEALRELAY_RESOURCE", grant.grant.resource.clone()),
        ("SEALRELAY_PURPOSE", grant.grant.purpose.clone()),
        ("SEALRELAY_GRANT", hex(grant.grant.grant_id)),
        ("SEALRELAY_USER", grant.grant.user.to_string()),
    ]
}

/// Seals `plaintext` once for `grant` and submits it; a lost answer is submitted again, sealed
/// as it was, as `retry` allows. The first try goes over `first` when the caller holds a
/// connection (which stays the caller's to close), every other try over a new connection,
/// closed once it answered.
pub async fn deliver(
    courier: &Courier,
    mut first: Option<&AgentClient<'_>>,
    grant: ForGrant<'_>,
    plaintext: Plaintext<'_>,
    retry: Retry,
) -> Result<Delivered> {
    let mut plaintext = Some(plaintext);
    let mut sealed: Option<Sealed> = None;
    let mut wait = FIRST_WAIT;
    let mut tried = 0u32;
    loop {
        tried += 1;
        let result = match first.take() {
            Some(agent) => {
                seal_and_submit(courier, agent, &grant, &mut plaintext, &mut sealed).await
            }
            None => match courier.connect().await {
                Ok(agent) => {
                    let result =
                        seal_and_submit(courier, &agent, &grant, &mut plaintext, &mut sealed).await;
                    if result.is_ok() {
                        agent.conn.close().await;
                    }
                    result
                }
                Err(e) => Err(Failed::Lost(e)),
            },
        };
        match result {
            Ok(delivered) => return Ok(delivered),
            Err(Failed::Lost(e))
                if e.kind() == ErrorKind::Unavailable && retry.allows(tried, wait) =>
            {
                if let Some(tell) = retry.on_retry {
                    tell(&e, wait);
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
            }
            Err(Failed::Lost(e) | Failed::Final(e)) => return Err(e),
        }
    }
}

/// How one try failed.
enum Failed {
    /// Connecting, looking the grant up or submitting: retried when the relay did not answer.
    Lost(Error),
    /// Sealing: never retried (the plaintext was read once).
    Final(Error),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Failed {
        Failed::Lost(e)
    }
}

/// One try over `agent`: on the first, the grant is found and the plaintext sealed.
async fn seal_and_submit(
    courier: &Courier,
    agent: &AgentClient<'_>,
    grant: &ForGrant<'_>,
    plaintext: &mut Option<Plaintext<'_>>,
    sealed: &mut Option<Sealed>,
) -> std::result::Result<Delivered, Failed> {
    let sealed = match sealed {
        Some(s) => s,
        None => {
            let found;
            let open: &OpenGrant = match grant {
                ForGrant::Listed(g) => g,
                ForGrant::Id(id) => {
                    // The agent's own verdict on that grant: a grant listed but refused (a key not
                    // in the directory log, a reset still waiting) says why, in one line.
                    let listed = agent.judged_grants().await?;
                    let mine = listed.into_iter().find(|(w, verdict)| match verdict {
                        Ok(g) => g.grant.grant_id == *id,
                        Err(_) => crate::core::grant::Grant::decode(&w.statement)
                            .is_ok_and(|g| g.grant_id == *id),
                    });
                    found = match mine {
                        Some((_, Ok(g))) => g,
                        Some((_, Err(e))) => return Err(Failed::Final(e)),
                        None => {
                            return Err(Failed::Final(Error::not_found("no open grant with that id for this agent (used, expired, or addressed to another agent)")))
                        }
                    };
                    &found
                }
            };
            let source = plaintext
                .take()
                .ok_or_else(|| Failed::Final(Error::internal("the plaintext was already read")))?;
            let made = seal(courier, open, source).await.map_err(Failed::Final)?;
            sealed.insert(made)
        }
    };
    let envelope_id = agent.submit_sealed(sealed).await?;
    Ok(Delivered {
        envelope_id,
        grant_id: sealed.grant_id,
        length: sealed.length,
        ciphertext_root: sealed.ciphertext_root,
    })
}

/// Seals the plaintext for `grant` into a scratch file in `courier.scratch`.
async fn seal(courier: &Courier, grant: &OpenGrant, plaintext: Plaintext<'_>) -> Result<Sealed> {
    match plaintext {
        Plaintext::Reader(input) => seal_for(&courier.identity, grant, input, &courier.scratch),
        Plaintext::Connector(connectors) => {
            let identity = courier.identity.clone();
            let scratch = courier.scratch.clone();
            let grant = grant.clone();
            tokio::task::spawn_blocking(move || {
                seal_from_source(&identity, &connectors, &grant, &scratch)
            })
            .await
            .map_err(|_| Error::internal("the sealing task failed"))?
        }
    }
}

/// Opens the connector that serves the grant's resource and seals what it reads. Blocking.
fn seal_from_source(
    identity: &Identity,
    connectors: &Connectors,
    grant: &OpenGrant,
    scratch: &Path,
) -> Result<Sealed> {
    let connector = connectors.for_resource(&grant.grant.resource)?;
    let env = command_env(grant);
    let mut source = connector.open(&grant.grant.resource, grant.grant.max_bytes, &env)?;
    match seal_for(identity, grant, &mut source, scratch) {
        // The source's own reason (a limit, a timeout, a status) over the sealer's.
        Err(e) => Err(source.failure().cloned().unwrap_or(e)),
        Ok(sealed) => {
            source.finish()?;
            Ok(sealed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_and_tries_are_bounded_as_each_caller_asks() {
        assert!(!Retry::once().allows(1, FIRST_WAIT));
        let mcp = Retry::times(3);
        assert!(mcp.allows(1, FIRST_WAIT) && mcp.allows(2, FIRST_WAIT * 2));
        assert!(!mcp.allows(3, FIRST_WAIT * 4));
        fn quiet(_: &Error, _: Duration) {}
        let past = Retry::until(Instant::now(), quiet);
        assert!(!past.allows(1, FIRST_WAIT));
        let later = Retry::until(Instant::now() + Duration::from_secs(60), quiet);
        assert!(later.allows(1_000, MAX_WAIT));
    }
}
