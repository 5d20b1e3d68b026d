//! The write half of the embedded store: one durable transaction per batch, the operations of
//! `store::write_ops` applied through [`RedbTables`] (redb's tables and indexes), each event appended
//! as a log leaf with the leaf's tree nodes stored beside it.

use redb::{Durability, ReadableTable, ReadableTableMetadata};

use super::{
    db_err, dec, dir_key, enc, pair_key, RedbStore, AGENT_GRANTS, ASSIGNMENTS, DELIVERIES,
    DIR_ENTRIES, DIR_LOG, DIR_REVOCATIONS, ENVELOPES, EVENTS, GRANTS, INLINE, PENDING, QUARANTINE,
    SOURCE_QUEUE, TLOG_NODES, USAGE, USER_GRANTS, USER_INBOX,
};
use crate::core::store::{
    AssignmentRecord, DeliveryRecord, EnvelopeRecord, Event, GrantRecord, OpResult, StoredSigned,
    Usage, WriteOp,
};
use crate::core::tlog::{leaf_hash, Tree};
use crate::error::{Error, Result};
use crate::ids::{EnvelopeId, GrantId};
use crate::store::write_ops::{self as ops, Tables};

type Bytes<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
type Index<'t> = redb::Table<'t, &'static str, ()>;

/// redb's tables inside one write transaction.
struct RedbTables<'t, 'tree> {
    entries: redb::Table<'t, &'static str, &'static [u8]>,
    revocations: redb::Table<'t, &'static str, &'static [u8]>,
    dir_log: redb::Table<'t, u64, &'static [u8]>,
    grants: Bytes<'t>,
    agent_grants: Index<'t>,
    assignments: Bytes<'t>,
    source_queue: Index<'t>,
    user_grants: Index<'t>,
    pending: redb::Table<'t, &'static [u8], ()>,
    envelopes: Bytes<'t>,
    inbox: Index<'t>,
    inline: Bytes<'t>,
    deliveries: Bytes<'t>,
    usage: redb::Table<'t, &'static str, &'static [u8]>,
    quarantine: redb::Table<'t, &'static str, &'static str>,
    events: redb::Table<'t, u64, &'static [u8]>,
    nodes: redb::Table<'t, (u32, u64), &'static [u8]>,
    tree: &'tree mut Tree,
    next_event: u64,
}

impl RedbStore {
    pub(super) fn apply_in(
        &self,
        db: &redb::Database,
        tree: &mut Tree,
        ops: &[WriteOp],
    ) -> Result<Vec<OpResult>> {
        let mut txn = db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let results = {
            let events = txn.open_table(EVENTS).map_err(db_err)?;
            let next_event = events.len().map_err(db_err)?;
            if next_event != tree.size() {
                return Err(Error::internal("the log tree and the events disagree"));
            }
            let mut t = RedbTables {
                entries: txn.open_table(DIR_ENTRIES).map_err(db_err)?,
                revocations: txn.open_table(DIR_REVOCATIONS).map_err(db_err)?,
                dir_log: txn.open_table(DIR_LOG).map_err(db_err)?,
                grants: txn.open_table(GRANTS).map_err(db_err)?,
                agent_grants: txn.open_table(AGENT_GRANTS).map_err(db_err)?,
                assignments: txn.open_table(ASSIGNMENTS).map_err(db_err)?,
                source_queue: txn.open_table(SOURCE_QUEUE).map_err(db_err)?,
                user_grants: txn.open_table(USER_GRANTS).map_err(db_err)?,
                pending: txn.open_table(PENDING).map_err(db_err)?,
                envelopes: txn.open_table(ENVELOPES).map_err(db_err)?,
                inbox: txn.open_table(USER_INBOX).map_err(db_err)?,
                inline: txn.open_table(INLINE).map_err(db_err)?,
                deliveries: txn.open_table(DELIVERIES).map_err(db_err)?,
                usage: txn.open_table(USAGE).map_err(db_err)?,
                quarantine: txn.open_table(QUARANTINE).map_err(db_err)?,
                events,
                nodes: txn.open_table(TLOG_NODES).map_err(db_err)?,
                tree,
                next_event,
            };
            ops::apply_ops(&mut t, ops)?
        };
        txn.commit().map_err(db_err)?;
        Ok(results)
    }
}

fn get<T: serde::de::DeserializeOwned>(t: &Bytes<'_>, key: &[u8]) -> Result<Option<T>> {
    t.get(key)
        .map_err(db_err)?
        .map(|v| dec::<T>(v.value()))
        .transpose()
}

impl Tables for RedbTables<'_, '_> {
    fn grant(&mut self, id: &GrantId) -> Result<Option<GrantRecord>> {
        get(&self.grants, id.as_slice())
    }

    fn assignment(&mut self, id: &GrantId) -> Result<Option<AssignmentRecord>> {
        get(&self.assignments, id.as_slice())
    }

    fn put_assignment(&mut self, a: &AssignmentRecord) -> Result<()> {
        self.assignments
            .insert(a.grant_id.as_slice(), enc(a)?.as_slice())
            .map_err(db_err)?;
        let key = pair_key(&a.source, a.grant_id.as_bytes());
        if a.queued() {
            self.source_queue.insert(key.as_str(), ()).map_err(db_err)?;
        } else {
            self.source_queue.remove(key.as_str()).map_err(db_err)?;
        }
        Ok(())
    }

    fn put_grant(&mut self, g: &GrantRecord) -> Result<()> {
        self.grants
            .insert(g.grant_id.as_slice(), enc(g)?.as_slice())
            .map_err(db_err)?;
        let agent_key = pair_key(&g.agent, g.grant_id.as_bytes());
        if ops::listed_for_agent(g) {
            self.agent_grants
                .insert(agent_key.as_str(), ())
                .map_err(db_err)?;
        } else {
            self.agent_grants
                .remove(agent_key.as_str())
                .map_err(db_err)?;
        }
        self.user_grants
            .insert(pair_key(&g.user, g.grant_id.as_bytes()).as_str(), ())
            .map_err(db_err)?;
        if ops::awaits_approval(g) {
            self.pending
                .insert(g.grant_id.as_slice(), ())
                .map_err(db_err)?;
        } else {
            self.pending.remove(g.grant_id.as_slice()).map_err(db_err)?;
        }
        Ok(())
    }

    fn usage(&mut self, key: &str) -> Result<Usage> {
        match self.usage.get(key).map_err(db_err)? {
            Some(v) => dec(v.value()),
            None => Ok(Usage::default()),
        }
    }

    fn put_usage(&mut self, key: &str, u: &Usage) -> Result<()> {
        self.usage.insert(key, enc(u)?.as_slice()).map_err(db_err)?;
        Ok(())
    }

    fn envelope(&mut self, id: &EnvelopeId) -> Result<Option<EnvelopeRecord>> {
        get(&self.envelopes, id.as_slice())
    }

    fn put_envelope(&mut self, e: &EnvelopeRecord) -> Result<()> {
        self.envelopes
            .insert(e.envelope_id.as_slice(), enc(e)?.as_slice())
            .map_err(db_err)?;
        let key = pair_key(&e.user, e.envelope_id.as_bytes());
        if e.receipt.is_none() {
            self.inbox.insert(key.as_str(), ()).map_err(db_err)?;
        } else {
            self.inbox.remove(key.as_str()).map_err(db_err)?;
        }
        Ok(())
    }

    fn remove_envelope(&mut self, e: &EnvelopeRecord) -> Result<()> {
        self.envelopes
            .remove(e.envelope_id.as_slice())
            .map_err(db_err)?;
        self.inbox
            .remove(pair_key(&e.user, e.envelope_id.as_bytes()).as_str())
            .map_err(db_err)?;
        self.inline
            .remove(e.envelope_id.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn put_inline(&mut self, id: &EnvelopeId, body: &[u8]) -> Result<()> {
        self.inline.insert(id.as_slice(), body).map_err(db_err)?;
        Ok(())
    }

    fn put_delivery(&mut self, d: &DeliveryRecord) -> Result<()> {
        self.deliveries
            .insert(d.envelope_id.as_slice(), enc(d)?.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn put_directory(
        &mut self,
        revocation: bool,
        id: &str,
        serial: u64,
        s: &StoredSigned,
    ) -> Result<bool> {
        let table = if revocation {
            &mut self.revocations
        } else {
            &mut self.entries
        };
        let key = dir_key(id, serial);
        if table.get(key.as_str()).map_err(db_err)?.is_some() {
            return Ok(false);
        }
        table
            .insert(key.as_str(), enc(s)?.as_slice())
            .map_err(db_err)?;
        Ok(true)
    }

    fn directory_log_size(&mut self) -> Result<u64> {
        self.dir_log.len().map_err(db_err)
    }

    fn append_directory_leaf(&mut self, leaf: &[u8]) -> Result<u64> {
        let index = self.dir_log.len().map_err(db_err)?;
        self.dir_log.insert(index, leaf).map_err(db_err)?;
        Ok(index)
    }

    fn put_quarantine(&mut self, agent: &str, reason: &str) -> Result<()> {
        self.quarantine.insert(agent, reason).map_err(db_err)?;
        Ok(())
    }

    fn remove_quarantine(&mut self, agent: &str) -> Result<bool> {
        Ok(self.quarantine.remove(agent).map_err(db_err)?.is_some())
    }

    fn append(&mut self, event: &Event) -> Result<u64> {
        let event = ops::leaf_event(event);
        let index = self.next_event;
        self.events
            .insert(index, enc(event.as_ref())?.as_slice())
            .map_err(db_err)?;
        for node in self.tree.append(leaf_hash(&event.leaf_bytes())) {
            self.nodes
                .insert((node.level, node.index), node.hash.as_slice())
                .map_err(db_err)?;
        }
        self.next_event += 1;
        Ok(index)
    }
}
