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

/// The highest directory serial seen per party. A relay that serves an older entry after a newer
/// one (a superseded, perhaps compromised key) is caught: nothing is sealed to it.
#[derive(Debug, Default)]
pub struct SerialPins(std::sync::Mutex<std::collections::HashMap<SpiffeId, u64>>);

impl SerialPins {
    /// Records `entry`'s serial, or refuses it if a newer one was seen before.
    pub fn check(&self, entry: &DirectoryEntry) -> Result<()> {
        let mut pins = self
            .0
            .lock()
            .map_err(|_| Error::internal("the serial pins are poisoned"))?;
        let seen = pins.entry(entry.id.clone()).or_insert(entry.serial);
        if entry.serial < *seen {
            return Err(Error::verification(format!(
                "the relay served {}'s directory entry serial {} after serial {}: a superseded key; refusing to seal to it",
                entry.id.short(),
                entry.serial,
                seen
            )));
        }
        *seen = entry.serial;
        Ok(())
    }
}

/// The identity's own SPIFFE ID, which must be of `kind`.
pub fn own_id(identity: &Identity, kind: PartyKind) -> Result<SpiffeId> {
    identity.require_kind(kind)?;
    identity
        .id
        .clone()
        .ok_or_else(|| Error::bad_input("this identity is not enrolled: import its bundle"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::directory::Attributes;
    use crate::core::sign::SigningKey;

    fn entry(serial: u64) -> DirectoryEntry {
        DirectoryEntry {
            id: SpiffeId::new("t", PartyKind::User, "alice").unwrap(),
            age_recipient: None,
            signing_key: SigningKey::generate().unwrap().public(),
            tls_spki_sha256: [0; 32],
            attributes: Attributes::default(),
            serial,
            not_before: 0,
            not_after: 10,
        }
    }

    /// Found by reading: the agent did not pin the highest serial it had seen, so a relay could
    /// replay a superseded entry and have data sealed to a rotated-away key.
    #[test]
    fn an_older_entry_after_a_newer_one_is_refused() {
        let pins = SerialPins::default();
        pins.check(&entry(1)).unwrap();
        pins.check(&entry(2)).unwrap();
        pins.check(&entry(2)).unwrap();
        let err = pins.check(&entry(1)).unwrap_err();
        assert!(err.message().contains("superseded"), "{err}");
    }
}
