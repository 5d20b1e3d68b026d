//! One handler per request kind. A handler takes the relay's state, the authenticated caller,
//! the decoded request, what it may touch besides ([`Cx`]: the request's `now`, the clock, a
//! blocking executor, an alert sink), and (for a submission) a body source that is not a QUIC
//! type; it returns a reply or a refusal. Handlers do no network I/O, start no task, thread or
//! process, and read the clock only through `Cx`: the stream shell in `server::shell::stream`
//! does the rest, which lets the tests in `tests/` drive every handler without sockets, on an
//! in-memory store and a fixed `now`.

pub mod admin;
pub mod auth;
pub mod delivery;
pub mod directory;
pub mod grants;
pub mod keylog;
pub mod log;
pub mod outcome;
pub mod page;
pub mod sources;
pub mod submit;
pub mod subscribe;
#[cfg(test)]
mod tests;
pub mod upload;

use tokio::io::AsyncRead;

use crate::core::wire::Request;
use crate::net::Peer;

use crate::server::services::effects::Cx;
use crate::server::services::refusal::Refusal;
use crate::server::services::relay::Relay;

pub use outcome::{Outcome, StoredBody};

/// The request → handler table.
pub async fn handle<B: AsyncRead + Unpin + Send>(
    relay: &Relay,
    peer: &Peer,
    request: Request,
    cx: &Cx,
    body: &mut B,
) -> Result<Outcome, Refusal> {
    let reply = match request {
        Request::PushDirectory {
            entries,
            revocations,
        } => directory::push(relay, peer, entries, revocations, cx).await,
        Request::GetEntry { id } => directory::get_entry(relay, peer, &id, cx).await,
        Request::GetEntries { id } => directory::get_entries(relay, peer, &id, cx).await,
        Request::CreateGrant { grant } => grants::create(relay, peer, grant, cx).await,
        Request::ListGrants { page, dir_size } => {
            grants::list(relay, peer, page, dir_size, cx).await
        }
        Request::ApproveReset { approval } => {
            keylog::approve_reset(relay, peer, approval, cx).await
        }
        Request::DirectoryCheckpoint { old_size } => {
            keylog::directory_checkpoint(relay, peer, old_size, cx).await
        }
        Request::DirectoryLeaves { from, limit } => {
            keylog::directory_leaves(relay, peer, from, limit, cx).await
        }
        Request::PendingApprovals { page } => {
            grants::pending_approvals(relay, peer, page, cx).await
        }
        Request::Approve { approval } => grants::approve(relay, peer, approval, cx).await,
        Request::Submit {
            grant_id,
            statement,
            length,
            from_piece,
        } => {
            submit::submit(
                relay, peer, grant_id, statement, length, from_piece, cx, body,
            )
            .await
        }
        Request::Resumable { grant_id } => submit::resumable(relay, peer, grant_id, cx).await,
        Request::Inbox { page } => delivery::inbox(relay, peer, page, cx).await,
        Request::Fetch {
            envelope_id,
            from_piece,
        }
        | Request::Deliver {
            envelope_id,
            from_piece,
        } => {
            let (view, body) = delivery::fetch(relay, peer, envelope_id, from_piece, cx).await?;
            return Ok(Outcome::Envelope { view, body });
        }
        Request::Receipt { receipt, old_size } => {
            delivery::receipt(relay, peer, receipt, old_size, None, cx).await
        }
        Request::Proof { index, old_size } => log::proof(relay, peer, index, old_size, cx).await,
        Request::GetCheckpoint { old_size } => log::checkpoint(relay, peer, old_size, cx).await,
        Request::Events { from, limit } => log::events(relay, peer, from, limit, cx).await,
        Request::Quarantine { agent, reason } => {
            admin::quarantine(relay, peer, &agent, &reason, cx).await
        }
        Request::Release { agent } => admin::release(relay, peer, &agent, cx).await,
        Request::Deny { denial } => grants::deny(relay, peer, denial, cx).await,
        Request::MyGrants { page } => grants::mine(relay, peer, page, cx).await,
        Request::Dispatch { dispatch } => sources::dispatch(relay, peer, dispatch, cx).await,
        Request::Assignments { page, dir_size } => {
            sources::assignments(relay, peer, page, dir_size, cx).await
        }
        Request::RefuseAssignment { refusal } => sources::refuse(relay, peer, refusal, cx).await,
        // The stream shell serves a subscription itself (`server::shell::subscription`).
        Request::Subscribe { .. } => Err(Refusal::internal()),
        Request::SubmissionStatus { grant_id } => {
            delivery::submission_status(relay, peer, grant_id, cx).await
        }
    };
    reply.map(Outcome::Reply)
}
