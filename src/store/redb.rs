//! The embedded store: one redb database. Every `apply` is one write transaction committed
//! with `Durability::Immediate` (fsync before it returns).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::core::store::{
    AssignmentRecord, EnvelopeRecord, Event, GrantRecord, GrantState, OpResult, Store,
    StoredSigned, WriteOp,
};
use crate::core::tlog::{Hash, Tree};
use crate::error::{Error, Result};
use crate::ids::{hex, EnvelopeId, GrantId, SpiffeId};

const DIR_ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("dir_entries");
const DIR_REVOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("dir_revocations");
/// The directory log's leaves by index (`core::keylog`).
pub(crate) const DIR_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("dir_log");
const GRANTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("grants");
const AGENT_GRANTS: TableDefinition<&str, ()> = TableDefinition::new("agent_grants");
const ENVELOPES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("envelopes");
const USER_INBOX: TableDefinition<&str, ()> = TableDefinition::new("user_inbox");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const INLINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("inline_ciphertext");
const QUARANTINE: TableDefinition<&str, &str> = TableDefinition::new("quarantine");
const PENDING: TableDefinition<&[u8], ()> = TableDefinition::new("pending_approval");
/// Per-party counters (`core::store::Usage`), kept in the transactions that change them.
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
/// Envelope id → what its receipt said ([`DeliveryRecord`]), kept after the envelope goes.
const DELIVERIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("deliveries");
/// `user\0<grant hex>` → (): every grant a user made (grants made before this index existed
/// are not listed).
const USER_GRANTS: TableDefinition<&str, ()> = TableDefinition::new("user_grants");
/// Grant id → its assignment to a source (`core::store::AssignmentRecord`).
const ASSIGNMENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("assignments");
/// `source\0<grant hex>` → (): a source's queued assignments.
const SOURCE_QUEUE: TableDefinition<&str, ()> = TableDefinition::new("source_queue");
/// Merkle tree nodes: (level, index) → hash of the complete subtree of 2^level leaves.
const TLOG_NODES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("tlog_nodes");

mod read;
mod write;

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::storing("store error", e)
}

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| Error::internal(format!("cannot encode a record: {e}")))
}

fn dec<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> Result<T> {
    postcard::from_bytes(b)
        .map_err(|e| Error::internal(format!("corrupt record in the store: {e}")))
}

fn dir_key(id: &str, serial: u64) -> String {
    format!("{id}\0{serial:020}")
}

fn pair_key(owner: &SpiffeId, id: &[u8; 16]) -> String {
    format!("{owner}\0{}", hex(id))
}

/// Keys `owner\0...` sort together; this is the exclusive end of that range.
fn prefix_range(owner: &SpiffeId) -> (String, String) {
    (format!("{owner}\0"), format!("{owner}\u{1}"))
}

type Reopener = Box<dyn Fn() -> Result<Database> + Send + Sync>;

pub struct RedbStore {
    /// `None` only while a poisoned database is being reopened (see [`RedbStore::apply`]).
    db: std::sync::RwLock<Option<Database>>,
    /// The file, for the free-space check (`None` in memory).
    path: Option<std::path::PathBuf>,
    /// How to open the database again after an I/O error (`None` in memory: nothing to reopen).
    reopener: Option<Reopener>,
    /// A write failed on I/O: redb refuses every later write until the database is reopened.
    poisoned: std::sync::atomic::AtomicBool,
    /// Writes are refused as "storage full" while the data directory has less free space.
    min_free: std::sync::atomic::AtomicU64,
    /// The Merkle tree over the events, mirrored from TLOG_NODES; only `apply` appends to it.
    tree: std::sync::Mutex<Tree>,
}

/// The page cache redb may keep in memory (its default is 1 GiB, which a busy relay fills with
/// pages it will not read again: the relay's memory budget is 64 MiB while it streams a
/// gibibyte, docs/benchmarks.md).
pub const CACHE_BYTES: usize = 4 << 20;

impl RedbStore {
    /// Opens or creates `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| Error::io(format!("cannot open the store {}: {e}", path.display())))?;
        crate::local::fs::restrict(path, crate::local::fs::PRIVATE_MODE)?;
        let mut store = Self::with_database(db)?;
        store.path = Some(path.to_path_buf());
        let path = path.to_path_buf();
        store.reopener = Some(Box::new(move || {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(|e| Error::storing("cannot reopen the store", e))
        }));
        Ok(store)
    }

    /// A store on storage backends that `open` makes (each call opens the same storage again):
    /// for tests that inject faults below redb, and for lost-unsynced-writes crash images.
    pub fn on_backend<B: redb::StorageBackend>(
        open: impl Fn() -> B + Send + Sync + 'static,
    ) -> Result<Self> {
        let reopen = move || {
            Database::builder()
                .create_with_backend(open())
                .map_err(|e| Error::storing("cannot open the store", e))
        };
        let mut store = Self::with_database(reopen()?)?;
        store.reopener = Some(Box::new(reopen));
        Ok(store)
    }

    /// Keeps `bytes` free in the data directory: writes that would eat into them are refused
    /// as "storage full" before redb or a blob meets ENOSPC (threat 38).
    pub fn set_min_free(&self, bytes: u64) {
        self.min_free
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn db(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<Database>>> {
        self.db
            .read()
            .map_err(|_| Error::internal("the store lock is poisoned"))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        match self.try_begin_read() {
            Err(_)
                if self.reopener.is_some()
                    && self.poisoned.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                // A failed write's reopening failed too (the slot is empty): try again, then
                // read.
                let mut tree = self.tree()?;
                self.reopen(&mut tree)?;
                drop(tree);
                self.try_begin_read()
            }
            other => other,
        }
    }

    fn try_begin_read(&self) -> Result<redb::ReadTransaction> {
        match self.db()?.as_ref() {
            Some(db) => db.begin_read().map_err(db_err),
            None => Err(Error::io(
                "the store is being reopened after an I/O error: try again shortly",
            )),
        }
    }

    /// Closes and reopens a database that failed a write on I/O (redb refuses every write
    /// after one), then checks its log against its tree as at start.
    fn reopen(&self, tree: &mut Tree) -> Result<()> {
        use std::sync::atomic::Ordering;
        let Some(reopen) = &self.reopener else {
            self.poisoned.store(false, Ordering::Relaxed);
            return Ok(());
        };
        let mut slot = self
            .db
            .write()
            .map_err(|_| Error::internal("the store lock is poisoned"))?;
        drop(slot.take());
        let db = reopen()?;
        *tree = load_tree(&db)?;
        check_tree_against_events(&db, tree)?;
        *slot = Some(db);
        self.poisoned.store(false, Ordering::Relaxed);
        tracing::warn!("the store was reopened after an I/O error; writes resume");
        Ok(())
    }

    /// A store that lives in memory only (tests of the relay's handlers: the same code as on
    /// disk, without a disk).
    pub fn in_memory() -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| Error::io(format!("cannot make an in-memory store: {e}")))?;
        Self::with_database(db)
    }

    fn with_database(db: Database) -> Result<Self> {
        let txn = db.begin_write().map_err(db_err)?;
        {
            // Create every table so reads never meet a missing one.
            txn.open_table(DIR_ENTRIES).map_err(db_err)?;
            txn.open_table(DIR_REVOCATIONS).map_err(db_err)?;
            txn.open_table(DIR_LOG).map_err(db_err)?;
            txn.open_table(GRANTS).map_err(db_err)?;
            txn.open_table(AGENT_GRANTS).map_err(db_err)?;
            txn.open_table(ENVELOPES).map_err(db_err)?;
            txn.open_table(USER_INBOX).map_err(db_err)?;
            txn.open_table(EVENTS).map_err(db_err)?;
            txn.open_table(INLINE).map_err(db_err)?;
            txn.open_table(TLOG_NODES).map_err(db_err)?;
            txn.open_table(QUARANTINE).map_err(db_err)?;
            txn.open_table(PENDING).map_err(db_err)?;
            txn.open_table(USAGE).map_err(db_err)?;
            txn.open_table(DELIVERIES).map_err(db_err)?;
            txn.open_table(USER_GRANTS).map_err(db_err)?;
            txn.open_table(ASSIGNMENTS).map_err(db_err)?;
            txn.open_table(SOURCE_QUEUE).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let tree = load_tree(&db)?;
        check_tree_against_events(&db, &tree)?;
        Ok(RedbStore {
            db: std::sync::RwLock::new(Some(db)),
            path: None,
            reopener: None,
            poisoned: std::sync::atomic::AtomicBool::new(false),
            min_free: std::sync::atomic::AtomicU64::new(0),
            tree: std::sync::Mutex::new(tree),
        })
    }

    fn tree(&self) -> Result<std::sync::MutexGuard<'_, Tree>> {
        self.tree
            .lock()
            .map_err(|_| Error::internal("the log tree lock is poisoned"))
    }
}

/// Loads the stored tree nodes; checks them against the events (a tree that does not match
/// its events is rebuilt from the events).
fn load_tree(db: &Database) -> Result<Tree> {
    let txn = db.begin_read().map_err(db_err)?;
    let nodes = txn.open_table(TLOG_NODES).map_err(db_err)?;
    let events = txn.open_table(EVENTS).map_err(db_err)?;
    let mut levels: Vec<Vec<Hash>> = Vec::new();
    for item in nodes.iter().map_err(db_err)? {
        let (k, v) = item.map_err(db_err)?;
        let (level, index) = k.value();
        let hash: Hash = v
            .value()
            .try_into()
            .map_err(|_| Error::internal("corrupt log node in the store"))?;
        let level = usize::try_from(level).map_err(|_| Error::internal("corrupt log node"))?;
        while levels.len() <= level {
            levels.push(Vec::new());
        }
        if index != levels[level].len() as u64 {
            return Err(Error::internal("the store's log nodes have a gap"));
        }
        levels[level].push(hash);
    }
    let tree =
        Tree::from_levels(levels).map_err(|e| Error::internal(format!("corrupt log tree: {e}")))?;
    let count = events.len().map_err(db_err)?;
    if tree.size() != count {
        return Err(Error::internal(format!(
            "the store holds {count} events but a log tree of {} leaves: the store is corrupt",
            tree.size()
        )));
    }
    Ok(tree)
}

/// Checks the stored events against the stored tree ([`crate::store::write_ops::check_tree_against_events`]).
fn check_tree_against_events(db: &Database, tree: &Tree) -> Result<()> {
    let txn = db.begin_read().map_err(db_err)?;
    let events = txn.open_table(EVENTS).map_err(db_err)?;
    let iter = events.iter().map_err(db_err)?.map(|item| {
        let (k, v) = item.map_err(db_err)?;
        Ok((k.value(), dec::<Event>(v.value())?))
    });
    crate::store::write_ops::check_tree_against_events(tree, iter)
}

impl Store for RedbStore {
    fn apply(&self, ops: &[WriteOp]) -> Result<Vec<OpResult>> {
        use std::sync::atomic::Ordering;
        let mut tree = self.tree()?;
        // The free-space reserve is the commit loop's to check (it holds back only the writes
        // that add data, and says so to each: `services::committer`); checked here too, a disk
        // crossing the line between the two checks would refuse a whole batch, revocations
        // included.
        if self.poisoned.load(Ordering::Relaxed) {
            self.reopen(&mut tree)?;
        }
        let guard = self.db()?;
        let db = guard.as_ref().ok_or_else(|| {
            Error::io("the store is closed after an I/O error: try again shortly")
        })?;
        let size_before = tree.size();
        let result = self.apply_in(db, &mut tree, ops);
        if let Err(e) = &result {
            // Nothing was committed (or, after a failed fsync, nothing is known to be): the
            // in-memory tree goes back to its size before the batch at once, so that no
            // checkpoint is ever signed over leaves the store may not hold.
            tree.truncate(size_before);
            if e.kind() == crate::ErrorKind::Io && self.reopener.is_some() {
                // redb refuses every later read and write after an I/O error until it is
                // reopened: reopen now (a failed reopen is retried before the next read or
                // write). The batch itself is refused and reported, never retried as if it had
                // succeeded (an fsync error included); the reopened tree is the store's.
                self.poisoned.store(true, Ordering::Relaxed);
                drop(guard);
                if let Err(again) = self.reopen(&mut tree) {
                    tracing::error!(error = %again, "cannot reopen the store yet");
                }
            }
        }
        result
    }

    fn ensure_room(&self, incoming: u64) -> Result<()> {
        let min = self.min_free.load(std::sync::atomic::Ordering::Relaxed);
        match self.path.as_deref().and_then(Path::parent) {
            Some(dir) => crate::local::fs::ensure_free(dir, min, incoming),
            None => Ok(()),
        }
    }

    fn usage(&self, party: &SpiffeId) -> Result<crate::core::store::Usage> {
        let txn = self.begin_read()?;
        let t = txn.open_table(USAGE).map_err(db_err)?;
        match t.get(party.to_string().as_str()).map_err(db_err)? {
            Some(v) => dec(v.value()),
            None => Ok(crate::core::store::Usage::default()),
        }
    }

    fn quarantined(&self) -> Result<Vec<(String, String)>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(QUARANTINE).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }

    fn pending_approvals(&self, after: Option<&GrantId>, limit: usize) -> Result<Vec<GrantRecord>> {
        use std::ops::Bound;
        let txn = self.begin_read()?;
        let index = txn.open_table(PENDING).map_err(db_err)?;
        let grants = txn.open_table(GRANTS).map_err(db_err)?;
        let lower = match after {
            Some(id) => Bound::Excluded(id.as_slice()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in index
            .range::<&[u8]>((lower, Bound::Unbounded))
            .map_err(db_err)?
            .take(limit)
        {
            let (k, _) = item.map_err(db_err)?;
            if let Some(g) = grants.get(k.value()).map_err(db_err)? {
                out.push(dec(g.value())?);
            }
        }
        Ok(out)
    }

    fn expired_grants(&self, now: u64, limit: usize) -> Result<Vec<GrantId>> {
        let txn = self.begin_read()?;
        let grants = txn.open_table(GRANTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in grants.iter().map_err(db_err)? {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item.map_err(db_err)?;
            let g: GrantRecord = dec(v.value())?;
            if g.state == GrantState::Open && now >= g.expires {
                out.push(g.grant_id);
            }
        }
        Ok(out)
    }

    fn log_size(&self) -> u64 {
        self.tree().map(|t| t.size()).unwrap_or(0)
    }

    fn log_root(&self, size: u64) -> Result<Hash> {
        self.tree()?.root(size).map_err(Error::from)
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.tree()?
            .inclusion_proof(index, size)
            .map_err(Error::from)
    }

    fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>> {
        self.tree()?
            .consistency_proof(old_size, new_size)
            .map_err(Error::from)
    }

    fn directory(&self) -> Result<(Vec<StoredSigned>, Vec<StoredSigned>)> {
        let txn = self.begin_read()?;
        let read = |def| -> Result<Vec<StoredSigned>> {
            let t = txn.open_table(def).map_err(db_err)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db_err)? {
                let (_, v) = item.map_err(db_err)?;
                out.push(dec(v.value())?);
            }
            Ok(out)
        };
        Ok((read(DIR_ENTRIES)?, read(DIR_REVOCATIONS)?))
    }

    fn directory_log(&self, from: u64, n: usize) -> Result<Vec<Vec<u8>>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(DIR_LOG).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.range(from..).map_err(db_err)?.take(n) {
            let (_, v) = item.map_err(db_err)?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    fn grant(&self, grant_id: &GrantId) -> Result<Option<GrantRecord>> {
        self.record(GRANTS, grant_id.as_slice())
    }

    fn grants_by(
        &self,
        user: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>> {
        self.owned_records(
            USER_GRANTS,
            GRANTS,
            user,
            after.map(|g| g.as_bytes()),
            limit,
        )
    }

    fn assignment(&self, grant_id: &GrantId) -> Result<Option<AssignmentRecord>> {
        self.record(ASSIGNMENTS, grant_id.as_slice())
    }

    fn assignments_for(
        &self,
        source: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<AssignmentRecord>> {
        // The queue holds queued assignments only: filling or refusing one removes it.
        self.owned_records(
            SOURCE_QUEUE,
            ASSIGNMENTS,
            source,
            after.map(|g| g.as_bytes()),
            limit,
        )
    }

    fn open_grants_for(
        &self,
        agent: &SpiffeId,
        after: Option<&GrantId>,
        limit: usize,
    ) -> Result<Vec<GrantRecord>> {
        // The index holds open grants only: consuming or closing a grant removes it.
        self.owned_records(
            AGENT_GRANTS,
            GRANTS,
            agent,
            after.map(|g| g.as_bytes()),
            limit,
        )
    }

    fn envelope(&self, envelope_id: &EnvelopeId) -> Result<Option<EnvelopeRecord>> {
        self.record(ENVELOPES, envelope_id.as_slice())
    }

    fn delivery(
        &self,
        envelope_id: &EnvelopeId,
    ) -> Result<Option<crate::core::store::DeliveryRecord>> {
        self.record(DELIVERIES, envelope_id.as_slice())
    }

    fn inbox(
        &self,
        user: &SpiffeId,
        after: Option<&EnvelopeId>,
        limit: usize,
    ) -> Result<Vec<EnvelopeRecord>> {
        self.owned_records(
            USER_INBOX,
            ENVELOPES,
            user,
            after.map(|e| e.as_bytes()),
            limit,
        )
    }

    fn inline_body(&self, envelope_id: &EnvelopeId) -> Result<Option<Vec<u8>>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(INLINE).map_err(db_err)?;
        let v = t.get(envelope_id.as_slice()).map_err(db_err)?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn envelope_ids(&self) -> Result<Vec<EnvelopeId>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(ENVELOPES).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, _) = item.map_err(db_err)?;
            if let Ok(id) = <[u8; 16]>::try_from(k.value()) {
                out.push(EnvelopeId(id));
            }
        }
        Ok(out)
    }

    fn events(&self, from: u64, limit: usize) -> Result<Vec<(u64, Event)>> {
        let txn = self.begin_read()?;
        let t = txn.open_table(EVENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.range(from..).map_err(db_err)?.take(limit) {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.value(), dec(v.value())?));
        }
        Ok(out)
    }

    fn event_count(&self) -> Result<u64> {
        let txn = self.begin_read()?;
        let t = txn.open_table(EVENTS).map_err(db_err)?;
        t.len().map_err(db_err)
    }

    fn health(&self) -> Result<()> {
        if self.poisoned.load(std::sync::atomic::Ordering::Relaxed) {
            // A failed write left the database closed: try to reopen it now rather than wait
            // for a write that a relay marked not ready would never receive.
            let mut tree = self.tree()?;
            if self.poisoned.load(std::sync::atomic::Ordering::Relaxed) {
                self.reopen(&mut tree).map_err(|e| {
                    Error::io(format!(
                        "the store failed a write and cannot be reopened yet: {}",
                        e.message()
                    ))
                })?;
            }
        }
        self.event_count().map(|_| ())
    }
}
