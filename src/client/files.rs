//! Sealing and opening files offline, as `sealrelay seal -o` and `open -o` do, for the language
//! bindings: a new or regular output is written to a temporary file beside it (by the worker
//! threads, at offsets) and renamed into place only once everything was written (and, opening,
//! authenticated); nothing is left on failure.

use std::path::Path;
use std::str::FromStr;

use crate::core::envelope::keys::{AgeIdentity, AgeRecipient};
use crate::core::envelope::{self, stream::default_threads, SealInput};
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

/// What a path holds: a regular file, read at offsets by the workers, or anything else (a
/// FIFO, a device, `/dev/stdin`: its size says nothing), read in order.
fn input_of(file: &mut std::fs::File) -> SealInput<'_, std::fs::File> {
    if file.metadata().is_ok_and(|m| m.is_file()) {
        SealInput::File(file)
    } else {
        SealInput::Reader(file)
    }
}

/// Seals what `input` holds to `recipient` (`age1…` or `age1pq1…`) into `out`; returns the
/// ciphertext's length. A new or regular `out` is written beside its path and renamed into
/// place once whole; a device or a FIFO is written in order.
pub fn seal_path(recipient: &str, input: &Path, out: &Path) -> Result<u64> {
    let recipient = AgeRecipient::from_str(recipient)
        .map_err(|e| Error::bad_input(format!("recipient: {e}")))?;
    let mut source = open_input(input)?;
    let file = Output::create(out, PUBLIC_MODE)?;
    let threads = default_threads();
    if let Some(at) = file.positional() {
        // The workers write their shares at offsets into the temporary file.
        let sealed =
            envelope::seal_at(recipient.as_recipient(), input_of(&mut source), at, threads)?;
        file.commit()?;
        return Ok(sealed.ciphertext_len);
    }
    let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
    let sealed = match input_of(&mut source) {
        SealInput::File(f) => {
            envelope::seal_file(recipient.as_recipient(), f, &mut buffered, threads)?
        }
        SealInput::Reader(r) => {
            envelope::seal(recipient.as_recipient(), r, &mut buffered, threads)?
        }
    };
    written(buffered, out)?;
    Ok(sealed.ciphertext_len)
}

/// Opens the envelope `input` holds with the identity file at `identity` into `out` (mode
/// 0600); returns the plaintext's length. A new or regular `out` is kept only if the whole
/// envelope authenticated; into a device or a FIFO, plaintext goes in order as each chunk
/// authenticates (as `open` to stdout releases it).
pub fn open_path(identity: &Path, input: &Path, out: &Path) -> Result<u64> {
    let identities = age_identities(identity)?;
    let refs: Vec<&dyn age::Identity> = identities.iter().map(AgeIdentity::as_identity).collect();
    let mut source = open_input(input)?;
    let file = Output::create(out, 0o600)?;
    let threads = default_threads();
    if let Some(at) = file.positional() {
        // Chunks are written at their places as they authenticate; the temporary file is kept
        // only if all of them did (dropped otherwise).
        let n = envelope::open_at(&refs, input_of(&mut source), at, threads)?;
        file.commit()?;
        return Ok(n);
    }
    let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
    let n = match input_of(&mut source) {
        SealInput::File(f) => envelope::open_file(&refs, f, &mut buffered, threads)?,
        SealInput::Reader(r) => envelope::open(&refs, r, &mut buffered, threads)?,
    };
    written(buffered, out)?;
    Ok(n)
}
