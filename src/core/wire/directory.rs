//! What the relay sends an agent about the user it is asked to seal to: the grant, the user's
//! entries, and their places in the directory log (docs/keys.md, docs/protocol.md).

use serde::{Deserialize, Serialize};

use super::WireSigned;

/// An open grant as an agent sees it: the user-signed grant and the user's newest directory
/// entry (which the agent verifies against its pinned authority and the directory log before
/// sealing to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    pub grant: WireSigned,
    pub user_entry: WireSigned,
    /// Where `user_entry` is in the directory log (`None`: it is not logged; the agent refuses).
    pub user_log: Option<LogProof>,
    /// The user's earlier logged entries, newest first, back to the first one a client needs
    /// to judge the newest's continuity (docs/keys.md), and to the one that signed the grant.
    pub earlier: Vec<(WireSigned, LogProof)>,
    /// A second admin's approval that shortened a reset's wait, with the approver's entry,
    /// each with its place in the directory log.
    pub approvals: Vec<LoggedApproval>,
    /// The sources whose entries say they serve the grant's resource (names), for an agent
    /// that would rather have the data sealed where it lives (docs/sources.md).
    pub sources: Vec<String>,
}

/// A grant dispatched to a source, as the source sees it: the grant with its user's logged
/// entries (as an agent sees it), the agent's signed dispatch and the agent's entry. The
/// source checks every one of them itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentView {
    pub view: GrantView,
    pub dispatch: WireSigned,
    pub agent_entry: WireSigned,
    /// When the relay queued it (its clock: the dispatch's own time is the agent's).
    pub dispatched_at: u64,
}

/// Who sealed an envelope at the data: the source's entry and the agent's dispatch that asked
/// it (the user's client checks both, and the source's signed statement, before opening).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBy {
    pub source_entry: WireSigned,
    pub dispatch: WireSigned,
}

/// A statement's place in the directory log: its leaf index, the time it was logged, and the
/// inclusion proof against the directory checkpoint of the same reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogProof {
    pub index: u64,
    pub logged_at: u64,
    pub proof: Vec<[u8; 32]>,
}

/// A reset approval and its approver's entry, both logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedApproval {
    pub approval: WireSigned,
    pub approval_log: LogProof,
    pub approver_entry: WireSigned,
    pub approver_log: LogProof,
}

/// The directory log's checkpoint a reply's proofs verify against, with a consistency proof
/// from the size the request named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryCheckpoint {
    pub checkpoint: String,
    pub consistency: Vec<[u8; 32]>,
}
