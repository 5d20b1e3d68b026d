//! `wire.json`: protocol frames (docs/protocol.md), requests and responses byte for byte, and two
//! frames that must be refused.

use serde_json::{json, Value};

use crate::core::envelope::submission::Submission;
use crate::core::grant::{Grant, Receipt};
use crate::core::sign::SigningKey;
use crate::core::wire::{
    encode_frame, ErrorCode, Page, Reply, Request, RequestFrame, Response, WireSigned,
    PROTOCOL_VERSION,
};
use crate::error::{Error, Result};
use crate::ids::{hex, EnvelopeId};

fn frame<T: serde::Serialize>(name: &str, kind: &str, msg: &T) -> Result<Value> {
    Ok(json!({
        "name": name,
        "kind": kind,
        "frame": hex(encode_frame(msg)?),
        "message": serde_json::to_value(msg).map_err(|e| Error::internal(e.to_string()))?,
    }))
}

/// The frames, from the grant and receipt of the statement vectors, the grant's user's key
/// (`alice`) and its agent's (`bot`).
pub(super) fn wire(
    g: &Grant,
    receipt: &Receipt,
    alice: &SigningKey,
    bot: &SigningKey,
) -> Result<Vec<Value>> {
    let req = |request| RequestFrame {
        version: PROTOCOL_VERSION,
        request,
    };
    let receipt = WireSigned::from_signed(&receipt.sign(alice));
    let mut out = vec![
        frame(
            "get-checkpoint",
            "request",
            &req(Request::GetCheckpoint { old_size: Some(5) }),
        )?,
        frame(
            "list-grants",
            "request",
            &req(Request::ListGrants {
                page: Page::first(),
                dir_size: None,
            }),
        )?,
        frame(
            "create-grant",
            "request",
            &req(Request::CreateGrant {
                grant: WireSigned::from_signed(&g.sign(alice)?),
            }),
        )?,
        frame(
            "submit",
            "request",
            &req(Request::Submit {
                grant_id: g.grant_id,
                statement: WireSigned::from_signed(
                    &Submission {
                        grant_id: g.grant_id,
                        user: g.user.clone(),
                        agent: g.agent.clone(),
                        ciphertext_root: [0x33; 32],
                        ciphertext_len: 4242,
                    }
                    .sign(bot),
                ),
                length: 4242,
                from_piece: 0,
            }),
        )?,
        frame(
            "fetch",
            "request",
            &req(Request::Fetch {
                envelope_id: EnvelopeId([0x22; 16]),
                from_piece: 0,
            }),
        )?,
        frame(
            "receipt",
            "request",
            &req(Request::Receipt {
                receipt,
                old_size: Some(4),
            }),
        )?,
        frame(
            "deliver",
            "request",
            &req(Request::Deliver {
                envelope_id: EnvelopeId([0x22; 16]),
                from_piece: 3,
            }),
        )?,
        frame(
            "subscribe-grants",
            "request",
            &req(Request::Subscribe {
                feed: crate::core::wire::Feed::Grants,
                dir_size: Some(3),
            }),
        )?,
        frame(
            "resumable",
            "request",
            &req(Request::Resumable {
                grant_id: g.grant_id,
            }),
        )?,
        frame(
            "ok-resume-at",
            "response",
            &Response::Ok(Reply::ResumeAt {
                from_piece: 5,
                statement_sha256: Some([0x44; 32]),
            }),
        )?,
        frame("ok-live", "response", &Response::Ok(Reply::Live))?,
        frame(
            "ok-submitted",
            "response",
            &Response::Ok(Reply::Submitted {
                envelope_id: EnvelopeId([0x22; 16]),
            }),
        )?,
        frame("ok-done", "response", &Response::Ok(Reply::Done))?,
        frame(
            "err-not-found",
            "response",
            &Response::Err {
                code: ErrorCode::NotFound,
                message: "no such envelope".into(),
            },
        )?,
    ];
    // Must fail: a byte after the message (the length covering it), and a length prefix
    // that promises a byte the frame does not have.
    let body = encode_frame(&req(Request::GetCheckpoint { old_size: Some(5) }))?.split_off(4);
    let with_len = |len: usize, body: &[u8]| {
        let mut f = u32::try_from(len)
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec();
        f.extend_from_slice(body);
        f
    };
    let mut trailing = body.clone();
    trailing.push(0);
    out.push(json!({
        "name": "trailing-byte", "kind": "request",
        "frame": hex(with_len(trailing.len(), &trailing)), "valid": false,
        "why": "bytes after the message: decoding is strict",
    }));
    out.push(json!({
        "name": "length-past-the-end", "kind": "request",
        "frame": hex(with_len(body.len() + 1, &body)), "valid": false,
        "why": "the length prefix says one byte more than the frame holds",
    }));
    Ok(out)
}
