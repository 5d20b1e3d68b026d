//! A revocation: the authority's signed statement that ends one serial of a party (and every
//! serial before it).

use super::{MAX_REASON_LEN, MAX_SPIFFE_LEN};
use crate::core::sign::{
    statement_reader, statement_writer, PublicKey, Signed, SigningKey, StatementType,
};
use crate::error::{Error, Result};
use crate::ids::SpiffeId;

/// A revocation of one entry serial of a party, signed by the authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub id: SpiffeId,
    pub serial: u64,
    pub revoked_at: u64,
    pub reason: String,
}

impl Revocation {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::Revocation);
        w.str(&self.id.to_string())
            .u64(self.serial)
            .u64(self.revoked_at)
            .str(&self.reason);
        w.finish()
    }
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::Revocation)?;
        let rev = Revocation {
            id: r.str(MAX_SPIFFE_LEN, "id")?.parse()?,
            serial: r.stored_u64("revoked serial")?,
            revoked_at: r.u64()?,
            reason: r.str(MAX_REASON_LEN, "reason")?.to_owned(),
        };
        r.finish()?;
        Ok(rev)
    }
    pub fn sign(&self, authority: &SigningKey) -> Result<Signed> {
        crate::core::codec::check_stored(self.serial, "revoked serial")?;
        if self.reason.len() > MAX_REASON_LEN {
            return Err(Error::bad_input(format!(
                "reason is longer than {MAX_REASON_LEN} bytes"
            )));
        }
        Ok(Signed::sign(
            StatementType::Revocation,
            self.encode(),
            authority,
        ))
    }
    pub fn verify(signed: &Signed, authority: &PublicKey) -> Result<Self> {
        let rev = Self::decode(&signed.statement)?;
        signed.verify(authority).map_err(|err| {
            Error::verification(format!(
                "revocation of {} (serial {}): {err} against the authority key; it was altered or signed by another authority",
                rev.id.short(),
                rev.serial
            ))
        })?;
        Ok(rev)
    }
}
