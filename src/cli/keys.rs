//! `sealrelay keys init | reissue-relay | gen | show | rotate | watch | import`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use sealrelay::clock;
use sealrelay::core::bundle::{Bundle, MAX_BUNDLE_LEN};
use sealrelay::core::identity::Identity;
use sealrelay::error::{Error, Result};
use sealrelay::ids::PartyKind;
use sealrelay::local::fs::{exists, read_capped, write_atomic, PUBLIC_MODE};
use sealrelay::local::identity_file;
use sealrelay::local::trust_root::{self, InitOptions, ReissueOptions};

use super::DirArg;

mod rotation;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make the trust root: authority key, mutual-TLS CA, relay certificate, log key, admin identity.
    Init {
        #[command(flatten)]
        dir: DirArg,
        /// SPIFFE trust domain of every identity issued.
        #[arg(long, value_name = "D", default_value = "sealrelay.local")]
        trust_domain: String,
        /// Name of the relay (its SPIFFE ID is spiffe://<D>/relay/<NAME>).
        #[arg(long, value_name = "NAME", default_value = "relay")]
        relay_name: String,
        /// Name of the admin identity written to DIR/admin.id.
        #[arg(long, value_name = "NAME", default_value = "admin")]
        admin_name: String,
        /// Extra DNS name or IP address for the relay certificate (repeatable); localhost,
        /// 127.0.0.1 and ::1 are always included. Clients must dial one of these names; change
        /// them later with `keys reissue-relay`.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace an existing trust root (every certificate and entry it issued stops working).
        #[arg(long)]
        force: bool,
        /// How long a reset key (one its party's previous key did not sign: a lost device, or
        /// an attack) waits before anyone seals to it or it can grant (e.g. 24h, 90m). Pinned
        /// by every party at import; a second admin can shorten one reset's wait.
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        reset_wait: String,
    },
    /// Reissue the relay's TLS certificate alone (new host names, or a renewal), signed by the CA
    /// in DIR: the CA, authority, log keys and every enrolled party stay valid. Restart `serve`
    /// to use it.
    ReissueRelay {
        #[command(flatten)]
        dir: DirArg,
        /// DNS name or IP address clients dial the relay by (repeatable); localhost, 127.0.0.1
        /// and ::1 are always included. The new certificate names only these; without --san it
        /// keeps the current certificate's names.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Days the new certificate is valid (not past the CA's expiry).
        #[arg(long, value_name = "DAYS", default_value_t = 365)]
        validity: u64,
        /// Certify the existing relay.key instead of making a new key. The default, a new key,
        /// means a copy of the old key left elsewhere cannot serve under the new names.
        #[arg(long)]
        keep_key: bool,
    },
    /// Make a party's private identity FILE (0600) and its public enrollment request FILE.request.
    /// Run it on the party's own machine: private keys never leave it.
    Gen {
        /// The party's name (lowercase letters, digits, '.', '_', '-').
        #[arg(long, value_name = "N")]
        name: String,
        /// What the party is.
        #[arg(long, value_name = "user|agent|admin")]
        kind: String,
        /// Where to write the identity (FILE.request is written beside it).
        #[arg(long, short = 'o', value_name = "FILE")]
        out: PathBuf,
        /// Overwrite FILE and FILE.request if they exist.
        #[arg(long)]
        force: bool,
        /// Users: an X25519 age key instead of the post-quantum hybrid (ML-KEM-768 + X25519),
        /// for age clients that predate age v1.3. A relay with require_post_quantum refuses
        /// envelopes for it.
        #[arg(long)]
        x25519: bool,
    },
    /// Show an enrolled identity's party, serial and safety number: 30 digits for its current
    /// keys, to compare out of band with what others see for it (the web client shows the same
    /// number). A different number means a different key.
    Show {
        /// The identity file.
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
    },
    /// Make new keys for an enrolled party, signed by its current key (a rotation: in force at
    /// once, no alert). Writes the new private identity FILE (0600), FILE.request and
    /// FILE.rotation (public): hand both to the admin, who runs `user add --rotate FILE.request`;
    /// then import the bundle into FILE. Keep the old identity: what was sealed to its key opens
    /// only with it.
    Rotate {
        /// The current identity file.
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
        /// Where to write the new identity.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: PathBuf,
        /// Users: an X25519 age key instead of the post-quantum hybrid.
        #[arg(long)]
        x25519: bool,
    },
    /// Read the directory log for statements under this identity's name that its own keys did
    /// not make (a key an admin enrolled, a shortened wait) and print them as alerts, kept in
    /// FILE.keywatch. Exit 9 while alerts are not acknowledged. Works without a client
    /// certificate, for a revoked identity too, with --log-url.
    Watch {
        /// The identity file.
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
        /// The relay (default: $SEALRELAY_RELAY, else the identity's; --log-url, when given,
        /// is read instead).
        #[arg(long, value_name = "HOST:PORT", env = "SEALRELAY_RELAY")]
        relay: Option<String>,
        /// Read the log over plain HTTP from the relay's admin listener instead (e.g.
        /// http://relay.example:9464): no client certificate needed.
        #[arg(long, value_name = "URL")]
        log_url: Option<String>,
        /// Mark every alert so far as seen (they stay in the history).
        #[arg(long)]
        acknowledge: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        witnesses: super::relay::WitnessArgs,
    },
    /// Add the bundle the admin issued (entry, certificate, trust anchors) to an identity.
    Import {
        /// The identity file to update.
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
        /// The bundle from `sealrelay user add` / `agent add`.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
}

pub fn run(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Show { identity } => {
            let id = sealrelay::local::identity_file::load(&identity, None)?;
            let entry = id.own_entry().map_err(|e| e.context(identity.display()))?;
            println!("{}", entry.id);
            println!("  serial         {}", entry.serial);
            println!(
                "  safety number  {}",
                sealrelay::core::safety::safety_number(&entry)
            );
            println!("  signing key    {}", entry.signing_key.fingerprint());
            if let Some(r) = &entry.age_recipient {
                // A post-quantum recipient is some 2,000 characters: its start and a digest.
                let shown = if r.len() > 40 {
                    let digest = ring::digest::digest(&ring::digest::SHA256, r.as_bytes());
                    format!(
                        "{}… ({} characters, SHA-256 {})",
                        r.get(..20).unwrap_or(r),
                        r.len(),
                        sealrelay::ids::hex(digest.as_ref().get(..8).unwrap_or_default())
                    )
                } else {
                    r.clone()
                };
                println!("  age recipient  {shown}");
            }
            println!("compare the safety number with the one others see for you; a different number is a different key");
            Ok(())
        }
        KeysCommand::Init {
            dir,
            trust_domain,
            relay_name,
            admin_name,
            sans,
            force,
            reset_wait,
        } => {
            let opts = InitOptions {
                trust_domain,
                relay_name,
                admin_name,
                relay_sans: sans,
                force,
                reset_wait: super::relay::parse_duration(&reset_wait)
                    .map_err(|e| e.context("--reset-wait"))?,
                ..InitOptions::default()
            };
            let meta = trust_root::init(&dir.dir, &opts, clock::now())?;
            let root = trust_root::TrustRoot::load(&dir.dir)?;
            println!(
                "trust root for {} written to {}",
                meta.trust_domain,
                dir.dir.display()
            );
            println!(
                "  authority.pub  {} (fingerprint {})",
                root.authority_vk()?.encode(),
                root.authority.public().fingerprint()
            );
            println!("  log.pub        {}", root.log_public.encode());
            println!(
                "  ca.crt, relay.crt (spiffe://{}/relay/{}), admin.id (spiffe://{}/admin/{})",
                meta.trust_domain, meta.relay_name, meta.trust_domain, meta.admin_name
            );
            let relay_crt = trust_root::read_cert_pem(&dir.dir.join("relay.crt"))?;
            println!(
                "  relay names    {} (clients dial one of these; `keys reissue-relay --san HOST` changes them)",
                sealrelay::core::pki::host_names(&relay_crt)?.join(", ")
            );
            println!(
                "  private keys (*.key, admin.id) are mode 0600: keep them off shared machines"
            );
            println!("next: parties run `sealrelay keys gen`, then you run `sealrelay user add <FILE.request>`");
            Ok(())
        }
        KeysCommand::Gen {
            name,
            kind,
            out,
            force,
            x25519,
        } => gen(&name, &kind, &out, force, x25519),
        KeysCommand::ReissueRelay {
            dir,
            sans,
            validity,
            keep_key,
        } => reissue_relay(&dir.dir, sans, validity, keep_key),
        KeysCommand::Import { identity, bundle } => import(&identity, &bundle),
        KeysCommand::Rotate {
            identity,
            out,
            x25519,
        } => rotation::rotate(&identity, &out, x25519),
        KeysCommand::Watch {
            identity,
            relay,
            log_url,
            acknowledge,
            json,
            witnesses,
        } => rotation::watch(
            &identity,
            relay,
            log_url,
            acknowledge,
            json,
            witnesses.policy()?,
        ),
    }
}

fn reissue_relay(dir: &Path, sans: Vec<String>, days: u64, keep_key: bool) -> Result<()> {
    let opts = ReissueOptions {
        sans,
        days,
        keep_key,
    };
    let r = trust_root::reissue_relay(dir, &opts, clock::now())?;
    println!(
        "relay certificate for {} reissued in {} ({}), valid until {}",
        r.id,
        dir.display(),
        if r.new_key {
            "new key in relay.key"
        } else {
            "same relay.key"
        },
        clock::rfc3339(r.not_after)
    );
    println!("  names          {}", r.names.join(", "));
    if !r.dropped.is_empty() {
        println!("  no longer      {}", r.dropped.join(", "));
    }
    println!("  unchanged      ca.crt, authority and log keys, admin.id, every enrolled party");
    println!(
        "next: copy relay.crt and relay.key to the relay's trust-root directory (if it is not {}) and restart `sealrelay serve`: a running relay keeps the old certificate",
        dir.display()
    );
    Ok(())
}

/// `FILE.request` beside `FILE`.
pub fn request_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".request");
    PathBuf::from(s)
}

fn gen(name: &str, kind: &str, out: &Path, force: bool, x25519: bool) -> Result<()> {
    let kind: PartyKind = kind.parse()?;
    if !matches!(
        kind,
        PartyKind::User | PartyKind::Agent | PartyKind::Admin | PartyKind::Source
    ) {
        return Err(Error::bad_input(
            "--kind must be user, agent, source or admin",
        ));
    }
    if x25519 && kind != PartyKind::User {
        return Err(Error::bad_input(
            "--x25519 is for users (only users hold age keys)",
        ));
    }
    let req_path = request_path(out);
    for p in [out, req_path.as_path()] {
        if exists(p) && !force {
            return Err(Error::conflict(format!(
                "{} already exists: choose another --out or pass --force",
                p.display()
            )));
        }
    }
    let identity = Identity::generate_with(kind, name, x25519)?;
    let request = identity.enrollment_request(clock::now())?;
    identity_file::save(out, &identity, force)?;
    if let Err(e) = write_atomic(&req_path, request.to_json().as_bytes(), PUBLIC_MODE, force) {
        if !force {
            let _ = std::fs::remove_file(out);
        }
        return Err(e);
    }
    println!(
        "wrote {} (private, mode 0600) and {} (public)",
        out.display(),
        req_path.display()
    );
    if let Some(a) = &identity.age_identity {
        println!("  age recipient  {}", a.to_public());
    }
    println!(
        "  signing key    {}",
        identity.signing_key.public().to_base64()
    );
    println!(
        "next: give {} to the admin, who runs `sealrelay {kind} add {}`",
        req_path.display(),
        req_path.display()
    );
    Ok(())
}

fn import(identity_path: &Path, bundle_path: &Path) -> Result<()> {
    let mut identity = identity_file::load(identity_path, None)?;
    let bytes = read_capped(bundle_path, MAX_BUNDLE_LEN)?;
    let bundle = Bundle::from_json(&bytes).map_err(|e| e.context(bundle_path.display()))?;
    let entry = bundle
        .import_into(&mut identity, clock::now())
        .map_err(|e| e.context(bundle_path.display()))?;
    identity_file::save(identity_path, &identity, true)?;
    let crt = write_cert_beside(identity_path, &bundle.cert)?;
    println!(
        "imported {} into {}",
        bundle_path.display(),
        identity_path.display()
    );
    println!(
        "  certificate    {} (public PEM copy, for TLS tooling)",
        crt.display()
    );
    println!("  id             {}", entry.id);
    println!(
        "  serial         {}, valid until {}",
        entry.serial,
        clock::rfc3339(entry.not_after)
    );
    if let Some(a) = &identity.authority {
        println!(
            "  trusts         authority {} (fingerprint {})",
            a.name,
            a.key.fingerprint()
        );
    }
    Ok(())
}

/// Writes the client certificate as PEM to `FILE.crt` beside an identity file.
pub fn write_cert_beside(identity_path: &Path, cert_der: &[u8]) -> Result<PathBuf> {
    let mut s = identity_path.as_os_str().to_owned();
    s.push(".crt");
    let path = PathBuf::from(s);
    write_atomic(
        &path,
        sealrelay::core::pki::cert_pem(cert_der).as_bytes(),
        PUBLIC_MODE,
        true,
    )?;
    Ok(path)
}
