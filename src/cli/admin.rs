//! Admin commands: `user|agent add|revoke`, `directory verify`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use sealrelay::clock;
use sealrelay::core::directory::{Attributes, EnrollmentRequest};
use sealrelay::core::identity::Identity;
use sealrelay::core::sign::{Signed, StatementType, MAX_SIGNED_FILE_LEN};
use sealrelay::error::{Error, Result};
use sealrelay::ids::{validate_name, PartyKind, SpiffeId};
use sealrelay::local::dirstore::{self, EnrollOptions};
use sealrelay::local::fs::{exists, read_capped, write_atomic, PUBLIC_MODE};
use sealrelay::local::identity_file;
use sealrelay::local::trust_root::{self, TrustRoot};

use super::DirArg;

#[derive(Subcommand)]
pub enum PartyCommand {
    /// Enroll a party from its request file (FILE.request from `keys gen`), or, given a bare
    /// name, generate its whole identity here in one step (local use; writes it to --out).
    Add {
        /// A request file from `sealrelay keys gen`, or a name for one-step local enrollment.
        #[arg(value_name = "NAME|REQUEST")]
        target: String,
        #[command(flatten)]
        dir: DirArg,
        /// Users: clearance level 0-9 (policy compares it with a resource's classification).
        /// Default 0; with --rotate, the current entry's.
        #[arg(long, value_name = "N")]
        clearance: Option<u8>,
        /// Users: a role (repeatable), e.g. engineer, approver. With --rotate, the roles given
        /// replace the current ones; none given keeps them.
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// With --rotate: drop every role (none given otherwise keeps the current ones).
        #[arg(long, conflicts_with = "roles")]
        no_roles: bool,
        /// Agents: a scope of resources it may serve (repeatable), e.g. tickets/*; sources: a
        /// pattern of resources they serve (--serves, repeatable), e.g. payroll/*. With
        /// --rotate, the patterns given replace the current ones; none given keeps them.
        #[arg(long = "scope", visible_alias = "serves", value_name = "S")]
        scopes: Vec<String>,
        /// With --rotate: drop every scope (none given otherwise keeps the current ones).
        #[arg(long, conflicts_with = "scopes")]
        no_scopes: bool,
        /// Where to write: the bundle (with a request; default: REQUEST with .bundle) or the
        /// generated identity (with a name; required).
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
        /// Days the entry and client certificate stay valid.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        validity: u64,
        /// Issue a new serial for a party that is already enrolled: a new key (key rotation), the
        /// same request again (certificate renewal: a new validity period), or new attributes.
        /// Clearance, roles and scopes not given carry over from the current entry; what changed
        /// is printed.
        #[arg(long)]
        rotate: bool,
        /// Also push the new entry to this relay (as DIR/admin.id).
        #[arg(long, value_name = "HOST:PORT")]
        relay: Option<String>,
    },
    /// Revoke a party's current entry (signed by the authority). A relay enforces it once it has
    /// it: at once with --relay; within a few seconds on a relay whose --dir is this DIR (it
    /// watches DIR/directory); otherwise after `sealrelay directory push`.
    Revoke {
        /// The party's name.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        dir: DirArg,
        /// Why (recorded in the signed revocation).
        #[arg(long, value_name = "TEXT", default_value = "revoked by admin")]
        reason: String,
        /// Also push the revocation to this relay (in force there from the party's next request).
        #[arg(long, value_name = "HOST:PORT")]
        relay: Option<String>,
    },
    /// As a second admin, shorten the waiting period of one reset key (a key the party's
    /// previous key did not sign): signed with your own admin identity, logged in the directory
    /// log, and shown to the party as an alert (docs/keys.md).
    ApproveReset(ApproveResetArgs),
}

#[derive(clap::Args)]
pub struct ApproveResetArgs {
    /// The party whose reset key waits.
    #[arg(value_name = "NAME")]
    name: String,
    /// The reset entry's serial (as the alert and `user add` print it).
    #[arg(long, value_name = "N")]
    serial: u64,
    /// The shorter wait, from when the key was logged (e.g. 1h, 10m); a wait longer than the
    /// trust root's changes nothing.
    #[arg(long, value_name = "DURATION")]
    wait: String,
    /// The approving admin's own identity file (an enrolled admin other than the one whose
    /// trust root enrolled the key).
    #[arg(long, value_name = "FILE")]
    identity: PathBuf,
    /// The relay (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", env = "SEALRELAY_RELAY")]
    relay: String,
}

/// `approve-reset`: a second admin signs a shorter wait for one reset key and pushes it; the
/// relay logs it, and the person is told.
pub fn approve_reset(kind: PartyKind, args: ApproveResetArgs) -> Result<()> {
    let admin = identity_file::load_enrolled(&args.identity, PartyKind::Admin, clock::now())?;
    let me = admin
        .id
        .clone()
        .ok_or_else(|| Error::bad_input("the approving identity is not enrolled"))?;
    validate_name(&args.name)?;
    let wait = super::relay::parse_duration(&args.wait).map_err(|e| e.context("--wait"))?;
    let approval = sealrelay::core::keylog::ResetApproval {
        id: SpiffeId::new(me.trust_domain(), kind, &args.name)?,
        serial: args.serial,
        wait,
        approver: me.clone(),
        created: clock::now(),
    };
    let signed = approval.sign(&admin.signing_key);
    super::relay::runtime()?.block_on(async {
        let client = sealrelay::client::AdminClient::connect(&admin, &args.relay).await?;
        let r = client.approve_reset(&signed).await;
        client.conn.close().await;
        r
    })?;
    println!(
        "approved a wait of {} for {} serial {} (signed by {}); the relay logged it and {} is told",
        clock::human_duration(wait),
        approval.id,
        args.serial,
        me,
        args.name
    );
    Ok(())
}

#[derive(Subcommand)]
pub enum DirectoryCommand {
    /// Verify every entry and revocation in DIR/directory against the authority key.
    Verify {
        #[command(flatten)]
        dir: DirArg,
        /// Authority public key to verify against (default: DIR/authority.pub).
        #[arg(long, value_name = "PUB")]
        authority: Option<PathBuf>,
    },
    /// Push every entry and revocation in DIR/directory to a relay (as DIR/admin.id).
    Push {
        #[command(flatten)]
        dir: DirArg,
        /// The relay (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT", env = "SEALRELAY_RELAY")]
        relay: String,
    },
}

/// A target is a request file when it names an existing file or looks like a path.
fn is_request_path(target: &str) -> bool {
    target.contains('/') || target.ends_with(".request") || Path::new(target).is_file()
}

fn bundle_path_for(request: &Path) -> PathBuf {
    let s = request.to_string_lossy();
    match s.strip_suffix(".request") {
        Some(base) => PathBuf::from(format!("{base}.bundle")),
        None => PathBuf::from(format!("{s}.bundle")),
    }
}

pub fn run_party(kind: PartyKind, cmd: PartyCommand) -> Result<()> {
    match cmd {
        PartyCommand::Add {
            target,
            dir,
            clearance,
            roles,
            no_roles,
            scopes,
            no_scopes,
            out,
            validity,
            rotate,
            relay,
        } => {
            let changes = AttributeChanges {
                clearance,
                roles: (no_roles || !roles.is_empty()).then_some(roles),
                scopes: (no_scopes || !scopes.is_empty()).then_some(scopes),
            };
            let signed = add(kind, &target, &dir.dir, &changes, rotate, validity, out)?;
            if let Some(relay) = relay {
                super::relay::push(&dir.dir, &relay, &[signed], &[])?;
                println!("  pushed to the relay at {relay}");
            }
            Ok(())
        }
        PartyCommand::Revoke {
            name,
            dir,
            reason,
            relay,
        } => {
            let signed = revoke(kind, &name, &dir.dir, &reason)?;
            if relay.is_none() {
                println!(
                    "  not pushed: a relay started with --dir {} takes it in within seconds; any other relay refuses {name} only after `sealrelay directory push --dir {} --relay HOST:PORT`",
                    dir.dir.display(),
                    dir.dir.display()
                );
            }
            if let Some(relay) = relay {
                super::relay::push(&dir.dir, &relay, &[], &[signed])?;
                println!(
                    "  pushed to the relay at {relay}: it refuses {name} from the next request on"
                );
            }
            Ok(())
        }
        PartyCommand::ApproveReset(args) => approve_reset(kind, args),
    }
}

/// What `add` was told about the party's attributes; what it was not told is the current
/// entry's on a rotation (threat: a rotation that silently resets what a party may do).
struct AttributeChanges {
    clearance: Option<u8>,
    roles: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
}

impl AttributeChanges {
    /// The attributes of the new entry: the changes over `current` (a rotation), or over the
    /// defaults (a first enrollment); and one line per attribute saying what happened to it.
    fn apply(&self, kind: PartyKind, current: Option<&Attributes>) -> (Attributes, Vec<String>) {
        let base = current.cloned().unwrap_or_default();
        let mut notes = Vec::new();
        // Only the kind's own attributes are spoken of (users: clearance and roles; agents:
        // scopes).
        let applies = |what: &str| match kind {
            PartyKind::User => what != "scopes",
            PartyKind::Agent | PartyKind::Source => what == "scopes",
            _ => false,
        };
        let mut note = |what: &str, old: String, new: String, given: bool| {
            if current.is_some() && applies(what) {
                let how = match (given, old == new) {
                    (false, _) => "kept".to_owned(),
                    (true, true) => "unchanged".to_owned(),
                    (true, false) => format!("changed from {old}"),
                };
                notes.push(format!("{what} {new} ({how})"));
            }
        };
        let clearance = self.clearance.unwrap_or(base.clearance);
        note(
            "clearance",
            base.clearance.to_string(),
            clearance.to_string(),
            self.clearance.is_some(),
        );
        let roles = self.roles.clone().unwrap_or_else(|| base.roles.clone());
        note(
            "roles",
            format!("[{}]", base.roles.join(", ")),
            format!("[{}]", roles.join(", ")),
            self.roles.is_some(),
        );
        let scopes = self.scopes.clone().unwrap_or_else(|| base.scopes.clone());
        note(
            "scopes",
            format!("[{}]", base.scopes.join(", ")),
            format!("[{}]", scopes.join(", ")),
            self.scopes.is_some(),
        );
        (
            Attributes {
                clearance,
                roles,
                scopes,
            },
            notes,
        )
    }
}

fn add(
    kind: PartyKind,
    target: &str,
    dir: &Path,
    changes: &AttributeChanges,
    rotate: bool,
    validity_days: u64,
    out: Option<PathBuf>,
) -> Result<Signed> {
    let root = TrustRoot::load(dir)?;
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public())?;
    let now = clock::now();
    let name = if is_request_path(target) {
        None
    } else {
        Some(target)
    };
    // The party's current attributes, on a rotation: the request names the party.
    let party_name = match name {
        Some(n) => n.to_owned(),
        None => request_name(Path::new(target))?,
    };
    let id = SpiffeId::new(&root.meta.trust_domain, kind, &party_name)?;
    let current = if rotate {
        directory.latest(&id).map(|e| e.attributes.clone())
    } else {
        None
    };
    let (attributes, notes) = changes.apply(kind, current.as_ref());
    attributes.validate(kind)?;
    let rotation = match (rotate, target.strip_suffix(".request")) {
        (true, Some(stem)) => read_rotation(Path::new(&format!("{stem}.rotation")))?,
        _ => None,
    };
    let opts = EnrollOptions {
        attributes,
        rotate,
        validity_days,
        rotation,
    };
    let signed = add_with(kind, target, &root, &directory, &opts, out, now)?;
    for n in notes {
        println!("  {n}");
    }
    Ok(signed)
}

/// `keys rotate`'s consent file beside a request, if there is one.
fn read_rotation(path: &Path) -> Result<Option<Signed>> {
    if !exists(path) {
        return Ok(None);
    }
    let bytes = read_capped(path, MAX_SIGNED_FILE_LEN)?;
    Signed::from_json(&bytes, StatementType::KeyRotation)
        .map(Some)
        .map_err(|e| {
            e.context(format!(
                "{} is not a key rotation (ask the party to run `sealrelay keys rotate` again)",
                path.display()
            ))
        })
}

/// What a new serial is to the one before, for the admin who just issued it.
fn print_change(
    entry: &sealrelay::core::directory::DirectoryEntry,
    directory: &sealrelay::core::directory::Directory,
    reset_wait: u64,
) {
    use sealrelay::core::directory::DirectoryEntry;
    use sealrelay::core::keylog::Change;
    // As the relay judges it: a rotation or renewal of a revoked serial is a reset.
    let change = |e, p| directory.continuity(e, p);
    let previous = directory.latest(&entry.id);
    match change(entry, previous) {
        Change::First => {}
        Change::Renewal => println!("  change         renewal (the same keys)"),
        Change::Rotation => {
            // In force with the key that signed it: does the chain of rotations and renewals
            // before it start at a reset (whose wait this side of the relay cannot see)?
            let before = |e: &DirectoryEntry| {
                directory
                    .history(&entry.id)
                    .map(|(x, _)| x)
                    .find(|x| x.serial < e.serial)
            };
            let mut after_reset = false;
            let mut cur = previous;
            while let Some(c) = cur {
                let b = before(c);
                match change(c, b) {
                    Change::Reset => {
                        after_reset = true;
                        break;
                    }
                    Change::First => break,
                    Change::Rotation | Change::Renewal => cur = b,
                }
            }
            println!(
                "  change         rotation, signed by serial {}'s key: {}",
                previous.map_or(0, |p| p.serial),
                if after_reset {
                    "in force when that key is (it descends from a reset, which waits its period)"
                } else {
                    "in force once the relay has it"
                }
            )
        }
        Change::Reset => println!(
            "  change         RESET: a new key serial {}'s key did not sign; nobody seals to it and it cannot grant for {} after the relay logs it, and {} is alerted (a second admin can shorten the wait: docs/keys.md)",
            previous.map_or(0, |p| p.serial),
            sealrelay::clock::human_duration(reset_wait),
            entry.id.name()
        ),
    }
}

/// The party a request file names (checked again, with its signature, when it is enrolled).
fn request_name(path: &Path) -> Result<String> {
    let bytes = read_capped(path, MAX_SIGNED_FILE_LEN)?;
    let signed = Signed::from_json(&bytes, StatementType::EnrollmentRequest).map_err(|e| {
        e.context(format!(
            "{} is not a valid enrollment request (ask the party to run `sealrelay keys gen` again)",
            path.display()
        ))
    })?;
    Ok(EnrollmentRequest::verify(&signed)
        .map_err(|e| e.context(path.display()))?
        .name)
}

fn add_with(
    kind: PartyKind,
    target: &str,
    root: &TrustRoot,
    directory: &sealrelay::core::directory::Directory,
    opts: &EnrollOptions,
    out: Option<PathBuf>,
    now: u64,
) -> Result<Signed> {
    if is_request_path(target) {
        let path = PathBuf::from(target);
        let bytes = read_capped(&path, MAX_SIGNED_FILE_LEN)?;
        let signed = Signed::from_json(&bytes, StatementType::EnrollmentRequest).map_err(|e| {
            e.context(format!(
                "{} is not a valid enrollment request (ask the party to run `sealrelay keys gen` again)",
                path.display()
            ))
        })?;
        let req = EnrollmentRequest::verify(&signed).map_err(|e| e.context(path.display()))?;
        if req.kind != kind {
            return Err(Error::bad_input(format!(
                "{} is a request for {} {}: use `sealrelay {} add`",
                path.display(),
                req.kind,
                req.name,
                req.kind
            )));
        }
        let issued = dirstore::issue(root, directory, &req, opts, now)?;
        let bundle = root.bundle(issued.signed.clone(), issued.cert.clone(), None)?;
        let out = out.unwrap_or_else(|| bundle_path_for(&path));
        write_atomic(&out, bundle.to_json().as_bytes(), PUBLIC_MODE, false)?;
        let entry_file = match dirstore::store_entry(&root.directory_dir(), &issued) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&out);
                return Err(e);
            }
        };
        print_enrolled(&issued.entry, &entry_file);
        print_change(&issued.entry, directory, root.meta.reset_wait);
        println!(
            "  bundle         {} (public): hand it to {}, who runs `sealrelay keys import --identity <FILE> {}`",
            out.display(),
            req.name,
            out.display()
        );
        Ok(issued.signed)
    } else {
        validate_name(target)?;
        let out = out.ok_or_else(|| {
            Error::bad_input(format!(
                "with a name, --out FILE is required: it receives {target}'s generated identity"
            ))
        })?;
        if exists(&out) {
            return Err(Error::conflict(format!(
                "{} already exists: choose another --out",
                out.display()
            )));
        }
        let mut identity = Identity::generate(kind, target)?;
        let req = EnrollmentRequest::verify(&identity.enrollment_request(now)?)?;
        let issued = dirstore::issue(root, directory, &req, opts, now)?;
        let bundle = root.bundle(issued.signed.clone(), issued.cert.clone(), None)?;
        bundle.import_into(&mut identity, now)?;
        identity_file::save(&out, &identity, false)?;
        let entry_file = match dirstore::store_entry(&root.directory_dir(), &issued) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&out);
                return Err(e);
            }
        };
        let crt = super::keys::write_cert_beside(&out, &issued.cert)?;
        print_enrolled(&issued.entry, &entry_file);
        println!("  certificate    {}", crt.display());
        println!(
            "  identity       {} (private, mode 0600), generated here in one step: hand it over securely.",
            out.display()
        );
        println!("                 In production the party runs `sealrelay keys gen` so its private keys never leave its machine.");
        Ok(issued.signed)
    }
}

fn print_enrolled(entry: &sealrelay::core::directory::DirectoryEntry, file: &Path) {
    println!("enrolled {} (serial {})", entry.id, entry.serial);
    let a = &entry.attributes;
    match entry.id.kind() {
        PartyKind::User => println!(
            "  clearance      {}, roles [{}]",
            a.clearance,
            a.roles.join(", ")
        ),
        PartyKind::Source => println!("  serves         [{}]", a.scopes.join(", ")),
        _ => println!("  scopes         [{}]", a.scopes.join(", ")),
    }
    println!("  valid until    {}", clock::rfc3339(entry.not_after));
    println!(
        "  entry          {} (signed by the authority)",
        file.display()
    );
}

fn revoke(kind: PartyKind, name: &str, dir: &Path, reason: &str) -> Result<Signed> {
    validate_name(name)?;
    let root = TrustRoot::load(dir)?;
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public())?;
    let id = SpiffeId::new(&root.meta.trust_domain, kind, name)?;
    let (rev, signed, path) = dirstore::revoke(&root, &directory, &id, reason, clock::now())?;
    println!(
        "revoked {} serial {} ({})",
        rev.id,
        rev.serial,
        path.display()
    );
    Ok(signed)
}

pub fn run_directory(cmd: DirectoryCommand) -> Result<()> {
    match cmd {
        DirectoryCommand::Verify { dir, authority } => {
            let pub_path = authority.unwrap_or_else(|| dir.dir.join("authority.pub"));
            let vk = trust_root::read_verifier_key(&pub_path)?;
            let (directory, summary) = dirstore::load(&dir.dir.join("directory"), &vk.key)?;
            let now = clock::now();
            let width = directory
                .parties()
                .map(|e| e.id.to_string().len())
                .max()
                .unwrap_or(0);
            for e in directory.parties() {
                let state = match directory.active(&e.id, now) {
                    Ok(_) => "active".to_owned(),
                    Err(p) => format!("{p:?}").to_lowercase(),
                };
                println!(
                    "  {:<width$} serial {:<3} {}",
                    e.id.to_string(),
                    e.serial,
                    state
                );
            }
            println!(
                "ok: {} signed statements ({} users, {} agents, {} admins, {} revoked) verify against authority {}",
                summary.statements,
                summary.users,
                summary.agents,
                summary.admins,
                summary.revoked,
                vk.key.fingerprint()
            );
            Ok(())
        }
        DirectoryCommand::Push { dir, relay } => {
            // On the admin's machine, loading the root also signs the admin's own entry if an
            // older root lacks it, so that this push carries it.
            if dir.dir.join("authority.key").exists() {
                trust_root::TrustRoot::load(&dir.dir)?;
            }
            let vk = trust_root::read_verifier_key(&dir.dir.join("authority.pub"))?;
            let (directory, summary) = dirstore::load(&dir.dir.join("directory"), &vk.key)?;
            // Every serial: the relay keeps each party's history (earlier keys are recognised).
            let entries: Vec<Signed> = directory.all_entries().map(|(_, s)| s.clone()).collect();
            let revocations: Vec<Signed> =
                directory.revocations().map(|(_, s)| s.clone()).collect();
            super::relay::push(&dir.dir, &relay, &entries, &revocations)?;
            println!(
                "pushed {} entries and {} revocations to the relay at {relay}",
                entries.len(),
                summary.revoked
            );
            Ok(())
        }
    }
}
