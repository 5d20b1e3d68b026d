//! The inbox pushed to the page: this server follows the user's inbox over one subscription
//! (`Subscribe`, docs/protocol.md) and counts what arrives; the page's script waits on
//! `/api/inbox/next`, which answers as soon as something new has come (or after [`WAIT`], or
//! at once when the server shuts down), and lists the inbox when it has. No timer polls the relay.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::client::{FeedEvent, Followed};

use super::Ui;

/// Longest a page's wait is held before it is answered with the same count (and it asks
/// again).
pub const WAIT: Duration = Duration::from_secs(25);

/// When a live subscription is followed anew on the same connection: once it remembers this
/// many more ids than its catch-up listed (and at least twice as many). What a subscription
/// remembers having handed out (`Followed`) grows with every arrival; a new subscription's
/// catch-up lets it forget what no longer waits. Growth, not a timer, so that an inbox that
/// does not change is not listed again and again.
pub const RESUBSCRIBE_AFTER: usize = 1024;

/// Whether a subscription whose catch-up listed `caught_up` ids (`None`: not over yet) and
/// that now remembers `now` is to be followed anew.
fn grown(caught_up: Option<usize>, now: usize) -> bool {
    caught_up.is_some_and(|c| now > c.saturating_mul(2).max(c.saturating_add(RESUBSCRIBE_AFTER)))
}

/// Follows the inbox until aborted, bumping `arrived` for each new envelope; subscribes again
/// on the same connection when what it remembers has grown well past its catch-up
/// ([`RESUBSCRIBE_AFTER`]), and reconnects with backoff when the relay goes away.
pub async fn follow_inbox(ui: Arc<Ui>, arrived: watch::Sender<u64>) {
    let mut followed = Followed::default();
    let mut delay = Duration::from_millis(500);
    loop {
        if let Ok(client) = ui.client().await {
            // Subscriptions on this connection, one after another, while it lasts.
            loop {
                let Ok(mut feed) = client.subscribe(&mut followed).await else {
                    break;
                };
                let mut caught_up = None;
                let ended = loop {
                    match feed.next().await {
                        Ok(FeedEvent::Items(_)) => {
                            arrived.send_modify(|n| *n += 1);
                            let now = feed.remembered();
                            if grown(caught_up, now) {
                                break false;
                            }
                        }
                        Ok(FeedEvent::Live) => {
                            delay = Duration::from_millis(500);
                            caught_up = Some(feed.remembered());
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the inbox subscription ended");
                            break true;
                        }
                    }
                };
                followed = feed.into_followed();
                if ended {
                    break;
                }
                tracing::debug!(
                    remembered = followed.remembered(),
                    "subscribing to the inbox again"
                );
            }
            client.conn.close().await;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// `GET /api/inbox/next?after=N`: `{"arrived": M}`, the number of arrivals so far, as soon as
/// it is not `N` (at once without `after`), or after [`WAIT`] without one. The page lists the
/// inbox whenever the number moves, so an envelope that arrives between its listing and its
/// next wait is not missed.
pub async fn next(State(ui): State<Arc<Ui>>, RawQuery(q): RawQuery) -> Response {
    let after = q
        .as_deref()
        .and_then(|q| q.strip_prefix("after="))
        .and_then(|n| n.parse::<u64>().ok());
    let mut rx = ui.arrived.subscribe();
    let mut closing = ui.closing.subscribe();
    let now = *rx.borrow_and_update();
    if after == Some(now) && !*closing.borrow_and_update() {
        // Until something arrives, the wait is over, or the server shuts down.
        let _ = tokio::time::timeout(WAIT, async {
            tokio::select! {
                _ = rx.changed() => {}
                _ = closing.changed() => {}
            }
        })
        .await;
    }
    let arrived = *rx.borrow();
    axum::Json(serde_json::json!({ "arrived": arrived })).into_response()
}

#[cfg(test)]
mod tests {
    /// The web client followed one subscription for its connection's life, remembering every
    /// id pushed to it; it subscribes again once that has grown well past its catch-up, never
    /// during a catch-up, and not while the inbox holds still.
    #[test]
    fn a_subscription_is_followed_anew_only_once_what_it_remembers_has_grown() {
        use super::grown;
        assert!(!grown(None, 1_000_000), "during a catch-up");
        assert!(!grown(Some(10), 10));
        assert!(!grown(Some(10), 10 + 1024));
        assert!(grown(Some(10), 10 + 1025));
        assert!(!grown(Some(5_000), 10_000));
        assert!(grown(Some(5_000), 10_001));
        assert!(!grown(Some(usize::MAX), usize::MAX));
    }
}
