//! The database schema, as numbered migrations applied at start (each once, in order, inside
//! one transaction under an advisory lock, so nodes starting together do not race). A database
//! whose schema is newer than this relay's is refused, never changed.

use super::pool::{pg_err, Conn};
use crate::error::{Error, Result};

/// The advisory lock key every schema change takes ("sealrelay schema").
const SCHEMA_LOCK: i64 = 0x5345_414c_5343_4845;

/// Migration `i + 1`. Text columns that order results use the "C" collation (byte order, as
/// the embedded store's keys do).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE dir_statements (
    revocation boolean NOT NULL,
    id text COLLATE "C" NOT NULL,
    serial bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (revocation, id, serial)
);
CREATE TABLE grants (
    grant_id bytea PRIMARY KEY,
    user_id text NOT NULL,
    agent text NOT NULL,
    open boolean NOT NULL,
    pending boolean NOT NULL,
    expires bigint NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX grants_open_by_agent ON grants (agent, grant_id) WHERE open;
CREATE INDEX grants_by_user ON grants (user_id, grant_id);
CREATE INDEX grants_pending ON grants (grant_id) WHERE pending;
CREATE INDEX grants_open_by_expiry ON grants (expires) WHERE open;
CREATE TABLE envelopes (
    envelope_id bytea PRIMARY KEY,
    user_id text NOT NULL,
    waiting boolean NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX envelopes_inbox ON envelopes (user_id, envelope_id) WHERE waiting;
CREATE TABLE inline_bodies (envelope_id bytea PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE deliveries (envelope_id bytea PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE usage (party text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE quarantine (agent text COLLATE "C" PRIMARY KEY, reason text NOT NULL);
CREATE TABLE events (idx bigint PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE tlog_nodes (
    level integer NOT NULL,
    idx bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
"#,
    r#"
CREATE TABLE blobs (
    envelope_id bytea PRIMARY KEY,
    complete boolean NOT NULL DEFAULT false,
    touched timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE blob_pieces (
    envelope_id bytea NOT NULL REFERENCES blobs ON DELETE CASCADE,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (envelope_id, seq)
);
-- Ciphertext does not compress: stored out of line without trying.
ALTER TABLE blob_pieces ALTER COLUMN data SET STORAGE EXTERNAL;
"#,
    r#"
CREATE TABLE monitor_signals (
    id bigserial PRIMARY KEY,
    agent text NOT NULL,
    signal text NOT NULL,
    claimant text,
    at bigint NOT NULL
);
CREATE INDEX monitor_signals_by_agent ON monitor_signals (agent, signal, at);
CREATE INDEX monitor_signals_by_time ON monitor_signals (at);
"#,
    r#"
CREATE TABLE dir_log (
    idx bigint PRIMARY KEY,
    leaf bytea NOT NULL
);
"#,
    r#"
CREATE TABLE assignments (
    grant_id bytea PRIMARY KEY,
    source text COLLATE "C" NOT NULL,
    queued boolean NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX assignments_queued_by_source ON assignments (source, grant_id) WHERE queued;
"#,
];

/// Brings the schema up to this relay's version.
pub fn migrate(conn: &mut Conn) -> Result<()> {
    let mut tx = conn.client.transaction().map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sealrelay_schema (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())",
    )
    .map_err(pg_err)?;
    let current: Option<i32> = tx
        .query_one("SELECT max(version) FROM sealrelay_schema", &[])
        .map_err(pg_err)?
        .get(0);
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(Error::conflict(format!(
            "the database's schema is version {current}, newer than this relay's {}: run the newer relay, or a database of this version",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.batch_execute(sql).map_err(pg_err)?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO sealrelay_schema (version) VALUES ($1)",
            &[&version],
        )
        .map_err(pg_err)?;
        tracing::info!(version, "database schema migrated");
    }
    tx.commit().map_err(pg_err)
}
