//! The library's top-level error: every module's typed error folds into [`Error`], and
//! [`ErrorKind`] is the one place that classifies failures (the CLI maps kinds to exit codes,
//! the relay maps them to wire codes).
//!
//! Messages say what went wrong and what to do next. They never carry secret material.

use std::fmt;

/// Broad class of a failure; decides the process exit code (see `docs/cli.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A signature, chain, proof or binding check failed (exit 1).
    Verification,
    /// Input is malformed, of the wrong kind, unsafe (permissions) or expired (exit 3).
    BadInput,
    /// The operation would overwrite or duplicate something that exists (exit 4).
    Conflict,
    /// A file or directory could not be read or written (exit 5).
    Io,
    /// The relay, or a policy, refused the request (exit 6).
    Refused,
    /// The relay could not be reached or the connection failed (exit 7), or it answered
    /// "unavailable, try again" (retried alike, but a refusal: exit 6, [`Error::exit_code`]).
    Unavailable,
    /// Something that is not there (exit 8).
    NotFound,
    /// A key was enrolled under the person's name that their own keys did not make (exit 9:
    /// `keys watch`, `inbox`, `fetch`; docs/keys.md).
    KeyAlert,
    /// A bug or an unexpected internal state (exit 70).
    Internal,
}

impl ErrorKind {
    /// The process exit code documented for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Verification => 1,
            ErrorKind::BadInput => 3,
            ErrorKind::Conflict => 4,
            ErrorKind::Io => 5,
            ErrorKind::Refused => 6,
            ErrorKind::Unavailable => 7,
            ErrorKind::NotFound => 8,
            ErrorKind::KeyAlert => 9,
            ErrorKind::Internal => 70,
        }
    }
}

/// How every "the disk is full" error message starts (threat 38): clients and operators match
/// it, and the relay answers it as such instead of as a generic failure.
pub const STORAGE_FULL: &str = "storage full";

/// True when an I/O error's text is ENOSPC or EDQUOT (std and redb both show the OS error).
fn is_no_space(text: &str) -> bool {
    text.contains("(os error 28)") || text.contains("(os error 122)")
}

/// An error with its kind and a one-line, actionable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The relay answered with this refusal (a `Response::Err`), as opposed to a failure to
    /// reach it: see [`Error::exit_code`].
    answered: bool,
    /// The relay refused for now (rate limited, over a quota that frees as other work ends):
    /// how long it said to wait (see [`Error::retry_after`]).
    retry_after: Option<std::time::Duration>,
    /// For a refusal the relay answered: a fixed sentence naming its kind without the relay's
    /// words (see [`Error::for_model`]).
    fixed: Option<&'static str>,
}

impl Error {
    /// An error whose message is made safe to show ([`crate::text::one_line`]): a message
    /// carries text from outside (a relay's refusal, a library's error, a peer's words), and
    /// ends on a terminal, in a log or before an agent's model.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: shown(message.into()),
            answered: false,
            retry_after: None,
            fixed: None,
        }
    }
    /// A refusal the relay answered with. Its kind is the wire code's (so that "unavailable, try
    /// again" is still retried as [`ErrorKind::Unavailable`]); only its exit code differs.
    pub fn answered_by_relay(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: shown(message.into()),
            answered: true,
            retry_after: None,
            fixed: None,
        }
    }
    /// This refusal holds for now only: asking again after `wait` may succeed.
    pub fn retry_after_wait(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
    /// A refusal whose text, before a model, is `sentence` ([`Error::for_model`]).
    pub fn with_fixed_text(mut self, sentence: &'static str) -> Self {
        self.fixed = Some(sentence);
        self
    }
    /// The error as a model may read it (an MCP tool result, THREATS.md 50): a refusal the
    /// relay answered is its fixed sentence (and the wait it named), never the relay's own
    /// words, which a relay, a policy's error or another party's text chose; any other error
    /// is its message, built from fixed sentences and values the agent already had.
    pub fn for_model(&self) -> std::borrow::Cow<'_, str> {
        match (self.answered, self.fixed, self.retry_after) {
            (true, Some(sentence), Some(wait)) => {
                format!("{sentence} (try again in {} ms)", wait.as_millis()).into()
            }
            (true, Some(sentence), None) => sentence.into(),
            _ => self.message.as_str().into(),
        }
    }
    /// Whether the relay refused for now only (rate limited, a quota full for the moment), and
    /// how long it said to wait before asking again.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }
    /// Whether the relay refused this request in an answer to it (a `Response::Err`), as
    /// opposed to closing the whole connection (busy, shutting down) or not being reached.
    pub fn refused_this_request(&self) -> bool {
        self.answered && self.fixed.is_some()
    }
    /// Whether the relay answered with this refusal (it was reached).
    pub fn is_relay_answer(&self) -> bool {
        self.answered
    }
    /// The process exit code (`docs/cli.md`): the kind's, except that a relay that answered
    /// "unavailable, try again" refused the request (6, like every refusal by a relay that
    /// answered); 7 ("relay unreachable") is for a relay that could not be reached at all.
    pub fn exit_code(&self) -> i32 {
        if self.answered && self.kind == ErrorKind::Unavailable {
            ErrorKind::Refused.exit_code()
        } else {
            self.kind.exit_code()
        }
    }
    pub fn verification(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Verification, message)
    }
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }
    /// A failed write to storage: "storage full: …" when the disk or quota is full, else an
    /// I/O error. `what` says what was being done.
    pub fn storing(what: &str, e: impl std::fmt::Display) -> Self {
        let text = e.to_string();
        if is_no_space(&text) {
            Self::io(format!("{STORAGE_FULL}: {what}: {text}"))
        } else {
            Self::io(format!("{what}: {text}"))
        }
    }
    /// A write refused because the disk is (nearly) full.
    pub fn storage_full(detail: impl std::fmt::Display) -> Self {
        Self::io(format!("{STORAGE_FULL}: {detail}"))
    }
    /// Whether this error is a full disk (see [`Error::storing`]).
    pub fn is_storage_full(&self) -> bool {
        self.kind == ErrorKind::Io && self.message.starts_with(STORAGE_FULL)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefixes the message with where it happened (a file, an entry), keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: shown(format!("{what}: {}", self.message)),
            answered: self.answered,
            retry_after: self.retry_after,
            fixed: self.fixed,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, always, and nothing a terminal acts on: made so when the error was made.
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `message` as an error keeps it: unchanged when it is already safe to show (the usual case).
fn shown(message: String) -> String {
    if message
        .chars()
        .any(|c| c.is_control() || crate::text::is_deceptive_char(c))
    {
        crate::text::one_line(&message)
    } else {
        message
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to results whose error converts into [`Error`].
pub trait ResultExt<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_and_context_keeps_kind() {
        let e = Error::bad_input("line one\nline two").context("file x");
        assert_eq!(e.to_string(), "file x: line one line two");
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert_eq!(e.kind().exit_code(), 3);
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn a_relays_escape_sequences_never_reach_the_terminal() {
        // A hostile relay's answer: set the clipboard (OSC 52), move the cursor back over the
        // line and print a fake success, a C1 CSI, a bell, a tab, DEL.
        let e = Error::answered_by_relay(
            ErrorKind::Refused,
            "\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2K\rdelivered\u{9b}1m\tok\u{7f}",
        )
        .context("fetch");
        let shown = e.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "fetch:  ]52;c;ZXZpbA==  [2K delivered 1m ok ");
        // The message itself, as the MCP server and `agent run` show it, and text that reads
        // one way and means another (a right-to-left override, a zero-width space).
        assert_eq!(e.message(), shown);
        let e = Error::answered_by_relay(ErrorKind::Refused, "ok \u{202e}txt.exe\u{200b}");
        assert_eq!(e.message(), "ok ?txt.exe?");
    }

    #[test]
    fn a_relay_that_answered_unavailable_refused_and_one_not_reached_is_unreachable() {
        let answered = Error::answered_by_relay(ErrorKind::Unavailable, "try again").context("x");
        assert_eq!(answered.kind(), ErrorKind::Unavailable, "still retried");
        assert!(answered.is_relay_answer());
        assert_eq!(answered.exit_code(), 6);
        let unreachable = Error::new(ErrorKind::Unavailable, "no answer");
        assert!(!unreachable.is_relay_answer());
        assert_eq!(unreachable.exit_code(), 7);
        // Other answers keep their kind's code (not found 8, bad input 3, ...).
        let gone = Error::answered_by_relay(ErrorKind::NotFound, "gone");
        assert_eq!(gone.exit_code(), 8);
        let no = Error::answered_by_relay(ErrorKind::Refused, "no");
        assert_eq!(no.exit_code(), 6);
    }
}
