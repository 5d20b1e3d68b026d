//! `sealrelay seal` and `sealrelay open`: envelopes offline.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use sealrelay::clock;
use sealrelay::core::directory::DirectoryEntry;
use sealrelay::core::envelope::keys::{AgeIdentity, AgeRecipient};
use sealrelay::core::envelope::stream::{default_threads, WriteAt};
use sealrelay::core::envelope::submission::Submission;
use sealrelay::core::envelope::{self, HashingWriter, SealInput};
use sealrelay::core::sign::{Signed, StatementType, MAX_SIGNED_FILE_LEN};
use sealrelay::error::{Error, Result};
use sealrelay::ids::{GrantId, PartyKind};
use sealrelay::local::fs::{read_capped, write_atomic, Output, PUBLIC_MODE};
use sealrelay::local::{identity_file, trust_root};

/// Inputs at least this large get a progress bar (on a terminal only).
const PROGRESS_MIN: u64 = 16 * 1024 * 1024;

#[derive(Args)]
pub struct SealArgs {
    /// Recipient: an age recipient, post-quantum hybrid (age1pq1…) or X25519 (age1…).
    #[arg(
        long,
        value_name = "age1…",
        conflicts_with = "to_entry",
        required_unless_present = "to_entry"
    )]
    to: Option<String>,
    /// Recipient: a user's directory entry (FILE.entry), verified against the authority key
    /// (--authority, or the one pinned in --sign-with) before anything is sealed.
    #[arg(long, value_name = "FILE")]
    to_entry: Option<PathBuf>,
    /// Authority public key for --to-entry (default: the --sign-with identity's pinned key).
    #[arg(long, value_name = "PUB")]
    authority: Option<PathBuf>,
    /// Sign a submission statement with this agent identity; written to OUT.submission
    /// (needs --to-entry and -o).
    #[arg(long, value_name = "F", requires = "to_entry", requires = "out")]
    sign_with: Option<PathBuf>,
    /// Grant id (32 hex digits) to bind in the submission statement (default: all zero).
    #[arg(long, value_name = "HEX", requires = "sign_with")]
    grant: Option<String>,
    /// Output file (default: stdout, which must not be a terminal).
    #[arg(short = 'o', long, value_name = "OUT")]
    out: Option<PathBuf>,
    /// Input file, or - for stdin.
    #[arg(value_name = "IN", default_value = "-")]
    input: String,
}

#[derive(Args)]
pub struct OpenArgs {
    /// A sealrelay user identity, or a plain age identity file (age-keygen output).
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// Output file, written only if the whole envelope authenticates (default: stdout, where
    /// authenticated chunks are released in order as they verify).
    #[arg(short = 'o', long, value_name = "OUT")]
    out: Option<PathBuf>,
    /// Input file, or - for stdin.
    #[arg(value_name = "IN", default_value = "-")]
    input: String,
}

/// What a command reads: a regular file (sealed or opened by worker threads reading it at
/// offsets), or a stream (stdin, a FIFO, a device, or a file shown with a progress bar).
enum Input {
    File(std::fs::File),
    Reader(Box<dyn Read>),
}

impl Input {
    fn seal(
        &mut self,
        recipient: &dyn age::Recipient,
        out: &mut dyn Write,
    ) -> std::result::Result<envelope::Sealed, envelope::EnvelopeError> {
        match self {
            Input::File(f) => envelope::seal_file(recipient, f, out, default_threads()),
            Input::Reader(r) => envelope::seal(recipient, r, out, default_threads()),
        }
    }

    fn open(
        &mut self,
        identities: &[&dyn age::Identity],
        out: &mut dyn Write,
    ) -> std::result::Result<u64, envelope::EnvelopeError> {
        match self {
            Input::File(f) => envelope::open_file(identities, f, out, default_threads()),
            Input::Reader(r) => envelope::open(identities, r, out, default_threads()),
        }
    }

    fn seal_at(
        &mut self,
        recipient: &dyn age::Recipient,
        out: &dyn WriteAt,
    ) -> std::result::Result<envelope::Sealed, envelope::EnvelopeError> {
        match self {
            Input::File(f) => envelope::seal_at::<std::io::Empty>(
                recipient,
                SealInput::File(f),
                out,
                default_threads(),
            ),
            Input::Reader(r) => {
                envelope::seal_at(recipient, SealInput::Reader(r), out, default_threads())
            }
        }
    }

    fn open_at(
        &mut self,
        identities: &[&dyn age::Identity],
        out: &dyn WriteAt,
    ) -> std::result::Result<u64, envelope::EnvelopeError> {
        match self {
            Input::File(f) => envelope::open_at::<std::io::Empty>(
                identities,
                SealInput::File(f),
                out,
                default_threads(),
            ),
            Input::Reader(r) => {
                envelope::open_at(identities, SealInput::Reader(r), out, default_threads())
            }
        }
    }
}

/// Opens `input` ("-" is stdin), with a progress bar when stderr is a terminal and the input
/// is large.
fn open_input(input: &str, what: &str) -> Result<Input> {
    if input == "-" {
        return Ok(Input::Reader(Box::new(std::io::stdin().lock())));
    }
    let path = Path::new(input);
    let f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::not_found(format!("{input} does not exist: check the path"))
        }
        _ => Error::io(format!("cannot read {input}: {e}")),
    })?;
    let meta = f.metadata().ok();
    let regular = meta.as_ref().is_some_and(|m| m.is_file());
    match meta.map(|m| m.len()) {
        Some(len) if regular && len >= PROGRESS_MIN && std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new(len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(what.to_owned());
            Ok(Input::Reader(Box::new(bar.wrap_read(f))))
        }
        _ if regular => Ok(Input::File(f)),
        _ => Ok(Input::Reader(Box::new(f))),
    }
}

fn parse_grant(hex: Option<&str>) -> Result<GrantId> {
    match hex {
        None => Ok(GrantId([0u8; 16])),
        Some(h) => sealrelay::ids::parse_hex::<16>(h)
            .map(GrantId)
            .map_err(|e| e.context("--grant must be 32 hex digits")),
    }
}

pub fn seal(args: SealArgs) -> Result<()> {
    let now = clock::now();
    let signer = args
        .sign_with
        .as_deref()
        .map(|p| identity_file::load_enrolled(p, PartyKind::Agent, now))
        .transpose()?;
    let (recipient, entry) = match (&args.to, &args.to_entry) {
        (Some(r), _) => (
            AgeRecipient::from_str(r).map_err(|e| Error::bad_input(format!("--to: {e}")))?,
            None,
        ),
        (None, Some(path)) => {
            let authority = match (&args.authority, &signer) {
                (Some(p), _) => trust_root::read_verifier_key(p)?.key,
                (None, Some(id)) => id.authority.as_ref().map(|a| a.key).ok_or_else(|| {
                    Error::bad_input(
                        "the --sign-with identity trusts no authority yet: import its bundle",
                    )
                })?,
                (None, None) => {
                    return Err(Error::bad_input(
                        "--to-entry needs --authority PUB (or --sign-with) to verify the entry",
                    ))
                }
            };
            let bytes = read_capped(path, MAX_SIGNED_FILE_LEN)?;
            let signed = Signed::from_json(&bytes, StatementType::DirectoryEntry)
                .map_err(|e| e.context(path.display()))?;
            let entry = DirectoryEntry::verify(&signed, &authority)
                .map_err(|e| e.context(path.display()))?;
            if !entry.is_current(now) {
                return Err(Error::bad_input(format!(
                    "{}: the entry for {} is outside its validity",
                    path.display(),
                    entry.id.short()
                )));
            }
            let r = entry.age_recipient.as_deref().ok_or_else(|| {
                Error::bad_input(format!(
                    "{} is not a user: only users receive envelopes",
                    entry.id.short()
                ))
            })?;
            let recipient = AgeRecipient::from_str(r)
                .map_err(|_| Error::bad_input("the entry's age recipient is malformed"))?;
            (recipient, Some(entry))
        }
        (None, None) => return Err(Error::bad_input("give --to age1… or --to-entry FILE")),
    };
    let grant_id = parse_grant(args.grant.as_deref())?;
    let mut input = open_input(&args.input, "sealing")?;
    match &args.out {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(Error::bad_input(
                    "refusing to write ciphertext to a terminal: use -o FILE or redirect stdout",
                ));
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            input.seal(recipient.as_recipient(), &mut out)?;
            out.flush()
                .map_err(|e| Error::io(format!("cannot write stdout: {e}")))?;
        }
        Some(path) => {
            let file = Output::create(path, PUBLIC_MODE)?;
            // Into a temporary file, the workers write their shares at offsets: no one thread
            // copies everything in order. A statement needs the ciphertext's digest, in order.
            if let (None, Some(at)) = (&signer, file.positional()) {
                input.seal_at(recipient.as_recipient(), at)?;
                return file.commit();
            }
            let mut buffered = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut seal_into = |out: &mut dyn Write| input.seal(recipient.as_recipient(), out);
            // The ciphertext's digest is needed only for a signed statement: without
            // --sign-with, hashing every byte would be CPU spent for nothing.
            let (digest, written) = if signer.is_some() {
                let mut out = HashingWriter::new(&mut buffered);
                seal_into(&mut out)?;
                let (_, digest, written) = out.finish();
                (digest, written)
            } else {
                seal_into(&mut buffered)?;
                ([0u8; 32], 0)
            };
            let file = buffered.into_inner().map_err(|e| {
                Error::io(format!("cannot write {}: {}", path.display(), e.error()))
            })?;
            if let (Some(agent), Some(entry)) = (&signer, &entry) {
                let agent_id = agent
                    .id
                    .clone()
                    .ok_or_else(|| Error::bad_input("the --sign-with identity is not enrolled"))?;
                let statement = Submission {
                    grant_id,
                    user: entry.id.clone(),
                    agent: agent_id,
                    ciphertext_root: digest,
                    ciphertext_len: written,
                }
                .sign(&agent.signing_key);
                let mut sub = path.as_os_str().to_owned();
                sub.push(".submission");
                write_atomic(
                    Path::new(&sub),
                    statement.to_json().as_bytes(),
                    PUBLIC_MODE,
                    true,
                )?;
            }
            file.commit()?;
        }
    }
    Ok(())
}

pub fn open(args: OpenArgs) -> Result<()> {
    let identities = sealrelay::client::files::age_identities(&args.identity)?;
    let refs: Vec<&dyn age::Identity> = identities.iter().map(AgeIdentity::as_identity).collect();
    let mut input = open_input(&args.input, "opening")?;
    match &args.out {
        None => {
            // Released in order, each chunk only after it authenticates.
            let mut out = std::io::stdout().lock();
            let result = input.open(&refs, &mut out);
            out.flush()
                .map_err(|e| Error::io(format!("cannot write stdout: {e}")))?;
            result?;
        }
        Some(path) => {
            let file = Output::create(path, 0o600)?;
            // Into a temporary file, the workers write each chunk that authenticated at its
            // place; the file is kept only if all of it did.
            if let Some(at) = file.positional() {
                input.open_at(&refs, at)?;
                return file.commit();
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            input.open(&refs, &mut out)?;
            let file = out.into_inner().map_err(|e| {
                Error::io(format!("cannot write {}: {}", path.display(), e.error()))
            })?;
            file.commit()?;
        }
    }
    Ok(())
}
