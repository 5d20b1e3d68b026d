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

fn one(format: &str, v: &Value) -> Result<()> {
    let name = text(v, "name")?;
    match format {
        "statements" => {
            let fields = verify_statement(
                text(v, "type")?,
                &unhex(text(v, "statement")?, "statement")?,
                &unhex(text(v, "signature")?, "signature")?,
                &unhex(text(v, "signer")?, "signer")?,
            )?;
            same(name, "field list", &fields, v.get("fields"))
        }
        "wire" => {
            let msg = decode_wire_frame(text(v, "kind")?, &unhex(text(v, "frame")?, "frame")?)?;
            same(name, "message", &msg, v.get("message"))
        }
        "checkpoints" => {
            let keys: Vec<&str> = v
                .get("witnesses")
                .and_then(Value::as_array)
                .map(|ws| ws.iter().filter_map(|w| w.get("key")?.as_str()).collect())
                .unwrap_or_default();
            let got = verify_checkpoint(text(v, "note")?, text(v, "log_key")?, &keys)?;
            for field in ["origin", "size", "root", "witnesses"] {
                same(name, field, &got[field], v.get(field))?;
            }
            Ok(())
        }
        "receipts" => {
            let authority = VerifierKey::parse(text(v, "authority")?)?;
            let log = VerifierKey::parse(text(v, "log_key")?)?;
            let witnesses = v
                .get("witnesses")
                .and_then(Value::as_array)
                .map(|ws| {
                    ws.iter()
                        .filter_map(Value::as_str)
                        .map(CosignerKey::parse)
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default();
            let quorum = v.get("quorum").and_then(Value::as_u64).map(|q| q as usize);
            let policy = (!witnesses.is_empty())
                .then(|| WitnessPolicy::new(witnesses, quorum))
                .transpose()?;
            let file = ReceiptFile::from_json(text(v, "receipt_file")?.as_bytes())?;
            let verified = ReceiptVerifier::new(authority.key, log)
                .with_witnesses(policy)
                .verify(&file)?;
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
        }
        other => Err(Error::bad_input(format!("unknown vector format {other:?}"))),
    }
}

/// Checks every vector of a file's text: each valid one verifies to exactly what it says, each
/// invalid one fails. Returns how many were checked.
pub fn check(text_: &str) -> Result<usize> {
    let file: Value = serde_json::from_str(text_)
        .map_err(|e| Error::bad_input(format!("not a JSON vector file ({e})")))?;
    let format = text(&file, "format")?;
    let list = vectors(&file)?;
    for v in list {
        let name = text(v, "name")?;
        match (one(format, v), valid(v)) {
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
