//! The dependency rules of docs/ARCHITECTURE.md: the core does no I/O (no tokio, quinn,
//! `std::net`, `std::fs`, or clock reads under `src/core/`); the relay's request handlers do no
//! I/O of their own (no quinn, `tokio::net`, `std::fs` or clock read under
//! `src/server/handlers/`); no source file grows past 600 lines; and docs/ARCHITECTURE.md maps
//! every file.
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

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lines of the files under `dir` that use any of `forbidden` (comments aside).
fn violations(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&root().join(dir), &mut files);
    assert!(files.len() >= 5, "expected the modules under {dir}");
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    found.push(format!("{}:{}: {word}", f.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn core_does_no_io() {
    let found = violations(
        "src/core",
        &[
            "tokio",
            "quinn",
            "std::net",
            "std::fs",
            "SystemTime",
            "Instant::now",
            "clock::now",
            "std::process",
            "std::env",
        ],
    );
    assert!(
        found.is_empty(),
        "the core must not do I/O:\n{}",
        found.join("\n")
    );
}

#[test]
fn request_handlers_do_no_io_of_their_own() {
    let found = violations(
        "src/server/handlers",
        &[
            "quinn",
            "tokio::net",
            "tokio::fs",
            "std::fs",
            "std::net",
            "SystemTime",
            "Instant::now",
            "clock::now",
            "std::process",
            "tokio::process",
        ],
    )
    .into_iter()
    // The handler tests set up a trust root on disk; the handlers themselves may not.
    .filter(|v| !v.contains("/handlers/tests/"))
    .collect::<Vec<_>>();
    assert!(
        found.is_empty(),
        "request handlers must not do I/O (the stream shell does):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 600).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}

#[test]
fn the_architecture_doc_maps_every_source_file() {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|rel| {
            // A file is mapped by its own path, or by its directory's (`dir/`) for test trees.
            let mapped_dir = Path::new(rel)
                .parent()
                .map(|d| format!("`{}/`", d.display()))
                .is_some_and(|d| doc.contains(&d));
            !doc.contains(&format!("`{rel}`")) && !mapped_dir
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not map:\n{}",
        missing.join("\n")
    );
}
