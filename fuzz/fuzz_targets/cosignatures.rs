//! Witness keys, witness policy files, and cosignature lines on a note (what a relay's witnesses
//! answer and what clients are given): no panic; a key that parses re-encodes to a key that
//! parses to the same value; a policy that parses has a quorum within its witnesses; only a
//! line the fixed witness key signed verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::sign::SigningKey;
use sealrelay::core::tlog::cosignature::{
    lines_of, other_signature_lines, verified_line, verify, CosignerKey, WitnessPolicy,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = CosignerKey::parse(text) {
        assert_eq!(CosignerKey::parse(&k.encode()).unwrap(), k);
    }
    if let Ok(p) = WitnessPolicy::parse_file(text) {
        assert!(p.quorum >= 1 && p.quorum <= p.witnesses.len());
        let _ = p.cosigners(text);
        let _ = p.check(text);
    }
    let key = SigningKey::from_seed(&[5; 32]).unwrap();
    let who = CosignerKey::new("witness.example/w1", key.public()).unwrap();
    let _ = verify(text, &who);
    let _ = lines_of(text, std::slice::from_ref(&who));
    let _ = other_signature_lines(text);
    // A witness's answer for a note: split the input in two at its first NUL.
    if let Some((note, answer)) = text.split_once('\0') {
        if let Some(line) = verified_line(note, answer, &who) {
            assert!(answer.contains(line.as_str()));
            assert!(matches!(verify(&format!("{note}{line}"), &who), Ok(Some(_))));
        }
    }
});
