//! Fetching into a file and saving the receipt beside it, the one way `fetch` and the web client
//! do it: [`UserClient::fetch`] (header first, digest, open only if everything verifies, receipt
//! signed, filed and its proof checked) into a file written atomically and kept only when the
//! envelope opened (decrypted while it arrives, [`UserClient::fetch_at`]), then the receipt
//! file (with its proof and checkpoint) saved beside it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::{hex, EnvelopeId};
use crate::local::fs::{write_atomic, Output, PUBLIC_MODE};

use super::fetch::Fetched;
use super::user::UserClient;

/// Where [`UserClient::fetch_to`] writes the plaintext.
pub enum Destination<'a> {
    /// A path: a new path or a regular file is written atomically (mode 0600) and kept only
    /// when the envelope opened; a device or a FIFO is written in place (`local::fs::Output`).
    /// The receipt goes beside it as `PATH.receipt`, or, beside a device or a FIFO, to
    /// `./<ENVELOPE-ID>.receipt`.
    Path(&'a Path),
    /// A stream (stdout), flushed at the end; the receipt goes to `./<ENVELOPE-ID>.receipt`.
    Stream(&'a mut (dyn Write + Send)),
}

/// What [`UserClient::fetch_to`] did.
#[derive(Debug)]
pub struct Saved {
    /// What the fetch did (header, status, receipt).
    pub fetched: Fetched,
    /// Where the receipt file was saved.
    pub receipt_path: PathBuf,
}

/// `PATH.receipt`: where the receipt of an output at `PATH` is saved.
pub fn receipt_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".receipt");
    PathBuf::from(s)
}

impl UserClient<'_> {
    /// Fetches `envelope_id` into `to` (see [`UserClient::fetch`] for what is checked before a
    /// byte is decrypted), then saves the receipt file beside the output (mode 0644: a public
    /// proof). The ciphertext waits in `scratch_dir` meanwhile.
    pub async fn fetch_to(
        &self,
        envelope_id: EnvelopeId,
        to: Destination<'_>,
        scratch_dir: &Path,
    ) -> Result<Saved> {
        let (fetched, beside) = match to {
            Destination::Path(path) => {
                let mut file = Output::create(path, 0o600)?;
                let in_place = file.in_place();
                // A new temporary file is opened into while the ciphertext arrives, and moved
                // into place once it is opened whole, before the receipt is filed; a device or
                // a FIFO takes the plaintext in order, once it has all arrived, and is flushed
                // before the receipt.
                let at = file
                    .positional()
                    .map(File::try_clone)
                    .transpose()
                    .map_err(|e| Error::io(format!("cannot reopen the output file: {e}")))?;
                let fetched = match at {
                    Some(at) => {
                        let saved = std::sync::atomic::AtomicBool::new(false);
                        let settle = Box::new(|| {
                            file.commit()?;
                            saved.store(true, std::sync::atomic::Ordering::SeqCst);
                            Ok(())
                        });
                        let fetched = self.fetch_at(envelope_id, scratch_dir, &at, settle).await;
                        // Saved, and then something failed: say where it is.
                        fetched.map_err(|e| {
                            if saved.load(std::sync::atomic::Ordering::SeqCst) {
                                e.context(format!("saved in {}", path.display()))
                            } else {
                                e
                            }
                        })?
                    }
                    None => self.fetch(envelope_id, scratch_dir, &mut file).await?,
                };
                // Beside the output, unless it was written in place (a device, a FIFO,
                // standard output): as chosen when it was opened, not by looking again. An
                // envelope that did not open saved nothing there: its receipt is not put beside
                // what the path holds (an earlier envelope's plaintext, and its receipt).
                let saved_there = fetched.status == crate::core::grant::DeliveryStatus::Delivered;
                let beside = (!in_place && saved_there).then(|| path.to_path_buf());
                (fetched, beside)
            }
            Destination::Stream(out) => {
                let fetched = self.fetch(envelope_id, scratch_dir, &mut *out).await?;
                let _ = out.flush();
                (fetched, None)
            }
        };
        let saved_at = receipt_path(&beside.unwrap_or_else(|| PathBuf::from(hex(envelope_id))));
        write_atomic(
            &saved_at,
            fetched.receipt_file.to_json().as_bytes(),
            PUBLIC_MODE,
            true,
        )?;
        Ok(Saved {
            fetched,
            receipt_path: saved_at,
        })
    }
}
