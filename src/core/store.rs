//! The relay's state, as a trait (the joint where redb now, and PostgreSQL later, plug in),
//! its records, and the write operations that the relay batches into durable transactions.
//!
//! Every write operation carries the event that records it, and the store appends that event
//! in the same transaction as the state change (fail closed: no event, no change). Each
//! operation's checks run inside the transaction, so racing operations on one grant are
//! decided by the store: exactly one consumes it.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{EnvelopeId, GrantId, SpiffeId};

mod refusal;
pub use refusal::WriteRefusal;

mod assignment;
pub use assignment::{AssignmentRecord, AssignmentState};

/// A stored signed statement (statement bytes + 64-byte signature).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSigned {
    pub statement: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Where a grant is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantState {
    Open,
    /// Consumed by the submission of this envelope.
    Used {
        envelope_id: EnvelopeId,
    },
    /// Closed by expiry, unused (garbage-collected by the sweep).
    Expired,
    /// Closed by a second person's signed refusal (the denial is kept on the record).
    Denied,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub grant_id: GrantId,
    /// Who asked (and signed the grant).
    pub user: SpiffeId,
    /// The agent it is addressed to.
    pub agent: SpiffeId,
    pub expires: u64,
    pub max_bytes: u64,
    pub created: u64,
    pub grant: StoredSigned,
    pub state: GrantState,
    /// The resource asked for (for policy on submit and approve).
    pub resource: String,
    /// The catalog says a second person must approve it.
    pub needs_approval: bool,
    /// The approver's signed approval, once given (or, for a denied grant, the signed denial).
    pub approval: Option<StoredSigned>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeRecord {
    pub envelope_id: EnvelopeId,
    pub grant_id: GrantId,
    pub user: SpiffeId,
    pub agent: SpiffeId,
    pub length: u64,
    pub sha256: [u8; 32],
    pub received_at: u64,
    pub expires_at: u64,
    /// The agent-signed submission statement.
    pub statement: StoredSigned,
    /// Set once the user's receipt is recorded.
    pub receipt: Option<StoredSigned>,
    /// Small envelopes live in the store itself (one fsync per batch); large ones are files.
    pub inline: bool,
}

/// What the user's receipt said of an envelope, kept after the envelope itself is deleted so that
/// its agent can learn the outcome (never the content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub envelope_id: EnvelopeId,
    pub grant_id: GrantId,
    pub status: crate::core::grant::DeliveryStatus,
    /// The receipt's leaf index in the transparency log.
    pub receipt_index: u64,
}

/// A security event: ids, digests, decisions and times, never content or secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: u64,
    /// e.g. `directory.push`, `grant.created`, `envelope.submitted`, `receipt.recorded`, `deny`.
    pub kind: String,
    /// SPIFFE ID of who acted.
    pub actor: String,
    /// What it acted on (ids, hex), if anything.
    pub subject: String,
    /// `allow`, `deny`, or a status.
    pub decision: String,
    /// Reasons or digests; never content.
    pub detail: String,
    /// SHA-256 of the signed statement the event records (statement || signature), or empty.
    pub digest: Vec<u8>,
}

/// Prefix of an event's leaf bytes in the transparency log.
pub const LEAF_PREFIX: &[u8] = b"sealrelay-event-v1\0";
/// The longest text field an event leaf holds.
pub const MAX_LEAF_FIELD: usize = 4096;

impl Event {
    /// The event as a transparency-log leaf: canonical bytes (docs/formats.md).
    pub fn leaf_bytes(&self) -> Vec<u8> {
        let mut w = crate::core::codec::Writer::new();
        w.raw(LEAF_PREFIX)
            .u64(self.time)
            .str(&self.kind)
            .str(&self.actor)
            .str(&self.subject)
            .str(&self.decision)
            .str(&self.detail)
            .bytes(&self.digest);
        w.finish()
    }

    /// Whether every field fits what [`Event::from_leaf_bytes`] reads back.
    pub fn fits_a_leaf(&self) -> bool {
        [
            &self.kind,
            &self.actor,
            &self.subject,
            &self.decision,
            &self.detail,
        ]
        .iter()
        .all(|f| f.len() <= MAX_LEAF_FIELD)
            && self.digest.len() <= 32
    }

    /// The event with every text field cut to what a leaf may hold ([`MAX_LEAF_FIELD`] bytes,
    /// at a character boundary, marked with `…`), so that every stored leaf can be read back.
    pub fn bounded(mut self) -> Event {
        for field in [
            &mut self.kind,
            &mut self.actor,
            &mut self.subject,
            &mut self.decision,
            &mut self.detail,
        ] {
            if field.len() > MAX_LEAF_FIELD {
                let mut end = MAX_LEAF_FIELD - '…'.len_utf8();
                while !field.is_char_boundary(end) {
                    end -= 1;
                }
                field.truncate(end);
                field.push('…');
            }
        }
        self.digest.truncate(32);
        self
    }

    /// Parses leaf bytes strictly.
    pub fn from_leaf_bytes(bytes: &[u8]) -> Result<Event> {
        let mut r = crate::core::codec::Reader::new(bytes);
        r.expect_raw(LEAF_PREFIX, "sealrelay event leaf")?;
        let e = Event {
            time: r.u64()?,
            kind: r.str(MAX_LEAF_FIELD, "kind")?.to_owned(),
            actor: r.str(MAX_LEAF_FIELD, "actor")?.to_owned(),
            subject: r.str(MAX_LEAF_FIELD, "subject")?.to_owned(),
            decision: r.str(MAX_LEAF_FIELD, "decision")?.to_owned(),
            detail: r.str(MAX_LEAF_FIELD, "detail")?.to_owned(),
            digest: r.bytes(32, "digest")?.to_vec(),
        };
        r.finish()?;
        Ok(e)
    }
}

/// SHA-256 of a signed statement as events record it: statement || signature.
pub fn statement_digest(s: &crate::core::sign::Signed) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&s.statement);
    ctx.update(&s.signature);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// What a party holds at the relay now, kept by the store inside the same transactions that
/// change it (so quotas are checked atomically, whatever races).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Grants created by (a user) or addressed to (an agent) the party, still open.
    pub open_grants: u64,
    /// Envelopes waiting for the user, and their bytes.
    pub pending_envelopes: u64,
    pub pending_bytes: u64,
}

/// The key under which the store counts what `user` holds against `agent` (open grants), beside
/// each party's own usage (a SPIFFE ID has no space, so the two never collide).
pub fn pair_usage_key(user: &SpiffeId, agent: &SpiffeId) -> String {
    format!("{user} {agent}")
}

/// The limits a write must stay within (docs/config.md, `[quotas]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub open_grants_per_user: u64,
    pub open_grants_per_agent: u64,
    pub open_grants_per_user_per_agent: u64,
    pub pending_envelopes_per_user: u64,
    pub pending_bytes_per_user: u64,
}

impl Quotas {
    /// No limits (for stores driven directly, as in benchmarks).
    pub const NONE: Quotas = Quotas {
        open_grants_per_user: u64::MAX,
        open_grants_per_agent: u64::MAX,
        open_grants_per_user_per_agent: u64::MAX,
        pending_envelopes_per_user: u64::MAX,
        pending_bytes_per_user: u64::MAX,
    };
}

/// Which quota a write would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaKind {
    OpenGrantsPerUser,
    OpenGrantsPerAgent,
    OpenGrantsPerUserPerAgent,
    PendingEnvelopesPerUser,
    PendingBytesPerUser,
    UploadsPerAgent,
    UploadBytesPerAgent,
}

impl QuotaKind {
    /// The config field (`[quotas]`) that sets it.
    pub fn field(self) -> &'static str {
        match self {
            QuotaKind::OpenGrantsPerUser => "max_open_grants_per_user",
            QuotaKind::OpenGrantsPerAgent => "max_open_grants_per_agent",
            QuotaKind::OpenGrantsPerUserPerAgent => "max_open_grants_per_user_per_agent",
            QuotaKind::PendingEnvelopesPerUser => "max_pending_envelopes_per_user",
            QuotaKind::PendingBytesPerUser => "max_pending_bytes_per_user",
            QuotaKind::UploadsPerAgent => "max_uploads_per_agent",
            QuotaKind::UploadBytesPerAgent => "max_upload_bytes_per_agent",
        }
    }

    /// What the caller can do about it.
    fn advice(self) -> &'static str {
        match self {
            QuotaKind::OpenGrantsPerUser
            | QuotaKind::OpenGrantsPerAgent
            | QuotaKind::OpenGrantsPerUserPerAgent => "wait until open grants are used or expire",
            QuotaKind::PendingEnvelopesPerUser | QuotaKind::PendingBytesPerUser => {
                "the user must fetch (or let expire) what is waiting first"
            }
            QuotaKind::UploadsPerAgent | QuotaKind::UploadBytesPerAgent => {
                "wait for this agent's uploads in progress to finish"
            }
        }
    }
}

/// A write the relay asks the store to make, with the event that records it.
#[derive(Clone, Debug)]
pub enum WriteOp {
    /// Add directory statements: (id, serial, signed) entries and (id, serial, signed) revocations.
    /// Each statement not stored before also becomes the next leaf of the directory log
    /// (`core::keylog`), logged at `event.time`; with `log_all`, every statement given does,
    /// when the directory log is still empty (a store from before key transparency), logged at
    /// time 0 (they were in force already: no wait).
    PutDirectory {
        entries: Vec<(String, u64, StoredSigned)>,
        revocations: Vec<(String, u64, StoredSigned)>,
        event: Event,
        log_all: bool,
        /// Refuse the whole write when another entry is stored for one of these serials (a
        /// push: the pusher is told); otherwise the stored one is kept and the rest written
        /// (loading the trust root's files at start, the directory watch).
        conflicts_refused: bool,
    },
    /// A second admin's approval of a shorter wait for a reset key (`core::keylog`): only a
    /// leaf of the directory log, logged at `event.time`.
    LogResetApproval {
        approval: StoredSigned,
        event: Event,
    },
    CreateGrant {
        record: GrantRecord,
        quotas: Quotas,
        event: Event,
    },
    /// Queue an open, ready grant addressed to `record.agent` for `record.source`. The same
    /// signed dispatch again is `Duplicate` (the caller answers it as done); another dispatch
    /// of a grant already dispatched is `AlreadyDispatched`.
    Dispatch {
        record: AssignmentRecord,
        now: u64,
        event: Event,
    },
    /// A source's signed refusal of a queued assignment of its own.
    RefuseAssignment {
        grant_id: GrantId,
        source: SpiffeId,
        refusal: StoredSigned,
        event: Event,
    },
    /// Consume an open, unexpired grant addressed to `agent` and store the envelope, in one
    /// transaction; with `source`, the grant's queued assignment to that source is filled in
    /// the same transaction (and there must be one).
    ConsumeGrant {
        agent: SpiffeId,
        source: Option<SpiffeId>,
        envelope: EnvelopeRecord,
        /// The ciphertext, for envelopes stored inline.
        inline_body: Option<Vec<u8>>,
        now: u64,
        quotas: Quotas,
        event: Event,
    },
    /// Record the user's receipt on an envelope; with `delete` the envelope record goes (its
    /// blob is removed by the caller after the commit).
    RecordReceipt {
        envelope_id: EnvelopeId,
        user: SpiffeId,
        receipt: StoredSigned,
        /// What the receipt says (kept as a [`DeliveryRecord`]).
        status: crate::core::grant::DeliveryStatus,
        delete: bool,
        event: Event,
    },
    /// Close an open grant whose time has passed (the sweep): out of every listing.
    ExpireGrant {
        grant_id: GrantId,
        now: u64,
        /// An approval not given within this many seconds of the grant's creation lapses.
        approval_ttl: u64,
        event: Event,
    },
    /// Delete an envelope (expiry).
    DeleteEnvelope {
        envelope_id: EnvelopeId,
        event: Event,
    },
    /// Close a grant that awaits approval with a second person's signed denial.
    Deny {
        grant_id: GrantId,
        denial: StoredSigned,
        now: u64,
        approval_ttl: u64,
        event: Event,
    },
    /// Record an approval on a grant that awaits one.
    Approve {
        grant_id: GrantId,
        approval: StoredSigned,
        /// When the approval arrived (an approval after expiry, or after the approval
        /// lapsed, is refused).
        now: u64,
        approval_ttl: u64,
        event: Event,
    },
    /// Quarantine an agent (kept across restarts until released).
    Quarantine {
        agent: SpiffeId,
        reason: String,
        event: Event,
    },
    /// Release a quarantined agent.
    Release { agent: SpiffeId, event: Event },
    /// Only an event (a denial, a quarantine).
    Append { event: Event },
}

impl WriteOp {
    /// Whether the write adds data (a grant, a submission, a dispatch): the free-space reserve
    /// holds these back, while what revokes, closes, records or frees goes on.
    pub fn adds_data(&self) -> bool {
        matches!(
            self,
            WriteOp::CreateGrant { .. } | WriteOp::ConsumeGrant { .. } | WriteOp::Dispatch { .. }
        )
    }

    /// About what the write puts on disk when it adds data (0 when it does not): an inline
    /// body, and the pages its records and indexes copy.
    pub fn bytes_added(&self) -> u64 {
        /// The pages one write's records and index entries copy, about.
        const PAGES: u64 = 16 * 1024;
        match self {
            WriteOp::ConsumeGrant { inline_body, .. } => {
                PAGES + inline_body.as_ref().map_or(0, |b| b.len() as u64)
            }
            WriteOp::CreateGrant { .. } | WriteOp::Dispatch { .. } => PAGES,
            _ => 0,
        }
    }
}

/// The outcome of one operation in a batch: the index of its event, or the refusal.
pub type OpResult = std::result::Result<u64, WriteRefusal>;

/// Durable relay state.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` in one durable transaction (fsync before it returns). Each op is checked
    /// and applied in order; a refused op changes nothing and does not affect the others.
    /// An `Err` means nothing at all was written.
    fn apply(&self, ops: &[WriteOp]) -> Result<Vec<OpResult>>;
    /// All directory statements: (entries, revocations).
    fn directory(&self) -> Result<(Vec<StoredSigned>, Vec<StoredSigned>)>;
    /// The directory log's leaves `from..`, at most `n` (`core::keylog::DirectoryLeaf` bytes).
    fn directory_log(&self, from: u64, n: usize) -> Result<Vec<Vec<u8>>>;
    fn grant(&self, grant_id: &GrantId) -> Result<Option<GrantRecord>>;
    /// The assignment of a grant to a source, if it was dispatched.
    fn assignment(&self, grant_id: &GrantId) -> Result<Option<AssignmentRecord>>;
    /// Queued assignments of `source`, in grant id order, after `after`, at most `limit`
    /// (those whose grant expired included until the sweep closes it).
    fn assignments_for(
        &self,
        source: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<AssignmentRecord>>;
    /// Open grants addressed to `agent`, in id order, after `after`, at most `limit` (expired
    /// ones included until the sweep closes them; the caller filters by time).
    fn open_grants_for(
        &self,
        agent: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>>;
    fn envelope(&self, envelope_id: &EnvelopeId) -> Result<Option<EnvelopeRecord>>;
    /// Grants `user` made (every state), in id order, after `after`, at most `limit`.
    fn grants_by(
        &self,
        user: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>>;
    /// What the user's receipt said of an envelope (kept after the envelope is deleted).
    fn delivery(&self, envelope_id: &EnvelopeId) -> Result<Option<DeliveryRecord>>;
    /// Envelopes waiting for `user` (no receipt yet), in id order, after `after`, at most
    /// `limit`.
    fn inbox(
        &self,
        user: &SpiffeId,
        after: Option<&EnvelopeId>,
        limit: usize,
    ) -> Result<Vec<EnvelopeRecord>>;
    /// The ciphertext of an envelope stored inline.
    fn inline_body(&self, envelope_id: &EnvelopeId) -> Result<Option<Vec<u8>>>;
    /// Every envelope id (for sweeping orphaned blobs and expiry).
    fn envelope_ids(&self) -> Result<Vec<EnvelopeId>>;
    /// Events `from..from+limit`.
    fn events(&self, from: u64, limit: usize) -> Result<Vec<(u64, Event)>>;
    fn event_count(&self) -> Result<u64>;
    /// What `party` holds now (open grants, pending envelopes and bytes).
    fn usage(&self, party: &SpiffeId) -> Result<Usage>;
    /// Refuses with "storage full" when `incoming` more bytes would eat into the free space the
    /// store keeps in reserve (stores without a disk of their own accept).
    fn ensure_room(&self, incoming: u64) -> Result<()> {
        let _ = incoming;
        Ok(())
    }
    /// Whether the store can serve now (`/readyz`): a cheap read by default; a store that can
    /// tell more (a database connection, a failed write) says why not.
    fn health(&self) -> Result<()> {
        self.event_count().map(|_| ())
    }
    /// Quarantined agents and why.
    fn quarantined(&self) -> Result<Vec<(String, String)>>;
    /// A store that several relay nodes share counts the monitor's signals for all of them:
    /// records `signal` (raised by `claimant`, when a party raised it) against `agent` at `at`,
    /// and returns how many of that kind the agent has at or after `since`, each claimant
    /// counted once when `per_claimant`. `None`: the store is one node's, and the monitor
    /// counts in memory.
    fn record_signal(
        &self,
        agent: &str,
        signal: &'static str,
        claimant: Option<&str>,
        at: u64,
        since: u64,
        per_claimant: bool,
    ) -> Result<Option<u64>> {
        let _ = (agent, signal, claimant, at, since, per_claimant);
        Ok(None)
    }
    /// Forgets the signals counted against `agent` (an admin released it).
    fn clear_signals(&self, agent: &str) -> Result<()> {
        let _ = agent;
        Ok(())
    }
    /// Forgets the signals raised before `before` (out of every window).
    fn prune_signals(&self, before: u64) -> Result<()> {
        let _ = before;
        Ok(())
    }
    /// Grants that await approval, in id order, after `after`, at most `limit` (unexpired ones
    /// are the caller's to filter).
    fn pending_approvals(&self, after: Option<&GrantId>, limit: usize) -> Result<Vec<GrantRecord>>;
    /// Open grants whose expiry is at or before `now` (at most `limit`), for the sweep.
    fn expired_grants(&self, now: u64, limit: usize) -> Result<Vec<GrantId>>;
    /// The transparency log over the events: leaf `i` is event `i`'s [`Event::leaf_bytes`].
    fn log_size(&self) -> u64;
    fn log_root(&self, size: u64) -> Result<crate::core::tlog::Hash>;
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<crate::core::tlog::Hash>>;
    fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<crate::core::tlog::Hash>>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Found by reading: fields were unbounded when written but capped when read back, so an
    /// event with a long subject (a large directory push) made a leaf that could not be read.
    #[test]
    fn every_stored_event_can_be_read_back() {
        let long = Event {
            time: 1,
            kind: "directory.push".into(),
            actor: "spiffe://t/admin/a".into(),
            subject: "user/é-name#1, ".repeat(600),
            decision: "allow".into(),
            detail: String::new(),
            digest: vec![7; 32],
        };
        assert!(!long.fits_a_leaf());
        assert!(Event::from_leaf_bytes(&long.leaf_bytes()).is_err());
        let bounded = long.bounded();
        assert!(bounded.fits_a_leaf());
        assert!(bounded.subject.ends_with('…'));
        assert_eq!(
            Event::from_leaf_bytes(&bounded.leaf_bytes()).unwrap(),
            bounded
        );
    }
}
