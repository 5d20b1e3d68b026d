//! What a handled request produced, for the shell to write.

use crate::core::wire::{EnvelopeView, Reply};

pub use crate::server::services::integrity::StoredBody;

/// What a request produced.
#[derive(Debug)]
pub enum Outcome {
    /// A reply frame, and nothing after it.
    Reply(Reply),
    /// `Reply::Envelope` followed by the ciphertext.
    Envelope {
        view: EnvelopeView,
        body: StoredBody,
    },
}
