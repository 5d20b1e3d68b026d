//! Checks a vector file as the relay and its clients verify what it describes.

use serde_json::Value;

use super::{field_json, text, unhex};
use crate::core::codec::traced;
use crate::core::directory::{DirectoryEntry, EnrollmentRequest, Revocation};
use crate::core::dispatch::{Dispatch, SourceRefusal, SourceSubmission};
use crate::core::envelope::submission::Submission;
use crate::core::grant::{Approval, Denial, Grant, Receipt};
use crate::core::keylog::{KeyRotation, ResetApproval};
use crate::core::receipt_file::{ReceiptFile, ReceiptVerifier};
use crate::core::sign::{PublicKey, StatementType, VerifierKey};
use crate::core::tlog::checkpoint::Checkpoint;
use crate::core::tlog::cosignature::{self, CosignerKey, WitnessPolicy};
use crate::core::wire::{decode_frame, encode_frame, frame_len, RequestFrame, Response};
use crate::error::{Error, Result};

/// Decodes `bytes` as a statement of type `ty` and encodes it again, recording its fields.
pub fn reencode(ty: StatementType, bytes: &[u8]) -> Result<(Vec<u8>, Value)> {
    macro_rules! again {
        ($t:ty) => {{
            let s = <$t>::decode(bytes)?;
            traced(|| s.encode())
        }};
    }
    let (out, fields) = match ty {
        StatementType::EnrollmentRequest => again!(EnrollmentRequest),
        StatementType::DirectoryEntry => again!(DirectoryEntry),
        StatementType::Revocation => again!(Revocation),
        StatementType::Grant => again!(Grant),
        StatementType::Approval => again!(Approval),
        StatementType::Submission => again!(Submission),
        StatementType::Receipt => again!(Receipt),
        StatementType::Denial => again!(Denial),
        StatementType::KeyRotation => again!(KeyRotation),
        StatementType::ResetApproval => again!(ResetApproval),
        StatementType::Dispatch => again!(Dispatch),
        StatementType::SourceSubmission => again!(SourceSubmission),
        StatementType::SourceRefusal => again!(SourceRefusal),
    };
    Ok((out, Value::Array(fields.iter().map(field_json).collect())))
}

/// Verifies a signed statement as every party does (the signer's key under strict Ed25519,
/// then the type's own decoding) and returns its fields as the vectors list them.
pub fn verify_statement(
    tag: &str,
    statement: &[u8],
    signature: &[u8],
    signer: &[u8],
) -> Result<Value> {
    let ty = StatementType::from_tag(tag)?;
    let key = PublicKey::from_slice(signer)?;
    key.verify_strict(statement, signature)
        .map_err(|e| Error::verification(format!("{tag} statement: {e}")))?;
    let (again, fields) = reencode(ty, statement)?;
    if again != statement {
        return Err(Error::verification(format!(
            "{tag} statement: not in canonical form"
        )));
    }
    Ok(fields)
}

/// Decodes a protocol frame (`kind`: `request` or `response`) strictly, and returns the
/// message as serde's JSON; the frame must be exactly what encoding that message gives.
pub fn decode_wire_frame(kind: &str, frame: &[u8]) -> Result<Value> {
    let prefix: [u8; 4] = frame
        .get(..4)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| Error::bad_input("a frame is at least its 4-byte length"))?;
    if frame_len(prefix)? != frame.len() - 4 {
        return Err(Error::bad_input(
            "the frame's length prefix does not match its body",
        ));
    }
    let body = &frame[4..];
    let (json, again) = match kind {
        "request" => {
            let m: RequestFrame = decode_frame(body)?;
            (serde_json::to_value(&m), encode_frame(&m)?)
        }
        "response" => {
            let m: Response = decode_frame(body)?;
            (serde_json::to_value(&m), encode_frame(&m)?)
        }
        other => {
            return Err(Error::bad_input(format!(
                "a frame is a request or a response, not {other:?}"
            )))
        }
    };
    if again != frame {
        return Err(Error::bad_input("the frame is not in canonical form"));
    }
    json.map_err(|e| Error::internal(e.to_string()))
}

/// Verifies a checkpoint note under `log_key` and each witness key: origin, size, base64
/// root and each witness's cosignature time.
pub fn verify_checkpoint(note: &str, log_key: &str, witnesses: &[&str]) -> Result<Value> {
    let vk = VerifierKey::parse(log_key)?;
    let cp = Checkpoint::verify(note, &vk)?;
    let mut times = Vec::new();
    for w in witnesses {
        let who = CosignerKey::parse(w)?;
        let time = cosignature::verify(note, &who)?.ok_or_else(|| {
            Error::verification(format!("no cosignature by witness {}", who.name))
        })?;
        times.push(serde_json::json!({ "key": w, "time": time }));
    }
    use base64::Engine as _;
    Ok(serde_json::json!({
        "origin": cp.origin,
        "size": cp.size,
        "root": base64::engine::general_purpose::STANDARD.encode(cp.root),
        "witnesses": times,
    }))
}

fn vectors(file: &Value) -> Result<&Vec<Value>> {
    if file.get("sealrelay_vectors").and_then(Value::as_u64) != Some(1) {
        return Err(Error::bad_input("not a sealrelay vector file (version 1)"));
    }
    file.get("vectors")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::bad_input("a vector file has a list of vectors"))
}

fn valid(v: &Value) -> bool {
    v.get("valid").and_then(Value::as_bool).unwrap_or(true)
}

fn same(name: &str, what: &str, got: &Value, want: Option<&Value>) -> Result<()> {
    if Some(got) != want {
        return Err(Error::verification(format!(
            "vector {name}: the {what} is {got}, not what the vector says"
        )));
    }
    Ok(())
}

fn strings<'a>(v: &'a Value, key: &str) -> Result<Vec<&'a str>> {
    match v.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| Error::bad_input(format!("a vector's {key} are not all text")))
            })
            .collect(),
        Some(_) => Err(Error::bad_input(format!("a vector's {key} is not a list"))),
    }
}

/// One vector: `Err` if it is malformed (a missing key, bad hex, an unknown type or kind: a
/// file that says nothing checkable), else what verifying it gave.
fn one(format: &str, v: &Value) -> Result<Result<()>> {
    let name = text(v, "name")?;
    Ok(match format {
        "statements" => {
            let tag = text(v, "type")?;
            StatementType::from_tag(tag)?;
            let statement = unhex(text(v, "statement")?, "statement")?;
            let signature = unhex(text(v, "signature")?, "signature")?;
            let signer = unhex(text(v, "signer")?, "signer")?;
            verify_statement(tag, &statement, &signature, &signer)
                .and_then(|fields| same(name, "field list", &fields, v.get("fields")))
        }
        "wire" => {
            let kind = text(v, "kind")?;
            if kind != "request" && kind != "response" {
                return Err(Error::bad_input(format!("vector {name}: kind {kind:?}")));
            }
            let frame = unhex(text(v, "frame")?, "frame")?;
            decode_wire_frame(kind, &frame)
                .and_then(|msg| same(name, "message", &msg, v.get("message")))
        }
        "checkpoints" => {
            let note = text(v, "note")?;
            let log_key = text(v, "log_key")?;
            VerifierKey::parse(log_key)?;
            let keys: Vec<&str> = match v.get("witnesses") {
                None => Vec::new(),
                Some(Value::Array(ws)) => ws
                    .iter()
                    .map(|w| {
                        w.get("key").and_then(Value::as_str).ok_or_else(|| {
                            Error::bad_input(format!("vector {name}: a witness without a key"))
                        })
                    })
                    .collect::<Result<_>>()?,
                Some(_) => return Err(Error::bad_input(format!("vector {name}: witnesses"))),
            };
            for k in &keys {
                CosignerKey::parse(k)?;
            }
            verify_checkpoint(note, log_key, &keys).and_then(|got| {
                ["origin", "size", "root", "witnesses"]
                    .iter()
                    .try_for_each(|f| same(name, f, &got[*f], v.get(*f)))
            })
        }
        "receipts" => {
            let authority = VerifierKey::parse(text(v, "authority")?)?;
            let log = VerifierKey::parse(text(v, "log_key")?)?;
            let witnesses = strings(v, "witnesses")?
                .into_iter()
                .map(CosignerKey::parse)
                .collect::<Result<Vec<_>>>()?;
            let quorum = match v.get("quorum") {
                None => None,
                Some(q) => Some(
                    q.as_u64()
                        .and_then(|q| usize::try_from(q).ok())
                        .ok_or_else(|| Error::bad_input(format!("vector {name}: quorum")))?,
                ),
            };
            if quorum.is_some() && witnesses.is_empty() {
                return Err(Error::bad_input(format!(
                    "vector {name}: a quorum without witnesses"
                )));
            }
            let policy = (!witnesses.is_empty())
                .then(|| WitnessPolicy::new(witnesses, quorum))
                .transpose()?;
            let receipt_file = text(v, "receipt_file")?;
            ReceiptFile::from_json(receipt_file.as_bytes())
                .and_then(|file| ReceiptVerifier::new(authority.key, log).with_witnesses(policy).verify(&file))
                .and_then(|verified| {
                    let r = &verified.receipt;
                    let got = serde_json::json!({
                        "envelope_id": r.envelope_id.to_hex(),
                        "grant_id": r.grant_id.to_hex(),
                        "status": r.status.as_str(),
                        "user": r.user.to_string(),
                        "agent": r.agent.to_string(),
                        "time": r.time,
                        "leaf_index": verified.leaf_index,
                        "checkpoint_size": verified.checkpoint.size,
                        "checkpoint_origin": verified.checkpoint.origin,
                        "witnessed_by": verified.witnessed_by.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                    });
                    same(name, "verified receipt", &got, v.get("expected"))
                })
        }
        other => return Err(Error::bad_input(format!("unknown vector format {other:?}"))),
    })
}

/// Checks every vector of the file `file_name` (e.g. `statements.json`, whose `format` must be
/// `statements`): each valid one verifies to exactly what it says, each invalid one is
/// well-formed and fails. Returns how many were checked (at least one).
pub fn check(file_name: &str, text_: &str) -> Result<usize> {
    let file: Value = serde_json::from_str(text_)
        .map_err(|e| Error::bad_input(format!("not a JSON vector file ({e})")))?;
    let format = text(&file, "format")?;
    if file_name.strip_suffix(".json") != Some(format) {
        return Err(Error::bad_input(format!(
            "{file_name} holds {format} vectors, not {}",
            file_name.trim_end_matches(".json")
        )));
    }
    let list = vectors(&file)?;
    if list.is_empty() {
        return Err(Error::bad_input(format!("{file_name} holds no vectors")));
    }
    for v in list {
        let name = text(v, "name")?;
        let outcome =
            one(format, v).map_err(|e| e.context(format!("vector {name} is malformed")))?;
        match (outcome, valid(v)) {
            (Ok(()), true) | (Err(_), false) => {}
            (Err(e), true) => {
                return Err(Error::verification(format!(
                    "vector {name}: {}",
                    e.message()
                )))
            }
            (Ok(()), false) => {
                return Err(Error::verification(format!(
                    "vector {name} must fail but verified"
                )))
            }
        }
    }
    Ok(list.len())
}
