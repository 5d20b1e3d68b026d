//! The stream shell of a subscription (`Subscribe`, docs/protocol.md): it follows the hub for
//! the caller's feed from before the first listing (so nothing published in between is lost),
//! writes the catch-up, then `Live`, then each pushed grant or envelope as the hub names it.
//! A subscriber that falls behind the hub catches up again (each frame holds only what this
//! subscription has not sent); on a store other nodes share, the shell's cluster loop publishes
//! what they committed to the hub here. It ends when the client stops the stream or the connection closes (a revocation or
//! quarantine closes the connection), or with a refusal frame when the caller's standing or the
//! policy no longer allows it. It is not a request in flight once live: shutdown does not wait
//! for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::SendStream;

use crate::core::wire::{Feed, Reply, Response};
use crate::net::frame::write_frame;
use crate::net::Peer;

use crate::server::handlers::subscribe::{Cursor, Following};
use crate::server::services::in_flight::InFlightGuard;
use crate::server::services::metrics::code_label;
use crate::server::services::refusal::Refusal;
use crate::server::services::relay::Relay;

use super::effects::Effects;

/// Serves one subscription to its end.
pub async fn serve(
    relay: Arc<Relay>,
    effects: Effects,
    peer: Peer,
    in_flight: InFlightGuard,
    feed: Feed,
    dir_size: Option<u64>,
    mut send: SendStream,
) {
    let started = Instant::now();
    // Followed before the first listing: what commits while it is built is not missed.
    let mut hub = relay.feeds.subscribe(&peer.id, feed);
    let cx = effects.cx(&relay);
    let mut following = match Following::begin(&relay, &peer, feed, dir_size, &cx).await {
        Ok(f) => f,
        Err(r) => {
            end(&relay, &peer, &mut send, r, Some(started)).await;
            return;
        }
    };
    if let Err(why) = catch_up(&relay, &effects, &peer, &mut following, &mut send).await {
        if let Some(r) = why {
            end(&relay, &peer, &mut send, r, Some(started)).await;
        }
        return;
    }
    if write(&mut send, Reply::Live).await.is_err() {
        return;
    }
    relay
        .metrics
        .request_ended("subscribe", "ok", started.elapsed().as_secs_f64());
    tracing::info!(caller = %peer.id, feed = ?feed, "subscribed");
    drop(in_flight);
    let stopped = send.stopped();
    tokio::pin!(stopped);
    loop {
        let outcome = tokio::select! {
            _ = &mut stopped => break,
            next = hub.next() => match next {
                Ok(id) => {
                    let cx = effects.cx(&relay);
                    match following.pushed(&relay, &peer, id, &cx).await {
                        Ok(Some(reply)) => match write(&mut send, reply).await {
                            // A long-lived subscription forgets what is no longer listed.
                            Ok(()) if following.needs_catch_up() => {
                                catch_up(&relay, &effects, &peer, &mut following, &mut send).await
                            }
                            Ok(()) => Ok(()),
                            Err(()) => Err(None),
                        },
                        Ok(None) => Ok(()),
                        Err(r) => Err(Some(r)),
                    }
                }
                // Behind the hub: some ids were dropped, so list again.
                Err(_) => catch_up(&relay, &effects, &peer, &mut following, &mut send).await,
            },
        };
        match outcome {
            Ok(()) => {}
            // Counted already, when it went live.
            Err(Some(r)) => {
                end(&relay, &peer, &mut send, r, None).await;
                return;
            }
            Err(None) => break,
        }
    }
    tracing::debug!(caller = %peer.id, feed = ?feed, "subscription ended");
}

/// Lists the feed again from its start, writing what this subscription has not sent. `Err(None)`:
/// the client is gone; `Err(Some(r))`: refused.
async fn catch_up(
    relay: &Relay,
    effects: &Effects,
    peer: &Peer,
    following: &mut Following,
    send: &mut SendStream,
) -> Result<(), Option<Refusal>> {
    let cx = effects.cx(relay);
    let mut after: Cursor = None;
    loop {
        let (reply, next) = following
            .catch_up(relay, peer, after, &cx)
            .await
            .map_err(Some)?;
        if let Some(reply) = reply {
            write(send, reply).await.map_err(|()| None)?;
        }
        match next {
            Some(n) => after = Some(n),
            None => return Ok(()),
        }
    }
}

/// Writes one frame of the subscription; `Err(())` when the client is gone, or has not taken
/// the frame within [`WRITE_WITHIN`] (its stream is then reset: a subscriber that stops reading
/// holds nothing of the relay's for long).
async fn write(send: &mut SendStream, reply: Reply) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_WITHIN, write_frame(send, &Response::Ok(reply))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            let _ = send.reset(0u32.into());
            Err(())
        }
    }
}

/// How long one frame may wait for a subscriber to take it.
pub const WRITE_WITHIN: Duration = Duration::from_secs(30);

/// Ends the subscription with a refusal frame (and finishes the stream); counted as the
/// request's outcome when it had not gone live (`started`).
async fn end(
    relay: &Relay,
    peer: &Peer,
    send: &mut SendStream,
    r: Refusal,
    started: Option<Instant>,
) {
    tracing::info!(caller = %peer.id, action = "subscribe", code = ?r.code, reason = %r.message, "refused");
    if let Some(started) = started {
        relay.metrics.request_ended(
            "subscribe",
            code_label(r.code),
            started.elapsed().as_secs_f64(),
        );
    }
    let response = Response::Err {
        code: r.code,
        message: r.message,
    };
    match tokio::time::timeout(WRITE_WITHIN, write_frame(send, &response)).await {
        Ok(_) => {
            let _ = send.finish();
        }
        Err(_) => {
            let _ = send.reset(0u32.into());
        }
    }
}
