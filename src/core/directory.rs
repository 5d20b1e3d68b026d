//! The signed directory: enrollment requests (self-signed proof of possession), directory
//! entries and revocations (signed by the authority), and the in-memory [`Directory`] that
//! answers "what is the current, valid entry for this party?".
//!
//! Clients check every entry they use against the pinned authority key, so a relay that serves
//! the directory cannot swap a user's age recipient or signing key without being caught.

use std::collections::{BTreeMap, HashMap};

use super::codec::Writer;
pub use super::resource::MAX_CLEARANCE;
use super::sign::{
    statement_reader, statement_writer, PublicKey, Signed, SigningKey, StatementType,
};
use crate::error::{Error, Result};
use crate::ids::{validate_name, PartyKind, SpiffeId, MAX_NAME_LEN, MAX_TRUST_DOMAIN_LEN};

/// Caps on attribute lists and values.
pub const MAX_ROLES: usize = 32;
pub const MAX_SCOPES: usize = 64;
pub const MAX_ATTRIBUTE_LEN: usize = 128;
pub const MAX_RECIPIENT_LEN: usize = 2048;
pub const MAX_SPKI_LEN: usize = 1024;
pub const MAX_REASON_LEN: usize = 256;
pub const MAX_SPIFFE_LEN: usize = MAX_TRUST_DOMAIN_LEN + MAX_NAME_LEN + 32;

/// SHA-256.
/// Most verified directory entries one process remembers.
pub const VERIFIED_CACHE: usize = 4096;

type VerifiedCache = std::sync::Mutex<HashMap<[u8; 32], DirectoryEntry>>;

fn verified_cache() -> &'static VerifiedCache {
    static CACHE: std::sync::OnceLock<VerifiedCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// SHA-256 over the authority key and the signed statement with its signature, each
/// length-prefixed: what identifies one verification.
fn verified_key(signed: &Signed, authority: &PublicKey) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"sealrelay-verified-entry\0");
    ctx.update(signed.ty.tag().as_bytes());
    ctx.update(b"\0");
    ctx.update(&authority.0);
    ctx.update(&(signed.statement.len() as u64).to_be_bytes());
    ctx.update(&signed.statement);
    ctx.update(&signed.signature);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn check_recipient(kind: PartyKind, recipient: Option<&str>) -> Result<Option<String>> {
    match (kind, recipient) {
        (PartyKind::User, Some(r)) => {
            r.parse::<crate::core::envelope::keys::AgeRecipient>()
                .map_err(|e| Error::bad_input(format!("the age recipient is not valid: {e}")))?;
            Ok(Some(r.to_owned()))
        }
        (PartyKind::User, None) => Err(Error::bad_input("a user needs an age recipient")),
        (_, None) => Ok(None),
        (_, Some(_)) => Err(Error::bad_input(format!(
            "a {kind} has no age recipient (only users receive envelopes)"
        ))),
    }
}

/// A party's request to be enrolled, signed with the signing key it names (proof of
/// possession). Made by `keys gen` on the party's own machine; holds no secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentRequest {
    pub kind: PartyKind,
    pub name: String,
    pub age_recipient: Option<String>,
    pub signing_key: PublicKey,
    /// DER SubjectPublicKeyInfo of the party's TLS key.
    pub tls_spki: Vec<u8>,
    pub created: u64,
}

impl EnrollmentRequest {
    pub fn validate(&self) -> Result<()> {
        if !matches!(
            self.kind,
            PartyKind::User | PartyKind::Agent | PartyKind::Admin | PartyKind::Source
        ) {
            return Err(Error::bad_input(
                "only users, agents, sources and admins enroll with a request",
            ));
        }
        validate_name(&self.name)?;
        check_recipient(self.kind, self.age_recipient.as_deref())?;
        if self.tls_spki.is_empty() || self.tls_spki.len() > MAX_SPKI_LEN {
            return Err(Error::bad_input(
                "the TLS public key is missing or too large",
            ));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = statement_writer(StatementType::EnrollmentRequest);
        w.u8(self.kind.code())
            .str(&self.name)
            .opt_str(self.age_recipient.as_deref())
            .bytes(&self.signing_key.0)
            .bytes(&self.tls_spki)
            .u64(self.created);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::EnrollmentRequest)?;
        let req = EnrollmentRequest {
            kind: PartyKind::from_code(r.u8()?)?,
            name: r.str(MAX_NAME_LEN, "name")?.to_owned(),
            age_recipient: r
                .opt_str(MAX_RECIPIENT_LEN, "age recipient")?
                .map(str::to_owned),
            signing_key: PublicKey(r.fixed::<32>("signing key")?),
            tls_spki: r.bytes(MAX_SPKI_LEN, "TLS public key")?.to_vec(),
            created: r.u64()?,
        };
        r.finish()?;
        req.validate()?;
        Ok(req)
    }

    /// Signs the request with its own signing key.
    pub fn sign(&self, key: &SigningKey) -> Result<Signed> {
        if key.public() != self.signing_key {
            return Err(Error::internal(
                "request signed with a key it does not name",
            ));
        }
        self.validate()?;
        Ok(Signed::sign(
            StatementType::EnrollmentRequest,
            self.encode(),
            key,
        ))
    }

    /// Parses a signed request and checks its proof of possession.
    pub fn verify(signed: &Signed) -> Result<Self> {
        let req = Self::decode(&signed.statement)?;
        signed.verify(&req.signing_key).map_err(|e| {
            Error::verification(format!(
                "proof of possession failed for {} {}: {e}; the request was altered or not signed by the key it names, ask the party to run `sealrelay keys gen` again",
                req.kind, req.name
            ))
        })?;
        Ok(req)
    }
}

/// A directory entry, signed by the authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub id: SpiffeId,
    pub age_recipient: Option<String>,
    pub signing_key: PublicKey,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the party's TLS key: binds the entry to the
    /// client certificate.
    pub tls_spki_sha256: [u8; 32],
    pub attributes: Attributes,
    /// Starts at 1; a higher serial supersedes a lower one.
    pub serial: u64,
    pub not_before: u64,
    pub not_after: u64,
    /// The admin whose authority enrolled this key (their name), shown to the person in an
    /// alert. Empty in entries made before it was recorded.
    pub enrolled_by: String,
    /// On a key rotation: the party's previous key's signed consent to these keys (a
    /// [`KeyRotation`](super::keylog::KeyRotation) statement). `None` on a first enrollment, a
    /// renewal with the same keys, or a reset (a new key the previous one did not sign:
    /// docs/keys.md).
    pub rotation: Option<Signed>,
}

impl DirectoryEntry {
    pub fn validate(&self) -> Result<()> {
        if !matches!(
            self.id.kind(),
            PartyKind::User | PartyKind::Agent | PartyKind::Admin | PartyKind::Source
        ) {
            return Err(Error::bad_input(
                "directory entries are for users, agents, sources and admins",
            ));
        }
        if self.id.kind() == PartyKind::Admin && self.attributes != Attributes::default() {
            return Err(Error::bad_input(
                "admins carry no clearance, roles or scopes",
            ));
        }
        check_recipient(self.id.kind(), self.age_recipient.as_deref())?;
        self.attributes.validate(self.id.kind())?;
        if self.serial == 0 {
            return Err(Error::bad_input("entry serial must be at least 1"));
        }
        super::codec::check_stored(self.serial, "entry's serial")?;
        if self.not_after <= self.not_before {
            return Err(Error::bad_input("entry validity ends before it starts"));
        }
        if !self.enrolled_by.is_empty() {
            validate_name(&self.enrolled_by).map_err(|e| e.context("enrolled by"))?;
        }
        if self
            .rotation
            .as_ref()
            .is_some_and(|r| r.ty != StatementType::KeyRotation)
        {
            return Err(Error::bad_input(
                "an entry's rotation must be a key-rotation statement",
            ));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w: Writer = statement_writer(StatementType::DirectoryEntry);
        w.str(&self.id.to_string())
            .opt_str(self.age_recipient.as_deref())
            .bytes(&self.signing_key.0)
            .bytes(&self.tls_spki_sha256)
            .u8(self.attributes.clearance)
            .str_list(&self.attributes.roles)
            .str_list(&self.attributes.scopes)
            .u64(self.serial)
            .u64(self.not_before)
            .u64(self.not_after);
        // The fields key transparency added, only when they say something: an entry with
        // neither has the one encoding entries had before them.
        if !self.enrolled_by.is_empty() || self.rotation.is_some() {
            w.str(&self.enrolled_by);
            match &self.rotation {
                None => {
                    w.u8(0);
                }
                Some(r) => {
                    w.u8(1).bytes(&r.statement).bytes(&r.signature);
                }
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = statement_reader(bytes, StatementType::DirectoryEntry)?;
        let e = DirectoryEntry {
            id: r.str(MAX_SPIFFE_LEN, "id")?.parse()?,
            age_recipient: r
                .opt_str(MAX_RECIPIENT_LEN, "age recipient")?
                .map(str::to_owned),
            signing_key: PublicKey(r.fixed::<32>("signing key")?),
            tls_spki_sha256: r.fixed::<32>("TLS key digest")?,
            attributes: Attributes {
                clearance: r.u8()?,
                roles: r.str_list(MAX_ROLES, MAX_ATTRIBUTE_LEN, "roles")?,
                scopes: r.str_list(MAX_SCOPES, MAX_ATTRIBUTE_LEN, "scopes")?,
            },
            serial: r.stored_u64("entry's serial")?,
            not_before: r.u64()?,
            not_after: r.u64()?,
            enrolled_by: String::new(),
            rotation: None,
        };
        // Entries signed before key transparency end here; later ones say who enrolled them
        // and carry a rotation's consent.
        let mut e = e;
        if !r.is_empty() {
            e.enrolled_by = r.str(MAX_NAME_LEN, "enrolled by")?.to_owned();
            e.rotation = match r.u8()? {
                0 => None,
                1 => Some(Signed {
                    ty: StatementType::KeyRotation,
                    statement: r
                        .bytes(super::sign::MAX_STATEMENT_LEN, "rotation statement")?
                        .to_vec(),
                    signature: r.fixed::<64>("rotation signature")?,
                }),
                _ => return Err(Error::bad_input("the rotation flag is neither 0 nor 1")),
            };
            if e.enrolled_by.is_empty() && e.rotation.is_none() {
                return Err(Error::bad_input(
                    "an entry that names no admin and no rotation ends after its validity",
                ));
            }
        }
        r.finish()?;
        e.validate()?;
        Ok(e)
    }

    pub fn sign(&self, authority: &SigningKey) -> Result<Signed> {
        self.validate()?;
        Ok(Signed::sign(
            StatementType::DirectoryEntry,
            self.encode(),
            authority,
        ))
    }

    /// Parses a signed entry and checks the authority's signature. Errors name the entry.
    ///
    /// Verification is a pure function of the signed bytes and the authority key, so entries
    /// that verified are remembered (by the SHA-256 of both, up to [`VERIFIED_CACHE`] of them)
    /// and a repeat (the same user's entry on every grant an agent lists, the agent's entry
    /// checked twice per fetch) costs a hash instead of a signature check and a key parse.
    /// Failures are never remembered. Validity times and revocation are the caller's checks,
    /// as before.
    pub fn verify(signed: &Signed, authority: &PublicKey) -> Result<Self> {
        let key = verified_key(signed, authority);
        if let Some(hit) = verified_cache()
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(hit);
        }
        let e = Self::verify_uncached(signed, authority)?;
        if let Ok(mut c) = verified_cache().lock() {
            if c.len() >= VERIFIED_CACHE {
                c.clear();
            }
            c.insert(key, e.clone());
        }
        Ok(e)
    }

    fn verify_uncached(signed: &Signed, authority: &PublicKey) -> Result<Self> {
        let e = Self::decode(&signed.statement)?;
        signed.verify(authority).map_err(|err| {
            Error::verification(format!(
                "directory entry {} (serial {}): {err} against the authority key {}; it was altered or signed by another authority",
                e.id.short(),
                e.serial,
                authority.fingerprint()
            ))
        })?;
        Ok(e)
    }

    /// Whether `now` is inside the entry's validity.
    pub fn is_current(&self, now: u64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

pub use revocation::Revocation;

/// Why a party has no usable entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    Unknown,
    /// Its newest key is a reset waiting until this time, and it has no earlier one in force.
    Waiting(u64),
    Revoked,
    Expired,
    NotYetValid,
}

/// Verified entries and revocations, indexed by party.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    entries: BTreeMap<SpiffeId, BTreeMap<u64, (DirectoryEntry, Signed)>>,
    /// The highest revoked serial per party: revoking serial N ends every serial up to N.
    revoked: BTreeMap<SpiffeId, u64>,
    /// Every revocation statement, once each (what start-up loads and `directory push` sends).
    revocations: BTreeMap<(SpiffeId, u64), (Revocation, Signed)>,
    /// The directory log, on a relay (`logged.rs`): entries are in force only once logged and
    /// past any waiting period.
    log: Option<Box<logged::DirectoryLog>>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies and adds an entry. A second, different entry with the same id and serial is
    /// refused (an authority must not sign two versions of one serial).
    pub fn insert_entry(
        &mut self,
        signed: Signed,
        authority: &PublicKey,
    ) -> Result<DirectoryEntry> {
        let entry = DirectoryEntry::verify(&signed, authority)?;
        let versions = self.entries.entry(entry.id.clone()).or_default();
        if let Some((existing, _)) = versions.get(&entry.serial) {
            if *existing != entry {
                return Err(Error::conflict(format!(
                    "two different entries for {} with serial {}",
                    entry.id.short(),
                    entry.serial
                )));
            }
        }
        versions.insert(entry.serial, (entry.clone(), signed));
        Ok(entry)
    }

    pub fn insert_revocation(
        &mut self,
        signed: &Signed,
        authority: &PublicKey,
    ) -> Result<Revocation> {
        let rev = Revocation::verify(signed, authority)?;
        let highest = self.revoked.entry(rev.id.clone()).or_insert(rev.serial);
        *highest = (*highest).max(rev.serial);
        self.revocations
            .entry((rev.id.clone(), rev.serial))
            .or_insert_with(|| (rev.clone(), signed.clone()));
        Ok(rev)
    }

    /// Why `e` cannot be taken next (`None`: it can): a party's entries are taken in order, each
    /// serial the one after the highest held (or one already held, word for word). An entry
    /// that skips a serial, or an older serial arriving after a newer one, would be logged out
    /// of order: a rotation after its own renewal reads as a reset, and the name's chain as
    /// broken for good.
    pub fn out_of_order(&self, e: &DirectoryEntry) -> Option<String> {
        let versions = self.entries.get(&e.id);
        match versions.and_then(|v| v.get(&e.serial)) {
            Some((held, _)) if held == e => return None,
            Some(_) => {
                return Some(format!(
                    "two different entries for {} with serial {}: the relay holds another",
                    e.id.short(),
                    e.serial
                ))
            }
            None => {}
        }
        let highest = versions
            .and_then(|v| v.keys().next_back().copied())
            .unwrap_or(0);
        (e.serial != highest.saturating_add(1)).then(|| {
            format!(
                "serial {} of {} does not follow serial {highest}, the highest this relay holds: a party's entries are taken in order (send them all, oldest first: `sealrelay directory push --relay HOST:PORT`)",
                e.serial,
                e.id.short()
            )
        })
    }

    /// The highest-serial entry for `id`, whatever its state.
    pub fn latest(&self, id: &SpiffeId) -> Option<&DirectoryEntry> {
        self.entries
            .get(id)
            .and_then(|v| v.values().next_back())
            .map(|(e, _)| e)
    }

    /// The signed form of the latest entry (what clients fetch and verify themselves).
    pub fn latest_signed(&self, id: &SpiffeId) -> Option<&Signed> {
        self.entries
            .get(id)
            .and_then(|v| v.values().next_back())
            .map(|(_, s)| s)
    }

    /// Whether `serial` of `id` is revoked: a revocation of serial N ends every serial ≤ N.
    pub fn is_revoked(&self, id: &SpiffeId, serial: u64) -> bool {
        self.revoked
            .get(id)
            .is_some_and(|highest| serial <= *highest)
    }

    /// The entry a request from `id` is judged by: the latest serial, which must be neither
    /// revoked nor outside its validity.
    pub fn active(&self, id: &SpiffeId, now: u64) -> Result<&DirectoryEntry, EntryProblem> {
        let e = match &self.log {
            None => self.latest(id).ok_or(EntryProblem::Unknown)?,
            Some(log) => match log.in_force(self, id, now) {
                // A key that waits but is revoked is revoked.
                Err(EntryProblem::Waiting(_))
                    if self
                        .latest(id)
                        .is_some_and(|l| self.is_revoked(id, l.serial)) =>
                {
                    return Err(EntryProblem::Revoked)
                }
                other => other?,
            },
        };
        if self.is_revoked(id, e.serial) {
            return Err(EntryProblem::Revoked);
        }
        if now < e.not_before {
            return Err(EntryProblem::NotYetValid);
        }
        if now > e.not_after {
            return Err(EntryProblem::Expired);
        }
        Ok(e)
    }

    /// An earlier serial of `id` whose TLS key is `spki` and that a rotation superseded less
    /// than `grace` seconds before `now` (the next serial's `not_before` plus `grace`), neither
    /// revoked nor outside its own validity: the party's previous identity, which may still
    /// read and finish what was sealed to its key for a while after the rotation.
    pub fn superseded(
        &self,
        id: &SpiffeId,
        spki: &[u8; 32],
        now: u64,
        grace: u64,
    ) -> Option<&DirectoryEntry> {
        let serials = self.entries.get(id)?;
        let mut newer: Option<&DirectoryEntry> = None;
        for (e, _) in serials.values().rev() {
            if let Some(next) = newer {
                if e.tls_spki_sha256 == *spki {
                    let usable = !self.is_revoked(id, e.serial)
                        && now >= e.not_before
                        && now <= e.not_after
                        && now < next.not_before.saturating_add(grace);
                    return usable.then_some(e);
                }
            }
            newer = Some(e);
        }
        None
    }

    /// The serial a new or rotated entry for `id` gets.
    pub fn next_serial(&self, id: &SpiffeId) -> u64 {
        self.latest(id).map_or(1, |e| e.serial.saturating_add(1))
    }

    /// Every latest entry.
    pub fn parties(&self) -> impl Iterator<Item = &DirectoryEntry> {
        self.entries
            .values()
            .filter_map(|v| v.values().next_back().map(|(e, _)| e))
    }

    /// Every entry of every party, each serial (not only the latest), with its signed form.
    pub fn all_entries(&self) -> impl Iterator<Item = &(DirectoryEntry, Signed)> {
        self.entries.values().flat_map(|v| v.values())
    }

    /// Every entry of `id`, newest serial first.
    pub fn history(&self, id: &SpiffeId) -> impl Iterator<Item = &(DirectoryEntry, Signed)> {
        self.entries
            .get(id)
            .into_iter()
            .flat_map(|v| v.values().rev())
    }

    /// Whether serial `serial` of `id` is here.
    pub fn has_entry(&self, id: &SpiffeId, serial: u64) -> bool {
        self.entries
            .get(id)
            .is_some_and(|v| v.contains_key(&serial))
    }

    /// Whether the revocation of serial `serial` of `id` is here.
    pub fn has_revocation(&self, id: &SpiffeId, serial: u64) -> bool {
        self.revocations.contains_key(&(id.clone(), serial))
    }

    /// Every revocation with its signed form.
    pub fn revocations(&self) -> impl Iterator<Item = &(Revocation, Signed)> {
        self.revocations.values()
    }

    /// How many revocation statements the directory holds.
    pub fn revoked_count(&self) -> usize {
        self.revocations.len()
    }
}

mod attributes;
mod logged;
pub use attributes::Attributes;
mod revocation;
pub use logged::{LogPosition, WaitingKey};
#[cfg(test)]
mod tests;
