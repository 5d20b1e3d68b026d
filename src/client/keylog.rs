//! What an agent checks before it seals to a user's key (docs/keys.md): the entry is in the
//! directory log (an inclusion proof under a directory checkpoint signed by the log key), that
//! checkpoint extends the newest one this agent saw (kept beside its identity across runs), and
//! the key is in force: a rotation or renewal of a key in force, or a reset whose waiting period
//! (pinned from the trust root at import) has passed.

use crate::core::directory::DirectoryEntry;
use crate::core::grant::Grant;
use crate::core::identity::Identity;
use crate::core::keylog::{
    change_of, directory_origin, leaf_bytes, usable_from, Change, LoggedEntry, Mirror,
    ResetApproval, DEFAULT_RESET_WAIT, LOGGED_AT_SKEW,
};
use crate::core::sign::{PublicKey, StatementType, VerifierKey};
use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::{leaf_hash, verify_inclusion};
use crate::core::wire::{GrantView, LogProof, WireSigned};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

use super::verify::{verified_entry, OpenGrant};

/// The key the directory log's checkpoints are signed with: the pinned log key, under the
/// directory origin.
pub fn directory_key(identity: &Identity) -> Result<VerifierKey> {
    let log = identity
        .log_key
        .as_ref()
        .ok_or_else(|| Error::bad_input("this identity pins no log key: import its bundle"))?;
    VerifierKey::new(&directory_origin(&log.name), log.key)
}

/// The waiting period of a reset, as this identity pinned it.
pub fn reset_wait(identity: &Identity) -> u64 {
    identity.reset_wait.unwrap_or(DEFAULT_RESET_WAIT)
}

/// What an agent had seen before a listing: the size of its saved directory checkpoint, when
/// it first kept it (Unix seconds), and the serial it had pinned for the grant's user.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub size: u64,
    pub at: u64,
    pub pinned: Option<u64>,
}

/// Checks that `signed` is leaf `p.index` of the directory log under `cp`.
fn check_logged(signed: &WireSigned, p: &LogProof, cp: &Checkpoint, what: &str) -> Result<()> {
    let leaf = leaf_bytes(p.logged_at, &signed.statement, &signed.signature);
    verify_inclusion(&leaf_hash(&leaf), p.index, cp.size, &p.proof, &cp.root).map_err(|_| {
        Error::verification(format!(
            "the relay's proof that {what} is in the directory log does not verify (leaf {} of {}): refusing to seal to it",
            p.index, cp.size
        ))
    })
}

/// A grant view an agent may act on: every entry in it verified against the authority and
/// proved in the directory log under `cp`, the grant signed by one of the user's logged keys,
/// and the user's newest key in force at `now` (`wait`: the pinned waiting period of a reset).
///
/// `seen`: what this agent had seen before this listing (see [`Seen`]): a leaf past that
/// checkpoint that says it was logged earlier (a relay backdating a key to skip its wait), or
/// a serial the agent had pinned logged again after it (a second entry for one serial), is
/// refused. `mirror`: what this party read of the whole directory log (`core::keylog::Mirror`),
/// judged as of `cp`: a rotation or renewal a revoked key vouched for is a reset, with its
/// wait, and a reset approval signed by a revoked admin key shortens nothing, as the relay
/// judges them.
pub fn checked_grant(
    view: &GrantView,
    cp: &Checkpoint,
    authority: &PublicKey,
    wait: u64,
    now: u64,
    seen: Option<Seen>,
    mirror: Option<&Mirror>,
) -> Result<OpenGrant> {
    let newest = verified_entry(&view.user_entry, authority, None)?;
    let revoked_through = mirror.and_then(|m| m.revoked_through(&newest.id, cp.size));
    let who = newest.id.short();
    let Some(newest_log) = &view.user_log else {
        return Err(Error::verification(format!(
            "the relay served {who}'s key (serial {}) without a place in the directory log: refusing to seal to a key that is not logged",
            newest.serial
        )));
    };
    check_logged(&view.user_entry, newest_log, cp, &format!("{who}'s key"))?;
    if newest_log.logged_at > now.saturating_add(LOGGED_AT_SKEW) {
        return Err(Error::verification(format!(
            "the directory log says {who}'s key was logged in the future: refusing to seal to it"
        )));
    }
    // The chain, oldest first.
    let mut chain = Vec::with_capacity(view.earlier.len() + 1);
    for (w, p) in view.earlier.iter().rev() {
        let e = verified_entry(w, authority, Some(&newest.id))?;
        check_logged(w, p, cp, &format!("{who}'s earlier key"))?;
        chain.push(LoggedEntry {
            entry: e,
            index: p.index,
            logged_at: p.logged_at,
        });
    }
    chain.push(LoggedEntry {
        entry: newest.clone(),
        index: newest_log.index,
        logged_at: newest_log.logged_at,
    });
    if let Some(Seen { size, at, pinned }) = seen {
        if pinned.is_some_and(|p| newest.serial <= p) && newest_log.index >= size {
            return Err(Error::verification(format!(
                "{who}'s serial {}, which this agent knew before, is in the directory log again after what it saw (leaf {}): two entries for one serial; refusing to seal to it",
                newest.serial, newest_log.index
            )));
        }
        for l in chain.iter().filter(|l| l.index >= size) {
            if l.logged_at.saturating_add(LOGGED_AT_SKEW) < at {
                return Err(Error::verification(format!(
                    "the directory log says {who}'s key serial {} was logged at {}, but it was not in the log this agent saw at {}: a backdated entry; refusing to seal to it",
                    l.entry.serial,
                    crate::clock::rfc3339(l.logged_at),
                    crate::clock::rfc3339(at)
                )));
            }
        }
    }
    let approved = approvals(view, cp, authority, &chain, mirror)?;
    let (at, change) = usable_from(&chain, wait, &approved, revoked_through, now)?;
    // What a revoked key vouched for (a leaked key's "rotation") waits as a reset, and so does
    // what rotates from it: said so when it is what holds the key back.
    let vouched_by_revoked = chain.len() >= 2
        && revoked_through.is_some_and(|r| chain[chain.len() - 2].entry.serial <= r)
        && change == Change::Reset
        && change_of(&newest, Some(&chain[chain.len() - 2].entry)) != Change::Reset;
    if at > now {
        let by = if newest.enrolled_by.is_empty() {
            "the authority".to_owned()
        } else {
            newest.enrolled_by.clone()
        };
        let how = if vouched_by_revoked {
            format!(
                "a rotation signed by {who}'s revoked key (serial {}), which is a reset",
                chain[chain.len() - 2].entry.serial
            )
        } else if change == Change::Reset {
            format!("a reset not signed by {who}'s previous key")
        } else {
            format!("a rotation of a reset not signed by {who}'s previous key")
        };
        return Err(Error::verification(format!(
            "{who}'s newest key (serial {}) was enrolled by {by} at {} as {how}: nothing is sealed to it until {} (the waiting period, docs/keys.md)",
            newest.serial,
            crate::clock::rfc3339(newest_log.logged_at),
            crate::clock::rfc3339(at)
        )));
    }
    // The grant: signed by one of the user's logged keys.
    let signed = view.grant.to_signed(StatementType::Grant)?;
    let grant = chain
        .iter()
        .rev()
        .find_map(|l| Grant::verify(&signed, &l.entry.signing_key).ok())
        .ok_or_else(|| {
            Error::verification(format!(
                "the relay served a grant that none of {who}'s logged keys signed"
            ))
        })?;
    if grant.user != newest.id {
        return Err(Error::verification(
            "the relay served a grant that does not match its requester",
        ));
    }
    let sources = super::verify::shown_text(&grant, &view.sources)?;
    Ok(OpenGrant {
        grant,
        user_entry: newest,
        sources,
        grant_digest: crate::core::store::statement_digest(&signed),
    })
}

/// The verified approvals in `view` that shorten a reset's wait: serial → wait.
fn approvals(
    view: &GrantView,
    cp: &Checkpoint,
    authority: &PublicKey,
    chain: &[LoggedEntry],
    mirror: Option<&Mirror>,
) -> Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    for a in &view.approvals {
        // An approval that does not hold shortens nothing (the full wait applies); it does not
        // make the grant fail.
        let one = || -> Result<Option<(u64, u64)>> {
            let approver: DirectoryEntry = verified_entry(&a.approver_entry, authority, None)?;
            check_logged(
                &a.approver_entry,
                &a.approver_log,
                cp,
                "an approving admin's key",
            )?;
            check_logged(&a.approval, &a.approval_log, cp, "a reset approval")?;
            let signed = a.approval.to_signed(StatementType::ResetApproval)?;
            let decoded = ResetApproval::decode(&signed.statement)?;
            let Some(reset) = chain.iter().find(|l| l.entry.serial == decoded.serial) else {
                return Ok(None);
            };
            // The approver was enrolled before the reset was logged (an admin minted for the
            // occasion is no second person), and the approval came after it.
            if a.approver_log.index >= reset.index || a.approval_log.index <= reset.index {
                return Ok(None);
            }
            // An admin key the log revokes (perhaps leaked) approves nothing, whenever it was
            // revoked: the relay takes such an approval back too.
            if mirror
                .and_then(|m| m.revoked_through(&approver.id, cp.size))
                .is_some_and(|r| approver.serial <= r)
            {
                return Ok(None);
            }
            let ok = ResetApproval::verify(&signed, &approver, &reset.entry)?;
            Ok(Some((ok.serial, ok.wait)))
        };
        if let Ok(Some((serial, wait))) = one() {
            out.insert(serial, wait);
        }
    }
    Ok(out)
}
