//! The relay's config file and resource catalog (operator input, parsed before anything is
//! checked): no panic, and a valid config survives a TOML round trip. (Cedar's own policy parser
//! is left to its project's fuzzing: at a few dozen runs a second it would starve the rest.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::policy::Catalog;
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
    let _ = Catalog::parse(text);
});
