//! Grants: creation, listing on the clock, approval.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[tokio::test]
async fn grants_are_created_by_their_user_within_limits() {
    let f = fixture();
    let id = f.grant("tickets/1").await;
    assert_eq!(
        f.relay.store.grant(&id).unwrap().unwrap().state,
        GrantState::Open
    );
    // Mallory cannot file alice's grant.
    let (_, signed) = f.grant_statement("tickets/2", 600);
    let req = Request::CreateGrant {
        grant: WireSigned::from_signed(&signed),
    };
    assert_eq!(code(f.call(&f.bob, req).await), ErrorCode::Forbidden);
    // Already expired; longer than the relay allows; a flipped signature.
    let (_, signed) = f.grant_statement("tickets/3", 5);
    let req = Request::CreateGrant {
        grant: WireSigned::from_signed(&signed),
    };
    f.clock.advance(5);
    assert_eq!(code(f.call(&f.alice, req).await), ErrorCode::Expired);
    let (_, signed) = f.grant_statement("tickets/4", 10 * 365 * 86_400);
    let req = Request::CreateGrant {
        grant: WireSigned::from_signed(&signed),
    };
    assert_eq!(code(f.call(&f.alice, req).await), ErrorCode::BadRequest);
    let (_, signed) = f.grant_statement("tickets/5", 600);
    let mut wire = WireSigned::from_signed(&signed);
    wire.signature[0] ^= 1;
    let req = Request::CreateGrant { grant: wire };
    assert_eq!(code(f.call(&f.alice, req).await), ErrorCode::BadRequest);
    // Out of the agent's scopes: the policy refuses, and the denial is an event.
    let (_, signed) = f.grant_statement("customers/1", 600);
    let req = Request::CreateGrant {
        grant: WireSigned::from_signed(&signed),
    };
    assert_eq!(code(f.call(&f.alice, req).await), ErrorCode::Forbidden);
    let kinds = f.event_kinds();
    assert_eq!(kinds.iter().filter(|k| *k == "grant.created").count(), 1);
    assert!(
        kinds.iter().any(|k| k == "deny"),
        "the scope denial is logged"
    );
}

#[tokio::test]
async fn the_agent_lists_ready_grants_until_they_expire_on_the_clock() {
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let listed = |r: Reply| match r {
        Reply::Grants { grants, .. } => grants.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        listed(
            f.call(
                &f.bot,
                Request::ListGrants {
                    page: Page::first(),
                    dir_size: None,
                }
            )
            .await
            .unwrap()
        ),
        1
    );
    // Users have no grants to list.
    assert_eq!(
        code(
            f.call(
                &f.alice,
                Request::ListGrants {
                    page: Page::first(),
                    dir_size: None,
                }
            )
            .await
        ),
        ErrorCode::Forbidden
    );
    // Move time past the grant's expiry: no sleeping.
    f.clock.advance(601);
    assert_eq!(
        listed(
            f.call(
                &f.bot,
                Request::ListGrants {
                    page: Page::first(),
                    dir_size: None,
                }
            )
            .await
            .unwrap()
        ),
        0
    );
    assert_eq!(code(f.submit(id, b"late").await), ErrorCode::Expired);
}

#[tokio::test]
async fn grants_that_need_approval_wait_for_a_second_person_before_expiry() {
    let f = fixture();
    let id = f.grant("payroll/2026").await;
    let pending = |r: Reply| match r {
        Reply::Pending { grants, .. } => grants.len(),
        other => panic!("{other:?}"),
    };
    // Invisible to the agent, refused if submitted, listed to bob (an approver) only.
    let Reply::Grants { grants, .. } = f
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
        panic!()
    };
    assert!(grants.is_empty());
    assert_eq!(code(f.submit(id, b"early").await), ErrorCode::Forbidden);
    assert_eq!(
        pending(
            f.call(
                &f.bob,
                Request::PendingApprovals {
                    page: Page::first()
                }
            )
            .await
            .unwrap()
        ),
        1
    );
    assert_eq!(
        pending(
            f.call(
                &f.alice,
                Request::PendingApprovals {
                    page: Page::first()
                }
            )
            .await
            .unwrap()
        ),
        0
    );
    let record = f.relay.store.grant(&id).unwrap().unwrap();
    let approval = |who: &Identity, statement: &[u8]| Request::Approve {
        approval: WireSigned::from_signed(
            &Approval {
                grant_id: id,
                grant_sha256: sha256(statement),
                approver: who.id.clone().unwrap(),
                time: f.now(),
            }
            .sign(&who.signing_key),
        ),
    };
    // Self-approval and approval of a modified grant are refused.
    assert_eq!(
        code(
            f.call(&f.alice, approval(&f.alice, &record.grant.statement))
                .await
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(f.call(&f.bob, approval(&f.bob, b"another grant")).await),
        ErrorCode::BadRequest
    );
    f.call(&f.bob, approval(&f.bob, &record.grant.statement))
        .await
        .unwrap();
    assert_eq!(
        code(
            f.call(&f.bob, approval(&f.bob, &record.grant.statement))
                .await
        ),
        ErrorCode::Conflict,
        "approved twice"
    );
    f.submit(id, b"now").await.unwrap();
    // A second grant that expires before bob approves it stays closed.
    let late = f.grant("payroll/2027").await;
    let record = f.relay.store.grant(&late).unwrap().unwrap();
    f.clock.advance(601);
    assert_eq!(
        pending(
            f.call(
                &f.bob,
                Request::PendingApprovals {
                    page: Page::first()
                }
            )
            .await
            .unwrap()
        ),
        0
    );
    let req = Request::Approve {
        approval: WireSigned::from_signed(
            &Approval {
                grant_id: late,
                grant_sha256: sha256(&record.grant.statement),
                approver: f.bob.id.clone().unwrap(),
                time: f.now(),
            }
            .sign(&f.bob.signing_key),
        ),
    };
    let refusal = f.call(&f.bob, req).await.expect_err("late approval");
    assert_eq!(refusal.code, ErrorCode::Expired);
    assert!(
        refusal.message.contains("stays closed"),
        "{}",
        refusal.message
    );
    assert!(f
        .relay
        .store
        .grant(&late)
        .unwrap()
        .unwrap()
        .approval
        .is_none());
}

/// Defect 2: classification by raw prefix. A name with `..` was classified by its first segment
/// (`tickets/`, public) and accepted without approval; now no such name is a resource at all.
#[tokio::test]
async fn resource_names_outside_the_grammar_are_refused() {
    let f = fixture();
    for name in [
        "tickets/../payroll/2026.csv",
        "tickets/%2e%2e/payroll/2026.csv",
        "tickets/./1",
        "tickets//1",
        "tickets/1\u{200b}",
    ] {
        let (mut g, _) = f.grant_statement("tickets/1", 600);
        g.resource = name.into();
        // Signed as a client that skips its own checks would.
        let signed = Signed::sign(
            crate::core::sign::StatementType::Grant,
            g.encode(),
            &f.alice.signing_key,
        );
        let req = Request::CreateGrant {
            grant: WireSigned::from_signed(&signed),
        };
        let refusal = f.call(&f.alice, req).await.expect_err(name);
        assert_eq!(refusal.code, ErrorCode::BadRequest, "{name}");
        assert!(
            refusal.message.contains("invalid resource name"),
            "{}",
            refusal.message
        );
        assert!(f.relay.store.grant(&g.grant_id).unwrap().is_none());
    }
}

/// Defect 3: listings were single frames capped at 256 KiB, so past a few hundred entries they
/// failed. Pages now follow a cursor, each under the frame cap, and every entry comes once.
#[tokio::test]
async fn listings_come_in_pages_that_cover_everything_once() {
    let f = fixture_with(|c| {
        c.requests_per_second = 100_000;
        c.request_burst = 100_000;
        c.quotas.max_open_grants_per_user_per_agent = 1_000;
    });
    let mut made = std::collections::BTreeSet::new();
    for i in 0..250 {
        made.insert(f.grant(&format!("tickets/{i}")).await);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut page = Page::first();
    let mut pages = 0;
    loop {
        let Reply::Grants { grants, next, .. } = f
            .call(
                &f.bot,
                Request::ListGrants {
                    page,
                    dir_size: None,
                },
            )
            .await
            .unwrap()
        else {
            panic!("no grants")
        };
        pages += 1;
        assert!(grants.len() <= 100);
        for g in grants {
            let grant = Grant::decode(&g.grant.statement).unwrap();
            assert!(seen.insert(grant.grant_id), "listed twice");
        }
        match next {
            Some(n) => page = Page::after(n),
            None => break,
        }
    }
    assert_eq!(seen, made);
    assert!(pages >= 3, "{pages} pages");
    // Grants that expire unused are closed by the sweep: out of the index, refused as expired.
    f.clock.advance(601);
    assert_eq!(
        crate::server::services::expiry::sweep_expired(&f.relay, &f.cx()).await,
        250
    );
    assert!(f
        .relay
        .store
        .open_grants_for(f.bot.id.as_ref().unwrap(), None, 1000)
        .unwrap()
        .is_empty());
    let any = *made.iter().next().unwrap();
    assert_eq!(
        f.relay.store.grant(&any).unwrap().unwrap().state,
        GrantState::Expired
    );
    assert_eq!(code(f.submit(any, b"late").await), ErrorCode::Expired);
}
