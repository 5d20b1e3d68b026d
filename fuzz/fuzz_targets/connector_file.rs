//! The connector file that `sealrelay mcp --connectors` reads (TOML, operator input): no panic,
//! and a file that loads serves only names of the resource grammar, each through a connector
//! whose pattern covers it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::connect::Connectors;
use sealrelay::core::resource::matches;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A base directory with nothing in it: relative roots and secret files do not exist.
    let base = std::path::Path::new("/nonexistent/sealrelay-fuzz");
    let Ok(c) = Connectors::parse(text, base) else {
        return;
    };
    assert!(!c.list.is_empty());
    for name in ["tickets/4711", "docs/a/b", "a", "x/../y", "-rf", "%2e%2e/x", "payroll/2026.csv"] {
        if let Ok(conn) = c.for_resource(name) {
            assert!(matches(&conn.resources, name));
        }
    }
    let scopes = c.list.iter().map(|k| k.resources.clone()).collect::<Vec<_>>();
    let _ = c.check_scopes(&scopes);
});
