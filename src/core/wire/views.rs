//! What a listing shows each party: an envelope as its user sees it, a grant awaiting approval as
//! an approver sees it, a grant as the user who made it sees it, and where an agent's submission
//! is (docs/protocol.md).

use serde::{Deserialize, Serialize};

use super::{GrantView, SealedBy, WireSigned};
use crate::ids::EnvelopeId;

/// An envelope as its user sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeView {
    pub envelope_id: EnvelopeId,
    pub grant: WireSigned,
    /// The agent-signed submission statement.
    pub statement: WireSigned,
    /// The agent's directory entry (the user's client verifies it against its authority).
    pub agent_entry: WireSigned,
    pub length: u64,
    pub received_at: u64,
    /// The second person's signed approval, where the catalog asked for one.
    pub approval: Option<WireSigned>,
    /// The approver's entry (the user's client verifies it against its authority).
    pub approver_entry: Option<WireSigned>,
    /// Sealed by a source at the data, not by the agent: then `statement` is the
    /// source-signed `core::dispatch::SourceSubmission`.
    pub sealed_by: Option<SealedBy>,
}

/// A grant awaiting approval, as an approver sees it: the grant, its requester's entry, and the
/// classification the relay's catalog gives its resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingView {
    pub view: GrantView,
    pub classification: u8,
}

/// A grant as the user who made it sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyGrantView {
    pub grant: WireSigned,
    pub progress: GrantProgress,
    pub envelope_id: Option<EnvelopeId>,
    /// The receipt's leaf index in the log, once there is one.
    pub receipt_index: Option<u64>,
    /// The approval or denial, signed (the approver's name is read from it).
    pub decision: Option<WireSigned>,
}

/// Where a grant is, for the user who made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantProgress {
    AwaitingApproval,
    Open,
    Denied,
    Sent,
    Delivered,
    Undecryptable,
    Expired,
    /// Dispatched to a source, which has not filled it yet.
    AtSource,
    /// The source refused it (the data owner's policy, no connector, unreadable).
    RefusedAtSource,
}

impl GrantProgress {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantProgress::AwaitingApproval => "awaiting approval",
            GrantProgress::Open => "open",
            GrantProgress::Denied => "denied",
            GrantProgress::Sent => "sent",
            GrantProgress::Delivered => "delivered",
            GrantProgress::Undecryptable => "undecryptable",
            GrantProgress::Expired => "expired",
            GrantProgress::AtSource => "queued at source",
            GrantProgress::RefusedAtSource => "refused at source",
        }
    }
}

/// Where an agent's submission for a grant is, as the relay knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubmissionState {
    /// The grant is open: nothing was submitted yet.
    Open,
    /// Stored at the relay, not yet fetched.
    Submitted,
    /// The user fetched it and filed a `delivered` receipt.
    Delivered,
    /// The user's client could not open it and filed an `undecryptable` receipt.
    Undecryptable,
    /// The grant closed unused, or the envelope passed its time to live unfetched.
    Expired,
    /// A second person refused the grant.
    Denied,
    /// Dispatched to a source, which has not filled it yet.
    Queued,
    /// The source refused it (its signed refusal says why).
    RefusedAtSource,
}

impl SubmissionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionState::Open => "open",
            SubmissionState::Submitted => "submitted",
            SubmissionState::Delivered => "delivered",
            SubmissionState::Undecryptable => "undecryptable",
            SubmissionState::Expired => "expired",
            SubmissionState::Denied => "denied",
            SubmissionState::Queued => "queued at source",
            SubmissionState::RefusedAtSource => "refused at source",
        }
    }
}
