//! Large ciphertexts in PostgreSQL, so every node serves every envelope: a blob is a row of
//! `blobs` and its pieces (at most [`PIECE`] bytes each) rows of `blob_pieces`, written one
//! piece per statement as the upload arrives and read back one piece per statement.
//!
//! Durability: pieces are inserted with `synchronous_commit` off (no WAL flush per piece); the
//! commit of the blob (marking it complete) is synchronous, and a synchronous commit flushes
//! the WAL up to its own record, which includes every piece inserted before it. Only then is the
//! envelope record that names the blob committed.
//!
//! Leftovers: a refused upload's pieces are deleted when its writer drops (before the refusal is
//! answered); an envelope's blob goes in the transaction that deletes the envelope
//! (`write.rs`); what a crash leaves (a blob no envelope names) is swept once nothing has
//! touched it for [`ORPHAN_AGE_SECS`], so an upload running on another node is never swept.

use std::sync::Arc;

use super::pool::{pg_err, Pool};
use crate::core::store::Store;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::EnvelopeId;
use crate::store::blobs::{BlobReader, BlobStore, BlobWriter, PIECE};

/// A blob that no envelope names and that nothing wrote for this long is a leftover. Far
/// longer than any upload can pause between pieces (the relay's body deadlines cut a stalled
/// upload off within seconds to minutes).
pub const ORPHAN_AGE_SECS: f64 = 3600.0;

#[derive(Clone)]
pub struct PgBlobs {
    pool: Arc<Pool>,
}

impl PgBlobs {
    pub(super) fn new(pool: Arc<Pool>) -> Self {
        PgBlobs { pool }
    }

    fn sweep(&self, age_secs: f64) -> Result<usize> {
        self.pool.run(move |conn, _| {
            let n = conn
                .client
                .execute(
                    "DELETE FROM blobs b WHERE b.touched < now() - make_interval(secs => $1) \
                     AND NOT EXISTS (SELECT 1 FROM envelopes e WHERE e.envelope_id = b.envelope_id)",
                    &[&age_secs],
                )
                .map_err(pg_err)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

struct PgWriter {
    pool: Arc<Pool>,
    id: Vec<u8>,
    seq: i32,
    done: bool,
}

struct PgReader {
    pool: Arc<Pool>,
    id: Vec<u8>,
    seq: i32,
}

impl BlobStore for PgBlobs {
    fn create(&self, id: &EnvelopeId) -> Result<Box<dyn BlobWriter>> {
        let key = id.as_slice().to_vec();
        let k = key.clone();
        self.pool.run(move |conn, _| {
            let mut tx = conn.client.transaction().map_err(pg_err)?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(pg_err)?;
            // A retried call after a lost answer finds its own row: start it again.
            tx.execute("DELETE FROM blobs WHERE envelope_id = $1", &[&k])
                .map_err(pg_err)?;
            tx.execute("INSERT INTO blobs (envelope_id) VALUES ($1)", &[&k])
                .map_err(pg_err)?;
            tx.commit().map_err(pg_err)
        })?;
        Ok(Box::new(PgWriter {
            pool: self.pool.clone(),
            id: key,
            seq: 0,
            done: false,
        }))
    }

    fn open(&self, id: &EnvelopeId) -> Result<Option<Box<dyn BlobReader>>> {
        let key = id.as_slice().to_vec();
        let k = key.clone();
        let complete = self.pool.run(move |conn, _| {
            let row = conn
                .client
                .query_opt("SELECT complete FROM blobs WHERE envelope_id = $1", &[&k])
                .map_err(pg_err)?;
            Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
        })?;
        Ok(complete.then(|| {
            Box::new(PgReader {
                pool: self.pool.clone(),
                id: key,
                seq: 0,
            }) as Box<dyn BlobReader>
        }))
    }

    fn remove(&self, id: &EnvelopeId) {
        delete(&self.pool, id.as_slice().to_vec());
    }

    fn sweep_at_start(&self, _store: &dyn Store) -> Result<usize> {
        self.sweep(ORPHAN_AGE_SECS)
    }

    fn sweep_idle(&self) -> Result<usize> {
        self.sweep(ORPHAN_AGE_SECS)
    }
}

impl BlobWriter for PgWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > PIECE {
            return Err(Error::internal("a blob piece over the piece size"));
        }
        let (id, seq, data) = (self.id.clone(), self.seq, bytes.to_vec());
        self.pool.run(move |conn, _| {
            let mut tx = conn.client.transaction().map_err(pg_err)?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(pg_err)?;
            // The blob first: a swept upload is told so (its pieces would have no blob).
            let touch = conn
                .statements
                .get(
                    &mut tx,
                    "UPDATE blobs SET touched = now() WHERE envelope_id = $1",
                )
                .map_err(pg_err)?;
            let touched = tx.execute(&touch, &[&id]).map_err(pg_err)?;
            if touched != 1 {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "the upload's stored pieces were swept; send it again",
                ));
            }
            // Idempotent, for a call sent again after a lost answer.
            let insert = conn
                .statements
                .get(
                    &mut tx,
                    "INSERT INTO blob_pieces (envelope_id, seq, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (envelope_id, seq) DO UPDATE SET data = EXCLUDED.data",
                )
                .map_err(pg_err)?;
            tx.execute(&insert, &[&id, &seq, &data]).map_err(pg_err)?;
            tx.commit().map_err(pg_err)
        })?;
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| Error::bad_input("a blob of too many pieces"))?;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let id = self.id.clone();
        self.pool.run(move |conn, _| {
            let mut tx = conn.client.transaction().map_err(pg_err)?;
            // Flushes the WAL through this record: every piece before it is durable too.
            tx.batch_execute("SET LOCAL synchronous_commit = on")
                .map_err(pg_err)?;
            let n = tx
                .execute(
                    "UPDATE blobs SET complete = true, touched = now() WHERE envelope_id = $1",
                    &[&id],
                )
                .map_err(pg_err)?;
            if n != 1 {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "the upload's stored pieces were swept; send it again",
                ));
            }
            tx.commit().map_err(pg_err)
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        if !self.done {
            // A refused or broken upload: its pieces go before the refusal is answered.
            delete(&self.pool, self.id.clone());
        }
    }
}

/// Deletes a blob and its pieces; a failure is logged, and the idle sweep removes it later.
fn delete(pool: &Pool, key: Vec<u8>) {
    let deleted = pool.run(move |conn, _| {
        conn.client
            .execute("DELETE FROM blobs WHERE envelope_id = $1", &[&key])
            .map_err(pg_err)
    });
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "cannot delete a blob");
    }
}

impl BlobReader for PgReader {
    fn read(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let (id, seq) = (self.id.clone(), self.seq);
        let piece = self.pool.run(move |conn, _| {
            let st = conn
                .statements
                .get(
                    &mut conn.client,
                    "SELECT data FROM blob_pieces WHERE envelope_id = $1 AND seq = $2",
                )
                .map_err(pg_err)?;
            let row = conn.client.query_opt(&st, &[&id, &seq]).map_err(pg_err)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })?;
        buf.clear();
        if let Some(piece) = piece {
            *buf = piece;
            self.seq = self.seq.saturating_add(1);
        }
        Ok(())
    }

    fn seek_piece(&mut self, index: u64) -> Result<()> {
        self.seq = i32::try_from(index).map_err(|_| Error::bad_input("a piece past any blob"))?;
        Ok(())
    }

    /// The ciphertext's pieces are whole but the last, one row each: what follows starts at
    /// the row after them.
    fn trailer(&mut self, length: u64, max: usize) -> Result<Vec<u8>> {
        let first = i32::try_from(crate::core::envelope::pieces::count(length))
            .map_err(|_| Error::bad_input("a blob of too many pieces"))?;
        let id = self.id.clone();
        // Rows enough for `max + 1` bytes, no more.
        let rows_max = i64::try_from(max / PIECE + 2).unwrap_or(i64::MAX);
        let rows = self.pool.run(move |conn, _| {
            let rows = conn
                .client
                .query(
                    "SELECT data FROM blob_pieces WHERE envelope_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                    &[&id, &first, &rows_max],
                )
                .map_err(pg_err)?;
            Ok(rows
                .into_iter()
                .map(|r| r.get::<_, Vec<u8>>(0))
                .collect::<Vec<_>>())
        })?;
        let mut out = rows.concat();
        out.truncate(max.saturating_add(1));
        self.seq = 0;
        Ok(out)
    }
}
