//! Assignments: a grant an agent dispatched to a source (docs/sources.md), kept durably until
//! the source fills it (its envelope consumes the grant in the same transaction) or refuses it.

use serde::{Deserialize, Serialize};

use super::StoredSigned;
use crate::ids::{EnvelopeId, GrantId, SpiffeId};

/// Where an assignment is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentState {
    /// Waiting for its source (listed to it while the grant is open).
    Queued,
    /// The source's envelope consumed the grant.
    Filled { envelope_id: EnvelopeId },
    /// The source refused it (its signed refusal kept).
    Refused { refusal: StoredSigned },
    /// The grant expired before the source filled it.
    Lapsed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub grant_id: GrantId,
    pub source: SpiffeId,
    pub agent: SpiffeId,
    pub user: SpiffeId,
    /// The agent-signed dispatch (`core::dispatch::Dispatch`).
    pub dispatch: StoredSigned,
    pub dispatched_at: u64,
    pub state: AssignmentState,
}

impl AssignmentRecord {
    pub fn queued(&self) -> bool {
        self.state == AssignmentState::Queued
    }
}
