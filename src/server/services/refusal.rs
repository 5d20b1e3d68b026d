//! The one place that turns an error into what the relay answers: a wire code and a one-line
//! message. I/O and internal details stay in the relay's log, never on the wire.

use crate::core::store::WriteRefusal;
use crate::core::wire::{ErrorCode, Reply};
use crate::error::{Error, ErrorKind};

/// An error as the relay answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// What a handler returns.
pub type Handled = Result<Reply, Refusal>;

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// "no such grant": also the answer for something that exists but is not the caller's.
    pub fn not_found(what: &str) -> Self {
        Refusal::new(ErrorCode::NotFound, format!("no such {what}"))
    }

    pub fn internal() -> Self {
        Refusal::new(ErrorCode::Internal, "internal error")
    }

    /// A store's refusal of a write (or the same rule checked before the write).
    pub fn from_write(r: &WriteRefusal) -> Self {
        let code = match r {
            WriteRefusal::GrantNotFound
            | WriteRefusal::WrongAgent
            | WriteRefusal::EnvelopeNotFound
            | WriteRefusal::NotQuarantined => ErrorCode::NotFound,
            WriteRefusal::GrantUsed | WriteRefusal::Duplicate | WriteRefusal::GrantNotExpired => {
                ErrorCode::Conflict
            }
            WriteRefusal::GrantExpired => ErrorCode::Expired,
            WriteRefusal::NotApproved | WriteRefusal::GrantDenied => ErrorCode::Forbidden,
            WriteRefusal::NotAwaitingApproval
            | WriteRefusal::AlreadyDispatched
            | WriteRefusal::DirectoryConflict { .. } => ErrorCode::Conflict,
            WriteRefusal::NotAssigned => ErrorCode::NotFound,
            WriteRefusal::Quota { .. } => ErrorCode::QuotaExceeded,
            WriteRefusal::TooLarge { .. } => ErrorCode::TooLarge,
            WriteRefusal::StorageReserve => ErrorCode::Unavailable,
        };
        Refusal::new(code, r.to_error().message())
    }
}

impl From<WriteRefusal> for Refusal {
    fn from(r: WriteRefusal) -> Self {
        Refusal::from_write(&r)
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        if e.is_storage_full() {
            tracing::error!(error = %e, "the data directory is full: writes are refused until space is freed");
            return Refusal::new(
                ErrorCode::Unavailable,
                "storage full: the relay has no disk space left; nothing was stored, try again later",
            );
        }
        let code = match e.kind() {
            ErrorKind::BadInput | ErrorKind::Verification => ErrorCode::BadRequest,
            ErrorKind::Conflict => ErrorCode::Conflict,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::Refused => ErrorCode::Forbidden,
            ErrorKind::Unavailable | ErrorKind::Io => ErrorCode::Unavailable,
            ErrorKind::Internal | ErrorKind::KeyAlert => ErrorCode::Internal,
        };
        let message = match code {
            ErrorCode::Unavailable if e.kind() == ErrorKind::Unavailable => {
                "unavailable, try again: the relay's database cannot be reached; nothing was done (a submission sent again is stored once)"
                    .to_owned()
            }
            ErrorCode::Unavailable => {
                "the relay could not complete the request durably: try again (a submission sent again is stored once)"
                    .to_owned()
            }
            ErrorCode::Internal => "internal error".to_owned(),
            _ => e.message().to_owned(),
        };
        if matches!(code, ErrorCode::Unavailable | ErrorCode::Internal) {
            tracing::error!(error = %e, "request failed");
        }
        Refusal { code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_internal_details_stay_off_the_wire() {
        let r = Refusal::from(Error::io("disk /srv/secret-path failed"));
        assert_eq!(r.code, ErrorCode::Unavailable);
        assert!(!r.message.contains("secret-path"), "{}", r.message);
        let r = Refusal::from(Error::internal("lock poisoned at x.rs:3"));
        assert_eq!(r, Refusal::internal());
        let r = Refusal::from(Error::bad_input("the grant is malformed"));
        assert_eq!(r.code, ErrorCode::BadRequest);
        assert_eq!(r.message, "the grant is malformed");
    }

    #[test]
    fn store_refusals_keep_their_meaning() {
        assert_eq!(
            Refusal::from(WriteRefusal::GrantUsed).code,
            ErrorCode::Conflict
        );
        assert_eq!(
            Refusal::from(WriteRefusal::WrongAgent),
            Refusal::not_found("grant")
        );
        assert_eq!(
            Refusal::from(WriteRefusal::GrantExpired).code,
            ErrorCode::Expired
        );
    }
}
