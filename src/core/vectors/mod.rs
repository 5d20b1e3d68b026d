//! Test vectors for implementations in other languages (`docs/vectors/`, as age and C2SP ship
//! theirs): signed statements field by field, protocol frames, checkpoints with cosignatures,
//! and whole receipt files, each with what it must verify to (or that it must fail).
//! [`generate`] builds them deterministically from fixed test seeds (never a real key) and a
//! fixed time, so `sealrelay vectors write` reproduces the checked-in files byte for byte;
//! [`check`] verifies a file the way the relay and its clients do.

mod build;
mod check;
mod wire;

pub use build::generate;
pub use check::{check, decode_wire_frame, reencode, verify_checkpoint, verify_statement};

use serde_json::{json, Value};

use crate::core::codec::Field;
use crate::error::{Error, Result};
use crate::ids::hex;

/// The vector files, in the order they are written and checked.
pub const FILES: [&str; 4] = [
    "statements.json",
    "wire.json",
    "checkpoints.json",
    "receipts.json",
];

/// A field as the vectors list it: `{"u8": 1}`, `{"u64": "2"}` (decimal text), `{"bytes": "<hex>"}`,
/// `{"str": "…"}`, `{"opt_str": null | "…"}`, `{"str_list": ["…"]}`.
pub fn field_json(f: &Field) -> Value {
    match f {
        Field::U8(v) => json!({ "u8": v }),
        // As a decimal string: JSON numbers past 2^53 lose precision in JavaScript and others.
        Field::U64(v) => json!({ "u64": v.to_string() }),
        Field::Bytes(v) => json!({ "bytes": hex(v) }),
        Field::Str(v) => json!({ "str": v }),
        Field::OptStr(v) => json!({ "opt_str": v }),
        Field::StrList(v) => json!({ "str_list": v }),
    }
}

fn unhex(s: &str, what: &str) -> Result<Vec<u8>> {
    let bad = || Error::bad_input(format!("{what} is not hex"));
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_input(format!("a vector has no text field {key:?}")))
}

/// The file as written: pretty JSON with a final newline.
fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;
