//! The kill switch, the directory, the log, and authentication.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[tokio::test]
async fn admins_quarantine_and_release_agents_users_cannot() {
    let f = fixture();
    let name = "research-bot";
    let quarantine = Request::Quarantine {
        agent: name.into(),
        reason: "test".into(),
    };
    assert_eq!(
        code(f.call(&f.alice, quarantine.clone()).await),
        ErrorCode::Forbidden
    );
    f.call(&f.admin, quarantine.clone()).await.unwrap();
    assert_eq!(
        code(f.call(&f.admin, quarantine).await),
        ErrorCode::Conflict
    );
    // The quarantined agent is refused on its next request, and grants to it too.
    let refusal = f
        .call(
            &f.bot,
            Request::ListGrants {
                page: Page::first(),
                dir_size: None,
            },
        )
        .await
        .expect_err("quarantined");
    assert!(
        refusal.message.contains("quarantined"),
        "{}",
        refusal.message
    );
    let (_, signed) = f.grant_statement("tickets/1", 600);
    let req = Request::CreateGrant {
        grant: WireSigned::from_signed(&signed),
    };
    assert_eq!(code(f.call(&f.alice, req).await), ErrorCode::Forbidden);
    let release = Request::Release { agent: name.into() };
    assert_eq!(
        code(f.call(&f.alice, release.clone()).await),
        ErrorCode::Forbidden
    );
    f.call(&f.admin, release.clone()).await.unwrap();
    assert_eq!(code(f.call(&f.admin, release).await), ErrorCode::NotFound);
    f.call(
        &f.bot,
        Request::ListGrants {
            page: Page::first(),
            dir_size: None,
        },
    )
    .await
    .unwrap();
    let kinds = f.event_kinds();
    assert!(kinds.contains(&"agent.quarantined".to_owned()));
    assert!(kinds.contains(&"agent.released".to_owned()));
}

/// Helper-found: an admin's quarantine reason was stored as given. A NUL in it (the wire and the
/// bindings can send one; argv cannot) is text PostgreSQL refuses, so the whole commit batch
/// failed, every other party's write in it too, and the kill switch never took; control
/// characters in it reached an auditor's terminal through `audit tail`. It is checked as a
/// denial's reason is now, and nothing is quarantined or logged for a refused one.
#[tokio::test]
async fn a_quarantine_reason_a_store_or_a_terminal_cannot_take_is_refused() {
    let f = fixture();
    for reason in [
        "stop\u{0}now".to_owned(),
        "hide \u{1b}[2K\rthis".to_owned(),
        "ok\u{202e}txt".to_owned(),
        "x".repeat(513),
    ] {
        let r = f
            .call(
                &f.admin,
                Request::Quarantine {
                    agent: "research-bot".into(),
                    reason,
                },
            )
            .await
            .expect_err("refused");
        assert_eq!(r.code, ErrorCode::BadRequest, "{}", r.message);
        assert!(r.message.contains("reason"), "{}", r.message);
    }
    assert!(!f.event_kinds().contains(&"agent.quarantined".to_owned()));
    f.call(
        &f.bot,
        Request::ListGrants {
            page: Page::first(),
            dir_size: None,
        },
    )
    .await
    .unwrap();
    f.call(
        &f.admin,
        Request::Quarantine {
            agent: "research-bot".into(),
            reason: "leaked token, rotating (ticket 4711)".into(),
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_directory_is_pushed_by_admins_and_read_by_anyone_enrolled() {
    let f = fixture();
    let alice_id: SpiffeId = f.alice.id.clone().unwrap();
    let Reply::Entry { entry } = f
        .call(
            &f.bot,
            Request::GetEntry {
                id: alice_id.to_string(),
            },
        )
        .await
        .unwrap()
    else {
        panic!("no entry")
    };
    assert_eq!(
        code(
            f.call(
                &f.bot,
                Request::GetEntry {
                    id: "not a spiffe id".into()
                }
            )
            .await
        ),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(
            f.call(
                &f.bot,
                Request::GetEntry {
                    id: "spiffe://sealrelay.local/user/nobody".into()
                }
            )
            .await
        ),
        ErrorCode::NotFound
    );
    let push = |entries: Vec<WireSigned>| Request::PushDirectory {
        entries,
        revocations: Vec::new(),
    };
    assert_eq!(
        code(f.call(&f.alice, push(vec![entry.clone()])).await),
        ErrorCode::Forbidden
    );
    let mut forged = entry.clone();
    forged.signature[1] ^= 1;
    assert_eq!(
        code(f.call(&f.admin, push(vec![forged])).await),
        ErrorCode::BadRequest
    );
    f.call(&f.admin, push(vec![entry])).await.unwrap();
    assert!(f.event_kinds().contains(&"directory.push".to_owned()));
}

#[tokio::test]
async fn checkpoints_and_events_for_those_allowed_to_read_the_log() {
    let f = fixture();
    f.grant("tickets/1").await;
    let Reply::Checkpoint {
        checkpoint,
        consistency,
    } = f
        .call(&f.alice, Request::GetCheckpoint { old_size: Some(1) })
        .await
        .unwrap()
    else {
        panic!("no checkpoint")
    };
    assert!(checkpoint.contains('\n'));
    assert!(!consistency.is_empty());
    assert_eq!(
        code(
            f.call(
                &f.alice,
                Request::GetCheckpoint {
                    old_size: Some(1_000_000)
                }
            )
            .await
        ),
        ErrorCode::Conflict,
        "a checkpoint larger than the log is a rollback"
    );
    // Events: auditors (bob) may read them, alice may not.
    let Reply::Events { events } = f
        .call(
            &f.bob,
            Request::Events {
                from: 0,
                limit: 5000,
            },
        )
        .await
        .unwrap()
    else {
        panic!("no events")
    };
    assert!(!events.is_empty() && events.len() <= 1000);
    assert_eq!(
        code(
            f.call(&f.alice, Request::Events { from: 0, limit: 10 })
                .await
        ),
        ErrorCode::Forbidden
    );
}

#[tokio::test]
async fn callers_outside_the_directory_or_revoked_are_unauthenticated() {
    let f = fixture();
    let mut stranger = peer(&f.carol);
    stranger.spki_sha256 = [0; 32];
    let r = handle(
        &f.relay,
        &stranger,
        Request::Inbox {
            page: Page::first(),
        },
        &f.cx(),
        &mut &[][..],
    )
    .await
    .expect_err("a superseded key");
    assert_eq!(r.code, ErrorCode::Unauthenticated);
    // The directory entries expire on the clock like everything else.
    f.clock.advance(400 * 86_400);
    assert_eq!(
        code(
            f.call(
                &f.carol,
                Request::Inbox {
                    page: Page::first()
                }
            )
            .await
        ),
        ErrorCode::Unauthenticated
    );
}

/// Found by reading: two directory pushes at once could lose one (each built on the directory
/// before either, and the last to finish won), a revocation among them, say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_directory_pushes_both_take_effect() {
    let f = fixture();
    let keys = f.relay.config.dir.clone();
    let root = crate::local::trust_root::TrustRoot::load(&keys).unwrap();
    let now = f.now();
    let dave = crate::local::provision::enroll(&root, &user("dave", 1, &[]), now).unwrap();
    let erin = crate::local::provision::enroll(&root, &user("erin", 1, &[]), now).unwrap();
    let push = |who: &Identity| Request::PushDirectory {
        entries: vec![WireSigned::from_signed(who.entry.as_ref().unwrap())],
        revocations: Vec::new(),
    };
    let admin = peer(&f.admin);
    for _ in 0..20 {
        let (mut none_a, mut none_b): (&[u8], &[u8]) = (&[], &[]);
        let cx = f.cx_at(now);
        let (a, b) = tokio::join!(
            handle(&f.relay, &admin, push(&dave), &cx, &mut none_a),
            handle(&f.relay, &admin, push(&erin), &cx, &mut none_b),
        );
        a.unwrap();
        b.unwrap();
    }
    for who in [&dave, &erin] {
        let id = who.id.clone().unwrap().to_string();
        f.call(&f.bot, Request::GetEntry { id }).await.unwrap();
    }
}

/// Defect 8: any CA-issued `spiffe://<td>/admin/*` certificate was trusted, for a year, and
/// could not be revoked. Admins are now directory entries: pinned to their TLS key, revocable.
#[tokio::test]
async fn admins_are_directory_entries_pinned_and_revocable() {
    let f = fixture();
    let quarantine = || Request::Quarantine {
        agent: "research-bot".into(),
        reason: "test".into(),
    };
    let release = || Request::Release {
        agent: "research-bot".into(),
    };
    // An admin name the directory does not know, with a CA certificate: refused.
    let mut rogue = peer(&f.admin);
    rogue.id = SpiffeId::new(
        rogue.id.trust_domain(),
        crate::ids::PartyKind::Admin,
        "rogue",
    )
    .unwrap();
    let r = handle(&f.relay, &rogue, quarantine(), &f.cx(), &mut &[][..])
        .await
        .expect_err("an unknown admin");
    assert_eq!(r.code, ErrorCode::Unauthenticated);
    // The real admin's name with another key: refused.
    let mut other_key = peer(&f.admin);
    other_key.spki_sha256 = [9; 32];
    let r = handle(&f.relay, &other_key, quarantine(), &f.cx(), &mut &[][..])
        .await
        .expect_err("another key");
    assert_eq!(r.code, ErrorCode::Unauthenticated);
    // The real admin works, until it is revoked.
    f.call(&f.admin, quarantine()).await.unwrap();
    let keys = f.relay.config.dir.clone();
    let root = crate::local::trust_root::TrustRoot::load(&keys).unwrap();
    let (directory, _) =
        crate::local::dirstore::load(&root.directory_dir(), &root.authority.public()).unwrap();
    let (_, revocation, _) = crate::local::dirstore::revoke(
        &root,
        &directory,
        f.admin.id.as_ref().unwrap(),
        "left",
        f.now(),
    )
    .unwrap();
    let push = Request::PushDirectory {
        entries: Vec::new(),
        revocations: vec![WireSigned::from_signed(&revocation)],
    };
    f.call(&f.admin, push).await.unwrap();
    let r = f
        .call(&f.admin, release())
        .await
        .expect_err("a revoked admin");
    assert_eq!(r.code, ErrorCode::Unauthenticated);
    assert!(r.message.contains("revoked"), "{}", r.message);
}

/// Found by reading: every denial was a durable event with no aggregation, so a flood grew the
/// log without bound. Past the per-minute cap, denials are counted and logged as one summary.
#[tokio::test]
async fn a_flood_of_denials_is_summarized_not_logged_one_by_one() {
    let f = fixture_with(|c| c.max_denial_events_per_minute = 5);
    for _ in 0..50 {
        assert_eq!(
            code(
                f.call(
                    &f.bot,
                    Request::Inbox {
                        page: Page::first()
                    }
                )
                .await
            ),
            ErrorCode::Forbidden
        );
    }
    let denies = |f: &Fixture| f.event_kinds().iter().filter(|k| *k == "deny").count();
    assert_eq!(denies(&f), 5);
    f.clock.advance(61);
    crate::server::services::expiry::sweep_expired(&f.relay, &f.cx()).await;
    let events = f.relay.store.events(0, 1000).unwrap();
    let summary = events
        .iter()
        .find(|(_, e)| e.kind == "deny.summary")
        .expect("no summary");
    assert!(
        summary.1.detail.starts_with("45 more denials"),
        "{:?}",
        summary.1
    );
}
