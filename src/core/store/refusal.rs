//! Why the store refused a write: [`WriteRefusal`], checked inside the transaction, and the
//! error each one is shown as.

use super::QuotaKind;
use crate::error::Error;

/// Why a write was refused by the store's own checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteRefusal {
    GrantNotFound,
    GrantUsed,
    GrantExpired,
    WrongAgent,
    TooLarge {
        max: u64,
    },
    EnvelopeNotFound,
    Duplicate,
    NotQuarantined,
    /// The grant awaits a second person's approval.
    NotApproved,
    /// The grant was dispatched to a source already (or, for a source, was not dispatched to
    /// it, or no longer waits for it).
    AlreadyDispatched,
    NotAssigned,
    /// The sweep asked to close a grant that has not expired.
    GrantNotExpired,
    /// A second person refused the grant.
    GrantDenied,
    /// An approval or denial for a grant that needs none.
    NotAwaitingApproval,
    /// The write would pass a quota.
    Quota {
        kind: QuotaKind,
        limit: u64,
    },
    /// The data directory is under its free-space reserve (`min_free_bytes`) and the write adds
    /// data: held back before the transaction, so nothing of it was written.
    StorageReserve,
    /// Another directory entry is stored for this party's serial (another admin's, pushed a
    /// moment before, perhaps through another node).
    DirectoryConflict {
        id: String,
        serial: u64,
    },
}

impl WriteRefusal {
    pub fn to_error(&self) -> Error {
        match self {
            WriteRefusal::GrantNotFound => Error::not_found("no such grant"),
            WriteRefusal::GrantUsed => {
                Error::conflict("the grant was already used (a grant serves one submission)")
            }
            WriteRefusal::GrantExpired => {
                Error::new(crate::ErrorKind::Refused, "the grant has expired")
            }
            WriteRefusal::WrongAgent => Error::not_found("no such grant"),
            WriteRefusal::TooLarge { max } => Error::bad_input(format!(
                "the envelope is larger than the grant's {max} bytes"
            )),
            WriteRefusal::EnvelopeNotFound => Error::not_found("no such envelope"),
            WriteRefusal::Duplicate => Error::conflict("already recorded"),
            WriteRefusal::NotQuarantined => Error::not_found("that agent is not quarantined"),
            WriteRefusal::GrantNotExpired => Error::conflict("the grant has not expired"),
            WriteRefusal::Quota { kind, limit } => Error::new(
                crate::ErrorKind::Refused,
                format!(
                    "quota reached: {} is {limit}; {} (or ask the relay's operator to raise it)",
                    kind.field(),
                    kind.advice()
                ),
            ),
            WriteRefusal::NotApproved => Error::new(
                crate::ErrorKind::Refused,
                "the grant awaits a second person's approval",
            ),
            WriteRefusal::GrantDenied => Error::new(
                crate::ErrorKind::Refused,
                "a second person denied the grant: it is closed",
            ),
            WriteRefusal::NotAwaitingApproval => Error::conflict("the grant needs no approval"),
            WriteRefusal::AlreadyDispatched => Error::conflict(
                "the grant was already dispatched to a source (a grant is dispatched once)",
            ),
            WriteRefusal::NotAssigned => Error::not_found("no such assignment"),
            WriteRefusal::StorageReserve => Error::storage_full(
                "the relay has no disk space left; nothing was stored, try again later",
            ),
            WriteRefusal::DirectoryConflict { id, serial } => Error::conflict(format!(
                "another entry for {id} serial {serial} is already in the relay's directory (another admin's, pushed first): nothing of this push was stored; this folder's entry for that serial lost the race: move it out of DIR/directory and enroll the party again, as its next serial"
            )),
        }
    }
}
