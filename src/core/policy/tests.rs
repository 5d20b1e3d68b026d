//! The policy engine: the shipped policy, scopes, and what it remembers between requests.

use super::*;

#[test]
fn the_shipped_policy_validates_and_a_broken_one_does_not() {
    CedarPolicy::default_policy().unwrap();
    assert!(CedarPolicy::new(
        "permit(principal, action, resource) when { resource.nope };",
        DEFAULT_CATALOG
    )
    .is_err());
    assert!(CedarPolicy::new("this is not cedar", DEFAULT_CATALOG).is_err());
    assert!(CedarPolicy::new(DEFAULT_POLICY, "[[resource]]\npattern = 1\n").is_err());
}

/// The schema's verdict is remembered per shape (principal kind, action, target kind): for
/// every shape, with contexts that differ in every value the relay fills in, a policy that
/// already decided a request of that shape decides each one as a fresh policy does (which
/// checks it against the schema).
#[test]
fn a_remembered_schema_verdict_decides_as_a_fresh_check() {
    let id = |kind, name: &str| SpiffeId::new("example.org", kind, name).unwrap();
    let (alice, bot, crm) = (
        id(PartyKind::User, "alice"),
        id(PartyKind::Agent, "bot"),
        id(PartyKind::Source, "crm"),
    );
    let attributes = Attributes {
        clearance: 2,
        roles: vec!["support".into()],
        scopes: vec!["tickets/*".into()],
    };
    let targets = [
        Target::Relay,
        Target::Resource {
            name: "tickets/1".into(),
        },
        Target::Grant {
            id: GrantId([1; 16]),
            requester: alice.clone(),
            agent: bot.clone(),
            resource: "tickets/1".into(),
            approved: true,
        },
        Target::Envelope {
            id: EnvelopeId([2; 16]),
            owner: alice.clone(),
        },
        Target::Agent { id: bot.clone() },
    ];
    let contexts = |target: &Target| {
        [
            Context {
                target: target.clone(),
                ..Context::default()
            },
            Context {
                target: target.clone(),
                user: Some(alice.clone()),
                agent: Some(bot.clone()),
                agent_attributes: Some(attributes.clone()),
                source_attributes: Some(attributes.clone()),
                now: 1_900_000_000,
                size: Some(u64::MAX),
                ..Context::default()
            },
            Context {
                target: target.clone(),
                agent_attributes: Some(Attributes::default()),
                agent_quarantined: true,
                size: Some(10),
                ..Context::default()
            },
        ]
    };
    let warm = CedarPolicy::default_policy().unwrap();
    // Checks every request against the schema: it forgets its verdicts before each.
    let cold = CedarPolicy::default_policy().unwrap();
    let (mut compared, mut admitted, mut refused) = (0, 0, 0);
    for kind in [
        PartyKind::User,
        PartyKind::Agent,
        PartyKind::Admin,
        PartyKind::Relay,
        PartyKind::Source,
    ] {
        let principal = Principal {
            id: match kind {
                PartyKind::User => alice.clone(),
                PartyKind::Agent => bot.clone(),
                PartyKind::Source => crm.clone(),
                k => id(k, "x"),
            },
            attributes: Some(attributes.clone()),
            quarantined: false,
        };
        for action in Action::ALL {
            for target in &targets {
                for ctx in contexts(target) {
                    cold.admitted.lock().unwrap().clear();
                    let expected = cold.authorize(&principal, action, &ctx);
                    assert_eq!(
                        warm.authorize(&principal, action, &ctx),
                        expected,
                        "{kind:?} {action:?} {target:?}"
                    );
                    match expected {
                        Decision::Deny { reasons }
                            if reasons.iter().any(|r| r.contains("schema admits no")) =>
                        {
                            refused += 1
                        }
                        _ => admitted += 1,
                    }
                    compared += 1;
                }
            }
        }
    }
    let shapes = warm.admitted.lock().unwrap().len();
    assert_eq!(shapes, 5 * Action::ALL.len() * targets.len());
    assert!(admitted > 20 && refused > 100, "{admitted} {refused}");
    assert_eq!(compared, 3 * shapes);
}

#[test]
fn scopes() {
    assert!(
        scope_matches("a/b", "a/b")
            && !scope_matches("a/b", "a/bc")
            && scope_matches("a/*", "a/bc")
    );
}
