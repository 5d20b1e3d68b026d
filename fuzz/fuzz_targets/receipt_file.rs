//! Receipt files, which anyone may hand to `receipt verify`: parsing, and the round trip
//! through `to_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::receipt_file::ReceiptFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = ReceiptFile::from_json(data) {
        let again = ReceiptFile::from_json(f.to_json().as_bytes()).unwrap();
        assert_eq!(again, f);
    }
});
