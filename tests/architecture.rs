//! The dependency rules of docs/ARCHITECTURE.md: the core does no I/O (no tokio, quinn,
//! `std::net`, `std::fs`, or clock reads under `src/core/`); the relay's request handlers do no
//! I/O of their own (no quinn, `tokio::net`, `std::fs` or clock read under
//! `src/server/handlers/`); neither the handlers nor the relay's services start a task, thread or
//! process; the files under `src/` import one another without a cycle; no source file grows
//! past 600 lines; and docs/ARCHITECTURE.md maps every file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
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
fn the_architecture_doc_names_every_test_file_and_folder() {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("tests")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // A test file by its own path; a folder by its path or any file in it.
        let named = if path.is_dir() {
            doc.contains(&format!("`tests/{name}/"))
        } else if name.ends_with(".rs") {
            doc.contains(&format!("`tests/{name}`"))
        } else {
            true
        };
        if !named {
            missing.push(format!("tests/{name}"));
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md's test table does not name:\n{}",
        missing.join("\n")
    );
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

/// The handlers and the relay's services start no task, thread or process, so that what a
/// handler touches shows in what it is given: the shell (`src/server/shell/`) spawns and passes
/// the handle in (a blocking executor, an alert sink). `src/server/services/` may be absent. The
/// socket-free handler tests under `src/server/handlers/tests/` are left out: they may use
/// tokio's test helpers.
#[test]
fn no_spawning_under_handlers_or_services() {
    let forbidden = [
        "spawn(",
        "spawn_blocking",
        "std::thread",
        "thread::Builder",
        "thread::spawn",
        "Command::new",
        "tokio::process",
        "std::process::Command",
        ".spawn_local",
    ];
    let mut files = Vec::new();
    for dir in ["src/server/handlers", "src/server/services"] {
        let dir = root().join(dir);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
    }
    assert!(
        files.len() >= 5,
        "expected the handlers under src/server/handlers"
    );
    let handler_tests = root().join("src/server/handlers/tests");
    files.sort();
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(&handler_tests)) {
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for (n, line) in code.lines().enumerate() {
            let hits: Vec<&str> = forbidden
                .iter()
                .copied()
                .filter(|w| line.contains(*w))
                .collect();
            if !hits.is_empty() {
                let rel = f.strip_prefix(root()).unwrap().display();
                found.push(format!("{rel}:{}: {}", n + 1, hits.join(", ")));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the handlers and services start no task, thread or process: spawn from the shell \
         (src/server/shell/) and pass the handle in:\n{}",
        found.join("\n")
    );
}

/// No import cycle between the files under `src/`: in the graph where a file points at each
/// module file it names something in, every strongly connected component is one file. See
/// [`import_graph`] for what counts as naming.
#[test]
fn no_import_cycle_between_files_under_src() {
    let files = source_files("src");
    assert!(files.len() >= 100, "expected the files under src/");
    let cycles = import_cycles(&files);
    assert!(
        cycles.is_empty(),
        "import cycles between files under src/: move what one edge of each names (into the \
         file it points at, or a file of its own both can use) so that the files import one way:\n{}",
        cycles.join("\n")
    );
}

/// The cycle finder on made-up files: it finds two files that import each other (and names the
/// paths of both edges), reads nothing in comments or strings, and lets a child use its parent
/// (the parent declaring it and re-exporting from it is no edge back).
#[test]
fn the_import_cycle_finder_finds_a_cycle_and_no_false_one() {
    let tree = |files: &[(&str, &str)]| -> Vec<(String, String)> {
        files
            .iter()
            .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
            .collect()
    };
    let lib = ("src/lib.rs", "pub mod a;\npub mod b;\n");
    let a = (
        "src/a.rs",
        "use crate::b::{self, Bee};\n\npub struct Ay(pub Bee);\n",
    );
    let cyclic = tree(&[
        lib,
        a,
        (
            "src/b.rs",
            "pub struct Bee;\n\npub fn ay() -> super::a::Ay {\n    crate::a::Ay(Bee)\n}\n",
        ),
    ]);
    let found = import_cycles(&cyclic);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("2 files: src/a.rs, src/b.rs"),
        "{found:?}"
    );
    assert!(
        found[0].contains("src/a.rs -> src/b.rs: crate::b (line 1), crate::b::Bee (line 1)"),
        "{found:?}"
    );
    assert!(
        found[0].contains("src/b.rs -> src/a.rs: crate::a::Ay (line 4), super::a::Ay (line 3)"),
        "{found:?}"
    );

    // The same back edge only in comments, strings and a character literal: no edge.
    let quiet = tree(&[
        lib,
        a,
        (
            "src/b.rs",
            r##"pub struct Bee;

// super::a::Ay
/// [`crate::a::Ay`]
/* crate::a::Ay /* nested */ super::a::Ay */
pub const A: &str = "crate::a::Ay \" super::a::Ay";
pub const Q: char = '"';
pub const R: &str = r#"super::a::Ay " crate::a::Ay"#;
pub fn f<'a>(x: &'a str) -> &'a str { x }
"##,
        ),
    ]);
    assert!(import_cycles(&quiet).is_empty());
    assert_eq!(import_graph(&quiet).len(), 1, "only a -> b");

    // A parent that declares its child and re-exports from it; a child that uses its parent,
    // also from its inline tests (whose `super::` is the child itself): no cycle, and the one
    // edge is child -> parent.
    let family = tree(&[
        ("src/lib.rs", "pub mod p;\n"),
        ("src/p/mod.rs", "mod child;\npub use child::g;\n\npub struct X;\n"),
        (
            "src/p/child.rs",
            "use super::X;\n\npub fn g(_: X) {}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    \
             fn h() {\n        super::g(crate::p::X);\n    }\n}\n",
        ),
    ]);
    assert!(import_cycles(&family).is_empty());
    let edges: Vec<(String, String)> = import_graph(&family).into_keys().collect();
    assert_eq!(
        edges,
        [("src/p/child.rs".to_owned(), "src/p/mod.rs".to_owned())]
    );
}

/// The `.rs` files under `dir` (relative to the repository): path from the root, and text.
fn source_files(dir: &str) -> Vec<(String, String)> {
    let mut paths = Vec::new();
    rust_files(&root().join(dir), &mut paths);
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(root()).unwrap().to_string_lossy();
            (rel.replace('\\', "/"), std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

/// Who imports whom: (from, to) → each path that makes the edge, with the line it is first on.
type Edges = BTreeMap<(String, String), BTreeMap<String, usize>>;

/// The import cycles between `files` (path under the repository, text): one line per strongly
/// connected component of more than one file, then one per edge inside it with the paths that
/// make it.
fn import_cycles(files: &[(String, String)]) -> Vec<String> {
    let edges = import_graph(files);
    let names: Vec<&str> = files.iter().map(|(rel, _)| rel.as_str()).collect();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(k, n)| (*n, k)).collect();
    let mut adj = vec![Vec::new(); names.len()];
    for (from, to) in edges.keys() {
        adj[index[from.as_str()]].push(index[to.as_str()]);
    }
    let mut tarjan = Tarjan {
        adj: &adj,
        index: vec![None; names.len()],
        low: vec![0; names.len()],
        on_stack: vec![false; names.len()],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..names.len() {
        tarjan.visit(v);
    }
    let mut cycles = Vec::new();
    for component in tarjan.components.iter().filter(|c| c.len() > 1) {
        let mut members: Vec<&str> = component.iter().map(|&k| names[k]).collect();
        members.sort_unstable();
        let mut text = format!("{} files: {}", members.len(), members.join(", "));
        for ((from, to), paths) in &edges {
            if members.contains(&from.as_str()) && members.contains(&to.as_str()) {
                let named: Vec<String> = paths
                    .iter()
                    .map(|(path, line)| format!("{path} (line {line})"))
                    .collect();
                text.push_str(&format!("\n    {from} -> {to}: {}", named.join(", ")));
            }
        }
        cycles.push(text);
    }
    cycles.sort();
    cycles
}

/// Tarjan's strongly connected components.
struct Tarjan<'a> {
    adj: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        if self.index[v].is_some() {
            return;
        }
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        let adj = self.adj;
        for &w in &adj[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if self.index[v] == Some(self.low[v]) {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// The file-level import graph of `files` (path under the repository, text).
///
/// A file's module: `src/lib.rs` is the library's root, `src/main.rs` the binary's (with the
/// modules it declares, `src/cli/`); `src/a/mod.rs` is `a` and `src/a/b.rs` is `a::b`. A file
/// points at another when it names something there: a path of a `use` (groups, `self` and `*`
/// expanded; it may start at a child module, `use header::Header;`) or a `crate::`, `super::`,
/// `self::` (`sealrelay::` in the binary) path anywhere in its code, outside comments and
/// strings. A path leads to the longest prefix of it that is a module file, so an item directly
/// in module `m` is an edge to `m`'s file; paths inside an inline module (`mod tests { … }`) start
/// from it, so its `super::` is its own file. No edge: `mod x;`, a file to itself, and a module
/// file to the files below it (a parent is made of its children: `mod x;` with `pub use
/// x::Item;` is the facade, and only a child's use of its parent counts).
fn import_graph(files: &[(String, String)]) -> Edges {
    let tokens_of: Vec<Vec<Token>> = files
        .iter()
        .map(|(_, text)| tokens(&code_only(text)))
        .collect();
    // The binary's own modules: those `src/main.rs` declares (`mod cli;`).
    let mut bin_modules = Vec::new();
    for ((rel, _), toks) in files.iter().zip(&tokens_of) {
        if rel == "src/main.rs" {
            for w in toks.windows(3) {
                if w[0].text == "mod" && w[2].text == ";" {
                    bin_modules.push(w[1].text.clone());
                }
            }
        }
    }
    let places: Vec<(bool, Vec<String>)> = files
        .iter()
        .map(|(rel, _)| module_of(rel, &bin_modules))
        .collect();
    let modules = Modules(
        places
            .iter()
            .cloned()
            .zip(files.iter().map(|(rel, _)| rel.clone()))
            .collect(),
    );
    let mut edges = Edges::new();
    for (((from, _), toks), (bin, module)) in files.iter().zip(&tokens_of).zip(&places) {
        for named in named_paths(toks, *bin, module, &modules) {
            let Some((to, depth)) = modules.file(named.bin, &named.path) else {
                continue;
            };
            let below = named.bin == *bin && depth > module.len() && named.path.starts_with(module);
            if to == from.as_str() || below {
                continue;
            }
            edges
                .entry((from.clone(), to.to_owned()))
                .or_default()
                .entry(named.written)
                .or_insert(named.line);
        }
    }
    edges
}

/// A file's crate (the binary's, or the library's) and module path in it; see [`import_graph`].
fn module_of(rel: &str, bin_modules: &[String]) -> (bool, Vec<String>) {
    let inner = rel
        .strip_prefix("src/")
        .and_then(|r| r.strip_suffix(".rs"))
        .unwrap_or(rel);
    let mut path: Vec<String> = inner.split('/').map(str::to_owned).collect();
    let root = path.len() == 1 && (path[0] == "lib" || path[0] == "main");
    let bin = rel == "src/main.rs" || (!root && bin_modules.contains(&path[0]));
    if root || path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    (bin, path)
}

/// The module files: (binary's?, module path) → file.
struct Modules(HashMap<(bool, Vec<String>), String>);

impl Modules {
    fn contains(&self, bin: bool, path: &[String]) -> bool {
        self.0.contains_key(&(bin, path.to_vec()))
    }

    /// The file of the longest prefix of `path` that is a module file, and that prefix's length.
    fn file(&self, bin: bool, path: &[String]) -> Option<(&str, usize)> {
        (0..=path.len()).rev().find_map(|k| {
            self.0
                .get(&(bin, path[..k].to_vec()))
                .map(|f| (f.as_str(), k))
        })
    }
}

/// A path a file names, made absolute: its crate (the binary's?) and segments, as written, and
/// the line it is on.
struct Named {
    bin: bool,
    path: Vec<String>,
    written: String,
    line: usize,
}

/// The paths into this crate (or from the binary into the library) that the file of `module`
/// names; see [`import_graph`].
fn named_paths(toks: &[Token], bin: bool, module: &[String], modules: &Modules) -> Vec<Named> {
    let mut found = Vec::new();
    let mut depth = 0usize;
    // The inline modules open here: name, and the brace depth inside them.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let here = |inline: &[(String, usize)]| -> Vec<String> {
        module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect()
    };
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].text.as_str();
        let next = move |k: usize| toks.get(i + k).map(|x| x.text.as_str());
        if t == "{" {
            depth += 1;
        } else if t == "}" {
            depth = depth.saturating_sub(1);
            while inline.last().is_some_and(|(_, d)| *d > depth) {
                inline.pop();
            }
        } else if t == "mod" && next(2) == Some("{") {
            inline.push((toks[i + 1].text.clone(), depth + 1));
            depth += 1;
            i += 3;
            continue;
        } else if t == "use" {
            let mut trees = Vec::new();
            i += 1;
            use_tree(toks, &mut i, &[], &mut trees);
            while toks.get(i).is_some_and(|x| x.text != ";") {
                i += 1;
            }
            let cur = here(&inline[..]);
            for (segs, line) in trees {
                if let Some((to_bin, path)) = absolute(&segs, bin, &cur, true, modules) {
                    let written = segs.join("::");
                    found.push(Named {
                        bin: to_bin,
                        path,
                        written,
                        line,
                    });
                }
            }
        } else if matches!(t, "crate" | "$crate" | "super" | "self" | "sealrelay")
            && next(1) == Some("::")
            && (i == 0 || toks[i - 1].text != "::")
        {
            let line = toks[i].line;
            let mut segs = vec![t.to_owned()];
            let mut j = i + 1;
            while toks.get(j).is_some_and(|x| x.text == "::")
                && toks
                    .get(j + 1)
                    .is_some_and(|x| x.text.starts_with(is_ident_char))
            {
                segs.push(toks[j + 1].text.clone());
                j += 2;
            }
            if let Some((to_bin, path)) = absolute(&segs, bin, &here(&inline[..]), false, modules) {
                let written = segs.join("::");
                found.push(Named {
                    bin: to_bin,
                    path,
                    written,
                    line,
                });
            }
            i = j;
            continue;
        }
        i += 1;
    }
    found
}

/// Expands the `use` tree at `toks[*i]` under `prefix` into its paths (with their lines),
/// leaving `*i` on the `,`, `}` or `;` after it (or past the group it ends with).
fn use_tree(toks: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<(Vec<String>, usize)>) {
    let mut segs = prefix.to_vec();
    let line = toks.get(*i).map_or(0, |t| t.line);
    while let Some(tok) = toks.get(*i) {
        match tok.text.as_str() {
            "," | "}" | ";" => break,
            "{" => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| t.text.as_str()) {
                        Some("}") => {
                            *i += 1;
                            return;
                        }
                        Some(",") => *i += 1,
                        Some(";") | None => return,
                        Some(_) => use_tree(toks, i, &segs, out),
                    }
                }
            }
            // `x as y`: the path is `x`.
            "as" => *i += 2,
            // `a::*` names module `a`, and `a::{self, …}` names `a` too.
            "::" | "*" => *i += 1,
            "self" if !segs.is_empty() => *i += 1,
            word if word.starts_with(is_ident_char) || word.starts_with('$') => {
                segs.push(word.to_owned());
                *i += 1;
            }
            _ => *i += 1,
        }
    }
    out.push((segs, line));
}

/// Where `segs`, named in module `here` of the binary (`bin`) or the library, leads: the crate
/// and the path from its root, or `None` outside both (std, a dependency, an enum's variants).
/// In a `use`, a path may also start at a child module of `here`.
fn absolute(
    segs: &[String],
    bin: bool,
    here: &[String],
    in_use: bool,
    modules: &Modules,
) -> Option<(bool, Vec<String>)> {
    let (first, rest) = segs.split_first()?;
    match first.as_str() {
        "crate" | "$crate" => Some((bin, rest.to_vec())),
        "sealrelay" => Some((false, rest.to_vec())),
        "self" => Some((bin, [here, rest].concat())),
        "super" => {
            let mut base = here.to_vec();
            let mut tail = segs;
            while let Some((s, after)) = tail.split_first() {
                if s != "super" {
                    break;
                }
                base.pop()?;
                tail = after;
            }
            Some((bin, [base.as_slice(), tail].concat()))
        }
        _ if in_use => {
            let mut child = here.to_vec();
            child.push(first.clone());
            modules
                .contains(bin, &child)
                .then(|| (bin, [here, segs].concat()))
        }
        _ => None,
    }
}

/// One token of code: an identifier (or keyword, number, `$crate`), `::`, or one other
/// character.
struct Token {
    text: String,
    line: usize,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn tokens(code: &str) -> Vec<Token> {
    let s: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < s.len() {
        let c = s[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if is_ident_char(c) || (c == '$' && s.get(i + 1).is_some_and(|&x| is_ident_char(x))) {
            i += 1;
            while s.get(i).is_some_and(|&x| is_ident_char(x)) {
                i += 1;
            }
        } else if c == ':' && s.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            i += 1;
        }
        out.push(Token {
            text: s[start..i].iter().collect(),
            line,
        });
    }
    out
}

/// `text` with every comment (line, block, doc), string (plain, byte, raw) and character
/// literal blanked out, line breaks kept.
fn code_only(text: &str) -> String {
    let s: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let starts_token = |k: usize| k == 0 || !is_ident_char(s[k - 1]);
        // `r"…"`, `r#"…"#`, and with `b` or `c` before the `r`.
        let raw =
            c == 'r' && (starts_token(i) || (matches!(s[i - 1], 'b' | 'c') && starts_token(i - 1)));
        let end = match c {
            '/' if s.get(i + 1) == Some(&'/') => Some(
                s[i..]
                    .iter()
                    .position(|&x| x == '\n')
                    .map_or(s.len(), |p| i + p),
            ),
            '/' if s.get(i + 1) == Some(&'*') => Some(block_comment_end(&s, i)),
            '"' => Some(string_end(&s, i)),
            '\'' => char_end(&s, i),
            'r' if raw => raw_string_end(&s, i),
            _ => None,
        };
        match end {
            Some(end) => {
                out.extend(
                    s[i..end]
                        .iter()
                        .map(|&x| if x == '\n' { '\n' } else { ' ' }),
                );
                i = end;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The end of the (nested) block comment at `start`.
fn block_comment_end(s: &[char], start: usize) -> usize {
    let (mut k, mut depth) = (start, 0usize);
    while k < s.len() {
        if s[k] == '/' && s.get(k + 1) == Some(&'*') {
            depth += 1;
            k += 2;
        } else if s[k] == '*' && s.get(k + 1) == Some(&'/') {
            depth = depth.saturating_sub(1);
            k += 2;
            if depth == 0 {
                return k;
            }
        } else {
            k += 1;
        }
    }
    s.len()
}

/// The end of the string at `start` (its opening `"`).
fn string_end(s: &[char], start: usize) -> usize {
    let mut k = start + 1;
    while k < s.len() {
        match s[k] {
            '\\' => k += 2,
            '"' => return (k + 1).min(s.len()),
            _ => k += 1,
        }
    }
    s.len()
}

/// The end of the character literal at `start` (`'a'`, `'\n'`, `'\''`, `'\u{1F600}'`), or
/// `None` for a lifetime or a label (`'a`, `'static`).
fn char_end(s: &[char], start: usize) -> Option<usize> {
    match s.get(start + 1) {
        Some('\\') => {
            let mut k = start + 3;
            while k < s.len() && s[k] != '\'' {
                k += 1;
            }
            Some((k + 1).min(s.len()))
        }
        Some(_) if s.get(start + 2) == Some(&'\'') => Some(start + 3),
        _ => None,
    }
}

/// The end of the raw string whose `r` is at `start`, if one starts there.
fn raw_string_end(s: &[char], start: usize) -> Option<usize> {
    let mut k = start + 1;
    while s.get(k) == Some(&'#') {
        k += 1;
    }
    if s.get(k) != Some(&'"') {
        return None;
    }
    let hashes = k - start - 1;
    k += 1;
    while k < s.len() {
        let closed = s
            .get(k + 1..k + 1 + hashes)
            .is_some_and(|h| h.iter().all(|&x| x == '#'));
        if s[k] == '"' && closed {
            return Some(k + 1 + hashes);
        }
        k += 1;
    }
    Some(s.len())
}
