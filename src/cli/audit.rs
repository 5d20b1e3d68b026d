//! `sealrelay receipt verify` (offline) and `sealrelay audit verify | tail`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sealrelay::client::Connection;
use sealrelay::clock;
use sealrelay::core::receipt_file::{ReceiptFile, ReceiptVerifier, MAX_RECEIPT_FILE_LEN};
use sealrelay::core::store::Event;
use sealrelay::core::tlog::checkpoint::Checkpoint;
use sealrelay::error::{Error, Result};
use sealrelay::ids::hex;
use sealrelay::local::checkpoint_state::{check_extends, CheckpointState};
use sealrelay::local::fs::{read_capped, write_atomic, PUBLIC_MODE};
use sealrelay::local::{identity_file, trust_root};

use super::relay::{runtime, RelayArg, WitnessArgs};

#[derive(Subcommand)]
pub enum ReceiptCommand {
    /// Verify a receipt offline: the user's signature, the directory entry vouching for the
    /// user's key, and the inclusion proof against the log's signed checkpoint.
    Verify {
        /// Receipt files `fetch` saved (OUTPUT.receipt); several are checked as one batch.
        #[arg(value_name = "RECEIPT", required = true)]
        receipts: Vec<PathBuf>,
        /// The authority public key.
        #[arg(long, value_name = "PUB", default_value = "keys/authority.pub")]
        authority: PathBuf,
        /// The log public key.
        #[arg(long, value_name = "PUB", default_value = "keys/log.pub")]
        log_key: PathBuf,
        #[command(flatten)]
        witnesses: WitnessArgs,
    },
    /// Replace a receipt's proof with one against the relay's newest witnessed checkpoint (for
    /// a receipt answered before witnesses had cosigned); the new proof is verified first.
    Upgrade(UpgradeArgs),
}

#[derive(Args)]
pub struct UpgradeArgs {
    /// Receipt files to upgrade in place.
    #[arg(value_name = "RECEIPT", required = true)]
    receipts: Vec<PathBuf>,
    /// Your identity file (its pinned authority and log keys verify the new proof).
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    #[command(flatten)]
    witnesses: WitnessArgs,
    #[command(flatten)]
    relay: RelayArg,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Fetch the relay's newest checkpoint and check it is consistent with an older one (by
    /// default the last one this identity verified); a smaller or forked log is reported.
    Verify(VerifyArgs),
    /// The latest events of the log, with their leaf indexes (auditors and admins).
    Tail(TailArgs),
    /// The log's events for a SIEM: OCSF, JSON lines or syslog, each verified against the
    /// relay's signed log and carrying its index and proof reference; --follow streams new ones,
    /// and --out resumes where it stopped (exactly once).
    Export(super::export::ExportArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Your identity file (its pinned log key verifies the checkpoints).
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// An older checkpoint to check against (default: IDENTITY.checkpoint, the last verified).
    #[arg(long, value_name = "OLD")]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    witnesses: WitnessArgs,
    #[command(flatten)]
    relay: RelayArg,
}

#[derive(Args)]
pub struct TailArgs {
    /// Your identity file (an admin, or a user with the auditor role).
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// How many of the latest events.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 20)]
    count: u32,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    relay: RelayArg,
}

pub fn run_receipt(cmd: ReceiptCommand) -> Result<()> {
    let (receipts, authority, log_key, witnesses) = match cmd {
        ReceiptCommand::Verify {
            receipts,
            authority,
            log_key,
            witnesses,
        } => (receipts, authority, log_key, witnesses),
        ReceiptCommand::Upgrade(args) => return upgrade(args),
    };
    let policy = witnesses.policy()?;
    let authority = trust_root::read_verifier_key(&authority)?;
    let log = trust_root::read_verifier_key(&log_key)?;
    // Entries and checkpoints shared by several receipts are verified once.
    let mut verifier = ReceiptVerifier::new(authority.key, log).with_witnesses(policy);
    let mut failed: Option<Error> = None;
    for receipt in &receipts {
        let result = read_capped(receipt, MAX_RECEIPT_FILE_LEN)
            .and_then(|bytes| ReceiptFile::from_json(&bytes))
            .and_then(|file| verifier.verify(&file))
            .map_err(|e| e.context(receipt.display()));
        match result {
            Ok(v) => println!(
                "ok: envelope {} {} to {} at {}; signed by the user (key vouched for by authority {}); log entry #{} of {} under a checkpoint signed by {}{}",
                hex(v.receipt.envelope_id),
                v.receipt.status.as_str(),
                v.receipt.user,
                clock::rfc3339(v.receipt.time),
                authority.key.fingerprint(),
                v.leaf_index,
                v.checkpoint.size,
                v.checkpoint.origin,
                witnessed_by(&v.witnessed_by)
            ),
            Err(e) if receipts.len() == 1 => return Err(e),
            Err(e) => {
                eprintln!("error: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(Error::new(
            e.kind(),
            "some receipts failed verification (each is listed above)",
        )),
        None => Ok(()),
    }
}

fn witnessed_by(by: &[(String, u64)]) -> String {
    if by.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = by.iter().map(|(n, _)| n.as_str()).collect();
    format!(", cosigned by {}", names.join(", "))
}

fn upgrade(args: UpgradeArgs) -> Result<()> {
    let identity = identity_file::load(&args.identity, None)?;
    let log = identity
        .log_key
        .clone()
        .ok_or_else(|| Error::bad_input("this identity trusts no log key: import its bundle"))?;
    let authority = sealrelay::client::authority(&identity)?;
    let policy = args.witnesses.policy()?;
    let relay = args.relay.address(&identity);
    let mut files = Vec::new();
    for path in &args.receipts {
        let file = read_capped(path, MAX_RECEIPT_FILE_LEN)
            .and_then(|bytes| ReceiptFile::from_json(&bytes))
            .map_err(|e| e.context(path.display()))?;
        // The receipt as it stands must verify (its checkpoint is the starting point).
        ReceiptVerifier::new(authority, log.clone())
            .verify(&file)
            .map_err(|e| e.context(path.display()))?;
        files.push((path, file));
    }
    let state = CheckpointState::for_identity(&args.identity, log.clone());
    runtime()?.block_on(async {
        let conn = Connection::connect(&identity, &relay).await?;
        let mut verifier =
            ReceiptVerifier::new(authority, log.clone()).with_witnesses(policy.clone());
        let mut result = Ok(());
        for (path, file) in files {
            let step = async {
                // The new checkpoint must extend the newest one this identity saw (or, before
                // the first, the receipt's own).
                let saved = state.load()?;
                let old = match &saved {
                    Some((c, _)) => c.clone(),
                    None => Checkpoint::verify(&file.checkpoint, &log)?,
                };
                let (tree_size, proof, checkpoint, consistency) =
                    conn.proof(file.leaf_index, Some(old.size)).await?;
                let new = Checkpoint::verify(&checkpoint, &log)
                    .map_err(|e| e.context("the relay's checkpoint"))?;
                check_extends(&old, &new, &consistency)?;
                let upgraded = ReceiptFile {
                    tree_size,
                    proof,
                    checkpoint: checkpoint.clone(),
                    ..file
                };
                // The receipt's own leaf must be in the new tree (and witnessed, with a policy).
                let v = verifier.verify(&upgraded)?;
                match &saved {
                    Some((c, _)) => {
                        state.accept(&checkpoint, &consistency, Some(c.size), policy.as_ref())?
                    }
                    None => state.accept(&checkpoint, &[], None, policy.as_ref())?,
                };
                write_atomic(path, upgraded.to_json().as_bytes(), PUBLIC_MODE, true)?;
                println!(
                    "upgraded: {} now proves log entry #{} under a checkpoint of {} entries{}",
                    path.display(),
                    v.leaf_index,
                    v.checkpoint.size,
                    witnessed_by(&v.witnessed_by)
                );
                Ok::<(), Error>(())
            }
            .await
            .map_err(|e| e.context(path.display()));
            if let Err(e) = step {
                eprintln!("error: {e}");
                result = Err(e);
            }
        }
        conn.close().await;
        result
    })
}

pub fn run_audit(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Tail(a) => tail(a),
        AuditCommand::Export(a) => super::export::export(a),
    }
}

fn verify(args: VerifyArgs) -> Result<()> {
    let identity = identity_file::load(&args.identity, None)?;
    let log = identity
        .log_key
        .clone()
        .ok_or_else(|| Error::bad_input("this identity trusts no log key: import its bundle"))?;
    let policy = args.witnesses.policy()?;
    let relay = args.relay.address(&identity);
    let state = CheckpointState::for_identity(&args.identity, log.clone());
    // The size saved before this run (the state accepts the new checkpoint only against it).
    let saved_size = state.size()?;
    let old = match &args.checkpoint {
        Some(path) => Some(
            CheckpointState::at(path.clone(), log.clone())
                .load()?
                .ok_or_else(|| Error::not_found(format!("{} does not exist", path.display())))?
                .0,
        ),
        None => state.load()?.map(|(c, _)| c),
    };
    runtime()?.block_on(async {
        let conn = Connection::connect(&identity, &relay).await?;
        let result = conn.checkpoint(old.as_ref().map(|c| c.size)).await;
        conn.close().await;
        let (note, proof) = match result {
            Ok(r) => r,
            Err(e) if e.kind() == sealrelay::ErrorKind::Conflict => {
                return Err(Error::verification(format!("ROLLBACK: {}", e.message())));
            }
            Err(e) => return Err(e),
        };
        let new = Checkpoint::verify(&note, &log).map_err(|e| e.context("the relay's checkpoint"))?;
        let witnessed = match &policy {
            Some(p) => p
                .check(&note)
                .map_err(|e| e.context("the relay's checkpoint"))?
                .by,
            None => Vec::new(),
        };
        if let Some(old) = &old {
            check_extends(old, &new, &proof)?;
        }
        // The identity's own state: saved when the new checkpoint extends it. With an explicit
        // --checkpoint of another size, the state is left alone (the proof is from that one).
        let proof_from_saved = match saved_size {
            None => Some(&[][..]),
            Some(s) if Some(s) == old.as_ref().map(|c| c.size) => Some(&proof[..]),
            Some(_) => None,
        };
        let saved = match proof_from_saved {
            Some(p) => {
                state.accept(&note, p, saved_size, policy.as_ref())?;
                format!("; saved it to {}", state.path().display())
            }
            None => String::new(),
        };
        let cosigned = witnessed_by(&witnessed);
        match old {
            Some(old) => println!(
                "ok: the log has {} entries and is consistent with your checkpoint of {}{cosigned}{saved}",
                new.size, old.size
            ),
            None => println!(
                "ok: the log has {} entries (signed checkpoint verified{cosigned}){saved} for next time",
                new.size
            ),
        }
        Ok(())
    })
}

fn tail(args: TailArgs) -> Result<()> {
    let identity = identity_file::load(&args.identity, None)?;
    let log = identity
        .log_key
        .clone()
        .ok_or_else(|| Error::bad_input("this identity trusts no log key: import its bundle"))?;
    let relay = args.relay.address(&identity);
    runtime()?.block_on(async {
        let conn = Connection::connect(&identity, &relay).await?;
        let (note, _) = conn.checkpoint(None).await?;
        let cp = Checkpoint::verify(&note, &log)?;
        let from = cp.size.saturating_sub(u64::from(args.count));
        let events = conn.events(from, args.count).await?;
        conn.close().await;
        for (index, leaf) in events {
            let e = Event::from_leaf_bytes(&leaf)?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "index": index, "time": e.time, "kind": e.kind, "actor": e.actor,
                        "subject": e.subject, "decision": e.decision, "detail": e.detail,
                        "digest": hex(&e.digest), "leaf_sha256": hex(sealrelay::core::tlog::leaf_hash(&leaf)),
                    })
                );
            } else {
                println!("{}", table_row(index, &e));
            }
        }
        Ok(())
    })
}

/// One event as `audit tail` shows it: the relay's words and an admin's reason are made safe to
/// show first, so nothing in them acts on the terminal (an escape sequence, a carriage return
/// that hides a line, a direction change).
fn table_row(index: u64, e: &Event) -> String {
    let shown = sealrelay::text::one_line;
    format!(
        "#{index:<6} {}  {:<20} {:<9} {}  {}  {}",
        clock::rfc3339(e.time),
        shown(&e.kind),
        shown(&e.decision),
        shown(&e.actor),
        shown(&e.subject),
        shown(&e.detail)
    )
}

#[cfg(test)]
mod tests {
    /// Helper-found: `audit tail` printed the events' text fields as the relay served them; an
    /// escape sequence or a carriage return in one (a hostile relay, or an admin's quarantine
    /// reason before the relay checked it) could rewrite or hide the auditor's lines.
    #[test]
    fn an_event_acts_on_no_terminal() {
        let e = super::Event {
            time: 0,
            kind: "agent.quarantined\u{1b}]52;c;cm0gLXJmIH4=\u{7}".into(),
            actor: "spiffe://t/admin/a\r#0      fine".into(),
            subject: "\u{202e}gpj.exe".into(),
            decision: "allow\u{9b}2J".into(),
            detail: "manual (kill switch): \u{1b}[2K\u{1b}[1A".into(),
            digest: Vec::new(),
        };
        let row = super::table_row(7, &e);
        assert!(row.starts_with("#7 "), "{row}");
        assert!(
            !row.chars()
                .any(|c| c.is_control() || sealrelay::text::is_deceptive_char(c)),
            "{row:?}"
        );
        assert!(row.contains("manual (kill switch):"), "{row}");
    }
}
