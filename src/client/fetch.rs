//! Fetching an envelope: the ciphertext streams to a scratch file while it is hashed; nothing is
//! decrypted until the grant, the agent's entry and its signed statement all verify; then the
//! envelope is opened locally, a receipt signed and filed, and its proof checked.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::clock;
use crate::core::envelope::submission::Submission;
use crate::core::envelope::{self, stream::default_threads, HashingWriter};
use crate::core::grant::{DeliveryStatus, Grant, Receipt};
use crate::core::receipt_file::ReceiptFile;
use crate::core::sign::{Signed, StatementType};
use crate::core::wire::{Reply, Request, WireSigned};
use crate::error::{Error, Result};
use crate::ids::EnvelopeId;
use crate::net::frame::CHUNK;

use super::connection::read_body;
use super::unexpected;
use super::user::UserClient;
use super::verify::{authority, verified_entry};

/// What `fetch` did.
#[derive(Debug)]
pub struct Fetched {
    pub envelope_id: EnvelopeId,
    pub status: DeliveryStatus,
    pub plaintext_len: u64,
    pub receipt: Signed,
    pub event_index: u64,
    /// Why the envelope could not be opened, for `Undecryptable`.
    pub problem: Option<String>,
    /// The receipt with its log entry, inclusion proof and signed checkpoint (verified).
    pub receipt_file: ReceiptFile,
}

impl UserClient<'_> {
    /// Fetches an envelope, checks the agent's signed statement and the ciphertext digest,
    /// opens it locally into `out` (only if everything verifies), signs a receipt
    /// (`delivered` or `undecryptable`) and files it with the relay.
    pub async fn fetch(
        &self,
        envelope_id: EnvelopeId,
        scratch_dir: &Path,
        out: &mut (dyn Write + Send),
    ) -> Result<Fetched> {
        let (reply, mut recv) = self.conn.call(Request::Fetch { envelope_id }, None).await?;
        let Reply::Envelope { view } = reply else {
            return Err(unexpected(&reply));
        };
        let authority = authority(self.identity)?;
        let grant_signed = view.grant.to_signed(StatementType::Grant)?;
        let grant = Grant::verify(&grant_signed, &self.identity.signing_key.public())
            .map_err(|e| e.context("the envelope's grant is not one this user signed"))?;
        let agent_entry = verified_entry(&view.agent_entry, &authority, Some(&grant.agent))?;
        let mut scratch = tempfile::tempfile_in(scratch_dir).map_err(|e| {
            Error::io(format!(
                "cannot make a scratch file in {}: {e}",
                scratch_dir.display()
            ))
        })?;
        let (digest, len) = {
            let mut w = HashingWriter::new(&mut scratch);
            read_body(&mut recv, view.length, &mut w).await?;
            let (_, digest, len) = w.finish();
            (digest, len)
        };
        let expected = Submission {
            grant_id: grant.grant_id,
            user: self.id.clone(),
            agent: grant.agent.clone(),
            ciphertext_sha256: digest,
            ciphertext_len: len,
        };
        Submission::verify(
            &view.statement.to_signed(StatementType::Submission)?,
            &agent_entry.signing_key,
            &expected,
        )?;
        scratch
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(format!("cannot rewind the scratch file: {e}")))?;
        let age_id = self
            .identity
            .age_identity
            .as_ref()
            .ok_or_else(|| Error::bad_input("this identity holds no age key"))?;
        let mut reader = std::io::BufReader::with_capacity(CHUNK, scratch);
        let (status, plaintext_len, problem) =
            match envelope::open(&[age_id], &mut reader, out, default_threads()) {
                Ok(n) => (DeliveryStatus::Delivered, n, None),
                Err(
                    e @ (envelope::EnvelopeError::Io(_) | envelope::EnvelopeError::Internal(_)),
                ) => return Err(e.into()),
                Err(e) => (DeliveryStatus::Undecryptable, 0, Some(e.to_string())),
            };
        let receipt = Receipt {
            envelope_id,
            grant_id: grant.grant_id,
            user: self.id.clone(),
            agent: grant.agent.clone(),
            ciphertext_sha256: digest,
            status,
            time: clock::now(),
        }
        .sign(&self.identity.signing_key);
        let request = Request::Receipt {
            receipt: WireSigned::from_signed(&receipt),
        };
        let Reply::ReceiptRecorded {
            event_index,
            leaf,
            tree_size,
            proof,
            checkpoint,
        } = self.conn.simple(request).await?
        else {
            return Err(Error::internal("unexpected reply to a receipt"));
        };
        let user_entry = self.identity.entry.clone().ok_or_else(|| {
            Error::bad_input("this identity holds no directory entry: import its bundle")
        })?;
        let receipt_file = ReceiptFile {
            receipt: receipt.clone(),
            user_entry,
            leaf_index: event_index,
            leaf,
            tree_size,
            proof,
            checkpoint,
        };
        // Trust, but verify: the relay's proof must hold under the keys this identity pinned.
        let log_key = self.identity.log_key.as_ref().ok_or_else(|| {
            Error::bad_input("this identity trusts no log key: import its bundle")
        })?;
        receipt_file.verify(&authority, log_key).map_err(|e| {
            e.context("the relay recorded the receipt but its proof does not verify")
        })?;
        Ok(Fetched {
            envelope_id,
            status,
            plaintext_len,
            receipt,
            event_index,
            problem,
            receipt_file,
        })
    }
}
