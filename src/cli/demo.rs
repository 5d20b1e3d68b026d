//! `sealrelay demo`: the whole flow in a temporary directory, step by step, with real keys.

use std::path::Path;

use clap::Args;
use sealrelay::clock;
use sealrelay::core::directory::{Attributes, EnrollmentRequest};
use sealrelay::core::identity::Identity;
use sealrelay::error::{Error, Result};
use sealrelay::ids::PartyKind;
use sealrelay::local::dirstore::{self, EnrollOptions};
use sealrelay::local::identity_file;
use sealrelay::local::trust_root::{self, InitOptions, TrustRoot};

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the demo's files in DIR instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

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
    let root_dir = base.join("keys");
    let now = clock::now();
    println!("sealrelay demo in {}", base.display());

    step(
        1,
        "admin: keys init (authority key, mTLS CA, relay certificate, log key)",
    );
    let meta = trust_root::init(&root_dir, &InitOptions::default(), now)?;
    let root = TrustRoot::load(&root_dir)?;
    println!(
        "    trust domain {}, authority {}",
        meta.trust_domain,
        root.authority.public().fingerprint()
    );

    step(
        2,
        "alice and research-bot: keys gen on their own machines (private keys stay there)",
    );
    let alice = Identity::generate(PartyKind::User, "alice")?;
    let bot = Identity::generate(PartyKind::Agent, "research-bot")?;
    let alice_req = alice.enrollment_request(now)?;
    let bot_req = bot.enrollment_request(now)?;
    println!(
        "    alice's age recipient {}",
        alice
            .age_identity
            .as_ref()
            .map(|a| a.to_public().to_string())
            .unwrap_or_default()
    );

    step(3, "admin: user add / agent add (verify proof of possession, sign entries, issue certificates)");
    let mut directory = dirstore::load(&root.directory_dir(), &root.authority.public())?.0;
    let mut enrolled = Vec::new();
    for (mut identity, signed_req, attrs, file) in [
        (
            alice,
            alice_req,
            Attributes {
                clearance: 2,
                roles: vec!["engineer".into()],
                scopes: vec![],
            },
            "alice.id",
        ),
        (
            bot,
            bot_req,
            Attributes {
                clearance: 0,
                roles: vec![],
                scopes: vec!["tickets/*".into()],
            },
            "research-bot.id",
        ),
    ] {
        let req = EnrollmentRequest::verify(&signed_req)?;
        let opts = EnrollOptions {
            attributes: attrs,
            rotate: false,
            validity_days: 30,
        };
        let issued = dirstore::issue(&root, &directory, &req, &opts, now)?;
        dirstore::store_entry(&root.directory_dir(), &issued)?;
        directory.insert_entry(issued.signed.clone(), &root.authority.public())?;
        let bundle = root.bundle(issued.signed.clone(), issued.cert.clone(), None)?;
        step(
            4,
            &format!(
                "{}: keys import (checks every binding against the pinned authority)",
                req.name
            ),
        );
        let entry = bundle.import_into(&mut identity, now)?;
        identity_file::save(&base.join(file), &identity, false)?;
        println!("    {} serial {} -> {}", entry.id, entry.serial, file);
        enrolled.push(identity);
    }

    step(5, "anyone: directory verify");
    let (_, summary) = dirstore::load(&root.directory_dir(), &root.authority.public())?;
    println!(
        "    ok: {} signed statements ({} users, {} agents) verify against the authority",
        summary.statements, summary.users, summary.agents
    );

    println!("\nprovisioning done. Next in the flow (coming with the relay): grant -> agent send -> inbox -> fetch -> receipt verify.");
    Ok(())
}
