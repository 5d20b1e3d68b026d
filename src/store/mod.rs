//! Store implementations. [`redb::RedbStore`] is the embedded default: redb for state and the
//! event log, fsynced on every commit. Ciphertext blobs are files ([`blobs`]). [`write_ops`] holds
//! the write operations every store applies through its own tables. [`postgres::PgStore`] keeps
//! the same state in a PostgreSQL database (`store = "postgres://…"`).

pub mod blobs;
pub mod postgres;
pub mod redb;
pub mod write_ops;
