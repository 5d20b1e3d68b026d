//! `sealrelay demo`: the whole story in one process and a temporary directory, with real keys,
//! a real QUIC relay on 127.0.0.1 and the embedded store: provision, grant, agent send, inbox,
//! fetch, receipt; then the attacks that fail, each printed with the refusal; then blind
//! retrieval (a connector seals at the source, the model sees a handle).

use std::path::Path;

use clap::Args;
use sealrelay::client::{AgentClient, GrantRequest, UserClient};
use sealrelay::clock;
use sealrelay::core::wire::Request;
use sealrelay::error::{Error, Result};
use sealrelay::ids::hex;
use sealrelay::local::dirstore;
use sealrelay::local::identity_file;
use sealrelay::local::provision::{agent, provision, user};
use sealrelay::local::trust_root::TrustRoot;
use sealrelay::server;

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the demo's files in DIR instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn refused(what: &str, result: Result<impl std::fmt::Debug>) -> Result<()> {
    match result {
        Ok(v) => Err(Error::internal(format!(
            "demo: {what} was NOT refused: {v:?}"
        ))),
        Err(e) => {
            println!("    refused as it should be: {what}\n      -> {e}");
            Ok(())
        }
    }
}

const TICKET_4712: &str =
    "Ticket 4712 (confidential): ACME asks for a credit of 3 days of service.\n";

/// What the demo prints of a tool result: its JSON, as the model would receive it.
fn model_sees<T: serde::Serialize>(v: &T) {
    println!(
        "    model sees: {}",
        serde_json::to_string(v).unwrap_or_default()
    );
}

/// A one-document HTTP source on 127.0.0.1 for the blind-retrieval step; returns its address.
async fn http_source(document: &'static str) -> Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io(format!("cannot start the demo's HTTP source: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("cannot start the demo's HTTP source: {e}")))?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{document}",
                    document.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

const TICKET: &str = "Ticket 4711 (confidential): customer ACME reports that exports time out after 30 s.\n\
Root cause: the nightly index rebuild holds a table lock. Workaround: run exports after 06:00 UTC.\n";

pub fn run(args: DemoArgs) -> Result<()> {
    let tmp;
    let base: &Path = match &args.keep {
        Some(p) => {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("cannot create {}: {e}", p.display())))?;
            p
        }
        None => {
            tmp = tempfile::tempdir()
                .map_err(|e| Error::io(format!("cannot make a temporary directory: {e}")))?;
            tmp.path()
        }
    };
    let keys = base.join("keys");
    let now = clock::now();
    println!("sealrelay demo in {}", base.display());

    step(1, "provision: keys init (authority, mTLS CA, relay cert, log key); alice, mallory and research-bot enroll");
    let (mut ids, _admin) = provision(
        &keys,
        &[
            user("alice", 2, &["engineer"]),
            user("mallory", 2, &["engineer"]),
            agent("research-bot", &["tickets/*"]),
        ],
        now,
    )?;
    let (bot_id, mallory_id, alice_id) = match (ids.pop(), ids.pop(), ids.pop()) {
        (Some(b), Some(m), Some(a)) => (b, m, a),
        _ => {
            return Err(Error::internal(
                "demo: provisioning returned too few identities",
            ))
        }
    };
    for (id, file) in [
        (&alice_id, "alice.id"),
        (&mallory_id, "mallory.id"),
        (&bot_id, "research-bot.id"),
    ] {
        identity_file::save(&base.join(file), id, false)?;
    }
    let root = TrustRoot::load(&keys)?;
    let (_, summary) = dirstore::load(&root.directory_dir(), &root.authority.public())?;
    println!(
        "    {} signed directory entries verify against authority {}",
        summary.statements,
        root.authority.public().fingerprint()
    );

    let rt = super::relay::runtime()?;
    rt.block_on(async {
        step(2, "start the relay: QUIC + mutual TLS on 127.0.0.1, embedded redb store");
        let relay = server::start_local(&keys, &base.join("data")).await?;
        let addr = relay.local_addr.to_string();
        println!("    listening on {addr}");

        let alice = UserClient::connect(&alice_id, &addr).await?;
        let bot = AgentClient::connect(&bot_id, &addr).await?;
        let mallory = UserClient::connect(&mallory_id, &addr).await?;

        step(3, "alice asks research-bot for tickets/4711 (a signed grant)");
        let grant_id = alice
            .grant(&GrantRequest {
                agent: "research-bot".into(),
                resource: "tickets/4711".into(),
                purpose: "summarise the incident".into(),
                ttl_secs: 3600,
                max_bytes: 1 << 20,
            })
            .await?;
        println!("    grant {}", hex(grant_id));

        step(4, "research-bot lists its grants, retrieves the ticket, seals it to alice's verified key and sends it");
        let grants = bot.grants().await?;
        let g = grants
            .iter()
            .find(|g| g.grant.grant_id == grant_id)
            .ok_or_else(|| Error::internal("demo: the grant is not listed"))?;
        println!("    open grant: {} for {} (recipient from the authority-signed entry)", g.grant.resource, g.grant.user);
        let envelope_id = bot.send(g, &mut TICKET.as_bytes(), base).await?;
        println!("    envelope {} stored at the relay as ciphertext only", hex(envelope_id));

        step(5, "alice lists her inbox and fetches: the client checks the agent's signed statement and the digest, decrypts locally, signs a receipt");
        let inbox = alice.inbox().await?;
        println!("    inbox: {} envelope(s)", inbox.len());
        let mut plaintext = Vec::new();
        let fetched = alice.fetch(envelope_id, base, &mut plaintext).await?;
        println!("    status {}: {} bytes", fetched.status.as_str(), fetched.plaintext_len);
        for line in String::from_utf8_lossy(&plaintext).lines() {
            println!("    | {line}");
        }

        step(6, "the attacks that fail");
        refused("mallory fetches alice's envelope", mallory.fetch(envelope_id, base, &mut Vec::new()).await.map(|f| f.status))?;
        refused("research-bot (write-only) lists an inbox", bot.conn.call(Request::Inbox { page: sealrelay::core::wire::Page::first() }, None).await.map(|_| ()))?;
        refused(
            "research-bot reads the envelope",
            bot.conn.call(Request::Fetch { envelope_id, from_piece: 0 }, None).await.map(|_| ()),
        )?;
        refused("research-bot replays the used grant", bot.send(g, &mut "more".as_bytes(), base).await)?;
        refused(
            "mallory asks research-bot for a resource outside its scopes",
            mallory
                .grant(&GrantRequest {
                    agent: "research-bot".into(),
                    resource: "payroll/2026".into(),
                    purpose: String::new(),
                    ttl_secs: 600,
                    max_bytes: 1024,
                })
                .await,
        )?;

        step(7, "an auditor verifies the receipt offline with only authority.pub and log.pub");
        let receipt_path = base.join("alice-ticket.receipt");
        std::fs::write(&receipt_path, fetched.receipt_file.to_json())
            .map_err(|e| Error::io(format!("cannot write the receipt: {e}")))?;
        let authority = sealrelay::local::trust_root::read_verifier_key(&keys.join("authority.pub"))?;
        let log = sealrelay::local::trust_root::read_verifier_key(&keys.join("log.pub"))?;
        let bytes = std::fs::read(&receipt_path).map_err(|e| Error::io(format!("cannot read the receipt: {e}")))?;
        let verified = sealrelay::core::receipt_file::ReceiptFile::from_json(&bytes)?.verify(&authority.key, &log)?;
        println!(
            "    receipt verified: envelope {} {} to {}: the user's signature, the entry the authority signed, and log entry #{} of {} under a checkpoint signed by {}",
            hex(verified.receipt.envelope_id),
            verified.receipt.status.as_str(),
            verified.receipt.user,
            verified.leaf_index,
            verified.checkpoint.size,
            verified.checkpoint.origin
        );
        if args.keep.is_some() {
            println!(
                "    (the same check by hand: sealrelay receipt verify {} --authority {} --log-key {})",
                receipt_path.display(),
                keys.join("authority.pub").display(),
                keys.join("log.pub").display()
            );
        }
        step(8, "blind retrieval: a connector fetches tickets/4712 from a local HTTP source and seals it to alice at the source; the LLM driving the agent (through `sealrelay mcp`) gets only a handle");
        let source = http_source(TICKET_4712).await?;
        let connectors = sealrelay::connect::Connectors::parse(
            &format!("[[connector]]\nresources = \"tickets/*\"\nhttp = \"http://{source}/api/tickets/{{rest}}\"\n"),
            base,
        )?;
        let blind = sealrelay::mcp::BlindAgent::new(
            std::sync::Arc::new(identity_file::load_enrolled(&base.join("research-bot.id"), sealrelay::ids::PartyKind::Agent, clock::now())?),
            addr.clone(),
            connectors,
            base.to_path_buf(),
        );
        let grant_id = alice
            .grant(&GrantRequest {
                agent: "research-bot".into(),
                resource: "tickets/4712".into(),
                purpose: "draft the customer reply".into(),
                ttl_secs: 3600,
                max_bytes: 1 << 20,
            })
            .await?;
        let requests = blind.list_requests().await?;
        for r in &requests {
            model_sees(r);
        }
        let retrieved = blind.retrieve(&hex(grant_id)).await?;
        model_sees(&retrieved);
        let sealed_here = retrieved.envelope_id.as_deref().ok_or_else(|| sealrelay::Error::internal("the demo's agent seals itself"))?;
        let envelope_id = sealrelay::ids::EnvelopeId(sealrelay::ids::parse_hex(sealed_here)?);
        let mut plaintext = Vec::new();
        let fetched = alice.fetch(envelope_id, base, &mut plaintext).await?;
        println!("    alice fetched it: {} {} bytes", fetched.status.as_str(), fetched.plaintext_len);
        for line in String::from_utf8_lossy(&plaintext).lines() {
            println!("    | {line}");
        }
        model_sees(&blind.delivery_status(&retrieved.handle).await?);

        let events = relay.relay().store().events(0, 1000)?;
        println!("    the relay's log holds {} events (ids, digests and decisions; no content)", events.len());

        alice.conn.close().await;
        bot.conn.close().await;
        mallory.conn.close().await;
        relay.shutdown().await;
        println!("\ndone: the ticket reached only alice, the relay held only ciphertext, every refusal is logged.");
        Ok(())
    })
}
