//! What a requester sees of an envelope before opening it: who sent it (the agent), for what
//! (the resource), why (the purpose), when it was asked, who approved it, and whether each of
//! those claims verifies — the grant against the user's own key, the agent's entry and the
//! approver's entry against the pinned authority, the agent's signed statement and the approval
//! against those entries. An envelope whose header does not verify is shown as such and is never
//! opened.

use serde::Serialize;

use crate::clock;
use crate::core::directory::{sha256, DirectoryEntry};
use crate::core::dispatch::{check_dispatch, Dispatch, SourceSubmission};
use crate::core::envelope::submission::Submission;
use crate::core::grant::{Approval, Grant};
use crate::core::identity::Identity;
use crate::core::sign::StatementType;
use crate::core::store::statement_digest;
use crate::core::wire::EnvelopeView;
use crate::error::{Error, Result};
use crate::ids::{hex, EnvelopeId, SpiffeId};

use super::verify::{authority, verified_entry};

/// An envelope's header as the user's client judged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    pub envelope_id: EnvelopeId,
    /// The agent that sent it (from the grant; `None` when the grant does not even decode).
    pub agent: Option<SpiffeId>,
    pub resource: String,
    pub purpose: String,
    /// When the user asked (the grant's creation time).
    pub asked: u64,
    /// Who approved it, where an approval came with it.
    pub approver: Option<SpiffeId>,
    pub approved_at: Option<u64>,
    pub length: u64,
    pub received_at: u64,
    /// `None` when everything verifies; otherwise why not, in one line.
    pub problem: Option<String>,
    /// The grant was signed with another of this user's own keys (serial N: before, or after,
    /// a rotation), so the agent sealed it to that key: open it with that identity. Everything
    /// else verified. `None` for this identity's own key.
    pub other_key_serial: Option<u64>,
    /// The source that sealed it at the data, at the agent's dispatch (docs/sources.md);
    /// `None` when the agent sealed it itself.
    pub sealed_by: Option<SpiffeId>,
}

impl EnvelopeHeader {
    pub fn verified(&self) -> bool {
        self.problem.is_none()
    }

    /// Whether this identity can open it: it verified, and it was sealed to this identity's key.
    pub fn openable(&self) -> bool {
        self.verified() && self.other_key_serial.is_none()
    }

    /// Who sealed it, in one line: "sealed by source hr at the data, for research-bot", or
    /// "sealed by research-bot".
    /// One that does not verify says it is only claimed.
    pub fn provenance(&self) -> String {
        let agent = self.agent.as_ref().map_or("?", |a| a.name());
        match (&self.sealed_by, self.verified()) {
            (Some(s), true) => format!("sealed by source {} at the data, for {agent}", s.name()),
            (Some(s), false) => format!(
                "claims to be sealed by source {} at the data, for {agent} (it does not verify)",
                s.name()
            ),
            (None, _) => format!("sealed by {agent}"),
        }
    }

    /// Why this identity does not open an envelope sealed to another of the user's keys.
    pub fn other_key_note(&self) -> Option<String> {
        self.other_key_serial.map(|serial| {
            format!(
                "asked with your key of serial {serial} (you rotated keys since): what an agent sealed before your rotation is sealed to that key; open it with that identity file, which a relay accepts for a grace period after the rotation (rotation_grace_secs); nothing was filed against the agent"
            )
        })
    }

    /// The header as `inbox --json` prints it and the web client serves it.
    pub fn to_json(&self) -> HeaderJson {
        HeaderJson {
            envelope_id: hex(self.envelope_id),
            agent: self.agent.as_ref().map(ToString::to_string),
            resource: self.resource.clone(),
            purpose: self.purpose.clone(),
            asked: clock::rfc3339(self.asked),
            approver: self.approver.as_ref().map(ToString::to_string),
            approved_at: self.approved_at.map(clock::rfc3339),
            bytes: self.length,
            received: clock::rfc3339(self.received_at),
            verified: self.verified(),
            problem: self.problem.clone(),
            other_key_serial: self.other_key_serial,
            sealed_by: self.sealed_by.as_ref().map(ToString::to_string),
            provenance: self.provenance(),
        }
    }
}

/// The JSON shape of a header (docs/cli.md, docs/ui.md).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HeaderJson {
    pub envelope_id: String,
    pub agent: Option<String>,
    pub resource: String,
    pub purpose: String,
    pub asked: String,
    pub approver: Option<String>,
    pub approved_at: Option<String>,
    pub bytes: u64,
    pub received: String,
    pub verified: bool,
    pub problem: Option<String>,
    /// Sealed to another of your keys (that serial): open it with that identity.
    pub other_key_serial: Option<u64>,
    /// The source that sealed it at the data (its SPIFFE ID), or null when the agent did.
    pub sealed_by: Option<String>,
    /// Who sealed it, in one line.
    pub provenance: String,
}

/// Judges `view` for the user `identity`. Never fails: what cannot be checked is the header's
/// problem. `own` are the user's other directory entries (verified against the authority), by
/// which a grant signed before or after a rotation is recognised as the user's own.
pub fn describe(
    identity: &Identity,
    own: &[DirectoryEntry],
    view: &EnvelopeView,
) -> EnvelopeHeader {
    describe_verified(identity, own, view).0
}

/// [`describe`], and, when everything verified and the agent sealed it, the ciphertext root its
/// signed statement names (checked for this grant, user, agent and length): `fetch` takes the
/// pieces against it without checking the same signature a second time.
pub(crate) fn describe_verified(
    identity: &Identity,
    own: &[DirectoryEntry],
    view: &EnvelopeView,
) -> (EnvelopeHeader, Option<[u8; 32]>) {
    let mut h = EnvelopeHeader {
        envelope_id: view.envelope_id,
        agent: None,
        resource: String::new(),
        purpose: String::new(),
        asked: 0,
        approver: None,
        approved_at: None,
        length: view.length,
        received_at: view.received_at,
        problem: None,
        other_key_serial: None,
        sealed_by: None,
    };
    let mut root = None;
    if let Err(e) = check(identity, own, view, &mut h, &mut root) {
        h.problem = Some(e.message().to_owned());
    }
    let root = root.filter(|_| h.problem.is_none());
    (h, root)
}

fn check(
    identity: &Identity,
    own: &[DirectoryEntry],
    view: &EnvelopeView,
    h: &mut EnvelopeHeader,
    root: &mut Option<[u8; 32]>,
) -> Result<()> {
    let authority = authority(identity)?;
    let grant_signed = view.grant.to_signed(StatementType::Grant)?;
    let claimed = Grant::decode(&grant_signed.statement)?;
    h.agent = Some(claimed.agent.clone());
    h.resource = claimed.resource.clone();
    // Shown before its signature is judged: made safe to show first if it holds what could show
    // a person one text and a model another (a user's client signs only purposes without).
    h.purpose = match crate::core::grant::check_display_text(&claimed.purpose, "purpose") {
        Ok(()) => claimed.purpose.clone(),
        Err(_) => crate::text::one_line(&claimed.purpose),
    };
    h.asked = claimed.created;
    // Who approved, as claimed, before anything is judged (shown even when it fails).
    let approval = match &view.approval {
        Some(a) => {
            let signed = a.to_signed(StatementType::Approval)?;
            let claimed = Approval::decode(&signed.statement)?;
            h.approver = Some(claimed.approver.clone());
            h.approved_at = Some(claimed.time);
            Some((signed, claimed))
        }
        None => None,
    };
    let grant = match Grant::verify_own(&grant_signed, &identity.signing_key) {
        Ok(g) => g,
        Err(_) => {
            // Signed with another of this user's keys (a rotation since, or before)?
            let me = identity.id.as_ref();
            let other = own.iter().find(|e| {
                Some(&e.id) == me
                    && e.signing_key != identity.signing_key.public()
                    && Grant::verify(&grant_signed, &e.signing_key).is_ok()
            });
            match other {
                Some(e) => {
                    h.other_key_serial = Some(e.serial);
                    Grant::verify(&grant_signed, &e.signing_key)?
                }
                None => return Err(Error::verification("the grant is not one you signed")),
            }
        }
    };
    let agent_entry = verified_entry(&view.agent_entry, &authority, Some(&grant.agent))
        .map_err(|e| Error::verification(format!("the agent's entry: {}", e.message())))?;
    let me = identity
        .id
        .as_ref()
        .ok_or_else(|| Error::bad_input("this identity is not enrolled"))?;
    if let Some(by) = &view.sealed_by {
        // Claimed before it is judged, so that the person sees who it claims to be from.
        if let Ok(e) = by.source_entry.to_signed(StatementType::DirectoryEntry) {
            if let Ok(e) = DirectoryEntry::decode(&e.statement) {
                h.sealed_by = Some(e.id);
            }
        }
        source_claims(
            view,
            by,
            &grant,
            &grant_signed,
            &agent_entry,
            me,
            &authority,
        )?;
        return approval_holds(view, approval, &grant, &grant_signed, me, &authority);
    }
    let statement = view.statement.to_signed(StatementType::Submission)?;
    let s = Submission::decode(&statement.statement)?;
    statement
        .verify(&agent_entry.signing_key)
        .map_err(|_| Error::verification("the agent's signed statement does not verify"))?;
    if s.grant_id != grant.grant_id
        || s.user != *me
        || s.agent != grant.agent
        || s.ciphertext_len != view.length
    {
        return Err(Error::verification(
            "the agent's statement describes another grant, user or size",
        ));
    }
    *root = Some(s.ciphertext_root);
    approval_holds(view, approval, &grant, &grant_signed, me, &authority)
}

/// The approval, where one came with the envelope: by the approver's verified entry, for this
/// grant, not by the requester.
fn approval_holds(
    view: &EnvelopeView,
    approval: Option<(crate::core::sign::Signed, Approval)>,
    grant: &Grant,
    grant_signed: &crate::core::sign::Signed,
    me: &SpiffeId,
    authority: &crate::core::sign::PublicKey,
) -> Result<()> {
    if let Some((signed, claimed)) = approval {
        let entry = view
            .approver_entry
            .as_ref()
            .ok_or_else(|| Error::verification("the approver's entry is missing"))?;
        let approver = verified_entry(entry, authority, Some(&claimed.approver))
            .map_err(|e| Error::verification(format!("the approver's entry: {}", e.message())))?;
        Approval::verify(&signed, &approver.signing_key)
            .map_err(|_| Error::verification("the approval does not verify"))?;
        if claimed.grant_id != grant.grant_id
            || claimed.grant_sha256 != sha256(&grant_signed.statement)
            || claimed.approver == *me
        {
            return Err(Error::verification("the approval is not for this grant"));
        }
    }
    Ok(())
}

/// An envelope sealed by a source at the data: the source's entry verifies against the
/// authority, is a source's and serves the resource; the agent signed the dispatch, which names
/// exactly this grant and that source; the source signed a statement answering that dispatch,
/// for this user and size. (The ciphertext digest is checked once it has arrived.)
fn source_claims(
    view: &EnvelopeView,
    by: &crate::core::wire::SealedBy,
    grant: &Grant,
    grant_signed: &crate::core::sign::Signed,
    agent_entry: &DirectoryEntry,
    me: &SpiffeId,
    authority: &crate::core::sign::PublicKey,
) -> Result<()> {
    let source = verified_entry(&by.source_entry, authority, None)
        .map_err(|e| Error::verification(format!("the source's entry: {}", e.message())))?;
    if source.id.kind() != crate::ids::PartyKind::Source
        || !source
            .attributes
            .scopes
            .iter()
            .any(|s| crate::core::resource::matches(s, &grant.resource))
    {
        return Err(Error::verification(
            "the source's entry is not a source that serves this resource",
        ));
    }
    let dispatch_signed = by.dispatch.to_signed(StatementType::Dispatch)?;
    let dispatch = Dispatch::decode(&dispatch_signed.statement)?;
    dispatch_signed
        .verify(&agent_entry.signing_key)
        .map_err(|_| Error::verification("the agent's dispatch does not verify"))?;
    check_dispatch(&dispatch, grant, &statement_digest(grant_signed))?;
    if dispatch.source != source.id {
        return Err(Error::verification(
            "the agent dispatched the grant to another source",
        ));
    }
    let statement = view.statement.to_signed(StatementType::SourceSubmission)?;
    let s = SourceSubmission::decode(&statement.statement)?;
    statement
        .verify(&source.signing_key)
        .map_err(|_| Error::verification("the source's signed statement does not verify"))?;
    s.answers(&dispatch, &statement_digest(&dispatch_signed))?;
    if s.user != *me || s.ciphertext_len != view.length {
        return Err(Error::verification(
            "the source's statement describes another user or size",
        ));
    }
    Ok(())
}
