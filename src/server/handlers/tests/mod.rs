//! Every kind of request, handled without a socket: the relay's state on an in-memory store, a
//! clock the test moves, and callers whose certificates were never used. Each test asserts the
//! answer and what was (or was not) stored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use crate::clock::{Clock, ManualClock};
use crate::core::directory::sha256;
use crate::core::envelope::submission::Submission;
use crate::core::grant::{Approval, DeliveryStatus, Grant, Receipt};
use crate::core::identity::Identity;
use crate::core::sign::Signed;
use crate::core::store::GrantState;
use crate::core::wire::{ErrorCode, Page, Reply, Request, WireSigned};
use crate::ids::{EnvelopeId, GrantId, SpiffeId};
use crate::local::provision::{agent, legacy_user, provision, source, user};
use crate::net::Peer;
use crate::server::config::RelayConfig;
use crate::server::services::effects::Cx;
use crate::server::services::misbehaviour::MonitorConfig;
use crate::server::services::relay::Relay;
use crate::server::shell::effects::Effects;
use crate::server::shell::startup;
use crate::store::redb::RedbStore;

use super::{handle, Outcome, StoredBody};
use crate::server::services::integrity::Stored;

mod admin;
mod delivery;
mod grants;
mod keys;
mod meet;
mod rotation;
mod sources;
mod visible;

struct Fixture {
    _tmp: tempfile::TempDir,
    relay: Relay,
    clock: Arc<ManualClock>,
    alice: Identity,
    bob: Identity,
    carol: Identity,
    bot: Identity,
    admin: Identity,
    /// A user whose age key is X25519 (an older age client's).
    legacy: Identity,
    /// A source serving `tickets/*` (docs/sources.md).
    tix: Identity,
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

fn fixture_with(adjust: impl FnOnce(&mut RelayConfig)) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let now = crate::clock::now();
    let (mut ids, admin) = provision(
        &tmp.path().join("keys"),
        &[
            source("tix", &["tickets/*"]),
            user("alice", 3, &["engineer"]),
            user("bob", 3, &["approver", "auditor"]),
            user("carol", 0, &[]),
            agent("research-bot", &["tickets/*", "payroll/*"]),
            legacy_user("lee", 3, &[]),
        ],
        now,
    )
    .unwrap();
    let mut config = RelayConfig {
        data: tmp.path().join("data"),
        dir: tmp.path().join("keys"),
        monitor: MonitorConfig {
            max_denials: 1000,
            max_invalid_envelopes: 1000,
            ..MonitorConfig::default()
        },
        ..RelayConfig::default()
    };
    adjust(&mut config);
    let clock = Arc::new(ManualClock::new(now));
    let store = Arc::new(RedbStore::in_memory().unwrap());
    let (relay, _tls) = startup::load(config, Some(store), clock.clone()).unwrap();
    let legacy = ids.pop().unwrap();
    let bot = ids.pop().unwrap();
    let carol = ids.pop().unwrap();
    let bob = ids.pop().unwrap();
    let alice = ids.pop().unwrap();
    let tix = ids.pop().unwrap();
    Fixture {
        _tmp: tmp,
        relay,
        clock,
        alice,
        bob,
        carol,
        bot,
        admin,
        legacy,
        tix,
    }
}

/// The caller as the shell would see it after a handshake with this identity's certificate.
fn peer(id: &Identity) -> Peer {
    let info = crate::core::pki::inspect(id.cert.as_ref().unwrap()).unwrap();
    Peer {
        id: id.id.clone().unwrap(),
        spki_sha256: sha256(&info.spki_der),
    }
}

impl Fixture {
    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// What the shell hands a request that starts now.
    fn cx(&self) -> Cx {
        self.cx_at(self.now())
    }

    /// What the shell hands a request whose time is `now`.
    fn cx_at(&self, now: u64) -> Cx {
        Effects::new(&self.relay).cx_at(&self.relay, now)
    }

    async fn call(&self, who: &Identity, request: Request) -> Result<Reply, super::Refusal> {
        self.call_with_body(who, request, &[]).await
    }

    async fn call_with_body(
        &self,
        who: &Identity,
        request: Request,
        body: &[u8],
    ) -> Result<Reply, super::Refusal> {
        let mut body = body;
        match handle(&self.relay, &peer(who), request, &self.cx(), &mut body).await? {
            Outcome::Reply(r) => Ok(r),
            Outcome::Envelope { .. } => panic!("an envelope where a reply was expected"),
        }
    }

    fn grant_statement(&self, resource: &str, ttl: u64) -> (Grant, Signed) {
        let g = Grant {
            grant_id: GrantId::random().unwrap(),
            user: self.alice.id.clone().unwrap(),
            agent: self.bot.id.clone().unwrap(),
            resource: resource.into(),
            purpose: "triage".into(),
            created: self.now(),
            expires: self.now() + ttl,
            max_bytes: 1 << 20,
        };
        let signed = g.sign(&self.alice.signing_key).unwrap();
        (g, signed)
    }

    async fn grant(&self, resource: &str) -> GrantId {
        let (g, signed) = self.grant_statement(resource, 600);
        let reply = self
            .call(
                &self.alice,
                Request::CreateGrant {
                    grant: WireSigned::from_signed(&signed),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            reply,
            Reply::GrantCreated {
                grant_id: g.grant_id,
                expires: g.expires
            }
        );
        g.grant_id
    }

    /// A sealed body for alice and the bot's statement over it.
    fn sealed(&self, grant_id: GrantId, plaintext: &[u8]) -> (Vec<u8>, Request) {
        let recipient = self.alice.age_identity.as_ref().unwrap().to_public();
        let mut body = Vec::new();
        crate::core::envelope::seal(recipient.as_recipient(), &mut &plaintext[..], &mut body, 1)
            .unwrap();
        let statement = Submission {
            grant_id,
            user: self.alice.id.clone().unwrap(),
            agent: self.bot.id.clone().unwrap(),
            ciphertext_root: crate::core::envelope::pieces::digest(&body),
            ciphertext_len: body.len() as u64,
        }
        .sign(&self.bot.signing_key);
        let request = Request::Submit {
            grant_id,
            statement: WireSigned::from_signed(&statement),
            length: body.len() as u64,
            from_piece: 0,
        };
        (body, request)
    }

    /// The first page of `who`'s inbox.
    async fn inbox(&self, who: &Identity) -> Vec<crate::core::wire::EnvelopeView> {
        match self
            .call(
                who,
                Request::Inbox {
                    page: Page::first(),
                },
            )
            .await
            .unwrap()
        {
            Reply::Inbox { envelopes, .. } => envelopes,
            other => panic!("not an inbox: {other:?}"),
        }
    }

    async fn submit(&self, grant_id: GrantId, plaintext: &[u8]) -> Result<Reply, super::Refusal> {
        let (body, request) = self.sealed(grant_id, plaintext);
        self.call_with_body(&self.bot, request, &body).await
    }

    fn event_kinds(&self) -> Vec<String> {
        self.relay
            .store
            .events(0, 100_000)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.kind)
            .collect()
    }

    /// The admin pushes a signed revocation to the relay.
    async fn push_revocation(&self, revocation: &Signed) {
        self.call(
            &self.admin,
            Request::PushDirectory {
                entries: Vec::new(),
                revocations: vec![WireSigned::from_signed(revocation)],
            },
        )
        .await
        .unwrap();
    }

    fn receipt(&self, envelope_id: EnvelopeId, grant_id: GrantId, body: &[u8]) -> Request {
        let r = Receipt {
            envelope_id,
            grant_id,
            user: self.alice.id.clone().unwrap(),
            agent: self.bot.id.clone().unwrap(),
            ciphertext_root: crate::core::envelope::pieces::digest(body),
            status: DeliveryStatus::Delivered,
            time: self.now(),
        }
        .sign(&self.alice.signing_key);
        Request::Receipt {
            receipt: WireSigned::from_signed(&r),
            old_size: None,
        }
    }
}

/// A body that runs `during` once, after its first bytes: something that happens while an
/// upload is in progress.
struct During<'a, F: FnMut()> {
    body: &'a [u8],
    during: Option<F>,
}

impl<F: FnMut() + Unpin> tokio::io::AsyncRead for During<'_, F> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.body.len().min(buf.remaining()).min(100);
        let (head, rest) = self.body.split_at(n);
        buf.put_slice(head);
        self.body = rest;
        if let Some(mut f) = self.during.take() {
            f();
        }
        std::task::Poll::Ready(Ok(()))
    }
}

fn code(r: Result<Reply, super::Refusal>) -> ErrorCode {
    r.expect_err("a refusal was expected").code
}
