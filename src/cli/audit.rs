//! `sealrelay receipt verify` (offline) and `sealrelay audit verify | tail`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use sealrelay::client::Connection;
use sealrelay::clock;
use sealrelay::core::receipt_file::{ReceiptFile, ReceiptVerifier, MAX_RECEIPT_FILE_LEN};
use sealrelay::core::store::Event;
use sealrelay::core::tlog::checkpoint::{Checkpoint, MAX_CHECKPOINT_LEN};
use sealrelay::core::tlog::verify_consistency;
use sealrelay::error::{Error, Result};
use sealrelay::ids::hex;
use sealrelay::local::fs::{read_capped, write_atomic, PUBLIC_MODE};
use sealrelay::local::{identity_file, trust_root};

use super::relay::{runtime, RelayArg};

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
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Fetch the relay's newest checkpoint and check it is consistent with an older one (by
    /// default the last one this identity verified); a smaller or forked log is reported.
    Verify(VerifyArgs),
    /// The latest events of the log, with their leaf indexes (auditors and admins).
    Tail(TailArgs),
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
    let ReceiptCommand::Verify {
        receipts,
        authority,
        log_key,
    } = cmd;
    let authority = trust_root::read_verifier_key(&authority)?;
    let log = trust_root::read_verifier_key(&log_key)?;
    // Entries and checkpoints shared by several receipts are verified once.
    let mut verifier = ReceiptVerifier::new(authority.key, log);
    let mut failed: Option<Error> = None;
    for receipt in &receipts {
        let result = read_capped(receipt, MAX_RECEIPT_FILE_LEN)
            .and_then(|bytes| ReceiptFile::from_json(&bytes))
            .and_then(|file| verifier.verify(&file))
            .map_err(|e| e.context(receipt.display()));
        match result {
            Ok(v) => println!(
                "ok: envelope {} {} to {} at {}; signed by the user (key vouched for by authority {}); log entry #{} of {} under a checkpoint signed by {}",
                hex(v.receipt.envelope_id),
                v.receipt.status.as_str(),
                v.receipt.user,
                clock::rfc3339(v.receipt.time),
                authority.key.fingerprint(),
                v.leaf_index,
                v.checkpoint.size,
                v.checkpoint.origin
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

fn saved_checkpoint_path(identity: &Path) -> PathBuf {
    let mut s = identity.as_os_str().to_owned();
    s.push(".checkpoint");
    PathBuf::from(s)
}

pub fn run_audit(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Tail(a) => tail(a),
    }
}

fn verify(args: VerifyArgs) -> Result<()> {
    let identity = identity_file::load(&args.identity, None)?;
    let log = identity
        .log_key
        .clone()
        .ok_or_else(|| Error::bad_input("this identity trusts no log key: import its bundle"))?;
    let relay = args.relay.address(&identity);
    let old_path = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| saved_checkpoint_path(&args.identity));
    let old = match read_capped(&old_path, MAX_CHECKPOINT_LEN) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| Error::bad_input(format!("{} is not text", old_path.display())))?;
            Some(Checkpoint::verify(&text, &log).map_err(|e| e.context(old_path.display()))?)
        }
        Err(e) if e.kind() == sealrelay::ErrorKind::NotFound && args.checkpoint.is_none() => None,
        Err(e) => return Err(e),
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
        if let Some(old) = &old {
            if new.size < old.size {
                return Err(Error::verification(format!(
                    "ROLLBACK: the relay's log has {} entries, fewer than the {} of the checkpoint you verified before",
                    new.size, old.size
                )));
            }
            verify_consistency(old.size, new.size, &proof, &old.root, &new.root).map_err(|e| {
                Error::verification(format!(
                    "FORK: the relay's log of {} entries is not an extension of your checkpoint of {} ({e})",
                    new.size, old.size
                ))
            })?;
        }
        write_atomic(&saved_checkpoint_path(&args.identity), note.as_bytes(), PUBLIC_MODE, true)?;
        match old {
            Some(old) => println!(
                "ok: the log has {} entries and is consistent with your checkpoint of {}; saved the new checkpoint to {}",
                new.size,
                old.size,
                saved_checkpoint_path(&args.identity).display()
            ),
            None => println!(
                "ok: the log has {} entries (signed checkpoint verified); saved it to {} for next time",
                new.size,
                saved_checkpoint_path(&args.identity).display()
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
                println!(
                    "#{index:<6} {}  {:<20} {:<9} {}  {}  {}",
                    clock::rfc3339(e.time),
                    e.kind,
                    e.decision,
                    e.actor,
                    e.subject,
                    e.detail
                );
            }
        }
        Ok(())
    })
}
