//! Grants (a user asks an agent for a resource) and delivery receipts (the user acknowledges
//! an envelope), both signed by the user in the canonical statement format.

use super::directory::MAX_SPIFFE_LEN;
use super::sign::{
    statement_reader, statement_writer, PublicKey, Signed, SigningKey, StatementType,
};
use crate::error::{Error, Result};
use crate::ids::{EnvelopeId, GrantId, PartyKind, SpiffeId};

pub use super::resource::MAX_RESOURCE_LEN;
pub const MAX_PURPOSE_LEN: usize = 512;

/// A user's request that an agent retrieve a resource for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub grant_id: GrantId,
    pub user: SpiffeId,
    pub agent: SpiffeId,
    pub resource: String,
    pub purpose: String,
    pub created: u64,
    pub expires: u64,
    pub max_bytes: u64,
}

fn check_text(value: &str, max: usize, what: &str) -> Result<()> {
    if value.is_empty() && what == "resource" {
        return Err(Error::bad_input("the resource is empty"));
    }
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(Error::bad_input(format!(
            "the {what} must be at most {max} bytes of text without control characters"
        )));
    }
    Ok(())
}

pub use crate::text::is_deceptive_char;

/// Where ordinary writing needs an invisible character: a zero-width (non-)joiner between two
/// letters or marks of a script that joins (Persian, Arabic, the Indic scripts: non-ASCII), a
/// joiner between two emoji, and an emoji or text presentation selector right after an emoji.
/// Next to ASCII, or anywhere else, it is refused.
fn joins_as_written(before: Option<&char>, c: char, after: Option<&char>) -> bool {
    // A letter or a mark of a non-Latin script (a virama is a mark, not a letter).
    let letter = |x: Option<&char>| {
        x.is_some_and(|x| {
            !x.is_ascii()
                && !x.is_whitespace()
                && !is_deceptive_char(*x)
                && (x.is_alphabetic() || !x.is_alphanumeric())
        })
    };
    let symbol = |x: Option<&char>| {
        x.is_some_and(|x| {
            !x.is_ascii() && !x.is_alphanumeric() && !x.is_whitespace() && !is_deceptive_char(*x)
        })
    };
    match c {
        '\u{200C}' => letter(before) && letter(after),
        '\u{200D}' => (letter(before) && letter(after)) || (symbol(before) && symbol(after)),
        '\u{FE0E}' | '\u{FE0F}' => symbol(before),
        _ => false,
    }
}

/// Refuses text that a person and a model could read differently (see
/// [`is_deceptive_char`]), naming the first such character by its code point. Checked when a
/// grant is made (by the client that signs it and by the relay that stores it), so the
/// approver, the requester and the agent's model are shown the same visible text.
pub fn check_display_text(value: &str, what: &str) -> Result<()> {
    let chars: Vec<char> = value.chars().collect();
    let found = chars.iter().enumerate().find(|(i, c)| {
        is_deceptive_char(**c)
            && !joins_as_written(chars.get(i.wrapping_sub(1)), **c, chars.get(i + 1))
    });
    match found.map(|(_, c)| *c) {
        None => Ok(()),
        Some(c) => Err(Error::bad_input(format!(
            "the {what} holds U+{:04X}, an invisible or direction-changing character that could show a person one text and a model another: write it without",
            c as u32
        ))),
    }
}

impl Grant {
    pub fn validate(&self) -> Result<()> {
        if self.user.kind() != PartyKind::User || self.agent.kind() != PartyKind::Agent {
            return Err(Error::bad_input("a grant is from a user to an agent"));
        }
        super::resource::validate_resource(&self.resource)?;
        check_text(&self.purpose, MAX_PURPOSE_LEN, "purpose")?;
        super::codec::check_stored(self.expires, "grant's expiry")?;
        if self.expires <= self.created {
            return Err(Error::bad_input("the grant expires before it is created"));
        }
        if self.max_bytes == 0 {
            return Err(Error::bad_input("max bytes must be at least 1"));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::Grant);
        w.bytes(self.grant_id.as_bytes())
            .str(&self.user.to_string())
            .str(&self.agent.to_string())
            .str(&self.resource)
            .str(&self.purpose)
            .u64(self.created)
            .u64(self.expires)
            .u64(self.max_bytes);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::Grant)?;
        let g = Grant {
            grant_id: GrantId(r.fixed::<16>("grant id")?),
            user: r.str(MAX_SPIFFE_LEN, "user")?.parse()?,
            agent: r.str(MAX_SPIFFE_LEN, "agent")?.parse()?,
            resource: r.str(MAX_RESOURCE_LEN, "resource")?.to_owned(),
            purpose: r.str(MAX_PURPOSE_LEN, "purpose")?.to_owned(),
            created: r.u64()?,
            expires: r.stored_u64("grant's expiry")?,
            max_bytes: r.u64()?,
        };
        r.finish()?;
        g.validate()?;
        Ok(g)
    }

    pub fn sign(&self, user_key: &SigningKey) -> Result<Signed> {
        self.validate()?;
        check_display_text(&self.purpose, "purpose")?;
        Ok(Signed::sign(StatementType::Grant, self.encode(), user_key))
    }

    /// Parses a signed grant and checks the user's signature.
    pub fn verify(signed: &Signed, user_key: &PublicKey) -> Result<Self> {
        let g = Self::decode(&signed.statement)?;
        signed.verify(user_key).map_err(|e| {
            Error::verification(format!(
                "the grant is not signed by {}: {e}",
                g.user.short()
            ))
        })?;
        Ok(g)
    }

    /// [`Grant::verify`] of a grant the holder of `user_key` should have signed: signing it
    /// again and comparing ([`SigningKey::made`]) stands for the check when the bytes match.
    pub fn verify_own(signed: &Signed, user_key: &super::sign::SigningKey) -> Result<Self> {
        if user_key.made(&signed.statement, &signed.signature) {
            return Self::decode(&signed.statement);
        }
        Self::verify(signed, &user_key.public())
    }

    /// SHA-256 of the signed statement: what an approval is bound to.
    pub fn digest(&self) -> [u8; 32] {
        super::directory::sha256(&self.encode())
    }
}

/// A second person's approval of a grant, bound to the SHA-256 of the grant's signed statement:
/// an approval for a grant that was changed in any way does not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub grant_id: GrantId,
    pub grant_sha256: [u8; 32],
    pub approver: SpiffeId,
    pub time: u64,
}

impl Approval {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::Approval);
        w.bytes(self.grant_id.as_bytes())
            .bytes(&self.grant_sha256)
            .str(&self.approver.to_string())
            .u64(self.time);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::Approval)?;
        let a = Approval {
            grant_id: GrantId(r.fixed::<16>("grant id")?),
            grant_sha256: r.fixed::<32>("grant digest")?,
            approver: r.str(MAX_SPIFFE_LEN, "approver")?.parse()?,
            time: r.u64()?,
        };
        r.finish()?;
        Ok(a)
    }

    pub fn sign(&self, key: &SigningKey) -> Signed {
        Signed::sign(StatementType::Approval, self.encode(), key)
    }

    pub fn verify(signed: &Signed, key: &PublicKey) -> Result<Self> {
        let a = Self::decode(&signed.statement)?;
        signed.verify(key).map_err(|e| {
            Error::verification(format!(
                "the approval is not signed by {}: {e}",
                a.approver.short()
            ))
        })?;
        Ok(a)
    }
}

/// A second person's refusal of a grant that awaits approval, bound to the grant's SHA-256 like
/// an approval; the relay closes the grant and logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub grant_id: GrantId,
    pub grant_sha256: [u8; 32],
    pub approver: SpiffeId,
    /// Why, in a line (may be empty).
    pub reason: String,
    pub time: u64,
}

/// The longest reason a denial carries.
pub const MAX_REASON: usize = 512;

/// A reason a person gives (a denial's, an admin's for a quarantine): at most [`MAX_REASON`]
/// bytes of text a person and a model read alike (no control, invisible or direction-changing
/// character, nothing a database cannot store as text).
pub fn check_reason(reason: &str) -> Result<()> {
    check_text(reason, MAX_REASON, "reason")?;
    check_display_text(reason, "reason")
}

impl Denial {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::Denial);
        w.bytes(self.grant_id.as_bytes())
            .bytes(&self.grant_sha256)
            .str(&self.approver.to_string())
            .str(&self.reason)
            .u64(self.time);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::Denial)?;
        let d = Denial {
            grant_id: GrantId(r.fixed::<16>("grant id")?),
            grant_sha256: r.fixed::<32>("grant digest")?,
            approver: r.str(MAX_SPIFFE_LEN, "approver")?.parse()?,
            reason: r.str(MAX_REASON, "reason")?.to_owned(),
            time: r.u64()?,
        };
        r.finish()?;
        check_text(&d.reason, MAX_REASON, "reason")?;
        Ok(d)
    }

    pub fn sign(&self, key: &SigningKey) -> Signed {
        Signed::sign(StatementType::Denial, self.encode(), key)
    }

    pub fn verify(signed: &Signed, key: &PublicKey) -> Result<Self> {
        let d = Self::decode(&signed.statement)?;
        signed.verify(key).map_err(|e| {
            Error::verification(format!(
                "the denial is not signed by {}: {e}",
                d.approver.short()
            ))
        })?;
        Ok(d)
    }
}

/// What the user's client found when it opened an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeliveryStatus {
    Delivered,
    /// Not sealed to the user's key, or corrupt: only the user's client can tell.
    Undecryptable,
}

impl DeliveryStatus {
    pub fn code(self) -> u8 {
        match self {
            DeliveryStatus::Delivered => 1,
            DeliveryStatus::Undecryptable => 2,
        }
    }
    pub fn from_code(c: u8) -> Result<Self> {
        match c {
            1 => Ok(DeliveryStatus::Delivered),
            2 => Ok(DeliveryStatus::Undecryptable),
            _ => Err(Error::bad_input("unknown delivery status")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Undecryptable => "undecryptable",
        }
    }
}

/// A delivery receipt, signed by the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub envelope_id: EnvelopeId,
    pub grant_id: GrantId,
    pub user: SpiffeId,
    pub agent: SpiffeId,
    pub ciphertext_root: [u8; 32],
    pub status: DeliveryStatus,
    pub time: u64,
}

impl Receipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::Receipt);
        w.bytes(self.envelope_id.as_bytes())
            .bytes(self.grant_id.as_bytes())
            .str(&self.user.to_string())
            .str(&self.agent.to_string())
            .bytes(&self.ciphertext_root)
            .u8(self.status.code())
            .u64(self.time);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::Receipt)?;
        let rc = Receipt {
            envelope_id: EnvelopeId(r.fixed::<16>("envelope id")?),
            grant_id: GrantId(r.fixed::<16>("grant id")?),
            user: r.str(MAX_SPIFFE_LEN, "user")?.parse()?,
            agent: r.str(MAX_SPIFFE_LEN, "agent")?.parse()?,
            ciphertext_root: r.fixed::<32>("ciphertext digest")?,
            status: DeliveryStatus::from_code(r.u8()?)?,
            time: r.u64()?,
        };
        r.finish()?;
        Ok(rc)
    }

    pub fn sign(&self, user_key: &SigningKey) -> Signed {
        Signed::sign(StatementType::Receipt, self.encode(), user_key)
    }

    pub fn verify(signed: &Signed, user_key: &PublicKey) -> Result<Self> {
        let rc = Self::decode(&signed.statement)?;
        signed.verify(user_key).map_err(|e| {
            Error::verification(format!(
                "the receipt is not signed by {}: {e}",
                rc.user.short()
            ))
        })?;
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            grant_id: GrantId([1; 16]),
            user: "spiffe://example.org/user/alice".parse().unwrap(),
            agent: "spiffe://example.org/agent/bot".parse().unwrap(),
            resource: "tickets/123".into(),
            purpose: "triage".into(),
            created: 10,
            expires: 100,
            max_bytes: 1 << 20,
        }
    }

    /// The holder's own check (signing again, comparing) accepts exactly what verifying does:
    /// its own grant, not one altered in any byte, signed by another key or with any signature
    /// byte changed.
    #[test]
    fn a_users_own_grant_is_checked_by_signing_it_again() {
        let key = SigningKey::generate().unwrap();
        let g = grant();
        let signed = g.sign(&key).unwrap();
        assert!(key.made(&signed.statement, &signed.signature));
        assert_eq!(Grant::verify_own(&signed, &key).unwrap(), g);
        for i in 0..signed.statement.len() {
            let mut t = signed.clone();
            t.statement[i] ^= 1;
            assert!(Grant::verify_own(&t, &key).is_err(), "statement byte {i}");
        }
        for i in 0..signed.signature.len() {
            let mut t = signed.clone();
            t.signature[i] ^= 1;
            assert!(Grant::verify_own(&t, &key).is_err(), "signature byte {i}");
        }
        let other = SigningKey::generate().unwrap();
        let theirs = g.sign(&other).unwrap();
        assert!(!key.made(&theirs.statement, &theirs.signature));
        assert!(Grant::verify_own(&theirs, &key).is_err());
    }

    /// Helper-found: an expiry past `i64::MAX` was a grant the embedded store took and
    /// PostgreSQL refused (BIGINT), failing every other write of its commit batch. Such a grant
    /// is refused whole, signed or decoded, in one line; the largest storable one round-trips.
    #[test]
    fn an_expiry_no_store_can_hold_is_refused_whole() {
        let key = SigningKey::generate().unwrap();
        let mut g = grant();
        g.expires = crate::core::codec::MAX_STORED;
        let signed = g.sign(&key).unwrap();
        assert_eq!(Grant::decode(&signed.statement).unwrap(), g);
        g.expires = crate::core::codec::MAX_STORED + 1;
        let e = g.sign(&key).unwrap_err();
        assert!(
            e.message().contains("expiry") && e.message().contains("past the largest"),
            "{e}"
        );
        let e = Grant::decode(&g.encode()).unwrap_err();
        assert!(e.message().contains("expiry"), "{e}");
    }

    #[test]
    fn grant_and_receipt_round_trip_and_tamper() {
        let key = SigningKey::generate().unwrap();
        let g = grant();
        let signed = g.sign(&key).unwrap();
        assert_eq!(Grant::verify(&signed, &key.public()).unwrap(), g);
        for i in 0..signed.statement.len() {
            let mut t = signed.clone();
            t.statement[i] ^= 1;
            assert!(Grant::verify(&t, &key.public()).is_err(), "byte {i}");
        }
        let r = Receipt {
            envelope_id: EnvelopeId([2; 16]),
            grant_id: g.grant_id,
            user: g.user.clone(),
            agent: g.agent.clone(),
            ciphertext_root: [3; 32],
            status: DeliveryStatus::Undecryptable,
            time: 50,
        };
        let s = r.sign(&key);
        assert_eq!(Receipt::verify(&s, &key.public()).unwrap(), r);
        assert!(Receipt::verify(&s, &SigningKey::generate().unwrap().public()).is_err());
    }

    #[test]
    fn grant_rules() {
        let mut g = grant();
        g.agent = "spiffe://example.org/user/bob".parse().unwrap();
        assert!(g.validate().is_err());
        let mut g = grant();
        g.expires = 5;
        assert!(g.validate().is_err());
        let mut g = grant();
        g.resource = "a\nb".into();
        assert!(g.validate().is_err());
    }
}
