//! The relay's config file and policy text (operator input, but parsed before anything is
//! checked): no panic, and a valid config survives a TOML round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::policy::{Catalog, CedarPolicy};
use sealrelay::server::RelayConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = toml::from_str::<RelayConfig>(text) {
        if c.validate().is_ok() {
            let again: RelayConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
            assert_eq!(again, c);
        }
    }
    if text.len() < 4096 {
        let _ = Catalog::parse(text);
        let _ = CedarPolicy::new(text, "");
    }
});
