//! What an agent uploads (threats 5-7): the age header parser and the relay's streaming
//! envelope validator. A header that parses serializes back to exactly the bytes it was parsed
//! from; the validator gives the same verdict whether the bytes arrive at once or in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::envelope::header::Header;
use sealrelay::core::envelope::validate::{validate_reader, EnvelopeValidator};

fuzz_target!(|data: &[u8]| {
    if let Ok((header, used)) = Header::parse(&mut std::io::BufReader::new(data)) {
        assert_eq!(header.to_bytes(), &data[..used], "the header re-serializes differently");
    }
    let whole = validate_reader(&mut &data[..]);
    let mut v = EnvelopeValidator::new();
    let mut pieces = Ok(());
    let step = 1 + data.first().copied().unwrap_or(0) as usize;
    for chunk in data.chunks(step) {
        pieces = v.update(chunk);
        if pieces.is_err() {
            break;
        }
    }
    let pieces = pieces.and_then(|()| v.finish());
    assert_eq!(whole.is_ok(), pieces.is_ok(), "the verdict depends on how the bytes arrive");
    if let (Ok(a), Ok(b)) = (whole, pieces) {
        assert_eq!(a, b);
    }
});
