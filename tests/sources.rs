//! Sources as their own party (docs/sources.md), against a real relay in this process: a
//! compromised agent that dispatches what it does not hold, to a source that does not serve it,
//! or alters the grant on the way (threat 49, refused by the relay); a hooked relay that
//! forwards forged assignments (refused by the source: nothing read, nothing signed); the data
//! owner's policy refusing what the relay's policy allows; and the person's view: who sealed
//! it, and a source signature that does not verify is never opened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::path::Path;
use std::sync::{Arc, Mutex};

use sealrelay::client::{AgentClient, SourceClient, UserClient};
use sealrelay::connect::Connectors;
use sealrelay::core::dispatch::{Dispatch, RefusalReason};
use sealrelay::core::grant::DeliveryStatus;
use sealrelay::core::identity::Identity;
use sealrelay::core::source_policy::SourcePolicy;
use sealrelay::core::store::{AssignmentRecord, Store, StoredSigned};
use sealrelay::core::wire::{Reply, Request, SubmissionState, WireSigned};
use sealrelay::ids::{PartyKind, SpiffeId};
use sealrelay::local::identity_file::save;
use sealrelay::local::provision::{agent, source, user};
use sealrelay::source::SourceService;

/// A command connector that counts its runs in `hits` and prints a record naming the resource.
fn connectors(dir: &Path) -> Connectors {
    let text = format!(
        "[[connector]]\nresources = \"customers/*\"\ncommand = [\"/bin/sh\", \"-c\", \"echo run >> {hits}; printf 'customer record of %s' \\\"$SEALRELAY_RESOURCE\\\"\"]\n",
        hits = dir.join("hits").display()
    );
    Connectors::parse(&text, dir).unwrap()
}

fn hits(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("hits")).map_or(0, |s| s.lines().count())
}

fn service(id: &Identity, addr: &str, dir: &Path, policy: SourcePolicy) -> SourceService {
    service_with(id, addr, dir, policy, connectors(dir))
}

fn service_with(
    id: &Identity,
    addr: &str,
    dir: &Path,
    policy: SourcePolicy,
    connectors: Connectors,
) -> SourceService {
    // The service's own copy of the identity, as `source serve` loads it.
    let file = dir.join("source-service.id");
    save(&file, id, true).unwrap();
    let id = sealrelay::local::identity_file::load(&file, Some(PartyKind::Source)).unwrap();
    SourceService::new(
        Arc::new(id),
        addr.to_owned(),
        connectors,
        policy,
        dir.to_path_buf(),
    )
}

fn request(resource: &str) -> sealrelay::client::GrantRequest {
    let mut r = common::grant_request(resource);
    r.purpose = "check the account".into();
    r
}

/// Sends a dispatch the agent signed, however it was made: the raw client of a compromised agent.
async fn raw_dispatch(bot: &AgentClient<'_>, d: &Dispatch) -> Result<Reply, String> {
    let signed = d.sign(&bot.identity().signing_key);
    bot.conn
        .call(
            Request::Dispatch {
                dispatch: WireSigned::from_signed(&signed),
            },
            None,
        )
        .await
        .map(|(r, _)| r)
        .map_err(|e| e.message().to_owned())
}

struct World {
    w: common::TestRelay,
    store: Arc<common::hooked::Hooked>,
}

impl World {
    fn id(&self, i: usize) -> &Identity {
        &self.w.ids[i]
    }
    fn spiffe(&self, kind: PartyKind, name: &str) -> SpiffeId {
        SpiffeId::new(
            self.w.ids[0].id.as_ref().unwrap().trust_domain(),
            kind,
            name,
        )
        .unwrap()
    }
}

/// alice and bob (users), research-bot and other-bot (agents), crm (serves customers/*) and
/// tix (serves tickets/*).
async fn world() -> World {
    world_with(|_| {}).await
}

async fn world_with(adjust: impl FnOnce(&mut sealrelay::server::RelayConfig)) -> World {
    let store = Arc::new(common::hooked::Hooked::in_memory());
    let w = common::test_relay_with(
        &[
            user("alice", 1, &[]),
            user("bob", 1, &[]),
            agent("research-bot", &["customers/*", "tickets/*"]),
            agent("other-bot", &["customers/*"]),
            source("crm", &["customers/*"]),
            source("tix", &["tickets/*"]),
        ],
        adjust,
        Some(store.clone() as Arc<dyn Store>),
    )
    .await;
    World { w, store }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_agent_cannot_have_a_source_fill_what_it_does_not_hold() {
    let world = world().await;
    let addr = world.w.addr.clone();
    let alice = UserClient::connect(world.id(0), &addr).await.unwrap();
    let bot = AgentClient::connect(world.id(2), &addr).await.unwrap();
    let mine = alice.grant(&request("customers/acme")).await.unwrap();
    let mut theirs = request("customers/acme");
    theirs.agent = "other-bot".into();
    let theirs = alice.grant(&theirs).await.unwrap();

    let listed = bot.grants().await.unwrap();
    assert_eq!(listed.len(), 1, "the bot sees only its own grant");
    let g = &listed[0];
    assert_eq!(
        g.sources,
        vec!["crm".to_owned()],
        "the relay names the source that serves it"
    );
    let crm = world.spiffe(PartyKind::Source, "crm");
    let honest = Dispatch {
        grant_id: mine,
        grant_digest: g.grant_digest,
        user: g.grant.user.clone(),
        agent: g.grant.agent.clone(),
        source: crm.clone(),
        resource: g.grant.resource.clone(),
        time: sealrelay::clock::now(),
    };
    let cases: Vec<(&str, Dispatch, &str)> = vec![
        (
            "a grant it does not hold",
            Dispatch {
                grant_id: theirs,
                ..honest.clone()
            },
            "no such grant",
        ),
        (
            "a source that does not serve the resource",
            Dispatch {
                source: world.spiffe(PartyKind::Source, "tix"),
                ..honest.clone()
            },
            "denied by policy",
        ),
        (
            "a source that is not enrolled",
            Dispatch {
                source: world.spiffe(PartyKind::Source, "nobody"),
                ..honest.clone()
            },
            "denied by policy",
        ),
        (
            "another resource",
            Dispatch {
                resource: "customers/globex".into(),
                ..honest.clone()
            },
            "another resource",
        ),
        (
            "another user",
            Dispatch {
                user: world.spiffe(PartyKind::User, "bob"),
                ..honest.clone()
            },
            "another user or agent",
        ),
        (
            "another signed grant under the same id",
            Dispatch {
                grant_digest: [9; 32],
                ..honest.clone()
            },
            "does not name this grant",
        ),
        (
            "in another agent's name",
            Dispatch {
                agent: world.spiffe(PartyKind::Agent, "other-bot"),
                ..honest.clone()
            },
            "another agent",
        ),
    ];
    for (what, d, needle) in &cases {
        let e = raw_dispatch(&bot, d).await.expect_err(what);
        assert!(e.contains(needle), "{what}: {e}");
    }
    // Nothing of that reached the source.
    let crm_client = SourceClient::connect(world.id(4), &addr).await.unwrap();
    assert!(crm_client.assignments().await.unwrap().is_empty());
    // The honest dispatch is queued; the same again is answered as done; another is refused.
    assert_eq!(raw_dispatch(&bot, &honest).await.unwrap(), Reply::Done);
    assert_eq!(raw_dispatch(&bot, &honest).await.unwrap(), Reply::Done);
    let later = Dispatch {
        time: honest.time + 1,
        ..honest.clone()
    };
    let e = raw_dispatch(&bot, &later).await.unwrap_err();
    assert!(e.contains("already dispatched"), "{e}");
    assert_eq!(crm_client.assignments().await.unwrap().len(), 1);
    // The grant is the source's now: the agent cannot fill it itself.
    let e = bot
        .send(g, &mut &b"sealed by the agent"[..], &world.w.dir)
        .await
        .unwrap_err();
    assert!(e.message().contains("already dispatched"), "{e}");
    // A source cannot fill what was dispatched to another one, nor list it.
    let tix = SourceClient::connect(world.id(5), &addr).await.unwrap();
    assert!(tix.assignments().await.unwrap().is_empty());
    let status = bot.submission_status(mine).await.unwrap();
    assert_eq!(status.state, SubmissionState::Queued);
    assert_eq!(status.source.as_deref(), Some("crm"));
}

/// What the forging relay serves instead of each assignment's dispatch (set by the test).
static SWAP: Mutex<Option<StoredSigned>> = Mutex::new(None);

fn forge_resource(a: &mut AssignmentRecord) {
    // The dispatch re-made for another resource, its signature kept.
    let mut d = Dispatch::decode(&a.dispatch.statement).unwrap();
    d.resource = "customers/globex".into();
    a.dispatch.statement = d.encode();
}

fn forge_user(a: &mut AssignmentRecord) {
    let mut d = Dispatch::decode(&a.dispatch.statement).unwrap();
    d.user = SpiffeId::new(d.user.trust_domain(), PartyKind::User, "bob").unwrap();
    a.dispatch.statement = d.encode();
}

fn forge_swap(a: &mut AssignmentRecord) {
    // A dispatch the agent really signed, but for another grant.
    if let Some(s) = SWAP.lock().unwrap().clone() {
        a.dispatch = s;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_refuses_forged_assignments_and_the_data_owners_policy_is_its_own() {
    let world = world().await;
    let addr = world.w.addr.clone();
    let dir = world.w.dir.clone();
    let alice = UserClient::connect(world.id(0), &addr).await.unwrap();
    let bot = AgentClient::connect(world.id(2), &addr).await.unwrap();
    let crm_client = SourceClient::connect(world.id(4), &addr).await.unwrap();
    let own_record_only = SourcePolicy::new(
        r#"@id("own-record-only")
        permit (principal is User, action == Action::"fill", resource is Resource)
        when { resource.first == "customers" && resource.last == principal.name };"#,
    )
    .unwrap();
    let crm = service(world.id(4), &addr, &dir, own_record_only);

    let own = alice.grant(&request("customers/alice")).await.unwrap();
    let other = alice.grant(&request("customers/bob")).await.unwrap();
    let spare = alice.grant(&request("customers/alice-2")).await.unwrap();
    let mut other_grant = None;
    for g in bot.grants().await.unwrap() {
        if g.grant.grant_id == other {
            other_grant = Some(g.clone());
        }
        if g.grant.grant_id == spare {
            // The swap: a dispatch the agent signed for `spare` (never sent), served by the
            // forging relay as the dispatch of every assignment.
            let d = Dispatch {
                grant_id: spare,
                grant_digest: g.grant_digest,
                user: g.grant.user.clone(),
                agent: g.grant.agent.clone(),
                source: world.spiffe(PartyKind::Source, "crm"),
                resource: g.grant.resource.clone(),
                time: sealrelay::clock::now(),
            }
            .sign(&world.id(2).signing_key);
            *SWAP.lock().unwrap() = Some(StoredSigned {
                statement: d.statement,
                signature: d.signature.to_vec(),
            });
        } else {
            bot.dispatch(&g, "crm").await.unwrap();
        }
    }
    assert!(SWAP.lock().unwrap().is_some());

    // A hooked relay forwards forged assignments: each is refused by the source's own checks,
    // nothing is read and nothing is signed.
    for (what, forge, needle) in [
        (
            "another resource",
            forge_resource as common::hooked::Forge,
            "does not verify",
        ),
        ("another user", forge_user, "does not verify"),
        (
            "another grant's dispatch",
            forge_swap,
            "does not name this grant",
        ),
    ] {
        *world.store.forge.lock().unwrap() = Some(forge);
        let listed = crm_client.assignments().await.unwrap();
        assert!(!listed.is_empty(), "{what}");
        for l in &listed {
            let e = l.verdict.as_ref().map(|_| ()).expect_err(what);
            assert!(e.message().contains(needle), "{what}: {}", e.message());
        }
        let round = crm.round(&crm_client).await.unwrap();
        assert_eq!(round.filled + round.refused, 0, "{what}: {round:?}");
        assert_eq!(hits(&dir), 0, "{what}: the connector ran");
    }
    *world.store.forge.lock().unwrap() = None;

    // Served as made: the data owner's policy fills alice's own record and refuses bob's,
    // which the relay's policy allowed.
    let round = crm.round(&crm_client).await.unwrap();
    assert_eq!((round.filled, round.refused), (1, 1), "{round:?}");
    assert_eq!(hits(&dir), 1, "only the allowed record was read");
    let status = bot.submission_status(other).await.unwrap();
    assert_eq!(status.state, SubmissionState::RefusedAtSource);
    let refusal = status.refusal.clone().expect("the refusal, verified");
    assert_eq!(refusal.reason, RefusalReason::Policy);
    assert_eq!(refusal.grant_id, other);
    let delivery = sealrelay::mcp::Delivery::of(other, &status);
    assert_eq!(
        delivery.steps,
        vec![
            "queued at source crm".to_owned(),
            "refused at source: the data owner's policy at the source does not allow it".into()
        ]
    );
    // The policy's own words (its id) stay at the source.
    assert!(!serde_json::to_string(&delivery)
        .unwrap()
        .contains("own-record-only"));
    let filled = bot.submission_status(own).await.unwrap();
    assert_eq!(filled.state, SubmissionState::Submitted);
    // A refusal at the source is final: the agent cannot fill the grant itself either.
    let e = bot
        .send(
            &other_grant.unwrap(),
            &mut &b"the agent's own copy"[..],
            &dir,
        )
        .await
        .unwrap_err();
    assert!(e.message().contains("already dispatched"), "{e}");
    // The person sees where each of their grants is.
    let mine = alice.my_grants().await.unwrap();
    let progress = |g| {
        mine.iter()
            .find(|m| m.grant.grant_id == g)
            .unwrap()
            .progress
    };
    assert_eq!(
        progress(other),
        sealrelay::core::wire::GrantProgress::RefusedAtSource
    );
    assert_eq!(progress(own), sealrelay::core::wire::GrantProgress::Sent);
    // Nothing was sent for the refused one, and a refusal is final.
    let inbox = alice.inbox_headers().await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert!(crm_client.assignments().await.unwrap().is_empty());
    let round = crm.round(&crm_client).await.unwrap();
    assert_eq!(round.listed, 0);
    let metrics = crm.metrics.render();
    for line in [
        "sealrelay_source_filled_total 1",
        "sealrelay_source_refused_total 1",
        "sealrelay_source_failures_total 6",
        "sealrelay_source_queue_depth 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_sees_who_sealed_it_and_a_forged_source_signature_is_never_opened() {
    let world = world().await;
    let addr = world.w.addr.clone();
    let dir = world.w.dir.clone();
    save(&dir.join("alice.id"), world.id(0), false).unwrap();
    let alice = UserClient::connect(world.id(0), &addr).await.unwrap();
    let bot = AgentClient::connect(world.id(2), &addr).await.unwrap();
    let crm_client = SourceClient::connect(world.id(4), &addr).await.unwrap();
    let crm = service(
        world.id(4),
        &addr,
        &dir,
        SourcePolicy::default_policy().unwrap(),
    );
    let kept = alice.grant(&request("customers/acme")).await.unwrap();
    let altered = alice.grant(&request("customers/globex")).await.unwrap();
    for g in bot.grants().await.unwrap() {
        bot.dispatch(&g, "crm").await.unwrap();
    }
    assert_eq!(crm.round(&crm_client).await.unwrap().filled, 2);
    let kept_env = bot
        .submission_status(kept)
        .await
        .unwrap()
        .envelope_id
        .unwrap();
    let altered_env = bot
        .submission_status(altered)
        .await
        .unwrap()
        .envelope_id
        .unwrap();
    *world.store.tamper.lock().unwrap() = Some(altered_env);

    let headers = alice.inbox_headers().await.unwrap();
    let h = headers.iter().find(|h| h.envelope_id == kept_env).unwrap();
    assert!(h.verified(), "{:?}", h.problem);
    assert_eq!(h.sealed_by.as_ref().unwrap().name(), "crm");
    assert_eq!(
        h.provenance(),
        "sealed by source crm at the data, for research-bot"
    );
    let json = h.to_json();
    assert!(json.sealed_by.as_deref().unwrap().ends_with("/source/crm"));
    let h = headers
        .iter()
        .find(|h| h.envelope_id == altered_env)
        .unwrap();
    assert!(!h.verified());
    assert!(
        h.problem
            .as_deref()
            .unwrap()
            .contains("the source's signed statement does not verify"),
        "{:?}",
        h.problem
    );
    // The terminal says the same.
    let (code, out, err) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let addr = addr.clone();
        move || common::run_in(&dir, &["inbox", "--identity", "alice.id", "--relay", &addr])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("sealed    by source crm at the data, for research-bot"),
        "{out}"
    );
    // The forged one is never opened: an undecryptable receipt says so, signed.
    let mut plaintext = Vec::new();
    let fetched = alice
        .fetch(altered_env, &dir, &mut plaintext)
        .await
        .unwrap();
    assert_eq!(fetched.status, DeliveryStatus::Undecryptable);
    assert!(plaintext.is_empty());
    let mut plaintext = Vec::new();
    let fetched = alice.fetch(kept_env, &dir, &mut plaintext).await.unwrap();
    assert_eq!(fetched.status, DeliveryStatus::Delivered);
    assert_eq!(plaintext, b"customer record of customers/acme");
    // The agent never held the forged envelope's bytes: its undecryptable receipt is not
    // counted against it (the status shows the outcome, and the agent is not quarantined).
    let s = bot.submission_status(altered).await.unwrap();
    assert_eq!(s.state, SubmissionState::Undecryptable);
    assert!(bot.grants().await.is_ok(), "the agent still works");
}

/// Who pays (docs/security.md, threat 51): a refusal at the source and an `undecryptable`
/// receipt for an envelope a source sealed count against nobody; a dispatch the agent could
/// have avoided (a source its grant listing did not name) counts against the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_at_the_source_costs_the_agent_nothing_and_a_bad_dispatch_does() {
    let world = world_with(|c| {
        c.monitor.max_denials = 2;
        c.monitor.max_undecryptable = 1;
    })
    .await;
    let addr = world.w.addr.clone();
    let dir = world.w.dir.clone();
    let alice = UserClient::connect(world.id(0), &addr).await.unwrap();
    let bot = AgentClient::connect(world.id(2), &addr).await.unwrap();
    let crm_client = SourceClient::connect(world.id(4), &addr).await.unwrap();
    let nobody = SourcePolicy::new("forbid (principal, action, resource);").unwrap();
    let refusing = service(world.id(4), &addr, &dir, nobody);
    for i in 0..3 {
        alice
            .grant(&request(&format!("customers/r{i}")))
            .await
            .unwrap();
    }
    for g in bot.grants().await.unwrap() {
        bot.dispatch(&g, "crm").await.unwrap();
    }
    assert_eq!(refusing.round(&crm_client).await.unwrap().refused, 3);
    assert_eq!(
        bot.grants().await.unwrap().len(),
        0,
        "the refused grants are not listed"
    );
    // Still serving: three refusals by the data owner's policy cost it nothing.
    let sealed = alice.grant(&request("customers/acme")).await.unwrap();
    let g = bot.grants().await.unwrap().pop().unwrap();
    bot.dispatch(&g, "crm").await.unwrap();
    let filling = service(
        world.id(4),
        &addr,
        &dir,
        SourcePolicy::default_policy().unwrap(),
    );
    assert_eq!(filling.round(&crm_client).await.unwrap().filled, 1);
    let env = bot
        .submission_status(sealed)
        .await
        .unwrap()
        .envelope_id
        .unwrap();
    // An undecryptable receipt for what the source sealed (the store serves it altered): with
    // one undecryptable receipt enough to quarantine, the agent is not quarantined.
    *world.store.tamper.lock().unwrap() = Some(env);
    let mut out = Vec::new();
    let fetched = alice.fetch(env, &dir, &mut out).await.unwrap();
    assert_eq!(fetched.status, DeliveryStatus::Undecryptable);
    // One more waits at the source when the agent is quarantined below: it is held there too.
    let held = alice.grant(&request("customers/held")).await.unwrap();
    let g = bot.grants().await.expect("not quarantined").pop().unwrap();
    bot.dispatch(&g, "crm").await.unwrap();
    assert_eq!(crm_client.assignments().await.unwrap().len(), 1);
    alice.grant(&request("customers/next")).await.unwrap();
    let g = bot.grants().await.expect("not quarantined").pop().unwrap();
    // A dispatch to a source the listing did not name for the grant: the agent's doing.
    assert_eq!(g.sources, vec!["crm".to_owned()]);
    for i in 0..2 {
        let tix = world.spiffe(PartyKind::Source, "tix");
        let d = Dispatch {
            grant_id: g.grant.grant_id,
            grant_digest: g.grant_digest,
            user: g.grant.user.clone(),
            agent: g.grant.agent.clone(),
            source: tix,
            resource: g.grant.resource.clone(),
            time: sealrelay::clock::now(),
        };
        let e = raw_dispatch(&bot, &d).await.unwrap_err();
        // The second denial reaches the threshold: the relay quarantines the agent and closes
        // its connection as it answers.
        assert!(
            e.contains("denied by policy") || (i == 1 && e.contains("quarantined")),
            "{e}"
        );
    }
    let bot = AgentClient::connect(world.id(2), &addr).await.unwrap();
    let e = bot.grants().await.unwrap_err();
    assert!(e.message().contains("quarantined"), "{e}");
    assert!(
        crm_client.assignments().await.unwrap().is_empty(),
        "a quarantined agent's grant {} was still listed to its source",
        sealrelay::ids::hex(held)
    );
}

/// Helper-found: an agent's upload that broke after the agent had dispatched the grant to a
/// source was parked for the agent, and the source, whose own upload of the grant was then
/// "another upload for this grant in progress", could not fill it for `upload_resume_secs`.
/// Such an upload is not kept now: the agent can no longer fill that grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_upload_broken_after_its_dispatch_does_not_keep_the_source_out() {
    let world = world().await;
    let addr = world.w.addr.clone();
    let dir = world.w.dir.clone();
    let (alice_id, bot_id) = (world.id(0), world.id(2));
    let alice = UserClient::connect(alice_id, &addr).await.unwrap();
    let bot = AgentClient::connect(bot_id, &addr).await.unwrap();
    let crm_client = SourceClient::connect(world.id(4), &addr).await.unwrap();
    let crm = service(
        world.id(4),
        &addr,
        &dir,
        SourcePolicy::default_policy().unwrap(),
    );
    let mut req = request("customers/acme");
    req.max_bytes = 4 << 20;
    let grant = alice.grant(&req).await.unwrap();
    let g = bot.grants().await.unwrap().pop().unwrap();
    // The agent starts sending it itself: a sealed megabyte, half of it sent.
    let (body, statement) =
        common::sealed_for(alice_id, bot_id, grant, &common::pattern(1 << 20, 8));
    let raw = harness::pki::RawClient::new(
        Some((bot_id, bot_id.cert.clone().unwrap())),
        sealrelay::core::wire::ALPN,
    );
    let conn = raw.connect(world.w.relay.local_addr).await;
    let (mut send, _recv) = common::raw_submit(&conn, grant, &statement, body.len() as u64).await;
    send.write_all(&body[..body.len() / 2]).await.unwrap();
    let tmp = dir.join("data/blobs.tmp");
    let blobs = || std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    let wait_for = |want: fn(usize) -> bool| async move {
        for _ in 0..500 {
            if want(blobs()) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    };
    assert!(wait_for(|n| n > 0).await, "the upload never began");
    // It hands the grant to the source instead, and its own upload breaks off.
    bot.dispatch(&g, "crm").await.unwrap();
    send.reset(0u32.into()).unwrap();
    assert!(
        wait_for(|n| n == 0).await,
        "the broken upload was kept for an agent that can no longer fill its grant"
    );
    assert_eq!(crm.round(&crm_client).await.unwrap().filled, 1);
    world.w.relay.shutdown().await;
}

/// Helper-found: the relay's "unavailable, try again" for one assignment's envelope (here its
/// free-space reserve refusing a large upload that smaller ones fit beside) ended the whole pass
/// as if the relay were gone: the source reconnected, the same assignment came first again (the
/// list is in grant-id order), was read and sealed again, and every assignment listed after it
/// waited until it expired. Now only that assignment is held back; the others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_envelope_the_relay_cannot_take_now_holds_back_no_other() {
    let world = world().await;
    let addr = world.w.addr.clone();
    let dir = world.w.dir.clone();
    let alice = UserClient::connect(world.id(0), &addr).await.unwrap();
    let bot = AgentClient::connect(world.id(2), &addr).await.unwrap();
    let crm_client = SourceClient::connect(world.id(4), &addr).await.unwrap();
    let text = "[[connector]]\nresources = \"customers/big\"\ncommand = [\"/bin/sh\", \"-c\", \"head -c 2097152 /dev/zero\"]\n\n[[connector]]\nresources = \"customers/*\"\ncommand = [\"/bin/sh\", \"-c\", \"printf 'a customer record'\"]\n";
    let crm = service_with(
        world.id(4),
        &addr,
        &dir,
        SourcePolicy::default_policy().unwrap(),
        Connectors::parse(text, &dir).unwrap(),
    );
    let mut big = request("customers/big");
    big.max_bytes = 4 << 20;
    let big = alice.grant(&big).await.unwrap();
    // Small ones, at least two of them listed after the big one.
    let mut after = 0;
    let mut small = 0;
    while after < 2 {
        let id = alice
            .grant(&request(&format!("customers/acme-{small}")))
            .await
            .unwrap();
        small += 1;
        if id.0 > big.0 {
            after += 1;
        }
    }
    for g in bot.grants().await.unwrap() {
        bot.dispatch(&g, "crm").await.unwrap();
    }
    // Room for a small envelope, not for 2 MiB.
    world
        .store
        .room
        .store(1 << 20, std::sync::atomic::Ordering::SeqCst);
    let round = crm.round(&crm_client).await.unwrap();
    assert_eq!((round.filled, round.failed), (small, 1), "{round:?}");
    // Held back, not read again at the next pass.
    let round = crm.round(&crm_client).await.unwrap();
    assert_eq!((round.listed, round.filled, round.failed), (1, 0, 1));
    world.w.relay.shutdown().await;
}
