//! The requester's commands: `inbox` (who sent what, for what, why, under whose approval, and
//! whether it verifies), `fetch` (the same header before the plaintext; an envelope that does not
//! verify is never opened and gets an `undecryptable` receipt), and the approver's `approvals`,
//! `approve` and `deny`.

use std::path::PathBuf;

use clap::Args;
use sealrelay::client::keywatch::{self, LogSource};
use sealrelay::client::{Destination, EnvelopeHeader, OpenGrant, UserClient};
use sealrelay::clock;
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::error::{Error, ErrorKind, Result};
use sealrelay::ids::{hex, parse_hex, EnvelopeId, GrantId, PartyKind};
use sealrelay::local::checkpoint_state::CheckpointState;
use sealrelay::local::identity_file;

use super::relay::{runtime, scratch_dir, IdentityRelayArgs, RelayArg};

/// The header lines `inbox` and `fetch` print for an envelope.
pub fn header_lines(h: &EnvelopeHeader) -> String {
    let mut out = format!(
        "{}  {:>10} bytes  received {}  {}\n",
        hex(h.envelope_id),
        h.length,
        clock::rfc3339(h.received_at),
        match (&h.problem, h.other_key_note()) {
            (None, None) => "verified".to_owned(),
            (None, Some(note)) => format!("verified, {note}"),
            (Some(p), _) => format!("UNVERIFIABLE: {p} (it will not be opened)"),
        }
    );
    let agent = h
        .agent
        .as_ref()
        .map_or_else(|| "?".to_owned(), ToString::to_string);
    out.push_str(&format!("    from      {agent}\n"));
    if h.sealed_by.is_some() {
        let p = h.provenance();
        out.push_str(&format!(
            "    sealed    {}\n",
            p.strip_prefix("sealed ").unwrap_or(&p)
        ));
    }
    out.push_str(&format!("    resource  {}\n", h.resource));
    out.push_str(&format!("    purpose   {:?}\n", h.purpose));
    out.push_str(&format!("    asked     {}\n", clock::rfc3339(h.asked)));
    match (&h.approver, h.approved_at) {
        (Some(a), Some(t)) => {
            out.push_str(&format!("    approved  by {a} at {}\n", clock::rfc3339(t)))
        }
        _ => out.push_str("    approved  (no approval came with it)\n"),
    }
    out
}

/// Reads the directory log for statements under the user's name that their keys did not make
/// (docs/keys.md), prints the open alerts on stderr, and returns the error that gives exit 9
/// while any is open (the caller returns it after its own output).
async fn key_alerts(
    identity: &sealrelay::core::identity::Identity,
    file: &std::path::Path,
    conn: &sealrelay::client::Connection,
) -> Result<Option<Error>> {
    let report = keywatch::watch(identity, file, LogSource::Relay(conn), false).await?;
    for a in &report.open_alerts {
        eprintln!("{}", keywatch::describe(a));
    }
    Ok(report.as_error(file))
}

pub fn inbox(args: IdentityRelayArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::User, clock::now())?;
    let relay = args.relay.address(&identity);
    runtime()?.block_on(async {
        let user = UserClient::connect(&identity, &relay).await?;
        let alert = key_alerts(&identity, &args.identity, &user.conn).await?;
        let list = user.inbox_headers().await?;
        if args.json {
            let v: Vec<_> = list.iter().map(EnvelopeHeader::to_json).collect();
            println!(
                "{}",
                serde_json::to_string(&v)
                    .map_err(|e| Error::internal(format!("cannot print JSON: {e}")))?
            );
        } else if list.is_empty() {
            println!("inbox empty");
        } else {
            for h in &list {
                print!("{}", header_lines(h));
            }
        }
        user.conn.close().await;
        alert.map_or(Ok(()), Err)
    })
}

#[derive(Args)]
pub struct FetchArgs {
    /// The user's identity file.
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The envelope to fetch (its id, as `inbox` prints it).
    #[arg(
        value_name = "ENVELOPE-ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    envelope: Option<String>,
    /// Fetch every envelope in the inbox (needs -o DIR).
    #[arg(long, requires = "out")]
    all: bool,
    /// Where to write the plaintext: a file (one envelope) or a directory (--all). Without it
    /// the plaintext goes to stdout and the receipt to ./<ENVELOPE-ID>.receipt.
    #[arg(short = 'o', long, value_name = "PATH")]
    out: Option<PathBuf>,
    #[command(flatten)]
    relay: RelayArg,
}

pub fn fetch(args: FetchArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::User, clock::now())?;
    let relay = args.relay.address(&identity);
    let single: Option<EnvelopeId> = args
        .envelope
        .as_deref()
        .map(|e| {
            parse_hex(e).map(EnvelopeId).map_err(|_| {
                Error::bad_input("the envelope id is 32 hex digits, as `inbox` prints it")
            })
        })
        .transpose()?;
    if args.all {
        if let Some(dir) = &args.out {
            // Plaintext goes here: a directory fetch makes is the user's alone.
            sealrelay::local::fs::ensure_private_dir(dir)?;
        }
    }
    // Each receipt's checkpoint must extend the newest one this identity saw (IDENTITY.checkpoint).
    let seen = identity
        .log_key
        .clone()
        .map(|log| CheckpointState::for_identity(&args.identity, log));
    runtime()?.block_on(async {
        let mut user = UserClient::connect(&identity, &relay).await?;
        if let Some(seen) = seen {
            user = user.remember_checkpoints(seen);
        }
        let alert = key_alerts(&identity, &args.identity, &user.conn).await?;
        // With --all, what was asked with another of the user's keys (a rotation since) is
        // opened only if it is sealed to this identity (an agent filled it after the
        // rotation); otherwise it is left for that identity: not opened, no receipt (it is
        // not the agent's doing).
        let mut other_key = std::collections::HashSet::new();
        let ids: Vec<EnvelopeId> = match single {
            Some(id) => vec![id],
            None => {
                let mut ids = Vec::new();
                for h in user.inbox_headers().await? {
                    if h.other_key_note().is_some() {
                        other_key.insert(h.envelope_id);
                    }
                    ids.push(h.envelope_id);
                }
                ids
            }
        };
        let (mut undecryptable, mut failed) = (0, 0);
        for id in &ids {
            let out_path = match (&args.out, args.all) {
                (Some(dir), true) => Some(dir.join(hex(id))),
                (Some(p), false) => Some(p.clone()),
                (None, _) => None,
            };
            // Into the file (kept only if it opened), or stdout; the receipt beside the output,
            // unless the output is a device or a FIFO: then in the current directory, named by
            // the envelope.
            let mut stdout = std::io::stdout();
            let to = match &out_path {
                Some(p) => Destination::Path(p),
                None => Destination::Stream(&mut stdout),
            };
            let saved = match user.fetch_to(*id, to, &scratch_dir()).await {
                Ok(saved) => saved,
                // Asked with another of the user's keys and not sealed to this one: left for
                // that identity. Any other refusal of one envelope is reported, the others
                // still fetched, and the command fails at the end.
                Err(e) if e.kind() == ErrorKind::Conflict && other_key.contains(id) => {
                    eprintln!("left for now: {e}");
                    continue;
                }
                Err(e) if args.all => {
                    eprintln!("envelope {}: {e}", hex(id));
                    failed += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (fetched, rpath) = (saved.fetched, saved.receipt_path);
            eprint!("{}", header_lines(&fetched.header));
            match fetched.status {
                DeliveryStatus::Delivered => eprintln!(
                    "envelope {}: delivered ({} bytes){}; receipt {}{}",
                    hex(id),
                    fetched.plaintext_len,
                    out_path.as_ref().map(|p| format!(" to {}", p.display())).unwrap_or_default(),
                    rpath.display(),
                    witnessed_note(&fetched.receipt_file.checkpoint)
                ),
                DeliveryStatus::Undecryptable => {
                    undecryptable += 1;
                    eprintln!(
                        "envelope {}: undecryptable ({}); an undecryptable receipt was filed: {}",
                        hex(id),
                        fetched.problem.as_deref().unwrap_or("unknown"),
                        rpath.display()
                    );
                }
            }
        }
        if ids.is_empty() {
            eprintln!("inbox empty");
        }
        user.conn.close().await;
        if undecryptable > 0 {
            return Err(Error::verification(format!(
                "{undecryptable} envelope(s) could not be opened with this identity (receipts filed as undecryptable)"
            )));
        }
        if failed > 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{failed} envelope(s) were not fetched (each said why above)"),
            ));
        }
        alert.map_or(Ok(()), Err)
    })
}

/// Whether a receipt's checkpoint came with witness cosignatures (checked by `receipt verify
/// --witness`), or was answered before any witness cosigned it.
fn witnessed_note(checkpoint: &str) -> String {
    match sealrelay::core::tlog::cosignature::other_signature_lines(checkpoint) {
        0 => " (its checkpoint is signed by the relay alone: no witness cosignature; docs/witness.md)".into(),
        n => format!(" (its checkpoint carries {n} witness cosignature(s): check them with `receipt verify --witness`)"),
    }
}

#[derive(Args)]
pub struct ApproveArgs {
    /// The approver's identity (a user with the approver role, not the requester).
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The grant to approve (its id, as `approvals` prints it).
    #[arg(value_name = "GRANT-ID")]
    grant: String,
    #[command(flatten)]
    relay: RelayArg,
}

#[derive(Args)]
pub struct DenyArgs {
    /// The approver's identity (a user with the approver role, not the requester).
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The grant to deny (its id, as `approvals` prints it).
    #[arg(value_name = "GRANT-ID")]
    grant: String,
    /// Why, in a line (signed into the denial; the requester sees it).
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
    #[command(flatten)]
    relay: RelayArg,
}

fn grant_id(s: &str) -> Result<GrantId> {
    parse_hex(s)
        .map(GrantId)
        .map_err(|_| Error::bad_input("the grant id is 32 hex digits, as `approvals` prints it"))
}

fn describe_grant(g: &OpenGrant) -> String {
    format!(
        "{} asked {} for {} ({:?})",
        g.grant.user.short(),
        g.grant.agent.short(),
        g.grant.resource,
        g.grant.purpose
    )
}

pub fn approve(args: ApproveArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::User, clock::now())?;
    let relay = args.relay.address(&identity);
    let id = grant_id(&args.grant)?;
    runtime()?.block_on(async {
        let user = UserClient::connect(&identity, &relay).await?;
        let g = user.approve(id).await?;
        println!("approved grant {}: {}", hex(id), describe_grant(&g));
        user.conn.close().await;
        Ok(())
    })
}

pub fn deny(args: DenyArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::User, clock::now())?;
    let relay = args.relay.address(&identity);
    let id = grant_id(&args.grant)?;
    runtime()?.block_on(async {
        let user = UserClient::connect(&identity, &relay).await?;
        let g = user.deny(id, &args.reason).await?;
        println!(
            "denied grant {}: {}; it is closed and the denial is logged",
            hex(id),
            describe_grant(&g)
        );
        user.conn.close().await;
        Ok(())
    })
}

/// The whole grant, as an approver must see it before deciding.
pub fn approvals(args: IdentityRelayArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::User, clock::now())?;
    let relay = args.relay.address(&identity);
    runtime()?.block_on(async {
        let user = UserClient::connect(&identity, &relay).await?;
        let pending = user.pending_with_classification().await?;
        if args.json {
            let v: Vec<_> = pending
                .iter()
                .map(|(g, class)| {
                    serde_json::json!({
                        "grant_id": hex(g.grant.grant_id),
                        "requester": g.grant.user.to_string(),
                        "agent": g.grant.agent.to_string(),
                        "resource": g.grant.resource,
                        "purpose": g.grant.purpose,
                        "classification": class,
                        "asked": clock::rfc3339(g.grant.created),
                        "expires": clock::rfc3339(g.grant.expires),
                        "max_bytes": g.grant.max_bytes,
                        "sha256": hex(sealrelay::core::directory::sha256(&g.grant.encode())),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(v));
        } else if pending.is_empty() {
            println!("no grants await your approval");
        }
        if !args.json {
            for (g, class) in &pending {
                println!("{}  awaits your approval", hex(g.grant.grant_id));
                println!("    requester       {}", g.grant.user);
                println!("    agent           {}", g.grant.agent);
                println!("    resource        {}", g.grant.resource);
                println!("    purpose         {:?}", g.grant.purpose);
                println!("    classification  {class}");
                println!("    asked           {}", clock::rfc3339(g.grant.created));
                println!("    expires         {}", clock::rfc3339(g.grant.expires));
                println!("    max bytes       {}", g.grant.max_bytes);
                println!(
                    "    sha256          {} (what an approval or denial signs)",
                    hex(sealrelay::core::directory::sha256(&g.grant.encode()))
                );
            }
        }
        user.conn.close().await;
        Ok(())
    })
}
