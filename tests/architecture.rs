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

/// Every test docs/security.md names exists: `file::function` is `fn function` in
/// `tests/file.rs`, and `a::b::tests::function` is `fn function` in `src/a/b.rs` or
/// `src/a/b/tests.rs` (a name ending in `tests` is the module itself). Every one of the 46
/// scenarios has a row; the blind-retrieval and web-client tables are checked the same way.
#[test]
fn security_md_names_only_tests_that_exist() {
    let doc = std::fs::read_to_string(root().join("docs/security.md")).unwrap();
    let rows: Vec<&str> = doc
        .lines()
        .filter(|l| {
            l.starts_with("| ")
                && l.split('|')
                    .nth(1)
                    .is_some_and(|c| c.trim().parse::<u32>().is_ok())
        })
        .collect();
    let numbers: Vec<u32> = rows
        .iter()
        .map(|l| l.split('|').nth(1).unwrap().trim().parse().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (1..=54).collect::<Vec<_>>(),
        "one row per scenario, in order"
    );
    // The numbered scenarios and the tables beyond them: every test named must exist.
    let mut extra_rows: Vec<&str> = Vec::new();
    for section in [
        "### Blind retrieval",
        "### The requester's web client",
        "### Harvest now, decrypt later",
        "### Witnessed checkpoints",
        "### Who pays for a refusal",
        "### Where features meet",
    ] {
        let body = doc
            .split_once(section)
            .map(|(_, rest)| rest.split("\n### ").next().unwrap_or(""))
            .unwrap_or("");
        let rows: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains("::"))
            .collect();
        assert!(
            rows.len() >= 3,
            "docs/security.md lacks the table {section:?}"
        );
        extra_rows.extend(rows);
    }
    let mut checked = 0;
    for row in rows.into_iter().chain(extra_rows) {
        let tests = row.rsplit('|').nth(1).unwrap();
        let pieces: Vec<&str> = tests.split('`').collect();
        for (k, name) in pieces.iter().enumerate().skip(1).step_by(2) {
            if !name.contains("::") {
                // A fuzz target ("fuzz target `x`") must exist; other names are files.
                if pieces[k - 1].ends_with("fuzz target ") {
                    let target = root().join(format!("fuzz/fuzz_targets/{name}.rs"));
                    assert!(
                        target.exists(),
                        "docs/security.md names fuzz target `{name}`"
                    );
                    checked += 1;
                }
                continue;
            }
            let parts: Vec<&str> = name.split("::").collect();
            let (func, path) = parts.split_last().unwrap();
            let candidates: Vec<PathBuf> = if path.len() == 1 {
                vec![root().join(format!("tests/{}.rs", path[0]))]
            } else {
                let module: Vec<&str> = path.iter().copied().filter(|p| *p != "tests").collect();
                let base = root().join("src").join(module.join("/"));
                vec![
                    base.with_extension("rs"),
                    base.join("tests.rs"),
                    base.join("mod.rs"),
                    base.join("tests/mod.rs"),
                    root().join("src").join(path.join("/")).with_extension("rs"),
                ]
            };
            // A test: `fn name(` right under a `#[test]` or `#[tokio::test…]` attribute (an
            // `#[ignore]` may sit between them).
            let is_test = |text: &str| {
                let lines: Vec<&str> = text.lines().collect();
                lines.iter().enumerate().any(|(i, l)| {
                    l.contains(&format!("fn {func}("))
                        && lines[i.saturating_sub(3)..i]
                            .iter()
                            .any(|a| a.contains("#[test]") || a.contains("#[tokio::test"))
                })
            };
            let found = candidates.iter().any(|f| {
                std::fs::read_to_string(f).is_ok_and(|text| {
                    *func == "tests" && text.contains("mod tests") || is_test(&text)
                })
            });
            assert!(
                found,
                "docs/security.md names `{name}`, which is not a test here"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 60,
        "only {checked} test names were read from docs/security.md"
    );
}
