//! The life of a grant, written once: open → used by one submission, closed by expiry, bounded
//! by its max bytes, addressed to one agent, and (where the catalog says so) usable only once a
//! second person approved it. The relay checks these rules before it reads a body, and every
//! [`Store`](super::store::Store) applies the same functions inside its transaction, so racing
//! requests are decided by the store with the same answers.

use super::store::{GrantRecord, GrantState, StoredSigned, WriteRefusal};
use crate::ids::{EnvelopeId, SpiffeId};

/// Whether `agent` may use `grant` for an envelope of `length` bytes at `now`.
pub fn check_consume(
    grant: &GrantRecord,
    agent: &SpiffeId,
    length: u64,
    now: u64,
) -> Result<(), WriteRefusal> {
    if grant.agent != *agent {
        return Err(WriteRefusal::WrongAgent);
    }
    match grant.state {
        GrantState::Open => {}
        GrantState::Used { .. } => return Err(WriteRefusal::GrantUsed),
        GrantState::Expired => return Err(WriteRefusal::GrantExpired),
        GrantState::Denied => return Err(WriteRefusal::GrantDenied),
    }
    if now >= grant.expires {
        return Err(WriteRefusal::GrantExpired);
    }
    if grant.needs_approval && grant.approval.is_none() {
        return Err(WriteRefusal::NotApproved);
    }
    if length > grant.max_bytes {
        return Err(WriteRefusal::TooLarge {
            max: grant.max_bytes,
        });
    }
    Ok(())
}

/// open → used: the grant as it is once `envelope_id` consumed it.
pub fn consume(
    grant: &GrantRecord,
    agent: &SpiffeId,
    length: u64,
    now: u64,
    envelope_id: EnvelopeId,
) -> Result<GrantRecord, WriteRefusal> {
    check_consume(grant, agent, length, now)?;
    let mut used = grant.clone();
    used.state = GrantState::Used { envelope_id };
    Ok(used)
}

/// Whether an approval `grant` still waits for has lapsed at `now`: nobody approved or denied
/// it within `approval_ttl` seconds of its creation (`[quotas]`-style protection: such grants
/// stop counting against their user's and agent's quotas sooner than their own expiry).
pub fn approval_lapsed(grant: &GrantRecord, now: u64, approval_ttl: u64) -> bool {
    grant.state == GrantState::Open
        && grant.needs_approval
        && grant.approval.is_none()
        && now >= grant.created.saturating_add(approval_ttl)
}

/// open → expired: the sweep closes an unused grant whose time has passed, or whose approval
/// lapsed (see [`approval_lapsed`]).
pub fn expire(
    grant: &GrantRecord,
    now: u64,
    approval_ttl: u64,
) -> Result<GrantRecord, WriteRefusal> {
    match grant.state {
        GrantState::Open if now >= grant.expires || approval_lapsed(grant, now, approval_ttl) => {
            let mut closed = grant.clone();
            closed.state = GrantState::Expired;
            Ok(closed)
        }
        GrantState::Open => Err(WriteRefusal::GrantNotExpired),
        GrantState::Used { .. } => Err(WriteRefusal::GrantUsed),
        GrantState::Expired => Err(WriteRefusal::Duplicate),
        GrantState::Denied => Err(WriteRefusal::GrantDenied),
    }
}

/// Whether a second person's approval (or denial) can still be recorded on `grant` at `now`:
/// not after its expiry, nor after its approval lapsed (`approval_ttl`).
pub fn check_approve(grant: &GrantRecord, now: u64, approval_ttl: u64) -> Result<(), WriteRefusal> {
    match grant.state {
        GrantState::Open => {}
        GrantState::Used { .. } => return Err(WriteRefusal::GrantUsed),
        GrantState::Expired => return Err(WriteRefusal::GrantExpired),
        GrantState::Denied => return Err(WriteRefusal::GrantDenied),
    }
    if !grant.needs_approval {
        return Err(WriteRefusal::NotAwaitingApproval);
    }
    if grant.approval.is_some() {
        return Err(WriteRefusal::Duplicate);
    }
    if now >= grant.expires || approval_lapsed(grant, now, approval_ttl) {
        return Err(WriteRefusal::GrantExpired);
    }
    Ok(())
}

/// The grant with `approval` recorded.
pub fn approve(
    grant: &GrantRecord,
    approval: &StoredSigned,
    now: u64,
    approval_ttl: u64,
) -> Result<GrantRecord, WriteRefusal> {
    check_approve(grant, now, approval_ttl)?;
    let mut approved = grant.clone();
    approved.approval = Some(approval.clone());
    Ok(approved)
}

/// open (awaiting approval) → denied: the grant with the signed denial recorded in place of an
/// approval; it is closed for good.
pub fn deny(
    grant: &GrantRecord,
    denial: &StoredSigned,
    now: u64,
    approval_ttl: u64,
) -> Result<GrantRecord, WriteRefusal> {
    check_approve(grant, now, approval_ttl)?;
    let mut denied = grant.clone();
    denied.state = GrantState::Denied;
    denied.approval = Some(denial.clone());
    Ok(denied)
}

/// Whether the addressed agent sees the grant in its list: open, unexpired, and approved where
/// approval is needed (a grant awaiting approval stays invisible to the agent).
pub fn is_ready(grant: &GrantRecord, now: u64) -> bool {
    grant.state == GrantState::Open
        && now < grant.expires
        && (!grant.needs_approval || grant.approval.is_some())
}

/// Whether the grant awaits a second person's approval at `now`.
pub fn awaits_approval(grant: &GrantRecord, now: u64) -> bool {
    grant.state == GrantState::Open
        && now < grant.expires
        && grant.needs_approval
        && grant.approval.is_none()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ids::{GrantId, PartyKind};

    fn id(kind: PartyKind, name: &str) -> SpiffeId {
        SpiffeId::new("example.org", kind, name).unwrap()
    }

    fn grant(needs_approval: bool) -> GrantRecord {
        GrantRecord {
            grant_id: GrantId([1; 16]),
            user: id(PartyKind::User, "alice"),
            agent: id(PartyKind::Agent, "bot"),
            expires: 100,
            max_bytes: 10,
            created: 0,
            grant: StoredSigned {
                statement: vec![1],
                signature: vec![2],
            },
            state: GrantState::Open,
            resource: "tickets/1".into(),
            needs_approval,
            approval: None,
        }
    }

    #[test]
    fn a_grant_serves_one_submission_by_its_agent_before_expiry_within_its_size() {
        let g = grant(false);
        let bot = id(PartyKind::Agent, "bot");
        let other = id(PartyKind::Agent, "other");
        let e = EnvelopeId([9; 16]);
        assert_eq!(consume(&g, &other, 1, 0, e), Err(WriteRefusal::WrongAgent));
        assert_eq!(
            consume(&g, &bot, 11, 0, e),
            Err(WriteRefusal::TooLarge { max: 10 })
        );
        assert_eq!(
            consume(&g, &bot, 1, 100, e),
            Err(WriteRefusal::GrantExpired)
        );
        let used = consume(&g, &bot, 10, 99, e).unwrap();
        assert_eq!(used.state, GrantState::Used { envelope_id: e });
        assert_eq!(consume(&used, &bot, 1, 0, e), Err(WriteRefusal::GrantUsed));
        assert!(is_ready(&g, 99) && !is_ready(&g, 100) && !is_ready(&used, 0));
    }

    #[test]
    fn a_grant_that_needs_approval_is_usable_only_once_approved_before_expiry() {
        let g = grant(true);
        let bot = id(PartyKind::Agent, "bot");
        let e = EnvelopeId([9; 16]);
        let a = StoredSigned {
            statement: vec![3],
            signature: vec![4],
        };
        assert_eq!(consume(&g, &bot, 1, 0, e), Err(WriteRefusal::NotApproved));
        assert!(!is_ready(&g, 0) && awaits_approval(&g, 0) && !awaits_approval(&g, 100));
        assert_eq!(approve(&g, &a, 100, 1_000), Err(WriteRefusal::GrantExpired));
        let approved = approve(&g, &a, 50, 1_000).unwrap();
        assert_eq!(
            approve(&approved, &a, 50, 1_000),
            Err(WriteRefusal::Duplicate)
        );
        assert!(is_ready(&approved, 50) && !awaits_approval(&approved, 50));
        let used = consume(&approved, &bot, 1, 50, e).unwrap();
        assert_eq!(approve(&used, &a, 50, 1_000), Err(WriteRefusal::GrantUsed));
    }

    /// Threat 51: an approval nobody gives lapses `approval_ttl` after the grant was made, long
    /// before the grant's own expiry; an approved grant does not lapse.
    #[test]
    fn an_unanswered_approval_lapses_and_closes_the_grant() {
        let g = grant(true);
        let a = StoredSigned {
            statement: vec![3],
            signature: vec![4],
        };
        let ttl = 10;
        assert!(!approval_lapsed(&g, g.created + ttl - 1, ttl));
        assert!(approval_lapsed(&g, g.created + ttl, ttl));
        assert_eq!(
            expire(&g, g.created + ttl - 1, ttl),
            Err(WriteRefusal::GrantNotExpired)
        );
        assert_eq!(
            approve(&g, &a, g.created + ttl, ttl),
            Err(WriteRefusal::GrantExpired)
        );
        assert_eq!(
            deny(&g, &a, g.created + ttl, ttl),
            Err(WriteRefusal::GrantExpired)
        );
        let closed = expire(&g, g.created + ttl, ttl).unwrap();
        assert_eq!(closed.state, GrantState::Expired);
        let approved = approve(&g, &a, g.created + 1, ttl).unwrap();
        assert!(!approval_lapsed(&approved, g.created + ttl, ttl));
        assert_eq!(
            expire(&approved, g.created + ttl, ttl),
            Err(WriteRefusal::GrantNotExpired)
        );
    }

    #[test]
    fn the_sweep_closes_only_open_grants_past_their_time() {
        let g = grant(false);
        let bot = id(PartyKind::Agent, "bot");
        assert_eq!(expire(&g, 99, 1_000), Err(WriteRefusal::GrantNotExpired));
        let closed = expire(&g, 100, 1_000).unwrap();
        assert_eq!(closed.state, GrantState::Expired);
        assert_eq!(expire(&closed, 100, 1_000), Err(WriteRefusal::Duplicate));
        assert_eq!(
            consume(&closed, &bot, 1, 0, EnvelopeId([1; 16])),
            Err(WriteRefusal::GrantExpired)
        );
        assert!(!is_ready(&closed, 0) && !awaits_approval(&closed, 0));
    }
}
