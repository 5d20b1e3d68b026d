//! `sealrelay mcp`: the MCP server for an LLM agent (blind retrieval): over stdio by default, or
//! over Streamable HTTP on loopback with a bearer token.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use sealrelay::clock;
use sealrelay::connect::Connectors;
use sealrelay::core::directory::DirectoryEntry;
use sealrelay::error::{Error, Result};
use sealrelay::ids::PartyKind;
use sealrelay::local::identity_file;
use sealrelay::mcp::http::{HttpServer, PATH};
use sealrelay::mcp::server::McpServer;
use sealrelay::mcp::BlindAgent;
use sealrelay::net::token::random_token;
use zeroize::Zeroizing;

use super::relay::{runtime, scratch_dir, RelayArg};

#[derive(Args)]
pub struct McpArgs {
    /// The agent's identity file.
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The connector file (docs/mcp.md): which connector serves which resources. Optional:
    /// grants whose resource a source serves are dispatched to it (docs/sources.md), and with
    /// sources for everything this host needs no connector file, nor any credential.
    #[arg(long, value_name = "FILE")]
    connectors: Option<PathBuf>,
    /// Serve MCP over Streamable HTTP on this loopback address (e.g. 127.0.0.1:8765; port 0
    /// picks one) instead of stdio. The URL is printed on stdout.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// With --http: a file holding the bearer token (else $SEALRELAY_MCP_TOKEN, else a random
    /// token written to IDENTITY.mcp-token, mode 0600; it is never printed).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    relay: RelayArg,
}

pub fn run(args: McpArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::Agent, clock::now())?;
    let connectors = match &args.connectors {
        Some(path) => Connectors::load(path)?,
        None => Connectors::none(),
    };
    // Scopes and connectors must agree: a connector outside the scopes is an error, a scope
    // without a connector a warning.
    let scopes = identity
        .entry
        .as_ref()
        .map(|e| DirectoryEntry::decode(&e.statement))
        .transpose()?
        .map(|e| e.attributes.scopes)
        .unwrap_or_default();
    if args.connectors.is_some() {
        for unserved in connectors.check_scopes(&scopes)? {
            eprintln!("warning: no connector serves scope {unserved:?}: grants for it go to a source or are refused");
        }
    }
    init_logging();
    let relay = args.relay.address(&identity);
    // Serial pins kept beside the identity, across tool calls and runs.
    let pins = Arc::new(sealrelay::client::SerialPins::for_identity(
        &args.identity,
        &sealrelay::client::authority(&identity)?,
    )?);
    let agent =
        BlindAgent::new(Arc::new(identity), relay, connectors, scratch_dir()).with_pins(pins);
    let server = McpServer::new(agent);
    runtime()?.block_on(async move {
        match args.http {
            None => {
                let running = rmcp::ServiceExt::serve(server, rmcp::transport::stdio())
                    .await
                    .map_err(|e| Error::io(format!("the MCP session did not start: {e}")))?;
                running
                    .waiting()
                    .await
                    .map_err(|e| Error::internal(format!("the MCP session failed: {e}")))?;
                Ok(())
            }
            Some(listen) => {
                let token = token(args.token_file.as_deref(), &args.identity)?;
                let http = HttpServer::bind(listen).await?;
                println!("http://{}{PATH}", http.addr);
                let shutdown = tokio_util::sync::CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                });
                http.serve(server, token, shutdown).await
            }
        }
    })
}

/// The bearer token: from `--token-file`, else `$SEALRELAY_MCP_TOKEN`, else a random one
/// written to `IDENTITY.mcp-token` (0600, replaced each run). A generated token is never
/// printed: a service's journal would keep it; only the file's path is.
fn token(file: Option<&std::path::Path>, identity: &std::path::Path) -> Result<Zeroizing<String>> {
    let token = if let Some(path) = file {
        let bytes = Zeroizing::new(sealrelay::local::fs::read_capped(path, 4096)?);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::bad_input(format!("{} is not UTF-8 text", path.display())))?;
        Zeroizing::new(text.trim().to_owned())
    } else if let Ok(t) = std::env::var("SEALRELAY_MCP_TOKEN") {
        Zeroizing::new(t.trim().to_owned())
    } else {
        let t = random_token()?;
        let mut path = identity.as_os_str().to_owned();
        path.push(".mcp-token");
        let path = PathBuf::from(path);
        sealrelay::local::fs::write_atomic(
            &path,
            t.as_bytes(),
            sealrelay::local::fs::PRIVATE_MODE,
            true,
        )?;
        eprintln!(
            "bearer token: generated and written to {} (mode 0600; give it to the MCP host)",
            path.display()
        );
        t
    };
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::bad_input(
            "the bearer token must be at least 16 visible ASCII characters",
        ));
    }
    Ok(token)
}

/// Logs go to stderr (stdout carries the protocol over stdio): ids and sizes, never data.
pub(crate) fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The HTTP and TLS libraries log what a source sent (status lines, headers, redirect
    // targets, certificate names) at their debug levels: never in this log, whatever RUST_LOG
    // asks for, since nothing a source chose may reach the agent's side (threat 50).
    for quiet in ["ureq=off", "ureq_proto=off", "rustls=off"] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
