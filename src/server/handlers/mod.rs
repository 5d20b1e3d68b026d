//! One handler per request kind. A handler takes the relay's state, the authenticated caller,
//! the decoded request, the request's `now`, and (for a submission) a body source that is not a
//! QUIC type; it returns a reply or a refusal. Handlers do no network or file I/O of their own
//! and never read the clock: the stream shell in `super::stream` does that, which lets the
//! tests in `tests.rs` drive every handler without sockets, on an in-memory store and a fixed
//! `now`.

pub mod admin;
pub mod delivery;
pub mod directory;
pub mod grants;
pub mod log;
pub mod submit;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use tokio::io::AsyncRead;

use crate::core::wire::{EnvelopeView, Reply, Request};
use crate::net::Peer;

use super::refusal::Refusal;
use super::state::Relay;

/// Where a fetched envelope's ciphertext is, for the shell to stream after the reply.
#[derive(Debug)]
pub enum StoredBody {
    /// Small envelopes, kept in the store itself.
    Inline(Vec<u8>),
    /// A blob file of `length` bytes.
    Blob { path: PathBuf, length: u64 },
}

/// What a request produced.
#[derive(Debug)]
pub enum Outcome {
    /// A reply frame, and nothing after it.
    Reply(Reply),
    /// `Reply::Envelope` followed by the ciphertext.
    Envelope {
        view: EnvelopeView,
        body: StoredBody,
    },
}

/// The request → handler table.
pub async fn handle<B: AsyncRead + Unpin + Send>(
    relay: &Relay,
    peer: &Peer,
    request: Request,
    now: u64,
    body: &mut B,
) -> Result<Outcome, Refusal> {
    let reply = match request {
        Request::PushDirectory {
            entries,
            revocations,
        } => directory::push(relay, peer, entries, revocations, now).await,
        Request::GetEntry { id } => directory::get_entry(relay, peer, &id, now).await,
        Request::CreateGrant { grant } => grants::create(relay, peer, grant, now).await,
        Request::ListGrants => grants::list(relay, peer, now).await,
        Request::PendingApprovals => grants::pending_approvals(relay, peer, now).await,
        Request::Approve { approval } => grants::approve(relay, peer, approval, now).await,
        Request::Submit {
            grant_id,
            statement,
            length,
        } => submit::submit(relay, peer, grant_id, statement, length, now, body).await,
        Request::Inbox => delivery::inbox(relay, peer, now).await,
        Request::Fetch { envelope_id } => {
            let (view, body) = delivery::fetch(relay, peer, envelope_id, now).await?;
            return Ok(Outcome::Envelope { view, body });
        }
        Request::Receipt { receipt } => delivery::receipt(relay, peer, receipt, now).await,
        Request::GetCheckpoint { old_size } => log::checkpoint(relay, peer, old_size, now).await,
        Request::Events { from, limit } => log::events(relay, peer, from, limit, now).await,
        Request::Quarantine { agent, reason } => {
            admin::quarantine(relay, peer, &agent, &reason, now).await
        }
        Request::Release { agent } => admin::release(relay, peer, &agent, now).await,
    };
    reply.map(Outcome::Reply)
}
