//! Loading and saving identity files: permission checks, kind and expiry checks, atomic writes.

use std::path::Path;

use super::fs::{read_private, write_atomic, PRIVATE_MODE};
use crate::core::identity::{parse_identity_file, Identity, IdentityFile, MAX_IDENTITY_FILE_LEN};
use crate::core::pki;
use crate::error::{Error, Result};
use crate::ids::PartyKind;

/// Reads an identity file (sealrelay or plain age), refusing group/world-readable files.
pub fn load_any(path: &Path) -> Result<IdentityFile> {
    let bytes = read_private(path, MAX_IDENTITY_FILE_LEN)?;
    parse_identity_file(&bytes).map_err(|e| e.context(path.display()))
}

/// Reads a sealrelay identity of `kind` (any kind when `None`).
pub fn load(path: &Path, kind: Option<PartyKind>) -> Result<Identity> {
    match load_any(path)? {
        IdentityFile::Sealrelay(id) => {
            if let Some(kind) = kind {
                id.require_kind(kind).map_err(|e| e.context(path.display()))?;
            }
            Ok(*id)
        }
        IdentityFile::PlainAge(_) => Err(Error::bad_input(format!(
            "{} is a plain age identity, not a sealrelay identity: make one with `sealrelay keys gen`",
            path.display()
        ))),
    }
}

/// Reads an enrolled identity of `kind` whose certificate is valid at `now`.
pub fn load_enrolled(path: &Path, kind: PartyKind, now: u64) -> Result<Identity> {
    let id = load(path, Some(kind))?;
    let (Some(cert), Some(ca)) = (&id.cert, &id.ca_cert) else {
        return Err(Error::bad_input(format!(
            "{} is not enrolled yet: send {}.request to the admin and import the bundle with `sealrelay keys import`",
            path.display(),
            path.display()
        )));
    };
    pki::check_party_cert(cert, ca, kind, now).map_err(|e| e.context(path.display()))?;
    Ok(id)
}

/// Writes an identity file atomically with mode 0600.
pub fn save(path: &Path, identity: &Identity, overwrite: bool) -> Result<()> {
    write_atomic(path, identity.to_text().as_bytes(), PRIVATE_MODE, overwrite)
}
