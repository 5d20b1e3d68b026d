//! The PostgreSQL store (`store = "postgres://…"`, docs/operations.md): the relay's state, its
//! events and the Merkle nodes in one database, every batch one transaction committed with
//! `synchronous_commit` on, the log's appends serialized by an advisory lock. Each relay keeps
//! a copy of the log tree (as the embedded store does), brought up to the database's before
//! every write and every log read.
//!
//! Envelopes small enough to be stored inline live in the envelope's batch; larger ones are
//! pieces in the database too ([`blobs`]), so every node serves every envelope.

pub mod blobs;
mod pool;
mod schema;
mod write;

use std::sync::{Arc, Mutex};

use crate::core::store::{
    AssignmentRecord, DeliveryRecord, EnvelopeRecord, Event, GrantRecord, OpResult, Store,
    StoredSigned, Usage, WriteOp,
};
use crate::core::tlog::{Hash, Tree};
use crate::error::{Error, Result};
use crate::ids::{EnvelopeId, GrantId, SpiffeId};

use pool::{pg_err, Pool};

/// The advisory lock key every log append takes ("sealrelay log").
const LOG_LOCK: i64 = 0x5345_414c_4c4f_4721;

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| Error::internal(format!("cannot encode a record: {e}")))
}

fn dec<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> Result<T> {
    postcard::from_bytes(b)
        .map_err(|e| Error::internal(format!("corrupt record in the database: {e}")))
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::bad_input("a number too large for the database"))
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

pub struct PgStore {
    pool: Arc<Pool>,
    tree: Arc<Mutex<Tree>>,
}

type Param<'a> = &'a (dyn postgres::types::ToSql + Sync);

impl PgStore {
    /// Connects (`connections` workers), applies the schema migrations, loads the log tree and
    /// checks it against the events.
    pub fn connect(url: &str, connections: usize) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|_| {
            Error::bad_input(
                "store: not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE, or postgresql:///DATABASE?host=/run/postgresql for a Unix socket)",
            )
        })?;
        // A database host that stops answering must fail calls, not hang them.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(10))
            .keepalives_interval(std::time::Duration::from_secs(5))
            .keepalives_retries(3)
            // Data sent and not acknowledged (a COMMIT to a host that went away) is given up
            // after this, not the kernel's ~15 minutes of retransmissions: the commit thread
            // waits for a batch to its end.
            .tcp_user_timeout(std::time::Duration::from_secs(30));
        let pool = Arc::new(Pool::new(config, connections)?);
        // A server that refuses the credentials, or has no such database, stops the start with
        // that, not with "unavailable, try again".
        pool.connect_now()?;
        pool.run(|conn, _| schema::migrate(conn))?;
        let tree = pool.run(|conn, _| {
            // One snapshot for the nodes and the events, whatever other nodes append meanwhile.
            let mut tx = conn
                .client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pg_err)?;
            let tree = load_tree(&mut tx)?;
            tx.commit().map_err(pg_err)?;
            Ok(tree)
        })?;
        Ok(PgStore {
            pool,
            tree: Arc::new(Mutex::new(tree)),
        })
    }

    /// The store of large ciphertexts in this database.
    pub fn blobs(&self) -> blobs::PgBlobs {
        blobs::PgBlobs::new(self.pool.clone())
    }

    fn tree(&self) -> Result<std::sync::MutexGuard<'_, Tree>> {
        self.tree
            .lock()
            .map_err(|_| Error::internal("the log tree lock is poisoned"))
    }

    /// Records decoded from the first column of `sql`'s rows.
    fn records<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        params: Vec<Box<dyn postgres::types::ToSql + Sync + Send>>,
    ) -> Result<Vec<T>> {
        self.pool.run(move |conn, _| {
            let refs: Vec<Param<'_>> = params.iter().map(|p| p.as_ref() as Param<'_>).collect();
            let st = conn.statements.get(&mut conn.client, sql).map_err(pg_err)?;
            let rows = conn.client.query(&st, &refs).map_err(pg_err)?;
            rows.iter().map(|r| dec(r.get(0))).collect()
        })
    }

    fn record<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        key: Vec<u8>,
    ) -> Result<Option<T>> {
        Ok(self.records(sql, vec![Box::new(key)])?.into_iter().next())
    }

    /// Brings this node's tree up to the database's (entries other nodes appended).
    fn refresh(&self) -> Result<()> {
        let tree = self.tree.clone();
        self.pool.run(move |conn, _| {
            let mut tree = tree
                .lock()
                .map_err(|_| Error::internal("the log tree lock is poisoned"))?;
            let mut tx = conn.client.transaction().map_err(pg_err)?;
            write::catch_up(&mut tx, &mut conn.statements, &mut tree)?;
            tx.commit().map_err(pg_err)
        })
    }
}

/// Loads the stored tree nodes, checks their count against the events, and the events against
/// the tree.
fn load_tree(tx: &mut postgres::Transaction<'_>) -> Result<Tree> {
    let mut levels: Vec<Vec<Hash>> = Vec::new();
    let nodes = tx
        .query_raw(
            "SELECT level, idx, hash FROM tlog_nodes ORDER BY level, idx",
            std::iter::empty::<i32>(),
        )
        .map_err(pg_err)?;
    use postgres::fallible_iterator::FallibleIterator;
    let mut nodes = nodes;
    while let Some(row) = nodes.next().map_err(pg_err)? {
        let level: i32 = row.get(0);
        let idx: i64 = row.get(1);
        let hash: Hash = row
            .get::<_, &[u8]>(2)
            .try_into()
            .map_err(|_| Error::internal("corrupt log node in the database"))?;
        let level = usize::try_from(level).map_err(|_| Error::internal("corrupt log node"))?;
        while levels.len() <= level {
            levels.push(Vec::new());
        }
        if u64::try_from(idx).ok() != Some(levels[level].len() as u64) {
            return Err(Error::internal("the database's log nodes have a gap"));
        }
        levels[level].push(hash);
    }
    drop(nodes);
    let tree =
        Tree::from_levels(levels).map_err(|e| Error::internal(format!("corrupt log tree: {e}")))?;
    let mut events = tx
        .query_raw(
            "SELECT idx, body FROM events ORDER BY idx",
            std::iter::empty::<i32>(),
        )
        .map_err(pg_err)?;
    let iter = std::iter::from_fn(|| match events.next() {
        Ok(Some(row)) => {
            let idx: i64 = row.get(0);
            Some(dec::<Event>(row.get(1)).map(|e| (u64::try_from(idx).unwrap_or(u64::MAX), e)))
        }
        Ok(None) => None,
        // A lost connection is an outage, not a corrupt log.
        Err(e) => Some(Err(pg_err(e))),
    });
    let counted = CountingIter::new(iter);
    let count = counted.count.clone();
    crate::store::write_ops::check_tree_against_events(&tree, counted)?;
    let count = count.load(std::sync::atomic::Ordering::Relaxed);
    if tree.size() != count {
        return Err(Error::internal(format!(
            "the database holds {count} events but a log tree of {} leaves: it is corrupt",
            tree.size()
        )));
    }
    Ok(tree)
}

/// Counts what passes through an iterator.
struct CountingIter<I> {
    inner: I,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl<I> CountingIter<I> {
    fn new(inner: I) -> Self {
        CountingIter {
            inner,
            count: Arc::default(),
        }
    }
}

impl<I: Iterator> Iterator for CountingIter<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next();
        if item.is_some() {
            self.count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        item
    }
}

fn after_key(after: Option<&[u8; 16]>) -> Vec<u8> {
    after.map(|a| a.to_vec()).unwrap_or_default()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store for PgStore {
    fn apply(&self, ops: &[WriteOp]) -> Result<Vec<OpResult>> {
        let ops = ops.to_vec();
        let tree = self.tree.clone();
        // Waited for to the end: a batch reported failed must not have committed.
        self.pool.run_to_end(move |conn, retryable| {
            let mut tree = tree
                .lock()
                .map_err(|_| Error::internal("the log tree lock is poisoned"))?;
            let size_before = tree.size();
            let result = write::apply(conn, &mut tree, &ops, retryable);
            if result.is_err() {
                // Nothing is known to be committed: the tree goes back, and the next write or
                // read brings it up to whatever the database holds.
                tree.truncate(size_before);
            }
            result
        })
    }

    fn directory(&self) -> Result<(Vec<StoredSigned>, Vec<StoredSigned>)> {
        let sql = "SELECT body FROM dir_statements WHERE revocation = $1 ORDER BY id, serial";
        Ok((
            self.records(sql, vec![Box::new(false)])?,
            self.records(sql, vec![Box::new(true)])?,
        ))
    }

    fn directory_log(&self, from: u64, n: usize) -> Result<Vec<Vec<u8>>> {
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        self.pool.run(move |conn, _| {
            let rows = conn
                .client
                .query(
                    "SELECT leaf FROM dir_log WHERE idx >= $1 ORDER BY idx LIMIT $2",
                    &[&from, &limit(n)],
                )
                .map_err(pg_err)?;
            Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
        })
    }

    fn grant(&self, grant_id: &GrantId) -> Result<Option<GrantRecord>> {
        self.record(
            "SELECT record FROM grants WHERE grant_id = $1",
            grant_id.as_slice().to_vec(),
        )
    }

    fn assignment(&self, grant_id: &GrantId) -> Result<Option<AssignmentRecord>> {
        self.record(
            "SELECT record FROM assignments WHERE grant_id = $1",
            grant_id.as_slice().to_vec(),
        )
    }

    fn assignments_for(
        &self,
        source: &SpiffeId,
        after: Option<&GrantId>,
        n: usize,
    ) -> Result<Vec<AssignmentRecord>> {
        self.records(
            "SELECT record FROM assignments WHERE source = $1 AND queued AND grant_id > $2 ORDER BY grant_id LIMIT $3",
            vec![
                Box::new(source.to_string()),
                Box::new(after_key(after.map(|g| g.as_bytes()))),
                Box::new(limit(n)),
            ],
        )
    }

    fn open_grants_for(
        &self,
        agent: &SpiffeId,
        after: Option<&GrantId>,
        n: usize,
    ) -> Result<Vec<GrantRecord>> {
        self.records(
            "SELECT record FROM grants WHERE agent = $1 AND open AND grant_id > $2 ORDER BY grant_id LIMIT $3",
            vec![
                Box::new(agent.to_string()),
                Box::new(after_key(after.map(|g| g.as_bytes()))),
                Box::new(limit(n)),
            ],
        )
    }

    fn envelope(&self, envelope_id: &EnvelopeId) -> Result<Option<EnvelopeRecord>> {
        self.record(
            "SELECT record FROM envelopes WHERE envelope_id = $1",
            envelope_id.as_slice().to_vec(),
        )
    }

    fn grants_by(
        &self,
        user: &SpiffeId,
        after: Option<&GrantId>,
        n: usize,
    ) -> Result<Vec<GrantRecord>> {
        self.records(
            "SELECT record FROM grants WHERE user_id = $1 AND grant_id > $2 ORDER BY grant_id LIMIT $3",
            vec![
                Box::new(user.to_string()),
                Box::new(after_key(after.map(|g| g.as_bytes()))),
                Box::new(limit(n)),
            ],
        )
    }

    fn delivery(&self, envelope_id: &EnvelopeId) -> Result<Option<DeliveryRecord>> {
        self.record(
            "SELECT record FROM deliveries WHERE envelope_id = $1",
            envelope_id.as_slice().to_vec(),
        )
    }

    fn inbox(
        &self,
        user: &SpiffeId,
        after: Option<&EnvelopeId>,
        n: usize,
    ) -> Result<Vec<EnvelopeRecord>> {
        self.records(
            "SELECT record FROM envelopes WHERE user_id = $1 AND waiting AND envelope_id > $2 ORDER BY envelope_id LIMIT $3",
            vec![
                Box::new(user.to_string()),
                Box::new(after_key(after.map(|e| e.as_bytes()))),
                Box::new(limit(n)),
            ],
        )
    }

    fn inline_body(&self, envelope_id: &EnvelopeId) -> Result<Option<Vec<u8>>> {
        let key = envelope_id.as_slice().to_vec();
        self.pool.run(move |conn, _| {
            let st = conn
                .statements
                .get(
                    &mut conn.client,
                    "SELECT body FROM inline_bodies WHERE envelope_id = $1",
                )
                .map_err(pg_err)?;
            let row = conn.client.query_opt(&st, &[&key]).map_err(pg_err)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn envelope_ids(&self) -> Result<Vec<EnvelopeId>> {
        self.pool.run(|conn, _| {
            let rows = conn
                .client
                .query("SELECT envelope_id FROM envelopes", &[])
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .filter_map(|r| <[u8; 16]>::try_from(r.get::<_, &[u8]>(0)).ok())
                .map(EnvelopeId)
                .collect())
        })
    }

    fn events(&self, from: u64, n: usize) -> Result<Vec<(u64, Event)>> {
        // Past any index the database can hold: an empty page, as on the embedded store.
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        self.pool.run(move |conn, _| {
            let rows = conn
                .client
                .query(
                    "SELECT idx, body FROM events WHERE idx >= $1 ORDER BY idx LIMIT $2",
                    &[&from, &limit(n)],
                )
                .map_err(pg_err)?;
            rows.iter()
                .map(|r| {
                    let idx: i64 = r.get(0);
                    Ok((u64::try_from(idx).unwrap_or(0), dec(r.get(1))?))
                })
                .collect()
        })
    }

    fn event_count(&self) -> Result<u64> {
        self.pool.run(|conn, _| {
            let n: i64 = conn
                .client
                .query_one("SELECT coalesce(max(idx) + 1, 0) FROM events", &[])
                .map_err(pg_err)?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn usage(&self, party: &SpiffeId) -> Result<Usage> {
        Ok(self
            .records(
                "SELECT record FROM usage WHERE party = $1",
                vec![Box::new(party.to_string())],
            )?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    fn health(&self) -> Result<()> {
        self.pool.run(|conn, _| {
            conn.client
                .simple_query("SELECT 1")
                .map(|_| ())
                .map_err(pg_err)
        })
    }

    fn quarantined(&self) -> Result<Vec<(String, String)>> {
        self.pool.run(|conn, _| {
            let rows = conn
                .client
                .query("SELECT agent, reason FROM quarantine ORDER BY agent", &[])
                .map_err(pg_err)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn record_signal(
        &self,
        agent: &str,
        signal: &'static str,
        claimant: Option<&str>,
        at: u64,
        since: u64,
        per_claimant: bool,
    ) -> Result<Option<u64>> {
        let (agent, claimant) = (agent.to_owned(), claimant.map(str::to_owned));
        let (at, since) = (to_i64(at)?, to_i64(since)?);
        self.pool.run(move |conn, _| {
            let mut tx = conn.client.transaction().map_err(pg_err)?;
            // A count for the monitor, not an acknowledgement: no WAL flush of its own.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(pg_err)?;
            let insert = conn
                .statements
                .get(
                    &mut tx,
                    "INSERT INTO monitor_signals (agent, signal, claimant, at) VALUES ($1, $2, $3, $4)",
                )
                .map_err(pg_err)?;
            tx.execute(&insert, &[&agent, &signal, &claimant, &at])
                .map_err(pg_err)?;
            let count = conn
                .statements
                .get(
                    &mut tx,
                    if per_claimant {
                        "SELECT count(DISTINCT coalesce(claimant, '')) FROM monitor_signals \
                         WHERE agent = $1 AND signal = $2 AND at >= $3"
                    } else {
                        "SELECT count(*) FROM monitor_signals \
                         WHERE agent = $1 AND signal = $2 AND at >= $3"
                    },
                )
                .map_err(pg_err)?;
            let n: i64 = tx
                .query_one(&count, &[&agent, &signal, &since])
                .map_err(pg_err)?
                .get(0);
            tx.commit().map_err(pg_err)?;
            Ok(Some(u64::try_from(n).unwrap_or(0)))
        })
    }

    fn clear_signals(&self, agent: &str) -> Result<()> {
        let agent = agent.to_owned();
        self.pool.run(move |conn, _| {
            conn.client
                .execute("DELETE FROM monitor_signals WHERE agent = $1", &[&agent])
                .map(|_| ())
                .map_err(pg_err)
        })
    }

    fn prune_signals(&self, before: u64) -> Result<()> {
        let before = to_i64(before)?;
        self.pool.run(move |conn, _| {
            conn.client
                .execute("DELETE FROM monitor_signals WHERE at < $1", &[&before])
                .map(|_| ())
                .map_err(pg_err)
        })
    }

    fn pending_approvals(&self, after: Option<&GrantId>, n: usize) -> Result<Vec<GrantRecord>> {
        self.records(
            "SELECT record FROM grants WHERE pending AND grant_id > $1 ORDER BY grant_id LIMIT $2",
            vec![
                Box::new(after_key(after.map(|g| g.as_bytes()))),
                Box::new(limit(n)),
            ],
        )
    }

    fn expired_grants(&self, now: u64, n: usize) -> Result<Vec<GrantId>> {
        let now = to_i64(now)?;
        self.pool.run(move |conn, _| {
            let rows = conn
                .client
                .query(
                    "SELECT grant_id FROM grants WHERE open AND expires <= $1 ORDER BY grant_id LIMIT $2",
                    &[&now, &limit(n)],
                )
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .filter_map(|r| <[u8; 16]>::try_from(r.get::<_, &[u8]>(0)).ok())
                .map(GrantId)
                .collect())
        })
    }

    fn log_size(&self) -> u64 {
        // Best effort: a size from before another node's append is still a true prefix.
        let _ = self.refresh();
        self.tree().map(|t| t.size()).unwrap_or(0)
    }

    fn log_root(&self, size: u64) -> Result<Hash> {
        if size > self.tree()?.size() {
            self.refresh()?;
        }
        self.tree()?.root(size).map_err(Error::from)
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        if size > self.tree()?.size() {
            self.refresh()?;
        }
        self.tree()?
            .inclusion_proof(index, size)
            .map_err(Error::from)
    }

    fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>> {
        if new_size > self.tree()?.size() {
            self.refresh()?;
        }
        self.tree()?
            .consistency_proof(old_size, new_size)
            .map_err(Error::from)
    }
}
