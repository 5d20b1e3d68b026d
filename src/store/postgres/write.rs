//! The write half of the PostgreSQL store: one transaction per batch under the log's advisory
//! lock (so the log keeps one sequence of leaves whichever node appends), the operations of
//! `store::write_ops` applied through [`PgTables`], committed with `synchronous_commit` on (the
//! server's WAL flushed before the commit returns).

use postgres::Transaction;

use super::pool::{pg_err, Conn, Statements};
use super::{dec, enc, to_i64, LOG_LOCK};
use crate::core::store::{
    AssignmentRecord, DeliveryRecord, EnvelopeRecord, Event, GrantRecord, OpResult, StoredSigned,
    Usage, WriteOp,
};
use crate::core::tlog::{leaf_hash, Tree};
use crate::error::{Error, Result};
use crate::ids::{EnvelopeId, GrantId};
use crate::store::write_ops::{self as ops, Tables};

struct PgTables<'a, 't> {
    tx: &'a mut Transaction<'t>,
    statements: &'a mut Statements,
    tree: &'a mut Tree,
    next_event: u64,
}

/// Applies `ops` in one transaction; `tree` (the node's copy of the log tree) is brought up to
/// the database's first, with what other nodes appended.
/// `retryable` is cleared as the COMMIT goes out: from then on the outcome is unknown, and the
/// batch must not be sent again on a new connection.
pub fn apply(
    conn: &mut Conn,
    tree: &mut Tree,
    ops: &[WriteOp],
    retryable: &mut bool,
) -> Result<Vec<OpResult>> {
    // Read committed: every statement after the advisory lock sees what the previous writer
    // committed, whatever the server's default isolation.
    let Conn { client, statements } = conn;
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::ReadCommitted)
        .start()
        .map_err(pg_err)?;
    // A node that froze holding the log lock must not stall every node for as long as the
    // server's TCP keepalive takes: the server ends a transaction left idle (releasing the
    // lock), and the wait for the lock and each statement are bounded, so other nodes' writes
    // fail in one line instead of piling up. The commit thread waits for this batch's answer
    // to the end (`Pool::run_to_end`): what it reports failed has not committed.
    tx.batch_execute(
        "SET LOCAL synchronous_commit = on; SET LOCAL lock_timeout = '10s'; SET LOCAL statement_timeout = '20s'; SET LOCAL idle_in_transaction_session_timeout = '20s'",
    )
    .map_err(pg_err)?;
    let lock = statements
        .get(&mut tx, "SELECT pg_advisory_xact_lock($1)")
        .map_err(pg_err)?;
    tx.execute(&lock, &[&LOG_LOCK]).map_err(pg_err)?;
    let next_event = catch_up(&mut tx, statements, tree)?;
    let results = {
        let mut t = PgTables {
            tx: &mut tx,
            statements,
            tree,
            next_event,
        };
        ops::apply_ops(&mut t, ops)?
    };
    *retryable = false;
    // The commit itself is not cut short: a commit waiting for a synchronous standby that is
    // cancelled returns success with a warning, and the write would be acknowledged as
    // durable where it is not.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .map_err(pg_err)?;
    tx.commit().map_err(pg_err)?;
    Ok(results)
}

/// Appends to `tree` the events the database holds past it; returns the database's log size.
pub fn catch_up(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    tree: &mut Tree,
) -> Result<u64> {
    let st = statements
        .get(tx, "SELECT coalesce(max(idx) + 1, 0) FROM events")
        .map_err(pg_err)?;
    let size: i64 = tx.query_one(&st, &[]).map_err(pg_err)?.get(0);
    let size = u64::try_from(size).map_err(|_| Error::internal("a negative log size"))?;
    if size < tree.size() {
        return Err(Error::internal(format!(
            "the database's log holds {size} entries but this relay already saw {}: the database was rolled back; refusing to write",
            tree.size()
        )));
    }
    if let Some(last) = tree.size().checked_sub(1) {
        // The database's leaf where this node's tree ends must be this node's: a database
        // restored from a backup and grown past it again is a fork.
        let st = statements
            .get(
                tx,
                "SELECT hash FROM tlog_nodes WHERE level = 0 AND idx = $1",
            )
            .map_err(pg_err)?;
        let row = tx.query_opt(&st, &[&to_i64(last)?]).map_err(pg_err)?;
        let theirs: Option<Vec<u8>> = row.map(|r| r.get(0));
        let ours = tree.leaf(last);
        if theirs.as_deref() != ours.as_ref().map(|h| h.as_slice()) {
            return Err(Error::internal(format!(
                "the database's log differs from what this relay saw at entry {last}: it was restored or rewritten; refusing to write"
            )));
        }
    }
    if size > tree.size() {
        let st = statements
            .get(
                tx,
                "SELECT idx, body FROM events WHERE idx >= $1 ORDER BY idx",
            )
            .map_err(pg_err)?;
        let rows = tx.query(&st, &[&to_i64(tree.size())?]).map_err(pg_err)?;
        for row in rows {
            let idx: i64 = row.get(0);
            if u64::try_from(idx).ok() != Some(tree.size()) {
                return Err(Error::internal("the database's events have a gap"));
            }
            let event: Event = dec(row.get(1))?;
            tree.append(leaf_hash(&event.leaf_bytes()));
        }
    }
    Ok(size)
}

impl PgTables<'_, '_> {
    /// Runs `sql` (prepared once per connection).
    fn exec(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<u64, postgres::Error> {
        let st = self.statements.get(self.tx, sql)?;
        self.tx.execute(&st, params)
    }

    fn one<T: serde::de::DeserializeOwned>(
        &mut self,
        sql: &'static str,
        key: &(dyn postgres::types::ToSql + Sync),
    ) -> Result<Option<T>> {
        let st = self.statements.get(self.tx, sql).map_err(pg_err)?;
        match self.tx.query_opt(&st, &[key]).map_err(pg_err)? {
            Some(row) => Ok(Some(dec(row.get(0))?)),
            None => Ok(None),
        }
    }
}

impl Tables for PgTables<'_, '_> {
    fn grant(&mut self, id: &GrantId) -> Result<Option<GrantRecord>> {
        self.one(
            "SELECT record FROM grants WHERE grant_id = $1",
            &id.as_slice(),
        )
    }

    fn assignment(&mut self, id: &GrantId) -> Result<Option<AssignmentRecord>> {
        self.one(
            "SELECT record FROM assignments WHERE grant_id = $1",
            &id.as_slice(),
        )
    }

    fn put_assignment(&mut self, a: &AssignmentRecord) -> Result<()> {
        self.exec(
            "INSERT INTO assignments (grant_id, source, queued, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (grant_id) DO UPDATE SET queued = excluded.queued, record = excluded.record",
            &[
                &a.grant_id.as_slice(),
                &a.source.to_string(),
                &a.queued(),
                &enc(a)?,
            ],
        )
        .map_err(pg_err)?;
        Ok(())
    }

    fn put_grant(&mut self, g: &GrantRecord) -> Result<()> {
        self.exec(
                "INSERT INTO grants (grant_id, user_id, agent, open, pending, expires, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (grant_id) DO UPDATE SET open = excluded.open,
                   pending = excluded.pending, expires = excluded.expires, record = excluded.record",
                &[
                    &g.grant_id.as_slice(),
                    &g.user.to_string(),
                    &g.agent.to_string(),
                    &ops::listed_for_agent(g),
                    &ops::awaits_approval(g),
                    &to_i64(g.expires)?,
                    &enc(g)?,
                ],
            )
            .map_err(pg_err)?;
        Ok(())
    }

    fn usage(&mut self, key: &str) -> Result<Usage> {
        Ok(self
            .one("SELECT record FROM usage WHERE party = $1", &key.to_owned())?
            .unwrap_or_default())
    }

    fn put_usage(&mut self, key: &str, u: &Usage) -> Result<()> {
        self.exec(
            "INSERT INTO usage (party, record) VALUES ($1, $2)
                 ON CONFLICT (party) DO UPDATE SET record = excluded.record",
            &[&key.to_owned(), &enc(u)?],
        )
        .map_err(pg_err)?;
        Ok(())
    }

    fn envelope(&mut self, id: &EnvelopeId) -> Result<Option<EnvelopeRecord>> {
        self.one(
            "SELECT record FROM envelopes WHERE envelope_id = $1",
            &id.as_slice(),
        )
    }

    fn put_envelope(&mut self, e: &EnvelopeRecord) -> Result<()> {
        self.exec(
            "INSERT INTO envelopes (envelope_id, user_id, waiting, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (envelope_id) DO UPDATE SET waiting = excluded.waiting,
                   record = excluded.record",
            &[
                &e.envelope_id.as_slice(),
                &e.user.to_string(),
                &e.receipt.is_none(),
                &enc(e)?,
            ],
        )
        .map_err(pg_err)?;
        Ok(())
    }

    fn remove_envelope(&mut self, e: &EnvelopeRecord) -> Result<()> {
        let id = e.envelope_id.as_slice();
        self.exec("DELETE FROM envelopes WHERE envelope_id = $1", &[&id])
            .map_err(pg_err)?;
        self.exec("DELETE FROM inline_bodies WHERE envelope_id = $1", &[&id])
            .map_err(pg_err)?;
        // A large ciphertext goes with its record (its pieces cascade).
        self.exec("DELETE FROM blobs WHERE envelope_id = $1", &[&id])
            .map_err(pg_err)?;
        Ok(())
    }

    fn put_inline(&mut self, id: &EnvelopeId, body: &[u8]) -> Result<()> {
        self.exec(
            "INSERT INTO inline_bodies (envelope_id, body) VALUES ($1, $2)
                 ON CONFLICT (envelope_id) DO UPDATE SET body = excluded.body",
            &[&id.as_slice(), &body],
        )
        .map_err(pg_err)?;
        Ok(())
    }

    fn put_delivery(&mut self, d: &DeliveryRecord) -> Result<()> {
        self.exec(
            "INSERT INTO deliveries (envelope_id, record) VALUES ($1, $2)
                 ON CONFLICT (envelope_id) DO UPDATE SET record = excluded.record",
            &[&d.envelope_id.as_slice(), &enc(d)?],
        )
        .map_err(pg_err)?;
        Ok(())
    }

    fn stored_directory(
        &mut self,
        revocation: bool,
        id: &str,
        serial: u64,
    ) -> Result<Option<StoredSigned>> {
        let st = self
            .statements
            .get(
                self.tx,
                "SELECT body FROM dir_statements WHERE revocation = $1 AND id = $2 AND serial = $3",
            )
            .map_err(pg_err)?;
        match self
            .tx
            .query_opt(&st, &[&revocation, &id, &to_i64(serial)?])
            .map_err(pg_err)?
        {
            Some(row) => Ok(Some(dec(row.get(0))?)),
            None => Ok(None),
        }
    }

    fn put_directory(
        &mut self,
        revocation: bool,
        id: &str,
        serial: u64,
        s: &StoredSigned,
    ) -> Result<bool> {
        let n = self
            .exec(
                "INSERT INTO dir_statements (revocation, id, serial, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (revocation, id, serial) DO NOTHING",
                &[&revocation, &id, &to_i64(serial)?, &enc(s)?],
            )
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    fn directory_log_size(&mut self) -> Result<u64> {
        let row = self
            .tx
            .query_one("SELECT count(*) FROM dir_log", &[])
            .map_err(pg_err)?;
        let n: i64 = row.get(0);
        u64::try_from(n).map_err(|_| Error::internal("the directory log's size"))
    }

    fn append_directory_leaf(&mut self, leaf: &[u8]) -> Result<u64> {
        // Under the log's advisory lock (taken for the whole batch): no other node appends.
        let index = self.directory_log_size()?;
        self.exec(
            "INSERT INTO dir_log (idx, leaf) VALUES ($1, $2)",
            &[&to_i64(index)?, &leaf],
        )
        .map_err(pg_err)?;
        Ok(index)
    }

    fn put_quarantine(&mut self, agent: &str, reason: &str) -> Result<()> {
        self.exec(
            "INSERT INTO quarantine (agent, reason) VALUES ($1, $2)
                 ON CONFLICT (agent) DO UPDATE SET reason = excluded.reason",
            &[&agent, &reason],
        )
        .map_err(pg_err)?;
        Ok(())
    }

    fn remove_quarantine(&mut self, agent: &str) -> Result<bool> {
        let n = self
            .tx
            .execute("DELETE FROM quarantine WHERE agent = $1", &[&agent])
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    fn append(&mut self, event: &Event) -> Result<u64> {
        let event = ops::leaf_event(event);
        let index = self.next_event;
        self.exec(
            "INSERT INTO events (idx, body) VALUES ($1, $2)",
            &[&to_i64(index)?, &enc(event.as_ref())?],
        )
        .map_err(pg_err)?;
        for node in self.tree.append(leaf_hash(&event.leaf_bytes())) {
            let level = i32::try_from(node.level).map_err(|_| Error::internal("log level"))?;
            self.exec(
                "INSERT INTO tlog_nodes (level, idx, hash) VALUES ($1, $2, $3)",
                &[&level, &to_i64(node.index)?, &node.hash.as_slice()],
            )
            .map_err(pg_err)?;
        }
        self.next_event += 1;
        Ok(index)
    }
}
