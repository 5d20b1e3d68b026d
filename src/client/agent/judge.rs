//! An agent's (or a source's) verdict on each grant a listing or a feed brings: the served
//! key chain checked entry by entry in the directory log (`client::keylog`), against the
//! whole log as far as read (`client::dirmirror`: nothing newer left out, nothing revoked) and
//! against the serial pins; what fails is answered with why, and nothing is sealed for it.

use crate::clock;
use crate::core::identity::Identity;
use crate::core::wire::{Reply, Request};
use crate::error::{Error, Result};

use super::super::connection::Connection;
use super::super::verify::{authority, OpenGrant, SerialPins};

/// Every item of a listing that carries grant views (an agent's grants, a source's
/// assignments), each with this party's verdict on its grant: the grant, or why nothing may be
/// sealed for it (one line: a key not in the directory log, a reset still waiting, a signature
/// that does not verify). Expired grants are left out. Errors only when the listing itself
/// cannot be trusted (a directory log that does not extend what this party saw).
pub(crate) async fn judge_listing<T>(
    conn: &Connection,
    identity: &Identity,
    pins: &SerialPins,
    ask: impl Fn(crate::core::wire::Page, Option<u64>) -> Request,
    take: impl Fn(
        Reply,
    ) -> Result<(
        Vec<T>,
        Option<[u8; 16]>,
        crate::core::wire::DirectoryCheckpoint,
    )>,
    view: impl Fn(&T) -> &crate::core::wire::GrantView,
) -> Result<Vec<(T, Result<OpenGrant>)>> {
    let dir_key = super::super::keylog::directory_key(identity)?;
    let sent = std::sync::Mutex::new(None);
    // What this party had seen of the directory log before this listing (backdating). The
    // pins first, then the checkpoint: a process writes the checkpoint before the pins it
    // learned under it, so what is read here never pins more than the checkpoint shows.
    pins.refresh()?;
    let pinned_before = pins.snapshot()?;
    let seen = pins.directory.seen(&dir_key)?;
    let pages = conn
        .all_pages(
            |page| {
                let dir_size = pins.directory.size(&dir_key).ok().flatten();
                if let Ok(mut s) = sent.lock() {
                    *s = dir_size;
                }
                ask(page, dir_size)
            },
            |reply| {
                let (items, next, directory) = take(reply)?;
                let from = sent.lock().ok().and_then(|s| *s);
                let cp = std::sync::Arc::new(pins.directory.accept(&dir_key, &directory, from)?);
                Ok((items.into_iter().map(|g| (g, cp.clone())).collect(), next))
            },
        )
        .await?;
    pins.refresh()?;
    // Every served key is judged against the whole directory log up to the newest checkpoint
    // of the listing (the pages' checkpoints extend one another).
    let newest = pages
        .iter()
        .map(|(_, cp)| cp)
        .max_by_key(|cp| cp.size)
        .cloned();
    let mirror = match &newest {
        Some(cp) => Some(
            pins.mirror
                .caught_up(conn, cp, &dir_key.name, &authority(identity)?)
                .await?,
        ),
        None => None,
    };
    judge_items(
        identity,
        pins,
        pages,
        &pinned_before,
        seen,
        mirror.as_deref(),
        view,
    )
}

/// Items of a listing or feed, each with this party's verdict on its grant.
pub(crate) type Judged<T> = Vec<(T, Result<OpenGrant>)>;

/// One frame of a grant feed (`Subscribe`): its directory checkpoint accepted from `from` (the
/// size the previous frame proved), then each grant judged as [`judge_listing`] judges them.
/// Gives back the size this frame proved.
pub(crate) async fn judge_frame<T>(
    conn: &Connection,
    identity: &Identity,
    pins: &SerialPins,
    items: Vec<T>,
    directory: &crate::core::wire::DirectoryCheckpoint,
    from: Option<u64>,
    view: impl Fn(&T) -> &crate::core::wire::GrantView,
) -> Result<(Judged<T>, u64)> {
    let dir_key = super::super::keylog::directory_key(identity)?;
    pins.refresh()?;
    let pinned_before = pins.snapshot()?;
    let seen = pins.directory.seen(&dir_key)?;
    // Another listing or feed of this identity may have moved the pins on since the frame
    // before. A frame whose checkpoint is the one the pins hold (same size, no proof needed) is
    // judged against it (a different root there is a fork); any other frame cannot be proved
    // from what the pins hold: the subscription starts again from there (not an alarm).
    let stored = seen.map(|(size, _)| size);
    let same_as_pinned;
    let (directory, from) = if stored == from {
        (directory, from)
    } else {
        let cp = crate::core::tlog::checkpoint::Checkpoint::verify(&directory.checkpoint, &dir_key)
            .map_err(|e| e.context("the relay's directory log"))?;
        if Some(cp.size) == stored {
            // Equal sizes: the roots must be equal, with no proof.
            same_as_pinned = crate::core::wire::DirectoryCheckpoint {
                checkpoint: directory.checkpoint.clone(),
                consistency: Vec::new(),
            };
            (&same_as_pinned, stored)
        } else {
            return Err(Error::new(
                crate::ErrorKind::Unavailable,
                "this identity's directory checkpoint moved on while the subscription ran: subscribe again",
            ));
        }
    };
    let cp = std::sync::Arc::new(pins.directory.accept(&dir_key, directory, from)?);
    let size = cp.size;
    pins.refresh()?;
    let items: Vec<_> = items.into_iter().map(|g| (g, cp.clone())).collect();
    let mirror = if items.is_empty() {
        None
    } else {
        Some(
            pins.mirror
                .caught_up(conn, &cp, &dir_key.name, &authority(identity)?)
                .await?,
        )
    };
    Ok((
        judge_items(
            identity,
            pins,
            items,
            &pinned_before,
            seen,
            mirror.as_deref(),
            view,
        )?,
        size,
    ))
}

/// Each listed grant with this party's verdict (see [`judge_listing`]).
pub(crate) fn judge_items<T>(
    identity: &Identity,
    pins: &SerialPins,
    pages: Vec<(T, std::sync::Arc<crate::core::tlog::checkpoint::Checkpoint>)>,
    pinned_before: &std::collections::HashMap<crate::ids::SpiffeId, u64>,
    seen: Option<(u64, u64)>,
    mirror: Option<&crate::core::keylog::Mirror>,
    view: impl Fn(&T) -> &crate::core::wire::GrantView,
) -> Result<Vec<(T, Result<OpenGrant>)>> {
    let authority = authority(identity)?;
    let wait = super::super::keylog::reset_wait(identity);
    let now = clock::now();
    let mut out = Vec::new();
    for (item, cp) in pages {
        // One grant that does not verify (or names a superseded or unlogged entry, or a reset
        // still waiting) is answered with why: nothing is sealed for it, and it must not stop
        // the party serving the others.
        let v = view(&item);
        let user = crate::core::grant::Grant::decode(&v.grant.statement)
            .ok()
            .map(|g| g.user);
        let pinned = user.as_ref().and_then(|u| pinned_before.get(u).copied());
        let g = super::super::keylog::checked_grant(
            v,
            &cp,
            &authority,
            wait,
            now,
            seen.map(|(size, at)| super::super::keylog::Seen { size, at, pinned }),
            mirror,
        )
        .and_then(|g| unomitted(v, g, &cp, mirror))
        .and_then(|g| pins.check(&g.user_entry).map(|()| g));
        // The party judges expiry itself too: an expired grant is not acted on.
        if let Ok(g) = &g {
            if !g.user_entry.is_current(now) || g.grant.expires <= now {
                continue;
            }
        }
        out.push((item, g));
    }
    Ok(out)
}

/// `g`, whose user's key the relay served in `v` under `cp`, if the whole directory log up to
/// `cp` (`mirror`, read at least that far) holds nothing newer for that user and no revocation
/// of it: a relay that leaves a key change out of the chain it serves is caught.
fn unomitted(
    v: &crate::core::wire::GrantView,
    g: OpenGrant,
    cp: &crate::core::tlog::checkpoint::Checkpoint,
    mirror: Option<&crate::core::keylog::Mirror>,
) -> Result<OpenGrant> {
    let Some(mirror) = mirror else {
        return Err(Error::internal(
            "a served key was judged without the directory log read",
        ));
    };
    use crate::core::sign::StatementType;
    let signed = v.user_entry.to_signed(StatementType::DirectoryEntry)?;
    mirror.check(&g.user_entry, &signed, cp.size)?;
    // The chain before it, as served (checked_grant verified each entry and its place).
    let earlier = v
        .earlier
        .iter()
        .map(|(w, _)| {
            let s = w.to_signed(StatementType::DirectoryEntry)?;
            let e = crate::core::directory::DirectoryEntry::decode(&s.statement)?;
            Ok((e.serial, s))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut chain: Vec<(u64, &crate::core::sign::Signed)> =
        earlier.iter().map(|(serial, s)| (*serial, s)).collect();
    chain.push((g.user_entry.serial, &signed));
    mirror.check_chain(&g.user_entry.id, &chain, cp.size)?;
    Ok(g)
}
