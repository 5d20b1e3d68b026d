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

/// How long one subscription is followed before subscribing again on the same connection:
/// what a subscription remembers having handed out (`Followed`) grows with every arrival until
/// a new subscription's catch-up lets it forget what no longer waits.
pub const RESUBSCRIBE: Duration = Duration::from_secs(60);

/// Follows the inbox until aborted, bumping `arrived` for each new envelope; subscribes again
/// every [`RESUBSCRIBE`], and reconnects with backoff when the relay goes away.
pub async fn follow_inbox(ui: Arc<Ui>, arrived: watch::Sender<u64>) {
    let mut followed = Followed::default();
    let mut delay = Duration::from_millis(500);
    loop {
        if let Ok(client) = ui.client().await {
            // Subscriptions on this connection, one after another, while it lasts.
            loop {
                tracing::debug!(
                    remembered = followed.remembered(),
                    "subscribing to the inbox"
                );
                let Ok(mut feed) = client.subscribe(&mut followed).await else {
                    break;
                };
                let until = tokio::time::Instant::now() + RESUBSCRIBE;
                let ended = loop {
                    match tokio::time::timeout_at(until, feed.next()).await {
                        Err(_) => break false,
                        Ok(Ok(FeedEvent::Items(_))) => {
                            arrived.send_modify(|n| *n += 1);
                        }
                        Ok(Ok(FeedEvent::Live)) => delay = Duration::from_millis(500),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "the inbox subscription ended");
                            break true;
                        }
                    }
                };
                followed = feed.into_followed();
                if ended {
                    break;
                }
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
