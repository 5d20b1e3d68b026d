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

/// redb's tables inside one write transaction, each opened when an operation first needs it:
/// opening a table and settling its root at commit cost the commit thread even for a table
/// left untouched, and a batch touches about half of them.
struct RedbTables<'t, 'tree> {
    txn: &'t redb::WriteTransaction,
    entries: Option<redb::Table<'t, &'static str, &'static [u8]>>,
    revocations: Option<redb::Table<'t, &'static str, &'static [u8]>>,
    dir_log: Option<redb::Table<'t, u64, &'static [u8]>>,
    grants: Option<Bytes<'t>>,
    agent_grants: Option<Index<'t>>,
    assignments: Option<Bytes<'t>>,
    source_queue: Option<Index<'t>>,
    user_grants: Option<Index<'t>>,
    pending: Option<redb::Table<'t, &'static [u8], ()>>,
    envelopes: Option<Bytes<'t>>,
    inbox: Option<Index<'t>>,
    inline: Option<Bytes<'t>>,
    deliveries: Option<Bytes<'t>>,
    usage: Option<redb::Table<'t, &'static str, &'static [u8]>>,
    quarantine: Option<redb::Table<'t, &'static str, &'static str>>,
    nodes: Option<redb::Table<'t, (u32, u64), &'static [u8]>>,
    events: redb::Table<'t, u64, &'static [u8]>,
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
                txn: &txn,
                entries: None,
                revocations: None,
                dir_log: None,
                grants: None,
                agent_grants: None,
                assignments: None,
                source_queue: None,
                user_grants: None,
                pending: None,
                envelopes: None,
                inbox: None,
                inline: None,
                deliveries: None,
                usage: None,
                quarantine: None,
                nodes: None,
                events,
                tree,
                next_event,
            };
            ops::apply_ops(&mut t, ops)?
        };
        txn.commit().map_err(db_err)?;
        Ok(results)
    }
}

/// Each table's accessor: opened in the transaction the first time it is asked for.
macro_rules! accessors {
    ($($name:ident($field:ident, $def:ident): $ty:ty),* $(,)?) => {
        impl<'t> RedbTables<'t, '_> {
            $(
                fn $name(&mut self) -> Result<&mut $ty> {
                    opened(self.txn, &mut self.$field, $def)
                }
            )*
        }
    };
}

accessors!(
    entries(entries, DIR_ENTRIES): redb::Table<'t, &'static str, &'static [u8]>,
    revocations(revocations, DIR_REVOCATIONS): redb::Table<'t, &'static str, &'static [u8]>,
    dir_log(dir_log, DIR_LOG): redb::Table<'t, u64, &'static [u8]>,
    grants(grants, GRANTS): Bytes<'t>,
    agent_grants(agent_grants, AGENT_GRANTS): Index<'t>,
    assignments(assignments, ASSIGNMENTS): Bytes<'t>,
    source_queue(source_queue, SOURCE_QUEUE): Index<'t>,
    user_grants(user_grants, USER_GRANTS): Index<'t>,
    pending(pending, PENDING): redb::Table<'t, &'static [u8], ()>,
    envelopes(envelopes, ENVELOPES): Bytes<'t>,
    inbox(inbox, USER_INBOX): Index<'t>,
    inline(inline, INLINE): Bytes<'t>,
    deliveries(deliveries, DELIVERIES): Bytes<'t>,
    usage_table(usage, USAGE): redb::Table<'t, &'static str, &'static [u8]>,
    quarantine(quarantine, QUARANTINE): redb::Table<'t, &'static str, &'static str>,
    nodes(nodes, TLOG_NODES): redb::Table<'t, (u32, u64), &'static [u8]>,
);

/// The table in `slot`, opened in `txn` the first time.
fn opened<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'t redb::WriteTransaction,
    slot: &'s mut Option<redb::Table<'t, K, V>>,
    def: redb::TableDefinition<'static, K, V>,
) -> Result<&'s mut redb::Table<'t, K, V>> {
    if slot.is_none() {
        *slot = Some(txn.open_table(def).map_err(db_err)?);
    }
    slot.as_mut()
        .ok_or_else(|| Error::internal("a store table could not be opened"))
}

fn get<T: serde::de::DeserializeOwned>(t: &Bytes<'_>, key: &[u8]) -> Result<Option<T>> {
    t.get(key)
        .map_err(db_err)?
        .map(|v| dec::<T>(v.value()))
        .transpose()
}

/// Puts `key` in the index `t` unless it is there already. redb copies a committed page for
/// every insert, one that changes nothing included (copy on write, with the branches above it
/// and the table's root), while a lookup dirties nothing: a grant's `user_grants` entry, put
/// again on each of its transitions, cost every submission's commit pages it did not change
/// (one round trip at a time: 46.2 → 44.4 `pwrite`s per round trip, docs/benchmarks.md).
fn add<'k, K: redb::Key + 'static>(
    t: &mut redb::Table<'_, K, ()>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<()> {
    if t.get(key.borrow()).map_err(db_err)?.is_none() {
        t.insert(key, ()).map_err(db_err)?;
    }
    Ok(())
}

impl Tables for RedbTables<'_, '_> {
    fn grant(&mut self, id: &GrantId) -> Result<Option<GrantRecord>> {
        get(self.grants()?, id.as_slice())
    }

    fn assignment(&mut self, id: &GrantId) -> Result<Option<AssignmentRecord>> {
        get(self.assignments()?, id.as_slice())
    }

    fn put_assignment(&mut self, a: &AssignmentRecord) -> Result<()> {
        self.assignments()?
            .insert(a.grant_id.as_slice(), enc(a)?.as_slice())
            .map_err(db_err)?;
        let key = pair_key(&a.source, a.grant_id.as_bytes());
        if a.queued() {
            add(self.source_queue()?, key.as_str())?;
        } else {
            self.source_queue()?.remove(key.as_str()).map_err(db_err)?;
        }
        Ok(())
    }

    fn put_grant(&mut self, g: &GrantRecord) -> Result<()> {
        self.grants()?
            .insert(g.grant_id.as_slice(), enc(g)?.as_slice())
            .map_err(db_err)?;
        let agent_key = pair_key(&g.agent, g.grant_id.as_bytes());
        if ops::listed_for_agent(g) {
            add(self.agent_grants()?, agent_key.as_str())?;
        } else {
            self.agent_grants()?
                .remove(agent_key.as_str())
                .map_err(db_err)?;
        }
        add(
            self.user_grants()?,
            pair_key(&g.user, g.grant_id.as_bytes()).as_str(),
        )?;
        if ops::awaits_approval(g) {
            add(self.pending()?, g.grant_id.as_slice())?;
        } else {
            self.pending()?
                .remove(g.grant_id.as_slice())
                .map_err(db_err)?;
        }
        Ok(())
    }

    fn usage(&mut self, key: &str) -> Result<Usage> {
        match self.usage_table()?.get(key).map_err(db_err)? {
            Some(v) => dec(v.value()),
            None => Ok(Usage::default()),
        }
    }

    fn put_usage(&mut self, key: &str, u: &Usage) -> Result<()> {
        self.usage_table()?
            .insert(key, enc(u)?.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn envelope(&mut self, id: &EnvelopeId) -> Result<Option<EnvelopeRecord>> {
        get(self.envelopes()?, id.as_slice())
    }

    fn put_envelope(&mut self, e: &EnvelopeRecord) -> Result<()> {
        self.envelopes()?
            .insert(e.envelope_id.as_slice(), enc(e)?.as_slice())
            .map_err(db_err)?;
        let key = pair_key(&e.user, e.envelope_id.as_bytes());
        if e.receipt.is_none() {
            add(self.inbox()?, key.as_str())?;
        } else {
            self.inbox()?.remove(key.as_str()).map_err(db_err)?;
        }
        Ok(())
    }

    fn remove_envelope(&mut self, e: &EnvelopeRecord) -> Result<()> {
        self.envelopes()?
            .remove(e.envelope_id.as_slice())
            .map_err(db_err)?;
        self.inbox()?
            .remove(pair_key(&e.user, e.envelope_id.as_bytes()).as_str())
            .map_err(db_err)?;
        self.inline()?
            .remove(e.envelope_id.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn put_inline(&mut self, id: &EnvelopeId, body: &[u8]) -> Result<()> {
        self.inline()?.insert(id.as_slice(), body).map_err(db_err)?;
        Ok(())
    }

    fn put_delivery(&mut self, d: &DeliveryRecord) -> Result<()> {
        self.deliveries()?
            .insert(d.envelope_id.as_slice(), enc(d)?.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn stored_directory(
        &mut self,
        revocation: bool,
        id: &str,
        serial: u64,
    ) -> Result<Option<StoredSigned>> {
        let table = if revocation {
            self.revocations()?
        } else {
            self.entries()?
        };
        let key = dir_key(id, serial);
        let found = table.get(key.as_str()).map_err(db_err)?;
        found.map(|v| dec(v.value())).transpose()
    }

    fn put_directory(
        &mut self,
        revocation: bool,
        id: &str,
        serial: u64,
        s: &StoredSigned,
    ) -> Result<bool> {
        let table = if revocation {
            self.revocations()?
        } else {
            self.entries()?
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
        self.dir_log()?.len().map_err(db_err)
    }

    fn append_directory_leaf(&mut self, leaf: &[u8]) -> Result<u64> {
        let index = self.dir_log()?.len().map_err(db_err)?;
        self.dir_log()?.insert(index, leaf).map_err(db_err)?;
        Ok(index)
    }

    fn put_quarantine(&mut self, agent: &str, reason: &str) -> Result<()> {
        self.quarantine()?.insert(agent, reason).map_err(db_err)?;
        Ok(())
    }

    fn remove_quarantine(&mut self, agent: &str) -> Result<bool> {
        Ok(self.quarantine()?.remove(agent).map_err(db_err)?.is_some())
    }

    fn append(&mut self, event: &Event) -> Result<u64> {
        let event = ops::leaf_event(event);
        let index = self.next_event;
        self.events
            .insert(index, enc(event.as_ref())?.as_slice())
            .map_err(db_err)?;
        for node in self.tree.append(leaf_hash(&event.leaf_bytes())) {
            self.nodes()?
                .insert((node.level, node.index), node.hash.as_slice())
                .map_err(db_err)?;
        }
        self.next_event += 1;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableDatabase, StorageBackend, TableDefinition};

    /// redb's in-memory storage, counting the pages a commit writes.
    #[derive(Debug)]
    struct Counting(InMemoryBackend, Arc<AtomicU64>);

    impl StorageBackend for Counting {
        fn len(&self) -> std::io::Result<u64> {
            self.0.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.0.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.0.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.write(offset, data)
        }
    }

    const INDEX: TableDefinition<&str, ()> = TableDefinition::new("index");

    /// Writes of one durable commit that puts `keys` in the index with `put`.
    fn writes_of(
        db: &Database,
        writes: &AtomicU64,
        keys: &[String],
        put: impl Fn(&mut redb::Table<'_, &'static str, ()>, &str),
    ) -> u64 {
        let before = writes.load(Ordering::SeqCst);
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(INDEX).unwrap();
            for k in keys {
                put(&mut t, k);
            }
        }
        txn.commit().unwrap();
        writes.load(Ordering::SeqCst) - before
    }

    #[test]
    fn an_index_entry_already_there_costs_its_commit_no_page() {
        let writes = Arc::new(AtomicU64::new(0));
        let db = Database::builder()
            .create_with_backend(Counting(InMemoryBackend::new(), writes.clone()))
            .unwrap();
        // Enough entries for a tree with branches; every later commit sees them committed.
        let keys: Vec<String> = (0..2_000).map(|i| format!("spiffe://t/u/{i:05}")).collect();
        writes_of(&db, &writes, &keys, |t, k| {
            t.insert(k, ()).unwrap();
        });
        let some = &keys[..40];
        // A commit that changes nothing, before and after: what redb writes whatever happens.
        let before = writes_of(&db, &writes, &[], |_, _| {});
        let again = writes_of(&db, &writes, some, |t, k| super::add(t, k).unwrap());
        let after = writes_of(&db, &writes, &[], |_, _| {});
        let nothing = before.max(after);
        let rewritten = writes_of(&db, &writes, some, |t, k| {
            t.insert(k, ()).unwrap();
        });
        assert!(
            again <= nothing,
            "add() rewrote pages for entries already there ({again} writes, {nothing} for nothing)"
        );
        assert!(
            rewritten > nothing,
            "a plain insert of entries already there should copy their pages ({rewritten} vs {nothing}): the check above proves nothing"
        );
        // And a new entry is added.
        let fresh = ["spiffe://t/u/new".to_owned()];
        writes_of(&db, &writes, &fresh, |t, k| super::add(t, k).unwrap());
        let read = db.begin_read().unwrap();
        let t = read.open_table(INDEX).unwrap();
        assert!(t.get("spiffe://t/u/new").unwrap().is_some());
        assert_eq!(redb::ReadableTableMetadata::len(&t).unwrap(), 2_001);
    }
}
