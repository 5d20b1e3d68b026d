//! The directory log as the relay serves it (docs/keys.md): the checkpoint and leaves for
//! anyone enrolled (a person's client reads every statement under their name), and the proofs
//! that travel with each entry an agent is asked to seal to.

use crate::core::directory::Directory;
use crate::core::policy::Action;
use crate::core::sign::Signed;
use crate::core::wire::{
    DirectoryCheckpoint, ErrorCode, LogProof, LoggedApproval, Reply, WireSigned, MAX_HISTORY,
    PAGE_BYTES,
};
use crate::ids::SpiffeId;
use crate::net::Peer;

use crate::server::services::effects::Cx;
use crate::server::services::events;
use crate::server::services::refusal::{Handled, Refusal};
use crate::server::services::relay::Relay;

/// Most leaves one `DirectoryLeaves` answer carries.
pub const MAX_LEAVES: u32 = 256;

/// The place of `signed` in the directory log, proved against the tree at `size`; `None` when
/// it is not logged (or only after `size`).
pub fn log_proof(dir: &Directory, signed: &Signed, size: u64) -> Option<LogProof> {
    let p = dir.position(signed)?;
    let tree = dir.log_tree()?;
    let proof = tree.inclusion_proof(p.index, size).ok()?;
    Some(LogProof {
        index: p.index,
        logged_at: p.logged_at,
        proof,
    })
}

/// What an agent needs besides the grant to seal to `user` under the checkpoint at `size`:
/// the user's newest logged entry and its proof, the earlier entries a client needs to judge
/// its continuity (back to one logged at least `wait` before `now`, or the first serial) and
/// down to the one whose key signed `grant`, and any reset approvals among them. `None` when
/// no logged entry of the user signed the grant.
pub type LoggedUser = (
    WireSigned,
    Option<LogProof>,
    Vec<(WireSigned, LogProof)>,
    Vec<LoggedApproval>,
);

pub fn logged_user(
    dir: &Directory,
    user: &SpiffeId,
    grant: &Signed,
    size: u64,
    wait: u64,
    now: u64,
    verified_here: bool,
) -> Option<LoggedUser> {
    // Newest first, only what the checkpoint covers.
    let history: Vec<(&crate::core::directory::DirectoryEntry, &Signed, LogProof)> = dir
        .history(user)
        .filter_map(|(e, s)| log_proof(dir, s, size).map(|p| (e, s, p)))
        .take(MAX_HISTORY)
        .collect();
    // The grant verified under the user's entry when this relay stored it (`verified_here`: no
    // other node shares the store, whose directory could be ahead of this one's): a user who
    // has only ever had one entry, and that one logged, signed it with that one (the agent
    // verifies it too).
    let signer = match history.len() {
        1 if verified_here && dir.history(user).nth(1).is_none() => 0,
        _ => history
            .iter()
            .position(|(e, _, _)| grant.verify(&e.signing_key).is_ok())?,
    };
    let (newest, newest_signed, newest_proof) = history.first()?;
    let mut earlier = Vec::new();
    let mut needed = newest.serial > 1 && newest_proof.logged_at.saturating_add(wait) > now;
    for (i, (e, s, p)) in history.iter().enumerate().skip(1) {
        if !needed && i > signer {
            break;
        }
        earlier.push((WireSigned::from_signed(s), p.clone()));
        needed = needed && e.serial > 1 && p.logged_at.saturating_add(wait) > now;
    }
    let mut approvals = Vec::new();
    for (e, _, _) in history.iter().take(earlier.len() + 1) {
        // The approver's entry whose key signed the approval, as the directory judged it (not
        // necessarily the newest: a renewal logged after the reset has the same key).
        let Some((a, (_, ap))) = dir.approval_by(user, e.serial) else {
            continue;
        };
        if let (Some(al), Some(apl)) = (log_proof(dir, a, size), log_proof(dir, ap, size)) {
            approvals.push(LoggedApproval {
                approval: WireSigned::from_signed(a),
                approval_log: al,
                approver_entry: WireSigned::from_signed(ap),
                approver_log: apl,
            });
        }
    }
    Some((
        WireSigned::from_signed(newest_signed),
        Some(newest_proof.clone()),
        earlier,
        approvals,
    ))
}

/// The directory checkpoint at `size`, with a consistency proof from `old_size`.
pub fn checkpoint_at(
    relay: &Relay,
    dir: &Directory,
    size: u64,
    old_size: Option<u64>,
) -> Result<DirectoryCheckpoint, Refusal> {
    let tree = dir.log_tree().ok_or_else(Refusal::internal)?;
    let checkpoint = relay
        .dir_signer
        .checkpoint(tree, size)
        .map_err(|_| Refusal::internal())?;
    let consistency = match old_size {
        Some(old) if old > size => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "the directory log has {size} leaves, fewer than the {old} you saw: this relay's directory was rolled back or is another log"
                ),
            ))
        }
        Some(old) if old > 0 => tree
            .consistency_proof(old, size)
            .map_err(|_| Refusal::internal())?,
        _ => Vec::new(),
    };
    Ok(DirectoryCheckpoint {
        checkpoint,
        consistency,
    })
}

/// `DirectoryCheckpoint`: anyone enrolled.
pub async fn directory_checkpoint(
    relay: &Relay,
    peer: &Peer,
    old_size: Option<u64>,
    cx: &Cx,
) -> Handled {
    relay.authorize_relay(cx, peer, Action::Checkpoint).await?;
    // The newest witnessed one when there is one (a reader checks the witnesses' quorum).
    let note = relay
        .directory_checkpoint_for_readers()
        .ok_or_else(Refusal::internal)?;
    let size = crate::core::tlog::checkpoint::Checkpoint::parse_text(
        crate::core::tlog::checkpoint::Note::split(&note)
            .map_err(|_| Refusal::internal())?
            .text,
    )
    .map_err(|_| Refusal::internal())?
    .size;
    let dir = relay.directory.read().map_err(|_| Refusal::internal())?;
    let c = checkpoint_at(relay, &dir, size, old_size)?;
    Ok(Reply::Checkpoint {
        checkpoint: note,
        consistency: c.consistency,
    })
}

/// `DirectoryLeaves`: anyone enrolled, a bounded page.
pub async fn directory_leaves(
    relay: &Relay,
    peer: &Peer,
    from: u64,
    limit: u32,
    cx: &Cx,
) -> Handled {
    relay.authorize_relay(cx, peer, Action::Checkpoint).await?;
    let n = usize::try_from(limit.clamp(1, MAX_LEAVES)).unwrap_or(1);
    let store = relay.store.clone();
    let leaves = cx
        .blocking(move || store.directory_log(from, n))
        .await
        .map_err(Refusal::from)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for leaf in leaves {
        bytes += leaf.len() + 8;
        if bytes > PAGE_BYTES && !out.is_empty() {
            break;
        }
        out.push(leaf);
    }
    Ok(Reply::Leaves { leaves: out })
}

/// `ApproveReset`: an admin's signed approval of a shorter wait for one reset key. The approver
/// must be the caller, an admin in force, and not the admin who enrolled the key (a second
/// person); the key must be a reset still waiting. Logged, then in force.
pub async fn approve_reset(relay: &Relay, peer: &Peer, approval: WireSigned, cx: &Cx) -> Handled {
    relay
        .authorize_relay(cx, peer, Action::PushDirectory)
        .await?;
    let bad = |m: String| Refusal::new(ErrorCode::BadRequest, m);
    let signed = approval.to_signed(crate::core::sign::StatementType::ResetApproval)?;
    let a = crate::core::keylog::ResetApproval::decode(&signed.statement)
        .map_err(|e| bad(e.message().to_owned()))?;
    if a.approver != peer.id {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "a reset approval is pushed by the admin who signed it",
        ));
    }
    let _one_at_a_time = relay.push_lock.lock().await;
    let mut next = relay
        .directory
        .read()
        .map_err(|_| Refusal::internal())?
        .clone();
    // The checks the directory makes when it takes the logged leaf in, made before it is
    // logged (so a logged approval is always taken).
    next.check_approval(&signed)
        .map_err(|e| Refusal::new(ErrorCode::Forbidden, e.message().to_owned()))?;
    if next.approval(&a.id, a.serial).is_some() {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!("{} serial {} was approved already", a.id.short(), a.serial),
        ));
    }
    if next
        .in_force_from(&a.id, a.serial)
        .is_none_or(|at| at <= cx.now)
    {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "{} serial {} is not waiting: nothing to shorten",
                a.id.short(),
                a.serial
            ),
        ));
    }
    relay
        .commit(crate::core::store::WriteOp::LogResetApproval {
            approval: crate::core::store::StoredSigned {
                statement: signed.statement.clone(),
                signature: signed.signature.to_vec(),
            },
            event: events::reset_approved(cx.now, &peer.id, &a.id, a.serial, a.wait),
        })
        .await?;
    crate::server::services::loading::catch_up(&mut next, relay.store.as_ref(), &relay.authority)
        .map_err(Refusal::from)?;
    *relay.directory.write().map_err(|_| Refusal::internal())? = next;
    Ok(Reply::Done)
}
