//! The person's watch over the directory log ([`Watcher`]): each statement under their name is
//! judged as their own or not, and what their keys did not make is an [`Alert`].

use super::{change_of, Change, DirectoryLeaf, ResetApproval};
use crate::core::directory::{DirectoryEntry, Revocation};
use crate::core::sign::{PublicKey, StatementType};
use crate::error::{Error, Result};
use crate::ids::SpiffeId;

/// A statement under a person's name that their own keys did not make.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    /// The leaf in the directory log.
    pub index: u64,
    pub serial: u64,
    /// "reset" (a key the person's key did not sign), or "shortened wait" (an admin's approval).
    pub what: String,
    /// The admin whose authority enrolled it (or who approved).
    pub by: String,
    pub logged_at: u64,
    /// The key's safety number (docs/formats.md), empty for an approval.
    pub safety_number: String,
    /// When the key may be used (resets only; 0 otherwise).
    pub usable_from: u64,
}

/// Reads the directory log leaf by leaf for one person and finds what their keys did not make.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Watcher {
    /// Signing keys of the person's own identities (base64).
    pub own_keys: Vec<String>,
    /// Whether an entry with one of them was seen: entries before it are history.
    pub seen_own: bool,
    /// Whether the newest entry under the name is the person's own.
    pub current_is_own: bool,
    /// The highest revoked serial under the name: a key it revoked vouches for nothing.
    #[serde(default)]
    pub revoked_through: u64,
    /// The rest of the person's own keys ([`Watcher::material`]: age recipient and TLS key)
    /// of the identities it was run with and of the rotations they signed: an entry with the
    /// person's signing key but another age or TLS key is not theirs (the authority kept the
    /// signing key and swapped the key envelopes are sealed to). Empty in a state saved before
    /// it was recorded: then the signing key alone decides, until the next run adds it.
    #[serde(default)]
    pub own_material: Vec<String>,
    /// Entries taken as the person's own only because one of their keys signed the rotation to
    /// them (this watch does not hold their keys): should that key be revoked later, they are
    /// not (a thief's rotation with a stolen key), and the person is told.
    #[serde(default)]
    pub vouched: Vec<Vouched>,
    /// The SHA-256 (hex) of the keys ([`Watcher::material`]) of every entry under the name
    /// seen so far (64 bytes each, however long the keys): a reset that brings back keys an
    /// earlier serial had (an old device's, perhaps leaked or revoked) is never the person's
    /// own, though their identity once held those keys. Empty in a state saved before it was
    /// recorded (entries read before then are not in it).
    #[serde(default)]
    pub seen_material: Vec<String>,
}

/// An entry the person's earlier key vouched for ([`Watcher::vouched`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vouched {
    pub serial: u64,
    /// The serial whose key signed the rotation (or that it renews).
    pub from: u64,
    pub logged_at: u64,
    pub by: String,
    pub safety_number: String,
    /// Its keys ([`Watcher::material`]): once the person's own identity holds them, it is
    /// theirs whatever becomes of the key that vouched for it.
    #[serde(default)]
    pub material: String,
}

/// The previous entry of the watched party, kept between leaves (not saved: the watcher
/// state saves what judging needs).
#[derive(Clone, Debug, Default)]
pub struct Previous(pub Option<(DirectoryEntry, bool)>);

impl Watcher {
    pub fn new(own: &PublicKey) -> Self {
        Watcher {
            own_keys: vec![own.to_base64()],
            ..Watcher::default()
        }
    }

    fn is_own(&self, key: &PublicKey) -> bool {
        self.own_keys.contains(&key.to_base64())
    }

    /// An identity's keys together (signing, age, TLS), as [`Watcher::own_material`] holds
    /// them: an entry is the person's only with all three of one of their identities.
    pub fn material(
        key: &PublicKey,
        age_recipient: Option<&str>,
        tls_spki_sha256: &[u8; 32],
    ) -> String {
        format!(
            "{}|{}|{}",
            key.to_base64(),
            age_recipient.unwrap_or(""),
            crate::ids::hex(tls_spki_sha256)
        )
    }

    fn material_of(e: &DirectoryEntry) -> String {
        Self::material(
            &e.signing_key,
            e.age_recipient.as_deref(),
            &e.tls_spki_sha256,
        )
    }

    /// Counts `key` and `material` (an identity's keys: [`Watcher::material`]) as the
    /// person's own; an entry with those keys is no longer only vouched for.
    pub fn add_own(&mut self, key: &PublicKey, material: String) {
        if !self.is_own(key) {
            self.own_keys.push(key.to_base64());
        }
        self.vouched.retain(|v| v.material != material);
        if !self.own_material.contains(&material) {
            self.own_material.push(material);
        }
    }

    /// Whether every key of `e` is one of the person's own, of one identity of theirs.
    fn is_own_entry(&self, e: &DirectoryEntry) -> bool {
        if self.own_material.is_empty() {
            self.is_own(&e.signing_key)
        } else {
            self.own_material.contains(&Self::material_of(e))
        }
    }

    /// After a revocation: the entries whose rotation a now revoked key signed (or that renew
    /// one) are no longer the person's. If the newest entry is one of them, the alert (a
    /// relay judges it a reset, waiting from when it was logged).
    fn unvouched(&mut self, index: u64, previous: &mut Previous, wait: u64) -> Option<Alert> {
        let mut tainted: Vec<Vouched> = Vec::new();
        for v in &self.vouched {
            if v.from <= self.revoked_through || tainted.iter().any(|t| t.serial == v.from) {
                tainted.push(v.clone());
            }
        }
        self.vouched.retain(|v| !tainted.contains(v));
        let current = previous.0.as_mut()?;
        // An entry the revocation itself ends is in force for nobody: no alert for it.
        let v = tainted
            .into_iter()
            .find(|v| v.serial == current.0.serial && v.serial > self.revoked_through)?;
        current.1 = false;
        self.current_is_own = false;
        Some(Alert {
            index,
            serial: v.serial,
            what: "rotation signed by a key now revoked".into(),
            by: v.by,
            logged_at: v.logged_at,
            safety_number: v.safety_number,
            usable_from: v.logged_at.saturating_add(wait),
        })
    }

    /// Judges leaf `index` (`authority` checks what it holds): an alert, or `None` when it is
    /// not about `id` or is the person's own.
    pub fn observe(
        &mut self,
        id: &SpiffeId,
        index: u64,
        leaf: &DirectoryLeaf,
        authority: &PublicKey,
        previous: &mut Previous,
        wait: u64,
    ) -> Result<Option<Alert>> {
        let bad = |e: Error| e.context(format!("directory log leaf {index}"));
        match leaf.statement.ty {
            StatementType::DirectoryEntry => {
                // Other people's entries are skipped unread beyond their id: the checkpoint's
                // root, checked over every leaf, is what makes the log's content binding.
                if DirectoryEntry::decode(&leaf.statement.statement)
                    .map_err(bad)?
                    .id
                    != *id
                {
                    return Ok(None);
                }
                let e = DirectoryEntry::verify(&leaf.statement, authority).map_err(bad)?;
                let change = match change_of(&e, previous.0.as_ref().map(|(p, _)| p)) {
                    // A rotation vouched for by a revoked (perhaps leaked) key is a reset.
                    Change::Rotation | Change::Renewal
                        if previous
                            .0
                            .as_ref()
                            .is_some_and(|(p, _)| p.serial <= self.revoked_through) =>
                    {
                        Change::Reset
                    }
                    c => c,
                };
                let prev_own = previous.0.as_ref().is_some_and(|(_, own)| *own);
                let material = Self::material_of(&e);
                // A second entry for the serial before it, which the relay never puts in
                // force: judged by its keys alone, and not what the next entry is judged
                // against. (A lower serial logged late is another matter: the relay may put
                // it in force, so it is judged, and followed, as any entry.)
                let stale = previous
                    .0
                    .as_ref()
                    .is_some_and(|(p, _)| e.serial == p.serial);
                let seen = crate::ids::hex(crate::core::directory::sha256(material.as_bytes()));
                let returning = change == Change::Reset && self.seen_material.contains(&seen);
                let by_keys = self.is_own_entry(&e) && !returning;
                let own = by_keys
                    || (!stale && prev_own && matches!(change, Change::Rotation | Change::Renewal));
                if !self.seen_material.contains(&seen) {
                    self.seen_material.push(seen);
                }
                if own && !by_keys {
                    self.vouched.push(Vouched {
                        serial: e.serial,
                        from: previous.0.as_ref().map_or(0, |(p, _)| p.serial),
                        logged_at: leaf.logged_at,
                        by: e.enrolled_by.clone(),
                        safety_number: crate::core::safety::safety_number(&e),
                        material: Self::material_of(&e),
                    });
                }
                let alert = (!own && self.seen_own).then(|| Alert {
                    index,
                    serial: e.serial,
                    what: change.as_str().to_owned(),
                    by: e.enrolled_by.clone(),
                    logged_at: leaf.logged_at,
                    safety_number: crate::core::safety::safety_number(&e),
                    usable_from: if change == Change::Reset {
                        leaf.logged_at.saturating_add(wait)
                    } else {
                        leaf.logged_at
                    },
                });
                self.seen_own |= own;
                if !stale {
                    self.current_is_own = own;
                    previous.0 = Some((e, own));
                }
                Ok(alert)
            }
            StatementType::ResetApproval => {
                let a = ResetApproval::decode(&leaf.statement.statement).map_err(bad)?;
                if a.id != *id || !self.seen_own {
                    return Ok(None);
                }
                Ok(Some(Alert {
                    index,
                    serial: a.serial,
                    what: "shortened wait".into(),
                    by: a.approver.name().to_owned(),
                    logged_at: leaf.logged_at,
                    safety_number: String::new(),
                    usable_from: leaf.logged_at,
                }))
            }
            StatementType::Revocation => {
                if Revocation::decode(&leaf.statement.statement)
                    .map_err(bad)?
                    .id
                    == *id
                {
                    let r = Revocation::verify(&leaf.statement, authority).map_err(bad)?;
                    self.revoked_through = self.revoked_through.max(r.serial);
                    return Ok(self.unvouched(index, previous, wait));
                }
                Ok(None)
            }
            other => Err(bad(Error::verification(format!(
                "a {other} statement is not a directory statement"
            )))),
        }
    }
}
