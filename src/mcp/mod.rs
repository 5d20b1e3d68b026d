//! Blind retrieval: an agent driven by an LLM over the Model Context Protocol fetches data for a
//! grant through a connector that seals it to the requester at the source; the model only ever
//! holds a handle. [`BlindAgent`] is the logic (no MCP types), `server` the MCP tools on the
//! official Rust SDK (rmcp), `http` the Streamable HTTP listener behind a bearer token.
//!
//! Nothing this module returns or logs holds plaintext: results carry ids, the ciphertext's size
//! and digest (its piece tree's root), and statuses; errors are one fixed line from the connector, or a fixed sentence for the relay's refusal
//! (`Error::for_model`), never the relay's own words.

pub mod http;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::client::{
    deliver, AgentClient, Courier, ForGrant, OpenGrant, Plaintext, Retry, SerialPins,
};
use crate::clock;
use crate::connect::Connectors;
use crate::core::identity::Identity;
use crate::error::{Error, Result};
use crate::ids::{hex, parse_hex, GrantId};

/// How a handle is written: the grant it answers (a grant carries at most one envelope).
pub const HANDLE_PREFIX: &str = "sealrelay:grant/";

/// An open grant, as the model may see it (what was asked, by whom, why — no data).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RequestInfo {
    pub grant_id: String,
    pub resource: String,
    pub purpose: String,
    pub requester: String,
    pub expires: String,
    /// Whether a connector on this host serves the resource.
    pub connector: bool,
    /// The source that would seal it where the data lives (preferred over a connector), if
    /// one serves the resource. With neither, `retrieve` refuses it.
    pub source: Option<String>,
}

/// What `retrieve` did: the envelope went to the requester; the model gets ids and the
/// ciphertext's size and digest.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Retrieved {
    pub handle: String,
    /// The envelope, when this host sealed it (`None` while a source has it).
    pub envelope_id: Option<String>,
    /// Ciphertext bytes stored at the relay.
    pub bytes: Option<u64>,
    /// The ciphertext's digest: the root of its piece tree (not of the data).
    pub ciphertext_root: Option<String>,
    /// "submitted", or "queued at source" (then `source` names it).
    pub status: String,
    /// The source it was dispatched to.
    pub source: Option<String>,
}

/// Where a handle's envelope is.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Delivery {
    pub handle: String,
    /// open, queued at source, refused at source, submitted, delivered, undecryptable,
    /// expired or denied.
    pub status: String,
    pub envelope_id: Option<String>,
    /// The receipt's leaf index in the relay's transparency log, once the requester filed one.
    pub receipt_log_index: Option<u64>,
    /// The source the grant was dispatched to.
    pub source: Option<String>,
    /// The steps so far, e.g. ["queued at source hr", "sealed by source hr", "delivered"].
    pub steps: Vec<String>,
}

impl Delivery {
    /// What `delivery_status` answers for `grant_id`'s submission status.
    pub fn of(grant_id: GrantId, status: &crate::client::SubmissionStatus) -> Delivery {
        use crate::core::wire::SubmissionState as S;
        let mut steps = Vec::new();
        let sealed_by = match &status.source {
            Some(s) => {
                steps.push(format!("queued at source {s}"));
                format!("sealed by source {s}")
            }
            None => "sealed by this agent".to_owned(),
        };
        match status.state {
            S::Submitted | S::Delivered | S::Undecryptable => steps.push(sealed_by),
            // The source's signed reason, one of a fixed list (never the data's own words).
            S::RefusedAtSource => steps.push(match &status.refusal {
                Some(r) => format!("refused at source: {}", r.reason.sentence()),
                None => "refused at source".to_owned(),
            }),
            _ => {}
        }
        match status.state {
            S::Delivered => steps.push("delivered".to_owned()),
            S::Undecryptable => steps.push("undecryptable".to_owned()),
            S::Expired => steps.push("expired".to_owned()),
            S::Denied => steps.push("denied".to_owned()),
            _ => {}
        }
        Delivery {
            handle: handle_for(grant_id),
            status: status.state.as_str().to_owned(),
            envelope_id: status.envelope_id.map(hex),
            receipt_log_index: status.receipt_index,
            source: status.source.clone(),
            steps,
        }
    }
}

/// The agent side of blind retrieval: its identity, its relay, its connectors.
pub struct BlindAgent {
    /// The identity, the relay, the scratch directory, and the highest directory serial seen
    /// of each user, for the life of the process (and across runs with
    /// [`BlindAgent::with_pins`]): threat 48's first line of defence.
    courier: Courier,
    connectors: Arc<Connectors>,
}

/// Submissions tried at most for one `retrieve` (the first and two after a lost answer).
const RETRIEVE_ATTEMPTS: u32 = 3;

/// The handle of a grant's envelope.
pub fn handle_for(grant_id: GrantId) -> String {
    format!("{HANDLE_PREFIX}{}", hex(grant_id))
}

/// A handle (or a bare grant id) back to the grant id.
pub fn parse_handle(handle: &str) -> Result<GrantId> {
    let id = handle.strip_prefix(HANDLE_PREFIX).unwrap_or(handle);
    parse_hex(id).map(GrantId).map_err(|_| {
        Error::bad_input(
            "not a handle: pass the handle retrieve returned (sealrelay:grant/<32 hex digits>)",
        )
    })
}

fn parse_grant_id(s: &str) -> Result<GrantId> {
    parse_hex(s)
        .map(GrantId)
        .map_err(|_| Error::bad_input("grant_id must be the 32 hex digits list_requests gave"))
}

impl BlindAgent {
    pub fn new(
        identity: Arc<Identity>,
        relay: String,
        connectors: Connectors,
        scratch: PathBuf,
    ) -> BlindAgent {
        BlindAgent {
            courier: Courier {
                identity,
                relay,
                pins: Arc::new(SerialPins::in_memory()),
                scratch,
            },
            connectors: Arc::new(connectors),
        }
    }

    /// Keeps `pins` (for example [`SerialPins::for_identity`]) instead of pins of its own.
    pub fn with_pins(mut self, pins: Arc<SerialPins>) -> BlindAgent {
        self.courier.pins = pins;
        self
    }

    async fn connect(&self) -> Result<AgentClient<'_>> {
        self.courier.connect().await
    }

    /// The agent's open grants (each verified against the pinned authority by the client).
    pub async fn list_requests(&self) -> Result<Vec<RequestInfo>> {
        let agent = self.connect().await?;
        let grants = agent.grants().await;
        agent.conn.close().await;
        Ok(grants?
            .into_iter()
            .map(|g| RequestInfo {
                grant_id: hex(g.grant.grant_id),
                connector: self.connectors.for_resource(&g.grant.resource).is_ok(),
                source: g.sources.first().cloned(),
                resource: g.grant.resource,
                purpose: g.grant.purpose,
                requester: g.grant.user.to_string(),
                expires: clock::rfc3339(g.grant.expires),
            })
            .collect())
    }

    /// Fetches the grant's resource through its connector, seals it to the requester as it
    /// streams, and submits it. Nothing is sent unless the whole source was read and (for a
    /// command) exited 0.
    pub async fn retrieve(&self, grant_id: &str) -> Result<Retrieved> {
        let grant_id = parse_grant_id(grant_id)?;
        let agent = self.connect().await?;
        let grant = match verdict_on(agent.judged_grants().await, grant_id) {
            Ok(g) => g,
            Err(e) => {
                agent.conn.close().await;
                return Err(e);
            }
        };
        // Sealed where the data lives when a source serves it: this host reads nothing.
        if let Some(source) = grant.sources.first() {
            let id = agent.dispatch(&grant, source).await;
            agent.conn.close().await;
            let id = id?;
            tracing::info!(grant = %hex(grant_id), source = %id.name(), "dispatched to a source");
            return Ok(Retrieved {
                handle: handle_for(grant_id),
                envelope_id: None,
                bytes: None,
                ciphertext_root: None,
                status: "queued at source".to_owned(),
                source: Some(id.name().to_owned()),
            });
        }
        // Refused before anything is read when no connector serves it.
        if let Err(e) = self.connectors.for_resource(&grant.grant.resource) {
            agent.conn.close().await;
            return Err(e);
        }
        // Sealed once at the source; a lost answer is safe to repeat: the relay stores one
        // submission per grant and answers the same statement again with the same envelope id.
        let delivered = deliver(
            &self.courier,
            Some(&agent),
            ForGrant::Listed(&grant),
            Plaintext::Connector(self.connectors.clone()),
            Retry::times(RETRIEVE_ATTEMPTS),
        )
        .await?;
        agent.conn.close().await;
        tracing::info!(
            grant = %hex(grant_id),
            envelope = %hex(delivered.envelope_id),
            bytes = delivered.length,
            "retrieved, sealed to the requester and submitted"
        );
        Ok(Retrieved {
            handle: handle_for(grant_id),
            envelope_id: Some(hex(delivered.envelope_id)),
            bytes: Some(delivered.length),
            ciphertext_root: Some(hex(delivered.ciphertext_root)),
            status: "submitted".to_owned(),
            source: None,
        })
    }

    /// Where a handle's envelope is, as the relay tells this agent.
    pub async fn delivery_status(&self, handle: &str) -> Result<Delivery> {
        let grant_id = parse_handle(handle)?;
        let agent = self.connect().await?;
        let status = agent.submission_status(grant_id).await;
        agent.conn.close().await;
        Ok(Delivery::of(grant_id, &status?))
    }
}

/// The agent's verdict on grant `id` among those the relay listed: the grant, or why it may not
/// be acted on (a key left out of the directory log, a reset still waiting), not "never made".
fn verdict_on(
    judged: Result<Vec<(crate::core::wire::WireSigned, Result<OpenGrant>)>>,
    id: GrantId,
) -> Result<OpenGrant> {
    let mut refused = None;
    for (w, verdict) in judged? {
        if !crate::core::grant::Grant::decode(&w.statement).is_ok_and(|g| g.grant_id == id) {
            continue;
        }
        match verdict {
            Ok(g) => return Ok(g),
            Err(e) => refused = refused.or(Some(e)),
        }
    }
    Err(match refused {
        Some(e) => e.context("this grant may not be acted on; nothing was read or sent"),
        None => Error::not_found(
            "no open grant with that id for this agent (used, expired, or never made): call list_requests",
        ),
    })
}
