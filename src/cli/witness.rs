//! `sealrelay witness keygen | serve`: a C2SP tlog-witness (docs/witness.md).

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use sealrelay::error::{Error, Result};
use sealrelay::local::trust_root;
use sealrelay::witness::{self, Witness, WitnessConfig};

use super::relay::{init_logging, runtime};

#[derive(Subcommand)]
pub enum WitnessCommand {
    /// Make a witness key: FILE (private, 0600) and FILE.pub (its verifier key, to give to
    /// relays and clients).
    Keygen(KeygenArgs),
    /// Run a witness: cosign each log's checkpoints only when consistent with the last one
    /// cosigned (HTTP, POST /add-checkpoint).
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct KeygenArgs {
    /// The witness's name (a schema-less URL such as witness.example.org/w1).
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Where to write the private key; the verifier key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The witness key (from `witness keygen`); FILE.pub must sit beside it.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The state directory (latest cosigned checkpoint per log; created 0700).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Address to listen on (HTTP).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7380")]
    listen: std::net::SocketAddr,
    /// A TOML file listing the logs to witness: [[log]] key = "<origin>+<hash>+<base64>".
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A log's verifier key file (such as the relay's keys/log.pub); may be repeated.
    #[arg(long = "log", value_name = "PUB")]
    logs: Vec<PathBuf>,
}

pub fn run(cmd: WitnessCommand) -> Result<()> {
    match cmd {
        WitnessCommand::Keygen(a) => {
            let me = witness::keygen(&a.name, &a.out)?;
            println!("{}", me.encode());
            eprintln!(
                "wrote {} (keep it private) and {} (give it to relays and clients)",
                a.out.display(),
                witness::pub_path(&a.out).display()
            );
            Ok(())
        }
        WitnessCommand::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> Result<()> {
    let mut logs = Vec::new();
    if let Some(config) = &a.config {
        logs.extend(WitnessConfig::load(config)?);
    }
    for path in &a.logs {
        logs.push(trust_root::read_verifier_key(path)?);
    }
    // A sealrelay log key signs two logs: the events, and the directory (`<origin>/directory`,
    // docs/keys.md). Witnessing one is witnessing both.
    let directories: Vec<_> = logs
        .iter()
        .filter(|vk| !vk.name.ends_with("/directory"))
        .map(|vk| {
            sealrelay::core::sign::VerifierKey::new(
                &sealrelay::core::keylog::directory_origin(&vk.name),
                vk.key,
            )
        })
        .collect::<Result<_>>()?;
    for d in directories {
        if !logs.iter().any(|l| l.name == d.name) {
            logs.push(d);
        }
    }
    let (key, me) = witness::load_key(&a.key)?;
    let w = Arc::new(Witness::open(key, me, logs, &a.state)?);
    init_logging("text");
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}: {e}", a.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(format!("cannot read the listening address: {e}")))?;
        println!("witness {} listening on http://{addr}", w.name());
        eprintln!(
            "sealrelay witness: cosigning {} log(s); state in {}",
            w.log_count(),
            a.state.display()
        );
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        witness::serve(w, listener, shutdown).await
    })
}
