//! Directory requests: an admin's push of signed entries and revocations, and anyone's lookup
//! of a party's latest signed entry.

use crate::core::directory::DirectoryEntry;
use crate::core::policy::Action;
use crate::core::sign::StatementType;
use crate::core::store::{StoredSigned, WriteOp};
use crate::core::wire::{CloseCode, ErrorCode, Reply, WireSigned};
use crate::error::Error;
use crate::ids::{PartyKind, SpiffeId};
use crate::net::Peer;

use crate::server::services::effects::Cx;
use crate::server::services::events;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

/// Verifies every statement against the authority, commits them with a `directory.push`
/// event, and only then puts the new directory in force.
pub async fn push(
    relay: &Relay,
    peer: &Peer,
    entries: Vec<WireSigned>,
    revocations: Vec<WireSigned>,
    cx: &Cx,
) -> Handled {
    let now = cx.now;
    // An admin from a trust root made before admins were directory entries bootstraps itself:
    // its push is accepted when it carries its own authority-signed entry, bound to the TLS key
    // it connected with (and the relay has never known it: a revoked admin cannot).
    if !bootstraps_itself(relay, peer, &entries)? {
        relay
            .authorize_relay(cx, peer, Action::PushDirectory)
            .await?;
    }
    let _one_at_a_time = relay.push_lock.lock().await;
    let mut next = relay
        .directory
        .read()
        .map_err(|_| Refusal::internal())?
        .clone();
    let mut rows_e = Vec::new();
    let mut rows_r = Vec::new();
    let mut names = Vec::new();
    // Each party's entries oldest first, whatever order they came in; each must follow the
    // one before (`Directory::out_of_order`).
    let mut signed_entries = Vec::with_capacity(entries.len());
    for w in &entries {
        let signed = w.to_signed(StatementType::DirectoryEntry)?;
        let e = DirectoryEntry::verify(&signed, &relay.authority)?;
        signed_entries.push((e, w, signed));
    }
    signed_entries.sort_by(|a, b| (&a.0.id, a.0.serial).cmp(&(&b.0.id, b.0.serial)));
    for (e, w, signed) in signed_entries {
        if let Some(why) = next.out_of_order(&e) {
            return Err(Refusal::new(ErrorCode::Conflict, why));
        }
        let e = next.insert_entry(signed, &relay.authority)?;
        if e.id.trust_domain() != relay.trust_domain {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("{} is not in this relay's trust domain", e.id),
            ));
        }
        names.push(format!("{}#{}", e.id.short(), e.serial));
        rows_e.push((e.id.to_string(), e.serial, stored(w)));
    }
    let mut revoked = Vec::new();
    for w in &revocations {
        let signed = w.to_signed(StatementType::Revocation)?;
        let r = next.insert_revocation(&signed, &relay.authority)?;
        revoked.push(r.id.clone());
        names.push(format!("revoke {}#{}", r.id.short(), r.serial));
        rows_r.push((r.id.to_string(), r.serial, stored(w)));
    }
    relay
        .commit(WriteOp::PutDirectory {
            entries: rows_e,
            revocations: rows_r,
            event: events::directory_push(now, &peer.id, &names),
            log_all: false,
            conflicts_refused: true,
        })
        .await?;
    // The store gave each new statement its place in the directory log.
    crate::server::services::loading::catch_up(&mut next, relay.store.as_ref(), &relay.authority)
        .map_err(Refusal::from)?;
    // Only after the commit is durable does the new directory take effect; a revoked party's
    // open connections close now (its next request would be refused anyway).
    *relay.directory.write().map_err(|_| Refusal::internal())? = next;
    for r in &revoked {
        relay.connections.close_all(r, CloseCode::Revoked);
    }
    Ok(Reply::Done)
}

fn bootstraps_itself(relay: &Relay, peer: &Peer, entries: &[WireSigned]) -> Result<bool, Refusal> {
    if peer.id.kind() != PartyKind::Admin || peer.id.trust_domain() != relay.trust_domain {
        return Ok(false);
    }
    let known = relay
        .directory
        .read()
        .map_err(|_| Refusal::internal())?
        .latest(&peer.id)
        .is_some();
    Ok(!known
        && entries.iter().any(|w| {
            w.to_signed(StatementType::DirectoryEntry)
                .and_then(|s| DirectoryEntry::verify(&s, &relay.authority))
                .is_ok_and(|e| e.id == peer.id && e.tls_spki_sha256 == peer.spki_sha256)
        }))
}

fn stored(w: &WireSigned) -> StoredSigned {
    StoredSigned {
        statement: w.statement.clone(),
        signature: w.signature.clone(),
    }
}

/// The latest signed entry of a party (clients verify it against their pinned authority).
pub async fn get_entry(relay: &Relay, peer: &Peer, id: &str, cx: &Cx) -> Handled {
    relay.authorize_relay(cx, peer, Action::GetEntry).await?;
    let id: SpiffeId = id
        .parse()
        .map_err(|e: Error| Refusal::new(ErrorCode::BadRequest, e.message()))?;
    Ok(Reply::Entry {
        entry: relay.latest_signed(&id)?,
    })
}

/// Every signed entry of a party, newest first (clients recognise a grant or statement a party
/// signed before it rotated its key).
pub async fn get_entries(relay: &Relay, peer: &Peer, id: &str, cx: &Cx) -> Handled {
    relay.authorize_relay(cx, peer, Action::GetEntry).await?;
    let id: SpiffeId = id
        .parse()
        .map_err(|e: Error| Refusal::new(ErrorCode::BadRequest, e.message()))?;
    let dir = relay.directory.read().map_err(|_| Refusal::internal())?;
    // Revoked serials are not offered: a client must not recognise what a revoked (perhaps
    // compromised) key signed as the party's own.
    let entries: Vec<WireSigned> = dir
        .history(&id)
        .filter(|(e, _)| !dir.is_revoked(&id, e.serial))
        .take(crate::core::wire::MAX_HISTORY)
        .map(|(_, s)| WireSigned::from_signed(s))
        .collect();
    if entries.is_empty() {
        return Err(Refusal::not_found("directory entry"));
    }
    Ok(Reply::Entries { entries })
}
