//! Tests of the directory log's leaves, key continuity and the watcher.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::core::directory::{Attributes, Revocation};
use crate::core::tlog::Tree;

fn alice(key: &SigningKey, serial: u64, rotation: Option<Signed>) -> DirectoryEntry {
    DirectoryEntry {
        id: SpiffeId::new("example.org", PartyKind::User, "alice").unwrap(),
        age_recipient: Some(age::x25519::Identity::generate().to_public().to_string()),
        signing_key: key.public(),
        tls_spki_sha256: [serial as u8; 32],
        attributes: Attributes::default(),
        serial,
        not_before: 0,
        not_after: 1 << 40,
        enrolled_by: "root-admin".into(),
        rotation,
    }
}

fn rotated(prev: &DirectoryEntry, prev_key: &SigningKey, new_key: &SigningKey) -> DirectoryEntry {
    let mut e = alice(new_key, prev.serial + 1, None);
    let consent = KeyRotation {
        id: e.id.clone(),
        from_serial: prev.serial,
        signing_key: e.signing_key,
        tls_spki_sha256: e.tls_spki_sha256,
        age_recipient: e.age_recipient.clone(),
        created: 1,
    }
    .sign(prev_key);
    e.rotation = Some(consent);
    e
}

/// Serial 1 with `k1`, its rotation to `k2` (signed by `k1`), and that key's renewal.
fn rotated_then_renewed(k1: &SigningKey, k2: &SigningKey) -> [DirectoryEntry; 3] {
    let e1 = alice(k1, 1, None);
    let e2 = rotated(&e1, k1, k2);
    let mut renewal = e2.clone();
    renewal.serial = 3;
    renewal.rotation = None;
    [e1, e2, renewal]
}

/// `entries` signed by `authority` as leaves logged one a second from time 100.
fn logged_leaves(authority: &SigningKey, entries: &[&DirectoryEntry]) -> Vec<DirectoryLeaf> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| DirectoryLeaf {
            logged_at: 100 + i as u64,
            statement: e.sign(authority).unwrap(),
        })
        .collect()
}

/// The alerts `w` raises reading `leaves` for `id` from the first.
fn watched(
    w: &mut Watcher,
    id: &SpiffeId,
    leaves: &[DirectoryLeaf],
    authority: &SigningKey,
) -> Vec<Alert> {
    let mut prev = Previous::default();
    leaves
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            w.observe(id, i as u64, l, &authority.public(), &mut prev, 86400)
                .unwrap()
        })
        .collect()
}

#[test]
fn a_leaf_round_trips_and_refuses_other_statements_and_junk() {
    let authority = SigningKey::generate().unwrap();
    let k = SigningKey::generate().unwrap();
    let signed = alice(&k, 1, None).sign(&authority).unwrap();
    let leaf = DirectoryLeaf {
        logged_at: 42,
        statement: signed,
    };
    let bytes = leaf.encode();
    assert_eq!(DirectoryLeaf::decode(&bytes).unwrap(), leaf);
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(DirectoryLeaf::decode(&longer).is_err());
    assert!(DirectoryLeaf::decode(&bytes[..bytes.len() - 1]).is_err());
    let grant_like = DirectoryLeaf {
        logged_at: 1,
        statement: Signed::sign(
            StatementType::Grant,
            statement_writer(StatementType::Grant).finish(),
            &k,
        ),
    };
    assert!(DirectoryLeaf::decode(&grant_like.encode()).is_err());
}

#[test]
fn an_entry_with_a_rotation_round_trips_and_legacy_entries_still_decode() {
    let authority = SigningKey::generate().unwrap();
    let (k1, k2) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let e1 = alice(&k1, 1, None);
    let e2 = rotated(&e1, &k1, &k2);
    let s = e2.sign(&authority).unwrap();
    assert_eq!(DirectoryEntry::verify(&s, &authority.public()).unwrap(), e2);
    // An entry signed before enrolled_by and rotation existed ends after not_after, and such an
    // entry has that one encoding (the empty fields written out are refused).
    let mut legacy = e1.clone();
    legacy.enrolled_by.clear();
    let old_form = legacy.encode();
    assert_eq!(DirectoryEntry::decode(&old_form).unwrap(), legacy);
    let mut padded = old_form.clone();
    padded.extend_from_slice(&[0, 0, 0, 0, 0]); // an empty name, no rotation
    assert!(DirectoryEntry::decode(&padded).is_err());
}

#[test]
fn rotation_renewal_and_reset_are_told_apart() {
    let (k1, k2, k3) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let e1 = alice(&k1, 1, None);
    assert_eq!(change_of(&e1, None), Change::First);
    let e2 = rotated(&e1, &k1, &k2);
    assert_eq!(change_of(&e2, Some(&e1)), Change::Rotation);
    let mut renewal = e1.clone();
    renewal.serial = 2;
    assert_eq!(change_of(&renewal, Some(&e1)), Change::Renewal);
    // A new key the old one did not sign; and a consent signed by the wrong key, or naming
    // other keys, is no consent.
    assert_eq!(change_of(&alice(&k3, 2, None), Some(&e1)), Change::Reset);
    let forged = rotated(&e1, &k3, &k2);
    assert_eq!(change_of(&forged, Some(&e1)), Change::Reset);
    let mut swapped = rotated(&e1, &k1, &k2);
    swapped.age_recipient = Some(age::x25519::Identity::generate().to_public().to_string());
    assert_eq!(change_of(&swapped, Some(&e1)), Change::Reset);
    assert_eq!(change_of(&alice(&k3, 2, None), None), Change::Reset);
}

#[test]
fn a_reset_waits_and_a_rotation_of_a_waiting_key_waits_with_it() {
    let (k1, k2, k3) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let e1 = alice(&k1, 1, None);
    let reset = alice(&k2, 2, None);
    let then = rotated(&reset, &k2, &k3);
    let logged = |entry: &DirectoryEntry, index, at| LoggedEntry {
        entry: entry.clone(),
        index,
        logged_at: at,
    };
    let none = BTreeMap::new();
    let chain = [logged(&e1, 0, 100), logged(&reset, 5, 1000)];
    assert_eq!(
        usable_from(&chain, 86400, &none, None, 2000).unwrap(),
        (87400, Change::Reset)
    );
    // The reset's key rotated at once: still waits for the reset.
    let chain3 = [chain[0].clone(), chain[1].clone(), logged(&then, 6, 1001)];
    assert_eq!(
        usable_from(&chain3, 86400, &none, None, 2000).unwrap().0,
        87400
    );
    // Without the entries before it, a recent entry counts as a reset; an old one does not.
    assert_eq!(
        usable_from(&chain3[2..], 86400, &none, None, 2000)
            .unwrap()
            .0,
        1001 + 86400
    );
    assert_eq!(
        usable_from(&chain3[2..], 86400, &none, None, 90000)
            .unwrap()
            .0,
        1001
    );
    // A second admin's approval shortens it, never lengthens it.
    let approved = BTreeMap::from([(2, 60)]);
    assert_eq!(
        usable_from(&chain, 86400, &approved, None, 2000).unwrap().0,
        1060
    );
    let longer = BTreeMap::from([(2, 10 * 86400)]);
    assert_eq!(
        usable_from(&chain, 86400, &longer, None, 2000).unwrap().0,
        87400
    );
    // Out of order: refused.
    let backwards = [logged(&e1, 5, 100), logged(&reset, 4, 1000)];
    assert!(usable_from(&backwards, 86400, &none, None, 2000).is_err());
    let backdated = [logged(&e1, 0, 1000), logged(&reset, 4, 999)];
    assert!(usable_from(&backdated, 86400, &none, None, 2000).is_err());
}

#[test]
fn the_frontier_gives_the_trees_root_at_every_size() {
    let mut tree = Tree::new();
    let mut f = Frontier::default();
    assert_eq!(f.root(), tree.root(0).unwrap());
    for i in 0u32..70 {
        let h = leaf_hash(&i.to_be_bytes());
        tree.append(h);
        f.append(h);
        assert_eq!(
            f.root(),
            tree.root(u64::from(i) + 1).unwrap(),
            "size {}",
            i + 1
        );
        let again = Frontier::new(f.size, f.hashes.clone()).unwrap();
        assert_eq!(again, f);
    }
    assert!(Frontier::new(5, vec![[0; 32]]).is_err());
}

#[test]
fn the_watcher_alerts_on_keys_the_person_did_not_make_and_not_on_their_own() {
    let authority = SigningKey::generate().unwrap();
    let (k1, k2, rogue) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let e1 = alice(&k1, 1, None);
    let id = e1.id.clone();
    let mut bob = alice(&rogue, 1, None);
    bob.id = SpiffeId::new("example.org", PartyKind::User, "bob").unwrap();
    let e2 = rotated(&e1, &k1, &k2);
    let mut renewal = e2.clone();
    renewal.serial = 3;
    renewal.rotation = None;
    let attack = alice(&rogue, 4, None);
    let leaves = logged_leaves(&authority, &[&e1, &bob, &e2, &renewal, &attack]);
    // Watched from the first identity (k1): its rotation to k2 and the renewal are its own.
    let mut w = Watcher::new(&k1.public());
    let alerts = watched(&mut w, &id, &leaves, &authority);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].serial, 4);
    assert_eq!(alerts[0].what, "reset");
    assert_eq!(alerts[0].by, "root-admin");
    assert_eq!(alerts[0].usable_from, 104 + 86400);
    assert!(!w.current_is_own);
    // Watched from the rotated identity (k2) from scratch: serial 1 is history, not an alert.
    let mut w2 = Watcher::new(&k2.public());
    let mut prev2 = Previous::default();
    let n = leaves
        .iter()
        .enumerate()
        .filter(|(i, l)| {
            w2.observe(&id, *i as u64, l, &authority.public(), &mut prev2, 86400)
                .unwrap()
                .is_some()
        })
        .count();
    assert_eq!(n, 1);
    // A leaf the authority did not sign is an error, not silence.
    let mut forged = leaves[4].clone();
    forged.statement.signature[0] ^= 1;
    let mut w3 = Watcher::new(&k1.public());
    assert!(w3
        .observe(
            &id,
            4,
            &forged,
            &authority.public(),
            &mut Previous::default(),
            1
        )
        .is_err());
}

/// Helper-found (the trust root): the watcher judged an entry the person's own by its signing
/// key alone, so an authority that kept the person's signing key but put in its own age and
/// TLS keys raised no alert, while every agent sealed to the new age key after the reset's
/// wait. Every key of the entry counts now; the person's own rotation (signed by their key) and
/// renewal still raise none.
#[test]
fn a_swapped_age_or_tls_key_under_the_persons_signing_key_is_an_alert() {
    let (authority, k1, k2) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let [e1, e2, renewal] = rotated_then_renewed(&k1, &k2);
    let id = e1.id.clone();
    // Serial 4: the person's signing key, the authority's age key.
    let mut swapped_age = renewal.clone();
    swapped_age.serial = 4;
    swapped_age.age_recipient = Some(age::x25519::Identity::generate().to_public().to_string());
    // Serial 5: back to the person's age key, the authority's TLS key.
    let mut swapped_tls = renewal.clone();
    swapped_tls.serial = 5;
    swapped_tls.tls_spki_sha256 = [0xee; 32];
    // Serial 6: the current signing key with the first identity's age and TLS keys (each one
    // of the person's, but not together).
    let mut mixed = renewal.clone();
    mixed.serial = 6;
    mixed.age_recipient = e1.age_recipient.clone();
    mixed.tls_spki_sha256 = e1.tls_spki_sha256;
    let leaves = logged_leaves(
        &authority,
        &[&e1, &e2, &renewal, &swapped_age, &swapped_tls, &mixed],
    );
    // The watch knows both of the person's identities, so only the age and TLS keys can tell
    // these entries from theirs.
    let mine = |e: &DirectoryEntry| {
        Watcher::material(
            &e.signing_key,
            e.age_recipient.as_deref(),
            &e.tls_spki_sha256,
        )
    };
    let mut w = Watcher::new(&k1.public());
    w.add_own(&k1.public(), mine(&e1));
    w.add_own(&k2.public(), mine(&e2));
    let alerts = watched(&mut w, &id, &leaves, &authority);
    let serials: Vec<u64> = alerts.iter().map(|a| a.serial).collect();
    assert_eq!(serials, [4, 5, 6], "{alerts:?}");
    assert!(alerts.iter().all(|a| a.what == "reset"), "{alerts:?}");
    assert!(!w.current_is_own);
}

/// Helper-found (the trust root): a rotation signed with a stolen key is taken as the
/// person's own (a rotation their key signed raises no alert), and when that key was revoked
/// afterwards the relay judged the rotation a reset while the person's watch said nothing:
/// they believed the revocation ended it. The watch now re-judges what a now revoked key
/// vouched for and alerts on the newest entry; a rotation to keys this watch knows as the
/// person's (their own `keys rotate`) is not re-judged.
#[test]
fn a_rotation_signed_by_a_key_revoked_afterwards_is_an_alert() {
    let (authority, k1, k2) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let [e1, e2, renewal] = rotated_then_renewed(&k1, &k2);
    let id = e1.id.clone();
    let revocation = Revocation {
        id: id.clone(),
        serial: 1,
        revoked_at: 200,
        reason: "key stolen".into(),
    };
    let mut leaves = logged_leaves(&authority, &[&e1, &e2, &renewal]);
    leaves.push(DirectoryLeaf {
        logged_at: 103,
        statement: revocation.sign(&authority).unwrap(),
    });
    let mine = |e: &DirectoryEntry| {
        Watcher::material(
            &e.signing_key,
            e.age_recipient.as_deref(),
            &e.tls_spki_sha256,
        )
    };
    // The thief's rotation (k2 is not the person's): an alert on the revocation, for serial 3.
    let mut w = Watcher::new(&k1.public());
    w.add_own(&k1.public(), mine(&e1));
    let alerts = watched(&mut w, &id, &leaves, &authority);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].serial, 3);
    assert_eq!(alerts[0].index, 3);
    assert_eq!(alerts[0].what, "rotation signed by a key now revoked");
    assert_eq!(alerts[0].usable_from, 102 + 86400);
    assert!(!w.current_is_own);
    // The person's own rotation, watched by the new identity (its keys are known): no alert.
    let mut w = Watcher::new(&k1.public());
    w.add_own(&k1.public(), mine(&e1));
    w.add_own(&k2.public(), mine(&e2));
    assert!(watched(&mut w, &id, &leaves, &authority).is_empty());
    assert!(w.current_is_own);
}

/// The agent's mirror of the whole log (`Mirror`): as of a checkpoint's size, a served entry
/// must be its party's newest, the one in force for its serial (the first logged), and not
/// revoked; what was logged after that size is not held against it.
#[test]
fn the_mirror_judges_a_served_entry_as_of_the_checkpoint_it_was_proved_under() {
    let (authority, k1, k2) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let [e1, e2, _] = rotated_then_renewed(&k1, &k2);
    let mut other2 = e2.clone();
    other2.tls_spki_sha256 = [9; 32];
    let revocation = Revocation {
        id: e1.id.clone(),
        serial: 2,
        revoked_at: 200,
        reason: "lost".into(),
    };
    // Leaves: e1, e2, a second entry for serial 2, the revocation of 2, and one unsigned junk.
    let mut leaves = logged_leaves(&authority, &[&e1, &e2, &other2]);
    leaves.push(DirectoryLeaf {
        logged_at: 103,
        statement: revocation.sign(&authority).unwrap(),
    });
    let stranger = SigningKey::generate().unwrap();
    let mut forged = e2.clone();
    forged.serial = 9;
    leaves.push(DirectoryLeaf {
        logged_at: 104,
        statement: forged.sign(&stranger).unwrap(),
    });
    let mut m = Mirror::default();
    for (i, l) in leaves.iter().enumerate() {
        m.observe(i as u64, l, &authority.public());
    }
    let signed = |e: &DirectoryEntry| e.sign(&authority).unwrap();
    // Under a checkpoint of 1 leaf, serial 1 is the newest: taken.
    m.check(&e1, &signed(&e1), 1).unwrap();
    // Under 2 leaves, serial 1 was left out of date.
    let e = m.check(&e1, &signed(&e1), 2).unwrap_err();
    assert!(e.message().contains("newer than the serial 1"), "{e}");
    m.check(&e2, &signed(&e2), 2).unwrap();
    // The second entry for serial 2 is never the one in force.
    let e = m.check(&other2, &signed(&other2), 3).unwrap_err();
    assert!(e.message().contains("is another one (leaf 1)"), "{e}");
    m.check(&e2, &signed(&e2), 3).unwrap();
    // Revoked under 4 leaves; the forged serial 9 (not the authority's) changes nothing.
    let e = m.check(&e2, &signed(&e2), 5).unwrap_err();
    assert!(
        e.message().contains("refusing to seal to a revoked key"),
        "{e}"
    );
    assert_eq!(m.revoked_through(&e1.id, 5), Some(2));
    assert_eq!(m.revoked_through(&e1.id, 3), None);
}

/// A rotation a revoked key signed is a reset; the key that reset rotated to at once (signed by
/// its own, unrevoked key) waits with it, as the rotation of any waiting reset does: otherwise
/// whoever held a leaked key would rotate once more and skip the wait.
#[test]
fn what_rotates_from_a_rotation_a_revoked_key_signed_waits_with_it() {
    let (k1, k2, k3) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let e1 = alice(&k1, 1, None);
    let e2 = rotated(&e1, &k1, &k2);
    let e3 = rotated(&e2, &k2, &k3);
    let logged = |entry: &DirectoryEntry, index, at| LoggedEntry {
        entry: entry.clone(),
        index,
        logged_at: at,
    };
    let chain = [
        logged(&e1, 0, 100),
        logged(&e2, 3, 1000),
        logged(&e3, 4, 1001),
    ];
    let none = BTreeMap::new();
    // Nothing revoked: rotations, in force when logged.
    assert_eq!(
        usable_from(&chain, 86400, &none, None, 2000).unwrap(),
        (1001, Change::Rotation)
    );
    // Serial 1 revoked: serial 2 is a reset, and serial 3 waits for it.
    assert_eq!(
        usable_from(&chain[..2], 86400, &none, Some(1), 2000).unwrap(),
        (87400, Change::Reset)
    );
    assert_eq!(
        usable_from(&chain, 86400, &none, Some(1), 2000).unwrap(),
        (87400, Change::Rotation)
    );
    // An approval of the reset shortens both.
    let approved = BTreeMap::from([(2, 60)]);
    assert_eq!(
        usable_from(&chain, 86400, &approved, Some(1), 2000)
            .unwrap()
            .0,
        1060
    );
}

/// A chain that skips a serial the log holds is refused (review-found: the agent checked only
/// the newest entry against its mirror): serial 3, signed by the authority with serial 1's
/// consent, is a reset after serial 2 but would pass for a rotation of serial 1 with serial 2
/// left out. Each entry must also be the first logged for its serial.
#[test]
fn a_served_chain_must_be_the_logs_without_a_serial_left_out() {
    let (authority, k1, k2, k3) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let e1 = alice(&k1, 1, None);
    let e2 = rotated(&e1, &k1, &k2);
    let mut e3 = rotated(&e1, &k1, &k3);
    e3.serial = 3;
    assert_eq!(change_of(&e3, Some(&e2)), Change::Reset);
    assert_eq!(change_of(&e3, Some(&e1)), Change::Rotation);
    let mut other2 = e2.clone();
    other2.tls_spki_sha256 = [9; 32];
    let leaves = logged_leaves(&authority, &[&e1, &e2, &e3, &other2]);
    let mut m = Mirror::default();
    for (i, l) in leaves.iter().enumerate() {
        m.observe(i as u64, l, &authority.public());
    }
    let s = |e: &DirectoryEntry| e.sign(&authority).unwrap();
    let (s1, s2, s3, o2) = (s(&e1), s(&e2), s(&e3), s(&other2));
    m.check_chain(&e1.id, &[(1, &s1), (2, &s2), (3, &s3)], 4)
        .unwrap();
    m.check_chain(&e1.id, &[(2, &s2), (3, &s3)], 4).unwrap();
    let e = m.check_chain(&e1.id, &[(1, &s1), (3, &s3)], 4).unwrap_err();
    assert!(e.message().contains("without serial 2 (leaf 1)"), "{e}");
    let e = m
        .check_chain(&e1.id, &[(1, &s1), (2, &o2), (3, &s3)], 4)
        .unwrap_err();
    assert!(e.message().contains("is another one (leaf 1)"), "{e}");
    // Under a checkpoint before serial 3, the mirror does not hold it.
    let e = m.check_chain(&e1.id, &[(3, &s3)], 2).unwrap_err();
    assert!(e.message().contains("does not hold"), "{e}");
}

/// Review-found: the watch took any entry carrying keys the person's identity ever held as
/// theirs. Alice rotated from k1 to k2; her old device (k1) leaks, and an admin is talked into
/// enrolling k1 again: a reset, which the relay and agents put in force after the wait, and
/// alice must be told. Likewise a second entry for serial 2 with k1's keys raises an alert,
/// and what is judged after it is judged against the real serial 2 (a "rotation" k1 signed
/// from it is a reset).
#[test]
fn a_reset_to_an_older_own_key_is_an_alert() {
    let authority = SigningKey::generate().unwrap();
    let (k1, k2, k3) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let e1 = alice(&k1, 1, None);
    let id = e1.id.clone();
    let e2 = rotated(&e1, &k1, &k2);
    let material = |e: &DirectoryEntry| {
        Watcher::material(
            &e.signing_key,
            e.age_recipient.as_deref(),
            &e.tls_spki_sha256,
        )
    };
    // The watch as `keys rotate` leaves it: both identities' keys are alice's own.
    let own = || {
        let mut w = Watcher::new(&k2.public());
        w.add_own(&k1.public(), material(&e1));
        w.add_own(&k2.public(), material(&e2));
        w
    };
    let back = DirectoryEntry {
        serial: 3,
        ..e1.clone()
    };
    let leaves = logged_leaves(&authority, &[&e1, &e2, &back]);
    let mut w = own();
    let alerts = watched(&mut w, &id, &leaves, &authority);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!((alerts[0].serial, alerts[0].what.as_str()), (3, "reset"));
    assert!(!w.current_is_own);
    // A second serial 2 with k1's keys, then serial 3 "rotated" from it with k1.
    let dup2 = DirectoryEntry {
        serial: 2,
        ..e1.clone()
    };
    let e3 = rotated(&dup2, &k1, &k3);
    assert_eq!(change_of(&e3, Some(&e2)), Change::Reset);
    let leaves = logged_leaves(&authority, &[&e1, &e2, &dup2, &e3]);
    let mut w = own();
    let alerts = watched(&mut w, &id, &leaves, &authority);
    let serials: Vec<u64> = alerts.iter().map(|a| a.serial).collect();
    assert_eq!(serials, [2, 3], "{alerts:?}");
    assert_eq!(alerts[1].what, "reset");
    assert!(!w.current_is_own);
}
