//! The submission statement: age does not say who made a file, so the agent signs
//! `{grant id, user, agent, ciphertext digest, length}` (the digest is the root of the ciphertext's piece tree, `super::pieces`) and the user's client verifies it
//! (against the agent's authority-signed directory entry) before opening anything.

use crate::core::directory::MAX_SPIFFE_LEN;
use crate::core::sign::{
    statement_reader, statement_writer, PublicKey, Signed, SigningKey, StatementType,
};
use crate::error::{Error, Result};
use crate::ids::{GrantId, SpiffeId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub grant_id: GrantId,
    pub user: SpiffeId,
    pub agent: SpiffeId,
    pub ciphertext_root: [u8; 32],
    pub ciphertext_len: u64,
}

impl Submission {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::Submission);
        w.bytes(self.grant_id.as_bytes())
            .str(&self.user.to_string())
            .str(&self.agent.to_string())
            .bytes(&self.ciphertext_root)
            .u64(self.ciphertext_len);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::Submission)?;
        let s = Submission {
            grant_id: GrantId(r.fixed::<16>("grant id")?),
            user: r.str(MAX_SPIFFE_LEN, "user")?.parse()?,
            agent: r.str(MAX_SPIFFE_LEN, "agent")?.parse()?,
            ciphertext_root: r.fixed::<32>("ciphertext digest")?,
            ciphertext_len: r.u64()?,
        };
        r.finish()?;
        Ok(s)
    }

    pub fn sign(&self, agent_key: &SigningKey) -> Signed {
        Signed::sign(StatementType::Submission, self.encode(), agent_key)
    }

    /// Verifies the agent's signature and that the statement describes exactly this
    /// ciphertext (digest and length), for this grant, user and agent.
    pub fn verify(
        signed: &Signed,
        agent_key: &PublicKey,
        expected: &Submission,
    ) -> Result<Submission> {
        let s = Submission::decode(&signed.statement)?;
        signed.verify(agent_key).map_err(|e| {
            Error::verification(format!(
                "the submission statement from {} does not verify: {e}",
                s.agent.short()
            ))
        })?;
        if s.grant_id != expected.grant_id {
            return Err(Error::verification(
                "the submission statement is for another grant",
            ));
        }
        if s.user != expected.user || s.agent != expected.agent {
            return Err(Error::verification(
                "the submission statement names another user or agent",
            ));
        }
        if s.ciphertext_root != expected.ciphertext_root
            || s.ciphertext_len != expected.ciphertext_len
        {
            return Err(Error::verification(
                "the ciphertext does not match the agent's signed statement (altered in transit or at rest)",
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PartyKind;

    #[test]
    fn any_changed_field_or_ciphertext_fails() {
        let agent = SigningKey::generate().unwrap();
        let s = Submission {
            grant_id: GrantId([7; 16]),
            user: SpiffeId::new("example.org", PartyKind::User, "alice").unwrap(),
            agent: SpiffeId::new("example.org", PartyKind::Agent, "bot").unwrap(),
            ciphertext_root: crate::core::directory::sha256(b"ciphertext"),
            ciphertext_len: 10,
        };
        let signed = s.sign(&agent);
        Submission::verify(&signed, &agent.public(), &s).unwrap();

        // Each field changed in what the client observes.
        let mut variants = Vec::new();
        let mut v = s.clone();
        v.grant_id.0[0] ^= 1;
        variants.push(v);
        let mut v = s.clone();
        v.user = SpiffeId::new("example.org", PartyKind::User, "mallory").unwrap();
        variants.push(v);
        let mut v = s.clone();
        v.agent = SpiffeId::new("example.org", PartyKind::Agent, "other").unwrap();
        variants.push(v);
        let mut v = s.clone();
        v.ciphertext_root = crate::core::directory::sha256(b"ciphertexT");
        variants.push(v);
        let mut v = s.clone();
        v.ciphertext_len = 11;
        variants.push(v);
        for v in &variants {
            assert!(
                Submission::verify(&signed, &agent.public(), v).is_err(),
                "{v:?}"
            );
        }
        // Any flipped statement byte, and another agent's key, fail.
        for i in 0..signed.statement.len() {
            let mut t = signed.clone();
            t.statement[i] ^= 0x01;
            assert!(
                Submission::verify(&t, &agent.public(), &s).is_err(),
                "byte {i}"
            );
        }
        let other = SigningKey::generate().unwrap();
        assert!(Submission::verify(&signed, &other.public(), &s).is_err());
        let resigned = s.sign(&other);
        assert!(Submission::verify(&resigned, &agent.public(), &s).is_err());
    }
}
