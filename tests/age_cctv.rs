//! The C2SP CCTV age test suite (../shared/vectors/cctv-age, see its README) against
//! `sealrelay::core::envelope::open`: every in-scope vector gives the expected result and the
//! expected SHA-256 of all plaintext released (including before a payload failure).
//!
//! The result is checked by kind (header failure, no match, HMAC failure, payload failure), and
//! the 18 hybrid (ML-KEM-768 + X25519, `mlkem768x25519`) vectors must all run and pass.
//! Out of scope, skipped with the reason printed: scrypt (passphrase) vectors and armored
//! vectors (sealrelay reads binary age files only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;

use sealrelay::core::envelope::{self, keys::AgeIdentity, EnvelopeError};

struct Vector {
    name: String,
    expect: String,
    payload: Option<String>,
    identities: Vec<String>,
    passphrase: bool,
    armored: bool,
    body: Vec<u8>,
}

fn parse(name: &str, raw: &[u8]) -> Result<Vector, String> {
    let split = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or("no header")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "header not UTF-8")?;
    let mut v = Vector {
        name: name.to_owned(),
        expect: String::new(),
        payload: None,
        identities: Vec::new(),
        passphrase: false,
        armored: false,
        body: raw[split + 2..].to_vec(),
    };
    let mut compressed = false;
    for line in head.lines() {
        let (k, val) = line.split_once(": ").ok_or("bad header line")?;
        match k {
            "expect" => v.expect = val.to_owned(),
            "payload" => v.payload = Some(val.to_owned()),
            "identity" => v.identities.push(val.to_owned()),
            "passphrase" => v.passphrase = true,
            "armored" => v.armored = val == "yes",
            "compressed" => compressed = val == "zlib",
            "file key" | "comment" => {}
            other => return Err(format!("unknown key {other}")),
        }
    }
    if compressed {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(v.body.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        v.body = out;
    }
    Ok(v)
}

fn sha256_hex(b: &[u8]) -> String {
    sealrelay::ids::hex(sealrelay::core::directory::sha256(b))
}

#[test]
fn cctv_age_suite() {
    let Some(dir) = common::vectors("cctv-age/testdata") else {
        return;
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(
        names.len() >= 140,
        "expected the full CCTV suite, found {}",
        names.len()
    );
    let (mut passed, mut skipped, mut hybrid) = (0, Vec::new(), 0);
    let mut failures = Vec::new();
    for name in &names {
        let raw = std::fs::read(dir.join(name)).unwrap();
        let v = match parse(name, &raw) {
            Ok(v) => v,
            Err(why) => {
                skipped.push(format!("{name}: {why}"));
                continue;
            }
        };
        if v.passphrase {
            skipped.push(format!(
                "{name}: scrypt/passphrase (sealrelay opens X25519 envelopes only)"
            ));
            continue;
        }
        if v.armored {
            skipped.push(format!(
                "{name}: ASCII armor (sealrelay reads binary age files only)"
            ));
            continue;
        }
        let ids: Vec<AgeIdentity> = v
            .identities
            .iter()
            .map(|s| AgeIdentity::parse(s).unwrap())
            .collect();
        let refs: Vec<&dyn age::Identity> = ids.iter().map(AgeIdentity::as_identity).collect();
        let mut out = Vec::new();
        let result = envelope::open(&refs, &mut v.body.as_slice(), &mut out, 2);
        let kind = |r: &Result<u64, EnvelopeError>| match r {
            Ok(_) => "success",
            Err(EnvelopeError::Header(_)) => "header failure",
            Err(EnvelopeError::NoMatch) => "no match",
            Err(EnvelopeError::Mac) => "HMAC failure",
            Err(EnvelopeError::Payload(_)) => "payload failure",
            Err(_) => "other",
        };
        let ok = kind(&result) == v.expect
            && match v.expect.as_str() {
                "success" | "payload failure" => Some(sha256_hex(&out)) == v.payload,
                _ => out.is_empty(),
            };
        if ok {
            passed += 1;
            if name.starts_with("hybrid") {
                hybrid += 1;
            }
        } else {
            failures.push(format!(
                "{}: expected {}, got {:?} with {} bytes released",
                v.name,
                v.expect,
                result.err().map(|e| e.to_string()),
                out.len()
            ));
        }
    }
    eprintln!(
        "CCTV age: {passed} passed ({hybrid} hybrid), {} skipped:",
        skipped.len()
    );
    for s in &skipped {
        eprintln!("  skipped {s}");
    }
    assert!(
        failures.is_empty(),
        "{} CCTV vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(passed >= 60, "too few in-scope vectors ran: {passed}");
    assert_eq!(hybrid, 18, "every hybrid vector runs and passes");
}
