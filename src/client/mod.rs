//! The client library the CLI, the demo and the tests use: [`UserClient`], [`AgentClient`] and
//! [`AdminClient`] over one mutually authenticated QUIC connection each.
//!
//! Clients trust nothing the relay says about keys: every directory entry the relay hands over
//! is verified against the authority key pinned in the caller's identity before it is used.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use quinn::{RecvStream, SendStream};

use crate::clock;
use crate::core::directory::DirectoryEntry;
use crate::core::envelope::submission::Submission;
use crate::core::envelope::{self, stream::default_threads, HashingWriter};
use crate::core::grant::{random_id, DeliveryStatus, Grant, Receipt};
use crate::core::identity::Identity;
use crate::core::receipt_file::ReceiptFile;
use crate::core::sign::{PublicKey, Signed, StatementType};
use crate::core::wire::{
    self, EnvelopeView, ErrorCode, Reply, Request, RequestFrame, Response, WireSigned,
    PROTOCOL_VERSION,
};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{hex, PartyKind, SpiffeId};
use crate::net::{self, Limits};

const IO_CHUNK: usize = 256 * 1024;
/// How long a connection attempt may take before the relay counts as unreachable.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One connection to the relay, authenticated with an identity's client certificate.
pub struct Connection {
    conn: quinn::Connection,
    endpoint: quinn::Endpoint,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("relay connection failed: {e}"),
    )
}

/// Maps a transport error on the first use of a connection to a clear message: with TLS 1.3 a
/// client whose certificate the relay refused only learns it here.
fn stream_error(e: impl std::fmt::Display) -> Error {
    let text = e.to_string();
    if text.contains("agent quarantined") {
        return Error::new(
            ErrorKind::Refused,
            "the relay quarantined this agent and closed its connection: an admin must release it (`sealrelay agent release`)",
        );
    }
    if text.contains("certificate")
        || text.contains("closed by peer")
        || text.contains("connection lost")
        || text.contains("aborted by peer")
    {
        Error::new(
            ErrorKind::Refused,
            format!("the relay refused this identity ({text}): check that its certificate is issued by the relay's CA and not revoked"),
        )
    } else {
        unavailable(text)
    }
}

impl Connection {
    /// Connects to `relay` (HOST:PORT) as `identity`.
    pub async fn connect(identity: &Identity, relay: &str) -> Result<Self> {
        let (Some(cert), Some(ca)) = (&identity.cert, &identity.ca_cert) else {
            return Err(Error::bad_input(
                "this identity is not enrolled: import the admin's bundle with `sealrelay keys import`",
            ));
        };
        let config = net::client_config(cert, identity.tls_key.pkcs8(), ca, &Limits::default())?;
        let (addr, host) = net::resolve(relay)?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .map_err(|_| Error::internal("bad bind address"))?;
        let mut endpoint = quinn::Endpoint::client(bind).map_err(unavailable)?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, &host)
            .map_err(|e| Error::bad_input(format!("cannot connect to {relay}: {e}")))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("no answer from the relay at {relay} (is it running?)"),
                )
            })?
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("cannot reach the relay at {relay}: {e}"),
                )
            })?;
        // The relay must present a relay identity of our trust domain.
        let peer = net::peer(&conn)?;
        let ours = identity.id.as_ref().map(|i| i.trust_domain().to_owned());
        if peer.id.kind() != PartyKind::Relay || Some(peer.id.trust_domain().to_owned()) != ours {
            conn.close(0u32.into(), b"not a relay of our trust domain");
            return Err(Error::verification(format!(
                "{} is not a relay of this trust domain",
                peer.id
            )));
        }
        Ok(Connection { conn, endpoint })
    }

    /// Sends `request` (and `body`, if any) and reads the response frame. The returned stream
    /// carries a body after `Reply::Envelope`.
    pub async fn call(
        &self,
        request: Request,
        body: Option<&mut (dyn Read + Send)>,
    ) -> Result<(Reply, RecvStream)> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(stream_error)?;
        let frame = wire::encode_frame(&RequestFrame {
            version: PROTOCOL_VERSION,
            request,
        })?;
        send.write_all(&frame).await.map_err(stream_error)?;
        // A relay that refuses a request early stops reading the body: its answer still comes.
        let body_result = match body {
            Some(body) => send_body(&mut send, body).await,
            None => Ok(()),
        };
        let _ = send.finish();
        let response: Response = match read_frame(&mut recv).await {
            Ok(r) => r,
            Err(e) => return Err(body_result.err().unwrap_or(e)),
        };
        if let (Err(e), Response::Ok(_)) = (&body_result, &response) {
            return Err(e.clone());
        }
        match response {
            Response::Ok(reply) => Ok((reply, recv)),
            Response::Err { code, message } => {
                Err(Error::new(code.kind(), refusal_message(code, &message)))
            }
        }
    }

    async fn simple(&self, request: Request) -> Result<Reply> {
        Ok(self.call(request, None).await?.0)
    }

    /// The relay's latest signed checkpoint, with a consistency proof from `old_size`.
    pub async fn checkpoint(&self, old_size: Option<u64>) -> Result<(String, Vec<[u8; 32]>)> {
        match self.simple(Request::GetCheckpoint { old_size }).await? {
            Reply::Checkpoint {
                checkpoint,
                consistency,
            } => Ok((checkpoint, consistency)),
            other => Err(unexpected(&other)),
        }
    }

    /// Event leaves `from..from+limit` (auditors and admins).
    pub async fn events(&self, from: u64, limit: u32) -> Result<Vec<(u64, Vec<u8>)>> {
        match self.simple(Request::Events { from, limit }).await? {
            Reply::Events { events } => Ok(events),
            other => Err(unexpected(&other)),
        }
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"bye");
        self.endpoint.wait_idle().await;
    }
}

fn refusal_message(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::NotFound => format!("the relay says: {message}"),
        _ => format!("refused by the relay ({code:?}): {message}"),
    }
}

async fn send_body(send: &mut SendStream, body: &mut (dyn Read + Send)) -> Result<()> {
    let mut buf = vec![0u8; IO_CHUNK];
    loop {
        let n = body
            .read(&mut buf)
            .map_err(|e| Error::io(format!("cannot read the body: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        send.write_all(&buf[..n]).await.map_err(stream_error)?;
    }
}

async fn read_frame<T: for<'a> serde::Deserialize<'a>>(recv: &mut RecvStream) -> Result<T> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.map_err(stream_error)?;
    let len = wire::frame_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(stream_error)?;
    wire::decode_frame(&body)
}

fn authority(identity: &Identity) -> Result<PublicKey> {
    identity
        .authority
        .as_ref()
        .map(|a| a.key)
        .ok_or_else(|| Error::bad_input("this identity trusts no authority yet: import its bundle"))
}

/// Verifies an entry from the relay against the pinned authority and `now`.
fn verified_entry(
    w: &WireSigned,
    authority: &PublicKey,
    expect: Option<&SpiffeId>,
) -> Result<DirectoryEntry> {
    let entry = DirectoryEntry::verify(&w.to_signed(StatementType::DirectoryEntry)?, authority)
        .map_err(|e| e.context("the relay served a directory entry that does not verify"))?;
    if let Some(id) = expect {
        if entry.id != *id {
            return Err(Error::verification(format!(
                "the relay served the entry of {} where {} was expected",
                entry.id.short(),
                id.short()
            )));
        }
    }
    Ok(entry)
}

fn own_id(identity: &Identity, kind: PartyKind) -> Result<SpiffeId> {
    identity.require_kind(kind)?;
    identity
        .id
        .clone()
        .ok_or_else(|| Error::bad_input("this identity is not enrolled: import its bundle"))
}

/// A user: creates grants, lists and fetches its envelopes, files receipts.
pub struct UserClient<'a> {
    pub conn: Connection,
    identity: &'a Identity,
    id: SpiffeId,
}

/// Options for a new grant.
pub struct GrantRequest {
    pub agent: String,
    pub resource: String,
    pub purpose: String,
    pub ttl_secs: u64,
    pub max_bytes: u64,
}

/// What `fetch` did.
#[derive(Debug)]
pub struct Fetched {
    pub envelope_id: [u8; 16],
    pub status: DeliveryStatus,
    pub plaintext_len: u64,
    pub receipt: Signed,
    pub event_index: u64,
    /// Why the envelope could not be opened, for `Undecryptable`.
    pub problem: Option<String>,
    /// The receipt with its log entry, inclusion proof and signed checkpoint (verified).
    pub receipt_file: ReceiptFile,
}

impl<'a> UserClient<'a> {
    pub async fn connect(identity: &'a Identity, relay: &str) -> Result<Self> {
        let id = own_id(identity, PartyKind::User)?;
        Ok(UserClient {
            conn: Connection::connect(identity, relay).await?,
            identity,
            id,
        })
    }

    /// Signs and files a grant; returns its id.
    pub async fn grant(&self, req: &GrantRequest) -> Result<[u8; 16]> {
        let agent: SpiffeId = if req.agent.starts_with("spiffe://") {
            req.agent.parse()?
        } else {
            SpiffeId::new(self.id.trust_domain(), PartyKind::Agent, &req.agent)?
        };
        let now = clock::now();
        let grant = Grant {
            grant_id: random_id()?,
            user: self.id.clone(),
            agent,
            resource: req.resource.clone(),
            purpose: req.purpose.clone(),
            created: now,
            expires: now.saturating_add(req.ttl_secs),
            max_bytes: req.max_bytes,
        };
        let signed = grant.sign(&self.identity.signing_key)?;
        match self
            .conn
            .simple(Request::CreateGrant {
                grant: WireSigned::from_signed(&signed),
            })
            .await?
        {
            Reply::GrantCreated { grant_id, .. } => Ok(grant_id),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn inbox(&self) -> Result<Vec<EnvelopeView>> {
        match self.conn.simple(Request::Inbox).await? {
            Reply::Inbox { envelopes } => Ok(envelopes),
            other => Err(unexpected(&other)),
        }
    }

    /// Fetches an envelope, checks the agent's signed statement and the ciphertext digest,
    /// opens it locally into `out` (only if everything verifies), signs a receipt
    /// (`delivered` or `undecryptable`) and files it with the relay.
    pub async fn fetch(
        &self,
        envelope_id: [u8; 16],
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
        // Stream the ciphertext to a scratch file while hashing: nothing is decrypted until the
        // digest matches the agent's signed statement.
        let mut scratch = tempfile::tempfile_in(scratch_dir).map_err(|e| {
            Error::io(format!(
                "cannot make a scratch file in {}: {e}",
                scratch_dir.display()
            ))
        })?;
        let (digest, len) = {
            let mut w = HashingWriter::new(&mut scratch);
            let mut buf = vec![0u8; IO_CHUNK];
            let mut got = 0u64;
            while got < view.length {
                let want =
                    usize::try_from((view.length - got).min(IO_CHUNK as u64)).unwrap_or(IO_CHUNK);
                match recv.read(&mut buf[..want]).await.map_err(stream_error)? {
                    Some(n) => {
                        w.write_all(&buf[..n]).map_err(|e| {
                            Error::io(format!("cannot write the scratch file: {e}"))
                        })?;
                        got += n as u64;
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::Unavailable,
                            "the relay closed the stream before the whole envelope arrived",
                        ))
                    }
                }
            }
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
        let mut reader = std::io::BufReader::with_capacity(IO_CHUNK, scratch);
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
        let event_index = match self
            .conn
            .simple(Request::Receipt {
                receipt: WireSigned::from_signed(&receipt),
            })
            .await?
        {
            Reply::ReceiptRecorded {
                event_index,
                leaf,
                tree_size,
                proof,
                checkpoint,
            } => (event_index, leaf, tree_size, proof, checkpoint),
            other => return Err(unexpected(&other)),
        };
        let (event_index, leaf, tree_size, proof, checkpoint) = event_index;
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

impl UserClient<'_> {
    /// Grants awaiting approval that this user may approve, each verified: the requester's entry
    /// against the pinned authority, the grant against the requester's key.
    pub async fn pending_approvals(&self) -> Result<Vec<OpenGrant>> {
        let authority = authority(self.identity)?;
        let Reply::Pending { grants } = self.conn.simple(Request::PendingApprovals).await? else {
            return Err(Error::internal("unexpected reply"));
        };
        let mut out = Vec::new();
        for view in grants {
            let user_entry = verified_entry(&view.user_entry, &authority, None)?;
            let grant = Grant::verify(
                &view.grant.to_signed(StatementType::Grant)?,
                &user_entry.signing_key,
            )?;
            if grant.user != user_entry.id {
                return Err(Error::verification(
                    "the relay served a grant that does not match its requester",
                ));
            }
            out.push(OpenGrant { grant, user_entry });
        }
        Ok(out)
    }

    /// Approves a pending grant: signs an approval bound to the SHA-256 of the grant exactly as
    /// its requester signed it.
    pub async fn approve(&self, grant_id: [u8; 16]) -> Result<OpenGrant> {
        let pending = self.pending_approvals().await?;
        let g = pending
            .into_iter()
            .find(|g| g.grant.grant_id == grant_id)
            .ok_or_else(|| Error::not_found("no grant with that id awaits your approval (unknown, already approved, expired, or yours)"))?;
        self.approve_statement(&g.grant.encode(), grant_id).await?;
        Ok(g)
    }

    /// Signs and sends an approval of the grant statement `grant_statement` (for tests that
    /// approve something else than what the relay holds).
    pub async fn approve_statement(
        &self,
        grant_statement: &[u8],
        grant_id: [u8; 16],
    ) -> Result<()> {
        let approval = crate::core::grant::Approval {
            grant_id,
            grant_sha256: crate::core::directory::sha256(grant_statement),
            approver: self.id.clone(),
            time: clock::now(),
        }
        .sign(&self.identity.signing_key);
        match self
            .conn
            .simple(Request::Approve {
                approval: WireSigned::from_signed(&approval),
            })
            .await?
        {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

/// An open grant, verified: the grant (signed by its user) and the user's entry (signed by the
/// authority).
#[derive(Clone, Debug)]
pub struct OpenGrant {
    pub grant: Grant,
    pub user_entry: DirectoryEntry,
}

/// An agent: lists its grants and submits envelopes (it can read nothing).
pub struct AgentClient<'a> {
    pub conn: Connection,
    identity: &'a Identity,
    id: SpiffeId,
}

impl<'a> AgentClient<'a> {
    pub async fn connect(identity: &'a Identity, relay: &str) -> Result<Self> {
        let id = own_id(identity, PartyKind::Agent)?;
        Ok(AgentClient {
            conn: Connection::connect(identity, relay).await?,
            identity,
            id,
        })
    }

    /// Open grants addressed to this agent, each verified against the pinned authority.
    pub async fn grants(&self) -> Result<Vec<OpenGrant>> {
        let authority = authority(self.identity)?;
        let Reply::Grants { grants } = self.conn.simple(Request::ListGrants).await? else {
            return Err(Error::internal("unexpected reply"));
        };
        let now = clock::now();
        let mut out = Vec::new();
        for view in grants {
            let user_entry = verified_entry(&view.user_entry, &authority, None)?;
            if !user_entry.is_current(now) {
                continue;
            }
            let grant = Grant::verify(
                &view.grant.to_signed(StatementType::Grant)?,
                &user_entry.signing_key,
            )?;
            if grant.user != user_entry.id || grant.agent != self.id {
                return Err(Error::verification(
                    "the relay served a grant that does not match its user or this agent",
                ));
            }
            out.push(OpenGrant { grant, user_entry });
        }
        Ok(out)
    }

    /// Seals `input` to the grant's user (recipient from the verified entry), signs the
    /// submission statement and streams it to the relay. Returns the envelope id.
    pub async fn send(
        &self,
        grant: &OpenGrant,
        input: &mut (dyn Read + Send),
        scratch_dir: &Path,
    ) -> Result<[u8; 16]> {
        let recipient = grant
            .user_entry
            .age_recipient
            .as_deref()
            .ok_or_else(|| Error::bad_input("the grant's user has no age recipient"))?;
        let recipient = age::x25519::Recipient::from_str(recipient)
            .map_err(|_| Error::bad_input("the grant's user has a malformed age recipient"))?;
        let mut scratch = tempfile::tempfile_in(scratch_dir).map_err(|e| {
            Error::io(format!(
                "cannot make a scratch file in {}: {e}",
                scratch_dir.display()
            ))
        })?;
        let (digest, len) = {
            let mut w =
                HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, &mut scratch));
            envelope::seal(&recipient, input, &mut w, default_threads())?;
            let (inner, digest, len) = w.finish();
            inner
                .into_inner()
                .map_err(|e| Error::io(format!("cannot write the scratch file: {}", e.error())))?;
            (digest, len)
        };
        if len > grant.grant.max_bytes {
            return Err(Error::bad_input(format!(
                "the sealed envelope is {len} bytes, over the grant's limit of {} bytes",
                grant.grant.max_bytes
            )));
        }
        let statement = Submission {
            grant_id: grant.grant.grant_id,
            user: grant.grant.user.clone(),
            agent: self.id.clone(),
            ciphertext_sha256: digest,
            ciphertext_len: len,
        }
        .sign(&self.identity.signing_key);
        scratch
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(format!("cannot rewind the scratch file: {e}")))?;
        self.submit_raw(grant.grant.grant_id, &statement, len, &mut scratch)
            .await
    }

    /// Submits already-sealed bytes with a statement (no checks: for tests of the relay).
    pub async fn submit_raw(
        &self,
        grant_id: [u8; 16],
        statement: &Signed,
        length: u64,
        body: &mut (dyn Read + Send),
    ) -> Result<[u8; 16]> {
        let request = Request::Submit {
            grant_id,
            statement: WireSigned::from_signed(statement),
            length,
        };
        match self.conn.call(request, Some(body)).await?.0 {
            Reply::Submitted { envelope_id } => Ok(envelope_id),
            other => Err(unexpected(&other)),
        }
    }

    /// The signing key, for tests that build their own statements.
    pub fn identity(&self) -> &Identity {
        self.identity
    }
}

/// An admin: pushes signed directory entries and revocations to the relay.
pub struct AdminClient {
    pub conn: Connection,
}

impl AdminClient {
    pub async fn connect(identity: &Identity, relay: &str) -> Result<Self> {
        identity.require_kind(PartyKind::Admin)?;
        Ok(AdminClient {
            conn: Connection::connect(identity, relay).await?,
        })
    }

    /// The kill switch: quarantine an agent now.
    pub async fn quarantine(&self, agent: &str, reason: &str) -> Result<()> {
        match self
            .conn
            .simple(Request::Quarantine {
                agent: agent.to_owned(),
                reason: reason.to_owned(),
            })
            .await?
        {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Lift a quarantine.
    pub async fn release(&self, agent: &str) -> Result<()> {
        match self
            .conn
            .simple(Request::Release {
                agent: agent.to_owned(),
            })
            .await?
        {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn push(&self, entries: &[Signed], revocations: &[Signed]) -> Result<()> {
        let request = Request::PushDirectory {
            entries: entries.iter().map(WireSigned::from_signed).collect(),
            revocations: revocations.iter().map(WireSigned::from_signed).collect(),
        };
        match self.conn.simple(request).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(reply: &Reply) -> Error {
    Error::internal(format!("unexpected reply from the relay: {reply:?}"))
}

/// Hex form of an id for display and the CLI.
pub fn id_hex(id: &[u8; 16]) -> String {
    hex(id)
}
