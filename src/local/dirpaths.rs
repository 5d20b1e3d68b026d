//! Where the admin's directory keeps each signed statement: `users/<name>.<serial>.entry` (and
//! `agents/`, `admins/`, `relays/`) and `revocations/<kind>-<name>.<serial>.revocation`. The
//! directory store ([`super::dirstore`]) reads and writes them; the trust root writes the
//! admin's own entry there.

use std::path::{Path, PathBuf};

use crate::ids::{PartyKind, SpiffeId};

fn kind_dir(kind: PartyKind) -> &'static str {
    match kind {
        PartyKind::User => "users",
        PartyKind::Agent => "agents",
        PartyKind::Admin => "admins",
        PartyKind::Relay => "relays",
        PartyKind::Source => "sources",
    }
}

pub fn entry_path(dir: &Path, id: &SpiffeId, serial: u64) -> PathBuf {
    dir.join(kind_dir(id.kind()))
        .join(format!("{}.{serial}.entry", id.name()))
}

pub fn revocation_path(dir: &Path, id: &SpiffeId, serial: u64) -> PathBuf {
    dir.join("revocations")
        .join(format!("{}-{}.{serial}.revocation", id.kind(), id.name()))
}
