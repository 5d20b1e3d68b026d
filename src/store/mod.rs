//! Store implementations. [`redb::RedbStore`] is the embedded default: redb for state and the
//! event log, fsynced on every commit. Ciphertext blobs are files ([`blobs`]).

pub mod blobs;
pub mod redb;
