//! The write half of the embedded store: every [`WriteOp`] checked (through
//! `core::grant_state`) and applied inside one durable transaction, with its event appended as
//! a log leaf and the leaf's tree nodes stored beside it.

use redb::{Durability, ReadableTable, ReadableTableMetadata};

use super::{
    db_err, dec, dir_key, enc, pair_key, RedbStore, AGENT_GRANTS, DELIVERIES, DIR_ENTRIES,
    DIR_REVOCATIONS, ENVELOPES, EVENTS, GRANTS, INLINE, PENDING, QUARANTINE, TLOG_NODES, USAGE,
    USER_GRANTS, USER_INBOX,
};
use crate::core::grant_state;
use crate::core::store::{
    DeliveryRecord, EnvelopeRecord, Event, GrantRecord, OpResult, QuotaKind, Usage, WriteOp,
    WriteRefusal,
};
use crate::core::tlog::{leaf_hash, Tree};
use crate::error::{Error, Result};
use crate::ids::SpiffeId;

impl RedbStore {
    pub(super) fn apply_in(
        &self,
        db: &redb::Database,
        tree: &mut Tree,
        ops: &[WriteOp],
    ) -> Result<Vec<OpResult>> {
        let mut txn = db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let mut results = Vec::with_capacity(ops.len());
        {
            let mut entries = txn.open_table(DIR_ENTRIES).map_err(db_err)?;
            let mut revocations = txn.open_table(DIR_REVOCATIONS).map_err(db_err)?;
            let mut grants = txn.open_table(GRANTS).map_err(db_err)?;
            let mut agent_grants = txn.open_table(AGENT_GRANTS).map_err(db_err)?;
            let mut envelopes = txn.open_table(ENVELOPES).map_err(db_err)?;
            let mut inbox = txn.open_table(USER_INBOX).map_err(db_err)?;
            let mut events = txn.open_table(EVENTS).map_err(db_err)?;
            let mut inline = txn.open_table(INLINE).map_err(db_err)?;
            let mut nodes = txn.open_table(TLOG_NODES).map_err(db_err)?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(db_err)?;
            let mut pending = txn.open_table(PENDING).map_err(db_err)?;
            let mut usage = txn.open_table(USAGE).map_err(db_err)?;
            let mut deliveries = txn.open_table(DELIVERIES).map_err(db_err)?;
            let mut user_grants = txn.open_table(USER_GRANTS).map_err(db_err)?;
            let mut next_event = events.len().map_err(db_err)?;
            if next_event != tree.size() {
                return Err(Error::internal("the log tree and the events disagree"));
            }
            // Every event is a log leaf; its tree nodes are stored in the same transaction.
            let mut append = |events: &mut redb::Table<u64, &[u8]>, event: &Event| -> Result<u64> {
                // A leaf must be readable back: oversized fields are cut before they are stored.
                let bounded;
                let event = if event.fits_a_leaf() {
                    event
                } else {
                    bounded = event.clone().bounded();
                    &bounded
                };
                let index = next_event;
                events
                    .insert(index, enc(event)?.as_slice())
                    .map_err(db_err)?;
                for node in tree.append(leaf_hash(&event.leaf_bytes())) {
                    nodes
                        .insert((node.level, node.index), node.hash.as_slice())
                        .map_err(db_err)?;
                }
                next_event += 1;
                Ok(index)
            };
            for op in ops {
                let result: OpResult = match op {
                    WriteOp::PutDirectory {
                        entries: es,
                        revocations: rs,
                        event,
                    } => {
                        for (id, serial, s) in es {
                            entries
                                .insert(dir_key(id, *serial).as_str(), enc(s)?.as_slice())
                                .map_err(db_err)?;
                        }
                        for (id, serial, s) in rs {
                            revocations
                                .insert(dir_key(id, *serial).as_str(), enc(s)?.as_slice())
                                .map_err(db_err)?;
                        }
                        Ok(append(&mut events, event)?)
                    }
                    WriteOp::CreateGrant {
                        record,
                        quotas,
                        event,
                    } => {
                        let held_by_user = usage_of(&usage, &record.user)?.open_grants;
                        let held_by_agent = usage_of(&usage, &record.agent)?.open_grants;
                        if grants
                            .get(record.grant_id.as_slice())
                            .map_err(db_err)?
                            .is_some()
                        {
                            Err(WriteRefusal::Duplicate)
                        } else if held_by_user >= quotas.open_grants_per_user {
                            Err(WriteRefusal::Quota {
                                kind: QuotaKind::OpenGrantsPerUser,
                                limit: quotas.open_grants_per_user,
                            })
                        } else if held_by_agent >= quotas.open_grants_per_agent {
                            Err(WriteRefusal::Quota {
                                kind: QuotaKind::OpenGrantsPerAgent,
                                limit: quotas.open_grants_per_agent,
                            })
                        } else {
                            adjust(&mut usage, &record.user, |u| u.open_grants += 1)?;
                            adjust(&mut usage, &record.agent, |u| u.open_grants += 1)?;
                            grants
                                .insert(record.grant_id.as_slice(), enc(record)?.as_slice())
                                .map_err(db_err)?;
                            agent_grants
                                .insert(
                                    pair_key(&record.agent, record.grant_id.as_bytes()).as_str(),
                                    (),
                                )
                                .map_err(db_err)?;
                            user_grants
                                .insert(
                                    pair_key(&record.user, record.grant_id.as_bytes()).as_str(),
                                    (),
                                )
                                .map_err(db_err)?;
                            if record.needs_approval && record.approval.is_none() {
                                pending
                                    .insert(record.grant_id.as_slice(), ())
                                    .map_err(db_err)?;
                            }
                            Ok(append(&mut events, event)?)
                        }
                    }
                    WriteOp::ConsumeGrant {
                        agent,
                        envelope,
                        inline_body,
                        now,
                        quotas,
                        event,
                    } => {
                        let waiting = usage_of(&usage, &envelope.user)?;
                        let existing = stored_grant(&grants, &envelope.grant_id)?;
                        let consumed = match existing {
                            None => Err(WriteRefusal::GrantNotFound),
                            Some(g) => grant_state::consume(
                                &g,
                                agent,
                                envelope.length,
                                *now,
                                envelope.envelope_id,
                            ),
                        }
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
                                adjust(&mut usage, &g.user, |u| {
                                    u.open_grants = u.open_grants.saturating_sub(1);
                                    u.pending_envelopes += 1;
                                    u.pending_bytes =
                                        u.pending_bytes.saturating_add(envelope.length);
                                })?;
                                adjust(&mut usage, &g.agent, |u| {
                                    u.open_grants = u.open_grants.saturating_sub(1)
                                })?;
                                store_closed_grant(&mut grants, &mut agent_grants, &g)?;
                                envelopes
                                    .insert(
                                        envelope.envelope_id.as_slice(),
                                        enc(envelope)?.as_slice(),
                                    )
                                    .map_err(db_err)?;
                                inbox
                                    .insert(
                                        pair_key(&envelope.user, envelope.envelope_id.as_bytes())
                                            .as_str(),
                                        (),
                                    )
                                    .map_err(db_err)?;
                                if let Some(body) = inline_body {
                                    inline
                                        .insert(envelope.envelope_id.as_slice(), body.as_slice())
                                        .map_err(db_err)?;
                                }
                                Ok(append(&mut events, event)?)
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
                    } => {
                        let existing = envelopes
                            .get(envelope_id.as_slice())
                            .map_err(db_err)?
                            .map(|e| dec::<EnvelopeRecord>(e.value()))
                            .transpose()?;
                        match existing {
                            None => Err(WriteRefusal::EnvelopeNotFound),
                            Some(e) if e.user != *user => Err(WriteRefusal::EnvelopeNotFound),
                            Some(e) if e.receipt.is_some() => Err(WriteRefusal::Duplicate),
                            Some(mut e) => {
                                release_pending(&mut usage, &e)?;
                                inbox
                                    .remove(pair_key(&e.user, e.envelope_id.as_bytes()).as_str())
                                    .map_err(db_err)?;
                                if *delete {
                                    envelopes.remove(envelope_id.as_slice()).map_err(db_err)?;
                                    inline.remove(envelope_id.as_slice()).map_err(db_err)?;
                                } else {
                                    e.receipt = Some(receipt.clone());
                                    envelopes
                                        .insert(envelope_id.as_slice(), enc(&e)?.as_slice())
                                        .map_err(db_err)?;
                                }
                                let index = append(&mut events, event)?;
                                let delivery = DeliveryRecord {
                                    envelope_id: *envelope_id,
                                    grant_id: e.grant_id,
                                    status: *status,
                                    receipt_index: index,
                                };
                                deliveries
                                    .insert(envelope_id.as_slice(), enc(&delivery)?.as_slice())
                                    .map_err(db_err)?;
                                Ok(index)
                            }
                        }
                    }
                    WriteOp::ExpireGrant {
                        grant_id,
                        now,
                        event,
                    } => {
                        let existing = stored_grant(&grants, grant_id)?;
                        let closed = match existing {
                            None => Err(WriteRefusal::GrantNotFound),
                            Some(g) => grant_state::expire(&g, *now),
                        };
                        match closed {
                            Err(refusal) => Err(refusal),
                            Ok(g) => {
                                for party in [&g.user, &g.agent] {
                                    adjust(&mut usage, party, |u| {
                                        u.open_grants = u.open_grants.saturating_sub(1)
                                    })?;
                                }
                                store_closed_grant(&mut grants, &mut agent_grants, &g)?;
                                pending.remove(g.grant_id.as_slice()).map_err(db_err)?;
                                Ok(append(&mut events, event)?)
                            }
                        }
                    }
                    WriteOp::DeleteEnvelope { envelope_id, event } => {
                        let existing = envelopes
                            .remove(envelope_id.as_slice())
                            .map_err(db_err)?
                            .map(|e| dec::<EnvelopeRecord>(e.value()))
                            .transpose()?;
                        match existing {
                            None => Err(WriteRefusal::EnvelopeNotFound),
                            Some(e) => {
                                if e.receipt.is_none() {
                                    release_pending(&mut usage, &e)?;
                                }
                                inbox
                                    .remove(pair_key(&e.user, e.envelope_id.as_bytes()).as_str())
                                    .map_err(db_err)?;
                                inline.remove(e.envelope_id.as_slice()).map_err(db_err)?;
                                Ok(append(&mut events, event)?)
                            }
                        }
                    }
                    WriteOp::Append { event } => Ok(append(&mut events, event)?),
                    WriteOp::Deny {
                        grant_id,
                        denial,
                        now,
                        event,
                    } => {
                        let existing = stored_grant(&grants, grant_id)?;
                        let denied = match existing {
                            None => Err(WriteRefusal::GrantNotFound),
                            Some(g) => grant_state::deny(&g, denial, *now),
                        };
                        match denied {
                            Err(refusal) => Err(refusal),
                            Ok(g) => {
                                for party in [&g.user, &g.agent] {
                                    adjust(&mut usage, party, |u| {
                                        u.open_grants = u.open_grants.saturating_sub(1)
                                    })?;
                                }
                                store_closed_grant(&mut grants, &mut agent_grants, &g)?;
                                pending.remove(g.grant_id.as_slice()).map_err(db_err)?;
                                Ok(append(&mut events, event)?)
                            }
                        }
                    }
                    WriteOp::Approve {
                        grant_id,
                        approval,
                        now,
                        event,
                    } => {
                        let existing = stored_grant(&grants, grant_id)?;
                        let approved = match existing {
                            None => Err(WriteRefusal::GrantNotFound),
                            Some(g) => grant_state::approve(&g, approval, *now),
                        };
                        match approved {
                            Err(refusal) => Err(refusal),
                            Ok(g) => {
                                grants
                                    .insert(g.grant_id.as_slice(), enc(&g)?.as_slice())
                                    .map_err(db_err)?;
                                pending.remove(g.grant_id.as_slice()).map_err(db_err)?;
                                Ok(append(&mut events, event)?)
                            }
                        }
                    }
                    WriteOp::Quarantine {
                        agent,
                        reason,
                        event,
                    } => {
                        quarantine
                            .insert(agent.to_string().as_str(), reason.as_str())
                            .map_err(db_err)?;
                        Ok(append(&mut events, event)?)
                    }
                    WriteOp::Release { agent, event } => {
                        if quarantine
                            .remove(agent.to_string().as_str())
                            .map_err(db_err)?
                            .is_none()
                        {
                            Err(WriteRefusal::NotQuarantined)
                        } else {
                            Ok(append(&mut events, event)?)
                        }
                    }
                };
                results.push(result);
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(results)
    }
}

type UsageTable<'t> = redb::Table<'t, &'static str, &'static [u8]>;

fn usage_of(t: &UsageTable<'_>, who: &SpiffeId) -> Result<Usage> {
    match t.get(who.to_string().as_str()).map_err(db_err)? {
        Some(v) => dec(v.value()),
        None => Ok(Usage::default()),
    }
}

fn adjust(t: &mut UsageTable<'_>, who: &SpiffeId, change: impl FnOnce(&mut Usage)) -> Result<()> {
    let mut u = usage_of(t, who)?;
    change(&mut u);
    t.insert(who.to_string().as_str(), enc(&u)?.as_slice())
        .map_err(db_err)?;
    Ok(())
}

/// An envelope leaves the user's inbox (receipt or expiry).
fn release_pending(t: &mut UsageTable<'_>, e: &EnvelopeRecord) -> Result<()> {
    adjust(t, &e.user, |u| {
        u.pending_envelopes = u.pending_envelopes.saturating_sub(1);
        u.pending_bytes = u.pending_bytes.saturating_sub(e.length);
    })
}

/// The grant record stored under `id`, if any.
fn stored_grant(
    grants: &redb::Table<'_, &'static [u8], &'static [u8]>,
    id: &crate::ids::GrantId,
) -> Result<Option<GrantRecord>> {
    grants
        .get(id.as_slice())
        .map_err(db_err)?
        .map(|g| dec::<GrantRecord>(g.value()))
        .transpose()
}

/// Stores a grant that is no longer open and takes it out of its agent's index.
fn store_closed_grant(
    grants: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    agent_grants: &mut redb::Table<'_, &'static str, ()>,
    g: &GrantRecord,
) -> Result<()> {
    grants
        .insert(g.grant_id.as_slice(), enc(g)?.as_slice())
        .map_err(db_err)?;
    agent_grants
        .remove(pair_key(&g.agent, g.grant_id.as_bytes()).as_str())
        .map_err(db_err)?;
    Ok(())
}
