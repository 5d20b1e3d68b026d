//! sealrelay: an encrypted agent-to-user data relay.
//!
//! AI agents hand what they retrieved for a person to the relay, which keeps it only as an age
//! ciphertext sealed to that person's key, checks policy on every request, delivers only to the
//! verified requester, and logs signed delivery receipts in a transparency log.
//!
//! Layout (see `docs/ARCHITECTURE.md`):
//! * [`error`], [`ids`], [`clock`]: basics (one-line errors, typed ids, the `Clock`);
//! * [`core`]: the I/O-free core (signing format, directory, identities, PKI, envelopes, the
//!   wire protocol, the store trait and the grant rules, policy, the Merkle log);
//! * [`net`]: QUIC and TLS configuration, peer identity, frame I/O; loopback listeners and
//!   tokens for the local HTTP surfaces;
//! * [`store`]: the embedded redb store, the PostgreSQL store, blob files, and the write
//!   operations both apply;
//! * [`server`]: the relay, in three rooms: the shell (sockets, tasks, processes, timers), the
//!   request handlers, and the services (the relay's state);
//! * [`client`]: the user, agent and admin clients, and the operations every surface shares
//!   (`deliver`, `UserClient::fetch_to`);
//! * [`connect`]: connectors (HTTP, files, commands) and the one process runner;
//! * [`mcp`], [`ui`]: the MCP server for LLM agents, the requester's web client;
//! * [`local`]: files on this machine (identity files, the trust root, the admin's directory);
//! * [`witness`]: the C2SP tlog-witness server that cosigns consistent checkpoints.

pub mod client;
pub mod clock;
pub mod connect;
pub mod core;
pub mod error;
pub mod ids;
pub mod local;
pub mod mcp;
pub mod net;
pub mod prover;
pub mod server;
pub mod source;
pub mod store;
pub mod text;
pub mod ui;
pub mod witness;

pub use error::{Error, ErrorKind, Result};
