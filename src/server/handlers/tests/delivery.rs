//! Submission, inbox, fetch, receipts and the time to live.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[tokio::test]
async fn a_submission_consumes_its_grant_once_and_stores_only_valid_ciphertext() {
    let f = fixture();
    let id = f.grant("tickets/1").await;
    // A body that is not an age file is refused and nothing is stored.
    let (body, request) = f.sealed(id, b"hello");
    let mut plain = b"plain text that is not an age file".to_vec();
    plain.resize(body.len(), b'x');
    assert_eq!(
        code(f.call_with_body(&f.bot, request.clone(), &plain).await),
        ErrorCode::InvalidEnvelope
    );
    // A short body; a body longer than declared.
    assert_eq!(
        code(
            f.call_with_body(&f.bot, request.clone(), &body[..body.len() - 1])
                .await
        ),
        ErrorCode::BadRequest
    );
    let mut long = body.clone();
    long.push(0);
    assert_eq!(
        code(f.call_with_body(&f.bot, request.clone(), &long).await),
        ErrorCode::BadRequest
    );
    assert!(f.relay.store.envelope_ids().unwrap().is_empty());
    // The real one.
    let Reply::Submitted { envelope_id } = f
        .call_with_body(&f.bot, request.clone(), &body)
        .await
        .unwrap()
    else {
        panic!("not submitted")
    };
    let g = f.relay.store.grant(&id).unwrap().unwrap();
    assert_eq!(g.state, GrantState::Used { envelope_id });
    assert_eq!(
        f.relay.store.inline_body(&envelope_id).unwrap().unwrap(),
        body
    );
    // Again: the grant serves one submission.
    assert_eq!(code(f.submit(id, b"again").await), ErrorCode::Conflict);
    // A user may not submit; an unknown grant is "no such grant".
    assert_eq!(
        code(f.call_with_body(&f.alice, request, &body).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(f.submit(GrantId([7; 16]), b"x").await),
        ErrorCode::NotFound
    );
    assert_eq!(f.relay.store.envelope_ids().unwrap().len(), 1);
}

#[tokio::test]
async fn large_envelopes_become_blob_files_and_a_refused_one_leaves_none() {
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let big = vec![7u8; 200_000];
    let (body, request) = f.sealed(id, &big);
    // The statement's digest does not match the body: refused after the body, no blob left.
    let mut tampered = body.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        code(f.call_with_body(&f.bot, request.clone(), &tampered).await),
        ErrorCode::BadRequest
    );
    let blobs = f.relay.config.data.join("blobs");
    let tmp = f.relay.config.data.join("blobs.tmp");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    let Reply::Submitted { envelope_id } = f.call_with_body(&f.bot, request, &body).await.unwrap()
    else {
        panic!("not submitted")
    };
    // The ciphertext, then its piece list.
    let mut hasher = crate::core::envelope::pieces::PieceHasher::new();
    hasher.update(&body);
    let mut stored = body.clone();
    stored.extend_from_slice(&hasher.finish().to_bytes());
    assert_eq!(
        std::fs::read(blobs.join(envelope_id.to_hex())).unwrap(),
        stored
    );
}

#[tokio::test]
async fn only_the_requester_sees_and_fetches_its_envelope_then_files_a_receipt() {
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let (body, request) = f.sealed(id, b"the ticket");
    let Reply::Submitted { envelope_id } = f.call_with_body(&f.bot, request, &body).await.unwrap()
    else {
        panic!("not submitted")
    };
    let envelopes = f.inbox(&f.alice).await;
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0].envelope_id, envelope_id);
    let envelopes = f.inbox(&f.bob).await;
    assert!(envelopes.is_empty());
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
    // Fetch: alice gets the view and the stored bytes; bob's answer is the same as for a
    // missing envelope; the agent is refused.
    let outcome = handle(
        &f.relay,
        &peer(&f.alice),
        Request::Fetch {
            envelope_id,
            from_piece: 0,
        },
        &f.cx(),
        &mut &[][..],
    )
    .await
    .unwrap();
    match outcome {
        Outcome::Envelope {
            view,
            body:
                StoredBody {
                    data: Stored::Inline(bytes),
                    ..
                },
        } => {
            assert_eq!(view.envelope_id, envelope_id);
            assert_eq!(bytes, body);
        }
        other => panic!("{other:?}"),
    }
    for (who, expect) in [
        (&f.bob, ErrorCode::NotFound),
        (&f.bot, ErrorCode::Forbidden),
    ] {
        let r = handle(
            &f.relay,
            &peer(who),
            Request::Fetch {
                envelope_id,
                from_piece: 0,
            },
            &f.cx(),
            &mut &[][..],
        )
        .await;
        assert_eq!(r.expect_err("refused").code, expect);
    }
    let missing = handle(
        &f.relay,
        &peer(&f.bob),
        Request::Fetch {
            envelope_id: EnvelopeId([0; 16]),
            from_piece: 0,
        },
        &f.cx(),
        &mut &[][..],
    )
    .await
    .expect_err("missing");
    let others = handle(
        &f.relay,
        &peer(&f.bob),
        Request::Fetch {
            envelope_id,
            from_piece: 0,
        },
        &f.cx(),
        &mut &[][..],
    )
    .await
    .expect_err("others");
    assert_eq!(missing, others, "another's envelope must look missing");
    // A receipt that describes another envelope's digest is refused; the right one is
    // recorded with a proof under a signed checkpoint, and the inbox empties.
    let wrong = f.receipt(envelope_id, id, b"not the ciphertext");
    assert_eq!(code(f.call(&f.alice, wrong).await), ErrorCode::BadRequest);
    let Reply::ReceiptRecorded {
        event_index,
        tree_size,
        ..
    } = f
        .call(&f.alice, f.receipt(envelope_id, id, &body))
        .await
        .unwrap()
    else {
        panic!("no receipt")
    };
    assert!(event_index < tree_size);
    // Threat 26: the same receipt again (its answer lost) gets its entry (it was "not found"
    // once the envelope was deleted); another is refused; the log grows by neither.
    let size = f.relay.store.event_count().unwrap();
    let Reply::ReceiptRecorded {
        event_index: again,
        leaf,
        ..
    } = f
        .call(&f.alice, f.receipt(envelope_id, id, &body))
        .await
        .expect("the same receipt again")
    else {
        panic!("no receipt")
    };
    assert_eq!(again, event_index, "the same receipt, another entry");
    let (_, stored) = f.relay.store.events(event_index, 1).unwrap().remove(0);
    assert_eq!(leaf, stored.leaf_bytes());
    f.clock.advance(1);
    let other = f.call(&f.alice, f.receipt(envelope_id, id, &body)).await;
    assert_eq!(
        code(other),
        ErrorCode::Conflict,
        "a second, different receipt"
    );
    assert_eq!(f.relay.store.event_count().unwrap(), size, "a second leaf");
    let envelopes = f.inbox(&f.alice).await;
    assert!(envelopes.is_empty());
}

#[tokio::test]
async fn envelopes_past_their_ttl_leave_the_inbox_and_are_swept_on_the_clock() {
    let f = fixture_with(|c| c.envelope_ttl_secs = 60);
    let id = f.grant("tickets/1").await;
    let (body, request) = f.sealed(id, b"soon gone");
    f.call_with_body(&f.bot, request, &body).await.unwrap();
    f.clock.advance(59);
    assert_eq!(
        crate::server::services::expiry::sweep_expired(&f.relay, &f.cx()).await,
        0
    );
    f.clock.advance(1);
    let envelopes = f.inbox(&f.alice).await;
    assert!(envelopes.is_empty(), "an expired envelope is listed");
    assert_eq!(
        crate::server::services::expiry::sweep_expired(&f.relay, &f.cx()).await,
        1
    );
    assert!(f.relay.store.envelope_ids().unwrap().is_empty());
    assert!(f.event_kinds().contains(&"envelope.expired".to_owned()));
}

/// Defect 5: no per-party quotas. Open grants per user and envelopes waiting per user are now
/// capped (checked in the store's transaction), with a refusal that names the quota; a receipt
/// frees the room again.
#[tokio::test]
async fn quotas_cap_open_grants_and_pending_envelopes_and_say_which() {
    let f = fixture_with(|c| {
        c.quotas.max_open_grants_per_user = 2;
        c.quotas.max_pending_envelopes_per_user = 1;
    });
    let first = f.grant("tickets/1").await;
    let second = f.grant("tickets/2").await;
    let (_, signed) = f.grant_statement("tickets/3", 600);
    let req = Request::CreateGrant {
        grant: WireSigned::from_signed(&signed),
    };
    let refusal = f
        .call(&f.alice, req.clone())
        .await
        .expect_err("third grant");
    assert_eq!(refusal.code, ErrorCode::QuotaExceeded);
    assert!(
        refusal.message.contains("max_open_grants_per_user"),
        "{}",
        refusal.message
    );
    // One envelope may wait; the second is refused until the first is fetched.
    let (body, request) = f.sealed(first, b"one");
    let Reply::Submitted { envelope_id } = f.call_with_body(&f.bot, request, &body).await.unwrap()
    else {
        panic!("not submitted")
    };
    let refusal = f.submit(second, b"two").await.expect_err("second envelope");
    assert_eq!(refusal.code, ErrorCode::QuotaExceeded);
    assert!(
        refusal.message.contains("max_pending_envelopes_per_user"),
        "{}",
        refusal.message
    );
    assert_eq!(
        f.relay.store.grant(&second).unwrap().unwrap().state,
        GrantState::Open,
        "a refused submission leaves its grant open"
    );
    f.call(&f.alice, f.receipt(envelope_id, first, &body))
        .await
        .unwrap();
    f.submit(second, b"two").await.unwrap();
    // Both grants are used now: a third fits again.
    f.call(&f.alice, req).await.unwrap();
}

/// Defect 7: expiry was judged against the request's start and standing was not checked again,
/// so a slow upload consumed a grant that expired meanwhile, and a quarantine during the upload
/// did not stop it.
#[tokio::test]
async fn expiry_and_quarantine_are_judged_when_the_body_has_arrived() {
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let (body, request) = f.sealed(id, &[5u8; 1000]);
    let clock = f.clock.clone();
    let mut slow = During {
        body: &body,
        during: Some(move || clock.advance(601)),
    };
    let refusal = handle(&f.relay, &peer(&f.bot), request, &f.cx(), &mut slow)
        .await
        .expect_err("a grant that expired during the upload");
    assert_eq!(refusal.code, ErrorCode::Expired);
    assert!(f.relay.store.envelope_ids().unwrap().is_empty());

    let id = f.grant("tickets/2").await;
    let (body, request) = f.sealed(id, &[6u8; 1000]);
    let bot = f.bot.id.clone().unwrap().to_string();
    let monitor = &f.relay.monitor;
    let mut slow = During {
        body: &body,
        during: Some(|| monitor.set_quarantined(&bot, "test")),
    };
    let refusal = handle(&f.relay, &peer(&f.bot), request, &f.cx(), &mut slow)
        .await
        .expect_err("an agent quarantined during the upload");
    assert_eq!(refusal.code, ErrorCode::Forbidden);
    assert!(
        refusal.message.contains("quarantined"),
        "{}",
        refusal.message
    );
    assert!(f.relay.store.envelope_ids().unwrap().is_empty());
    assert_eq!(
        f.relay.store.grant(&id).unwrap().unwrap().state,
        GrantState::Open
    );
}

/// Defect 10: a send retried after a lost answer got Conflict. The same signed submission again
/// now gets the original answer, and the envelope is stored once; a different one still
/// conflicts.
#[tokio::test]
async fn a_repeated_submission_gets_its_original_answer() {
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let (body, request) = f.sealed(id, b"once");
    let first = f
        .call_with_body(&f.bot, request.clone(), &body)
        .await
        .unwrap();
    let (alice, feed) = (f.alice.id.clone().unwrap(), crate::core::wire::Feed::Inbox);
    let mut inbox = f.relay.feeds.subscribe(&alice, feed);
    let again = f
        .call_with_body(&f.bot, request.clone(), &body)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(f.relay.store.envelope_ids().unwrap().len(), 1);
    assert_eq!(code(f.submit(id, b"other").await), ErrorCode::Conflict);
    // Repeated soon after (a lost answer), the user's subscriptions are told of it again; much
    // later, not (an agent repeating old submissions cannot make them list again).
    let Reply::Submitted { envelope_id } = first else {
        panic!("not submitted")
    };
    assert_eq!(inbox.next().await.unwrap(), envelope_id.0);
    for i in 0..crate::server::services::feeds::QUEUE as u128 {
        f.relay.feeds.publish(&alice, feed, (i + 1).to_be_bytes());
        assert_eq!(inbox.next().await.unwrap(), (i + 1).to_be_bytes());
    }
    f.clock.advance(super::super::submit::REPUBLISH_WITHIN + 1);
    let late = f.call_with_body(&f.bot, request, &body).await.unwrap();
    assert_eq!(late, again);
    let told = tokio::time::timeout(std::time::Duration::from_millis(100), inbox.next()).await;
    assert!(told.is_err(), "told again: {told:?}");
}

/// Threat 20 at scale: a thousand grants, each raced by eight distinct submissions started at
/// once; every time exactly one is stored and the other seven are refused (one upload per grant,
/// consumed in the store's transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_races_of_eight_submissions_each_store_exactly_one() {
    let f = fixture_with(|c| {
        c.requests_per_second = 1_000_000;
        c.request_burst = 1_000_000;
        c.quotas.max_pending_envelopes_per_user = 100_000;
        c.quotas.max_pending_bytes_per_user = u64::MAX;
    });
    for round in 0..1000 {
        let g = f.grant("tickets/race").await;
        let entries: Vec<(Vec<u8>, Request)> = (0..8u8).map(|i| f.sealed(g, &[i; 40])).collect();
        let racers: Vec<_> = entries
            .iter()
            .map(|(body, request)| f.call_with_body(&f.bot, request.clone(), body))
            .collect();
        let mut pending: Vec<_> = racers.into_iter().map(Box::pin).collect();
        let mut won = 0;
        let mut lost = 0;
        std::future::poll_fn(|cx| {
            pending.retain_mut(|fut| match std::future::Future::poll(fut.as_mut(), cx) {
                std::task::Poll::Ready(Ok(Reply::Submitted { .. })) => {
                    won += 1;
                    false
                }
                std::task::Poll::Ready(other) => {
                    assert!(other.is_err(), "round {round}: {other:?}");
                    lost += 1;
                    false
                }
                std::task::Poll::Pending => true,
            });
            if pending.is_empty() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        assert_eq!((won, lost), (1, 7), "round {round}");
    }
}

/// The agent learns what became of its submission, and only for its own grants: open,
/// submitted, delivered with the receipt's log index (kept after the envelope is deleted), or
/// expired; another party's question is refused.
#[tokio::test]
async fn an_agent_learns_the_outcome_of_its_own_submissions_only() {
    use crate::core::wire::SubmissionState;
    let f = fixture_with(|c| c.delete_after_delivery = true);
    let status = |r: Result<Reply, crate::server::Refusal>| match r.unwrap() {
        Reply::SubmissionStatus {
            state,
            envelope_id,
            receipt_index,
            ..
        } => (state, envelope_id, receipt_index),
        other => panic!("unexpected {other:?}"),
    };
    let ask = |grant_id| Request::SubmissionStatus { grant_id };
    let id = f.grant("tickets/1").await;
    assert_eq!(
        status(f.call(&f.bot, ask(id)).await),
        (SubmissionState::Open, None, None)
    );
    // Users, and unknown grants, learn nothing.
    assert_eq!(code(f.call(&f.alice, ask(id)).await), ErrorCode::Forbidden);
    assert_eq!(
        code(f.call(&f.bot, ask(GrantId([9; 16]))).await),
        ErrorCode::NotFound
    );
    let (body, request) = f.sealed(id, b"the data");
    let Reply::Submitted { envelope_id } = f.call_with_body(&f.bot, request, &body).await.unwrap()
    else {
        panic!("not submitted")
    };
    assert_eq!(
        status(f.call(&f.bot, ask(id)).await),
        (SubmissionState::Submitted, Some(envelope_id), None)
    );
    let Reply::ReceiptRecorded { event_index, .. } = f
        .call(&f.alice, f.receipt(envelope_id, id, &body))
        .await
        .unwrap()
    else {
        panic!("no receipt")
    };
    // The envelope is gone (delete_after_delivery), its outcome is not.
    assert!(f.relay.store.envelope(&envelope_id).unwrap().is_none());
    assert_eq!(
        status(f.call(&f.bot, ask(id)).await),
        (
            SubmissionState::Delivered,
            Some(envelope_id),
            Some(event_index)
        )
    );
    // A grant left unused past its expiry.
    let late = f.grant("tickets/2").await;
    f.clock.advance(2 * 3600);
    assert_eq!(
        status(f.call(&f.bot, ask(late)).await).0,
        SubmissionState::Expired
    );
}

/// Post-quantum by default: envelopes are sealed to the user's hybrid recipient; one sealed to
/// an X25519 recipient is refused with a one-line reason while `require_post_quantum` is on, and
/// accepted when a deployment turns it off.
#[tokio::test]
async fn x25519_envelopes_are_refused_while_post_quantum_is_required() {
    let x25519 = |f: &Fixture, grant_id: GrantId| {
        let key = age::x25519::Identity::generate().to_public();
        let mut body = Vec::new();
        crate::core::envelope::seal(&key, &mut &b"classic"[..], &mut body, 1).unwrap();
        let statement = Submission {
            grant_id,
            user: f.alice.id.clone().unwrap(),
            agent: f.bot.id.clone().unwrap(),
            ciphertext_root: crate::core::envelope::pieces::digest(&body),
            ciphertext_len: body.len() as u64,
        }
        .sign(&f.bot.signing_key);
        let request = Request::Submit {
            grant_id,
            statement: WireSigned::from_signed(&statement),
            length: body.len() as u64,
            from_piece: 0,
        };
        (body, request)
    };
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let (body, request) = x25519(&f, id);
    let refusal = f.call_with_body(&f.bot, request, &body).await.unwrap_err();
    assert_eq!(refusal.code, ErrorCode::InvalidEnvelope);
    assert!(
        refusal.message.contains("requires post-quantum recipients"),
        "{}",
        refusal.message
    );
    assert!(!refusal.message.contains('\n'));
    assert!(f.relay.store.envelope_ids().unwrap().is_empty());
    // The user's own (hybrid) recipient is what the relay stores.
    let (body, request) = f.sealed(id, b"post-quantum");
    let Reply::Submitted { envelope_id } = f.call_with_body(&f.bot, request, &body).await.unwrap()
    else {
        panic!("not submitted")
    };
    let stored = f.relay.store.inline_body(&envelope_id).unwrap().unwrap();
    assert!(stored.windows(17).any(|w| w == b"-> mlkem768x25519"));
    // A deployment that allows X25519 takes it.
    let f = fixture_with(|c| c.require_post_quantum = false);
    let id = f.grant("tickets/1").await;
    let (body, request) = x25519(&f, id);
    assert!(matches!(
        f.call_with_body(&f.bot, request, &body).await.unwrap(),
        Reply::Submitted { .. }
    ));
}
