//! Who follows what: the subscriptions' hub (docs/protocol.md, `Subscribe`). Handlers publish
//! the id of a grant that became ready for an agent, or of an envelope that arrived for a user,
//! once it is durable; each open subscription of that party gets the id and builds what it
//! sends from the store, under the same rules as the listing. The hub holds ids only, in
//! memory: a subscriber that falls behind lists again instead ([`Missed`]), so nothing is lost
//! by dropping an id. On a store other nodes share, `cluster::publish_from_log` publishes what
//! they committed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::core::wire::Feed;
use crate::ids::SpiffeId;

/// Ids queued per subscriber before it counts as behind (and lists again).
pub const QUEUE: usize = 256;

/// Each followed (party, feed) and the channel its subscriptions listen on.
type Senders = HashMap<(SpiffeId, Feed), Channel>;

/// A followed (party, feed): its channel, and the last [`QUEUE`] ids published on it (what a
/// subscriber not behind may still have queued).
struct Channel {
    tx: broadcast::Sender<[u8; 16]>,
    recent: VecDeque<[u8; 16]>,
}

pub struct Feeds {
    senders: Mutex<Senders>,
    /// Bumped when every subscription is to list again (a node too far behind the shared log).
    resync: tokio::sync::watch::Sender<u64>,
}

impl Default for Feeds {
    fn default() -> Self {
        Feeds {
            senders: Mutex::default(),
            resync: tokio::sync::watch::channel(0).0,
        }
    }
}

/// A subscriber fell behind: ids were dropped, so it lists again.
#[derive(Debug)]
pub struct Missed;

/// One subscription's end of the hub.
pub struct Subscriber {
    rx: broadcast::Receiver<[u8; 16]>,
    resync: tokio::sync::watch::Receiver<u64>,
}

impl Subscriber {
    /// The next id published for this party and feed (waits); `Err(Missed)` when some were
    /// dropped because this subscriber was behind, or every subscription is to list again.
    pub async fn next(&mut self) -> Result<[u8; 16], Missed> {
        loop {
            let next = tokio::select! {
                next = self.rx.recv() => next,
                changed = self.resync.changed() => match changed {
                    Ok(()) => return Err(Missed),
                    // The hub outlives its subscribers.
                    Err(_) => std::future::pending().await,
                },
            };
            match next {
                Ok(id) => return Ok(id),
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(Missed),
                // The hub never drops a sender that has receivers; wait for ever if it did.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Feeds {
    /// Follows `feed` of `party` from now on.
    pub fn subscribe(&self, party: &SpiffeId, feed: Feed) -> Subscriber {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        // Parties that stopped following leave no sender behind for long.
        if senders.len() > 64 && senders.len().is_power_of_two() {
            senders.retain(|_, c| c.tx.receiver_count() > 0);
        }
        let rx = senders
            .entry((party.clone(), feed))
            .or_insert_with(|| Channel {
                tx: broadcast::channel(QUEUE).0,
                recent: VecDeque::new(),
            })
            .tx
            .subscribe();
        let mut resync = self.resync.subscribe();
        resync.borrow_and_update();
        Subscriber { rx, resync }
    }

    /// Every subscription lists again.
    pub fn resync_all(&self) {
        self.resync.send_modify(|n| *n += 1);
    }

    /// Tells `party`'s subscriptions to `feed` (if any) that `id` is new.
    pub fn publish(&self, party: &SpiffeId, feed: Feed, id: [u8; 16]) {
        self.send(party, feed, id, false);
    }

    /// [`Feeds::publish`] for an id published before that may not have reached the
    /// subscriptions (a commit whose answer was lost), unless it is among the last [`QUEUE`]
    /// published to them: then every subscription has it queued still, or has had it (or is
    /// behind, and lists again). So another party repeating a request cannot put a
    /// subscription behind, making it list everything again.
    pub fn publish_again(&self, party: &SpiffeId, feed: Feed, id: [u8; 16]) {
        self.send(party, feed, id, true);
    }

    fn send(&self, party: &SpiffeId, feed: Feed, id: [u8; 16], unless_recent: bool) {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        let key = (party.clone(), feed);
        if let Some(c) = senders.get_mut(&key) {
            if unless_recent && c.recent.contains(&id) {
                return;
            }
            if c.recent.len() == QUEUE {
                c.recent.pop_front();
            }
            c.recent.push_back(id);
            if c.tx.send(id).is_err() {
                // Nobody follows it any more.
                senders.remove(&key);
            }
        }
    }

    /// How many subscriptions `party` holds to `feed`.
    pub fn following(&self, party: &SpiffeId, feed: Feed) -> usize {
        let senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        senders
            .get(&(party.clone(), feed))
            .map_or(0, |c| c.tx.receiver_count())
    }

    /// How many subscriptions are open (for `/metrics`).
    pub fn subscribers(&self) -> usize {
        let senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        senders.values().map(|c| c.tx.receiver_count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(name: &str) -> SpiffeId {
        format!("spiffe://example.org/agent/{name}")
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_subscriber_gets_its_own_partys_ids_and_one_behind_is_told_it_missed_some() {
        let feeds = Feeds::default();
        let mut a = feeds.subscribe(&party("a"), Feed::Grants);
        let mut a_inbox = feeds.subscribe(&party("a"), Feed::Inbox);
        feeds.publish(&party("b"), Feed::Grants, [2; 16]);
        feeds.publish(&party("a"), Feed::Inbox, [3; 16]);
        feeds.publish(&party("a"), Feed::Grants, [1; 16]);
        assert_eq!(a.next().await.unwrap(), [1; 16]);
        assert_eq!(a_inbox.next().await.unwrap(), [3; 16]);
        assert_eq!(feeds.subscribers(), 2);
        for i in 0..=QUEUE {
            feeds.publish(&party("a"), Feed::Grants, [i as u8; 16]);
        }
        assert!(a.next().await.is_err(), "a subscriber behind is told so");
        feeds.resync_all();
        assert!(a_inbox.next().await.is_err(), "told to list again");
        drop(a);
        drop(a_inbox);
        feeds.publish(&party("a"), Feed::Grants, [9; 16]);
        assert_eq!(feeds.subscribers(), 0);
    }

    /// Review-found: an agent re-sending a used submission (the same signed statement) had the
    /// relay publish its envelope again each time; 257 of them put each of the user's
    /// subscriptions behind, and each listed the whole inbox again, at no cost to the user's
    /// rate limit.
    #[tokio::test]
    async fn an_id_published_again_does_not_put_a_subscriber_behind() {
        let feeds = Feeds::default();
        let mut s = feeds.subscribe(&party("u"), Feed::Inbox);
        feeds.publish(&party("u"), Feed::Inbox, [7; 16]);
        for _ in 0..=QUEUE {
            feeds.publish_again(&party("u"), Feed::Inbox, [7; 16]);
        }
        feeds.publish(&party("u"), Feed::Inbox, [8; 16]);
        assert_eq!(
            s.next().await.unwrap(),
            [7; 16],
            "not Missed: nothing new was dropped"
        );
        assert_eq!(s.next().await.unwrap(), [8; 16]);
        // Once out of the window (a commit whose publish was lost long ago), it goes out again.
        for i in 0..QUEUE {
            feeds.publish(
                &party("u"),
                Feed::Inbox,
                [i as u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            );
        }
        for _ in 0..QUEUE {
            s.next().await.unwrap();
        }
        feeds.publish_again(&party("u"), Feed::Inbox, [7; 16]);
        assert_eq!(s.next().await.unwrap(), [7; 16]);
    }
}
