//! Uploads in progress: one per grant at a time, and per agent a cap on how many and how many
//! bytes, all claimed before a body is read, so that no agent can fill the disk by opening many
//! streams on one grant or many grants at once.
//!
//! An upload that broke (the stream or connection ended before its declared length) is
//! *parked*: its uncommitted blob and the state of its checks at the last whole piece are kept,
//! with its claim, for `upload_resume_secs`, so that its sender resumes from there
//! (`Request::Resumable`, then `Submit { from_piece }`). Parked uploads live in memory only: a
//! restart drops them (their blobs are swept) and the sender starts again from the first byte.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::core::envelope::validate::EnvelopeValidator;
use crate::core::store::{QuotaKind, WriteRefusal};
use crate::core::wire::{ErrorCode, WireSigned};
use crate::ids::{EnvelopeId, GrantId, SpiffeId};
use crate::store::blobs::BlobWriter;

use super::config::QuotaConfig;
use super::refusal::Refusal;

/// What a blob upload carries from one piece to the next: the uncommitted blob (whole pieces
/// written), the envelope checks fed with exactly those pieces, and their leaf hashes.
pub struct UploadState {
    pub envelope_id: EnvelopeId,
    pub blob: Box<dyn BlobWriter>,
    pub validator: EnvelopeValidator,
    pub leaves: Vec<[u8; 32]>,
}

/// A broken upload kept for its sender.
pub struct Parked {
    pub owner: SpiffeId,
    pub statement: WireSigned,
    pub length: u64,
    pub state: UploadState,
    /// Dropped by the sweep after this (Unix seconds).
    pub until: u64,
}

impl Parked {
    /// SHA-256 of the signed statement bytes (what `Reply::ResumeAt` names).
    pub fn statement_sha256(&self) -> [u8; 32] {
        crate::core::directory::sha256(&self.statement.statement)
    }
}

#[derive(Default)]
struct InProgress {
    grants: HashSet<GrantId>,
    /// Per agent: uploads and declared bytes in progress (parked ones included).
    agents: HashMap<SpiffeId, (u64, u64)>,
    /// Broken uploads kept for their senders (each still holds its claim above).
    parked: HashMap<GrantId, Parked>,
    /// Uploads receiving now: their declared length and how much of it they have taken (kept
    /// pieces included), for the bytes still to come ([`Uploads::outstanding`]).
    receiving: HashMap<GrantId, (u64, Arc<AtomicU64>)>,
}

impl InProgress {
    /// Ends a claim: the grant is free and the agent's counts go down.
    fn release(&mut self, grant: &GrantId, agent: &SpiffeId, bytes: u64) {
        self.grants.remove(grant);
        self.receiving.remove(grant);
        let emptied = match self.agents.get_mut(agent) {
            Some((count, held)) => {
                *count = count.saturating_sub(1);
                *held = held.saturating_sub(bytes);
                *count == 0
            }
            None => false,
        };
        if emptied {
            self.agents.remove(agent);
        }
    }
}

#[derive(Default)]
pub struct Uploads {
    in_progress: Mutex<InProgress>,
}

/// An upload's claim; released when dropped (committed, refused, or the stream died), unless
/// it was [parked](UploadSlot::park).
pub struct UploadSlot<'a> {
    uploads: &'a Uploads,
    grant: GrantId,
    agent: SpiffeId,
    bytes: u64,
    parked: bool,
    /// Bytes of the body taken so far (kept pieces included).
    taken: Arc<AtomicU64>,
    /// For a resumed upload: the pieces it was kept with and until when.
    resumed: Option<(usize, u64)>,
}

impl Uploads {
    /// Claims the right to upload `bytes` for `grant` as `agent`. An upload of the same sender
    /// parked for the grant is superseded (its claim passes to this one): it is returned for
    /// the caller to discard off the async threads.
    pub fn begin(
        &self,
        grant: GrantId,
        agent: &SpiffeId,
        bytes: u64,
        quotas: &QuotaConfig,
    ) -> Result<(UploadSlot<'_>, Option<Parked>), Refusal> {
        let mut state = self.in_progress.lock().map_err(|_| Refusal::internal())?;
        // What a parked upload of the same sender holds counts as free for this one; it is
        // taken out only once this claim is granted (refused, it stays as it was).
        let superseding = state
            .parked
            .get(&grant)
            .and_then(|p| (p.owner == *agent).then_some(p.length));
        if state.grants.contains(&grant) && superseding.is_none() {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                "another upload for this grant is in progress (a grant serves one submission)",
            ));
        }
        let (count, held) = state.agents.get(agent).copied().unwrap_or((0, 0));
        let (count, held) = match superseding {
            Some(old) => (count.saturating_sub(1), held.saturating_sub(old)),
            None => (count, held),
        };
        if count >= quotas.max_uploads_per_agent {
            return Err(Refusal::from(WriteRefusal::Quota {
                kind: QuotaKind::UploadsPerAgent,
                limit: quotas.max_uploads_per_agent,
            }));
        }
        if held.saturating_add(bytes) > quotas.max_upload_bytes_per_agent {
            return Err(Refusal::from(WriteRefusal::Quota {
                kind: QuotaKind::UploadBytesPerAgent,
                limit: quotas.max_upload_bytes_per_agent,
            }));
        }
        let superseded = match superseding {
            Some(old) => {
                state.release(&grant, agent, old);
                state.parked.remove(&grant)
            }
            None => None,
        };
        state.grants.insert(grant);
        let (count, held) = state.agents.get(agent).copied().unwrap_or((0, 0));
        state
            .agents
            .insert(agent.clone(), (count + 1, held.saturating_add(bytes)));
        let taken = Arc::new(AtomicU64::new(0));
        state.receiving.insert(grant, (bytes, taken.clone()));
        Ok((
            UploadSlot {
                uploads: self,
                grant,
                agent: agent.clone(),
                bytes,
                parked: false,
                taken,
                resumed: None,
            },
            superseded,
        ))
    }

    /// Drops what is parked for `grant`, whoever sent it (the grant went to a source): returned,
    /// with its claim released, for the caller to discard off the async threads.
    pub fn abandon(&self, grant: &GrantId) -> Option<Parked> {
        let mut state = self.in_progress.lock().ok()?;
        let p = state.parked.remove(grant)?;
        state.release(grant, &p.owner, p.length);
        Some(p)
    }

    /// How many whole pieces of `agent`'s parked upload for `grant` are kept, and the SHA-256
    /// of its statement (0 and `None`: nothing kept for this caller).
    pub fn resume_point(&self, grant: &GrantId, agent: &SpiffeId) -> (u64, Option<[u8; 32]>) {
        let Ok(state) = self.in_progress.lock() else {
            return (0, None);
        };
        match state.parked.get(grant) {
            Some(p) if p.owner == *agent => {
                (p.state.leaves.len() as u64, Some(p.statement_sha256()))
            }
            _ => (0, None),
        }
    }

    /// Takes `agent`'s parked upload for `grant` back, with its claim, to go on from piece
    /// `from_piece`: only the same signed statement and length, from exactly the pieces kept.
    pub fn resume(
        &self,
        grant: GrantId,
        agent: &SpiffeId,
        statement: &WireSigned,
        length: u64,
        from_piece: u64,
    ) -> Result<(UploadSlot<'_>, UploadState), Refusal> {
        let mut state = self.in_progress.lock().map_err(|_| Refusal::internal())?;
        let kept = match state.parked.get(&grant) {
            Some(p) if p.owner == *agent => p,
            _ => {
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    "nothing of this upload is kept to resume (it expired, the relay restarted, or it never broke): send it again from the first piece",
                ))
            }
        };
        if kept.statement != *statement || kept.length != length {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                "the upload kept for this grant was made with another signed statement: send this one from the first piece",
            ));
        }
        let have = kept.state.leaves.len() as u64;
        if from_piece != have {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("the relay kept {have} pieces of this upload: resume from piece {have}, or send it again from the first piece"),
            ));
        }
        let Some(p) = state.parked.remove(&grant) else {
            return Err(Refusal::internal());
        };
        let kept = have.saturating_mul(crate::core::envelope::pieces::PIECE as u64);
        let taken = Arc::new(AtomicU64::new(kept.min(length)));
        state.receiving.insert(grant, (length, taken.clone()));
        Ok((
            UploadSlot {
                uploads: self,
                grant,
                agent: agent.clone(),
                bytes: length,
                parked: false,
                taken,
                resumed: Some((p.state.leaves.len(), p.until)),
            },
            p.state,
        ))
    }

    /// The bytes the uploads receiving now, other than `grant`'s, have declared and not yet
    /// taken: what they will still write to the disk. A new upload's room is checked with
    /// these counted, so that uploads begun together cannot each find room for themselves and
    /// together eat into the free-space reserve.
    pub fn outstanding(&self, grant: &GrantId) -> u64 {
        let Ok(state) = self.in_progress.lock() else {
            return 0;
        };
        state
            .receiving
            .iter()
            .filter(|(g, _)| *g != grant)
            .map(|(_, (bytes, taken))| bytes.saturating_sub(taken.load(Ordering::Relaxed)))
            .fold(0u64, u64::saturating_add)
    }

    /// Parked uploads past their time at `now`, with their claims released: returned for the
    /// caller to discard off the async threads.
    pub fn expired(&self, now: u64) -> Vec<Parked> {
        let Ok(mut state) = self.in_progress.lock() else {
            return Vec::new();
        };
        let due: Vec<GrantId> = state
            .parked
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(g, _)| *g)
            .collect();
        let mut gone = Vec::with_capacity(due.len());
        for g in due {
            if let Some(p) = state.parked.remove(&g) {
                state.release(&g, &p.owner, p.length);
                gone.push(p);
            }
        }
        gone
    }
}

impl UploadSlot<'_> {
    /// The grant this claim is for.
    pub fn grant(&self) -> &GrantId {
        &self.grant
    }

    /// Counts `n` more bytes of the body as taken.
    pub fn took(&self, n: u64) {
        self.taken.fetch_add(n, Ordering::Relaxed);
    }

    /// Keeps the broken upload (`state`, at its last whole piece) with this claim until
    /// `until`, for its sender to resume. A resumed upload that broke again without a new
    /// piece keeps the time it had: resuming and breaking off at once does not keep it longer.
    pub fn park(mut self, statement: WireSigned, length: u64, state: UploadState, until: u64) {
        let until = match self.resumed {
            Some((pieces, before)) if state.leaves.len() <= pieces => before.min(until),
            _ => until,
        };
        let Ok(mut s) = self.uploads.in_progress.lock() else {
            return;
        };
        self.parked = true;
        // Parked, it writes nothing until resumed (and a resume checks its room again).
        s.receiving.remove(&self.grant);
        let parked = Parked {
            owner: self.agent.clone(),
            statement,
            length,
            state,
            until,
        };
        s.parked.insert(self.grant, parked);
    }
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        if self.parked {
            return;
        }
        let Ok(mut state) = self.uploads.in_progress.lock() else {
            return;
        };
        state.release(&self.grant, &self.agent, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ids::PartyKind;

    struct NoBlob;
    impl BlobWriter for NoBlob {
        fn write(&mut self, _: &[u8]) -> crate::error::Result<()> {
            Ok(())
        }
        fn commit(self: Box<Self>) -> crate::error::Result<()> {
            Ok(())
        }
    }

    fn state(pieces: usize) -> UploadState {
        UploadState {
            envelope_id: EnvelopeId([7; 16]),
            blob: Box::new(NoBlob),
            validator: EnvelopeValidator::new(),
            leaves: vec![[0; 32]; pieces],
        }
    }

    fn code<T>(r: Result<T, Refusal>) -> Option<ErrorCode> {
        r.err().map(|e| e.code)
    }

    fn statement(b: u8) -> WireSigned {
        WireSigned {
            statement: vec![b; 8],
            signature: vec![b; 64],
        }
    }

    /// Helper-found: a resumed upload that broke again at once was parked anew, with a new
    /// time, so an agent resuming and resetting the stream over and over kept its blob and its
    /// claim for as long as the grant lived. Only a new piece earns a new time.
    #[test]
    fn a_resume_that_adds_no_piece_keeps_the_time_it_had() {
        let u = Uploads::default();
        let q = QuotaConfig::default();
        let bot = SpiffeId::new("t", PartyKind::Agent, "bot").unwrap();
        let g = GrantId([1; 16]);
        let (slot, _) = u.begin(g, &bot, 60, &q).unwrap();
        slot.park(statement(1), 60, state(2), 100);
        let (slot, kept) = u.resume(g, &bot, &statement(1), 60, 2).unwrap();
        slot.park(statement(1), 60, kept, 500);
        assert!(
            u.expired(100).len() == 1,
            "kept past its time by an empty resume"
        );
        let (slot, _) = u.begin(g, &bot, 60, &q).unwrap();
        slot.park(statement(1), 60, state(2), 100);
        let (slot, _) = u.resume(g, &bot, &statement(1), 60, 2).unwrap();
        slot.park(statement(1), 60, state(3), 500);
        assert!(u.expired(100).is_empty(), "a new piece earns a new time");
        assert_eq!(u.expired(500).len(), 1);
    }

    /// Helper-found: the room for an upload was checked against the free space alone, so
    /// uploads begun together each found room for themselves and together ate into the
    /// reserve. What the others receiving now will still write is counted; it shrinks as they
    /// take their bodies, and a parked or finished upload counts no more.
    #[test]
    fn what_other_uploads_will_still_write_is_counted_against_the_room() {
        let u = Uploads::default();
        let q = QuotaConfig::default();
        let bot = SpiffeId::new("t", PartyKind::Agent, "bot").unwrap();
        let other = SpiffeId::new("t", PartyKind::Agent, "other").unwrap();
        let (g1, g2, g3) = (GrantId([1; 16]), GrantId([2; 16]), GrantId([3; 16]));
        let (one, _) = u.begin(g1, &bot, 4_000, &q).unwrap();
        let (two, _) = u.begin(g2, &other, 3_000, &q).unwrap();
        assert_eq!(u.outstanding(&g1), 3_000, "not its own");
        assert_eq!(u.outstanding(&g2), 4_000);
        assert_eq!(u.outstanding(&g3), 7_000);
        one.took(1_500);
        two.took(3_000);
        assert_eq!(u.outstanding(&g3), 2_500);
        two.park(statement(1), 3_000, state(1), 100);
        assert_eq!(u.outstanding(&g3), 2_500, "parked writes nothing");
        drop(one);
        assert_eq!(u.outstanding(&g3), 0, "done");
        // Resumed, it counts what is left past the pieces kept.
        let piece = crate::core::envelope::pieces::PIECE as u64;
        let (three, _) = u.begin(g3, &bot, 3 * piece, &q).unwrap();
        three.park(statement(2), 3 * piece, state(1), 100);
        let (back, _) = u.resume(g3, &bot, &statement(2), 3 * piece, 1).unwrap();
        assert_eq!(u.outstanding(&g1), 2 * piece);
        back.took(piece);
        assert_eq!(u.outstanding(&g1), piece);
    }

    /// A parked upload keeps its claim; a new upload of the same grant by its sender takes it
    /// over, but one refused by the caps leaves it parked as it was; a dispatch abandons it;
    /// only its sender resumes it, with its statement and from its pieces; it lapses on time.
    #[test]
    fn a_parked_upload_keeps_its_claim_until_resumed_superseded_abandoned_or_lapsed() {
        let u = Uploads::default();
        let q = QuotaConfig {
            max_uploads_per_agent: 2,
            max_upload_bytes_per_agent: 100,
            ..QuotaConfig::default()
        };
        let bot = SpiffeId::new("t", PartyKind::Agent, "bot").unwrap();
        let other = SpiffeId::new("t", PartyKind::Agent, "other").unwrap();
        let g = GrantId([1; 16]);
        let (slot, _) = u.begin(g, &bot, 60, &q).unwrap();
        slot.park(statement(1), 60, state(3), 100);
        assert_eq!(u.resume_point(&g, &bot).0, 3);
        assert_eq!(u.resume_point(&g, &other), (0, None));
        // The claim stands: 60 of the agent's 100 bytes are held.
        assert_eq!(
            code(u.begin(GrantId([2; 16]), &bot, 41, &q)),
            Some(ErrorCode::QuotaExceeded)
        );
        assert_eq!(code(u.begin(g, &other, 1, &q)), Some(ErrorCode::Conflict));
        // Superseding with more than the caps allow: refused, and still parked.
        assert_eq!(
            code(u.begin(g, &bot, 101, &q)),
            Some(ErrorCode::QuotaExceeded)
        );
        assert_eq!(u.resume_point(&g, &bot).0, 3);
        // Resumed only by its sender, with its statement, from its pieces.
        assert_eq!(
            code(u.resume(g, &other, &statement(1), 60, 3)),
            Some(ErrorCode::Conflict)
        );
        assert_eq!(
            code(u.resume(g, &bot, &statement(2), 60, 3)),
            Some(ErrorCode::Conflict)
        );
        assert_eq!(
            code(u.resume(g, &bot, &statement(1), 60, 2)),
            Some(ErrorCode::Conflict)
        );
        let (slot, kept) = u.resume(g, &bot, &statement(1), 60, 3).unwrap();
        assert_eq!(kept.leaves.len(), 3);
        slot.park(statement(1), 60, kept, 100);
        // Superseded within the caps: the old one comes back to be discarded.
        let (slot, old) = u.begin(g, &bot, 100, &q).unwrap();
        assert!(old.is_some());
        assert_eq!(u.resume_point(&g, &bot), (0, None));
        slot.park(statement(3), 100, state(1), 100);
        // Abandoned (the grant went to a source): the claim is released.
        assert!(u.abandon(&g).is_some());
        let (a, _) = u.begin(GrantId([2; 16]), &bot, 100, &q).unwrap();
        a.park(statement(4), 100, state(1), 100);
        // Lapsed on time, with the claim.
        assert!(u.expired(99).is_empty());
        assert_eq!(u.expired(100).len(), 1);
        u.begin(GrantId([3; 16]), &bot, 100, &q).unwrap();
    }

    #[test]
    fn one_upload_per_grant_and_per_agent_caps_until_released() {
        let u = Uploads::default();
        let q = QuotaConfig {
            max_uploads_per_agent: 2,
            max_upload_bytes_per_agent: 100,
            ..QuotaConfig::default()
        };
        let bot = SpiffeId::new("t", PartyKind::Agent, "bot").unwrap();
        let (a, _) = u.begin(GrantId([1; 16]), &bot, 10, &q).unwrap();
        assert_eq!(
            u.begin(GrantId([1; 16]), &bot, 10, &q).err().unwrap().code,
            ErrorCode::Conflict
        );
        assert_eq!(
            u.begin(GrantId([2; 16]), &bot, 91, &q).err().unwrap().code,
            ErrorCode::QuotaExceeded
        );
        let (b, _) = u.begin(GrantId([2; 16]), &bot, 90, &q).unwrap();
        let third = u.begin(GrantId([3; 16]), &bot, 0, &q).err().unwrap();
        assert!(
            third.message.contains("max_uploads_per_agent"),
            "{}",
            third.message
        );
        drop(a);
        drop(b);
        u.begin(GrantId([1; 16]), &bot, 100, &q).unwrap();
    }
}
