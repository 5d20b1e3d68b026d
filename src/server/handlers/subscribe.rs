//! A subscription (`Subscribe`): what an agent's grant listing or a user's inbox holds, then
//! each new grant or envelope as it becomes ready, built under the listing's own rules. The
//! stream shell (`server::shell::subscription`) waits for the hub and writes the frames; this
//! decides what each frame holds, and that nothing goes out twice on one subscription.

use std::collections::HashSet;

use crate::core::grant::Grant;
use crate::core::policy::Action;
use crate::core::wire::{ErrorCode, Feed, Page, Reply};
use crate::ids::{EnvelopeId, GrantId};
use crate::net::Peer;

use crate::server::services::effects::Cx;
use crate::server::services::refusal::Refusal;
use crate::server::services::relay::Relay;

/// One subscription's state: what it follows, what it has sent, and (for grants) the directory
/// log size the client last had proved to it.
pub struct Following {
    feed: Feed,
    dir_size: Option<u64>,
    /// The ids sent on this subscription that may still be listed (pruned by each catch-up).
    sent: HashSet<[u8; 16]>,
    /// The ids a catch-up in progress has listed so far.
    listed: HashSet<[u8; 16]>,
    /// How many ids the last catch-up left in `sent` (what the listing held then).
    listed_then: usize,
    /// What the last allowed decision was made on (see [`Following::check`]).
    allowed: Option<Standing>,
}

/// Everything a feed's policy decision depends on: the second it was made in (the request's
/// `now`), the policy in force, the directory (attributes, revocations, expiry: every change
/// is a new leaf of its log) and the quarantines. While none of these changes, neither can
/// the decision.
struct Standing {
    now: u64,
    policy: std::sync::Arc<crate::core::policy::CedarPolicy>,
    directory: u64,
    quarantines: u64,
}

impl Standing {
    fn of(relay: &Relay, now: u64) -> Result<Self, Refusal> {
        Ok(Standing {
            now,
            policy: relay.policy(),
            directory: relay
                .directory
                .read()
                .map_err(|_| Refusal::internal())?
                .log_size(),
            quarantines: relay.monitor.quarantine_generation(),
        })
    }

    fn same(&self, other: &Standing) -> bool {
        self.now == other.now
            && std::sync::Arc::ptr_eq(&self.policy, &other.policy)
            && self.directory == other.directory
            && self.quarantines == other.quarantines
    }
}

/// Most subscriptions one party may hold to one feed at once.
pub const MAX_PER_FEED: usize = 64;

/// Ids a subscription remembers before it lists again to forget those no longer listed.
pub const SENT_MAX: usize = 10_000;

/// Where a catch-up is: the cursor of the page after the one just built (`None`: done).
pub type Cursor = Option<[u8; 16]>;

impl Following {
    /// Authorizes the subscription as the listing it follows (rate limit, standing, policy).
    pub async fn begin(
        relay: &Relay,
        peer: &Peer,
        feed: Feed,
        dir_size: Option<u64>,
        cx: &Cx,
    ) -> Result<Self, Refusal> {
        let standing = Standing::of(relay, cx.now)?;
        relay.authorize_relay(cx, peer, action(feed)).await?;
        // One party's subscriptions to one feed are capped: each holds a task, a hub receiver
        // and what it sent (this one is counted already: the shell followed the hub first).
        if relay.feeds.following(&peer.id, feed) > MAX_PER_FEED {
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!("at most {MAX_PER_FEED} subscriptions of one party to one feed are open at once: close one"),
            ));
        }
        Ok(Following {
            feed,
            dir_size,
            sent: HashSet::new(),
            listed: HashSet::new(),
            listed_then: 0,
            allowed: Some(standing),
        })
    }

    /// Whether this subscription has sent so much since its last catch-up that it should list
    /// again (which forgets what is no longer listed). Counted from what that catch-up left, so
    /// a listing of more than [`SENT_MAX`] is not listed again after every pushed frame.
    pub fn needs_catch_up(&self) -> bool {
        self.sent.len() > self.listed_then.saturating_add(SENT_MAX)
    }

    /// A catch-up is done: what is no longer listed cannot come back (a grant leaves the
    /// listing for good, an envelope with its receipt or expiry), so it need not be remembered.
    fn caught_up(&mut self) {
        self.sent = std::mem::take(&mut self.listed);
        self.listed_then = self.sent.len();
    }

    /// The caller's standing and the policy, checked again (Cedar decides only when something
    /// it depends on changed since the last allowed decision: a pushed frame a second is one
    /// decision, however many frames).
    async fn check(&mut self, relay: &Relay, peer: &Peer, cx: &Cx) -> Result<(), Refusal> {
        let standing = Standing::of(relay, cx.now)?;
        if self.allowed.as_ref().is_some_and(|a| a.same(&standing)) {
            return Ok(());
        }
        self.allowed = None;
        relay.authorize_pushed(cx, peer, action(self.feed)).await?;
        self.allowed = Some(standing);
        Ok(())
    }

    /// One page of what the listing holds now, less what this subscription already sent
    /// (`None` when that leaves nothing), and the cursor of the next page. A catch-up starts
    /// with `after = None`, which checks the caller's standing and the policy again; it ends
    /// when the cursor is `None`, and then only what the listing still holds counts as sent.
    pub async fn catch_up(
        &mut self,
        relay: &Relay,
        peer: &Peer,
        after: Cursor,
        cx: &Cx,
    ) -> Result<(Option<Reply>, Cursor), Refusal> {
        if after.is_none() {
            self.check(relay, peer, cx).await?;
            self.listed.clear();
        }
        let page = Page {
            after,
            ..Page::first()
        };
        let (reply, next) = match self.feed {
            Feed::Grants => {
                let (reply, size) = super::grants::list_page(relay, peer, page, self.dir_size, cx)?;
                let Reply::Grants {
                    grants,
                    next,
                    directory,
                } = reply
                else {
                    return Err(Refusal::internal());
                };
                let fresh: Vec<_> = grants
                    .into_iter()
                    .filter(|v| self.take(grant_id(&v.grant.statement)))
                    .collect();
                let reply = (!fresh.is_empty()).then(|| {
                    self.dir_size = Some(size);
                    Reply::Grants {
                        grants: fresh,
                        next: None,
                        directory,
                    }
                });
                (reply, next)
            }
            Feed::Inbox => {
                let Reply::Inbox { envelopes, next } =
                    super::delivery::inbox_page(relay, peer, page, cx)?
                else {
                    return Err(Refusal::internal());
                };
                let fresh: Vec<_> = envelopes
                    .into_iter()
                    .filter(|v| self.take(Some(v.envelope_id.0)))
                    .collect();
                let reply = (!fresh.is_empty()).then_some(Reply::Inbox {
                    envelopes: fresh,
                    next: None,
                });
                (reply, next)
            }
        };
        if next.is_none() {
            self.caught_up();
        }
        Ok((reply, next))
    }

    /// Whether `id` is new to this subscription (and now counts as sent); ids that cannot be
    /// read go out as they are (the client judges them).
    fn take(&mut self, id: Option<[u8; 16]>) -> bool {
        let Some(id) = id else { return true };
        self.listed.insert(id);
        self.sent.insert(id)
    }

    /// The frame for `id`, published to this party's feed: `None` when it was sent already or
    /// is not (or no longer) the caller's to see. Checks the caller's standing and the policy
    /// as of now.
    pub async fn pushed(
        &mut self,
        relay: &Relay,
        peer: &Peer,
        id: [u8; 16],
        cx: &Cx,
    ) -> Result<Option<Reply>, Refusal> {
        if self.sent.contains(&id) {
            return Ok(None);
        }
        self.check(relay, peer, cx).await?;
        let reply = match self.feed {
            Feed::Grants => {
                match super::grants::pushed(relay, peer, GrantId(id), self.dir_size, cx)? {
                    Some((reply, size)) => {
                        self.dir_size = Some(size);
                        Some(reply)
                    }
                    None => None,
                }
            }
            Feed::Inbox => super::delivery::pushed(relay, peer, EnvelopeId(id), cx)?,
        };
        if reply.is_some() {
            self.sent.insert(id);
        }
        Ok(reply)
    }
}

/// The policy action a feed is read under: its listing's.
fn action(feed: Feed) -> Action {
    match feed {
        Feed::Grants => Action::ListGrants,
        Feed::Inbox => Action::Inbox,
    }
}

fn grant_id(statement: &[u8]) -> Option<[u8; 16]> {
    Grant::decode(statement).ok().map(|g| g.grant_id.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Helper-found: after a catch-up listing more than `SENT_MAX` ids, every pushed frame
    /// asked for another whole listing (the limit counted the listing itself).
    #[test]
    fn a_long_listing_is_not_listed_again_after_every_push() {
        let mut f = Following {
            feed: Feed::Inbox,
            dir_size: None,
            sent: HashSet::new(),
            listed: HashSet::new(),
            listed_then: 0,
            allowed: None,
        };
        let id = |n: usize| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(n as u64).to_be_bytes());
            id
        };
        for n in 0..=SENT_MAX {
            assert!(f.take(Some(id(n))));
        }
        f.caught_up();
        assert!(!f.needs_catch_up(), "listed again right after a catch-up");
        for n in 0..SENT_MAX {
            f.sent.insert(id(SENT_MAX + 1 + n));
            assert!(!f.needs_catch_up(), "after {} pushed", n + 1);
        }
        f.sent.insert(id(2 * SENT_MAX + 1));
        assert!(f.needs_catch_up(), "SENT_MAX pushed since, and one more");
    }
}
