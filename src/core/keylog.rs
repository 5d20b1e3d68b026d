//! Key transparency (docs/keys.md): every directory statement is a leaf of the directory log,
//! an append-only Merkle log of its own (origin `<log origin>/directory`), and a party's new
//! key is a *rotation* (signed by its previous key), a *renewal* (the same keys again) or a
//! *reset* (neither), which cannot be used until a waiting period has passed since it was
//! logged. What clients check before they seal to a key, and what a person is told about
//! statements under their name that their own keys did not make.

use std::collections::BTreeMap;

use super::codec::Reader;
use super::directory::{sha256, DirectoryEntry, MAX_SPIFFE_LEN};
use super::sign::{
    statement_reader, statement_writer, PublicKey, Signed, SigningKey, StatementType,
    MAX_STATEMENT_LEN, STATEMENT_PREFIX,
};
use super::tlog::{leaf_hash, node_hash, Hash, EMPTY_ROOT};
use crate::error::{Error, Result};
use crate::ids::{PartyKind, SpiffeId};

pub mod mirror;
mod watch;
pub use mirror::Mirror;
pub use watch::{Alert, Previous, Watcher};

/// What every directory leaf starts with.
pub const LEAF_PREFIX: &[u8] = b"sealrelay directory leaf v1\0";
/// Largest leaf (C2SP tlog-tiles entry bundles carry 16-bit lengths).
pub const MAX_LEAF_LEN: usize = 65_535;
/// The waiting period of a reset when the trust root names none: 24 hours.
pub const DEFAULT_RESET_WAIT: u64 = 24 * 3600;
/// How far a leaf's time may be behind the moment a client saw a checkpoint without it
/// (clock skew between relay and client).
pub const LOGGED_AT_SKEW: u64 = 300;

/// The directory log's origin, beside the event log's.
pub fn directory_origin(log_origin: &str) -> String {
    format!("{log_origin}/directory")
}

/// One leaf of the directory log: a signed directory statement and when the relay logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryLeaf {
    pub logged_at: u64,
    pub statement: Signed,
}

/// The type tag a statement's bytes start with.
fn statement_type(bytes: &[u8]) -> Result<StatementType> {
    let rest = bytes
        .strip_prefix(STATEMENT_PREFIX)
        .ok_or_else(|| Error::bad_input("a directory leaf holds no statement"))?;
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| Error::bad_input("a directory leaf's statement has no type"))?;
    let tag = std::str::from_utf8(&rest[..end])
        .map_err(|_| Error::bad_input("a directory leaf's statement type is not text"))?;
    StatementType::from_tag(tag)
}

/// A leaf's bytes from its parts (what a store appends).
pub fn leaf_bytes(logged_at: u64, statement: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut w = super::codec::Writer::new();
    w.raw(LEAF_PREFIX)
        .u64(logged_at)
        .bytes(statement)
        .bytes(signature);
    w.finish()
}

impl DirectoryLeaf {
    pub fn encode(&self) -> Vec<u8> {
        leaf_bytes(
            self.logged_at,
            &self.statement.statement,
            &self.statement.signature,
        )
    }

    /// Parses a leaf: an entry, a revocation or a reset approval (signatures unchecked).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_LEAF_LEN {
            return Err(Error::bad_input("a directory leaf is too large"));
        }
        let mut r = Reader::new(bytes);
        r.expect_raw(LEAF_PREFIX, "directory leaf")?;
        let logged_at = r.u64()?;
        let statement = r.bytes(MAX_STATEMENT_LEN, "statement")?.to_vec();
        let signature = r.fixed::<64>("signature")?;
        r.finish()?;
        let ty = statement_type(&statement)?;
        if !matches!(
            ty,
            StatementType::DirectoryEntry
                | StatementType::Revocation
                | StatementType::ResetApproval
        ) {
            return Err(Error::bad_input(format!(
                "a {ty} statement is not a directory statement"
            )));
        }
        Ok(DirectoryLeaf {
            logged_at,
            statement: Signed {
                ty,
                statement,
                signature,
            },
        })
    }

    pub fn hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }
}

/// A party's previous key consenting to its new keys: made by `keys rotate` on the party's own
/// machine, signed with the key it replaces, and carried in the new entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRotation {
    pub id: SpiffeId,
    /// The serial whose key signs this.
    pub from_serial: u64,
    pub signing_key: PublicKey,
    pub tls_spki_sha256: [u8; 32],
    pub age_recipient: Option<String>,
    pub created: u64,
}

impl KeyRotation {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::KeyRotation);
        w.str(&self.id.to_string())
            .u64(self.from_serial)
            .bytes(&self.signing_key.0)
            .bytes(&self.tls_spki_sha256)
            .opt_str(self.age_recipient.as_deref())
            .u64(self.created);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::KeyRotation)?;
        let k = KeyRotation {
            id: r.str(MAX_SPIFFE_LEN, "id")?.parse()?,
            from_serial: r.u64()?,
            signing_key: PublicKey(r.fixed::<32>("signing key")?),
            tls_spki_sha256: r.fixed::<32>("TLS key digest")?,
            age_recipient: r
                .opt_str(super::directory::MAX_RECIPIENT_LEN, "age recipient")?
                .map(str::to_owned),
            created: r.u64()?,
        };
        r.finish()?;
        Ok(k)
    }

    /// Signed with the key being replaced.
    pub fn sign(&self, previous: &SigningKey) -> Signed {
        Signed::sign(StatementType::KeyRotation, self.encode(), previous)
    }

    /// Whether `signed` is `previous`'s consent to exactly `entry`'s keys.
    pub fn consents(signed: &Signed, previous: &DirectoryEntry, entry: &DirectoryEntry) -> bool {
        let Ok(k) = Self::decode(&signed.statement) else {
            return false;
        };
        signed.verify(&previous.signing_key).is_ok()
            && k.id == entry.id
            && previous.id == entry.id
            && k.from_serial == previous.serial
            && previous.serial < entry.serial
            && k.signing_key == entry.signing_key
            && k.tls_spki_sha256 == entry.tls_spki_sha256
            && k.age_recipient == entry.age_recipient
    }
}

/// A second admin's approval to shorten the waiting period of one reset (logged like every
/// directory statement; the approver must not be the admin who enrolled the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetApproval {
    pub id: SpiffeId,
    pub serial: u64,
    /// The waiting period this approval allows, in seconds (shorter than the trust root's).
    pub wait: u64,
    pub approver: SpiffeId,
    pub created: u64,
}

impl ResetApproval {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::ResetApproval);
        w.str(&self.id.to_string())
            .u64(self.serial)
            .u64(self.wait)
            .str(&self.approver.to_string())
            .u64(self.created);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::ResetApproval)?;
        let a = ResetApproval {
            id: r.str(MAX_SPIFFE_LEN, "id")?.parse()?,
            serial: r.u64()?,
            wait: r.u64()?,
            approver: r.str(MAX_SPIFFE_LEN, "approver")?.parse()?,
            created: r.u64()?,
        };
        r.finish()?;
        if a.approver.kind() != PartyKind::Admin {
            return Err(Error::bad_input("a reset approval is signed by an admin"));
        }
        Ok(a)
    }

    pub fn sign(&self, approver: &SigningKey) -> Signed {
        Signed::sign(StatementType::ResetApproval, self.encode(), approver)
    }

    /// Checks the approver's signature with its entry and that the approver is a second
    /// person: not the admin who enrolled `reset`.
    pub fn verify(
        signed: &Signed,
        approver: &DirectoryEntry,
        reset: &DirectoryEntry,
    ) -> Result<Self> {
        let a = Self::decode(&signed.statement)?;
        if a.approver != approver.id {
            return Err(Error::verification(
                "a reset approval checked against another admin's entry",
            ));
        }
        signed.verify(&approver.signing_key).map_err(|e| {
            Error::verification(format!(
                "the reset approval by {} does not verify: {e}",
                approver.id.short()
            ))
        })?;
        if a.id != reset.id || a.serial != reset.serial {
            return Err(Error::verification("the reset approval names another key"));
        }
        if approver.id.name() == reset.enrolled_by {
            return Err(Error::verification(format!(
                "{} enrolled this key and cannot also approve its shorter wait: a second admin must",
                approver.id.short()
            )));
        }
        Ok(a)
    }
}

/// How an entry's keys relate to the serial before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The party's first entry.
    First,
    /// The same keys again (new validity or attributes).
    Renewal,
    /// New keys, consented to by the previous key.
    Rotation,
    /// New keys the previous key did not sign: a lost device, or an attack.
    Reset,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::First => "first enrollment",
            Change::Renewal => "renewal",
            Change::Rotation => "rotation",
            Change::Reset => "reset",
        }
    }
}

/// Whether two entries carry the same keys.
pub fn same_keys(a: &DirectoryEntry, b: &DirectoryEntry) -> bool {
    a.signing_key == b.signing_key
        && a.tls_spki_sha256 == b.tls_spki_sha256
        && a.age_recipient == b.age_recipient
}

/// What `entry` is relative to `previous`, the serial before it (`None`: none is known).
pub fn change_of(entry: &DirectoryEntry, previous: Option<&DirectoryEntry>) -> Change {
    match previous {
        None if entry.serial == 1 => Change::First,
        None => Change::Reset,
        Some(p) if same_keys(p, entry) => Change::Renewal,
        Some(p) => match &entry.rotation {
            Some(r) if KeyRotation::consents(r, p, entry) => Change::Rotation,
            _ => Change::Reset,
        },
    }
}

/// An entry as the directory log holds it.
#[derive(Clone, Debug)]
pub struct LoggedEntry {
    pub entry: DirectoryEntry,
    pub index: u64,
    pub logged_at: u64,
}

/// When the newest entry of `chain` (one party's entries, oldest first, each with its log
/// position) may be used, with a reset's waiting period `wait` (or the shorter one a verified
/// approval allows, from `approved`: serial → wait). The chain's oldest entry needs no
/// predecessor when it is the first serial or was logged at least `wait` before `now` (any
/// reset before it has waited); otherwise it counts as a reset. A rotation or renewal signed
/// by a serial up to `revoked_through` (the party's highest revoked serial) is a reset too: a
/// revoked, perhaps leaked, key vouches for nothing, and what rotates from such a reset waits
/// with it. Errors when the chain is out of order (serials, log positions or times going
/// backwards).
pub fn usable_from(
    chain: &[LoggedEntry],
    wait: u64,
    approved: &BTreeMap<u64, u64>,
    revoked_through: Option<u64>,
    now: u64,
) -> Result<(u64, Change)> {
    let first = chain
        .first()
        .ok_or_else(|| Error::internal("no entry to judge"))?;
    let reset_wait = |e: &DirectoryEntry| approved.get(&e.serial).map_or(wait, |w| (*w).min(wait));
    let mut change = if first.entry.serial == 1 {
        Change::First
    } else if first.logged_at.saturating_add(wait) <= now {
        Change::Renewal
    } else {
        Change::Reset
    };
    let mut at = match change {
        Change::Reset => first.logged_at.saturating_add(reset_wait(&first.entry)),
        _ => first.logged_at,
    };
    for pair in chain.windows(2) {
        let (p, e) = (&pair[0], &pair[1]);
        if e.entry.id != p.entry.id
            || e.entry.serial <= p.entry.serial
            || e.index <= p.index
            || e.logged_at < p.logged_at
        {
            return Err(Error::verification(format!(
                "the relay served {}'s entries out of order (serial {} at leaf {} after serial {} at leaf {})",
                e.entry.id.short(),
                e.entry.serial,
                e.index,
                p.entry.serial,
                p.index
            )));
        }
        change = match change_of(&e.entry, Some(&p.entry)) {
            Change::Rotation | Change::Renewal
                if revoked_through.is_some_and(|r| p.entry.serial <= r) =>
            {
                Change::Reset
            }
            c => c,
        };
        at = match change {
            Change::Renewal | Change::Rotation => at.max(e.logged_at),
            Change::First | Change::Reset => e.logged_at.saturating_add(reset_wait(&e.entry)),
        };
    }
    Ok((at, change))
}

/// The right edge of a Merkle tree (the roots of its perfect subtrees, largest first): enough
/// to append leaves and compute each new root without the leaves before (RFC 9162 §2.1.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    pub size: u64,
    pub hashes: Vec<Hash>,
}

impl Frontier {
    /// Checks that `hashes` is as long as `size` has one bits.
    pub fn new(size: u64, hashes: Vec<Hash>) -> Result<Self> {
        if hashes.len() != size.count_ones() as usize {
            return Err(Error::bad_input(
                "a saved tree edge does not match its size",
            ));
        }
        Ok(Frontier { size, hashes })
    }

    pub fn append(&mut self, leaf: Hash) {
        self.hashes.push(leaf);
        // Merge equal perfect subtrees: one per trailing one bit of the old size.
        let mut n = self.size;
        while n & 1 == 1 {
            let right = self.hashes.pop();
            let left = self.hashes.pop();
            if let (Some(l), Some(r)) = (left, right) {
                self.hashes.push(node_hash(&l, &r));
            }
            n >>= 1;
        }
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        let Some(last) = it.next() else {
            return EMPTY_ROOT;
        };
        it.fold(*last, |acc, h| node_hash(h, &acc))
    }
}

/// The SHA-256 of a signed statement with its signature: how pins tell two entries of one
/// serial apart.
pub fn statement_digest(s: &Signed) -> [u8; 32] {
    let mut b = s.statement.clone();
    b.extend_from_slice(&s.signature);
    sha256(&b)
}

#[cfg(test)]
mod tests;
