//! One-step local provisioning for the demo, tests and benchmarks: a trust root and enrolled
//! identities in one directory, the same steps `keys init`, `keys gen`, `user add` and
//! `keys import` take (the parties' private keys are made here, so this is not for production).

use std::path::Path;

use crate::core::directory::{Attributes, EnrollmentRequest};
use crate::core::identity::Identity;
use crate::error::Result;
use crate::ids::PartyKind;
use crate::local::dirstore::{self, EnrollOptions};
use crate::local::trust_root::{self, InitOptions, TrustRoot};

/// A party to enroll.
pub struct PartySpec<'a> {
    pub kind: PartyKind,
    pub name: &'a str,
    pub attributes: Attributes,
    /// A user with an X25519 age key (`keys gen --x25519`) instead of the post-quantum hybrid.
    pub x25519: bool,
}

/// Makes a trust root in `dir` and enrolls `parties`; returns their identities (in order) and
/// the admin identity.
pub fn provision(
    dir: &Path,
    parties: &[PartySpec<'_>],
    now: u64,
) -> Result<(Vec<Identity>, Identity)> {
    trust_root::init(dir, &InitOptions::default(), now)?;
    let root = TrustRoot::load(dir)?;
    let mut out = Vec::new();
    for p in parties {
        out.push(enroll(&root, p, now)?);
    }
    let admin = crate::local::identity_file::load(&dir.join("admin.id"), Some(PartyKind::Admin))?;
    Ok((out, admin))
}

/// Enrolls one more party into an existing root (writes its entry to `dir/directory`).
pub fn enroll(root: &TrustRoot, p: &PartySpec<'_>, now: u64) -> Result<Identity> {
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public())?;
    let mut identity = Identity::generate_with(p.kind, p.name, p.x25519)?;
    let req = EnrollmentRequest::verify(&identity.enrollment_request(now)?)?;
    let opts = EnrollOptions {
        attributes: p.attributes.clone(),
        rotate: false,
        validity_days: 30,
        rotation: None,
    };
    let issued = dirstore::issue(root, &directory, &req, &opts, now)?;
    dirstore::store_entry(&root.directory_dir(), &issued)?;
    root.bundle(issued.signed, issued.cert, None)?
        .import_into(&mut identity, now)?;
    Ok(identity)
}

/// A user with a clearance and roles.
pub fn user<'a>(name: &'a str, clearance: u8, roles: &[&str]) -> PartySpec<'a> {
    PartySpec {
        kind: PartyKind::User,
        name,
        attributes: Attributes {
            clearance,
            roles: roles.iter().map(|s| (*s).to_owned()).collect(),
            scopes: vec![],
        },
        x25519: false,
    }
}

/// A user whose age key is X25519 (an older age client's), not post-quantum.
pub fn legacy_user<'a>(name: &'a str, clearance: u8, roles: &[&str]) -> PartySpec<'a> {
    PartySpec {
        x25519: true,
        ..user(name, clearance, roles)
    }
}

/// An agent with scopes.
pub fn agent<'a>(name: &'a str, scopes: &[&str]) -> PartySpec<'a> {
    PartySpec {
        kind: PartyKind::Agent,
        name,
        attributes: Attributes {
            clearance: 0,
            roles: vec![],
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        },
        x25519: false,
    }
}

/// A source that serves `serves` (docs/sources.md).
pub fn source<'a>(name: &'a str, serves: &[&str]) -> PartySpec<'a> {
    PartySpec {
        kind: PartyKind::Source,
        ..agent(name, serves)
    }
}
