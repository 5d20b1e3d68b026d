//! The docs run as tests (issue #33): every walkthrough of README.md and docs/*.md, the command
//! blocks marked ```` ```sh doctest=NAME ````, runs against this build's binary in a scratch
//! directory, with its expected output where the doc shows one. `tests/docs/run.py` (Python 3
//! stdlib) is the runner; its header says how a doc marks a walkthrough and why it is not
//! trycmd. One test per walkthrough, so a failure names it. A walkthrough that needs a missing
//! tool skips with a message (fails under `SEALRELAY_REQUIRE_TOOLS`); the PostgreSQL one runs
//! only when `SEALRELAY_TEST_POSTGRES` is set (a fresh database is made for it), as the relay
//! tests on PostgreSQL do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

fn runner() -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("tests/docs/run.py"))
        .current_dir(root)
        .env("SEALRELAY_BIN", env!("CARGO_BIN_EXE_sealrelay"));
    cmd
}

/// The default ports, held for the whole test process as a relay already running on this machine
/// would hold them: a walkthrough that takes a fixed port fails here instead of on a user's
/// machine.
static HELD: std::sync::OnceLock<
    std::sync::Mutex<(Option<std::net::TcpListener>, Option<std::net::UdpSocket>)>,
> = std::sync::OnceLock::new();

/// Runs one walkthrough; its report (ok, SKIPPED, or where it failed) goes to the test output.
fn walk(name: &str) {
    HELD.get_or_init(|| std::sync::Mutex::new(common::hold_default_ports()));
    let mut cmd = runner();
    cmd.arg(name);
    if name == "postgres" {
        if let Some(url) = common::fresh_postgres() {
            cmd.env("SEALRELAY_DOCTEST_DATABASE_URL", url);
        }
    }
    let out = cmd.output().expect("run python3 tests/docs/run.py");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "walkthrough {name} failed:\n{report}");
}

macro_rules! walkthroughs {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { walk($name) })*
        const NAMES: &[&str] = &[$($name),*];
    };
}

walkthroughs! {
    readme_quickstart => "quickstart",
    readme_by_hand => "by-hand",
    readme_age_interop => "age",
    keys_enroll_on_separate_machines => "enroll",
    keys_rotate_renew_revoke => "rotate",
    keys_a_reset_alerts_and_waits => "reset",
    ui_requester => "requester",
    mcp_walkthrough => "mcp",
    sources_walkthrough => "sources",
    witness_walkthrough => "witness",
    operations_deploy_to_a_host => "deploy",
    operations_postgres => "postgres",
    policy_prove_walkthrough => "policy-prove",
}

/// Every walkthrough in the docs has its test above, and every test its walkthrough.
#[test]
fn every_walkthrough_has_a_test() {
    let out = runner().arg("--list").output().expect("run python3");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "run.py --list failed:\n{listed}");
    let mut found: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    let mut want = NAMES.to_vec();
    found.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        found, want,
        "tests/docs.rs lists other walkthroughs than the docs hold"
    );
}
