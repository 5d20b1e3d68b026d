//! What a caller and a model are shown (issue 26): listing pages and cursors built only from
//! what the caller may see (threat 52), and purposes that read the same to a person and a
//! model (threat 54).

use super::*;

/// Threat 52, defect 4 (found by reading): the approvals listing's cursor was the last record
/// the store returned, visible or not, so a user paging with limit 1 learned the ids (and the
/// number, and the coming and going) of grants they may not decide. On main carol's first,
/// empty page came with a cursor: the id of alice's grant.
#[tokio::test]
async fn pages_and_cursors_hold_only_what_the_caller_may_see() {
    let f = fixture();
    let mut alices = std::collections::BTreeSet::new();
    for i in 0..5 {
        alices.insert(f.grant(&format!("payroll/{i}")).await.0);
    }
    // Bob's own grants await approval too, but he may not approve them himself.
    let mut bobs = std::collections::BTreeSet::new();
    for i in 0..5 {
        bobs.insert(f.granted_by(&f.bob, &format!("payroll/b{i}")).await.0);
    }
    let one = |after: Option<[u8; 16]>| Page { after, limit: 1 };
    // Carol may approve nothing: one empty page, no cursor.
    let Reply::Pending { grants, next } = f
        .call(&f.carol, Request::PendingApprovals { page: one(None) })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(grants.is_empty());
    assert_eq!(
        next, None,
        "an empty page's cursor names a grant carol may not see"
    );
    // Bob pages one by one: every cursor is a grant on his page, and he sees alice's only.
    let mut after = None;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let Reply::Pending { grants, next } = f
            .call(&f.bob, Request::PendingApprovals { page: one(after) })
            .await
            .unwrap()
        else {
            panic!()
        };
        for g in &grants {
            seen.insert(Grant::decode(&g.view.grant.statement).unwrap().grant_id.0);
        }
        match next {
            None => break,
            Some(cursor) => {
                assert!(
                    alices.contains(&cursor) && seen.contains(&cursor),
                    "a cursor that is not on the page"
                );
                assert!(!bobs.contains(&cursor));
                after = Some(cursor);
            }
        }
    }
    assert_eq!(seen, alices);
    // The agent's own listing: grants awaiting approval are invisible to it, cursors too.
    let ready: std::collections::BTreeSet<_> =
        [f.grant("tickets/1").await.0, f.grant("tickets/2").await.0].into();
    let mut after = None;
    let mut listed = std::collections::BTreeSet::new();
    loop {
        let Reply::Grants { grants, next, .. } = f
            .call(
                &f.bot,
                Request::ListGrants {
                    page: one(after),
                    dir_size: None,
                },
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        for g in &grants {
            listed.insert(Grant::decode(&g.grant.statement).unwrap().grant_id.0);
        }
        match next {
            None => break,
            Some(cursor) => {
                assert!(
                    ready.contains(&cursor),
                    "the cursor names a grant awaiting approval"
                );
                after = Some(cursor);
            }
        }
    }
    assert_eq!(listed, ready);
}

/// Threat 54, defect 5 (found by trying it): invisible and direction-changing characters passed
/// the control-character check, so a purpose could show the approver one text and the model
/// another. Each class is refused when the grant is made, by the relay (for a client that
/// skips its own check) and by the signing client; ordinary non-ASCII text is not.
#[tokio::test]
async fn purposes_with_invisible_or_bidi_characters_are_refused_at_grant_time() {
    let f = fixture();
    for (class, purpose) in [
        ("right-to-left override", "pay \u{202E}lortnoc"),
        ("left-to-right isolate", "a\u{2066}b\u{2069}"),
        ("zero-width space", "ignore\u{200B}previous"),
        ("zero-width joiner", "a\u{200D}b"),
        ("tag characters", "triage\u{E0069}\u{E0067}\u{E006E}"),
        ("byte order mark", "\u{FEFF}triage"),
        ("Arabic letter mark", "a\u{061C}b"),
        ("soft hyphen", "tri\u{00AD}age"),
        ("variation selector", "a\u{FE0F}"),
        ("line separator", "one\u{2028}two"),
        ("private use", "\u{E000}"),
        ("braille blank", "a\u{2800}b"),
        ("zero-width non-joiner beside ASCII", "ig\u{200C}nore"),
        // Helper-found: unassigned default-ignorable code points (a font draws nothing).
        ("unassigned ignorable, BMP", "tri\u{FFF0}age"),
        ("unassigned ignorable, plane 14", "tri\u{E0080}age"),
        ("unassigned ignorable, plane 14, last", "tri\u{E0FFF}age"),
    ] {
        let (g, req) = f.grant_by(&f.alice, "tickets/1", purpose);
        let refusal = f.call(&f.alice, req).await.expect_err(class);
        assert_eq!(refusal.code, ErrorCode::BadRequest, "{class}");
        assert!(
            refusal.message.contains("U+"),
            "{class}: {}",
            refusal.message
        );
        assert!(
            f.relay.store.grant(&g.grant_id).unwrap().is_none(),
            "{class}"
        );
        assert!(
            g.sign(&f.alice.signing_key).is_err(),
            "{class}: the client signs it"
        );
    }
    // Ordinary writing that needs a joiner or a presentation selector is not refused: Persian
    // with a zero-width non-joiner, Hindi with a joiner, an emoji sequence, an emoji with VS16.
    for purpose in [
        "Überprüfung für Zoë — 税务 (Q3)",
        "naïve café",
        "שלום",
        "می\u{200C}خواهم",
        "क्\u{200D}ष",
        "👩\u{200D}💻 on call",
        "❤\u{FE0F} thanks",
    ] {
        let (_, req) = f.grant_by(&f.alice, "tickets/1", purpose);
        f.call(&f.alice, req).await.unwrap();
    }
}

/// Envelope ids sort by the millisecond the relay accepted each envelope
/// (`EnvelopeId::ordered`: when its upload began): a user's inbox lists the oldest first, and
/// someone paging through it meets an envelope sent meanwhile after their cursor rather than
/// behind it (a long upload begun before their cursor's envelope is the exception: docs/protocol.md).
/// With random ids (before 2026-12-07) the listing's order was random.
#[tokio::test]
async fn the_inbox_lists_envelopes_oldest_first_and_a_pager_meets_new_ones_ahead() {
    let f = fixture();
    let send = |i: usize| {
        let f = &f;
        async move {
            let grant_id = f.grant(&format!("tickets/{i}")).await;
            let (body, request) = f.sealed(grant_id, b"in order");
            let Reply::Submitted { envelope_id } =
                f.call_with_body(&f.bot, request, &body).await.unwrap()
            else {
                panic!("not submitted")
            };
            // Ids of one millisecond are in random order among themselves (and the test's
            // clock, set by hand, counts whole seconds).
            f.clock.advance(1);
            envelope_id
        }
    };
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(send(i).await);
    }
    // Alice pages three at a time; two more envelopes come while she is on the first page.
    let page = |after: Option<[u8; 16]>| Request::Inbox {
        page: Page { after, limit: 3 },
    };
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let Reply::Inbox { envelopes, next } = f.call(&f.alice, page(after)).await.unwrap() else {
            panic!("no inbox")
        };
        listed.extend(envelopes.iter().map(|e| e.envelope_id));
        if after.is_none() {
            for i in 6..8 {
                sent.push(send(i).await);
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(listed, sent, "not listed in the order they came");
}

/// Helper-found: an envelope's header showed the purpose its grant claims before the grant's
/// signature was judged, as it came. A relay serving a grant it altered (unsigned, so the row is
/// marked unverifiable) could still put a direction change or invisible characters before the
/// person in the inbox, the web page and `inbox --json`. Such a purpose is shown made safe.
#[tokio::test]
async fn an_unverified_purpose_is_shown_made_safe() {
    let f = fixture();
    let id = f.grant("tickets/1").await;
    let (body, request) = f.sealed(id, b"report");
    f.call_with_body(&f.bot, request, &body).await.unwrap();
    let mut envelopes = f.inbox(&f.alice).await;
    let mut view = envelopes.remove(0);
    let signed = view
        .grant
        .to_signed(crate::core::sign::StatementType::Grant)
        .unwrap();
    let mut g = Grant::decode(&signed.statement).unwrap();
    g.purpose = "pay \u{202E}lortnoc\u{200B}now".into();
    // What the relay serves instead: the altered grant, "signed" by a key that is not alice's.
    let other = crate::core::sign::SigningKey::generate().unwrap();
    let forged = crate::core::sign::Signed::sign(
        crate::core::sign::StatementType::Grant,
        g.encode(),
        &other,
    );
    view.grant = WireSigned::from_signed(&forged);
    let h = crate::client::describe(&f.alice, &[], &view);
    assert!(h.problem.is_some(), "an altered grant verified");
    assert!(
        !h.purpose.chars().any(crate::text::is_deceptive_char),
        "{:?}",
        h.purpose
    );
    assert!(h.purpose.starts_with("pay "), "{:?}", h.purpose);
}
