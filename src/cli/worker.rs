//! `sealrelay agent run`: the agent worker. For each new grant it runs a command (never through
//! a shell's parsing of the name: the resource and purpose are arguments), seals the command's
//! output to the grant's user and sends it; it outlives relay restarts.

use std::path::PathBuf;

use clap::Args;
use sealrelay::client::AgentClient;
use sealrelay::clock;
use sealrelay::error::{Error, Result};
use sealrelay::ids::{hex, GrantId, PartyKind};
use sealrelay::local::identity_file;

use super::relay::{runtime, scratch_dir, RelayArg};

#[derive(Args)]
pub struct RunArgs {
    /// The agent's identity file.
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// Command run (by `sh -c`) for each new grant; its stdout is sealed and sent. It gets the
    /// resource and purpose as $SEALRELAY_RESOURCE / $SEALRELAY_PURPOSE and as arguments $1 $2.
    #[arg(long, value_name = "CMD")]
    exec: String,
    /// Seconds between polls for new grants.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    poll: u64,
    /// Handle the grants open now, then exit.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    relay: RelayArg,
}

pub fn run_agent(args: RunArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::Agent, clock::now())?;
    let relay = args.relay.address(&identity);
    let pins = std::sync::Arc::new(sealrelay::client::SerialPins::for_identity(
        &args.identity,
        &sealrelay::client::authority(&identity)?,
    )?);
    runtime()?.block_on(async {
        let mut agent = AgentClient::connect(&identity, &relay)
            .await?
            .with_pins(pins.clone());
        let mut failed: std::collections::HashSet<GrantId> = std::collections::HashSet::new();
        let mut delay = std::time::Duration::from_millis(500);
        loop {
            let grants = match agent.grants().await {
                Ok(g) => {
                    delay = std::time::Duration::from_millis(500);
                    g
                }
                // A worker outlives relay restarts: reconnect with backoff, and say so.
                Err(e) if e.kind() == sealrelay::ErrorKind::Unavailable && !args.once => {
                    eprintln!(
                        "the relay is unreachable ({}); reconnecting in {:.1} s",
                        e.message(),
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(30));
                    if let Ok(again) = AgentClient::connect(&identity, &relay).await {
                        agent = again.with_pins(pins.clone());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            for g in grants {
                if failed.contains(&g.grant.grant_id) {
                    continue; // reported once; not retried forever
                }
                let id = hex(g.grant.grant_id);
                // The name reaches a command: check the grammar here too, whatever the relay did.
                if let Err(e) = sealrelay::core::resource::validate_resource(&g.grant.resource) {
                    eprintln!("grant {id}: refused: {}", e.message());
                    failed.insert(g.grant.grant_id);
                    continue;
                }
                // The command's output goes to a scratch file, not memory: it may be large.
                let mut out_file = tempfile::tempfile_in(scratch_dir())
                    .map_err(|e| Error::io(format!("cannot make a scratch file: {e}")))?;
                let stdout = out_file
                    .try_clone()
                    .map_err(|e| Error::io(format!("cannot make a scratch file: {e}")))?;
                let status = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&args.exec)
                    .arg("sealrelay-agent")
                    .arg(&g.grant.resource)
                    .arg(&g.grant.purpose)
                    .env("SEALRELAY_RESOURCE", &g.grant.resource)
                    .env("SEALRELAY_PURPOSE", &g.grant.purpose)
                    .env("SEALRELAY_GRANT", &id)
                    .env("SEALRELAY_USER", g.grant.user.to_string())
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::from(stdout))
                    .status()
                    .await
                    .map_err(|e| Error::io(format!("cannot run {:?}: {e}", args.exec)))?;
                if !status.success() {
                    eprintln!(
                        "grant {id}: the command failed ({status}); not sending, not retrying"
                    );
                    failed.insert(g.grant.grant_id);
                    continue;
                }
                std::io::Seek::seek(&mut out_file, std::io::SeekFrom::Start(0))
                    .map_err(|e| Error::io(format!("cannot rewind the scratch file: {e}")))?;
                match agent.send(&g, &mut out_file, &scratch_dir()).await {
                    Ok(env) => println!(
                        "grant {id} ({}): sent envelope {}",
                        g.grant.resource,
                        hex(env)
                    ),
                    // The relay went away: the grant stays open and is tried again next poll.
                    Err(e) if e.kind() == sealrelay::ErrorKind::Unavailable => {
                        eprintln!("grant {id}: the relay is unreachable ({e}); will retry");
                    }
                    Err(e) => {
                        eprintln!("grant {id}: send failed: {e}");
                        failed.insert(g.grant.grant_id);
                    }
                }
            }
            if args.once {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(args.poll.max(1))).await;
        }
        agent.conn.close().await;
        Ok(())
    })
}
