//! The client library the CLI, the demo and the tests use: [`UserClient`], [`AgentClient`] and
//! [`AdminClient`] over one mutually authenticated QUIC [`Connection`] each.
//!
//! Each operation every surface shares is written once here: [`deliver()`] (seal once, submit,
//! submit again after a lost answer) for `send`, `agent run` and the MCP server, and
//! [`UserClient::fetch_to`] (fetch into a file, save the receipt beside it) for `fetch` and the
//! web client.
//!
//! Clients trust nothing the relay says about keys: every directory entry the relay hands over
//! is verified against the authority key pinned in the caller's identity before it is used
//! (`verify.rs`).

mod admin;
mod agent;
mod connection;
mod deliver;
mod dirlog;
mod dirmirror;
mod download;
mod feed;
mod fetch;
mod fetch_to;
pub mod files;
mod header;
pub mod keylog;
pub mod keywatch;
pub mod session;
mod source;
mod user;
mod verify;

pub use admin::AdminClient;
#[cfg(test)]
pub(crate) use agent::judge::judge_items;
pub use agent::{seal_for, seal_signed, AgentClient, Sealed, SubmissionStatus};
#[cfg(test)]
pub(crate) use connection::refused;
pub use connection::{connection_error, Connection, CONNECT_TIMEOUT};
pub use deliver::{
    command_env, deliver, Courier, Delivered, ForGrant, Plaintext, Retry, FIRST_WAIT, MAX_WAIT,
};
pub use feed::{FeedEvent, Followed, GrantFeed, InboxFeed};
pub use fetch::Fetched;
pub use fetch_to::{receipt_path, Destination, Saved};
pub use header::{describe, EnvelopeHeader, HeaderJson};
pub use source::{Assignment, Listed, SourceClient};
pub use user::{GrantRequest, MyGrant, UserClient};
pub use verify::{authority, OpenGrant, SerialPins};

use crate::core::wire::Reply;
use crate::error::Error;

/// A reply of the wrong kind, named by its kind only: its fields are the relay's words (and
/// may be large), which an error shows to a terminal or an agent's model.
fn unexpected(reply: &Reply) -> Error {
    let shown = format!("{reply:?}");
    let kind = shown
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("");
    Error::internal(format!("unexpected reply from the relay: {kind}"))
}

/// Hex form of an id for display and the CLI.
pub fn id_hex(id: impl AsRef<[u8]>) -> String {
    crate::ids::hex(id)
}
