//! `sealrelay ui`: the requester's own client as a web app on 127.0.0.1 (docs/ui.md).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use sealrelay::clock;
use sealrelay::error::Result;
use sealrelay::ids::PartyKind;
use sealrelay::local::identity_file;
use sealrelay::net::token::random_token;
use sealrelay::ui::UiServer;

use super::relay::{runtime, RelayArg};

#[derive(Args)]
pub struct UiArgs {
    /// Your identity file (a user's).
    #[arg(long, value_name = "F")]
    identity: PathBuf,
    /// Loopback address to serve on (port 0 picks a random one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Where opened envelopes are written, each with its receipt (the directory is made 0700;
    /// opened files are 0600, receipts 0644).
    #[arg(long, value_name = "DIR", default_value = "sealrelay-inbox")]
    out: PathBuf,
    #[command(flatten)]
    relay: RelayArg,
}

pub fn run(args: UiArgs) -> Result<()> {
    let identity = identity_file::load_enrolled(&args.identity, PartyKind::User, clock::now())?;
    let relay = args.relay.address(&identity);
    runtime()?.block_on(async move {
        let server = UiServer::bind(args.listen)
            .await?
            .remember_checkpoints(args.identity.clone());
        let token = random_token()?;
        // Printed once: whoever has this URL is you, until this process ends. It carries this
        // run's random path prefix, under which the whole app and its cookie live (so a server
        // on another loopback port is never sent the cookie), and the token.
        println!("{}", server.url(token.as_str()));
        eprintln!("sealrelay ui: open the URL above in your browser; Ctrl-C stops it");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        server
            .serve(Arc::new(identity), relay, args.out, token, shutdown)
            .await
    })
}
