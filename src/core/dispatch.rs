//! Sources as their own party (docs/sources.md): the statements that move a grant from the agent
//! that holds it to the data owner's sealing service, and back as an envelope or a refusal.
//!
//! - [`Dispatch`], signed by the agent: "fill grant G (of user U, for resource R, whose signed
//!   statement has digest D) at source S".
//! - [`SourceSubmission`], signed by the source: the envelope it sealed for that dispatch (the
//!   dispatch's digest, the ciphertext's digest (its piece tree root, `envelope::pieces`) and length).
//! - [`SourceRefusal`], signed by the source: it will not fill it, for a reason from a fixed
//!   list (never words of the data's own). An assignment the source cannot verify gets no
//!   refusal at all: the source signs nothing about what it could not check (a relay that
//!   forges assignments must not be able to make a source sign refusals).
//!
//! The relay and the source both check a dispatch against the grant with [`check_dispatch`].

use super::directory::MAX_SPIFFE_LEN;
use super::grant::{Grant, MAX_RESOURCE_LEN};
use super::sign::{statement_reader, statement_writer, Signed, SigningKey, StatementType};
use crate::error::{Error, Result};
use crate::ids::{GrantId, PartyKind, SpiffeId};

/// An agent's request that a source fill one of its grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    pub grant_id: GrantId,
    /// `core::store::statement_digest` of the user's signed grant: the dispatch names exactly
    /// that grant, not another with the same id.
    pub grant_digest: [u8; 32],
    pub user: SpiffeId,
    pub agent: SpiffeId,
    pub source: SpiffeId,
    pub resource: String,
    pub time: u64,
}

impl Dispatch {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::Dispatch);
        w.bytes(self.grant_id.as_bytes())
            .bytes(&self.grant_digest)
            .str(&self.user.to_string())
            .str(&self.agent.to_string())
            .str(&self.source.to_string())
            .str(&self.resource)
            .u64(self.time);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::Dispatch)?;
        let d = Dispatch {
            grant_id: GrantId(r.fixed::<16>("grant id")?),
            grant_digest: r.fixed::<32>("grant digest")?,
            user: r.str(MAX_SPIFFE_LEN, "user")?.parse()?,
            agent: r.str(MAX_SPIFFE_LEN, "agent")?.parse()?,
            source: r.str(MAX_SPIFFE_LEN, "source")?.parse()?,
            resource: r.str(MAX_RESOURCE_LEN, "resource")?.to_owned(),
            time: r.u64()?,
        };
        r.finish()?;
        if d.user.kind() != PartyKind::User
            || d.agent.kind() != PartyKind::Agent
            || d.source.kind() != PartyKind::Source
        {
            return Err(Error::bad_input(
                "a dispatch names a user, an agent and a source, in that order",
            ));
        }
        Ok(d)
    }

    pub fn sign(&self, agent_key: &SigningKey) -> Signed {
        Signed::sign(StatementType::Dispatch, self.encode(), agent_key)
    }
}

/// Checks that a dispatch names exactly `grant` (whose signed statement has `grant_digest`):
/// its id, user, agent and resource. The relay checks it before it queues the assignment, and
/// the source again before it fetches anything.
pub fn check_dispatch(d: &Dispatch, grant: &Grant, grant_digest: &[u8; 32]) -> Result<()> {
    if d.grant_id != grant.grant_id || &d.grant_digest != grant_digest {
        return Err(Error::verification(
            "the dispatch does not name this grant (another id or another signed grant)",
        ));
    }
    if d.user != grant.user || d.agent != grant.agent {
        return Err(Error::verification(
            "the dispatch names another user or agent than the grant",
        ));
    }
    if d.resource != grant.resource {
        return Err(Error::verification(
            "the dispatch names another resource than the grant",
        ));
    }
    Ok(())
}

/// A source's statement of what it sealed for a dispatched grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSubmission {
    pub grant_id: GrantId,
    pub user: SpiffeId,
    pub agent: SpiffeId,
    pub source: SpiffeId,
    /// `core::store::statement_digest` of the agent's signed dispatch.
    pub dispatch_digest: [u8; 32],
    pub ciphertext_root: [u8; 32],
    pub ciphertext_len: u64,
}

impl SourceSubmission {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::SourceSubmission);
        w.bytes(self.grant_id.as_bytes())
            .str(&self.user.to_string())
            .str(&self.agent.to_string())
            .str(&self.source.to_string())
            .bytes(&self.dispatch_digest)
            .bytes(&self.ciphertext_root)
            .u64(self.ciphertext_len);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::SourceSubmission)?;
        let s = SourceSubmission {
            grant_id: GrantId(r.fixed::<16>("grant id")?),
            user: r.str(MAX_SPIFFE_LEN, "user")?.parse()?,
            agent: r.str(MAX_SPIFFE_LEN, "agent")?.parse()?,
            source: r.str(MAX_SPIFFE_LEN, "source")?.parse()?,
            dispatch_digest: r.fixed::<32>("dispatch digest")?,
            ciphertext_root: r.fixed::<32>("ciphertext digest")?,
            ciphertext_len: r.u64()?,
        };
        r.finish()?;
        Ok(s)
    }

    pub fn sign(&self, source_key: &SigningKey) -> Signed {
        Signed::sign(StatementType::SourceSubmission, self.encode(), source_key)
    }

    /// Whether this statement is the one `dispatch` (with `dispatch_digest`) asked for.
    pub fn answers(&self, dispatch: &Dispatch, dispatch_digest: &[u8; 32]) -> Result<()> {
        if self.grant_id != dispatch.grant_id
            || self.user != dispatch.user
            || self.agent != dispatch.agent
            || self.source != dispatch.source
            || &self.dispatch_digest != dispatch_digest
        {
            return Err(Error::verification(
                "the source's statement does not answer the agent's dispatch (another grant, user, agent, source or dispatch)",
            ));
        }
        Ok(())
    }
}

/// Why a source refused a dispatched grant: a fixed list, so that nothing a data source chose
/// to say travels to the agent (threat 50).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The data owner's policy at the source does not allow it.
    Policy,
    /// The source could not read the data (after its retries).
    Unreadable,
    /// No connector of the source serves the resource.
    NotServed,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 3] = [
        RefusalReason::Policy,
        RefusalReason::Unreadable,
        RefusalReason::NotServed,
    ];
    pub fn code(self) -> u8 {
        match self {
            RefusalReason::Policy => 1,
            RefusalReason::Unreadable => 3,
            RefusalReason::NotServed => 4,
        }
    }
    pub fn from_code(code: u8) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.code() == code)
            .ok_or_else(|| Error::bad_input(format!("unknown refusal reason {code}")))
    }
    /// The one sentence shown for it.
    pub fn sentence(self) -> &'static str {
        match self {
            RefusalReason::Policy => "the data owner's policy at the source does not allow it",
            RefusalReason::Unreadable => "the source could not read the data",
            RefusalReason::NotServed => "no connector of the source serves the resource",
        }
    }
}

/// A source's signed refusal to fill a dispatched grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRefusal {
    pub grant_id: GrantId,
    pub user: SpiffeId,
    pub agent: SpiffeId,
    pub source: SpiffeId,
    pub reason: RefusalReason,
    pub time: u64,
}

impl SourceRefusal {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::SourceRefusal);
        w.bytes(self.grant_id.as_bytes())
            .str(&self.user.to_string())
            .str(&self.agent.to_string())
            .str(&self.source.to_string())
            .u8(self.reason.code())
            .u64(self.time);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::SourceRefusal)?;
        let s = SourceRefusal {
            grant_id: GrantId(r.fixed::<16>("grant id")?),
            user: r.str(MAX_SPIFFE_LEN, "user")?.parse()?,
            agent: r.str(MAX_SPIFFE_LEN, "agent")?.parse()?,
            source: r.str(MAX_SPIFFE_LEN, "source")?.parse()?,
            reason: RefusalReason::from_code(r.u8()?)?,
            time: r.u64()?,
        };
        r.finish()?;
        Ok(s)
    }

    pub fn sign(&self, source_key: &SigningKey) -> Signed {
        Signed::sign(StatementType::SourceRefusal, self.encode(), source_key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(kind: PartyKind, name: &str) -> SpiffeId {
        SpiffeId::new("example.org", kind, name).unwrap()
    }

    fn grant() -> Grant {
        Grant {
            grant_id: GrantId([7; 16]),
            user: id(PartyKind::User, "alice"),
            agent: id(PartyKind::Agent, "bot"),
            resource: "payroll/alice".into(),
            purpose: "p".into(),
            created: 1,
            expires: 100,
            max_bytes: 10,
        }
    }

    fn dispatch() -> Dispatch {
        Dispatch {
            grant_id: GrantId([7; 16]),
            grant_digest: [1; 32],
            user: id(PartyKind::User, "alice"),
            agent: id(PartyKind::Agent, "bot"),
            source: id(PartyKind::Source, "hr"),
            resource: "payroll/alice".into(),
            time: 5,
        }
    }

    #[test]
    fn statements_round_trip_and_a_dispatch_must_name_its_grant_exactly() {
        let d = dispatch();
        assert_eq!(Dispatch::decode(&d.encode()).unwrap(), d);
        check_dispatch(&d, &grant(), &[1; 32]).unwrap();
        // Every field the grant fixes is checked.
        assert!(check_dispatch(&d, &grant(), &[2; 32]).is_err());
        let mut g = grant();
        g.resource = "payroll/bob".into();
        assert!(check_dispatch(&d, &g, &[1; 32]).is_err());
        let mut g = grant();
        g.user = id(PartyKind::User, "mallory");
        assert!(check_dispatch(&d, &g, &[1; 32]).is_err());
        let mut g = grant();
        g.grant_id = GrantId([8; 16]);
        assert!(check_dispatch(&d, &g, &[1; 32]).is_err());
        // Kinds in the wrong places are refused at decoding.
        let mut bad = dispatch();
        bad.source = id(PartyKind::Agent, "hr");
        assert!(Dispatch::decode(&bad.encode()).is_err());

        let s = SourceSubmission {
            grant_id: d.grant_id,
            user: d.user.clone(),
            agent: d.agent.clone(),
            source: d.source.clone(),
            dispatch_digest: [3; 32],
            ciphertext_root: [4; 32],
            ciphertext_len: 9,
        };
        assert_eq!(SourceSubmission::decode(&s.encode()).unwrap(), s);
        s.answers(&d, &[3; 32]).unwrap();
        assert!(s.answers(&d, &[5; 32]).is_err());
        for reason in RefusalReason::ALL {
            let r = SourceRefusal {
                grant_id: d.grant_id,
                user: d.user.clone(),
                agent: d.agent.clone(),
                source: d.source.clone(),
                reason,
                time: 3,
            };
            assert_eq!(SourceRefusal::decode(&r.encode()).unwrap(), r);
        }
        // A statement of one type never decodes as another.
        assert!(SourceSubmission::decode(&d.encode()).is_err());
        assert!(Dispatch::decode(&s.encode()).is_err());
    }
}
