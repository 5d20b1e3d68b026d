//! Zero trust: the Cedar policy table (role × action × classification), denials with reasons and
//! logged events, human approval end to end through the CLI, the monitor quarantining an agent
//! that seals to the wrong key, and the manual kill switch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use sealrelay::client::{AdminClient, AgentClient, GrantRequest, UserClient};
use sealrelay::core::directory::Attributes;
use sealrelay::core::envelope::keys::AgeRecipient;
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::core::policy::{
    Action, Authorizer, CedarPolicy, Context, Decision, Principal, Target, DEFAULT_CATALOG,
};
use sealrelay::ids::{PartyKind, SpiffeId};
use sealrelay::local::provision::{agent, user};
use sealrelay::ErrorKind;

fn id(kind: PartyKind, name: &str) -> SpiffeId {
    SpiffeId::new("sealrelay.local", kind, name).unwrap()
}

/// The intended rule, written independently of the Cedar text: what must be allowed.
#[allow(clippy::too_many_arguments)]
fn expected(
    kind: PartyKind,
    roles: &[&str],
    clearance: u8,
    action: Action,
    class: u8,
    approval: bool,
    own: bool,
    approved: bool,
) -> bool {
    match (kind, action) {
        (PartyKind::User, Action::Grant) => clearance >= class,
        (PartyKind::User, Action::Inbox) => true,
        (PartyKind::User, Action::Fetch | Action::Receipt) => own,
        (PartyKind::User, Action::Approve) => roles.contains(&"approver") && approval && !own,
        (PartyKind::User, Action::Audit) => roles.contains(&"auditor"),
        (
            PartyKind::User | PartyKind::Agent | PartyKind::Admin,
            Action::GetEntry | Action::Checkpoint,
        ) => true,
        (PartyKind::Agent, Action::ListGrants) => true,
        (PartyKind::Agent, Action::Submit) => own && (!approval || approved),
        (
            PartyKind::Admin,
            Action::PushDirectory | Action::Audit | Action::Quarantine | Action::Release,
        ) => true,
        _ => false,
    }
}

#[test]
fn policy_table_role_by_action_by_classification() {
    let policy = CedarPolicy::default_policy().unwrap();
    // One resource per classification, from the shipped catalog.
    let resources = [
        ("tickets/1", 0u8, false),
        ("customers/1", 1, false),
        ("incidents/1", 2, false),
        ("payroll/1", 3, true),
        ("secrets/1", 4, true),
    ];
    let principals: Vec<(PartyKind, &str, Vec<&str>, u8)> = vec![
        (PartyKind::User, "low", vec![], 0),
        (PartyKind::User, "mid", vec!["engineer"], 2),
        (PartyKind::User, "high", vec!["approver"], 4),
        (PartyKind::User, "auditor", vec!["auditor"], 1),
        (PartyKind::Agent, "bot", vec![], 0),
        (PartyKind::Admin, "admin", vec![], 0),
    ];
    let (mut allowed, mut denied) = (0, 0);
    for (kind, name, roles, clearance) in &principals {
        let me = id(*kind, name);
        let attributes = match kind {
            PartyKind::User => Some(Attributes {
                clearance: *clearance,
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                scopes: vec![],
            }),
            PartyKind::Agent => Some(Attributes {
                clearance: 0,
                roles: vec![],
                scopes: vec!["*".into()],
            }),
            _ => None,
        };
        let principal = Principal {
            id: me.clone(),
            attributes,
            quarantined: false,
        };
        for action in Action::ALL {
            for &(resource, class, approval) in &resources {
                for own in [true, false] {
                    for approved in [false, true] {
                        let other_user = id(PartyKind::User, "someone-else");
                        let target = match action {
                            Action::Grant => Target::Resource {
                                name: resource.into(),
                            },
                            Action::Submit | Action::Approve => Target::Grant {
                                id: sealrelay::ids::GrantId([1; 16]),
                                requester: if own && *kind == PartyKind::User {
                                    me.clone()
                                } else {
                                    other_user.clone()
                                },
                                agent: if own && *kind == PartyKind::Agent {
                                    me.clone()
                                } else {
                                    id(PartyKind::Agent, "other-agent")
                                },
                                resource: resource.into(),
                                approved,
                            },
                            Action::Fetch | Action::Receipt => Target::Envelope {
                                id: sealrelay::ids::EnvelopeId([2; 16]),
                                owner: if own { me.clone() } else { other_user.clone() },
                            },
                            Action::Quarantine | Action::Release => Target::Agent {
                                id: id(PartyKind::Agent, "x"),
                            },
                            _ => Target::Relay,
                        };
                        let ctx = Context {
                            target,
                            agent: Some(id(PartyKind::Agent, "bot")),
                            agent_attributes: Some(Attributes {
                                clearance: 0,
                                roles: vec![],
                                scopes: vec!["*".into()],
                            }),
                            now: 1_800_000_000,
                            ..Context::default()
                        };
                        // For Approve the "own" flag means "the approver asked for it".
                        let own_for_rule = match action {
                            Action::Approve => own && *kind == PartyKind::User,
                            _ => own,
                        };
                        let want = expected(
                            *kind,
                            roles,
                            *clearance,
                            action,
                            class,
                            approval,
                            own_for_rule,
                            approved,
                        );
                        let got = policy.authorize(&principal, action, &ctx);
                        match (&got, want) {
                            (Decision::Allow, true) => allowed += 1,
                            (Decision::Deny { reasons }, false) => {
                                assert!(!reasons.is_empty() && !reasons[0].is_empty(), "a deny without a reason");
                                denied += 1;
                            }
                            _ => panic!("{kind} {name} {action:?} {resource} own={own} approved={approved}: got {got:?}, want allow={want}"),
                        }
                    }
                }
            }
        }
    }
    eprintln!("policy table: {allowed} allowed and {denied} denied cells, all as intended");
    assert!(allowed > 50 && denied > 200);

    // Scope and quarantine.
    let alice = Principal {
        id: id(PartyKind::User, "alice"),
        attributes: Some(Attributes {
            clearance: 4,
            roles: vec![],
            scopes: vec![],
        }),
        quarantined: false,
    };
    let mut ctx = Context {
        target: Target::Resource {
            name: "tickets/1".into(),
        },
        agent_attributes: Some(Attributes {
            clearance: 0,
            roles: vec![],
            scopes: vec!["customers/*".into()],
        }),
        ..Context::default()
    };
    let d = policy.authorize(&alice, Action::Grant, &ctx);
    assert!(
        matches!(&d, Decision::Deny { reasons } if reasons[0].contains("scopes do not cover")),
        "{d:?}"
    );
    ctx.agent_attributes = Some(Attributes {
        clearance: 0,
        roles: vec![],
        scopes: vec!["tickets/*".into()],
    });
    assert!(policy.authorize(&alice, Action::Grant, &ctx).is_allow());
    ctx.agent_quarantined = true;
    assert!(!policy.authorize(&alice, Action::Grant, &ctx).is_allow());
    ctx.target = Target::Resource {
        name: "unknown/1".into(),
    };
    ctx.agent_quarantined = false;
    assert!(
        matches!(policy.authorize(&alice, Action::Grant, &ctx), Decision::Deny { reasons } if reasons[0].contains("not in the resource catalog"))
    );
    let bot = Principal {
        id: id(PartyKind::Agent, "bot"),
        attributes: Some(Attributes::default()),
        quarantined: true,
    };
    assert!(
        matches!(policy.authorize(&bot, Action::ListGrants, &Context::default()), Decision::Deny { reasons } if reasons[0].contains("quarantined-agents-stop"))
    );
}

#[test]
fn a_policy_that_fails_to_evaluate_denies() {
    // Valid against the schema, but overflows at evaluation: an error, so a deny.
    let overflow = r#"permit (principal is User, action == Action::"inbox", resource is Relay) when { principal.clearance * 9223372036854775807 > 1 };"#;
    let policy = CedarPolicy::new(overflow, DEFAULT_CATALOG).unwrap();
    let p = Principal {
        id: id(PartyKind::User, "alice"),
        attributes: Some(Attributes {
            clearance: 5,
            roles: vec![],
            scopes: vec![],
        }),
        quarantined: false,
    };
    match policy.authorize(&p, Action::Inbox, &Context::default()) {
        Decision::Deny { reasons } => {
            assert!(reasons[0].contains("evaluation error"), "{reasons:?}")
        }
        Decision::Allow => panic!("an evaluation error allowed"),
    }
    // And a relay refuses to start on a policy that does not validate.
    assert!(CedarPolicy::new(
        "permit(principal, action, resource) when { principal.nope };",
        DEFAULT_CATALOG
    )
    .is_err());
}

/// The shared in-process test relay (tests/common), with the parties these tests use.
type World = common::TestRelay;

async fn world() -> World {
    common::test_relay(
        &[
            user("alice", 3, &["approver"]),
            user("bob", 1, &["approver"]),
            user("carol", 0, &[]),
            agent("research-bot", &["tickets/*", "payroll/*", "incidents/*"]),
        ],
        |config| {
            config.monitor.alert_command = Some(format!(
                "echo \"$SEALRELAY_ALERT_AGENT $SEALRELAY_ALERT_REASON\" >> {}",
                config.data.with_file_name("alerts").display()
            ));
        },
    )
    .await
}

fn req(resource: &str) -> GrantRequest {
    GrantRequest {
        agent: "research-bot".into(),
        resource: resource.into(),
        purpose: "p".into(),
        ttl_secs: 600,
        max_bytes: 1 << 20,
    }
}

fn deny_events(w: &World) -> Vec<sealrelay::core::store::Event> {
    w.relay
        .relay()
        .store()
        .events(0, 10_000)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.kind == "deny")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearance_scope_and_read_actions_are_refused_and_logged() {
    let w = world().await;
    let carol = UserClient::connect(&w.ids[2], &w.addr).await.unwrap();
    let alice = UserClient::connect(&w.ids[0], &w.addr).await.unwrap();
    let bot = AgentClient::connect(&w.ids[3], &w.addr).await.unwrap();
    // Below the resource's clearance.
    let err = carol.grant(&req("incidents/7")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(
        err.message()
            .contains("clearance 0 is below its classification 2"),
        "{err}"
    );
    // At or above: allowed.
    alice.grant(&req("incidents/7")).await.unwrap();
    // Outside the agent's scopes.
    let err = alice.grant(&req("customers/1")).await.unwrap_err();
    assert!(err.message().contains("scopes do not cover"), "{err}");
    // Any read action by an agent.
    for request in [
        sealrelay::core::wire::Request::Inbox {
            page: sealrelay::core::wire::Page::first(),
        },
        sealrelay::core::wire::Request::Fetch {
            envelope_id: sealrelay::ids::EnvelopeId([0; 16]),
            from_piece: 0,
        },
        sealrelay::core::wire::Request::Events { from: 0, limit: 10 },
    ] {
        let err = bot.conn.call(request, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
        assert!(
            err.message().contains("no policy permits an agent"),
            "{err}"
        );
    }
    let denies = deny_events(&w);
    assert!(
        denies
            .iter()
            .any(|e| e.detail.contains("clearance 0 is below")),
        "{denies:?}"
    );
    assert!(denies
        .iter()
        .any(|e| e.detail.contains("scopes do not cover")));
    assert!(
        denies
            .iter()
            .filter(|e| e.actor.ends_with("/agent/research-bot"))
            .count()
            >= 3
    );
    assert!(
        denies.iter().all(|e| e.detail.contains("(policy ")),
        "deny events carry the policy hash"
    );
    w.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sealing_to_the_wrong_key_is_quarantined_then_released_and_the_kill_switch_works() {
    let w = world().await;
    let alice = UserClient::connect(&w.ids[0], &w.addr).await.unwrap();
    let bob = UserClient::connect(&w.ids[1], &w.addr).await.unwrap();
    let carol = UserClient::connect(&w.ids[2], &w.addr).await.unwrap();
    let carol_recipient = w.ids[2].age_identity.as_ref().unwrap().to_public();
    let alice_recipient = w.ids[0].age_identity.as_ref().unwrap().to_public();
    let bot = AgentClient::connect(&w.ids[3], &w.addr).await.unwrap();
    let mut n = 0;
    // Sealed to another user's key: only the requester's client can tell.
    let mut wrong_key = async |user: &UserClient<'_>, wrong: &AgeRecipient| {
        n += 1;
        user.grant(&req(&format!("tickets/{n}"))).await.unwrap();
        let g = bot.grants().await.unwrap().into_iter().next().unwrap();
        let mut body = Vec::new();
        sealrelay::core::envelope::seal(wrong, &mut &b"wrong key"[..], &mut body, 1).unwrap();
        let st = sealrelay::core::envelope::submission::Submission {
            grant_id: g.grant.grant_id,
            user: g.grant.user.clone(),
            agent: w.ids[3].id.clone().unwrap(),
            ciphertext_root: sealrelay::core::envelope::pieces::digest(&body),
            ciphertext_len: body.len() as u64,
        }
        .sign(&w.ids[3].signing_key);
        let env = bot
            .submit_raw(
                g.grant.grant_id,
                &st,
                body.len() as u64,
                &mut body.as_slice(),
            )
            .await
            .unwrap();
        let f = user.fetch(env, &w.dir, &mut Vec::new()).await.unwrap();
        assert_eq!(f.status, DeliveryStatus::Undecryptable);
    };
    // One user's claims count once (found by reading: three claims by one user quarantined an
    // agent that everyone shares).
    for _ in 0..3 {
        wrong_key(&alice, &carol_recipient).await;
    }
    bot.grants()
        .await
        .expect("one user alone quarantined a shared agent");
    // Two more users: three distinct claimants.
    wrong_key(&bob, &carol_recipient).await;
    wrong_key(&carol, &alice_recipient).await;
    // Quarantined automatically; the next send on the already-open connection is refused.
    alice.grant(&req("tickets/9")).await.unwrap_err(); // grants to a quarantined agent are refused too
    let err = bot.grants().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.message().contains("quarantined"), "{err}");
    let events = w.relay.relay().store().events(0, 10_000).unwrap();
    let q = events
        .iter()
        .find(|(_, e)| e.kind == "agent.quarantined")
        .expect("no quarantine event");
    assert!(q.1.detail.contains("3 undecryptable receipts"), "{:?}", q.1);
    let alerts = std::fs::read_to_string(w.dir.join("alerts")).unwrap_or_default();
    assert!(
        alerts.contains("research-bot") && alerts.contains("undecryptable"),
        "alert hook: {alerts:?}"
    );
    // A fresh connection is refused as well.
    let again = AgentClient::connect(&w.ids[3], &w.addr).await.unwrap();
    assert!(again
        .grants()
        .await
        .unwrap_err()
        .message()
        .contains("quarantined"));
    // Only an admin's release restores it.
    let admin = AdminClient::connect(&w.admin, &w.addr).await.unwrap();
    admin.release("research-bot").await.unwrap();
    let bot = AgentClient::connect(&w.ids[3], &w.addr).await.unwrap();
    alice.grant(&req("tickets/10")).await.unwrap();
    let g = bot.grants().await.unwrap().into_iter().next().unwrap();
    let env = bot
        .send(&g, &mut &b"right key now"[..], &w.dir)
        .await
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(
        alice.fetch(env, &w.dir, &mut out).await.unwrap().status,
        DeliveryStatus::Delivered
    );
    assert_eq!(out, b"right key now");

    // The manual kill switch, on an open connection.
    alice.grant(&req("tickets/11")).await.unwrap();
    assert_eq!(bot.grants().await.unwrap().len(), 1);
    admin
        .quarantine("research-bot", "suspicious")
        .await
        .unwrap();
    let err = bot.grants().await.unwrap_err();
    assert!(err.message().contains("quarantined"), "{err}");
    assert!(
        admin.quarantine("research-bot", "again").await.is_err(),
        "double quarantine"
    );
    admin.release("research-bot").await.unwrap();
    let bot = AgentClient::connect(&w.ids[3], &w.addr).await.unwrap();
    assert_eq!(
        bot.grants().await.unwrap().len(),
        1,
        "held grants come back after release"
    );
    let kinds: Vec<String> = w
        .relay
        .relay()
        .store()
        .events(0, 10_000)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "agent.quarantined").count(),
        2
    );
    assert_eq!(kinds.iter().filter(|k| *k == "agent.released").count(), 2);
    // Users cannot use the kill switch.
    let err = alice
        .conn
        .call(
            sealrelay::core::wire::Request::Quarantine {
                agent: "research-bot".into(),
                reason: "x".into(),
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    w.relay.shutdown().await;
}

#[test]
fn approval_flow_through_the_cli() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::ok_in(dir, &["keys", "init", "--dir", "keys"]);
    common::ok_in(
        dir,
        &[
            "user",
            "add",
            "alice",
            "--dir",
            "keys",
            "--out",
            "alice.id",
            "--clearance",
            "3",
            "--role",
            "approver",
        ],
    );
    common::ok_in(
        dir,
        &[
            "user",
            "add",
            "bob",
            "--dir",
            "keys",
            "--out",
            "bob.id",
            "--clearance",
            "1",
            "--role",
            "approver",
        ],
    );
    common::ok_in(
        dir,
        &[
            "user",
            "add",
            "carol",
            "--dir",
            "keys",
            "--out",
            "carol.id",
            "--clearance",
            "1",
        ],
    );
    common::ok_in(
        dir,
        &[
            "agent",
            "add",
            "research-bot",
            "--dir",
            "keys",
            "--out",
            "bot.id",
            "--scope",
            "payroll/*",
        ],
    );
    let (server, addr) = common::serve(dir, &[]);
    let r = ["--relay", addr.as_str()];

    let grant = common::ok_in(
        dir,
        &[
            &[
                "grant",
                "--identity",
                "alice.id",
                "--agent",
                "research-bot",
                "--resource",
                "payroll/2026-11",
                "--purpose",
                "quarterly close",
            ][..],
            &r,
        ]
        .concat(),
    );
    let grant = grant.trim().to_owned();
    // Invisible to the agent until approved.
    let out = common::ok_in(dir, &[&["grants", "--identity", "bot.id"][..], &r].concat());
    assert!(out.contains("no open grants"), "{out}");
    // The requester cannot approve their own grant (and does not even see it as pending).
    let out = common::ok_in(
        dir,
        &[&["approvals", "--identity", "alice.id"][..], &r].concat(),
    );
    assert!(out.contains("no grants await"), "{out}");
    let (code, _, err) = common::run_in(
        dir,
        &[&["approve", "--identity", "alice.id", &grant][..], &r].concat(),
    );
    assert_ne!(code, 0, "{err}");
    // A user without the approver role cannot either.
    let (code, _, _) = common::run_in(
        dir,
        &[&["approve", "--identity", "carol.id", &grant][..], &r].concat(),
    );
    assert_ne!(code, 0);
    // An approval of a modified grant (another purpose) does not count.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bob = match sealrelay::local::identity_file::load_any(&dir.join("bob.id")).unwrap() {
            sealrelay::core::identity::IdentityFile::Sealrelay(b) => *b,
            _ => panic!(),
        };
        let client = UserClient::connect(&bob, &addr).await.unwrap();
        let pending = client.pending_approvals().await.unwrap();
        assert_eq!(pending.len(), 1);
        let mut modified = pending[0].grant.clone();
        modified.purpose = "something else".into();
        let err = client
            .approve_statement(&modified.encode(), modified.grant_id)
            .await
            .unwrap_err();
        assert!(err.message().contains("modified"), "{err}");
    });
    let out = common::ok_in(
        dir,
        &[&["approvals", "--identity", "bob.id"][..], &r].concat(),
    );
    assert!(
        out.contains(&grant) && out.contains("payroll/2026-11"),
        "{out}"
    );
    let out = common::ok_in(
        dir,
        &[&["approve", "--identity", "bob.id", &grant][..], &r].concat(),
    );
    assert!(out.starts_with("approved grant"), "{out}");
    // Now the agent sees it and can fulfil it.
    let out = common::ok_in(dir, &[&["grants", "--identity", "bot.id"][..], &r].concat());
    assert!(out.contains(&grant), "{out}");
    std::fs::write(dir.join("data.txt"), "payroll figures").unwrap();
    common::ok_in(
        dir,
        &[
            &[
                "send",
                "--identity",
                "bot.id",
                "--grant",
                &grant,
                "data.txt",
            ][..],
            &r,
        ]
        .concat(),
    );
    common::ok_in(
        dir,
        &[
            &["fetch", "--identity", "alice.id", "--all", "-o", "got"][..],
            &r,
        ]
        .concat(),
    );
    common::terminate(server);
}

#[test]
fn policy_reload_on_sighup_takes_effect_at_once_and_is_logged() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::admin_world(dir, &[("alice", &["auditor"])]);
    std::fs::write(dir.join("p.cedar"), sealrelay::core::policy::DEFAULT_POLICY).unwrap();
    // The stricter policy below is proved before it is put in force (cvc5); where the solver is
    // missing, the relay is told to run it unproven.
    let accept = if common::have_tool("cvc5") {
        ""
    } else {
        "accept_broken_properties = [\"*\"]\n"
    };
    std::fs::write(
        dir.join("relay.toml"),
        format!("policy_file = \"p.cedar\"\n{accept}"),
    )
    .unwrap();
    let (server, addr) = common::serve(dir, &["--config", "relay.toml"]);
    let r = ["--relay", addr.as_str()];
    let grant = |resource: &str| {
        common::run_in(
            dir,
            &[
                &[
                    "grant",
                    "--identity",
                    "alice.id",
                    "--agent",
                    "research-bot",
                    "--resource",
                    resource,
                ][..],
                &r,
            ]
            .concat(),
        )
    };
    assert_eq!(grant("tickets/1").0, 0);
    // The newest events, as an auditor reads them.
    let tail = || {
        common::ok_in(
            dir,
            &[
                &[
                    "audit",
                    "tail",
                    "--identity",
                    "alice.id",
                    "--json",
                    "-n",
                    "50",
                ][..],
                &r,
            ]
            .concat(),
        )
    };
    let reloads = || {
        tail()
            .lines()
            .filter(|l| l.contains("policy.reload"))
            .count()
    };
    // SIGHUP, then wait until the reload is logged (proving a policy with cvc5 takes a while
    // on a busy machine: a fixed pause was not always enough).
    let hup = || {
        let before = reloads();
        Command::new("kill")
            .args(["-HUP", &server.id().to_string()])
            .status()
            .unwrap();
        let started = std::time::Instant::now();
        while reloads() == before {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(120),
                "the reload was never logged"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    // A stricter policy: no grants at all.
    let strict: String = sealrelay::core::policy::DEFAULT_POLICY.replace(
        "@id(\"user-grant-within-clearance-and-scope\")\npermit",
        "@id(\"user-grant-within-clearance-and-scope\")\nforbid",
    );
    assert_ne!(strict, sealrelay::core::policy::DEFAULT_POLICY);
    std::fs::write(dir.join("p.cedar"), &strict).unwrap();
    hup();
    let (code, _, err) = grant("tickets/2");
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("forbidden by policy user-grant-within-clearance-and-scope"),
        "{err}"
    );
    // An invalid policy is refused; the strict one stays.
    std::fs::write(
        dir.join("p.cedar"),
        "permit(principal, action, resource) when { principal.nope };",
    )
    .unwrap();
    hup();
    assert_eq!(grant("tickets/3").0, 6);
    let out = tail();
    let reloads: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("policy.reload"))
        .collect();
    assert_eq!(reloads.len(), 2, "{out}");
    assert!(
        reloads[0].contains("\"decision\":\"allow\"")
            && reloads[1].contains("\"decision\":\"deny\""),
        "{reloads:?}"
    );
    common::terminate(server);
    // A relay refuses to start on an invalid policy.
    let out = Command::new(common::bin())
        .args([
            "serve",
            "--config",
            "relay.toml",
            "--dir",
            "keys",
            "--data",
            "data",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir)
        .envs(common::store_env(dir))
        .env("SEALRELAY_METRICS_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to start on this policy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_say_when_to_retry() {
    let w = common::test_relay(&[user("alice", 0, &[])], |config| {
        config.requests_per_second = 1;
        config.request_burst = 3;
    })
    .await;
    let alice = UserClient::connect(&w.ids[0], &w.addr).await.unwrap();
    for _ in 0..3 {
        alice.inbox().await.unwrap();
    }
    let err = alice.inbox().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(err.message().contains("rate limited, retry after"), "{err}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    alice.inbox().await.unwrap();
    w.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_comes_after_expiry_leaves_the_grant_closed() {
    let w = world().await;
    let alice = UserClient::connect(&w.ids[0], &w.addr).await.unwrap();
    let bob = UserClient::connect(&w.ids[1], &w.addr).await.unwrap();
    let bot = AgentClient::connect(&w.ids[3], &w.addr).await.unwrap();
    let mut r = req("payroll/1");
    r.ttl_secs = 1;
    let gid = alice.grant(&r).await.unwrap();
    assert_eq!(bob.pending_approvals().await.unwrap().len(), 1);
    w.clock.advance(2);
    assert!(
        bob.pending_approvals().await.unwrap().is_empty(),
        "an expired grant is still pending"
    );
    let record = w.relay.relay().store().grant(&gid).unwrap().unwrap();
    let err = bob
        .approve_statement(&record.grant.statement, gid)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.message().contains("expired"), "{err}");
    assert!(bot.grants().await.unwrap().is_empty());
    assert!(w
        .relay
        .relay()
        .store()
        .grant(&gid)
        .unwrap()
        .unwrap()
        .approval
        .is_none());
    w.relay.shutdown().await;
}

/// Principal entities are cached: a party whose clearance or quarantine changes is judged
/// on what it is now, not on the entity built for it before.
#[test]
fn a_changed_party_is_judged_anew() {
    let policy = CedarPolicy::default_policy().unwrap();
    let alice = SpiffeId::new("t.local", PartyKind::User, "alice").unwrap();
    let bot = SpiffeId::new("t.local", PartyKind::Agent, "bot").unwrap();
    let user = |clearance| Principal {
        id: alice.clone(),
        attributes: Some(Attributes {
            clearance,
            ..Attributes::default()
        }),
        quarantined: false,
    };
    let ctx = Context {
        target: Target::Resource {
            name: "customers/1".into(),
        },
        agent_attributes: Some(Attributes {
            scopes: vec!["customers/*".into()],
            ..Attributes::default()
        }),
        user: Some(alice.clone()),
        agent: Some(bot.clone()),
        ..Context::default()
    };
    let allowed = |p: &Principal, a: Action| policy.authorize(p, a, &ctx).is_allow();
    assert!(allowed(&user(1), Action::Grant));
    assert!(!allowed(&user(0), Action::Grant));
    assert!(allowed(&user(1), Action::Grant));
    let agent = |quarantined| Principal {
        id: bot.clone(),
        attributes: ctx.agent_attributes.clone(),
        quarantined,
    };
    let relay = Context {
        target: Target::Relay,
        ..ctx.clone()
    };
    let lists = |quarantined| {
        policy
            .authorize(&agent(quarantined), Action::ListGrants, &relay)
            .is_allow()
    };
    assert!(lists(false));
    assert!(!lists(true));
    assert!(lists(false));
}
