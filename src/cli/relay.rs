//! Commands that talk to (or are) the relay: `serve`, `grant`, `grants`, `send` (through
//! `client::deliver`), and pushing the directory. `agent run` is in `worker.rs`; `inbox`,
//! `fetch` and the approver's commands are in `inbox.rs`.

use sealrelay::core::tlog::cosignature::WitnessPolicy;
use sealrelay::local::fs::read_capped;
use sealrelay::witness::read_cosigner_key;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use sealrelay::client::{
    deliver, AdminClient, AgentClient, Courier, ForGrant, GrantRequest, Plaintext, Retry,
    SerialPins, UserClient,
};
use sealrelay::clock;
use sealrelay::core::identity::Identity;
use sealrelay::core::sign::Signed;
use sealrelay::error::{Error, Result};
use sealrelay::ids::{hex, parse_hex, GrantId, PartyKind};
use sealrelay::local::identity_file;
use sealrelay::server::{self, RelayConfig};

/// Default relay address.
pub const DEFAULT_RELAY: &str = sealrelay::client::session::DEFAULT_RELAY;

/// `--relay HOST:PORT` (or SEALRELAY_RELAY, or the identity's relay, or 127.0.0.1:4433).
#[derive(Args, Clone)]
pub struct RelayArg {
    /// The relay to talk to (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", env = "SEALRELAY_RELAY")]
    pub relay: Option<String>,
}

impl RelayArg {
    pub fn address(&self, identity: &Identity) -> String {
        self.relay
            .clone()
            .or_else(|| identity.relay.clone())
            .unwrap_or_else(|| DEFAULT_RELAY.to_owned())
    }
}

/// Which witnesses must have cosigned a checkpoint (k of n).
#[derive(Args)]
pub struct WitnessArgs {
    /// A witness's verifier key file (from `witness keygen`); repeat for several.
    #[arg(long = "witness", value_name = "PUB")]
    witness: Vec<PathBuf>,
    /// How many of the --witness keys must have cosigned (default: all of them).
    #[arg(long, value_name = "K", requires = "witness")]
    quorum: Option<usize>,
    /// A witness policy file instead: TOML `quorum = K` and `witnesses = ["<vkey>", ...]`.
    #[arg(long, value_name = "FILE", conflicts_with = "witness")]
    witness_policy: Option<PathBuf>,
}

impl WitnessArgs {
    pub fn policy(&self) -> Result<Option<WitnessPolicy>> {
        if let Some(path) = &self.witness_policy {
            let bytes = read_capped(path, 64 * 1024)?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| Error::bad_input(format!("{} is not text", path.display())))?;
            return WitnessPolicy::parse_file(text)
                .map(Some)
                .map_err(|e| e.context(path.display()));
        }
        if self.witness.is_empty() {
            return Ok(None);
        }
        let keys = self
            .witness
            .iter()
            .map(|p| read_cosigner_key(p))
            .collect::<Result<Vec<_>>>()?;
        WitnessPolicy::new(keys, self.quorum).map(Some)
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))
}

#[derive(Args)]
pub struct ServeArgs {
    /// TOML config file (docs/config.md); SEALRELAY_* variables override it, and the flags
    /// below override both.
    #[arg(long, value_name = "FILE", env = "SEALRELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Trust-root directory with relay.crt, relay.key, ca.crt, authority.pub, log.key, log.pub,
    /// root.json (and directory/, loaded at start if present).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Data directory (state and ciphertext blobs).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// UDP address to listen on (e.g. 127.0.0.1:4433; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Log format on stderr: text or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// The admin listener for /metrics, /livez and /readyz (HTTP; default 127.0.0.1:9464; port 0
    /// picks one), or "off".
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    // SEALRELAY_* variables override the file.
    let mut config = RelayConfig::from_file_and_env(args.config.as_deref())?;
    if let Some(d) = args.dir {
        config.dir = d;
    }
    if let Some(d) = args.data {
        config.data = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    if let Some(m) = args.metrics_listen {
        config.metrics_listen = m;
    }
    config.validate()?;
    init_logging(&config.log_format);
    let rt = runtime()?;
    rt.block_on(async move {
        let relay = server::start(config).await?;
        // One line on stdout that scripts can wait for (and the admin listener's), in one
        // write whose failure (a reader that went away) is no reason to stop serving.
        let mut lines = format!("sealrelay relay listening on {}\n", relay.local_addr);
        if let Some(addr) = relay.metrics_addr {
            lines.push_str(&format!("sealrelay metrics on http://{addr}\n"));
        }
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(lines.as_bytes());
        let _ = stdout.flush();
        wait_for_signal(&relay).await;
        tracing::info!("shutting down: finishing in-flight requests");
        relay.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Waits for SIGINT or SIGTERM; on SIGHUP reloads the policy (and keeps serving).
async fn wait_for_signal(relay: &server::RunningRelay) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            // Proving a policy takes a while: the reload runs beside the signal loop, so a
            // SIGTERM during it still stops the relay at once.
            _ = hup.recv() => {
                let r = relay.relay().clone();
                tokio::spawn(async move {
                    match server::reload_policy(&r).await {
                        Ok(hash) => tracing::info!(policy = %hash, "policy reloaded"),
                        Err(e) => tracing::error!(error = %e, "policy reload refused; the previous policy stays in force"),
                    }
                });
            }
        }
    }
}

pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

#[derive(Args)]
pub struct GrantArgs {
    /// The user's identity file.
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The agent asked to retrieve (a name, or its SPIFFE ID).
    #[arg(long, value_name = "A")]
    agent: String,
    /// The resource to retrieve (policy compares it with the agent's scopes).
    #[arg(long, value_name = "R")]
    resource: String,
    /// Why (recorded in the signed grant).
    #[arg(long, value_name = "P", default_value = "")]
    purpose: String,
    /// How long the grant stays open, e.g. 30m, 2h, 1d, or seconds.
    #[arg(long, value_name = "T", default_value = "1h")]
    ttl: String,
    /// Largest envelope the agent may send for it, in bytes.
    #[arg(long, value_name = "N", default_value_t = 64 * 1024 * 1024)]
    max_bytes: u64,
    #[command(flatten)]
    relay: RelayArg,
}

/// Parses `90`, `30s`, `15m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<u64> {
    let bad = || {
        Error::bad_input(format!(
            "invalid duration {s:?}: use e.g. 90, 30s, 15m, 2h or 1d"
        ))
    };
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        Some(_) => (s, 1),
        None => return Err(bad()),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(bad)
}

pub fn grant(args: GrantArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::User, clock::now())?;
    let relay = args.relay.address(&identity);
    let req = GrantRequest {
        agent: args.agent,
        resource: args.resource,
        purpose: args.purpose,
        ttl_secs: parse_duration(&args.ttl)?,
        max_bytes: args.max_bytes,
    };
    runtime()?.block_on(async {
        let user = UserClient::connect(&identity, &relay).await?;
        let id = user.grant(&req).await?;
        println!("{}", hex(id));
        user.conn.close().await;
        Ok(())
    })
}

#[derive(Args)]
pub struct IdentityRelayArgs {
    /// Your identity file.
    #[arg(long, value_name = "F")]
    pub identity: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub relay: RelayArg,
}

pub fn grants(args: IdentityRelayArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::Agent, clock::now())?;
    let relay = args.relay.address(&identity);
    runtime()?.block_on(async {
        let pins = std::sync::Arc::new(SerialPins::for_identity(
            &args.identity,
            &sealrelay::client::authority(&identity)?,
        )?);
        let agent = AgentClient::connect(&identity, &relay)
            .await?
            .with_pins(pins);
        let grants = agent.grants().await?;
        if args.json {
            let list: Vec<_> = grants
                .iter()
                .map(sealrelay::client::session::json::grant)
                .collect();
            println!("{}", serde_json::Value::Array(list));
        } else if grants.is_empty() {
            println!("no open grants");
        } else {
            for g in &grants {
                println!(
                    "{}  {:<24} {:<32} expires {}  purpose {:?}",
                    hex(g.grant.grant_id),
                    g.grant.user.short(),
                    g.grant.resource,
                    clock::rfc3339(g.grant.expires),
                    g.grant.purpose
                );
            }
        }
        agent.conn.close().await;
        Ok(())
    })
}

#[derive(Args)]
pub struct SendArgs {
    /// The agent's identity file.
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// The grant to fulfil (its id, as `grants` prints it).
    #[arg(long, value_name = "G")]
    grant: String,
    /// The data: a file, or - for stdin.
    #[arg(value_name = "FILE", default_value = "-")]
    input: String,
    /// While the relay is unreachable, keep retrying (with backoff) for this many seconds. The
    /// envelope is sealed once; a retry after a lost answer is stored once.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    retry_for: u64,
    #[command(flatten)]
    relay: RelayArg,
}

pub(crate) fn scratch_dir() -> PathBuf {
    std::env::temp_dir()
}

pub fn send(args: SendArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::Agent, clock::now())?;
    let relay = args.relay.address(&identity);
    let grant_id = parse_hex(&args.grant)
        .map(GrantId)
        .map_err(|_| Error::bad_input("--grant must be the 32-hex-digit grant id"))?;
    let mut input: Box<dyn std::io::Read + Send> = if args.input == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.input).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::not_found(format!("{} does not exist: check the path", args.input))
                }
                _ => Error::io(format!("cannot read {}: {e}", args.input)),
            })?,
        )
    };
    let pins = std::sync::Arc::new(SerialPins::for_identity(
        &args.identity,
        &sealrelay::client::authority(&identity)?,
    )?);
    let courier = Courier {
        identity: std::sync::Arc::new(identity),
        relay,
        pins,
        scratch: scratch_dir(),
    };
    runtime()?.block_on(async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.retry_for);
        let delivered = deliver(
            &courier,
            None,
            ForGrant::Id(grant_id),
            Plaintext::Reader(&mut input),
            Retry::until(deadline, say_unreachable),
        )
        .await?;
        println!("{}", hex(delivered.envelope_id));
        Ok(())
    })
}

/// `send`'s word on each retry while the relay is unreachable.
fn say_unreachable(e: &Error, wait: std::time::Duration) {
    eprintln!(
        "the relay is unreachable ({}); retrying in {:.1} s",
        e.message(),
        wait.as_secs_f64()
    );
}

/// Pushes signed statements to the relay as the admin in `dir/admin.id`.
pub fn push(dir: &Path, relay: &str, entries: &[Signed], revocations: &[Signed]) -> Result<()> {
    let admin = identity_file::load(&dir.join("admin.id"), Some(PartyKind::Admin))?;
    runtime()?.block_on(async {
        let client = AdminClient::connect(&admin, relay).await?;
        client.push(entries, revocations).await?;
        client.conn.close().await;
        Ok(())
    })
}
