//! A source's fill where it meets the grant's agent: the agent's standing is judged again when
//! the source's body has arrived.

use super::*;

/// The bot dispatches grant `id` to the source `tix`; its signed dispatch.
async fn dispatched(f: &Fixture, id: GrantId) -> Signed {
    use crate::core::dispatch::Dispatch;
    use crate::core::sign::StatementType;
    use crate::core::store::statement_digest;
    let g = f.relay.store.grant(&id).unwrap().unwrap();
    let granted = WireSigned {
        statement: g.grant.statement,
        signature: g.grant.signature,
    }
    .to_signed(StatementType::Grant)
    .unwrap();
    let d = Dispatch {
        grant_id: id,
        grant_digest: statement_digest(&granted),
        user: g.user.clone(),
        agent: g.agent.clone(),
        source: f.tix.id.clone().unwrap(),
        resource: g.resource.clone(),
        time: f.now(),
    }
    .sign(&f.bot.signing_key);
    let dispatch = Request::Dispatch {
        dispatch: WireSigned::from_signed(&d),
    };
    assert_eq!(f.call(&f.bot, dispatch).await.unwrap(), Reply::Done);
    d
}

/// Helper-found: a grant its source refused could be filled by nobody (it is the source's), yet
/// it held its user's, the agent's and the pair's open-grant quotas until it expired (up to
/// the longest grant lifetime): a source refusing a user's requests shut that user out of the
/// agent. The refusal closes the grant now; the agent and the user still see "refused at
/// source".
#[tokio::test]
async fn a_grant_its_source_refused_stops_holding_quota() {
    use crate::core::dispatch::{RefusalReason, SourceRefusal};
    use crate::core::wire::{GrantProgress, SubmissionState};
    let f = fixture_with(|c| c.quotas.max_open_grants_per_user_per_agent = 1);
    let id = f.grant("tickets/1").await;
    dispatched(&f, id).await;
    let (second, signed) = f.grant_statement("tickets/2", 600);
    let create = Request::CreateGrant {
        grant: WireSigned::from_signed(&signed),
    };
    assert_eq!(
        code(f.call(&f.alice, create.clone()).await),
        ErrorCode::QuotaExceeded,
        "one open grant per pair"
    );
    let refusal = SourceRefusal {
        grant_id: id,
        user: f.alice.id.clone().unwrap(),
        agent: f.bot.id.clone().unwrap(),
        source: f.tix.id.clone().unwrap(),
        reason: RefusalReason::Policy,
        time: f.now(),
    }
    .sign(&f.tix.signing_key);
    let refuse = Request::RefuseAssignment {
        refusal: WireSigned::from_signed(&refusal),
    };
    assert_eq!(f.call(&f.tix, refuse.clone()).await.unwrap(), Reply::Done);
    // Helper-found: the same refusal again (its answer lost, or sent through another node) was
    // "no such assignment", an error to the source; it is done already. Another refusal of the
    // closed grant is still refused, and nothing more is logged.
    let logged = f.event_kinds().len();
    assert_eq!(f.call(&f.tix, refuse).await.unwrap(), Reply::Done);
    let other = SourceRefusal {
        grant_id: id,
        user: f.alice.id.clone().unwrap(),
        agent: f.bot.id.clone().unwrap(),
        source: f.tix.id.clone().unwrap(),
        reason: RefusalReason::Unreadable,
        time: f.now(),
    }
    .sign(&f.tix.signing_key);
    let other = Request::RefuseAssignment {
        refusal: WireSigned::from_signed(&other),
    };
    assert!(f.call(&f.tix, other).await.is_err());
    assert_eq!(f.event_kinds().len(), logged);
    // The refused grant is closed and said to be refused; the pair's slot is free again.
    let status = f
        .call(&f.bot, Request::SubmissionStatus { grant_id: id })
        .await
        .unwrap();
    let Reply::SubmissionStatus { state, refusal, .. } = status else {
        panic!("not a status: {status:?}")
    };
    assert_eq!(state, SubmissionState::RefusedAtSource);
    assert!(refusal.is_some());
    let Reply::MyGrants { grants, .. } = f
        .call(
            &f.alice,
            Request::MyGrants {
                page: Page::first(),
            },
        )
        .await
        .unwrap()
    else {
        panic!("not my grants")
    };
    let mine = grants
        .iter()
        .find(|g| Grant::decode(&g.grant.statement).unwrap().grant_id == id)
        .unwrap();
    assert_eq!(mine.progress, GrantProgress::RefusedAtSource);
    assert!(matches!(
        f.call(&f.alice, create).await.unwrap(),
        Reply::GrantCreated { grant_id, .. } if grant_id == second.grant_id
    ));
}

/// Helper-found: a source's fill was checked against the grant's agent (enrolled, not
/// quarantined: the policy's `agent_active`) only when it began. An agent quarantined while the
/// source's body was on its way still had its grant filled; its own submission is refused in
/// the same case (`delivery::expiry_and_quarantine_are_judged_when_the_body_has_arrived`).
#[tokio::test]
async fn a_fill_is_refused_at_commit_when_its_agent_was_quarantined_during_the_upload() {
    use crate::core::dispatch::SourceSubmission;
    use crate::core::store::statement_digest;
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let (alice, bot, tix) = (
        f.alice.id.clone().unwrap(),
        f.bot.id.clone().unwrap(),
        f.tix.id.clone().unwrap(),
    );
    let d = dispatched(&f, id).await;
    // The source seals to alice and fills; the agent is quarantined while the body arrives.
    let recipient = f.alice.age_identity.as_ref().unwrap().to_public();
    let mut body = Vec::new();
    crate::core::envelope::seal(
        recipient.as_recipient(),
        &mut &[7u8; 1000][..],
        &mut body,
        1,
    )
    .unwrap();
    let s = SourceSubmission {
        grant_id: id,
        user: alice,
        agent: bot.clone(),
        source: tix,
        dispatch_digest: statement_digest(&d),
        ciphertext_root: crate::core::envelope::pieces::digest(&body),
        ciphertext_len: body.len() as u64,
    }
    .sign(&f.tix.signing_key);
    let request = Request::Submit {
        grant_id: id,
        statement: WireSigned::from_signed(&s),
        length: body.len() as u64,
        from_piece: 0,
    };
    let bot = bot.to_string();
    let monitor = &f.relay.monitor;
    let mut slow = During {
        body: &body,
        during: Some(|| monitor.set_quarantined(&bot, "test")),
    };
    let refusal = handle(&f.relay, &peer(&f.tix), request, &f.cx(), &mut slow)
        .await
        .expect_err("a fill for an agent quarantined during the upload");
    assert_eq!(refusal.code, ErrorCode::Forbidden);
    assert!(
        refusal.message.contains("quarantined during the upload"),
        "{}",
        refusal.message
    );
    assert!(!refusal.message.contains('\n'));
    assert!(f.relay.store.envelope_ids().unwrap().is_empty());
    assert_eq!(
        f.relay.store.grant(&id).unwrap().unwrap().state,
        GrantState::Open
    );
}
