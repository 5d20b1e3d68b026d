//! Files a party is handed: identity files (sealrelay or plain age), bundles and enrollment
//! requests (signed JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::bundle::Bundle;
use sealrelay::core::identity::parse_identity_file;
use sealrelay::core::sign::{Signed, StatementType};

fuzz_target!(|data: &[u8]| {
    let _ = parse_identity_file(data);
    if let Ok(b) = Bundle::from_json(data) {
        let again = Bundle::from_json(b.to_json().as_bytes()).unwrap();
        assert_eq!(again, b);
    }
    let _ = Signed::from_json(data, StatementType::EnrollmentRequest);
});
