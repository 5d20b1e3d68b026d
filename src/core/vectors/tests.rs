use serde_json::Value;

use super::*;

fn files() -> Vec<(&'static str, Value)> {
    generate()
        .unwrap()
        .into_iter()
        .map(|(name, text)| (name, serde_json::from_str(&text).unwrap()))
        .collect()
}

#[test]
fn every_generated_file_checks_and_generation_is_deterministic() {
    let once = generate().unwrap();
    assert_eq!(once, generate().unwrap());
    assert_eq!(once.len(), FILES.len());
    for (name, text) in &once {
        let n = check(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(n >= 3, "{name}: {n} vectors");
    }
}

/// Flips one byte of a hex field at `at` (an index into the bytes).
fn flip_hex(s: &str, at: usize) -> String {
    let mut b = unhex(s, "field").unwrap();
    let i = at % b.len();
    b[i] ^= 0x01;
    hex(b)
}

/// Flips the byte at `at` of a text field, keeping it UTF-8 (ASCII positions only).
fn flip_text(s: &str, at: usize) -> Option<String> {
    let mut b = s.as_bytes().to_vec();
    let i = at % b.len();
    if !b[i].is_ascii_alphanumeric() {
        return None;
    }
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    (b[i] != s.as_bytes()[i]).then(|| String::from_utf8(b).unwrap())
}

#[test]
fn a_flipped_byte_anywhere_in_any_vector_fails() {
    let mut tried = 0;
    for (name, file) in files() {
        let count = file["vectors"].as_array().unwrap().len();
        for i in 0..count {
            if !file["vectors"][i]["valid"].as_bool().unwrap_or(true) {
                continue;
            }
            let fields: &[&str] = match name {
                "statements.json" => &["statement", "signature", "signer"],
                "wire.json" => &["frame"],
                "checkpoints.json" => &["note"],
                _ => &["receipt_file"],
            };
            for field in fields {
                let original = file["vectors"][i][field].as_str().unwrap().to_owned();
                let positions = if name == "receipts.json" {
                    original.len()
                } else {
                    original.len() / 2
                };
                for at in 0..positions {
                    let flipped = match *field {
                        "note" | "receipt_file" => match flip_text(&original, at) {
                            Some(t) => t,
                            None => continue,
                        },
                        _ => flip_hex(&original, at),
                    };
                    let mut bad = file.clone();
                    bad["vectors"][i][*field] = Value::String(flipped);
                    let text = serde_json::to_string(&bad).unwrap();
                    assert!(
                        check(name, &text).is_err(),
                        "{name} vector {i} {field}: a byte flipped at {at} still checks"
                    );
                    tried += 1;
                }
            }
        }
    }
    assert!(tried > 3000, "{tried} flips");
}

#[test]
fn the_invalid_vectors_fail_for_their_reason() {
    let statements = &files()[0].1;
    let mut seen = 0;
    for v in statements["vectors"].as_array().unwrap() {
        if v["valid"] != false {
            continue;
        }
        let err = verify_statement(
            v["type"].as_str().unwrap(),
            &unhex(v["statement"].as_str().unwrap(), "s").unwrap(),
            &unhex(v["signature"].as_str().unwrap(), "s").unwrap(),
            &unhex(v["signer"].as_str().unwrap(), "s").unwrap(),
        )
        .unwrap_err();
        let (kind, says) = match v["name"].as_str().unwrap() {
            "grant-non-canonical-signature" | "grant-wrong-signer" => {
                (crate::ErrorKind::Verification, "signature")
            }
            "grant-read-as-approval" => (crate::ErrorKind::BadInput, "approval"),
            other => panic!("an invalid vector without an expectation: {other}"),
        };
        assert_eq!(err.kind(), kind, "{}: {err}", v["name"]);
        assert!(err.message().contains(says), "{}: {err}", v["name"]);
        seen += 1;
    }
    assert_eq!(seen, 3);
    // A vector marked invalid that verifies makes the file fail.
    let mut lying = statements.clone();
    lying["vectors"][0]["valid"] = Value::Bool(false);
    assert!(check("statements.json", &lying.to_string())
        .unwrap_err()
        .message()
        .contains("must fail but verified"));
}

#[test]
fn a_file_that_says_nothing_checkable_is_refused() {
    let statements = &files()[0].1;
    // No vectors; another format under this name; an invalid vector that is malformed (its
    // failure would prove nothing).
    let mut empty = statements.clone();
    empty["vectors"] = Value::Array(vec![]);
    assert!(check("statements.json", &empty.to_string()).is_err());
    assert!(check("wire.json", &statements.to_string()).is_err());
    let mut typo = statements.clone();
    let last = typo["vectors"].as_array().unwrap().len() - 1;
    typo["vectors"][last]["type"] = Value::String("grnat".into());
    let err = check("statements.json", &typo.to_string()).unwrap_err();
    assert!(err.message().contains("malformed"), "{err}");
    let mut plus = statements.clone();
    plus["vectors"][0]["signature"] = Value::String(format!(
        "+f{}",
        &plus["vectors"][0]["signature"].as_str().unwrap()[2..]
    ));
    assert!(check("statements.json", &plus.to_string()).is_err());
}
