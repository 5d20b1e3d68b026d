//! Ed25519 signing and the strict verification rule against vectors nobody here wrote:
//! C2SP CCTV `ed25519vectors.json` (edge cases), Wycheproof `ed25519_test.json`, and the
//! `sign.input` set from the ed25519 reference software (via dalek's TESTVECTORS).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use sealrelay::core::sign::{PublicKey, SigningKey};
use serde_json::Value;

/// Our documented rule (docs/formats.md): accept exactly the vectors whose flags are a subset
/// of {low_order_component_A, low_order_component_R}, i.e. ed25519-dalek's `verify_strict`.
#[test]
fn cctv_edge_cases_follow_the_documented_rule() {
    let Some(dir) = common::vectors("cctv-ed25519") else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("ed25519vectors.json")).unwrap();
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() > 900, "expected the full CCTV set");
    let allowed = ["low_order_component_A", "low_order_component_R"];
    let (mut accepted, mut rejected) = (0, 0);
    for v in &vectors {
        let key = common::unhex(v["key"].as_str().unwrap());
        let sig = common::unhex(v["sig"].as_str().unwrap());
        let msg = v["msg"].as_str().unwrap().as_bytes();
        let flags: Vec<&str> = v["flags"]
            .as_array()
            .map(|a| a.iter().map(|f| f.as_str().unwrap()).collect())
            .unwrap_or_default();
        let expect_ok = flags.iter().all(|f| allowed.contains(f));
        let got_ok = PublicKey::from_slice(&key)
            .map(|pk| pk.verify_strict(msg, &sig).is_ok())
            .unwrap_or(false);
        assert_eq!(
            got_ok, expect_ok,
            "vector {} flags {flags:?}: got {got_ok}, expected {expect_ok}",
            v["number"]
        );
        if got_ok {
            accepted += 1
        } else {
            rejected += 1
        }
    }
    eprintln!("CCTV ed25519: {accepted} accepted, {rejected} rejected, all as the rule says");
    assert!(accepted > 0 && rejected > 0);
}

#[test]
fn wycheproof_valid_verify_and_invalid_do_not() {
    let Some(dir) = common::vectors("wycheproof") else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("ed25519_test.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut count = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let pk = common::unhex(group["publicKey"]["pk"].as_str().unwrap());
        for t in group["tests"].as_array().unwrap() {
            let msg = common::unhex(t["msg"].as_str().unwrap());
            let sig = common::unhex(t["sig"].as_str().unwrap());
            let ok = PublicKey::from_slice(&pk)
                .map(|k| k.verify_strict(&msg, &sig).is_ok())
                .unwrap_or(false);
            let result = t["result"].as_str().unwrap();
            match result {
                "valid" => assert!(ok, "tcId {} should verify", t["tcId"]),
                "invalid" => assert!(!ok, "tcId {} should not verify", t["tcId"]),
                other => panic!("unexpected result {other}"),
            }
            count += 1;
        }
    }
    assert_eq!(count, doc["numberOfTests"].as_u64().unwrap() as usize);
}

#[test]
fn sign_input_signs_byte_for_byte() {
    let Some(dir) = common::vectors("ed25519-sign-input") else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("TESTVECTORS")).unwrap();
    let mut count = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(':').collect();
        let sk = common::unhex(fields[0]);
        let pk = common::unhex(fields[1]);
        let msg = common::unhex(fields[2]);
        let sig_msg = common::unhex(fields[3]);
        let seed: [u8; 32] = sk[..32].try_into().unwrap();
        let key = SigningKey::from_seed(&seed).unwrap();
        assert_eq!(
            key.public().0.as_slice(),
            pk.as_slice(),
            "line {count}: public key"
        );
        let sig = key.sign(&msg);
        assert_eq!(&sig[..], &sig_msg[..64], "line {count}: signature");
        key.public().verify_strict(&msg, &sig).unwrap();
        // Stored like any other key (PKCS#8), it signs the same.
        let again = SigningKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.sign(&msg), sig);
        count += 1;
    }
    assert_eq!(count, 128);
}
