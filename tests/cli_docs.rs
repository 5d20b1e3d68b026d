//! `docs/cli.md` stays true to `--help`: its reference section is every command's help text,
//! verbatim. Regenerate it with `SEALRELAY_UPDATE_DOCS=1 cargo test --test cli_docs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

const BEGIN: &str = "<!-- BEGIN GENERATED HELP -->";
const END: &str = "<!-- END GENERATED HELP -->";

/// Every command, in the order the reference lists them.
pub const COMMANDS: &[&[&str]] = &[
    &[],
    &["keys", "init"],
    &["keys", "reissue-relay"],
    &["keys", "gen"],
    &["keys", "show"],
    &["keys", "rotate"],
    &["keys", "watch"],
    &["keys", "import"],
    &["user", "add"],
    &["user", "revoke"],
    &["user", "approve-reset"],
    &["agent", "add"],
    &["agent", "revoke"],
    &["agent", "approve-reset"],
    &["admin", "add"],
    &["admin", "revoke"],
    &["admin", "approve-reset"],
    &["agent", "run"],
    &["directory", "verify"],
    &["directory", "push"],
    &["serve"],
    &["grant"],
    &["grants"],
    &["send"],
    &["mcp"],
    &["source", "add"],
    &["source", "revoke"],
    &["source", "approve-reset"],
    &["source", "serve"],
    &["dispatch"],
    &["ui"],
    &["inbox"],
    &["fetch"],
    &["agent", "quarantine"],
    &["agent", "release"],
    &["approve"],
    &["deny"],
    &["approvals"],
    &["policy", "validate"],
    &["policy", "check"],
    &["policy", "prove"],
    &["policy", "diff"],
    &["receipt", "verify"],
    &["receipt", "upgrade"],
    &["audit", "verify"],
    &["audit", "tail"],
    &["audit", "export"],
    &["seal"],
    &["open"],
    &["demo"],
    &["witness", "keygen"],
    &["witness", "serve"],
    &["vectors", "write"],
    &["vectors", "check"],
];

fn generated() -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut out = String::new();
    for cmd in COMMANDS {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let help = common::ok_in(dir.path(), &args);
        let title = if cmd.is_empty() {
            "sealrelay".to_owned()
        } else {
            format!("sealrelay {}", cmd.join(" "))
        };
        out.push_str(&format!(
            "\n### `{title}`\n\n```text\n{}\n```\n",
            help.trim_end()
        ));
    }
    out
}

/// The commands a `--help` lists under "Commands:" (without `help`).
fn listed(args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args.to_vec();
    a.push("--help");
    let help = common::ok_in(dir.path(), &a);
    let Some((_, commands)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    commands
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

/// Found by walking the docs (issue 33): docs/cli.md claimed every command but lacked
/// `admin add` and `admin revoke`. Every command the binary has is in the reference.
#[test]
fn the_reference_lists_every_command_the_binary_has() {
    let mut missing = Vec::new();
    for top in listed(&[]) {
        let subs = listed(&[top.as_str()]);
        if subs.is_empty() && !COMMANDS.iter().any(|c| *c == [top.as_str()]) {
            missing.push(top.clone());
        }
        for sub in subs {
            if !COMMANDS.iter().any(|c| *c == [top.as_str(), sub.as_str()]) {
                missing.push(format!("{top} {sub}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/cli.md lacks: {missing:?}");
}

#[test]
fn cli_reference_matches_help() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = doc
        .split_once(BEGIN)
        .expect("docs/cli.md lacks the BEGIN marker");
    let (_, tail) = rest
        .split_once(END)
        .expect("docs/cli.md lacks the END marker");
    let want = format!("{head}{BEGIN}\n{}\n{END}{tail}", generated());
    if std::env::var_os("SEALRELAY_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        doc == want,
        "docs/cli.md is out of date with --help: run SEALRELAY_UPDATE_DOCS=1 cargo test --test cli_docs"
    );
}

const TOOLS_BEGIN: &str = "<!-- BEGIN GENERATED TOOLS -->";
const TOOLS_END: &str = "<!-- END GENERATED TOOLS -->";

/// `docs/mcp.md` holds the MCP tool schemas verbatim, as the server defines them.
#[test]
fn mcp_tool_schemas_match_the_server() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mcp.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = doc
        .split_once(TOOLS_BEGIN)
        .expect("docs/mcp.md lacks the BEGIN marker");
    let (_, tail) = rest
        .split_once(TOOLS_END)
        .expect("docs/mcp.md lacks the END marker");
    let want = format!(
        "{head}{TOOLS_BEGIN}\n```json\n{}\n```\n{TOOLS_END}{tail}",
        sealrelay::mcp::server::tools_json()
    );
    if std::env::var_os("SEALRELAY_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        doc == want,
        "docs/mcp.md's tool schemas are out of date: run SEALRELAY_UPDATE_DOCS=1 cargo test --test cli_docs"
    );
}
