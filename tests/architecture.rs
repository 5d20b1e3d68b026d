//! The dependency rule of docs/ARCHITECTURE.md: the core does no I/O. No tokio, quinn,
//! `std::net`, `std::fs`, or clock reads under `src/core/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn core_does_no_io() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(
        files.len() >= 5,
        "expected the core modules under {}",
        core.display()
    );
    let forbidden = [
        "tokio",
        "quinn",
        "std::net",
        "std::fs",
        "SystemTime",
        "Instant::now",
        "clock::now",
        "std::process",
        "std::env",
    ];
    let mut violations = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    violations.push(format!("{}:{}: {word}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the core must not do I/O:\n{}",
        violations.join("\n")
    );
}
