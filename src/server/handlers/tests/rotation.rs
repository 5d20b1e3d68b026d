//! A user's key rotation with envelopes waiting (issue 33, defect 2): the previous identity
//! may still list, fetch and file receipts for a grace period, nothing else; the user's own key
//! change never counts against the agent; the relay serves a party's earlier entries.

use super::*;
use crate::core::directory::EnrollmentRequest;
use crate::local::dirstore::{self, EnrollOptions};
use crate::local::trust_root::TrustRoot;

/// Rotates `who` to a fresh key (same attributes, the current key's signed consent, as `keys
/// rotate` makes it) and pushes the new entry to the relay.
pub(super) async fn rotate(f: &Fixture, who: &Identity) -> Identity {
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let now = f.now();
    let next = Identity::generate(who.kind, &who.name).unwrap();
    let req = EnrollmentRequest::verify(&next.enrollment_request(now).unwrap()).unwrap();
    let current = directory.latest(who.id.as_ref().unwrap()).unwrap();
    let consent = crate::core::keylog::KeyRotation {
        id: current.id.clone(),
        from_serial: current.serial,
        signing_key: req.signing_key,
        tls_spki_sha256: sha256(&req.tls_spki),
        age_recipient: req.age_recipient.clone(),
        created: now,
    }
    .sign(&who.signing_key);
    let opts = EnrollOptions {
        attributes: current.attributes.clone(),
        rotate: true,
        validity_days: 30,
        rotation: Some(consent),
    };
    issue_and_push(f, next, &req, &opts).await
}

/// Issues `next` the entry `opts` describe for `req`, imports it, and has the fixture's admin
/// push it to the relay.
pub(super) async fn issue_and_push(
    f: &Fixture,
    mut next: Identity,
    req: &EnrollmentRequest,
    opts: &EnrollOptions,
) -> Identity {
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let now = f.now();
    let issued = dirstore::issue(&root, &directory, req, opts, now).unwrap();
    dirstore::store_entry(&root.directory_dir(), &issued).unwrap();
    root.bundle(issued.signed.clone(), issued.cert, None)
        .unwrap()
        .import_into(&mut next, now)
        .unwrap();
    f.call(
        &f.admin,
        Request::PushDirectory {
            entries: vec![WireSigned::from_signed(&issued.signed)],
            revocations: Vec::new(),
        },
    )
    .await
    .unwrap();
    next
}

fn undecryptable(
    f: &Fixture,
    signer: &Identity,
    envelope_id: EnvelopeId,
    grant_id: GrantId,
) -> Request {
    let digest = f
        .relay
        .store
        .envelope(&envelope_id)
        .unwrap()
        .unwrap()
        .sha256;
    let r = Receipt {
        envelope_id,
        grant_id,
        user: f.alice.id.clone().unwrap(),
        agent: f.bot.id.clone().unwrap(),
        ciphertext_root: digest,
        status: DeliveryStatus::Undecryptable,
        time: f.now(),
    }
    .sign(&signer.signing_key);
    Request::Receipt {
        receipt: WireSigned::from_signed(&r),
        old_size: None,
    }
}

/// Defect 2 (found by walking it): after alice rotated her key with envelopes waiting, her new
/// identity's `fetch --all` filed undecryptable receipts against the agent (one receipt is
/// enough here: `max_undecryptable = 1`), and her old identity was refused ("superseded?"), so
/// the data could not be recovered. On main the old identity's inbox below was refused and the
/// new identity's receipt quarantined the agent.
#[tokio::test]
async fn a_rotated_users_old_identity_finishes_what_was_sealed_to_it_and_the_agent_does_not_pay() {
    let f = fixture_with(|c| {
        c.monitor = MonitorConfig {
            max_undecryptable: 1,
            ..MonitorConfig::default()
        };
        c.rotation_grace_secs = 1_000;
    });
    let g1 = f.grant("tickets/1").await;
    let Reply::Submitted { envelope_id: e1 } = f.submit(g1, b"one").await.unwrap() else {
        panic!()
    };
    let g2 = f.grant("tickets/2").await;
    let Reply::Submitted { envelope_id: e2 } = f.submit(g2, b"two").await.unwrap() else {
        panic!()
    };
    let alice_new = rotate(&f, &f.alice).await;
    // The relay serves both of alice's entries, newest first.
    let Reply::Entries { entries } = f
        .call(
            &alice_new,
            Request::GetEntries {
                id: f.alice.id.clone().unwrap().to_string(),
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(entries.len(), 2);
    // Her new identity's undecryptable receipt for an envelope sealed to her old key (its grant
    // signed with that key) is recorded but does not count against the agent.
    f.call(&alice_new, undecryptable(&f, &alice_new, e1, g1))
        .await
        .unwrap();
    assert!(!f
        .relay
        .monitor
        .is_quarantined(&f.bot.id.clone().unwrap().to_string()));
    // The old identity, within the grace period: lists, fetches, files its receipt.
    let Reply::Inbox { envelopes, .. } = f
        .call(
            &f.alice,
            Request::Inbox {
                page: Page::first(),
            },
        )
        .await
        .expect("the previous identity reads its inbox")
    else {
        panic!()
    };
    assert!(envelopes.iter().any(|e| e.envelope_id == e2));
    let outcome = handle(
        &f.relay,
        &peer(&f.alice),
        Request::Fetch {
            envelope_id: e2,
            from_piece: 0,
        },
        &f.cx(),
        &mut &[][..],
    )
    .await
    .expect("the previous identity fetches");
    let Outcome::Envelope { body, .. } = outcome else {
        panic!()
    };
    let StoredBody {
        data: Stored::Inline(bytes),
        ..
    } = body
    else {
        panic!()
    };
    f.call(&f.alice, f.receipt(e2, g2, &bytes))
        .await
        .expect("its receipt, signed with the old key, is recorded");
    // Nothing it could start anew.
    let (_, signed) = f.grant_statement("tickets/3", 600);
    let refusal = f
        .call(
            &f.alice,
            Request::CreateGrant {
                grant: WireSigned::from_signed(&signed),
            },
        )
        .await
        .expect_err("a grant by the previous identity");
    assert_eq!(refusal.code, ErrorCode::Unauthenticated);
    assert!(refusal.message.contains("rotated"), "{}", refusal.message);
    // What was sealed to the new key is out of the previous identity's reach: not listed, not
    // fetched, no receipt (a stolen old key cannot take or close it).
    let g5 = f.granted_by(&alice_new, "tickets/5").await;
    let Reply::Submitted { envelope_id: e5 } = f.submit_for(&alice_new, g5, b"five").await.unwrap()
    else {
        panic!()
    };
    let Reply::Inbox { envelopes, .. } = f
        .call(
            &f.alice,
            Request::Inbox {
                page: Page::first(),
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(!envelopes.iter().any(|e| e.envelope_id == e5));
    let r = handle(
        &f.relay,
        &peer(&f.alice),
        Request::Fetch {
            envelope_id: e5,
            from_piece: 0,
        },
        &f.cx(),
        &mut &[][..],
    )
    .await
    .expect_err("the new key's envelope");
    assert_eq!(r.code, ErrorCode::NotFound);
    let r = f
        .call(&f.alice, undecryptable(&f, &f.alice, e5, g5))
        .await
        .expect_err("a receipt for the new key's envelope");
    assert_eq!(r.code, ErrorCode::NotFound);
    // An undecryptable receipt signed with the key the grant was made with still counts.
    let g4 = f.granted_by(&alice_new, "tickets/4").await;
    let Reply::Submitted { envelope_id: e4 } = f.submit_for(&alice_new, g4, b"four").await.unwrap()
    else {
        panic!()
    };
    f.call(&alice_new, undecryptable(&f, &alice_new, e4, g4))
        .await
        .unwrap();
    assert!(f
        .relay
        .monitor
        .is_quarantined(&f.bot.id.clone().unwrap().to_string()));
    // After the grace period the previous identity is refused.
    f.clock.advance(1_001);
    let r = f
        .call(
            &f.alice,
            Request::Inbox {
                page: Page::first(),
            },
        )
        .await
        .expect_err("past the grace period");
    assert_eq!(r.code, ErrorCode::Unauthenticated);
}

/// Helper-found (walking the key lifecycle): an admin enrolled alice's rotation (serial 2)
/// without `--relay`, then her renewal (serial 3) with it, which sent serial 3 alone. The relay
/// logged 3 straight after 1 (a reset: alice locked out for the wait, and her watch alerting on
/// her own rotation), and the documented `directory push` then logged 2 after 3, which left her
/// name's chain broken for good. A party's entries are now taken in order only: 3 alone is
/// refused in one line naming the fix, and the whole directory, pushed in any order, logs 2
/// then 3: a rotation and a renewal, in force at once.
#[tokio::test]
async fn entries_pushed_out_of_order_are_refused_and_the_whole_push_logs_them_in_order() {
    let f = fixture();
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let alice = f.alice.id.clone().unwrap();
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let now = f.now();
    let next = Identity::generate(f.alice.kind, &f.alice.name).unwrap();
    let req = EnrollmentRequest::verify(&next.enrollment_request(now).unwrap()).unwrap();
    let current = directory.latest(&alice).unwrap().clone();
    let consent = crate::core::keylog::KeyRotation {
        id: alice.clone(),
        from_serial: current.serial,
        signing_key: req.signing_key,
        tls_spki_sha256: sha256(&req.tls_spki),
        age_recipient: req.age_recipient.clone(),
        created: now,
    }
    .sign(&f.alice.signing_key);
    let mut opts = EnrollOptions {
        attributes: current.attributes.clone(),
        rotate: true,
        validity_days: 30,
        rotation: Some(consent),
    };
    // Serial 2 (the rotation) and serial 3 (its renewal) are issued; neither is pushed yet.
    let two = dirstore::issue(&root, &directory, &req, &opts, now).unwrap();
    dirstore::store_entry(&root.directory_dir(), &two).unwrap();
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    opts.rotation = None;
    let three = dirstore::issue(&root, &directory, &req, &opts, now).unwrap();
    let push = |signed: Vec<&crate::core::sign::Signed>| Request::PushDirectory {
        entries: signed.into_iter().map(WireSigned::from_signed).collect(),
        revocations: Vec::new(),
    };
    let r = f
        .call(&f.admin, push(vec![&three.signed]))
        .await
        .expect_err("serial 3 taken straight after 1");
    assert_eq!(r.code, ErrorCode::Conflict, "{}", r.message);
    assert!(
        r.message.contains("does not follow serial 1") && r.message.contains("directory push"),
        "{}",
        r.message
    );
    assert_eq!(
        f.relay
            .directory
            .read()
            .unwrap()
            .latest(&alice)
            .unwrap()
            .serial,
        1
    );
    // The whole directory, newest first: logged oldest first.
    f.call(&f.admin, push(vec![&three.signed, &two.signed]))
        .await
        .unwrap();
    {
        let dir = f.relay.directory.read().unwrap();
        let (p2, p3) = (
            dir.position(&two.signed).unwrap(),
            dir.position(&three.signed).unwrap(),
        );
        assert!(p2.index < p3.index);
        assert_eq!(
            dir.active(&alice, now).unwrap().serial,
            3,
            "a renewal waits for nothing"
        );
    }
    // Pushed again: nothing changes.
    f.call(&f.admin, push(vec![&two.signed, &three.signed]))
        .await
        .unwrap();
    // Another serial 2 (other keys, issued from the directory before serial 2): a conflict,
    // said so, not "does not follow".
    let other = Identity::generate(f.alice.kind, &f.alice.name).unwrap();
    let other_req = EnrollmentRequest::verify(&other.enrollment_request(now).unwrap()).unwrap();
    let before = {
        let mut d = crate::core::directory::Directory::new();
        d.insert_entry(
            f.relay
                .directory
                .read()
                .unwrap()
                .history(&alice)
                .last()
                .unwrap()
                .1
                .clone(),
            &root.authority.public(),
        )
        .unwrap();
        d
    };
    let mut reset = opts;
    reset.rotation = None;
    let other_two = dirstore::issue(&root, &before, &other_req, &reset, now).unwrap();
    assert_eq!(
        crate::core::directory::DirectoryEntry::decode(&other_two.signed.statement)
            .unwrap()
            .serial,
        2
    );
    let r = f
        .call(&f.admin, push(vec![&other_two.signed]))
        .await
        .expect_err("a second serial 2 taken");
    assert!(r.message.contains("two different entries"), "{}", r.message);
}

/// Helper-found: after a rotation (serial 1 to 2, with consent) and a revocation of the party,
/// the relay told the new identity its key was "enrolled by admin as a reset … not in force
/// until …, if you did not ask for it, tell your security team" (the revocation made the
/// rotation a reset), while `keys watch` showed no alert; it never said "revoked", and implied
/// the key would work after that time. A revoked key is said to be revoked.
#[tokio::test]
async fn a_revoked_identity_is_told_it_is_revoked_not_that_it_waits() {
    let f = fixture();
    let rotated = rotate(&f, &f.alice).await;
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let revocation = crate::core::directory::Revocation {
        id: rotated.id.clone().unwrap(),
        serial: 2,
        revoked_at: f.now(),
        reason: "device lost".into(),
    }
    .sign(&root.authority)
    .unwrap();
    f.push_revocation(&revocation).await;
    let r = f
        .call(
            &rotated,
            Request::Inbox {
                page: Page::first(),
            },
        )
        .await
        .expect_err("a revoked identity was served");
    assert_eq!(r.code, ErrorCode::Unauthenticated);
    assert!(r.message.contains("revoked"), "{}", r.message);
    assert!(!r.message.contains("reset"), "{}", r.message);
}

/// The same when the key was a reset still waiting (review of this session's diff): a revoked
/// key is revoked, whatever it waited for.
#[tokio::test]
async fn a_revoked_reset_is_told_it_is_revoked() {
    let f = fixture();
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let alice = f.alice.id.clone().unwrap();
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let now = f.now();
    let next = Identity::generate(f.alice.kind, &f.alice.name).unwrap();
    let req = EnrollmentRequest::verify(&next.enrollment_request(now).unwrap()).unwrap();
    let opts = EnrollOptions {
        attributes: directory.latest(&alice).unwrap().attributes.clone(),
        rotate: true,
        validity_days: 30,
        rotation: None,
    };
    let reset = issue_and_push(&f, next, &req, &opts).await;
    for serial in [1, 2] {
        let revocation = crate::core::directory::Revocation {
            id: alice.clone(),
            serial,
            revoked_at: f.now(),
            reason: "lost".into(),
        }
        .sign(&root.authority)
        .unwrap();
        f.push_revocation(&revocation).await;
    }
    let r = f
        .call(
            &reset,
            Request::Inbox {
                page: Page::first(),
            },
        )
        .await
        .expect_err("a revoked reset was served");
    assert!(r.message.contains("revoked"), "{}", r.message);
    assert!(!r.message.contains("waits"), "{}", r.message);
}
