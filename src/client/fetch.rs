//! Fetching an envelope: nothing is decrypted until the grant, the agent's entry and its signed
//! statement all verify, and no piece of the ciphertext before it matched its leaf; then the
//! envelope is opened locally, a receipt signed and filed, and its proof checked. Into a
//! stream, the ciphertext goes to a scratch file (held in memory when it is at most one piece)
//! and is opened once the whole body has arrived checked; into a file nobody reads before the fetch ends (`fetch -o`'s temporary file), each
//! piece is decrypted as soon as it arrived checked, from memory, with no scratch file
//! ([`UserClient::fetch_at`]).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::clock;
use crate::core::envelope::submission::Submission;
use crate::core::envelope::{self, stream::default_threads};
use crate::core::grant::{DeliveryStatus, Grant, Receipt};
use crate::core::receipt_file::{ReceiptFile, ReceiptVerifier};
use crate::core::sign::{Signed, StatementType};
use crate::core::wire::{ReceiptFrame, Reply, Request, WireSigned};
use crate::error::{Error, Result};
use crate::ids::EnvelopeId;

use super::download::{Arrived, Arriving, Download, Kept, Taken, IN_MEMORY};
use super::header::EnvelopeHeader;
use super::unexpected;
use super::user::UserClient;
use super::verify::{authority, verified_entry};

/// What `fetch` did.
#[derive(Debug)]
pub struct Fetched {
    pub envelope_id: EnvelopeId,
    /// Who, what, why, and whether it verified.
    pub header: EnvelopeHeader,
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
    /// The digest the agent (or, for a source's envelope, the source) signed for this envelope,
    /// once its statement verifies for this grant, user, agent and length.
    fn signed_digest(
        &self,
        view: &crate::core::wire::EnvelopeView,
        grant: &Grant,
    ) -> std::result::Result<[u8; 32], String> {
        let authority = authority(self.identity).map_err(|e| e.message().to_owned())?;
        if let Some(by) = &view.sealed_by {
            let source = verified_entry(&by.source_entry, &authority, None)
                .map_err(|e| e.message().to_owned())?;
            let statement = view
                .statement
                .to_signed(StatementType::SourceSubmission)
                .map_err(|e| e.message().to_owned())?;
            statement
                .verify(&source.signing_key)
                .map_err(|_| "the source's signed statement does not verify".to_owned())?;
            let s = crate::core::dispatch::SourceSubmission::decode(&statement.statement)
                .map_err(|e| e.message().to_owned())?;
            return if s.ciphertext_len == view.length {
                Ok(s.ciphertext_root)
            } else {
                Err(
                    "the ciphertext's length does not match the source's signed statement"
                        .to_owned(),
                )
            };
        }
        let agent_entry = verified_entry(&view.agent_entry, &authority, Some(&grant.agent))
            .map_err(|e| e.message().to_owned())?;
        let statement = view
            .statement
            .to_signed(StatementType::Submission)
            .map_err(|e| e.message().to_owned())?;
        let claimed =
            Submission::decode(&statement.statement).map_err(|e| e.message().to_owned())?;
        let expected = Submission {
            grant_id: grant.grant_id,
            user: self.id.clone(),
            agent: grant.agent.clone(),
            ciphertext_root: claimed.ciphertext_root,
            ciphertext_len: view.length,
        };
        Submission::verify(&statement, &agent_entry.signing_key, &expected)
            .map(|s| s.ciphertext_root)
            .map_err(|e| e.message().to_owned())
    }

    /// Fetches an envelope, checks its header (grant, agent, statement, approval) and the
    /// ciphertext digest, opens it locally into `out` only if everything verifies, signs a
    /// receipt (`delivered`, or `undecryptable` for one that did not verify or open) and files
    /// it with the relay. Nothing is written to `out` before the whole ciphertext has arrived
    /// and matched the signed digest; then the plaintext is written in order.
    pub async fn fetch(
        &self,
        envelope_id: EnvelopeId,
        scratch_dir: &Path,
        out: &mut (dyn Write + Send),
    ) -> Result<Fetched> {
        self.fetch_into(envelope_id, scratch_dir, OpenInto::Ordered(out), None)
            .await
    }

    /// [`fetch`](Self::fetch) into a file written at offsets, decrypting each piece as soon as
    /// it has arrived and matched its leaf, while the rest arrives. Until it is opened whole the
    /// file holds plaintext out of order and perhaps incomplete: only for a file nobody reads
    /// before then and that is discarded otherwise (`fetch -o`'s temporary file,
    /// [`UserClient::fetch_to`]). Once it is opened whole, `settle` makes it final (moves it
    /// into place), before the receipt says it was delivered: a receipt is never filed for
    /// plaintext that could still be lost, and whatever fails after the receipt leaves the
    /// plaintext saved. When `settle` fails, no receipt is filed.
    pub async fn fetch_at(
        &self,
        envelope_id: EnvelopeId,
        scratch_dir: &Path,
        out: &File,
        settle: Settle<'_>,
    ) -> Result<Fetched> {
        self.fetch_into(envelope_id, scratch_dir, OpenInto::At(out), Some(settle))
            .await
    }

    async fn fetch_into(
        &self,
        envelope_id: EnvelopeId,
        scratch_dir: &Path,
        mut out: OpenInto<'_>,
        settle: Option<Settle<'_>>,
    ) -> Result<Fetched> {
        // The receipt goes back on the stream the envelope came on (`Deliver`); dropping `send`
        // without one files none.
        let (reply, send, recv) = self
            .conn
            .call_open(Request::Deliver {
                envelope_id,
                from_piece: 0,
            })
            .await?;
        let Reply::Envelope { view } = reply else {
            return Err(unexpected(&reply));
        };
        // Who, what, why, and whether it all verifies — judged before a byte is decrypted.
        let (header, verified_root) = self.judge_verified(&view, &mut Vec::new()).await?;
        // Asked with another of the user's keys (a rotation since): an agent that filled it
        // before the rotation sealed it to that key, one that filled it after to this one (it
        // seals to the newest key). Opened here only if it is sealed to this identity;
        // otherwise left, with no receipt (an undecryptable one would count against the agent
        // for the user's own key change).
        let other_key = header.other_key_note();
        let grant = Grant::decode(&view.grant.statement)?;
        // The length comes from the relay: bounded by what the user signed (and by a hard cap)
        // before anything is sized by it.
        if view.length > grant.max_bytes || view.length > MAX_LENGTH {
            return Err(Error::verification(format!(
                "envelope {}: the relay says it holds {} bytes, more than the grant allows ({}): nothing was taken",
                crate::ids::hex(envelope_id),
                view.length,
                grant.max_bytes.min(MAX_LENGTH)
            )));
        }
        // The digest the header's statement signs, when it verifies: the piece list is checked
        // against it before any piece is taken.
        let signed = match (&header.problem, verified_root) {
            (Some(p), _) => Err(p.clone()),
            // The header checked the agent's statement for this grant, user, agent and length.
            (None, Some(root)) => Ok(root),
            (None, None) => self.signed_digest(&view, &grant),
        };
        // Into a file: opened while it arrives, from the checked pieces held in memory (no
        // scratch file; never when the header did not verify). Dropped with this call, it
        // stops waiting for more.
        let opening = match (&out, &signed, &self.identity.age_identity) {
            (OpenInto::At(file), Ok(_), Some(age)) => {
                Some(Opening::start(age, view.length, file, default_threads())?)
            }
            _ => None,
        };
        let mut download = match (&opening, &signed) {
            (Some(o), Ok(root)) => Download::arriving(view.length, *root, o.arrived.clone()),
            // A small envelope (a round trip's) is held in memory: no file made and removed.
            _ if view.length <= IN_MEMORY as u64 => {
                Download::in_memory(view.length, signed.as_ref().ok().copied())?
            }
            _ => {
                let scratch = tempfile::tempfile_in(scratch_dir).map_err(|e| {
                    Error::io(format!(
                        "cannot make a scratch file in {}: {e}",
                        scratch_dir.display()
                    ))
                })?;
                Download::new(scratch, view.length, signed.as_ref().ok().copied())
            }
        };
        let (mut send, mut recv) = self
            .download(envelope_id, &view, &mut download, send, recv)
            .await?;
        let digest = download
            .root()
            .ok_or_else(|| Error::internal("a complete download without its piece list"))?;
        let (status, plaintext_len, problem) = match signed.err() {
            // Never opened: an undecryptable receipt says so, signed.
            Some(p) => (DeliveryStatus::Undecryptable, 0, Some(p)),
            None => {
                if !download.complete() {
                    return Err(Error::internal("a download returned before its end"));
                }
                let age_id = self
                    .identity
                    .age_identity
                    .as_ref()
                    .ok_or_else(|| Error::bad_input("this identity holds no age key"))?;
                let kept = || {
                    download
                        .into_kept()
                        .ok_or_else(|| Error::internal("a complete download without its bytes"))
                };
                let ids = [age_id.as_identity()];
                let threads = default_threads();
                let opened = match (opening, &mut out) {
                    (Some(o), _) => o.finish().await,
                    (None, OpenInto::Ordered(out)) => match kept()? {
                        Kept::File(f) => envelope::open_file(&ids, &f, *out, threads),
                        Kept::Memory(m) => envelope::open(&ids, &mut m.as_slice(), *out, threads),
                    },
                    (None, OpenInto::At(file)) => match kept()? {
                        Kept::File(f) => envelope::open_at::<std::io::Empty>(
                            &ids,
                            envelope::SealInput::File(&f),
                            &Plaintext(file),
                            threads,
                        ),
                        Kept::Memory(m) => envelope::open_at(
                            &ids,
                            envelope::SealInput::Reader(&mut m.as_slice()),
                            &Plaintext(file),
                            threads,
                        ),
                    },
                };
                // Opened whole: the plaintext is made final (flushed, or moved into place)
                // before the receipt says it was delivered.
                let opened = opened.and_then(|n| {
                    match &mut out {
                        OpenInto::Ordered(w) => w.flush().map_err(envelope::EnvelopeError::Io)?,
                        OpenInto::At(_) => {}
                    }
                    Ok(n)
                });
                let opened = match (opened, settle) {
                    (Ok(n), Some(settle)) => {
                        settle().map_err(|e| {
                            e.context(format!(
                                "envelope {} was opened but not saved and stays in the inbox (no receipt was filed)",
                                crate::ids::hex(envelope_id)
                            ))
                        })?;
                        Ok(n)
                    }
                    (opened, _) => opened,
                };
                match opened {
                    Ok(n) => (DeliveryStatus::Delivered, n, None),
                    Err(envelope::EnvelopeError::NoMatch) if other_key.is_some() => {
                        return Err(Error::new(
                            crate::ErrorKind::Conflict,
                            format!(
                                "envelope {}: {}",
                                crate::ids::hex(envelope_id),
                                other_key.unwrap_or_default()
                            ),
                        ))
                    }
                    // Here, not the envelope's fault: nothing kept, no receipt, still in the inbox.
                    Err(
                        e @ (envelope::EnvelopeError::Io(_) | envelope::EnvelopeError::Internal(_)),
                    ) => {
                        return Err(Error::from(e).context(format!(
                        "envelope {} was not opened and stays in the inbox (no receipt was filed)",
                        crate::ids::hex(envelope_id)
                    )))
                    }
                    Err(e) => (
                        DeliveryStatus::Undecryptable,
                        0,
                        Some(Error::from(e).message().to_owned()),
                    ),
                }
            }
        };
        let receipt = Receipt {
            envelope_id,
            grant_id: grant.grant_id,
            user: self.id.clone(),
            agent: grant.agent.clone(),
            ciphertext_root: digest,
            status,
            time: clock::now(),
        }
        .sign(&self.identity.signing_key);
        // The newest checkpoint seen, read now (another fetch may have moved it on during this
        // one): the answer's consistency proof starts there.
        let old_size = match &self.seen {
            Some(s) => s.size()?,
            None => None,
        };
        let wire = WireSigned::from_signed(&receipt);
        let frame = ReceiptFrame {
            receipt: wire.clone(),
            old_size,
        };
        // From here the plaintext is saved (delivered) or there is none: whatever fails below
        // says so, and never takes the plaintext back.
        let filed = async {
            let answer = match on_stream(&mut send, &mut recv, &frame).await {
                Ok(answer) => answer,
                // The stream failed (or the relay stopped waiting for the receipt and reset it): file
                // it on its own. A refusal the relay answered stands.
                Err(e) if !e.is_relay_answer() => {
                    tracing::debug!(error = %e, "the receipt did not go on the envelope's stream; filing it on its own");
                    self.conn
                        .simple(Request::Receipt {
                            receipt: wire,
                            old_size,
                        })
                        .await?
                }
                Err(e) => return Err(e),
            };
            let Reply::ReceiptRecorded {
                event_index,
                leaf,
                tree_size,
                proof,
                checkpoint,
                consistency,
            } = answer
            else {
                return Err(Error::internal("unexpected reply to a receipt"));
            };
            let user_entry = self.identity.entry.clone().ok_or_else(|| {
                Error::bad_input("this identity holds no directory entry: import its bundle")
            })?;
            let mut receipt_file = ReceiptFile {
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
            let mut verifier = ReceiptVerifier::new(authority(self.identity)?, log_key.clone())
                .with_notes(self.seen.as_ref().and_then(|s| s.notes()))
                .signed_here(&receipt, self.identity.signing_key.public());
            let mut verified = |file: &ReceiptFile| {
                verifier.verify(file).map(|_| ()).map_err(|e| {
                    e.context("the relay recorded the receipt but its proof does not verify")
                })
            };
            verified(&receipt_file)?;
            // The receipt's checkpoint must extend the newest one this client saw before.
            if let Some(seen) = &self.seen {
                let (mut from, mut consistency) = (old_size, consistency);
                let mut tries = 0;
                loop {
                    match seen.accept(&receipt_file.checkpoint, &consistency, from, None) {
                        Ok(_) => break,
                        // Another fetch of this identity saved a newer checkpoint meanwhile
                        // (two envelopes opened at once): the receipt is recorded, so its proof
                        // is asked for again from there rather than lost.
                        Err(e) if e.kind() == crate::ErrorKind::Unavailable && tries < 8 => {
                            tries += 1;
                            from = seen.size()?;
                            let (size, proof, note, again) =
                                self.conn.proof(event_index, from).await?;
                            (receipt_file.tree_size, receipt_file.proof) = (size, proof);
                            receipt_file.checkpoint = note;
                            consistency = again;
                            verified(&receipt_file)?;
                        }
                        Err(e) => return Err(e.context("the receipt is recorded, but")),
                    }
                }
            }
            Ok((event_index, receipt_file))
        };
        let (event_index, receipt_file) = filed.await.map_err(|e| {
            if status == DeliveryStatus::Delivered {
                e.context(format!(
                    "envelope {} was delivered and its plaintext saved, but its receipt was not completed",
                    crate::ids::hex(envelope_id)
                ))
            } else {
                e
            }
        })?;
        Ok(Fetched {
            envelope_id,
            header,
            status,
            plaintext_len,
            receipt,
            event_index,
            problem,
            receipt_file,
        })
    }
}

/// What makes the plaintext of [`UserClient::fetch_at`] final once it is opened whole, before
/// the receipt is filed (`fetch -o` moves its temporary file into place).
pub type Settle<'a> = Box<dyn FnOnce() -> Result<()> + Send + 'a>;

/// Where `fetch` puts the plaintext.
enum OpenInto<'a> {
    /// In order, once the whole ciphertext has arrived checked.
    Ordered(&'a mut (dyn Write + Send)),
    /// At offsets, while it arrives.
    At(&'a File),
}

/// The output file of [`UserClient::fetch_at`]: a failed write says it was the plaintext's.
struct Plaintext<'a>(&'a File);

impl envelope::stream::WriteAt for Plaintext<'_> {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self.0, buf, offset)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write the plaintext: {e}")))
    }
}

/// An envelope being opened into a file on blocking threads while its ciphertext arrives: the
/// reader waits for each range until it has been checked ([`Arriving`]), and the download
/// waits while the reader holds enough. Dropped before [`Opening::finish`] (the fetch failed
/// or was dropped), it stops waiting, so the threads end.
struct Opening {
    arrived: Arc<Arrived>,
    job: Option<tokio::task::JoinHandle<std::result::Result<u64, envelope::EnvelopeError>>>,
}

impl Opening {
    fn start(
        age: &envelope::keys::AgeIdentity,
        length: u64,
        out: &File,
        threads: usize,
    ) -> Result<Self> {
        // The blocking job owns what it uses: its own handle on the file and a copy of the key
        // (zeroized with the line it was read from).
        let age = envelope::keys::AgeIdentity::parse(&age.to_secret_string())
            .map_err(|e| Error::internal(format!("cannot copy the age key: {e}")))?;
        let arrived = Arc::new(Arrived::default());
        let source = Arriving::new(length, arrived.clone());
        let out = out
            .try_clone()
            .map_err(|e| Error::io(format!("cannot reopen the output file: {e}")))?;
        let job = tokio::task::spawn_blocking(move || {
            let opened = envelope::open_at::<std::io::Empty>(
                &[age.as_identity()],
                envelope::SealInput::File(&source),
                &Plaintext(&out),
                threads,
            );
            // Opened or failed: dropping `source` tells the download to keep no more for it.
            opened
        });
        Ok(Opening {
            arrived,
            job: Some(job),
        })
    }

    /// The opening's outcome, once the whole ciphertext has arrived.
    async fn finish(mut self) -> std::result::Result<u64, envelope::EnvelopeError> {
        let Some(job) = self.job.take() else {
            return Err(envelope::EnvelopeError::Internal("opened twice"));
        };
        job.await
            .map_err(|_| envelope::EnvelopeError::Internal("the opening thread failed"))?
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.arrived.abandon();
    }
}

/// The longest envelope this client takes, whatever a grant allows: its piece list (32 bytes per
/// 256 KiB) is held in memory.
const MAX_LENGTH: u64 = 64 << 30;

/// A broken transfer is asked for again from where it broke this many times in a row without a
/// piece arriving in between.
const RESUMES: u32 = 3;

impl UserClient<'_> {
    /// Takes the body of `envelope_id` into `download`, resuming a broken transfer from the first
    /// piece not yet checked. Gives back the last stream, for the receipt.
    ///
    /// A list or piece that does not match what was signed can only be the relay's doing (the
    /// transfer is TLS): the fetch fails, and no receipt is filed (an undecryptable one would
    /// count against the agent).
    async fn download(
        &self,
        envelope_id: EnvelopeId,
        view: &crate::core::wire::EnvelopeView,
        download: &mut Download,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        let (mut send, mut recv) = (send, recv);
        let mut tries = 0;
        loop {
            let before = download.next();
            match download.take(&mut recv).await? {
                Taken::Complete => return Ok((send, recv)),
                Taken::Altered(why) => {
                    let _ = recv.stop(0u32.into());
                    let _ = send.reset(0u32.into());
                    return Err(Error::verification(format!(
                        "envelope {}: the relay sent what its agent did not sign ({why}): nothing was kept and no receipt was filed; report this relay to its operator",
                        crate::ids::hex(envelope_id)
                    )));
                }
                Taken::Damaged => return Err(super::connection::damaged()),
                Taken::Broken(e) => {
                    tries = if download.next() > before {
                        1
                    } else {
                        tries + 1
                    };
                    if tries > RESUMES {
                        return Err(e);
                    }
                    tracing::info!(error = %e, from_piece = download.next(), "the transfer broke; resuming");
                    let (reply, s, r) = self
                        .conn
                        .call_open(Request::Deliver {
                            envelope_id,
                            from_piece: download.next(),
                        })
                        .await?;
                    match reply {
                        Reply::Envelope { view: again }
                            if again.length == view.length && again.statement == view.statement => {
                        }
                        _ => {
                            return Err(Error::verification(
                                "the relay sent another envelope when the transfer resumed",
                            ))
                        }
                    }
                    (send, recv) = (s, r);
                }
            }
        }
    }
}

/// Sends the receipt on the delivery's stream and reads the relay's answer to it.
async fn on_stream(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    receipt: &ReceiptFrame,
) -> Result<Reply> {
    crate::net::frame::write_frame(send, receipt)
        .await
        .map_err(|e| match e {
            crate::net::frame::WriteFrameError::Encode(e) => e,
            crate::net::frame::WriteFrameError::Stream(e) => {
                super::connection::write_error(&e).context("cannot send the receipt")
            }
        })?;
    let _ = send.finish();
    match super::connection::read_response(recv).await? {
        crate::core::wire::Response::Ok(reply) => Ok(reply),
        crate::core::wire::Response::Err { code, message } => {
            Err(super::connection::refused(code, &message))
        }
    }
}
