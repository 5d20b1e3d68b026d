//! Tests of the directory: statements, tampering, rotation and revocation.
use super::*;

fn user_entry(serial: u64) -> (DirectoryEntry, SigningKey) {
    let party = SigningKey::generate().unwrap();
    let age_id = age::x25519::Identity::generate();
    let e = DirectoryEntry {
        id: SpiffeId::new("example.org", PartyKind::User, "alice").unwrap(),
        age_recipient: Some(age_id.to_public().to_string()),
        signing_key: party.public(),
        tls_spki_sha256: [3u8; 32],
        attributes: Attributes {
            clearance: 2,
            roles: vec!["engineer".into()],
            scopes: vec![],
        },
        serial,
        not_before: 100,
        not_after: 200,
        enrolled_by: String::new(),
        rotation: None,
    };
    (e, party)
}

#[test]
fn entry_round_trip_and_tamper() {
    let authority = SigningKey::generate().unwrap();
    let (e, _) = user_entry(1);
    let signed = e.sign(&authority).unwrap();
    assert_eq!(
        DirectoryEntry::verify(&signed, &authority.public()).unwrap(),
        e
    );
    for i in 0..signed.statement.len() {
        let mut t = signed.clone();
        t.statement[i] ^= 0x01;
        assert!(
            DirectoryEntry::verify(&t, &authority.public()).is_err(),
            "byte {i}"
        );
    }
    let other = SigningKey::generate().unwrap();
    let err = DirectoryEntry::verify(&signed, &other.public()).unwrap_err();
    assert!(err.message().contains("user/alice"), "{err}");
}

/// Helper-found: an entry or a revocation with a serial past `i64::MAX` was taken by the
/// embedded store and refused by PostgreSQL (BIGINT), failing every other write of its commit
/// batch; now refused whole when signed or decoded.
#[test]
fn a_serial_no_store_can_hold_is_refused_whole() {
    let authority = SigningKey::generate().unwrap();
    let (mut e, _) = user_entry(crate::core::codec::MAX_STORED);
    let signed = e.sign(&authority).unwrap();
    assert_eq!(
        DirectoryEntry::decode(&signed.statement).unwrap().serial,
        e.serial
    );
    e.serial = crate::core::codec::MAX_STORED + 1;
    assert!(e.sign(&authority).unwrap_err().message().contains("serial"));
    let err = DirectoryEntry::decode(&e.encode()).unwrap_err();
    assert!(err.message().contains("past the largest"), "{err}");
    let r = Revocation {
        id: e.id.clone(),
        serial: u64::MAX,
        revoked_at: 150,
        reason: "lost".into(),
    };
    assert!(r.sign(&authority).is_err());
    assert!(Revocation::decode(&r.encode()).is_err());
}

#[test]
fn request_proof_of_possession() {
    let key = SigningKey::generate().unwrap();
    let req = EnrollmentRequest {
        kind: PartyKind::Agent,
        name: "research-bot".into(),
        age_recipient: None,
        signing_key: key.public(),
        tls_spki: vec![1, 2, 3],
        created: 5,
    };
    let signed = req.sign(&key).unwrap();
    assert_eq!(EnrollmentRequest::verify(&signed).unwrap(), req);
    // Swap the named key: the signature no longer proves possession.
    let other = SigningKey::generate().unwrap();
    let mut forged = req.clone();
    forged.signing_key = other.public();
    let mut bad = signed.clone();
    bad.statement = forged.encode();
    assert!(EnrollmentRequest::verify(&bad).is_err());
    // Agents cannot carry an age recipient.
    let mut with_age = req.clone();
    with_age.age_recipient = Some(age::x25519::Identity::generate().to_public().to_string());
    assert!(with_age.sign(&key).is_err());
}

#[test]
fn directory_rotation_and_revocation() {
    let authority = SigningKey::generate().unwrap();
    let mut dir = Directory::new();
    let (e1, _) = user_entry(1);
    dir.insert_entry(e1.sign(&authority).unwrap(), &authority.public())
        .unwrap();
    assert_eq!(dir.active(&e1.id, 150).unwrap().serial, 1);
    assert_eq!(dir.active(&e1.id, 250), Err(EntryProblem::Expired));
    assert_eq!(dir.next_serial(&e1.id), 2);
    let (mut e2, _) = user_entry(2);
    e2.not_after = 300;
    dir.insert_entry(e2.sign(&authority).unwrap(), &authority.public())
        .unwrap();
    assert_eq!(dir.active(&e1.id, 250).unwrap().serial, 2);
    let rev = Revocation {
        id: e1.id.clone(),
        serial: 2,
        revoked_at: 260,
        reason: "left".into(),
    };
    dir.insert_revocation(&rev.sign(&authority).unwrap(), &authority.public())
        .unwrap();
    assert_eq!(dir.active(&e1.id, 270), Err(EntryProblem::Revoked));
    // Revoking serial 2 ends serial 1 too, and the statement is kept (start-up and
    // `directory push` read it back), once.
    assert!(dir.is_revoked(&e1.id, 1) && dir.is_revoked(&e1.id, 2));
    dir.insert_revocation(&rev.sign(&authority).unwrap(), &authority.public())
        .unwrap();
    assert_eq!(dir.revocations().count(), 1);
    assert_eq!(dir.revoked_count(), 1);
    let mut reloaded = Directory::new();
    reloaded
        .insert_entry(e2.sign(&authority).unwrap(), &authority.public())
        .unwrap();
    for (_, signed) in dir.revocations() {
        reloaded
            .insert_revocation(signed, &authority.public())
            .unwrap();
    }
    assert_eq!(reloaded.active(&e1.id, 270), Err(EntryProblem::Revoked));
    // A different entry claiming an existing serial is a conflict.
    let (e2b, _) = user_entry(2);
    assert!(dir
        .insert_entry(e2b.sign(&authority).unwrap(), &authority.public())
        .is_err());
}

/// The cache of verified entries answers only the exact bytes under the exact authority that
/// verified: a tampered copy, another authority, or a failure asked again still fail.
#[test]
fn remembered_verifications_answer_only_what_verified() {
    let authority = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let (e, _) = user_entry(7);
    let signed = e.sign(&authority).unwrap();
    for _ in 0..3 {
        assert_eq!(
            DirectoryEntry::verify(&signed, &authority.public()).unwrap(),
            e
        );
        assert!(DirectoryEntry::verify(&signed, &other.public()).is_err());
    }
    let mut sig = signed.clone();
    sig.signature[10] ^= 1;
    for _ in 0..2 {
        assert!(DirectoryEntry::verify(&sig, &authority.public()).is_err());
    }
    let mut st = signed.clone();
    st.statement[20] ^= 1;
    assert!(DirectoryEntry::verify(&st, &authority.public()).is_err());
    // Still answered correctly after the failures.
    assert_eq!(
        DirectoryEntry::verify(&signed, &authority.public()).unwrap(),
        e
    );
}

/// Review of issue 28: a committed leaf never wedges the relay (serials logged out of order,
/// a leaf that does not verify: taken as never in force), and a rotation whose previous serial
/// is revoked is a reset (a leaked key vouches for nothing).
#[test]
fn a_logged_directory_never_wedges_and_a_revoked_key_vouches_for_nothing() {
    use crate::core::keylog::{leaf_bytes, KeyRotation};
    let authority = SigningKey::generate().unwrap();
    let leaf = |s: &Signed, at: u64| leaf_bytes(at, &s.statement, &s.signature);
    let rotated = |prev: &DirectoryEntry, prev_key: &SigningKey, serial: u64| {
        let (mut e, k) = user_entry(serial);
        e.tls_spki_sha256 = [serial as u8; 32];
        e.rotation = Some(
            KeyRotation {
                id: e.id.clone(),
                from_serial: prev.serial,
                signing_key: e.signing_key,
                tls_spki_sha256: e.tls_spki_sha256,
                age_recipient: e.age_recipient.clone(),
                created: 1,
            }
            .sign(prev_key),
        );
        (e, k)
    };
    let (e1, k1) = user_entry(1);
    let (e2, k2) = rotated(&e1, &k1, 2);
    let (e3, _) = rotated(&e2, &k2, 3);
    // Serial 3 logged before serial 2: taken, never in force; serial 2 in force as a rotation.
    let mut dir = Directory::logged(100);
    dir.take_leaf(
        &leaf(&e1.sign(&authority).unwrap(), 10),
        &authority.public(),
    )
    .unwrap();
    dir.take_leaf(
        &leaf(&e3.sign(&authority).unwrap(), 20),
        &authority.public(),
    )
    .unwrap();
    dir.take_leaf(
        &leaf(&e2.sign(&authority).unwrap(), 30),
        &authority.public(),
    )
    .unwrap();
    assert_eq!(dir.in_force_from(&e1.id, 1), Some(10));
    assert_eq!(dir.in_force_from(&e1.id, 2), Some(30));
    assert_eq!(dir.in_force_from(&e1.id, 3), Some(u64::MAX));
    // A leaf whose signature does not verify: in the tree, never in force, said why.
    let mut bad = e1.sign(&authority).unwrap();
    bad.signature[0] ^= 1;
    dir.take_leaf(&leaf(&bad, 40), &authority.public()).unwrap();
    assert_eq!(dir.log_size(), 4);
    assert_eq!(dir.refused_leaves().len(), 1);
    // Serial 1 revoked, then a rotation its key signed: a reset, which waits.
    let mut dir = Directory::logged(100);
    dir.take_leaf(
        &leaf(&e1.sign(&authority).unwrap(), 10),
        &authority.public(),
    )
    .unwrap();
    let rev = Revocation {
        id: e1.id.clone(),
        serial: 1,
        revoked_at: 15,
        reason: "leaked".into(),
    };
    dir.take_leaf(
        &leaf(&rev.sign(&authority).unwrap(), 15),
        &authority.public(),
    )
    .unwrap();
    dir.take_leaf(
        &leaf(&e2.sign(&authority).unwrap(), 20),
        &authority.public(),
    )
    .unwrap();
    assert_eq!(dir.in_force_from(&e1.id, 2), Some(120));
    // The key that reset rotated at once (signed by serial 2's own key): it waits with the
    // reset, as a rotation of any waiting reset does, instead of being in force at once.
    dir.take_leaf(
        &leaf(&e3.sign(&authority).unwrap(), 21),
        &authority.public(),
    )
    .unwrap();
    assert_eq!(dir.in_force_from(&e1.id, 3), Some(120));
    assert!(dir.active(&e1.id, 50).is_err());
}

/// A reset's shorter wait stands only while the admin who approved it is not revoked: an
/// approval signed with a key later revoked (perhaps leaked) shortens nothing, as a rotation
/// signed by a key revoked afterwards is a reset. Agents judge it so too
/// (`client::keylog::approvals`, with their mirror of the log).
#[test]
fn a_revoked_admins_approval_of_a_reset_shortens_nothing() {
    use crate::core::keylog::{leaf_bytes, ResetApproval};
    let authority = SigningKey::generate().unwrap();
    let leaf = |s: &Signed, at: u64| leaf_bytes(at, &s.statement, &s.signature);
    let (e1, _) = user_entry(1);
    let (e2, _) = user_entry(2);
    let (mut second, second_key) = user_entry(1);
    second.id = SpiffeId::new("example.org", PartyKind::Admin, "second").unwrap();
    second.signing_key = second_key.public();
    second.attributes = Attributes::default();
    second.age_recipient = None;
    let mut dir = Directory::logged(100);
    let take = |dir: &mut Directory, s: &Signed, at: u64| {
        dir.take_leaf(&leaf(s, at), &authority.public()).unwrap()
    };
    take(&mut dir, &e1.sign(&authority).unwrap(), 10);
    take(&mut dir, &second.sign(&authority).unwrap(), 11);
    let (mut third, third_key) = (second.clone(), SigningKey::generate().unwrap());
    third.id = SpiffeId::new("example.org", PartyKind::Admin, "third").unwrap();
    third.signing_key = third_key.public();
    take(&mut dir, &third.sign(&authority).unwrap(), 12);
    take(&mut dir, &e2.sign(&authority).unwrap(), 20);
    // The second admin renews in the same second, logged after the reset: not the entry that
    // approves (agents take only an approver logged before the reset).
    let renewal = DirectoryEntry {
        serial: 2,
        ..second.clone()
    };
    take(&mut dir, &renewal.sign(&authority).unwrap(), 20);
    assert_eq!(dir.in_force_from(&e1.id, 2), Some(120));
    let approval = ResetApproval {
        id: e1.id.clone(),
        serial: 2,
        wait: 5,
        approver: second.id.clone(),
        created: 21,
    }
    .sign(&second_key);
    take(&mut dir, &approval, 21);
    assert_eq!(dir.refused_leaves(), &[]);
    assert_eq!(dir.in_force_from(&e1.id, 2), Some(25));
    let (_, (by, _)) = dir.approval_by(&e1.id, 2).unwrap();
    assert_eq!(by.serial, 1, "the entry logged before the reset approves");
    let rev = Revocation {
        id: second.id.clone(),
        serial: 1,
        revoked_at: 30,
        reason: "leaked".into(),
    };
    take(&mut dir, &rev.sign(&authority).unwrap(), 30);
    assert_eq!(dir.in_force_from(&e1.id, 2), Some(120));
    assert!(dir.approval(&e1.id, 2).is_none());
    // Another admin may approve in its place.
    let again = ResetApproval {
        approver: third.id.clone(),
        wait: 7,
        created: 31,
        ..ResetApproval::decode(&approval.statement).unwrap()
    }
    .sign(&third_key);
    take(&mut dir, &again, 31);
    assert_eq!(dir.refused_leaves(), &[]);
    assert_eq!(dir.in_force_from(&e1.id, 2), Some(27));
}

/// Review-found: an approval stood while the approving admin entry lost its standing in
/// another way than its own revocation: the admin's serial 2 came by a rotation its serial 1
/// signed; serial 1 is revoked (leaked), so serial 2 is a reset that waits, and was not in
/// force when alice's reset was logged. Its approval shortens nothing now.
#[test]
fn an_approval_by_an_entry_a_revoked_key_vouched_for_shortens_nothing() {
    use crate::core::keylog::{leaf_bytes, KeyRotation, ResetApproval};
    let authority = SigningKey::generate().unwrap();
    let leaf = |s: &Signed, at: u64| leaf_bytes(at, &s.statement, &s.signature);
    let take = |dir: &mut Directory, s: &Signed, at: u64| {
        dir.take_leaf(&leaf(s, at), &authority.public()).unwrap()
    };
    let (e1, _) = user_entry(1);
    let (e2, _) = user_entry(2);
    let admin = |serial: u64, key: &SigningKey| DirectoryEntry {
        id: SpiffeId::new("example.org", PartyKind::Admin, "second").unwrap(),
        signing_key: key.public(),
        attributes: Attributes::default(),
        age_recipient: None,
        serial,
        ..user_entry(serial).0
    };
    let (k1, k2) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let s1 = admin(1, &k1);
    let mut s2 = admin(2, &k2);
    s2.tls_spki_sha256 = [2; 32];
    s2.rotation = Some(
        KeyRotation {
            id: s2.id.clone(),
            from_serial: 1,
            signing_key: s2.signing_key,
            tls_spki_sha256: s2.tls_spki_sha256,
            age_recipient: None,
            created: 1,
        }
        .sign(&k1),
    );
    let mut dir = Directory::logged(100);
    take(&mut dir, &e1.sign(&authority).unwrap(), 10);
    take(&mut dir, &s1.sign(&authority).unwrap(), 11);
    take(&mut dir, &s2.sign(&authority).unwrap(), 15);
    assert_eq!(dir.in_force_from(&s2.id, 2), Some(15), "a rotation");
    take(&mut dir, &e2.sign(&authority).unwrap(), 20);
    let approval = ResetApproval {
        id: e1.id.clone(),
        serial: 2,
        wait: 5,
        approver: s2.id.clone(),
        created: 21,
    }
    .sign(&k2);
    take(&mut dir, &approval, 21);
    assert_eq!(dir.refused_leaves(), &[]);
    assert_eq!(dir.in_force_from(&e1.id, 2), Some(25));
    let rev = Revocation {
        id: s1.id.clone(),
        serial: 1,
        revoked_at: 30,
        reason: "leaked".into(),
    };
    take(&mut dir, &rev.sign(&authority).unwrap(), 30);
    assert_eq!(dir.in_force_from(&s2.id, 2), Some(115), "now a reset");
    assert_eq!(dir.in_force_from(&e1.id, 2), Some(120));
    assert!(dir.approval(&e1.id, 2).is_none());
}
