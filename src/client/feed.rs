//! Subscriptions, the client's side (`Subscribe`, docs/protocol.md): an agent follows its
//! ready grants and a user their inbox over one long-lived stream each, instead of listing
//! again and again. The relay sends what the listing holds, then `Live`, then each new grant or
//! envelope as it becomes ready. Each grant frame is judged as a listing is (its directory
//! checkpoint must extend the one before, each grant must verify); an envelope is judged later,
//! when it is fetched.
//!
//! [`Followed`] is what a subscriber has handed out: kept across reconnections (pass it to the
//! next subscription), it makes a subscriber that disconnects and comes back get nothing twice,
//! while the relay's catch-up on each new subscription makes it miss nothing.

use std::collections::HashSet;

use quinn::{RecvStream, SendStream};

use crate::core::grant::Grant;
use crate::core::wire::{EnvelopeView, Feed, Reply, Request, Response, WireSigned};
use crate::error::Result;

use super::agent::{judge_frame, AgentClient};
use super::connection::Connection;
use super::user::UserClient;
use super::{unexpected, OpenGrant};

/// What a subscription says next.
#[derive(Debug)]
pub enum FeedEvent<T> {
    /// Grants or envelopes not handed out before.
    Items(Vec<T>),
    /// Everything that was waiting when the subscription began has come: what follows is new.
    Live,
}

/// The ids a subscriber has handed out, across its subscriptions.
#[derive(Debug, Default)]
pub struct Followed {
    seen: HashSet<[u8; 16]>,
    /// The ids the catch-up of the current subscription listed (until its `Live`).
    listed: HashSet<[u8; 16]>,
}

impl Followed {
    /// Whether `id` is new (and now counts as handed out).
    fn first_time(&mut self, id: [u8; 16], catching_up: bool) -> bool {
        if catching_up {
            self.listed.insert(id);
        }
        self.seen.insert(id)
    }

    /// How many envelope or grant ids are remembered as handed out.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// A catch-up is over: what it did not list is no longer waiting, so it need not be
    /// remembered (the set stays as large as what waits and what came since the last catch-up:
    /// subscribe again now and then to keep it so, as `agent run` does).
    fn caught_up(&mut self) {
        self.seen = std::mem::take(&mut self.listed);
    }
}

/// One subscription's stream.
pub struct Subscription {
    /// Kept so the stream stays open; finished at once (the relay reads nothing more).
    _send: SendStream,
    recv: RecvStream,
    live: bool,
    followed: Followed,
}

impl Subscription {
    /// Opens the stream; `followed` moves into the subscription only once it is open (a failed
    /// attempt leaves it with the caller, for the next).
    async fn open(
        conn: &Connection,
        feed: Feed,
        dir_size: Option<u64>,
        followed: &mut Followed,
    ) -> Result<Self> {
        let (send, recv) = conn
            .open_stream(Request::Subscribe { feed, dir_size })
            .await?;
        let mut followed = std::mem::take(followed);
        // What a catch-up cut short listed says nothing about this one.
        followed.listed.clear();
        Ok(Subscription {
            _send: send,
            recv,
            live: false,
            followed,
        })
    }

    /// What this subscriber has handed out, for the next subscription after a reconnection.
    pub fn into_followed(self) -> Followed {
        self.followed
    }

    /// The next frame: `None` for `Live`.
    async fn frame(&mut self) -> Result<Option<Reply>> {
        match super::connection::read_response(&mut self.recv).await? {
            Response::Ok(Reply::Live) => {
                if !self.live {
                    self.live = true;
                    self.followed.caught_up();
                }
                Ok(None)
            }
            Response::Ok(reply) => Ok(Some(reply)),
            Response::Err { code, message } => Err(super::connection::refused(code, &message)),
        }
    }
}

impl AgentClient<'_> {
    /// Follows this agent's ready grants; `followed` is what earlier subscriptions handed out
    /// (`Followed::default()` for none), taken only if the subscription opens.
    pub async fn subscribe(&self, followed: &mut Followed) -> Result<GrantFeed> {
        let dir_key = super::keylog::directory_key(self.identity)?;
        let from = self.pins.directory.size(&dir_key)?;
        Ok(GrantFeed {
            sub: Subscription::open(&self.conn, Feed::Grants, from, followed).await?,
            from,
        })
    }

    /// The next grants of `feed`, each with this agent's verdict (as
    /// [`AgentClient::judged_grants`] gives them), or `Live`. An error ends the subscription.
    pub async fn next_grants(
        &self,
        feed: &mut GrantFeed,
    ) -> Result<FeedEvent<(WireSigned, Result<OpenGrant>)>> {
        loop {
            let Some(reply) = feed.sub.frame().await? else {
                return Ok(FeedEvent::Live);
            };
            let Reply::Grants {
                grants, directory, ..
            } = reply
            else {
                return Err(unexpected(&reply));
            };
            let (judged, size) = judge_frame(
                &self.conn,
                self.identity,
                &self.pins,
                grants,
                &directory,
                feed.from,
                |v| v,
            )
            .await?;
            feed.from = Some(size);
            let catching_up = !feed.sub.live;
            let mut out = Vec::new();
            for (_, g) in &judged {
                self.check_addressed(g)?;
            }
            for (view, g) in judged {
                let id = Grant::decode(&view.grant.statement).map(|g| g.grant_id.0);
                // A grant that did not verify now (a reset still waiting, a directory behind) is
                // not remembered: the next subscription's catch-up brings it again.
                let remember = g.is_ok();
                if let Ok(id) = id {
                    if remember && !feed.sub.followed.first_time(id, catching_up) {
                        continue;
                    }
                }
                out.push((view.grant, g));
            }
            if !out.is_empty() {
                return Ok(FeedEvent::Items(out));
            }
        }
    }
}

/// An agent's subscription to its grants.
pub struct GrantFeed {
    sub: Subscription,
    /// The directory log size the last frame proved (the next is proved from there).
    from: Option<u64>,
}

impl GrantFeed {
    /// Hands `id` out again if the relay sends it again (after a reconnection): its send failed
    /// and it is to be tried again.
    pub fn forget(&mut self, id: [u8; 16]) {
        self.sub.followed.seen.remove(&id);
        self.sub.followed.listed.remove(&id);
    }

    /// What this subscription handed out, for the next one after a reconnection.
    pub fn into_followed(self) -> Followed {
        self.sub.into_followed()
    }
}

impl UserClient<'_> {
    /// Follows this user's inbox; `followed` as for [`AgentClient::subscribe`].
    pub async fn subscribe(&self, followed: &mut Followed) -> Result<InboxFeed> {
        Ok(InboxFeed {
            sub: Subscription::open(&self.conn, Feed::Inbox, None, followed).await?,
        })
    }
}

/// A user's subscription to their inbox.
pub struct InboxFeed {
    sub: Subscription,
}

impl InboxFeed {
    /// The next envelopes (their views, judged when fetched), or `Live`. An error ends the
    /// subscription.
    pub async fn next(&mut self) -> Result<FeedEvent<EnvelopeView>> {
        loop {
            let Some(reply) = self.sub.frame().await? else {
                return Ok(FeedEvent::Live);
            };
            let Reply::Inbox { envelopes, .. } = reply else {
                return Err(unexpected(&reply));
            };
            let catching_up = !self.sub.live;
            let out: Vec<_> = envelopes
                .into_iter()
                .filter(|v| self.sub.followed.first_time(v.envelope_id.0, catching_up))
                .collect();
            if !out.is_empty() {
                return Ok(FeedEvent::Items(out));
            }
        }
    }

    /// What this subscription handed out, for the next one after a reconnection.
    pub fn into_followed(self) -> Followed {
        self.sub.into_followed()
    }

    /// How many envelope ids it remembers having handed out.
    pub fn remembered(&self) -> usize {
        self.sub.followed.remembered()
    }
}
