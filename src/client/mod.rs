//! The client library the CLI, the demo and the tests use: [`UserClient`], [`AgentClient`] and
//! [`AdminClient`] over one mutually authenticated QUIC [`Connection`] each.
//!
//! Clients trust nothing the relay says about keys: every directory entry the relay hands over
//! is verified against the authority key pinned in the caller's identity before it is used
//! (`verify.rs`).

mod admin;
mod agent;
mod connection;
mod fetch;
mod header;
mod user;
mod verify;

pub use admin::AdminClient;
pub use agent::{seal_for, AgentClient, Sealed, SubmissionStatus};
pub use connection::{connection_error, Connection, CONNECT_TIMEOUT};
pub use fetch::Fetched;
pub use header::{describe, EnvelopeHeader, HeaderJson};
pub use user::{GrantRequest, MyGrant, UserClient};
pub use verify::{authority, OpenGrant, SerialPins};

use crate::core::wire::Reply;
use crate::error::Error;

fn unexpected(reply: &Reply) -> Error {
    Error::internal(format!("unexpected reply from the relay: {reply:?}"))
}

/// Hex form of an id for display and the CLI.
pub fn id_hex(id: impl AsRef<[u8]>) -> String {
    crate::ids::hex(id)
}
