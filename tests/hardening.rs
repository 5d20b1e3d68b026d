//! Regression tests for the defects an adversary found (issue: make the security promises
//! hold): each fails on the code before the fix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{fails_cleanly, ok_in, run_in};

/// keys init; alice (user) and research-bot (agent, tickets/*) enrolled through the CLI.
fn cli_world(dir: &Path) {
    ok_in(dir, &["keys", "init", "--dir", "keys"]);
    for (name, kind, out) in [
        ("alice", "user", "alice.id"),
        ("research-bot", "agent", "bot.id"),
    ] {
        ok_in(
            dir,
            &["keys", "gen", "--name", name, "--kind", kind, "--out", out],
        );
    }
    ok_in(dir, &["user", "add", "alice.id.request", "--dir", "keys"]);
    ok_in(
        dir,
        &[
            "agent",
            "add",
            "bot.id.request",
            "--dir",
            "keys",
            "--scope",
            "tickets/*",
        ],
    );
    ok_in(
        dir,
        &[
            "keys",
            "import",
            "--identity",
            "alice.id",
            "alice.id.bundle",
        ],
    );
    ok_in(
        dir,
        &["keys", "import", "--identity", "bot.id", "bot.id.bundle"],
    );
}

/// Defect 1: a revocation made offline (`user revoke` without `--relay`) was lost when the
/// relay restarted: the revoked user kept full access.
#[test]
fn an_offline_revocation_holds_across_a_relay_restart() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    cli_world(dir);
    let (server, addr) = common::serve(dir, &[]);
    ok_in(dir, &["inbox", "--identity", "alice.id", "--relay", &addr]);
    common::terminate(server);
    ok_in(dir, &["user", "revoke", "alice", "--dir", "keys"]);
    // Twice: the first start loads it from disk, the second from the store.
    for _ in 0..2 {
        let (server, addr) = common::serve(dir, &[]);
        let (code, _, err) = run_in(dir, &["inbox", "--identity", "alice.id", "--relay", &addr]);
        assert_ne!(code, 0, "a revoked user read her inbox");
        assert!(err.contains("revoked"), "{err}");
        let (code, _, err) = run_in(
            dir,
            &[
                "grant",
                "--identity",
                "alice.id",
                "--agent",
                "research-bot",
                "--resource",
                "tickets/1",
                "--relay",
                &addr,
            ],
        );
        assert_ne!(code, 0, "a revoked user made a grant");
        assert!(err.contains("revoked"), "{err}");
        common::terminate(server);
    }
    // `directory push` carries the revocation it counts.
    let (server, addr) = common::serve(dir, &[]);
    let out = ok_in(
        dir,
        &["directory", "push", "--dir", "keys", "--relay", &addr],
    );
    assert!(out.contains("1 revocation"), "{out}");
    common::terminate(server);
}

/// Defect 4: `seal -o /dev/null` replaced the device with a regular file (run as root).
#[test]
fn outputs_onto_devices_and_links_keep_their_kind() {
    use std::os::unix::fs::FileTypeExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "alice.id",
        ],
    );
    let alice = sealrelay::local::identity_file::load(&dir.join("alice.id"), None).unwrap();
    let recipient = alice.age_identity.as_ref().unwrap().to_public().to_string();
    std::fs::write(dir.join("plain"), b"hello").unwrap();
    // A FIFO with a reader: written in place, still a FIFO afterwards.
    let fifo = dir.join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    ok_in(dir, &["seal", "--to", &recipient, "-o", "pipe", "plain"]);
    // Checked before joining the reader: a FIFO replaced by a file would leave it waiting.
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO was replaced by a regular file"
    );
    let sealed = reader.join().unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    std::fs::remove_file(&fifo).unwrap(); // the snapshot below reads every file
                                          // A character device (a private copy of /dev/null, so that broken code cannot replace the
                                          // machine's own) stays a device.
    let null = dir.join("null");
    let made = std::process::Command::new("mknod")
        .args([null.to_str().unwrap(), "c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    if made {
        ok_in(dir, &["seal", "--to", &recipient, "-o", "null", "plain"]);
        assert!(
            std::fs::metadata(&null)
                .unwrap()
                .file_type()
                .is_char_device(),
            "the device was replaced by a regular file"
        );
        std::fs::remove_file(&null).unwrap();
    } else {
        eprintln!("SKIPPED: the device half (mknod is not permitted here)");
    }
    // A directory is refused with one line, and nothing changes.
    std::fs::create_dir(dir.join("outdir")).unwrap();
    fails_cleanly(
        dir,
        &["seal", "--to", &recipient, "-o", "outdir", "plain"],
        3,
        "is a directory",
    );
}
