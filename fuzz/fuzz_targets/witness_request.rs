//! The witness's `add-checkpoint` request body (C2SP tlog-witness), as any client on the network
//! sends it: strict parsing (a body that parses re-encodes to exactly its bytes), then the
//! witness's decision under a fixed log key, with no cosigned state and with one, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::sign::{SigningKey, VerifierKey};
use sealrelay::core::tlog::checkpoint::Checkpoint;
use sealrelay::core::tlog::witness_protocol::{decide, origin_of, AddCheckpoint};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = AddCheckpoint::parse(data) else {
        return;
    };
    assert_eq!(req.encode().as_bytes(), data, "one encoding per request");
    let _ = origin_of(&req.note);
    let key = SigningKey::from_seed(&[9; 32]).unwrap();
    let vk = VerifierKey::new("relay.example/log", key.public()).unwrap();
    let latest = Checkpoint {
        origin: vk.name.clone(),
        size: 3,
        root: [1; 32],
    };
    for state in [None, Some(&latest)] {
        if let Ok(cp) = decide(&req, Some(&vk), state) {
            // Only what the log key signed is ever cosigned.
            assert!(Checkpoint::verify(&req.note, &vk).is_ok());
            assert!(cp.size >= req.old_size);
        }
        let refused = decide(&req, None, state).unwrap_err();
        assert_eq!(refused.status(), 404);
    }
});
