//! A delivery's receipt on the stream the envelope went out on (`Deliver`, docs/protocol.md):
//! once the body is sent, the client verifies and opens it and answers with its signed receipt
//! as one more frame, which the receipt handler records as it records a `Receipt` request (one
//! durable commit for the delivery). The receipt must come within the time the body itself may
//! take ([`receipt_within`]); a client that finishes its side instead files none, and one that
//! sends nothing in time has the stream reset and files it on its own (`Receipt`).

use std::time::Duration;

use quinn::RecvStream;

use crate::core::wire::{ErrorCode, ReceiptFrame, Reply};
use crate::ids::EnvelopeId;
use crate::net::frame::{read_frame, ReadFrameError};
use crate::net::Peer;

use crate::server::handlers;
use crate::server::services::refusal::Refusal;
use crate::server::services::relay::Relay;

use super::effects::Effects;

/// Longest wait for a receipt, however large the envelope.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// How long the client of a delivery of `length` bytes may take to send its receipt after the
/// last byte: the grace period, and the body's time again at the minimum rate (it is opened
/// and written out before the receipt is signed).
pub fn receipt_within(relay: &Relay, length: u64) -> Duration {
    let rate = relay.config.min_body_bytes_per_sec.max(1);
    Duration::from_secs(relay.config.body_grace_secs.max(1))
        .saturating_add(Duration::from_secs(length / rate))
        .min(MAX_WAIT)
}

/// What came after a delivered envelope (lives for one request: boxing the reply would only
/// add an allocation).
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// The receipt, recorded: its answer.
    Recorded(Reply),
    /// The client finished its side without one.
    NoReceipt,
    /// The client went away, or sent nothing in time (the stream is reset; it files the
    /// receipt on its own).
    Gone,
}

/// Reads the receipt that follows the envelope `delivered` and records it (or why not): a
/// receipt for another envelope is refused.
pub async fn on_stream(
    relay: &Relay,
    effects: &Effects,
    peer: &Peer,
    recv: &mut RecvStream,
    length: u64,
    delivered: EnvelopeId,
) -> Result<Step, Refusal> {
    let within = receipt_within(relay, length);
    let frame = match tokio::time::timeout(within, read_frame::<ReceiptFrame>(recv)).await {
        Ok(Ok(r)) => r,
        Ok(Err(ReadFrameError::Stream(quinn::ReadExactError::FinishedEarly(0)))) => {
            return Ok(Step::NoReceipt)
        }
        // Part of a frame, then the end of the client's side: it is still there to be told.
        Ok(Err(ReadFrameError::Stream(quinn::ReadExactError::FinishedEarly(_)))) => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "the receipt after the envelope ended before its frame did: nothing was recorded",
            ))
        }
        Ok(Err(ReadFrameError::Stream(_))) => return Ok(Step::Gone),
        Ok(Err(ReadFrameError::Malformed(e))) => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "the receipt after the envelope is not a frame: {}",
                    e.message()
                ),
            ))
        }
        Err(_) => {
            tracing::info!(caller = %peer.id, secs = within.as_secs(), "no receipt came on the delivery's stream in time");
            let _ = recv.stop(0u32.into());
            return Ok(Step::Gone);
        }
    };
    // The receipt's time is now, not the fetch's.
    let cx = effects.cx(relay);
    handlers::delivery::receipt(
        relay,
        peer,
        frame.receipt,
        frame.old_size,
        Some(delivered),
        &cx,
    )
    .await
    .map(Step::Recorded)
}
