//! The relay protocol (I/O-free): one request per bidirectional QUIC stream. Each side sends a
//! header frame, `u32 big-endian length || postcard(message)`, capped at [`MAX_FRAME`]; a
//! submission's ciphertext follows the client's frame and a fetched envelope's ciphertext
//! follows the server's, as raw bytes of the declared length. Documented in `docs/protocol.md`.

use serde::{Deserialize, Serialize};

use super::sign::{Signed, StatementType};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{EnvelopeId, GrantId};

/// ALPN protocol id.
pub const ALPN: &[u8] = b"sealrelay/1";
/// QUIC's reset code for a fetched body the relay cut off because a stored piece did not match
/// its leaf (docs/protocol.md, "Pieces"): damage at rest, not a broken transfer to resume. A
/// reset may discard what was in flight, the reply frame included, so a client can meet it
/// anywhere in the answer.
pub const RESET_DAMAGED: u32 = 2;
/// Version carried in every request frame.
pub const PROTOCOL_VERSION: u16 = 9;
mod directory;
mod page;
mod views;
pub use directory::{
    AssignmentView, DirectoryCheckpoint, GrantView, LogProof, LoggedApproval, SealedBy,
};
pub use page::{Page, MAX_PAGE, PAGE_BYTES};
pub use views::{EnvelopeView, GrantProgress, MyGrantView, PendingView, SubmissionState};

/// Largest header frame either side accepts.
pub const MAX_FRAME: usize = 256 * 1024;

/// A signed statement on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSigned {
    pub statement: Vec<u8>,
    pub signature: Vec<u8>,
}

impl WireSigned {
    pub fn from_signed(s: &Signed) -> Self {
        WireSigned {
            statement: s.statement.clone(),
            signature: s.signature.to_vec(),
        }
    }
    pub fn to_signed(&self, ty: StatementType) -> Result<Signed> {
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| Error::bad_input("a signature on the wire is not 64 bytes"))?;
        Ok(Signed {
            ty,
            statement: self.statement.clone(),
            signature,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub version: u16,
    pub request: Request,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Admin: add directory entries and revocations (each verified by the relay).
    PushDirectory {
        entries: Vec<WireSigned>,
        revocations: Vec<WireSigned>,
    },
    /// Anyone enrolled: the latest signed entry of a party (clients verify it themselves).
    GetEntry {
        id: String,
    },
    /// User: create a grant it signed.
    CreateGrant {
        grant: WireSigned,
    },
    /// Agent: the open grants addressed to it, a page at a time; `dir_size`: the newest
    /// directory checkpoint the agent holds, so the answer carries a consistency proof from it.
    ListGrants {
        page: Page,
        dir_size: Option<u64>,
    },
    /// Agent (or source): submit an envelope for a grant; the ciphertext from piece
    /// `from_piece` on follows the frame (`length` bytes in all; 0 to send all of it; more to
    /// resume an upload that broke, at the piece [`Request::Resumable`] named).
    Submit {
        grant_id: GrantId,
        statement: WireSigned,
        length: u64,
        from_piece: u64,
    },
    /// User: its envelopes waiting, a page at a time.
    Inbox {
        page: Page,
    },
    /// User: fetch one envelope. After the response frame come the ciphertext's piece list
    /// (32 bytes per piece of `core::envelope::pieces::PIECE` bytes, the leaves of the tree
    /// whose root the statement signs), then the ciphertext from piece `from_piece` on (0 for
    /// all of it; more to resume a transfer that broke after that many pieces were checked).
    Fetch {
        envelope_id: EnvelopeId,
        from_piece: u64,
    },
    /// User: record a signed delivery receipt. `old_size`: the newest checkpoint the client
    /// holds, so the answer carries a consistency proof from it.
    Receipt {
        receipt: WireSigned,
        old_size: Option<u64>,
    },
    /// Anyone enrolled: the latest signed checkpoint, with a consistency proof from `old_size`.
    GetCheckpoint {
        old_size: Option<u64>,
    },
    /// Auditors: the log's event leaves `from..from+limit`.
    Events {
        from: u64,
        limit: u32,
    },
    /// Approvers: grants awaiting a second person's approval, a page at a time.
    PendingApprovals {
        page: Page,
    },
    /// Approvers: a signed approval of a grant.
    Approve {
        approval: WireSigned,
    },
    /// Admins: the kill switch for an agent, and its release.
    Quarantine {
        agent: String,
        reason: String,
    },
    Release {
        agent: String,
    },
    /// Agent: where the envelope it submitted for one of its grants is now (submitted,
    /// delivered, undecryptable, expired), with the receipt's log index once there is one.
    SubmissionStatus {
        grant_id: GrantId,
    },
    /// Approvers: a signed denial of a grant that awaits approval (closes it).
    Deny {
        denial: WireSigned,
    },
    /// User: the grants it made, in every state, a page at a time.
    MyGrants {
        page: Page,
    },
    /// Anyone enrolled: an inclusion proof of leaf `index` against the newest witnessed
    /// checkpoint (to upgrade a receipt that was not yet witnessed), with a consistency proof
    /// from `old_size`. Hashes only: the leaf itself is the caller's (auditors read leaves
    /// with `Events`).
    Proof {
        index: u64,
        old_size: Option<u64>,
    },
    /// Anyone enrolled: every signed entry the relay holds for a party, newest serial first (at
    /// most [`MAX_HISTORY`]): a client recognises what a party signed before a rotation.
    GetEntries {
        id: String,
    },
    /// Admins: a second admin's signed approval of a shorter wait for one reset key
    /// (docs/keys.md); logged in the directory log.
    ApproveReset {
        approval: WireSigned,
    },
    /// Anyone enrolled: the directory log's checkpoint, with a consistency proof from
    /// `old_size`.
    DirectoryCheckpoint {
        old_size: Option<u64>,
    },
    /// Anyone enrolled: the directory log's leaves `from..`, at most `limit` (and under
    /// [`PAGE_BYTES`]).
    DirectoryLeaves {
        from: u64,
        limit: u32,
    },
    /// Agent: have a source fill one of its open grants (an agent-signed
    /// `core::dispatch::Dispatch`).
    Dispatch {
        dispatch: WireSigned,
    },
    /// Source: the grants dispatched to it that wait, a page at a time, each with what it
    /// needs to check them itself; `dir_size` as for `ListGrants`.
    Assignments {
        page: Page,
        dir_size: Option<u64>,
    },
    /// Source: a signed refusal to fill an assignment (`core::dispatch::SourceRefusal`).
    RefuseAssignment {
        refusal: WireSigned,
    },
    /// User: `Fetch` and `Receipt` on one stream. The relay sends the envelope as for `Fetch`
    /// and leaves the stream open; the client, once it has verified and opened the body (or
    /// found it undecryptable), sends a [`ReceiptFrame`], and the relay answers it as it answers
    /// `Receipt`. A client that files no receipt finishes its side instead.
    Deliver {
        envelope_id: EnvelopeId,
        from_piece: u64,
    },
    /// Agent (`Feed::Grants`) or user (`Feed::Inbox`): one long-lived stream on which the relay
    /// sends what the matching listing holds now (`Reply::Grants` / `Reply::Inbox` frames),
    /// then `Reply::Live`, then each new grant or envelope as it becomes ready, never one twice
    /// on this stream. `dir_size` as for `ListGrants` (each pushed grant frame is proved
    /// against the directory checkpoint of the frame before it).
    Subscribe {
        feed: Feed,
        dir_size: Option<u64>,
    },
    /// Agent (or source): how much of its broken upload for `grant_id` the relay kept
    /// ([`Reply::ResumeAt`]), so that `Submit` sends only the rest.
    Resumable {
        grant_id: GrantId,
    },
}

/// What the client of a `Deliver` sends once it has the envelope: its signed receipt, and the
/// size of the newest checkpoint it has seen, read then (as `Receipt`'s `old_size`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptFrame {
    pub receipt: WireSigned,
    pub old_size: Option<u64>,
}

/// What a subscription follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Feed {
    /// An agent's ready grants (as `ListGrants` lists them).
    Grants,
    /// A user's waiting envelopes (as `Inbox` lists them).
    Inbox,
}

/// Most entries of one party a `GetEntries` answer carries.
pub const MAX_HISTORY: usize = 64;

impl Request {
    /// A short name for logs and events (no content).
    pub fn action(&self) -> &'static str {
        match self {
            Request::PushDirectory { .. } => "push_directory",
            Request::GetEntry { .. } => "get_entry",
            Request::CreateGrant { .. } => "grant",
            Request::ListGrants { .. } => "list_grants",
            Request::Submit { .. } => "submit",
            Request::Inbox { .. } => "inbox",
            Request::Fetch { .. } => "fetch",
            Request::Receipt { .. } => "receipt",
            Request::GetCheckpoint { .. } => "checkpoint",
            Request::Events { .. } => "events",
            Request::PendingApprovals { .. } => "approvals",
            Request::Approve { .. } => "approve",
            Request::Quarantine { .. } => "quarantine",
            Request::Release { .. } => "release",
            Request::SubmissionStatus { .. } => "submission_status",
            Request::Deny { .. } => "deny",
            Request::MyGrants { .. } => "my_grants",
            Request::Proof { .. } => "proof",
            Request::GetEntries { .. } => "get_entries",
            Request::ApproveReset { .. } => "approve_reset",
            Request::DirectoryCheckpoint { .. } => "directory_checkpoint",
            Request::DirectoryLeaves { .. } => "directory_leaves",
            Request::Dispatch { .. } => "dispatch",
            Request::Assignments { .. } => "assignments",
            Request::RefuseAssignment { .. } => "refuse_assignment",
            Request::Deliver { .. } => "deliver",
            Request::Subscribe { .. } => "subscribe",
            Request::Resumable { .. } => "resumable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A reply lives for one request; boxing the large variants would only add allocations.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Done,
    Entry {
        entry: WireSigned,
    },
    GrantCreated {
        grant_id: GrantId,
        expires: u64,
    },
    /// `next`: the cursor of the following page, if there may be one.
    Grants {
        grants: Vec<GrantView>,
        next: Option<[u8; 16]>,
        directory: DirectoryCheckpoint,
    },
    Submitted {
        envelope_id: EnvelopeId,
    },
    Inbox {
        envelopes: Vec<EnvelopeView>,
        next: Option<[u8; 16]>,
    },
    /// The piece list and the ciphertext (from the piece asked for) follow, as `Fetch` says.
    Envelope {
        view: EnvelopeView,
    },
    /// The receipt's log entry, its inclusion proof and the signed checkpoint it verifies against.
    ReceiptRecorded {
        event_index: u64,
        leaf: Vec<u8>,
        tree_size: u64,
        proof: Vec<[u8; 32]>,
        checkpoint: String,
        /// From the request's `old_size` to `tree_size` (empty without one).
        consistency: Vec<[u8; 32]>,
    },
    Checkpoint {
        checkpoint: String,
        consistency: Vec<[u8; 32]>,
    },
    /// (leaf index, leaf bytes) pairs.
    Events {
        events: Vec<(u64, Vec<u8>)>,
    },
    /// Grants awaiting approval, each with its requester's entry and classification.
    Pending {
        grants: Vec<PendingView>,
        next: Option<[u8; 16]>,
    },
    /// The caller's own grants.
    MyGrants {
        grants: Vec<MyGrantView>,
        next: Option<[u8; 16]>,
    },
    /// Where an agent's submission for a grant is.
    SubmissionStatus {
        state: SubmissionState,
        /// The envelope, once one was submitted.
        envelope_id: Option<EnvelopeId>,
        /// The receipt's leaf index in the transparency log, once the user filed one.
        receipt_index: Option<u64>,
        /// The source the grant was dispatched to, and its signed refusal if it refused.
        source: Option<String>,
        refusal: Option<WireSigned>,
    },
    /// A leaf's inclusion proof against a checkpoint (witnessed when the relay has witnesses
    /// and a quorum cosigned one that covers the leaf), with a consistency proof from the
    /// request's `old_size`.
    Proof {
        tree_size: u64,
        proof: Vec<[u8; 32]>,
        checkpoint: String,
        consistency: Vec<[u8; 32]>,
    },
    /// A party's signed entries, newest serial first.
    Entries {
        entries: Vec<WireSigned>,
    },
    /// Directory-log leaves (`core::keylog::DirectoryLeaf` bytes) from the request's `from`.
    Leaves {
        leaves: Vec<Vec<u8>>,
    },
    /// A source's assignments.
    Assignments {
        assignments: Vec<AssignmentView>,
        next: Option<[u8; 16]>,
        directory: DirectoryCheckpoint,
    },
    /// On a subscription: everything the listing held when it began has been sent; what follows
    /// is pushed as it happens.
    Live,
    /// How many whole pieces of a broken upload the relay kept for the caller, checked and
    /// written, for a `Submit` with the same signed statement to resume from (0: none, send it
    /// all). `statement_sha256`: SHA-256 of the kept upload's signed statement bytes (its
    /// signature is the caller's), so that a client resumes only the upload it made.
    ResumeAt {
        from_piece: u64,
        statement_sha256: Option<[u8; 32]>,
    },
}

/// Typed error codes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    InvalidEnvelope,
    Expired,
    RateLimited,
    Unavailable,
    Internal,
    /// A quota (docs/config.md) would be passed; the message names it.
    QuotaExceeded,
    /// What the relay stored does not match its recorded digest: nothing was sent.
    Integrity,
}

impl ErrorCode {
    pub fn kind(self) -> ErrorKind {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidEnvelope | ErrorCode::TooLarge => {
                ErrorKind::BadInput
            }
            ErrorCode::Unauthenticated
            | ErrorCode::Forbidden
            | ErrorCode::Expired
            | ErrorCode::RateLimited
            | ErrorCode::QuotaExceeded => ErrorKind::Refused,
            ErrorCode::NotFound => ErrorKind::NotFound,
            ErrorCode::Conflict => ErrorKind::Conflict,
            ErrorCode::Unavailable => ErrorKind::Unavailable,
            ErrorCode::Integrity => ErrorKind::Io,
            ErrorCode::Internal => ErrorKind::Internal,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A reply lives for one request; boxing it would only add an allocation per answer.
#[allow(clippy::large_enum_variant)]
pub enum Response {
    Ok(Reply),
    Err { code: ErrorCode, message: String },
}

/// Why a side closed a connection: the QUIC application close code, so that the other side
/// matches a number, not a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// Done (a client says goodbye).
    Normal,
    /// The relay found no valid SPIFFE identity in the client's certificate.
    NoIdentity,
    /// The relay quarantined this agent.
    Quarantined,
    /// The relay is shutting down.
    ShuttingDown,
    /// The client found the server is not a relay of its trust domain.
    NotARelay,
    /// The relay serves as many connections as it may (overall or for this identity).
    Busy,
    /// This identity was revoked.
    Revoked,
}

impl CloseCode {
    pub const ALL: [CloseCode; 7] = [
        CloseCode::Normal,
        CloseCode::NoIdentity,
        CloseCode::Quarantined,
        CloseCode::ShuttingDown,
        CloseCode::NotARelay,
        CloseCode::Busy,
        CloseCode::Revoked,
    ];

    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            CloseCode::Normal => 0,
            CloseCode::NoIdentity => 1,
            CloseCode::Quarantined => 2,
            CloseCode::ShuttingDown => 3,
            CloseCode::NotARelay => 4,
            CloseCode::Busy => 5,
            CloseCode::Revoked => 6,
        }
    }

    pub fn from_code(code: u64) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.code()) == code)
    }

    /// The reason phrase sent with it (for people reading packet captures; never matched).
    pub fn reason(self) -> &'static [u8] {
        match self {
            CloseCode::Normal => b"bye",
            CloseCode::NoIdentity => b"no valid SPIFFE identity",
            CloseCode::Quarantined => b"agent quarantined",
            CloseCode::ShuttingDown => b"relay shutting down",
            CloseCode::NotARelay => b"not a relay of our trust domain",
            CloseCode::Busy => b"too many connections",
            CloseCode::Revoked => b"identity revoked",
        }
    }
}

/// Encodes a header frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let body = postcard::to_stdvec(msg)
        .map_err(|e| Error::internal(format!("cannot encode a frame: {e}")))?;
    if body.len() > MAX_FRAME {
        return Err(Error::bad_input(format!(
            "a request of {} bytes is over the {MAX_FRAME}-byte frame limit",
            body.len()
        )));
    }
    let len = u32::try_from(body.len()).map_err(|_| Error::internal("frame too large"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Checks a frame's length prefix against the cap.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(Error::bad_input(format!(
            "frame of {len} bytes is over the {MAX_FRAME}-byte limit"
        )));
    }
    Ok(len)
}

/// Decodes a frame body strictly (no trailing bytes).
pub fn decode_frame<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    let (msg, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|e| Error::bad_input(format!("malformed frame: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::bad_input("trailing bytes after a frame"));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_strict() {
        let req = RequestFrame {
            version: PROTOCOL_VERSION,
            request: Request::Submit {
                grant_id: GrantId([4; 16]),
                statement: WireSigned {
                    statement: vec![1, 2, 3],
                    signature: vec![9; 64],
                },
                length: 1234,
                from_piece: 0,
            },
        };
        let frame = encode_frame(&req).unwrap();
        let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        let back: RequestFrame = decode_frame(&frame[4..]).unwrap();
        assert_eq!(back, req);
        let mut trailing = frame[4..].to_vec();
        trailing.push(0);
        assert!(decode_frame::<RequestFrame>(&trailing).is_err());
        assert!(frame_len([0xff, 0xff, 0xff, 0xff]).is_err());
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(u64::from(c.code())), Some(c));
        }
        assert_eq!(CloseCode::from_code(99), None);
        // Garbage never panics, and whatever of it decodes is canonical: it re-encodes to the
        // very bytes it came from (one encoding per frame). Prefixes of a real frame are
        // refused. (The fuzz target `wire_frame` does this at scale.)
        let mut decoded = 0;
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            if let Ok(f) = decode_frame::<RequestFrame>(&junk) {
                decoded += 1;
                assert_eq!(encode_frame(&f).unwrap()[4..], junk[..], "{junk:?}");
            }
        }
        assert!(
            decoded < 8,
            "{decoded} of 64 garbage inputs decoded as requests"
        );
        for cut in 0..frame.len() - 4 {
            assert!(
                decode_frame::<RequestFrame>(&frame[4..4 + cut]).is_err(),
                "a frame cut to {cut} bytes decoded"
            );
        }
    }
}
