//! The C2SP `tlog-witness` protocol without I/O: the `add-checkpoint` request body, and the
//! witness's decision on it given the logs it knows and the latest checkpoint it cosigned for
//! the origin. The HTTP server (`crate::witness`) persists the new state before it answers.
//!
//! ```text
//! old <size>\n
//! <consistency proof hash, base64>\n   (0 to 63 lines)
//! \n
//! <signed checkpoint note>
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::checkpoint::{parse_decimal, Checkpoint, Note, MAX_CHECKPOINT_LEN};
use super::{verify_consistency, Hash};
use crate::core::sign::VerifierKey;

/// Most consistency-proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;
/// Largest request body a witness reads.
pub const MAX_REQUEST_LEN: usize = 8 + 21 + MAX_PROOF_LINES * 45 + 1 + MAX_CHECKPOINT_LEN;
/// The content type of a 409 answer's body (the witness's latest size and a newline).
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An `add-checkpoint` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, as sent.
    pub note: String,
}

/// Why a witness refuses to cosign, with the HTTP status the protocol gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the body is malformed, or the old size is above the checkpoint's.
    BadRequest(String),
    /// 403: no signature verifies under the log's key.
    Forbidden(String),
    /// 404: the witness does not know this origin.
    UnknownLog(String),
    /// 409: the old size is not the latest size this witness cosigned (given), or the same
    /// size with another root.
    Conflict { latest: u64, why: String },
    /// 422: the consistency proof does not verify.
    Unprocessable(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::Unprocessable(_) => 422,
        }
    }
    /// The response body: the latest size for a 409 (as the protocol requires), otherwise
    /// one line that says what was wrong.
    pub fn body(&self) -> String {
        match self {
            Refusal::Conflict { latest, .. } => format!("{latest}\n"),
            Refusal::BadRequest(w)
            | Refusal::Forbidden(w)
            | Refusal::UnknownLog(w)
            | Refusal::Unprocessable(w) => format!("{w}\n"),
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Conflict { why, .. } => why,
            Refusal::BadRequest(w)
            | Refusal::Forbidden(w)
            | Refusal::UnknownLog(w)
            | Refusal::Unprocessable(w) => w,
        }
    }
}

impl AddCheckpoint {
    /// The request body.
    pub fn encode(&self) -> String {
        let mut s = format!("old {}\n", self.old_size);
        for h in &self.proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.note);
        s
    }

    /// Parses a request body strictly.
    pub fn parse(body: &[u8]) -> Result<Self, Refusal> {
        let bad = |why: &str| Refusal::BadRequest(format!("add-checkpoint: {why}"));
        if body.len() > MAX_REQUEST_LEN {
            return Err(bad("request too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
        let (first, mut rest) = text
            .split_once('\n')
            .ok_or_else(|| bad("no old size line"))?;
        let old_size = first
            .strip_prefix("old ")
            .and_then(parse_decimal)
            .ok_or_else(|| bad("the first line must be `old <size>` in canonical decimal"))?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = rest
                .split_once('\n')
                .ok_or_else(|| bad("no empty line before the checkpoint"))?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let h: Hash = B64
                .decode(line)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("a proof line is not a 32-byte hash in base64"))?;
            proof.push(h);
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            note: rest.to_owned(),
        })
    }
}

/// The origin a note names (its first line), if it has one.
pub fn origin_of(note: &str) -> Option<&str> {
    note.split_once('\n')
        .map(|(o, _)| o)
        .filter(|o| !o.is_empty())
}

/// The witness's decision. `log` is the key it trusts for the request's origin (`None`: an
/// unknown log); `latest` the checkpoint it last cosigned for that origin. On success the
/// caller must persist the returned checkpoint as the new latest before cosigning it.
pub fn decide(
    req: &AddCheckpoint,
    log: Option<&VerifierKey>,
    latest: Option<&Checkpoint>,
) -> Result<Checkpoint, Refusal> {
    let origin = origin_of(&req.note).unwrap_or_default();
    let Some(log) = log else {
        return Err(Refusal::UnknownLog(format!(
            "this witness does not witness the log {origin:?}"
        )));
    };
    let note = Note::split(&req.note).map_err(|e| Refusal::BadRequest(e.message().to_owned()))?;
    Checkpoint::parse_text(note.text).map_err(|e| Refusal::BadRequest(e.message().to_owned()))?;
    let cp = Checkpoint::verify(&req.note, log)
        .map_err(|e| Refusal::Forbidden(e.message().to_owned()))?;
    if req.old_size > cp.size {
        return Err(Refusal::BadRequest(format!(
            "the old size {} is above the checkpoint's size {}",
            req.old_size, cp.size
        )));
    }
    let latest_size = latest.map_or(0, |l| l.size);
    if req.old_size != latest_size {
        return Err(Refusal::Conflict {
            latest: latest_size,
            why: format!(
                "the old size {} is not the size {latest_size} this witness last cosigned",
                req.old_size
            ),
        });
    }
    if req.old_size == 0 && !req.proof.is_empty() {
        return Err(Refusal::BadRequest(
            "the consistency proof must be empty when the old size is 0".into(),
        ));
    }
    match latest {
        Some(l) if l.size == cp.size => {
            if l.root != cp.root {
                return Err(Refusal::Conflict {
                    latest: l.size,
                    why: format!(
                        "this witness cosigned another tree of size {}: a fork",
                        l.size
                    ),
                });
            }
            if !req.proof.is_empty() {
                return Err(Refusal::Unprocessable(
                    "the consistency proof between equal trees must be empty".into(),
                ));
            }
        }
        // From the empty tree every tree is an extension (the proof is empty, checked above).
        Some(l) if l.size == 0 => {}
        Some(l) => {
            verify_consistency(l.size, cp.size, &req.proof, &l.root, &cp.root).map_err(|e| {
                Refusal::Unprocessable(format!(
                    "the checkpoint of size {} is not an extension of the one of size {} this witness cosigned ({e})",
                    cp.size, l.size
                ))
            })?;
        }
        None => {}
    }
    Ok(cp)
}

#[cfg(test)]
mod tests;
