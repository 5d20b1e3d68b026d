//! The write operations, once for every store: each [`WriteOp`] checked (through
//! `core::grant_state`) and applied to a store's open transaction through [`Tables`], with its
//! event appended as a log leaf. A refused operation writes nothing (every check comes before
//! the first write), so the others in the batch go on.

use crate::core::grant_state;
use crate::core::store::{
    pair_usage_key, AssignmentRecord, AssignmentState, DeliveryRecord, EnvelopeRecord, Event,
    GrantRecord, GrantState, OpResult, QuotaKind, StoredSigned, Usage, WriteOp, WriteRefusal,
};
use crate::error::Result;
use crate::ids::{EnvelopeId, GrantId, SpiffeId};

/// One store's open write transaction, as the operations see it. Each store keeps its own
/// indexes in step with the records it is given.
pub trait Tables {
    fn grant(&mut self, id: &GrantId) -> Result<Option<GrantRecord>>;
    fn assignment(&mut self, id: &GrantId) -> Result<Option<AssignmentRecord>>;
    /// Writes an assignment: in its source's queue while it is queued.
    fn put_assignment(&mut self, a: &AssignmentRecord) -> Result<()>;
    /// Writes a grant and its indexes: listed for its agent while open, for its user always,
    /// and as awaiting approval while open, needing one, and without one.
    fn put_grant(&mut self, g: &GrantRecord) -> Result<()>;
    /// What a party (its SPIFFE ID) or a user against an agent
    /// ([`crate::core::store::pair_usage_key`]) holds.
    fn usage(&mut self, key: &str) -> Result<Usage>;
    fn put_usage(&mut self, key: &str, u: &Usage) -> Result<()>;
    fn envelope(&mut self, id: &EnvelopeId) -> Result<Option<EnvelopeRecord>>;
    /// Writes an envelope record: in its user's inbox while it has no receipt.
    fn put_envelope(&mut self, e: &EnvelopeRecord) -> Result<()>;
    /// Removes an envelope record, its inbox entry and its inline ciphertext.
    fn remove_envelope(&mut self, e: &EnvelopeRecord) -> Result<()>;
    fn put_inline(&mut self, id: &EnvelopeId, body: &[u8]) -> Result<()>;
    fn put_delivery(&mut self, d: &DeliveryRecord) -> Result<()>;
    /// The directory statement stored for (`revocation`, `id`, `serial`), if any.
    fn stored_directory(
        &mut self,
        revocation: bool,
        id: &str,
        serial: u64,
    ) -> Result<Option<StoredSigned>>;
    /// A directory statement: an entry, or with `revocation` a revocation. Returns whether it
    /// is new (one already stored under the same serial is kept as it was).
    fn put_directory(
        &mut self,
        revocation: bool,
        id: &str,
        serial: u64,
        s: &StoredSigned,
    ) -> Result<bool>;
    /// How many leaves the directory log holds.
    fn directory_log_size(&mut self) -> Result<u64>;
    /// Appends a leaf to the directory log; returns its index.
    fn append_directory_leaf(&mut self, leaf: &[u8]) -> Result<u64>;
    fn put_quarantine(&mut self, agent: &str, reason: &str) -> Result<()>;
    /// Whether the agent was quarantined (and is not any more).
    fn remove_quarantine(&mut self, agent: &str) -> Result<bool>;
    /// Appends the event as the next log leaf (and its tree nodes); returns its index.
    fn append(&mut self, event: &Event) -> Result<u64>;
}

/// The event as stored: fields cut to what a leaf may hold, so every leaf can be read back.
pub fn leaf_event(event: &Event) -> std::borrow::Cow<'_, Event> {
    if event.fits_a_leaf() {
        std::borrow::Cow::Borrowed(event)
    } else {
        std::borrow::Cow::Owned(event.clone().bounded())
    }
}

/// Applies `ops` in order inside the caller's transaction.
pub fn apply_ops(t: &mut impl Tables, ops: &[WriteOp]) -> Result<Vec<OpResult>> {
    ops.iter().map(|op| apply_one(t, op)).collect()
}

fn adjust(t: &mut impl Tables, who: &SpiffeId, change: impl FnOnce(&mut Usage)) -> Result<()> {
    adjust_key(t, &who.to_string(), change)
}

fn adjust_key(t: &mut impl Tables, key: &str, change: impl FnOnce(&mut Usage)) -> Result<()> {
    let mut u = t.usage(key)?;
    change(&mut u);
    t.put_usage(key, &u)
}

/// A grant is no longer open: neither party (nor the user against the agent) holds it against
/// a quota.
fn release_open(t: &mut impl Tables, g: &GrantRecord) -> Result<()> {
    for party in [&g.user, &g.agent] {
        adjust(t, party, |u| {
            u.open_grants = u.open_grants.saturating_sub(1)
        })?;
    }
    release_pair(t, g)
}

fn release_pair(t: &mut impl Tables, g: &GrantRecord) -> Result<()> {
    adjust_key(t, &pair_usage_key(&g.user, &g.agent), |u| {
        u.open_grants = u.open_grants.saturating_sub(1)
    })
}

/// An envelope leaves the user's inbox (receipt or expiry).
fn release_pending(t: &mut impl Tables, e: &EnvelopeRecord) -> Result<()> {
    adjust(t, &e.user, |u| {
        u.pending_envelopes = u.pending_envelopes.saturating_sub(1);
        u.pending_bytes = u.pending_bytes.saturating_sub(e.length);
    })
}

/// A grant changed by `change` (a state transition of `core::grant_state`), stored with `event`.
fn transition(
    t: &mut impl Tables,
    id: &GrantId,
    event: &Event,
    change: impl FnOnce(&GrantRecord) -> std::result::Result<GrantRecord, WriteRefusal>,
    closes: bool,
) -> Result<OpResult> {
    let g = match t.grant(id)? {
        None => return Ok(Err(WriteRefusal::GrantNotFound)),
        Some(g) => match change(&g) {
            Err(r) => return Ok(Err(r)),
            Ok(g) => g,
        },
    };
    if closes {
        release_open(t, &g)?;
    }
    t.put_grant(&g)?;
    Ok(Ok(t.append(event)?))
}

fn apply_one(t: &mut impl Tables, op: &WriteOp) -> Result<OpResult> {
    Ok(match op {
        WriteOp::PutDirectory {
            entries,
            revocations,
            event,
            log_all,
            conflicts_refused,
        } => {
            let log_all = *log_all && t.directory_log_size()? == 0;
            let statements = || {
                entries
                    .iter()
                    .map(|e| (false, e))
                    .chain(revocations.iter().map(|r| (true, r)))
            };
            // Another entry stored for one of these serials (another admin's, pushed a moment
            // before, perhaps through another node): refused before anything is written, not
            // kept silently while the pusher is told it took effect. Two revocations of one
            // serial revoke the same keys: the stored one stands, no refusal.
            if *conflicts_refused {
                for (id, serial, s) in entries {
                    if t.stored_directory(false, id, *serial)?
                        .is_some_and(|stored| stored != *s)
                    {
                        return Ok(Err(WriteRefusal::DirectoryConflict {
                            id: id.clone(),
                            serial: *serial,
                        }));
                    }
                }
            }
            for (revocation, (id, serial, s)) in statements() {
                if t.put_directory(revocation, id, *serial, s)? || log_all {
                    // Statements from before key transparency are logged as of time 0: any
                    // wait they would owe is over (they were in force already).
                    let at = if log_all { 0 } else { event.time };
                    let leaf = crate::core::keylog::leaf_bytes(at, &s.statement, &s.signature);
                    t.append_directory_leaf(&leaf)?;
                }
            }
            Ok(t.append(event)?)
        }
        WriteOp::LogResetApproval { approval, event } => {
            let leaf = crate::core::keylog::leaf_bytes(
                event.time,
                &approval.statement,
                &approval.signature,
            );
            t.append_directory_leaf(&leaf)?;
            Ok(t.append(event)?)
        }
        WriteOp::CreateGrant {
            record,
            quotas,
            event,
        } => {
            let pair = pair_usage_key(&record.user, &record.agent);
            let held_by_user = t.usage(&record.user.to_string())?.open_grants;
            let held_by_agent = t.usage(&record.agent.to_string())?.open_grants;
            let held_by_pair = t.usage(&pair)?.open_grants;
            if t.grant(&record.grant_id)?.is_some() {
                Err(WriteRefusal::Duplicate)
            } else if held_by_user >= quotas.open_grants_per_user {
                Err(WriteRefusal::Quota {
                    kind: QuotaKind::OpenGrantsPerUser,
                    limit: quotas.open_grants_per_user,
                })
            } else if held_by_pair >= quotas.open_grants_per_user_per_agent {
                // Before the agent's own quota: one user's share runs out first.
                Err(WriteRefusal::Quota {
                    kind: QuotaKind::OpenGrantsPerUserPerAgent,
                    limit: quotas.open_grants_per_user_per_agent,
                })
            } else if held_by_agent >= quotas.open_grants_per_agent {
                Err(WriteRefusal::Quota {
                    kind: QuotaKind::OpenGrantsPerAgent,
                    limit: quotas.open_grants_per_agent,
                })
            } else {
                adjust(t, &record.user, |u| u.open_grants += 1)?;
                adjust(t, &record.agent, |u| u.open_grants += 1)?;
                adjust_key(t, &pair, |u| u.open_grants += 1)?;
                t.put_grant(record)?;
                Ok(t.append(event)?)
            }
        }
        WriteOp::Dispatch { record, now, event } => match t.grant(&record.grant_id)? {
            None => Err(WriteRefusal::GrantNotFound),
            Some(g) => match t.assignment(&record.grant_id)? {
                Some(a) if a.dispatch == record.dispatch => Err(WriteRefusal::Duplicate),
                Some(_) => Err(WriteRefusal::AlreadyDispatched),
                None => match grant_state::check_consume(&g, &record.agent, 0, *now) {
                    Err(r) => Err(r),
                    Ok(()) => {
                        t.put_assignment(record)?;
                        Ok(t.append(event)?)
                    }
                },
            },
        },
        WriteOp::RefuseAssignment {
            grant_id,
            source,
            refusal,
            event,
        } => match t.assignment(grant_id)? {
            Some(mut a) if a.source == *source && a.queued() => {
                a.state = AssignmentState::Refused {
                    refusal: refusal.clone(),
                };
                t.put_assignment(&a)?;
                // Nobody can fill the grant now (it is its source's, and the source refused):
                // it is closed, and stops holding its user's, agent's and pair's quotas.
                if let Some(g) = t.grant(grant_id)?.filter(|g| g.state == GrantState::Open) {
                    let closed = GrantRecord {
                        state: GrantState::Expired,
                        ..g.clone()
                    };
                    t.put_grant(&closed)?;
                    release_open(t, &g)?;
                }
                Ok(t.append(event)?)
            }
            // The same signed refusal again (an answer lost, or sent through another node).
            Some(a)
                if a.source == *source
                    && matches!(&a.state, AssignmentState::Refused { refusal: r } if r == refusal) =>
            {
                Err(WriteRefusal::Duplicate)
            }
            _ => Err(WriteRefusal::NotAssigned),
        },
        WriteOp::ConsumeGrant {
            agent,
            source,
            envelope,
            inline_body,
            now,
            quotas,
            event,
        } => {
            let waiting = t.usage(&envelope.user.to_string())?;
            // A grant dispatched to a source is that source's to fill, whatever became of the
            // assignment (a refusal there is final), and a source fills only what was
            // dispatched to it and still waits.
            let assignment = t.assignment(&envelope.grant_id)?;
            let assigned = match (&assignment, source) {
                (Some(a), Some(s)) if a.source == *s && a.queued() => Ok(()),
                (_, Some(_)) => Err(WriteRefusal::NotAssigned),
                (Some(_), None) => Err(WriteRefusal::AlreadyDispatched),
                (None, None) => Ok(()),
            };
            let grant = t.grant(&envelope.grant_id)?;
            let consumed = assigned
                .and_then(|()| match grant {
                    None => Err(WriteRefusal::GrantNotFound),
                    Some(g) => {
                        grant_state::consume(&g, agent, envelope.length, *now, envelope.envelope_id)
                    }
                })
                .and_then(|g| {
                    if waiting.pending_envelopes >= quotas.pending_envelopes_per_user {
                        Err(WriteRefusal::Quota {
                            kind: QuotaKind::PendingEnvelopesPerUser,
                            limit: quotas.pending_envelopes_per_user,
                        })
                    } else if waiting.pending_bytes.saturating_add(envelope.length)
                        > quotas.pending_bytes_per_user
                    {
                        Err(WriteRefusal::Quota {
                            kind: QuotaKind::PendingBytesPerUser,
                            limit: quotas.pending_bytes_per_user,
                        })
                    } else {
                        Ok(g)
                    }
                });
            match consumed {
                Err(refusal) => Err(refusal),
                Ok(g) => {
                    adjust(t, &g.user, |u| {
                        u.open_grants = u.open_grants.saturating_sub(1);
                        u.pending_envelopes += 1;
                        u.pending_bytes = u.pending_bytes.saturating_add(envelope.length);
                    })?;
                    adjust(t, &g.agent, |u| {
                        u.open_grants = u.open_grants.saturating_sub(1)
                    })?;
                    release_pair(t, &g)?;
                    t.put_grant(&g)?;
                    t.put_envelope(envelope)?;
                    if let Some(body) = inline_body {
                        t.put_inline(&envelope.envelope_id, body)?;
                    }
                    if let (Some(mut a), Some(_)) = (assignment, source) {
                        a.state = AssignmentState::Filled {
                            envelope_id: envelope.envelope_id,
                        };
                        t.put_assignment(&a)?;
                    }
                    Ok(t.append(event)?)
                }
            }
        }
        WriteOp::RecordReceipt {
            envelope_id,
            user,
            receipt,
            status,
            delete,
            event,
        } => match t.envelope(envelope_id)? {
            None => Err(WriteRefusal::EnvelopeNotFound),
            Some(e) if e.user != *user => Err(WriteRefusal::EnvelopeNotFound),
            Some(e) if e.receipt.is_some() => Err(WriteRefusal::Duplicate),
            Some(mut e) => {
                release_pending(t, &e)?;
                if *delete {
                    t.remove_envelope(&e)?;
                } else {
                    e.receipt = Some(receipt.clone());
                    t.put_envelope(&e)?;
                }
                let index = t.append(event)?;
                t.put_delivery(&DeliveryRecord {
                    envelope_id: *envelope_id,
                    grant_id: e.grant_id,
                    status: *status,
                    receipt_index: index,
                })?;
                Ok(index)
            }
        },
        WriteOp::ExpireGrant {
            grant_id,
            now,
            approval_ttl,
            event,
        } => {
            let done = transition(
                t,
                grant_id,
                event,
                |g| grant_state::expire(g, *now, *approval_ttl),
                true,
            )?;
            // Out of its source's queue too.
            if done.is_ok() {
                if let Some(mut a) = t.assignment(grant_id)?.filter(|a| a.queued()) {
                    a.state = AssignmentState::Lapsed;
                    t.put_assignment(&a)?;
                }
            }
            done
        }
        WriteOp::DeleteEnvelope { envelope_id, event } => match t.envelope(envelope_id)? {
            None => Err(WriteRefusal::EnvelopeNotFound),
            Some(e) => {
                if e.receipt.is_none() {
                    release_pending(t, &e)?;
                }
                t.remove_envelope(&e)?;
                Ok(t.append(event)?)
            }
        },
        WriteOp::Append { event } => Ok(t.append(event)?),
        WriteOp::Deny {
            grant_id,
            denial,
            now,
            approval_ttl,
            event,
        } => transition(
            t,
            grant_id,
            event,
            |g| grant_state::deny(g, denial, *now, *approval_ttl),
            true,
        )?,
        WriteOp::Approve {
            grant_id,
            approval,
            now,
            approval_ttl,
            event,
        } => transition(
            t,
            grant_id,
            event,
            |g| grant_state::approve(g, approval, *now, *approval_ttl),
            false,
        )?,
        WriteOp::Quarantine {
            agent,
            reason,
            event,
        } => {
            t.put_quarantine(&agent.to_string(), reason)?;
            Ok(t.append(event)?)
        }
        WriteOp::Release { agent, event } => {
            if t.remove_quarantine(&agent.to_string())? {
                Ok(t.append(event)?)
            } else {
                Err(WriteRefusal::NotQuarantined)
            }
        }
    })
}

/// Whether a grant belongs in its agent's list of open grants.
pub fn listed_for_agent(g: &GrantRecord) -> bool {
    g.state == GrantState::Open
}

/// Whether a grant belongs in the list of grants awaiting approval.
pub fn awaits_approval(g: &GrantRecord) -> bool {
    g.state == GrantState::Open && g.needs_approval && g.approval.is_none()
}

/// Recomputes the log's root from the stored events themselves, in index order (streaming,
/// O(log n) memory), and compares it with the stored tree: an event changed, removed or
/// reordered is caught here, and the relay refuses to serve on it.
pub fn check_tree_against_events(
    tree: &crate::core::tlog::Tree,
    events: impl Iterator<Item = Result<(u64, Event)>>,
) -> Result<()> {
    use crate::core::tlog::{leaf_hash, node_hash, Hash, EMPTY_ROOT};
    use crate::error::Error;
    // Perfect subtrees, left to right: (height, root).
    let mut stack: Vec<(u32, Hash)> = Vec::new();
    for (expected, item) in (0u64..).zip(events) {
        let (index, event) = item?;
        if index != expected {
            return Err(Error::internal(format!(
                "the store's events have a gap at {expected}: the store is corrupt; refusing to serve"
            )));
        }
        let mut node = (0u32, leaf_hash(&event.leaf_bytes()));
        while let Some(&(height, left)) = stack.last() {
            if height != node.0 {
                break;
            }
            stack.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        stack.push(node);
    }
    let mut root = match stack.pop() {
        Some((_, h)) => h,
        None => EMPTY_ROOT,
    };
    while let Some((_, left)) = stack.pop() {
        root = node_hash(&left, &root);
    }
    let stored = tree
        .root(tree.size())
        .map_err(|e| Error::internal(format!("corrupt log tree: {e}")))?;
    if root != stored {
        return Err(Error::internal(
            "the store's events do not hash to its log tree (an event was changed): the store is corrupt; refusing to serve",
        ));
    }
    Ok(())
}
