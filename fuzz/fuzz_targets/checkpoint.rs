//! Signed checkpoints from a relay (and note verifier keys): parsing up to and including the
//! signature check, with a fixed key. Nothing parses that the key did not sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::sign::{SigningKey, VerifierKey};
use sealrelay::core::tlog::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = VerifierKey::parse(text);
    let key = SigningKey::from_seed(&[7; 32]).unwrap();
    let vk = VerifierKey::new("relay.example/log", key.public()).unwrap();
    if let Ok(cp) = Checkpoint::verify(text, &vk) {
        // Only a note this key signed verifies; signing the parsed value gives it back.
        let again = Checkpoint::verify(&cp.sign(&key, &vk).unwrap(), &vk).unwrap();
        assert_eq!(again, cp);
    }
});
