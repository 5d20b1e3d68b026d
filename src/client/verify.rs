//! What a client checks before it trusts anything the relay hands over: directory entries
//! against the authority pinned in the caller's identity, grants against their user's key.

use crate::core::directory::DirectoryEntry;
use crate::core::grant::Grant;
use crate::core::identity::Identity;
use crate::core::sign::{PublicKey, StatementType};
use crate::core::wire::{GrantView, WireSigned};
use crate::error::{Error, Result};
use crate::ids::{PartyKind, SpiffeId};

/// An open grant, verified: the grant (signed by its user) and the user's entry (signed by the
/// authority).
#[derive(Clone, Debug)]
pub struct OpenGrant {
    pub grant: Grant,
    pub user_entry: DirectoryEntry,
}

/// The authority key this identity pinned at import.
pub fn authority(identity: &Identity) -> Result<PublicKey> {
    identity
        .authority
        .as_ref()
        .map(|a| a.key)
        .ok_or_else(|| Error::bad_input("this identity trusts no authority yet: import its bundle"))
}

/// Verifies an entry from the relay against the pinned authority.
pub fn verified_entry(
    w: &WireSigned,
    authority: &PublicKey,
    expect: Option<&SpiffeId>,
) -> Result<DirectoryEntry> {
    let entry = DirectoryEntry::verify(&w.to_signed(StatementType::DirectoryEntry)?, authority)
        .map_err(|e| e.context("the relay served a directory entry that does not verify"))?;
    if let Some(id) = expect {
        if entry.id != *id {
            return Err(Error::verification(format!(
                "the relay served the entry of {} where {} was expected",
                entry.id.short(),
                id.short()
            )));
        }
    }
    Ok(entry)
}

/// A grant view verified: the requester's entry against the authority, the grant against the
/// requester's key, and the grant naming that requester.
pub fn verified_grant(view: &GrantView, authority: &PublicKey) -> Result<OpenGrant> {
    let user_entry = verified_entry(&view.user_entry, authority, None)?;
    let grant = Grant::verify(
        &view.grant.to_signed(StatementType::Grant)?,
        &user_entry.signing_key,
    )?;
    if grant.user != user_entry.id {
        return Err(Error::verification(
            "the relay served a grant that does not match its requester",
        ));
    }
    Ok(OpenGrant { grant, user_entry })
}

/// The identity's own SPIFFE ID, which must be of `kind`.
pub fn own_id(identity: &Identity, kind: PartyKind) -> Result<SpiffeId> {
    identity.require_kind(kind)?;
    identity
        .id
        .clone()
        .ok_or_else(|| Error::bad_input("this identity is not enrolled: import its bundle"))
}
