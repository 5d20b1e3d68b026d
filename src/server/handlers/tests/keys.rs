//! Threat 48 at the agent: the relay's real answer to a listing, altered as a relay that lies
//! would alter it (an entry with no place in the log, a proof that does not add up, an entry the
//! log does not hold), is refused by the agent's check before anything is sealed.

use super::*;
use crate::client::keylog::{checked_grant, directory_key, reset_wait, Seen};
use crate::core::directory::DirectoryEntry;
use crate::core::tlog::checkpoint::Checkpoint;
use crate::local::trust_root::TrustRoot;

#[tokio::test]
async fn an_agent_refuses_an_entry_the_relay_cannot_prove_is_logged() {
    let f = fixture();
    f.grant("tickets/1").await;
    let Reply::Grants {
        grants, directory, ..
    } = f
        .call(
            &f.bot,
            Request::ListGrants {
                page: Page::first(),
                dir_size: None,
            },
        )
        .await
        .unwrap()
    else {
        panic!("not a listing")
    };
    let view = grants.into_iter().next().unwrap();
    let cp = Checkpoint::verify(&directory.checkpoint, &directory_key(&f.bot).unwrap()).unwrap();
    let authority = f.relay.authority;
    let (wait, now) = (reset_wait(&f.bot), f.now());
    // As served: accepted.
    let g = checked_grant(&view, &cp, &authority, wait, now, None, None).unwrap();
    assert_eq!(g.user_entry.id, *f.alice.id.as_ref().unwrap());

    // Backdated: the entry says it was logged well before this agent saw a log without it.
    let log = view.user_log.clone().unwrap();
    let seen = |size, at, pinned| Some(Seen { size, at, pinned });
    let check = |s| checked_grant(&view, &cp, &authority, wait, now, s, None);
    let e = check(seen(log.index, log.logged_at + 3600, None)).unwrap_err();
    assert!(e.message().contains("a backdated entry"), "{e}");
    check(seen(log.index, log.logged_at, None)).unwrap();
    check(seen(log.index + 1, now + 3600, Some(1))).unwrap();
    // A serial the agent had pinned, logged again after the checkpoint it saw: a second entry
    // for one serial (an authority that signed two), refused.
    let e = check(seen(log.index, log.logged_at, Some(1))).unwrap_err();
    assert!(e.message().contains("two entries for one serial"), "{e}");

    // No place in the log.
    let mut v = view.clone();
    v.user_log = None;
    let e = checked_grant(&v, &cp, &authority, wait, now, None, None).unwrap_err();
    assert!(
        e.message().contains("without a place in the directory log"),
        "{e}"
    );
    // A proof hash altered, the leaf index moved, the logged time changed.
    let log = view.user_log.clone().unwrap();
    let mut altered = Vec::new();
    if !log.proof.is_empty() {
        let mut v = view.clone();
        v.user_log.as_mut().unwrap().proof[0][0] ^= 1;
        altered.push(v);
    }
    let mut v = view.clone();
    v.user_log.as_mut().unwrap().index ^= 1;
    altered.push(v);
    let mut v = view.clone();
    v.user_log.as_mut().unwrap().logged_at -= 1;
    altered.push(v);
    // An entry the authority signed that the log does not hold (the same serial, other keys),
    // with the real entry's proof.
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let real = DirectoryEntry::verify(
        &view
            .user_entry
            .to_signed(crate::core::sign::StatementType::DirectoryEntry)
            .unwrap(),
        &authority,
    )
    .unwrap();
    let other = Identity::generate(crate::ids::PartyKind::User, "alice").unwrap();
    let unlogged = DirectoryEntry {
        signing_key: other.signing_key.public(),
        age_recipient: Some(other.age_identity.as_ref().unwrap().to_public().to_string()),
        ..real
    };
    let mut v = view.clone();
    v.user_entry = WireSigned::from_signed(&unlogged.sign(&root.authority).unwrap());
    altered.push(v);
    for v in altered {
        let e = checked_grant(&v, &cp, &authority, wait, now, None, None).unwrap_err();
        assert!(
            e.message()
                .contains("is in the directory log does not verify"),
            "{e}"
        );
        assert!(!e.message().contains('\n'), "one line: {e}");
    }
    // A checkpoint from another log key is not this relay's directory log.
    let forged = Checkpoint {
        origin: cp.origin.clone(),
        size: cp.size,
        root: cp.root,
    };
    let stranger = crate::core::sign::SigningKey::generate().unwrap();
    let vk = crate::core::sign::VerifierKey::new(&cp.origin, stranger.public()).unwrap();
    let note = forged.sign(&stranger, &vk).unwrap();
    assert!(Checkpoint::verify(&note, &directory_key(&f.bot).unwrap()).is_err());
}

/// A relay that leaves a key change out of the chain it serves (review-found: agents took a
/// user's chain as the relay served it). Each entry it serves is in the log and proved there,
/// so the chain alone passes; the agent's mirror of the whole log finds the newer serial, and
/// the revocation, left out.
#[tokio::test]
async fn an_agent_refuses_a_key_the_whole_directory_log_supersedes_or_revokes() {
    use crate::core::wire::LogProof;
    let f = fixture();
    f.grant("tickets/1").await;
    // The directory log's checkpoint now (unsigned: the agent's check of a signature is not
    // what this test is about).
    fn tip(f: &Fixture, like: &Checkpoint) -> Checkpoint {
        let dir = f.relay.directory.read().unwrap();
        let tree = dir.log_tree().unwrap();
        Checkpoint {
            origin: like.origin.clone(),
            size: tree.size(),
            root: tree.root(tree.size()).unwrap(),
        }
    }
    let (first, first_cp) = listing(&f).await;
    let first = first.unwrap();
    let authority = f.relay.authority;
    let (wait, now) = (reset_wait(&f.bot), f.now());
    // `v` as a lying relay would serve it under `cp`: each entry freshly proved, and (without
    // `keep_earlier`) its own entry only.
    let stale = |v: &crate::core::wire::GrantView, cp: &Checkpoint, keep_earlier: bool| {
        let dir = f.relay.directory.read().unwrap();
        let tree = dir.log_tree().unwrap();
        let reproved = |log: &LogProof| LogProof {
            proof: tree.inclusion_proof(log.index, cp.size).unwrap(),
            ..log.clone()
        };
        let mut v = v.clone();
        if keep_earlier {
            for (_, log) in v.earlier.iter_mut() {
                *log = reproved(log);
            }
        } else {
            v.earlier.clear();
        }
        v.user_log = v.user_log.as_ref().map(reproved);
        v
    };
    let judge_read =
        |v: &crate::core::wire::GrantView, cp: &Checkpoint, read: u64| judged(&f, v, cp, read);
    let judge = |v: &crate::core::wire::GrantView, cp: &Checkpoint| judge_read(v, cp, cp.size);

    // alice rotates: serial 2 is logged. The relay serves serial 1 alone.
    super::rotation::rotate(&f, &f.alice).await;
    let (fresh, cp) = listing(&f).await;
    let fresh = fresh.unwrap();
    let lying = stale(&first, &cp, false);
    checked_grant(&lying, &cp, &authority, wait, now, None, None).expect("the chain alone passes");
    let e = judge(&lying, &cp).unwrap_err();
    assert!(e.message().contains("newer than the serial 1"), "{e}");
    assert!(!e.message().contains('\n'));
    // The honest answers pass: this one, and the first as it was served under the checkpoint
    // before the rotation, though the mirror has read past it (another listing, another
    // process of this agent).
    judge(&fresh, &cp).unwrap();
    judge_read(&first, &first_cp, cp.size).unwrap();

    // alice's serial 1 is revoked (it leaked), after it vouched for serial 2: the relay treats 2
    // as a reset that waits. A relay that leaves the revocation out serves 2 as a rotation.
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let revocation = crate::core::directory::Revocation {
        id: f.alice.id.clone().unwrap(),
        serial: 1,
        revoked_at: f.now(),
        reason: "leaked".into(),
    }
    .sign(&root.authority)
    .unwrap();
    f.push_revocation(&revocation).await;
    let cp = tip(&f, &cp);
    let lying = stale(&fresh, &cp, true);
    checked_grant(&lying, &cp, &authority, wait, now, None, None).expect("the chain alone passes");
    let e = judge(&lying, &cp).unwrap_err();
    assert!(
        e.message()
            .contains("a rotation signed by user/alice's revoked key (serial 1)"),
        "{e}"
    );

    // alice's serial 2 is revoked: the relay serves it as if it were not.
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let (directory, _) =
        crate::local::dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let (_, revocation, _) = crate::local::dirstore::revoke(
        &root,
        &directory,
        f.alice.id.as_ref().unwrap(),
        "device lost",
        f.now(),
    )
    .unwrap();
    f.push_revocation(&revocation).await;
    let cp = tip(&f, &cp);
    let lying = stale(&fresh, &cp, true);
    checked_grant(&lying, &cp, &authority, wait, now, None, None).expect("the chain alone passes");
    let e = judge(&lying, &cp).unwrap_err();
    // (What serial 1 vouched for is judged first: either way, nothing is sealed to it.)
    assert!(
        e.message().contains("refusing to seal to a revoked key")
            || e.message().contains("revoked key (serial 1)"),
        "{e}"
    );
}

/// Issues `next` an entry (a new party, or with `reset` a new serial its current key did not
/// sign) and pushes it to the relay as the fixture's admin.
async fn enroll_pushed(f: &Fixture, next: Identity, reset: bool) -> Identity {
    use crate::core::directory::EnrollmentRequest;
    use crate::local::dirstore::{self, EnrollOptions};
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let (directory, _) = dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let req = EnrollmentRequest::verify(&next.enrollment_request(f.now()).unwrap()).unwrap();
    let attributes = match reset {
        true => directory
            .latest(next.id.as_ref().unwrap())
            .unwrap()
            .attributes
            .clone(),
        false => Default::default(),
    };
    let opts = EnrollOptions {
        attributes,
        rotate: reset,
        validity_days: 30,
        rotation: None,
    };
    super::rotation::issue_and_push(f, next, &req, &opts).await
}

/// The bot's first listed grant, and the directory checkpoint it was served under.
async fn listing(f: &Fixture) -> (Option<crate::core::wire::GrantView>, Checkpoint) {
    let request = Request::ListGrants {
        page: Page::first(),
        dir_size: None,
    };
    let Reply::Grants {
        grants, directory, ..
    } = f.call(&f.bot, request).await.unwrap()
    else {
        panic!("not a listing")
    };
    let cp = Checkpoint::verify(&directory.checkpoint, &directory_key(&f.bot).unwrap()).unwrap();
    (grants.into_iter().next(), cp)
}

/// The agent's verdict on `v` served under `cp`, its mirror of the directory log read to `read`
/// leaves.
fn judged(
    f: &Fixture,
    v: &crate::core::wire::GrantView,
    cp: &Checkpoint,
    read: u64,
) -> crate::error::Result<crate::client::OpenGrant> {
    use crate::core::keylog::{DirectoryLeaf, Mirror};
    let mut m = Mirror::default();
    let leaves = f.relay.store.directory_log(0, read as usize).unwrap();
    for (i, bytes) in leaves.iter().enumerate() {
        m.observe(
            i as u64,
            &DirectoryLeaf::decode(bytes).unwrap(),
            &f.relay.authority,
        );
    }
    let pages = vec![(v.clone(), std::sync::Arc::new(cp.clone()))];
    let pins = crate::client::SerialPins::in_memory();
    let mut out = crate::client::judge_items(
        &f.bot,
        &pins,
        pages,
        &Default::default(),
        None,
        Some(&m),
        |v| v,
    )
    .unwrap();
    out.pop().unwrap().1
}

/// A reset's wait shortened by a second admin whose key is then revoked (it leaked): the relay
/// takes the approval back, and an agent refuses it too when a relay serves it anyway (the
/// approval, the approver's entry and the user's chain each freshly proved: only the agent's
/// mirror of the whole log shows the revocation).
#[tokio::test]
async fn an_approval_by_an_admin_key_the_log_revokes_shortens_nothing() {
    use crate::core::keylog::ResetApproval;
    use crate::core::wire::LogProof;
    use crate::ids::PartyKind;
    let f = fixture();
    f.grant("tickets/1").await;
    let second = enroll_pushed(
        &f,
        Identity::generate(PartyKind::Admin, "second").unwrap(),
        false,
    )
    .await;
    let mut rogue = Identity::generate(PartyKind::User, "alice").unwrap();
    rogue.id = f.alice.id.clone();
    enroll_pushed(&f, rogue, true).await;
    let alice = f.alice.id.clone().unwrap();
    let approval = ResetApproval {
        id: alice.clone(),
        serial: 2,
        wait: 0,
        approver: second.id.clone().unwrap(),
        created: f.now(),
    }
    .sign(&second.signing_key);
    f.call(
        &second,
        Request::ApproveReset {
            approval: WireSigned::from_signed(&approval),
        },
    )
    .await
    .unwrap();
    let judge = |v: &crate::core::wire::GrantView, cp: &Checkpoint| judged(&f, v, cp, cp.size);
    // Approved: the reset key is in force at once, for the relay and the agent.
    let (approved, cp) = listing(&f).await;
    let approved = approved.unwrap();
    assert_eq!(approved.approvals.len(), 1);
    judge(&approved, &cp).expect("an approved reset is in force");
    // The second admin renews (the same keys, a serial logged after the reset): the relay
    // serves the entry that signed the approval, not the renewal, and the agent still takes it.
    let second = enroll_pushed(&f, second, true).await;
    let (renewed, cp) = listing(&f).await;
    let renewed = renewed.unwrap();
    assert_eq!(renewed.approvals.len(), 1);
    judge(&renewed, &cp).expect("still approved after the approver's renewal");

    // The second admin's key is revoked.
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let revocation = crate::core::directory::Revocation {
        id: second.id.clone().unwrap(),
        serial: 1,
        revoked_at: f.now(),
        reason: "leaked".into(),
    }
    .sign(&root.authority)
    .unwrap();
    f.push_revocation(&revocation).await;
    assert_eq!(
        f.relay
            .directory
            .read()
            .unwrap()
            .waiting(&alice, f.now())
            .map(|w| w.entry.serial),
        Some(2),
        "the relay takes the approval back"
    );
    let (honest, cp) = listing(&f).await;
    let honest = honest.unwrap();
    assert!(honest.approvals.is_empty(), "the relay serves it no more");
    let e = judge(&honest, &cp).unwrap_err();
    assert!(e.message().contains("nothing is sealed to it until"), "{e}");
    // A relay that serves the approval anyway, every proof fresh under the new checkpoint.
    let lying = {
        let dir = f.relay.directory.read().unwrap();
        let tree = dir.log_tree().unwrap();
        let reproved = |log: &LogProof| LogProof {
            proof: tree.inclusion_proof(log.index, cp.size).unwrap(),
            ..log.clone()
        };
        let mut v = approved.clone();
        v.user_log = v.user_log.as_ref().map(reproved);
        for (_, log) in v.earlier.iter_mut() {
            *log = reproved(log);
        }
        for a in v.approvals.iter_mut() {
            a.approval_log = reproved(&a.approval_log);
            a.approver_log = reproved(&a.approver_log);
        }
        v
    };
    let e = judge(&lying, &cp).unwrap_err();
    assert!(e.message().contains("nothing is sealed to it until"), "{e}");
}

/// Review-found: an agent checked only the newest entry against its mirror. The authority
/// signs alice's serial 3 with the consent her superseded serial 1 once gave (her old key):
/// after serial 2 that is a reset, which waits. A relay that serves the chain without serial
/// 2 would pass it off as a rotation of serial 1, in force at once; the agent's mirror of the
/// whole log finds serial 2 left out.
#[tokio::test]
async fn an_agent_refuses_a_chain_that_skips_a_serial() {
    use crate::core::wire::LogProof;
    let f = fixture();
    f.grant("tickets/1").await;
    super::rotation::rotate(&f, &f.alice).await;
    let root = TrustRoot::load(&f.relay.config.dir).unwrap();
    let alice = f.alice.id.clone().unwrap();
    let now = f.now();
    let rogue = crate::core::sign::SigningKey::generate().unwrap();
    let mut e3 = DirectoryEntry {
        serial: 3,
        signing_key: rogue.public(),
        tls_spki_sha256: [3; 32],
        enrolled_by: root.meta.admin_name.clone(),
        rotation: None,
        ..f.relay
            .directory
            .read()
            .unwrap()
            .latest(&alice)
            .unwrap()
            .clone()
    };
    e3.rotation = Some(
        crate::core::keylog::KeyRotation {
            id: alice.clone(),
            from_serial: 1,
            signing_key: e3.signing_key,
            tls_spki_sha256: e3.tls_spki_sha256,
            age_recipient: e3.age_recipient.clone(),
            created: now,
        }
        .sign(&f.alice.signing_key),
    );
    let signed = e3.sign(&root.authority).unwrap();
    f.call(
        &f.admin,
        Request::PushDirectory {
            entries: vec![WireSigned::from_signed(&signed)],
            revocations: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert!(
        f.relay
            .directory
            .read()
            .unwrap()
            .waiting(&alice, now)
            .is_some(),
        "the relay judges serial 3 a reset"
    );
    let (honest, cp) = listing(&f).await;
    let honest = honest.unwrap();
    let e = judged(&f, &honest, &cp, cp.size).unwrap_err();
    assert!(e.message().contains("nothing is sealed to it until"), "{e}");
    // The same chain without serial 2, every proof fresh.
    let lying = {
        let dir = f.relay.directory.read().unwrap();
        let tree = dir.log_tree().unwrap();
        let mut v = honest.clone();
        v.earlier.retain(|(w, _)| {
            let s = w
                .to_signed(crate::core::sign::StatementType::DirectoryEntry)
                .unwrap();
            DirectoryEntry::decode(&s.statement).unwrap().serial != 2
        });
        for (_, log) in v.earlier.iter_mut() {
            *log = LogProof {
                proof: tree.inclusion_proof(log.index, cp.size).unwrap(),
                ..log.clone()
            };
        }
        v
    };
    assert_eq!(lying.earlier.len() + 1, honest.earlier.len());
    let e = judged(&f, &lying, &cp, cp.size).unwrap_err();
    assert!(e.message().contains("without serial 2"), "{e}");
}
