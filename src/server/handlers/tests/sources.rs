//! A source's fill where it meets the grant's agent: the agent's standing is judged again when
//! the source's body has arrived.

use super::*;

/// Helper-found: a source's fill was checked against the grant's agent (enrolled, not
/// quarantined: the policy's `agent_active`) only when it began. An agent quarantined while the
/// source's body was on its way still had its grant filled; its own submission is refused in
/// the same case (`delivery::expiry_and_quarantine_are_judged_when_the_body_has_arrived`).
#[tokio::test]
async fn a_fill_is_refused_at_commit_when_its_agent_was_quarantined_during_the_upload() {
    use crate::core::dispatch::{Dispatch, SourceSubmission};
    use crate::core::sign::StatementType;
    use crate::core::store::statement_digest;
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let (alice, bot, tix) = (
        f.alice.id.clone().unwrap(),
        f.bot.id.clone().unwrap(),
        f.tix.id.clone().unwrap(),
    );
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
        user: alice.clone(),
        agent: bot.clone(),
        source: tix.clone(),
        resource: "tickets/1".into(),
        time: f.now(),
    }
    .sign(&f.bot.signing_key);
    let dispatch = Request::Dispatch {
        dispatch: WireSigned::from_signed(&d),
    };
    assert_eq!(f.call(&f.bot, dispatch).await.unwrap(), Reply::Done);
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
