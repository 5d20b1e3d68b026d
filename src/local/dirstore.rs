//! The admin's directory on disk: `directory/users/<name>.<serial>.entry`,
//! `directory/agents/<name>.<serial>.entry` and `directory/revocations/<kind>-<name>.<serial>.revocation`,
//! each a signed statement in its canonical file form. Files are only ever added (a rotation is
//! a new serial; a revocation is a new file), never rewritten.

use std::path::{Path, PathBuf};

use super::dirpaths::{entry_path, revocation_path};
use super::fs::{ensure_dir, read_capped, write_atomic, PUBLIC_MODE};
use super::trust_root::TrustRoot;
use crate::core::directory::{
    sha256, Attributes, Directory, DirectoryEntry, EnrollmentRequest, Revocation,
};
use crate::core::pki::{self, CertUsage, DAY};
use crate::core::sign::{PublicKey, Signed, StatementType, MAX_SIGNED_FILE_LEN};
use crate::error::{Error, Result};
use crate::ids::{PartyKind, SpiffeId};

/// What `directory verify` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VerifySummary {
    pub users: usize,
    pub agents: usize,
    pub admins: usize,
    pub sources: usize,
    pub statements: usize,
    pub revoked: usize,
}

fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot list {}: {e}", dir.display())))?
    {
        let item = item.map_err(|e| Error::io(format!("cannot list {}: {e}", dir.display())))?;
        let name = item.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // temporary files of an interrupted write
        }
        files.push(item.path());
    }
    files.sort();
    Ok(files)
}

/// Loads and verifies every entry and revocation under `dir` against `authority`. The first
/// failure is returned naming the file and entry.
pub fn load(dir: &Path, authority: &PublicKey) -> Result<(Directory, VerifySummary)> {
    load_with(dir, authority, &mut |_, e| Err(e))
}

/// [`load`] for a relay watching the directory: a file that is not a statement in its place (an
/// editor's backup, `carol.1.entry~`; a file copied under another name) is left out and
/// returned with why, so that one stray file does not keep every other statement (a
/// revocation) from being taken.
pub fn load_lenient(
    dir: &Path,
    authority: &PublicKey,
) -> Result<(Directory, Vec<(PathBuf, Error)>)> {
    let mut left_out = Vec::new();
    let (directory, _) = load_with(dir, authority, &mut |path, e| {
        left_out.push((path.to_path_buf(), e));
        Ok(())
    })?;
    Ok((directory, left_out))
}

/// [`load`], handing each file that fails to `bad` (an error from it stops the load).
fn load_with(
    dir: &Path,
    authority: &PublicKey,
    bad: &mut dyn FnMut(&Path, Error) -> Result<()>,
) -> Result<(Directory, VerifySummary)> {
    let mut directory = Directory::new();
    let mut summary = VerifySummary::default();
    for (sub, kind) in [
        ("users", PartyKind::User),
        ("agents", PartyKind::Agent),
        ("admins", PartyKind::Admin),
        ("sources", PartyKind::Source),
    ] {
        for path in sorted_files(&dir.join(sub))? {
            match entry_file(dir, &path, kind, authority) {
                Ok(signed) => {
                    directory
                        .insert_entry(signed, authority)
                        .map_err(|e| e.context(path.display()))?;
                    summary.statements += 1;
                }
                Err(e) => bad(&path, e)?,
            }
        }
    }
    for path in sorted_files(&dir.join("revocations"))? {
        match revocation_file(dir, &path, authority) {
            Ok(signed) => {
                directory
                    .insert_revocation(&signed, authority)
                    .map_err(|e| e.context(path.display()))?;
                summary.statements += 1;
            }
            Err(e) => bad(&path, e)?,
        }
    }
    for e in directory.parties() {
        match e.id.kind() {
            PartyKind::User => summary.users += 1,
            PartyKind::Agent => summary.agents += 1,
            PartyKind::Admin => summary.admins += 1,
            PartyKind::Source => summary.sources += 1,
            _ => {}
        }
    }
    summary.revoked = directory.revoked_count();
    Ok((directory, summary))
}

/// The entry in `path`, verified and in its place (`kind`'s folder, named for its party and
/// serial).
fn entry_file(dir: &Path, path: &Path, kind: PartyKind, authority: &PublicKey) -> Result<Signed> {
    let bytes = read_capped(path, MAX_SIGNED_FILE_LEN)?;
    let signed = Signed::from_json(&bytes, StatementType::DirectoryEntry)
        .map_err(|e| e.context(format!("directory entry {}", path.display())))?;
    let entry =
        DirectoryEntry::verify(&signed, authority).map_err(|e| e.context(path.display()))?;
    if entry.id.kind() != kind || path != entry_path(dir, &entry.id, entry.serial) {
        return Err(Error::verification(format!(
            "{}: the file holds the entry {} serial {}, which belongs elsewhere (was it renamed?)",
            path.display(),
            entry.id.short(),
            entry.serial
        )));
    }
    Ok(signed)
}

/// The revocation in `path`, verified and in its place.
fn revocation_file(dir: &Path, path: &Path, authority: &PublicKey) -> Result<Signed> {
    let bytes = read_capped(path, MAX_SIGNED_FILE_LEN)?;
    let signed = Signed::from_json(&bytes, StatementType::Revocation)
        .map_err(|e| e.context(format!("revocation {}", path.display())))?;
    let rev = Revocation::verify(&signed, authority).map_err(|e| e.context(path.display()))?;
    if path != revocation_path(dir, &rev.id, rev.serial) {
        return Err(Error::verification(format!(
            "{}: the file holds the revocation of {} serial {}, which belongs elsewhere",
            path.display(),
            rev.id.short(),
            rev.serial
        )));
    }
    Ok(signed)
}

/// Options for enrolling a party.
pub struct EnrollOptions {
    pub attributes: Attributes,
    /// Issue serial+1 for a party that already has an entry.
    pub rotate: bool,
    pub validity_days: u64,
    /// The party's current key's consent to the new keys (`keys rotate`'s FILE.rotation):
    /// makes the new serial a rotation instead of a reset (docs/keys.md).
    pub rotation: Option<Signed>,
}

/// An issued entry with its signed form and client certificate.
pub struct Issued {
    pub entry: DirectoryEntry,
    pub signed: Signed,
    pub cert: Vec<u8>,
}

/// Checks and signs an enrollment (nothing is written): the request's proof of possession
/// must already be verified by [`EnrollmentRequest::verify`].
pub fn issue(
    root: &TrustRoot,
    directory: &Directory,
    req: &EnrollmentRequest,
    opts: &EnrollOptions,
    now: u64,
) -> Result<Issued> {
    opts.attributes.validate(req.kind)?;
    if opts.validity_days == 0 || opts.validity_days > 3650 {
        return Err(Error::bad_input("validity must be 1 to 3650 days"));
    }
    let id = SpiffeId::new(&root.meta.trust_domain, req.kind, &req.name)?;
    let existing = directory.latest(&id);
    match (existing, opts.rotate) {
        (Some(_), false) => {
            return Err(Error::conflict(format!(
            "{} is already enrolled: use --rotate to issue a new serial, or choose another name",
            id.short()
        )))
        }
        (None, true) => {
            return Err(Error::not_found(format!(
                "{} is not enrolled, so there is nothing to rotate: drop --rotate",
                id.short()
            )))
        }
        _ => {}
    }
    let not_before = now.saturating_sub(300);
    let not_after = now.saturating_add(opts.validity_days.saturating_mul(DAY));
    let mut entry = DirectoryEntry {
        id: id.clone(),
        age_recipient: req.age_recipient.clone(),
        signing_key: req.signing_key,
        tls_spki_sha256: sha256(&req.tls_spki),
        attributes: opts.attributes.clone(),
        serial: directory.next_serial(&id),
        not_before,
        not_after,
        enrolled_by: root.meta.admin_name.clone(),
        rotation: None,
    };
    // A renewal (the same keys again) needs no consent: a rotation file left beside the
    // request from the rotation that made these keys is not used again.
    let renewal = existing.is_some_and(|cur| crate::core::keylog::same_keys(cur, &entry));
    if let Some(consent) = opts.rotation.as_ref().filter(|_| !renewal) {
        let current = existing.ok_or_else(|| {
            Error::bad_input("a rotation file is for a party that is enrolled already")
        })?;
        if directory.is_revoked(&id, current.serial) {
            return Err(Error::verification(format!(
                "{} serial {} is revoked: its key (perhaps leaked) cannot vouch for new keys; move the .rotation file away to enroll the request as a reset (it waits, and {} is alerted)",
                id.short(),
                current.serial,
                id.name()
            )));
        }
        if !crate::core::keylog::KeyRotation::consents(consent, current, &entry) {
            return Err(Error::verification(format!(
                "the rotation file was not signed by {}'s current key (serial {}) for exactly this request's keys: ask them to run `sealrelay keys rotate` again with their current identity",
                id.short(),
                current.serial
            )));
        }
        entry.rotation = Some(consent.clone());
    }
    let signed = entry.sign(&root.authority)?;
    let cert = pki::issue_leaf(
        &root.ca_cert,
        &root.ca_key,
        &req.tls_spki,
        &id,
        &[],
        CertUsage::Client,
        not_before,
        not_after,
    )?;
    Ok(Issued {
        entry,
        signed,
        cert,
    })
}

/// Writes an issued entry into the directory (never overwrites).
pub fn store_entry(dir: &Path, issued: &Issued) -> Result<PathBuf> {
    let path = entry_path(dir, &issued.entry.id, issued.entry.serial);
    if let Some(parent) = path.parent() {
        ensure_dir(parent, 0o700)?;
    }
    write_atomic(
        &path,
        issued.signed.to_json().as_bytes(),
        PUBLIC_MODE,
        false,
    )?;
    Ok(path)
}

/// Signs and writes a revocation of the current serial of `id`.
pub fn revoke(
    root: &TrustRoot,
    directory: &Directory,
    id: &SpiffeId,
    reason: &str,
    now: u64,
) -> Result<(Revocation, Signed, PathBuf)> {
    let entry = directory.latest(id).ok_or_else(|| {
        Error::not_found(format!(
            "{} is not in the directory: check the name",
            id.short()
        ))
    })?;
    if directory.is_revoked(id, entry.serial) {
        return Err(Error::conflict(format!(
            "{} serial {} is already revoked",
            id.short(),
            entry.serial
        )));
    }
    let rev = Revocation {
        id: id.clone(),
        serial: entry.serial,
        revoked_at: now,
        reason: reason.to_owned(),
    };
    let signed = rev.sign(&root.authority)?;
    let path = revocation_path(&root.directory_dir(), id, entry.serial);
    if let Some(parent) = path.parent() {
        ensure_dir(parent, 0o700)?;
    }
    write_atomic(&path, signed.to_json().as_bytes(), PUBLIC_MODE, false)?;
    Ok((rev, signed, path))
}
