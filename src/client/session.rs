//! One party's session with the relay, as the language bindings use it (`bindings/`): the
//! identity file loaded and checked (kind, enrolment, expiry), its pins and checkpoints kept
//! beside it as the CLI keeps them, and the relay's address. Each operation connects, runs the
//! checks the CLI runs (directory entries and their proofs, statements, receipts, checkpoints,
//! key alerts), and closes; nothing here is re-implemented in another language.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock;
use crate::core::identity::Identity;
use crate::core::receipt_file::{ReceiptFile, ReceiptVerifier, Verified};
use crate::core::tlog::cosignature::WitnessPolicy;
use crate::error::{Error, Result};
use crate::ids::{EnvelopeId, GrantId, PartyKind};
use crate::local::checkpoint_state::CheckpointState;
use crate::local::fs::read_capped;
use crate::local::{identity_file, trust_root};

use super::keywatch::{self, LogSource};
use super::{
    authority, deliver, AgentClient, Courier, Delivered, Destination, EnvelopeHeader, ForGrant,
    GrantRequest, OpenGrant, Plaintext, Retry, Saved, SerialPins, SubmissionStatus, UserClient,
};

/// The relay a client talks to when neither the caller nor the identity names one.
pub const DEFAULT_RELAY: &str = "127.0.0.1:4433";

/// The longest receipt file read.
const MAX_RECEIPT_FILE: usize = 1 << 20;

fn address(relay: Option<&str>, identity: &Identity) -> String {
    relay
        .map(str::to_owned)
        .or_else(|| identity.relay.clone())
        .unwrap_or_else(|| DEFAULT_RELAY.to_owned())
}

/// An agent: lists its grants, delivers, asks what became of a delivery.
pub struct AgentSession {
    identity: Arc<Identity>,
    relay: String,
    pins: Arc<SerialPins>,
    scratch: PathBuf,
}

impl AgentSession {
    /// The agent of the identity file at `path`, talking to `relay` (else the identity's).
    pub fn open(path: &Path, relay: Option<&str>) -> Result<Self> {
        let identity = identity_file::load_enrolled(path, PartyKind::Agent, clock::now())?;
        let pins = Arc::new(SerialPins::for_identity(path, &authority(&identity)?)?);
        Ok(AgentSession {
            relay: address(relay, &identity),
            identity: Arc::new(identity),
            pins,
            scratch: std::env::temp_dir(),
        })
    }

    /// The open grants addressed to this agent, each verified (the user's signature and logged
    /// directory entry).
    pub async fn grants(&self) -> Result<Vec<OpenGrant>> {
        let agent = AgentClient::connect(&self.identity, &self.relay)
            .await?
            .with_pins(self.pins.clone());
        let grants = agent.grants().await;
        agent.conn.close().await;
        grants
    }

    /// Seals what `data` yields to the grant's user and submits it: streamed, in bounded memory;
    /// a lost answer is retried (`retry`) without sealing again.
    pub async fn deliver(
        &self,
        grant: GrantId,
        data: &mut (dyn Read + Send),
        retry: Retry,
    ) -> Result<Delivered> {
        let courier = Courier {
            identity: self.identity.clone(),
            relay: self.relay.clone(),
            pins: self.pins.clone(),
            scratch: self.scratch.clone(),
        };
        deliver(
            &courier,
            None,
            ForGrant::Id(grant),
            Plaintext::Reader(data),
            retry,
        )
        .await
    }

    /// What became of what was submitted for `grant`.
    pub async fn status(&self, grant: GrantId) -> Result<SubmissionStatus> {
        let agent = AgentClient::connect(&self.identity, &self.relay)
            .await?
            .with_pins(self.pins.clone());
        let status = agent.submission_status(grant).await;
        agent.conn.close().await;
        status
    }
}

/// A person: asks, reads their inbox, fetches (the receipt filed and saved), approves.
pub struct UserSession {
    path: PathBuf,
    identity: Identity,
    relay: String,
}

/// An inbox, with the key alerts open for the user (docs/keys.md): statements under their name
/// that their keys did not make.
pub struct Inbox {
    pub envelopes: Vec<EnvelopeHeader>,
    pub key_alerts: Vec<String>,
}

/// A fetch, with the key alerts open for the user.
pub struct FetchedTo {
    pub saved: Saved,
    pub key_alerts: Vec<String>,
}

impl UserSession {
    /// The user of the identity file at `path`, talking to `relay` (else the identity's).
    pub fn open(path: &Path, relay: Option<&str>) -> Result<Self> {
        let identity = identity_file::load_enrolled(path, PartyKind::User, clock::now())?;
        Ok(UserSession {
            relay: address(relay, &identity),
            path: path.to_owned(),
            identity,
        })
    }

    async fn connect(&self) -> Result<UserClient<'_>> {
        let mut user = UserClient::connect(&self.identity, &self.relay).await?;
        if let Some(log) = self.identity.log_key.clone() {
            user = user.remember_checkpoints(CheckpointState::for_identity(&self.path, log));
        }
        Ok(user)
    }

    async fn alerts(&self, user: &UserClient<'_>) -> Result<Vec<String>> {
        let report = keywatch::watch(
            &self.identity,
            &self.path,
            LogSource::Relay(&user.conn),
            false,
        )
        .await?;
        Ok(report.open_alerts.iter().map(keywatch::describe).collect())
    }

    /// Asks for a grant; returns its id.
    pub async fn grant(&self, req: &GrantRequest) -> Result<GrantId> {
        let user = self.connect().await?;
        let id = user.grant(req).await;
        user.conn.close().await;
        id
    }

    /// The envelopes waiting, each with who sent what, for what and why, and whether it
    /// verifies.
    pub async fn inbox(&self) -> Result<Inbox> {
        let user = self.connect().await?;
        let result = async {
            let key_alerts = self.alerts(&user).await?;
            Ok(Inbox {
                envelopes: user.inbox_headers().await?,
                key_alerts,
            })
        }
        .await;
        user.conn.close().await;
        result
    }

    /// Fetches `envelope` into `out` (kept only if it opened; the receipt beside it as
    /// `OUT.receipt`), filing the receipt: delivered, or undecryptable if it did not verify.
    pub async fn fetch(&self, envelope: EnvelopeId, out: &Path) -> Result<FetchedTo> {
        let user = self.connect().await?;
        let result = async {
            let key_alerts = self.alerts(&user).await?;
            let saved = user
                .fetch_to(envelope, Destination::Path(out), &std::env::temp_dir())
                .await?;
            Ok(FetchedTo { saved, key_alerts })
        }
        .await;
        user.conn.close().await;
        result
    }

    /// Grants waiting for this user's approval.
    pub async fn approvals(&self) -> Result<Vec<OpenGrant>> {
        let user = self.connect().await?;
        let list = user.pending_approvals().await;
        user.conn.close().await;
        list
    }

    /// Approves another user's grant.
    pub async fn approve(&self, grant: GrantId) -> Result<OpenGrant> {
        let user = self.connect().await?;
        let g = user.approve(grant).await;
        user.conn.close().await;
        g
    }

    /// Denies another user's grant, saying why.
    pub async fn deny(&self, grant: GrantId, reason: &str) -> Result<OpenGrant> {
        let user = self.connect().await?;
        let g = user.deny(grant, reason).await;
        user.conn.close().await;
        g
    }
}

/// Verifies a receipt file offline: the user's signature, their directory entry under
/// `authority`, the log entry's inclusion under a checkpoint signed by `log_key`, and, with
/// `witnesses` (verifier key files), cosignatures from `quorum` of them (default: all).
pub fn verify_receipt(
    receipt: &Path,
    authority: &Path,
    log_key: &Path,
    witnesses: &[PathBuf],
    quorum: Option<usize>,
) -> Result<Verified> {
    let authority = trust_root::read_verifier_key(authority)?;
    let log = trust_root::read_verifier_key(log_key)?;
    let policy = if witnesses.is_empty() {
        if quorum.is_some() {
            return Err(Error::bad_input("a quorum needs witnesses"));
        }
        None
    } else {
        let keys = witnesses
            .iter()
            .map(|p| crate::local::cosigner_key::read_cosigner_key(p))
            .collect::<Result<Vec<_>>>()?;
        Some(WitnessPolicy::new(keys, quorum)?)
    };
    let bytes = read_capped(receipt, MAX_RECEIPT_FILE)?;
    let file = ReceiptFile::from_json(&bytes).map_err(|e| e.context(receipt.display()))?;
    ReceiptVerifier::new(authority.key, log)
        .with_witnesses(policy)
        .verify(&file)
        .map_err(|e| e.context(receipt.display()))
}

/// The JSON views the CLI prints (`--json`) and the bindings return: one shape everywhere.
pub mod json {
    use serde_json::{json, Value};

    use crate::client::{Delivered, OpenGrant, SubmissionStatus};
    use crate::core::receipt_file::Verified;
    use crate::ids::hex;

    use super::{FetchedTo, Inbox};

    /// An open grant, as `grants --json` prints it, with the agent it is for, when it was
    /// asked and the SHA-256 an approval or denial signs (an approver sees what `approvals`
    /// shows: who gets the data, not only who asked).
    pub fn grant(g: &OpenGrant) -> Value {
        json!({
            "grant_id": hex(g.grant.grant_id),
            "user": g.grant.user.to_string(),
            "agent": g.grant.agent.to_string(),
            "resource": g.grant.resource,
            "purpose": g.grant.purpose,
            "created": g.grant.created,
            "expires": g.grant.expires,
            "max_bytes": g.grant.max_bytes,
            "sha256": hex(crate::core::directory::sha256(&g.grant.encode())),
        })
    }

    pub fn delivered(d: &Delivered) -> Value {
        json!({
            "envelope_id": hex(d.envelope_id),
            "grant_id": hex(d.grant_id),
            "length": d.length,
            "ciphertext_root": hex(d.ciphertext_root),
        })
    }

    pub fn status(s: &SubmissionStatus) -> Value {
        json!({
            "state": s.state.as_str(),
            "envelope_id": s.envelope_id.map(hex),
            "receipt_index": s.receipt_index,
            "source": s.source,
        })
    }

    pub fn inbox(i: &Inbox) -> Value {
        json!({
            "envelopes": i.envelopes.iter().map(|h| h.to_json()).collect::<Vec<_>>(),
            "key_alerts": i.key_alerts,
        })
    }

    pub fn fetched(f: &FetchedTo) -> Value {
        let r = &f.saved.fetched;
        json!({
            "envelope_id": hex(r.envelope_id),
            "status": r.status.as_str(),
            "plaintext_len": r.plaintext_len,
            "problem": r.problem,
            "header": r.header.to_json(),
            "receipt_path": f.saved.receipt_path.display().to_string(),
            "receipt_index": r.event_index,
            "key_alerts": f.key_alerts,
        })
    }

    pub fn verified(v: &Verified) -> Value {
        json!({
            "envelope_id": hex(v.receipt.envelope_id),
            "grant_id": hex(v.receipt.grant_id),
            "status": v.receipt.status.as_str(),
            "user": v.receipt.user.to_string(),
            "agent": v.receipt.agent.to_string(),
            "time": v.receipt.time,
            "leaf_index": v.leaf_index,
            "checkpoint_size": v.checkpoint.size,
            "checkpoint_origin": v.checkpoint.origin,
            "witnessed_by": v.witnessed_by.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        })
    }
}
