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

use tokio::io::AsyncRead;

use crate::core::wire::{EnvelopeView, Reply, Request, PAGE_BYTES};
use crate::net::Peer;

use super::refusal::Refusal;
use super::state::Relay;

/// Where a fetched envelope's ciphertext is, for the shell to stream after the reply.
#[derive(Debug)]
pub enum StoredBody {
    /// Small envelopes, kept in the store itself.
    Inline(Vec<u8>),
    /// The blob of `envelope_id`, of `length` bytes, whose SHA-256 must be `sha256` (the shell
    /// checks it before sending anything).
    Blob {
        envelope_id: crate::ids::EnvelopeId,
        length: u64,
        sha256: [u8; 32],
    },
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

/// Most records one page may examine (visible or not) before it is answered with what it has.
pub const SCAN_MAX: usize = 10_000;
/// Records read from the store at a time while a page is built.
pub const SCAN_BATCH: usize = 256;

/// One page of a listing, built only from records the caller may see (threat 52): records are
/// read from the store `limit` at a time after `after` (`fetch(after, limit)`, in cursor
/// order), each turned into a view or skipped (`None`: expired, or not the caller's to see),
/// until the page holds `limit` views, its views would pass [`PAGE_BYTES`], or the store has
/// no more. The cursor is always the id of the last record *on the page*, so neither a page
/// nor its cursor says anything of the records skipped (their ids, how many, when they come
/// and go). `next` is `None` when the store had no more after the page.
///
/// A page examines at most [`SCAN_MAX`] records: past that it is answered with the views it
/// has (and their cursor), or, when it has none, as the end of the listing, so a caller whose
/// records lie beyond more than [`SCAN_MAX`] records hidden from them does not see them.
pub fn paginate<R, V: serde::Serialize>(
    after: Option<[u8; 16]>,
    limit: usize,
    mut fetch: impl FnMut(Option<[u8; 16]>, usize) -> Result<Vec<R>, Refusal>,
    id: impl Fn(&R) -> [u8; 16],
    mut view: impl FnMut(R) -> Result<Option<V>, Refusal>,
) -> Result<(Vec<V>, Option<[u8; 16]>), Refusal> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut last_shown = None;
    let mut position = after;
    let mut scanned = 0usize;
    // The store is read in batches of at least SCAN_BATCH, whatever the page's limit: a page of
    // one behind many hidden records costs a few reads, not one per record.
    let batch_size = limit.max(SCAN_BATCH);
    loop {
        let batch = fetch(position, batch_size)?;
        let exhausted = batch.len() < batch_size;
        for r in batch {
            let rid = id(&r);
            position = Some(rid);
            scanned += 1;
            if let Some(v) = view(r)? {
                let size = postcard::to_stdvec(&v)
                    .map_err(|_| Refusal::internal())?
                    .len();
                if bytes + size > PAGE_BYTES && !out.is_empty() {
                    return Ok((out, last_shown));
                }
                bytes += size;
                out.push(v);
                last_shown = Some(rid);
                if out.len() >= limit {
                    return Ok((out, last_shown));
                }
            }
        }
        if exhausted {
            return Ok((out, None));
        }
        if scanned >= SCAN_MAX {
            return Ok((out, last_shown));
        }
    }
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
        Request::GetEntries { id } => directory::get_entries(relay, peer, &id, now).await,
        Request::CreateGrant { grant } => grants::create(relay, peer, grant, now).await,
        Request::ListGrants { page } => grants::list(relay, peer, page, now).await,
        Request::PendingApprovals { page } => {
            grants::pending_approvals(relay, peer, page, now).await
        }
        Request::Approve { approval } => grants::approve(relay, peer, approval, now).await,
        Request::Submit {
            grant_id,
            statement,
            length,
        } => submit::submit(relay, peer, grant_id, statement, length, now, body).await,
        Request::Inbox { page } => delivery::inbox(relay, peer, page, now).await,
        Request::Fetch { envelope_id } => {
            let (view, body) = delivery::fetch(relay, peer, envelope_id, now).await?;
            return Ok(Outcome::Envelope { view, body });
        }
        Request::Receipt { receipt, old_size } => {
            delivery::receipt(relay, peer, receipt, old_size, now).await
        }
        Request::Proof { index, old_size } => log::proof(relay, peer, index, old_size, now).await,
        Request::GetCheckpoint { old_size } => log::checkpoint(relay, peer, old_size, now).await,
        Request::Events { from, limit } => log::events(relay, peer, from, limit, now).await,
        Request::Quarantine { agent, reason } => {
            admin::quarantine(relay, peer, &agent, &reason, now).await
        }
        Request::Release { agent } => admin::release(relay, peer, &agent, now).await,
        Request::Deny { denial } => grants::deny(relay, peer, denial, now).await,
        Request::MyGrants { page } => grants::mine(relay, peer, page, now).await,
        Request::SubmissionStatus { grant_id } => {
            delivery::submission_status(relay, peer, grant_id, now).await
        }
    };
    reply.map(Outcome::Reply)
}
