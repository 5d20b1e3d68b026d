//! The agent's client: lists the grants addressed to it and submits envelopes sealed to the
//! grant's user (it can read nothing).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::core::envelope::pieces::PIECE;
use crate::core::envelope::submission::Submission;
use crate::core::envelope::{self, stream::default_threads, HashingWriter};
use crate::core::identity::Identity;
use crate::core::sign::Signed;
use crate::core::wire::{Reply, Request, SubmissionState, WireSigned};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{EnvelopeId, GrantId, PartyKind, SpiffeId};

use self::ciphertext::{Ciphertext, CiphertextReader, Keeping};
use super::connection::Connection;
use super::unexpected;
use super::verify::{own_id, OpenGrant, SerialPins};

mod ciphertext;
mod dispatch;
pub(crate) mod judge;
pub(crate) use judge::{judge_frame, judge_listing};

/// An envelope sealed for a grant, with its signed statement, ready to send (and to send again).
pub struct Sealed {
    pub grant_id: GrantId,
    pub statement: Signed,
    pub length: u64,
    /// The ciphertext's digest: the root of its piece tree (never of the plaintext).
    pub ciphertext_root: [u8; 32],
    file: Ciphertext,
    /// Whether a submission of it was started (a later one first asks what the relay kept).
    tried: bool,
    /// The piece the last successful submission started from (more than 0: it resumed).
    resumed_from: u64,
}

impl Sealed {
    /// The piece the last successful submission started from: more than 0 when an earlier
    /// try broke off and the relay kept its whole pieces, so only the rest was sent.
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    pub(crate) fn was_tried(&self) -> bool {
        self.tried
    }

    /// A reader of the sealed ciphertext from its first byte (positional reads: a submission
    /// of it is not disturbed).
    pub fn ciphertext(&self) -> Result<impl Read + Send> {
        Ok(match &self.file {
            Ciphertext::Memory(bytes) => {
                CiphertextReader::Memory(std::io::Cursor::new(bytes.get_ref().clone()))
            }
            Ciphertext::File(file) => CiphertextReader::File {
                file: file
                    .try_clone()
                    .map_err(|e| Error::io(format!("cannot read the scratch file: {e}")))?,
                at: 0,
            },
        })
    }
}

/// What became of a submission, as the relay tells its agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionStatus {
    pub state: SubmissionState,
    pub envelope_id: Option<EnvelopeId>,
    /// The receipt's leaf index in the transparency log, once the user filed one.
    pub receipt_index: Option<u64>,
    /// The source the grant was dispatched to (docs/sources.md).
    pub source: Option<String>,
    /// The source's refusal, verified against its directory entry.
    pub refusal: Option<crate::core::dispatch::SourceRefusal>,
}

/// An agent: lists its grants and submits envelopes (it can read nothing).
pub struct AgentClient<'a> {
    pub conn: Connection,
    pub(super) identity: &'a Identity,
    pub(super) id: SpiffeId,
    /// The highest directory serial seen per user: this process's (and, when the caller gave
    /// [`AgentClient::with_pins`] pins kept beside the identity, every earlier run's).
    pub(super) pins: std::sync::Arc<SerialPins>,
}

impl<'a> AgentClient<'a> {
    pub async fn connect(identity: &'a Identity, relay: &str) -> Result<Self> {
        let id = own_id(identity, PartyKind::Agent)?;
        Ok(AgentClient {
            conn: Connection::connect(identity, relay).await?,
            identity,
            id,
            pins: std::sync::Arc::new(SerialPins::in_memory()),
        })
    }

    /// Uses `pins` (shared by every client of this process, and kept across runs when made
    /// with [`SerialPins::for_identity`]) instead of pins of this client's own.
    pub fn with_pins(mut self, pins: std::sync::Arc<SerialPins>) -> Self {
        self.pins = pins;
        self
    }

    /// Open grants addressed to this agent, each verified against the pinned authority; grants
    /// whose user's entry is no longer current are skipped.
    pub async fn grants(&self) -> Result<Vec<OpenGrant>> {
        Ok(self
            .judged_grants()
            .await?
            .into_iter()
            .filter_map(|(_, g)| {
                g.map_err(|e| tracing::warn!(error = %e, "a grant the relay listed was skipped"))
                    .ok()
            })
            .collect())
    }

    /// Every grant the relay listed, each with the agent's verdict: the grant, or why nothing
    /// may be sealed for it (one line: a key not in the directory log, a reset still waiting,
    /// a signature that does not verify). Errors only when the listing itself cannot be trusted
    /// (a directory log that does not extend what this agent saw).
    pub async fn judged_grants(&self) -> Result<Vec<(WireSigned, Result<OpenGrant>)>> {
        let judged = judge_listing(
            &self.conn,
            self.identity,
            &self.pins,
            |page, dir_size| Request::ListGrants { page, dir_size },
            |reply| match reply {
                Reply::Grants {
                    grants,
                    next,
                    directory,
                } => Ok((grants, next, directory)),
                other => Err(unexpected(&other)),
            },
            |v| v,
        )
        .await?;
        let mut out = Vec::new();
        for (view, g) in judged {
            self.check_addressed(&g)?;
            out.push((view.grant, g));
        }
        Ok(out)
    }

    /// A grant the relay served that verified must be addressed to this agent: one that is not
    /// makes the whole listing (or feed) untrustworthy.
    pub(super) fn check_addressed(&self, g: &Result<OpenGrant>) -> Result<()> {
        match g {
            Ok(g) if g.grant.agent != self.id => Err(Error::verification(
                "the relay served a grant that does not match its user or this agent",
            )),
            _ => Ok(()),
        }
    }

    /// Seals `input` to the grant's user (recipient from the verified entry), signs the
    /// submission statement and streams it to the relay. Returns the envelope id.
    pub async fn send(
        &self,
        grant: &OpenGrant,
        input: &mut (dyn Read + Send),
        scratch_dir: &Path,
    ) -> Result<EnvelopeId> {
        let mut sealed = self.seal(grant, input, scratch_dir)?;
        self.submit_sealed(&mut sealed).await
    }

    /// Sends what [`AgentClient::seal`] made. Sending the same `Sealed` again (after a lost
    /// answer, on a new connection) is safe: the relay answers a repeated submission with the
    /// original envelope id and stores it once.
    pub async fn submit_sealed(&self, sealed: &mut Sealed) -> Result<EnvelopeId> {
        let ask = sealed.tried;
        submit_sealed_over(&self.conn, sealed, ask).await
    }

    /// Sends what the relay lacks of `sealed`: it is first asked what it kept of an upload of
    /// this statement that broke off (on any connection: the relay keeps one for
    /// `upload_resume_secs`), and only the pieces after those go. [`Sealed::resumed_from`] then
    /// says where it started. `submit_sealed` does this by itself after a try of its own.
    pub async fn resume_sealed(&self, sealed: &mut Sealed) -> Result<EnvelopeId> {
        submit_sealed_over(&self.conn, sealed, true).await
    }

    /// Seals `input` for `grant` into a scratch file and signs the submission statement, without
    /// sending anything.
    pub fn seal(
        &self,
        grant: &OpenGrant,
        input: &mut (dyn Read + Send),
        scratch_dir: &Path,
    ) -> Result<Sealed> {
        seal_for(self.identity, grant, input, scratch_dir)
    }

    /// Submits already-sealed bytes with a statement (no checks: for tests of the relay).
    pub async fn submit_raw(
        &self,
        grant_id: GrantId,
        statement: &Signed,
        length: u64,
        body: &mut (dyn Read + Send),
    ) -> Result<EnvelopeId> {
        let request = Request::Submit {
            grant_id,
            statement: WireSigned::from_signed(statement),
            length,
            from_piece: 0,
        };
        match self.conn.call(request, Some(body)).await?.0 {
            Reply::Submitted { envelope_id } => Ok(envelope_id),
            other => Err(unexpected(&other)),
        }
    }

    /// Where the envelope submitted for one of this agent's grants is (the outcome only: an
    /// agent can read nothing).
    pub async fn submission_status(&self, grant_id: GrantId) -> Result<SubmissionStatus> {
        match self
            .conn
            .call(Request::SubmissionStatus { grant_id }, None)
            .await?
            .0
        {
            Reply::SubmissionStatus {
                state,
                envelope_id,
                receipt_index,
                source,
                refusal,
            } => {
                // The relay's words: a party name or nothing reaches the model.
                if let Some(s) = &source {
                    super::verify::source_name(s)?;
                }
                let refusal = match refusal {
                    Some(r) => Some(
                        self.verified_refusal(&r, grant_id, source.as_deref())
                            .await?,
                    ),
                    None => None,
                };
                Ok(SubmissionStatus {
                    state,
                    envelope_id,
                    receipt_index,
                    source,
                    refusal,
                })
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The identity, for tests that build their own statements.
    pub fn identity(&self) -> &Identity {
        self.identity
    }
}

/// Sends a sealed envelope over `conn` (an agent's, or a source's). After a try that broke off
/// (on this connection or another), the relay is first asked what it kept of it, and only the
/// pieces after those are sent; when it kept nothing, or no longer has it, all of it is.
pub(crate) async fn submit_sealed_over(
    conn: &Connection,
    sealed: &mut Sealed,
    ask: bool,
) -> Result<EnvelopeId> {
    let statement = WireSigned::from_signed(&sealed.statement);
    let mut from = 0;
    if ask && sealed.length > PIECE as u64 {
        let ask = Request::Resumable {
            grant_id: sealed.grant_id,
        };
        match conn.simple(ask).await? {
            Reply::ResumeAt {
                from_piece,
                statement_sha256,
            } => {
                // Only the upload this statement made, and never past its end.
                let ours =
                    statement_sha256 == Some(crate::core::directory::sha256(&statement.statement));
                let within = from_piece
                    .checked_mul(PIECE as u64)
                    .is_some_and(|at| at <= sealed.length);
                if ours && within {
                    from = from_piece;
                }
            }
            other => return Err(unexpected(&other)),
        }
    }
    sealed.tried = true;
    let sent = match send_from(conn, sealed, &statement, from).await {
        // What it kept is gone (it expired, or the relay restarted) or is not what this sends:
        // all of it, then (only on those answers: a used grant stays refused).
        Err(e)
            if from > 0
                && e.kind() == ErrorKind::Conflict
                && e.message().contains("from the first piece") =>
        {
            from = 0;
            send_from(conn, sealed, &statement, 0).await
        }
        sent => sent,
    }?;
    sealed.resumed_from = from;
    Ok(sent)
}

/// One `Submit` of `sealed` from piece `from` on.
async fn send_from(
    conn: &Connection,
    sealed: &mut Sealed,
    statement: &WireSigned,
    from: u64,
) -> Result<EnvelopeId> {
    sealed
        .file
        .seek(SeekFrom::Start(from * PIECE as u64))
        .map_err(|e| Error::io(format!("cannot rewind the scratch file: {e}")))?;
    let request = Request::Submit {
        grant_id: sealed.grant_id,
        statement: statement.clone(),
        length: sealed.length,
        from_piece: from,
    };
    match conn.call(request, Some(&mut sealed.file)).await?.0 {
        Reply::Submitted { envelope_id } => Ok(envelope_id),
        other => Err(unexpected(&other)),
    }
}

/// Seals `input` to the grant's user (recipient from the verified entry) into a scratch file
/// (ciphertext only) and signs the submission statement as `identity`, the grant's agent.
/// Blocking: callers on an async runtime run it on a blocking thread.
pub fn seal_for(
    identity: &Identity,
    grant: &OpenGrant,
    input: &mut (dyn Read + Send),
    scratch_dir: &Path,
) -> Result<Sealed> {
    // A grant addressed to another agent is the relay's to refuse (as "no such grant").
    let agent = own_id(identity, PartyKind::Agent)?;
    seal_signed(grant, input, scratch_dir, |digest, len| {
        Submission {
            grant_id: grant.grant.grant_id,
            user: grant.grant.user.clone(),
            agent,
            ciphertext_root: digest,
            ciphertext_len: len,
        }
        .sign(&identity.signing_key)
    })
}

/// Seals `input` to the grant's user (recipient from the verified entry) into a scratch file
/// and signs what `statement` makes of the ciphertext's digest and length (an agent's
/// submission, or a source's). Blocking.
pub fn seal_signed(
    grant: &OpenGrant,
    input: &mut (dyn Read + Send),
    scratch_dir: &Path,
    statement: impl FnOnce([u8; 32], u64) -> Signed,
) -> Result<Sealed> {
    let recipient = grant
        .user_entry
        .age_recipient
        .as_deref()
        .ok_or_else(|| Error::bad_input("the grant's user has no age recipient"))?;
    let recipient = crate::core::envelope::keys::AgeRecipient::parse_remembered(recipient)
        .map_err(|_| Error::bad_input("the grant's user has a malformed age recipient"))?;
    // In memory until it is longer than a piece, then in an unnamed file in `scratch_dir`.
    let mut scratch = Keeping::in_dir(scratch_dir);
    let (digest, len) = {
        let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(256 * 1024, &mut scratch));
        envelope::seal(recipient.as_recipient(), input, &mut w, default_threads())?;
        let (inner, digest, len) = w.finish();
        // (`Keeping`'s errors name the scratch directory.)
        inner
            .into_inner()
            .map_err(|e| Error::io(e.error().to_string()))?;
        (digest, len)
    };
    let file = scratch.kept();
    if len > grant.grant.max_bytes {
        return Err(Error::bad_input(format!(
            "the sealed envelope is {len} bytes, over the grant's limit of {} bytes",
            grant.grant.max_bytes
        )));
    }
    let statement = statement(digest, len);
    Ok(Sealed {
        grant_id: grant.grant.grant_id,
        statement,
        length: len,
        ciphertext_root: digest,
        file,
        tried: false,
        resumed_from: 0,
    })
}
