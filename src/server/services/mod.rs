//! The relay's services: its state and what keeps it. Nothing here starts a task, a thread or
//! a process (`tests/architecture.rs`), or reads or writes a socket (the open connections are
//! held in `connections` only to be closed); the shell drives the loops (the committer's, the
//! shared-state reload) and implements the effects handed to handlers.

pub mod checkpoints;
pub mod cluster;
pub mod committer;
pub mod config;
pub mod connections;
pub mod denials;
pub mod effects;
pub mod events;
pub mod expiry;
pub mod feeds;
pub mod health;
pub mod in_flight;
pub mod integrity;
pub mod loading;
pub mod metrics;
pub mod misbehaviour;
pub mod refusal;
pub mod relay;
pub mod uploads;
pub mod witnessed;
