//! Sealing and opening files offline, as `sealrelay seal -o` and `open -o` do, for the language
//! bindings: the output is written to a temporary file beside it and renamed into place only
//! once everything was written (and, opening, authenticated); nothing is left on failure.

use std::path::Path;
use std::str::FromStr;

use crate::core::envelope::keys::{AgeIdentity, AgeRecipient};
use crate::core::envelope::{self, stream::default_threads};
use crate::core::identity::IdentityFile;
use crate::error::{Error, Result};
use crate::local::fs::{Output, PUBLIC_MODE};
use crate::local::identity_file;

/// The age identities in a file: a user's sealrelay identity, or a plain age identity file.
pub fn age_identities(path: &Path) -> Result<Vec<AgeIdentity>> {
    match identity_file::load_any(path)? {
        IdentityFile::PlainAge(ids) => Ok(ids),
        IdentityFile::Sealrelay(id) => {
            let name = format!("{} {}", id.kind, id.name);
            Ok(vec![id.age_identity.ok_or_else(|| {
                Error::bad_input(format!(
                    "{} is the identity of {name}, which holds no age key: only users open envelopes",
                    path.display()
                ))
            })?])
        }
    }
}

fn open_input(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::not_found(format!("{} does not exist: check the path", path.display()))
        }
        _ => Error::io(format!("cannot read {}: {e}", path.display())),
    })
}

fn written(out: std::io::BufWriter<Output>, path: &Path) -> Result<()> {
    let file = out
        .into_inner()
        .map_err(|e| Error::io(format!("cannot write {}: {}", path.display(), e.error())))?;
    file.commit()
}

/// Seals the file at `input` to `recipient` (`age1…` or `age1pq1…`) into `out`; returns the
/// ciphertext's length.
pub fn seal_path(recipient: &str, input: &Path, out: &Path) -> Result<u64> {
    let recipient = AgeRecipient::from_str(recipient)
        .map_err(|e| Error::bad_input(format!("recipient: {e}")))?;
    let source = open_input(input)?;
    let file = Output::create(out, PUBLIC_MODE)?;
    let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
    let sealed = envelope::seal_file(
        recipient.as_recipient(),
        &source,
        &mut buffered,
        default_threads(),
    )?;
    written(buffered, out)?;
    Ok(sealed.ciphertext_len)
}

/// Opens the envelope at `input` with the identity file at `identity` into `out` (mode 0600);
/// returns the plaintext's length. Nothing is kept unless the whole envelope authenticated.
pub fn open_path(identity: &Path, input: &Path, out: &Path) -> Result<u64> {
    let identities = age_identities(identity)?;
    let refs: Vec<&dyn age::Identity> = identities.iter().map(AgeIdentity::as_identity).collect();
    let source = open_input(input)?;
    let file = Output::create(out, 0o600)?;
    let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
    let n = envelope::open_file(&refs, &source, &mut buffered, default_threads())?;
    written(buffered, out)?;
    Ok(n)
}
