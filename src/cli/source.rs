//! `source add | revoke | approve-reset` (admin: a source is a party of its own) and `source
//! serve` (the data owner's sealing service, docs/sources.md); `dispatch` (an agent has a source
//! fill one of its grants).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use sealrelay::client::{authority, AgentClient, SerialPins};
use sealrelay::clock;
use sealrelay::connect::Connectors;
use sealrelay::core::directory::DirectoryEntry;
use sealrelay::core::source_policy::SourcePolicy;
use sealrelay::error::{Error, Result};
use sealrelay::ids::{parse_hex, GrantId, PartyKind};
use sealrelay::local::identity_file;
use sealrelay::source::SourceService;

use super::relay::{runtime, scratch_dir, RelayArg};

#[derive(Subcommand)]
pub enum SourceCommand {
    #[command(flatten)]
    Party(super::admin::PartyCommand),
    /// Run the data owner's sealing service: fill the grants agents dispatch to this source
    /// (check every signature and the data owner's policy, read through the connectors, seal
    /// to the user, sign as the source), or refuse them.
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// The source's identity file.
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The connector file (docs/mcp.md's format): which connector reads which resources. Keep
    /// it, and the credentials it names, readable by the source's OS user only.
    #[arg(long, value_name = "FILE")]
    connectors: PathBuf,
    /// The data owner's policy: DIR/source.cedar, validated against
    /// docs/policy/source/schema.cedarschema (default: every fill the relay allowed).
    #[arg(long, value_name = "DIR")]
    policy: Option<PathBuf>,
    /// How often to ask the relay for new assignments, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    poll_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    relay: RelayArg,
}

#[derive(Args)]
pub struct DispatchArgs {
    /// The agent's identity file.
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The grant to have filled (its id, as `grants` lists it).
    #[arg(long, value_name = "G")]
    grant: String,
    /// The source (its name); default: the only one the relay lists for the grant's resource.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    #[command(flatten)]
    relay: RelayArg,
}

pub fn run(cmd: SourceCommand) -> Result<()> {
    match cmd {
        SourceCommand::Party(cmd) => super::admin::run_party(PartyKind::Source, cmd),
        SourceCommand::Serve(args) => serve(args),
    }
}

fn load_policy(dir: Option<&std::path::Path>) -> Result<SourcePolicy> {
    match dir {
        None => SourcePolicy::default_policy(),
        Some(dir) => {
            let path = dir.join("source.cedar");
            let text = sealrelay::local::fs::read_capped(&path, 1 << 20)
                .map_err(|e| e.context(format!("the source policy {}", path.display())))?;
            let text = String::from_utf8(text)
                .map_err(|_| Error::bad_input(format!("{} is not UTF-8 text", path.display())))?;
            SourcePolicy::new(&text).map_err(|e| e.context(path.display()))
        }
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::Source, clock::now())?;
    let connectors = Connectors::load(&args.connectors)?;
    let policy = load_policy(args.policy.as_deref())?;
    let serves = identity
        .entry
        .as_ref()
        .map(|e| DirectoryEntry::decode(&e.statement))
        .transpose()?
        .map(|e| e.attributes.scopes)
        .unwrap_or_default();
    for unserved in connectors.check_scopes(&serves)? {
        eprintln!("warning: no connector reads {unserved:?}: its assignments will be refused");
    }
    super::mcp::init_logging();
    let relay = args.relay.address(&identity);
    let pins = Arc::new(SerialPins::for_identity(
        &args.identity,
        &authority(&identity)?,
    )?);
    let mut service = SourceService::new(
        Arc::new(identity),
        relay.clone(),
        connectors,
        policy,
        scratch_dir(),
    );
    service.pins = pins;
    service.poll = std::time::Duration::from_millis(args.poll_ms.max(10));
    let service = Arc::new(service);
    runtime()?.block_on(async move {
        if let Some(addr) = args.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::io(format!("cannot listen for metrics on {addr}: {e}")))?;
            let metrics = service.metrics.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move { m.render() }
                }),
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
        }
        eprintln!(
            "source {} serving its assignments from {relay} (policy {})",
            service.identity.id.as_ref().map_or("?", |i| i.name()),
            &service.policy.hash()[..16]
        );
        tokio::select! {
            r = service.run() => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

/// `dispatch`: the agent checks the grant and the source's entry itself, then signs the
/// dispatch.
pub fn dispatch(args: DispatchArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::Agent, clock::now())?;
    let relay = args.relay.address(&identity);
    let grant_id = parse_hex(&args.grant)
        .map(GrantId)
        .map_err(|_| Error::bad_input("--grant must be the 32 hex digits `grants` prints"))?;
    let pins = Arc::new(SerialPins::for_identity(
        &args.identity,
        &authority(&identity)?,
    )?);
    runtime()?.block_on(async {
        let agent = AgentClient::connect(&identity, &relay)
            .await?
            .with_pins(pins);
        let grant = match agent
            .judged_grants()
            .await?
            .into_iter()
            .find_map(|(_, g)| g.ok().filter(|g| g.grant.grant_id == grant_id))
        {
            Some(g) => g,
            None => {
                return Err(Error::not_found(
                    "no open grant with that id for this agent (used, expired, dispatched already, or addressed to another agent)",
                ))
            }
        };
        let source = match (args.source, grant.sources.as_slice()) {
            (Some(s), _) => s,
            (None, [one]) => one.clone(),
            (None, []) => {
                return Err(Error::not_found(
                    "no source serves the grant's resource: seal it here with `send`, or enroll a source (docs/sources.md)",
                ))
            }
            (None, many) => {
                return Err(Error::bad_input(format!(
                    "several sources serve the grant's resource ({}): choose one with --source",
                    many.join(", ")
                )))
            }
        };
        let id = agent.dispatch(&grant, &source).await?;
        agent.conn.close().await;
        println!(
            "queued at source {}: grant {}",
            id.name(),
            sealrelay::ids::hex(grant_id)
        );
        Ok(())
    })
}
