//! `sealrelay audit export`: the relay's log as a SIEM reads it (OCSF 1.x, JSON lines, RFC 5424
//! syslog), verified as it is read, once, in order, and followed across restarts.
//!
//! Every leaf read is appended to the tree's right edge (`core::keylog::Frontier`), and after
//! each batch the relay must prove that the tree so far is a prefix of the log it signed (a
//! consistency proof to its newest checkpoint): an event the relay made up, altered or dropped
//! is refused before anything of its batch is written. With `--out FILE`, the state file
//! (`FILE.state`) keeps where the export stopped, the output's length and the tree's edge, written
//! after the output is synced: a restarted export cuts what a crash left half-written and goes
//! on from there, so every event is in the file exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use sealrelay::client::Connection;
use sealrelay::core::audit_format::{jsonl, ocsf, syslog, LogRef};
use sealrelay::core::keylog::Frontier;
use sealrelay::core::store::Event;
use sealrelay::core::tlog::checkpoint::Checkpoint;
use sealrelay::core::tlog::cosignature::WitnessPolicy;
use sealrelay::core::tlog::{leaf_hash, verify_consistency};
use sealrelay::error::{Error, ErrorKind, Result};
use sealrelay::ids::{hex, parse_hex};
use sealrelay::local::fs::{read_capped, write_atomic, PRIVATE_MODE};
use sealrelay::local::identity_file;

use super::relay::{runtime, RelayArg, WitnessArgs};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// OCSF 1.5 events, one JSON object a line.
    Ocsf,
    /// The events' own fields, one JSON object a line.
    Jsonl,
    /// RFC 5424 syslog lines (facility auth).
    Syslog,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Your identity file (an admin, or a user with the auditor role).
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The form of each line.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// The first log index to write (earlier events are read and verified, not written).
    /// Ignored when --out has a state file: the export goes on where it stopped, with the
    /// --since it began with.
    #[arg(long, value_name = "N", default_value_t = 0)]
    since: u64,
    /// Keep going: write new events as the relay appends them, across relay restarts.
    #[arg(long)]
    follow: bool,
    /// Append to this file (with its state in FILE.state: exactly once across restarts of the
    /// exporter) instead of standard output. A file that holds something and has no state is
    /// refused.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: Option<PathBuf>,
    /// With --follow: how often to ask the relay for new events, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    interval_ms: u64,
    /// Export only what these witnesses cosigned: every checkpoint the export verifies against
    /// must carry their cosignatures, and events past the newest witnessed one wait for it.
    #[command(flatten)]
    witnesses: WitnessArgs,
    #[command(flatten)]
    relay: RelayArg,
}

/// Events a request asks for at most (the relay's cap).
const BATCH: u32 = 1000;

/// Where an export stopped: the next index, the output's length then, the tree's edge, and
/// the first index it writes (`--since` of the export that began it).
struct State {
    next: u64,
    out_len: u64,
    frontier: Frontier,
    since: u64,
}

fn state_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

impl State {
    fn load(path: &Path) -> Result<Option<State>> {
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_capped(path, 64 * 1024)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_input(format!("{} is not an export state: {e}", path.display()))
        })?;
        let bad = || {
            Error::bad_input(format!(
                "{} is not an export state (remove it and the output to start again)",
                path.display()
            ))
        };
        let hashes = v["edge"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|h| h.as_str().ok_or_else(bad).and_then(parse_hex::<32>))
            .collect::<Result<Vec<_>>>()?;
        let next = v["next"].as_u64().ok_or_else(bad)?;
        Ok(Some(State {
            next,
            out_len: v["out_len"].as_u64().ok_or_else(bad)?,
            frontier: Frontier::new(next, hashes)?,
            // A state written before `since` was kept: everything after `next` is written.
            since: match v.get("since") {
                None => 0,
                Some(n) => n.as_u64().ok_or_else(bad)?,
            },
        }))
    }

    fn save(&self, path: &Path) -> Result<()> {
        let v = serde_json::json!({
            "next": self.next,
            "out_len": self.out_len,
            "since": self.since,
            "edge": self.frontier.hashes.iter().map(hex).collect::<Vec<_>>(),
        });
        write_atomic(path, v.to_string().as_bytes(), PRIVATE_MODE, true)
    }
}

pub fn export(args: ExportArgs) -> Result<()> {
    let identity = identity_file::load(&args.identity, None)?;
    let log = identity
        .log_key
        .clone()
        .ok_or_else(|| Error::bad_input("this identity trusts no log key: import its bundle"))?;
    let relay = args.relay.address(&identity);
    let witnesses = args.witnesses.policy()?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    // The output and where it stopped: a half-written tail (a crash after the write, before
    // the state) is cut, so nothing is there twice.
    let state_file = args.out.as_deref().map(state_path);
    let saved = match &state_file {
        Some(p) => State::load(p)?,
        None => None,
    };
    let resumed = saved.is_some();
    let mut state = saved.unwrap_or(State {
        next: 0,
        out_len: 0,
        frontier: Frontier::default(),
        since: args.since,
    });
    // The file the export appends to, kept to sync what was written before the state counts it.
    let mut synced: Option<std::fs::File> = None;
    let mut out: Box<dyn Write> = match &args.out {
        None => Box::new(std::io::stdout().lock()),
        Some(path) => {
            // The export keeps its place beside the file and cuts a half-written tail: only a
            // regular file (or a new one) can be that.
            if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
                return Err(Error::bad_input(format!(
                    "-o {} is not a regular file: give a file to append to, or leave -o out to write to standard output",
                    path.display()
                )));
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::io(format!("cannot open {}: {e}", path.display())))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if !resumed && len > 0 {
                // Without its state, where an earlier export stopped in it is unknown: cutting
                // it would lose its events, appending would repeat them.
                return Err(Error::conflict(format!(
                    "{} already holds {len} bytes and has no {}: give a new file (or move this one away) to export from --since",
                    path.display(),
                    state_path(path).display()
                )));
            }
            if len < state.out_len {
                return Err(Error::bad_input(format!(
                    "{} is shorter than its state says ({len} < {} bytes): it was changed; remove it and its .state to start again",
                    path.display(),
                    state.out_len
                )));
            }
            f.set_len(state.out_len)
                .map_err(|e| Error::io(format!("cannot cut {}: {e}", path.display())))?;
            synced = Some(
                f.try_clone()
                    .map_err(|e| Error::io(format!("cannot open {}: {e}", path.display())))?,
            );
            if !resumed {
                // Before anything is written: an export killed during its first batch finds
                // its state at the next start, cuts what it wrote, and goes on.
                if let Some(p) = &state_file {
                    state.save(p)?;
                }
            }
            Box::new(f)
        }
    };
    runtime()?.block_on(async {
        let mut wait = Duration::from_millis(250);
        loop {
            let conn = match Connection::connect(&identity, &relay).await {
                Ok(c) => c,
                Err(e) if args.follow && e.kind() == ErrorKind::Unavailable => {
                    eprintln!("warning: {}; trying again", e.message());
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => return Err(e),
            };
            wait = Duration::from_millis(250);
            let done = pump(
                &conn,
                &Trusted {
                    log: &log,
                    witnesses: witnesses.as_ref(),
                },
                &args,
                &host,
                &mut state,
                &mut out,
                synced.as_ref().zip(state_file.as_deref()),
            )
            .await;
            conn.close().await;
            match done {
                Ok(()) if !args.follow => return Ok(()),
                Ok(()) => {}
                Err(e) if args.follow && e.kind() == ErrorKind::Unavailable => {
                    eprintln!("warning: {}; trying again", e.message());
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(args.interval_ms.max(50))).await;
        }
    })
}

/// What a checkpoint must carry to be believed: the log key's signature, and the witnesses'
/// cosignatures when a policy names them.
struct Trusted<'a> {
    log: &'a sealrelay::core::sign::VerifierKey,
    witnesses: Option<&'a WitnessPolicy>,
}

impl Trusted<'_> {
    fn checkpoint(&self, note: &str) -> Result<Checkpoint> {
        let cp = Checkpoint::verify(note, self.log)?;
        if let Some(policy) = self.witnesses {
            // Signed by the log but not (yet) cosigned as the policy asks: nothing of it is
            // written, and `--follow` waits for the witnesses (a relay just restarted hands out
            // an unwitnessed checkpoint until they cosign again).
            policy.check(note).map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("the relay's checkpoint: {}", e.message()),
                )
            })?;
        }
        Ok(cp)
    }
}

/// Reads, verifies and writes every event up to the relay's newest checkpoint (its newest
/// witnessed one, with witnesses); with --follow, again every interval until the connection
/// fails.
#[allow(clippy::too_many_arguments)]
async fn pump(
    conn: &Connection,
    trusted: &Trusted<'_>,
    args: &ExportArgs,
    host: &str,
    state: &mut State,
    out: &mut Box<dyn Write>,
    durable: Option<(&std::fs::File, &Path)>,
) -> Result<()> {
    loop {
        // A checkpoint at least as large as what was exported, proved to extend it: the newest
        // witnessed one may lag the log (it answers `None` with that), and a relay that rolled
        // its log back refuses (Conflict) or fails this proof.
        let known = (state.next > 0).then_some(state.next);
        let (note, consistency) = conn.checkpoint(known).await?;
        let cp = trusted.checkpoint(&note)?;
        if cp.size < state.next {
            return Err(Error::verification(format!(
                "the relay's log has {} events, fewer than the {} already exported: a rolled-back or forked log (ROLLBACK)",
                cp.size, state.next
            )));
        }
        if state.next > 0 {
            verify_consistency(
                state.next,
                cp.size,
                &consistency,
                &state.frontier.root(),
                &cp.root,
            )
            .map_err(|e| {
                Error::verification(format!(
                    "the relay's log does not extend the {} events already exported ({e:?}): a forked log (FORK)",
                    state.next
                ))
            })?;
        }
        while state.next < cp.size {
            let events = conn.events(state.next, BATCH).await?;
            if events.is_empty() {
                return Err(Error::verification(format!(
                    "the relay signed {} events but answered none from {}: the export stops here, short",
                    cp.size, state.next
                )));
            }
            let mut edge = state.frontier.clone();
            let mut batch = Vec::with_capacity(events.len());
            for (index, leaf) in events {
                if index != edge.size {
                    return Err(Error::verification(format!(
                        "the relay answered event {index} where {} was asked for",
                        edge.size
                    )));
                }
                // With witnesses, only what the witnessed checkpoint of this pass covers: the
                // rest waits for their cosignatures.
                if trusted.witnesses.is_some() && index >= cp.size {
                    break;
                }
                let e = Event::from_leaf_bytes(&leaf)?;
                let h = leaf_hash(&leaf);
                edge.append(h);
                batch.push((index, e, h));
            }
            // The events so far must be a prefix of the log the relay signed.
            let (note, proof) = conn.checkpoint(Some(edge.size)).await?;
            let signed = trusted.checkpoint(&note)?;
            verify_consistency(edge.size, signed.size, &proof, &edge.root(), &signed.root)
                .map_err(|e| {
                    Error::verification(format!(
                        "the relay's events up to {} are not the log it signed ({e:?}): nothing of them was written",
                        edge.size
                    ))
                })?;
            let mut written = 0u64;
            for (index, e, h) in batch {
                if index < state.since {
                    continue;
                }
                let r = LogRef {
                    index,
                    leaf_hash: h,
                    origin: signed.origin.clone(),
                    tree_size: signed.size,
                    root_hash: signed.root,
                };
                let line = match args.format {
                    Format::Ocsf => ocsf(&e, &r).to_string(),
                    Format::Jsonl => jsonl(&e, &r).to_string(),
                    Format::Syslog => syslog(&e, &r, host),
                };
                out.write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|e| Error::io(format!("cannot write the export: {e}")))?;
                written += line.len() as u64 + 1;
            }
            out.flush()
                .map_err(|e| Error::io(format!("cannot write the export: {e}")))?;
            state.next = edge.size;
            state.frontier = edge;
            state.out_len += written;
            if let Some((file, path)) = durable {
                // The output is durable before the state that counts it (synced through the
                // handle written to, whatever became of its name).
                file.sync_data()
                    .map_err(|e| Error::io(format!("cannot sync the export: {e}")))?;
                state.save(path)?;
            }
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms.max(50))).await;
    }
}
