//! Post-quantum interop with an independent age implementation: typage (`age-encryption` on
//! npm, run with Node; `.ci/run` installs it into a temporary directory named by
//! `SEALRELAY_TYPAGE_DIR`). Both ways, byte-exact, at 0, 1, 65535, 65536, 65537 bytes and
//! 10 MiB: typage seals to a sealrelay hybrid recipient and `sealrelay open` opens; `sealrelay
//! seal` seals to a typage hybrid recipient and typage opens. Skips with a message when Node or
//! the package is missing (fails under `SEALRELAY_REQUIRE_TOOLS`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok_in, pattern};

fn typage() -> Option<PathBuf> {
    let dir = std::env::var_os("SEALRELAY_TYPAGE_DIR").map(PathBuf::from);
    let ok = dir
        .as_ref()
        .is_some_and(|d| d.join("node_modules/age-encryption/dist/index.js").exists())
        && common::have_tool("node");
    if ok {
        return dir;
    }
    let msg = "typage is not installed (npm install age-encryption into $SEALRELAY_TYPAGE_DIR; node on PATH): skipping";
    assert!(
        std::env::var_os("SEALRELAY_REQUIRE_TOOLS").is_none(),
        "{msg}"
    );
    eprintln!("SKIP: {msg}");
    None
}

fn node(typage: &Path, args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/typage/interop.mjs");
    let out = Command::new("node")
        .arg(script)
        .args(args)
        .env("SEALRELAY_TYPAGE_DIR", typage)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "typage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn typage_and_sealrelay_open_each_others_hybrid_envelopes() {
    let Some(ty) = typage() else { return };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // A sealrelay user key (hybrid by default) and a typage one.
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "alice.id",
        ],
    );
    let alice_id = std::fs::read_to_string(dir.join("alice.id")).unwrap();
    let ours = alice_id
        .lines()
        .find(|l| l.starts_with(sealrelay::core::envelope::keys::PQ_SECRET_PREFIX))
        .expect("keys gen makes a hybrid key for users");
    std::fs::write(dir.join("ours.key"), format!("{ours}\n")).unwrap();
    std::fs::set_permissions(
        dir.join("ours.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let ours_pub = sealrelay::core::envelope::keys::AgeIdentity::parse(ours)
        .unwrap()
        .to_public()
        .to_string();
    assert!(ours_pub.starts_with("age1pq1"));
    node(
        &ty,
        &[
            "keygen",
            dir.join("theirs.key").to_str().unwrap(),
            dir.join("theirs.pub").to_str().unwrap(),
        ],
    );
    let theirs_pub = std::fs::read_to_string(dir.join("theirs.pub"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(theirs_pub.starts_with("age1pq1"), "{theirs_pub}");
    for (i, size) in [0usize, 1, 65535, 65536, 65537, 10 << 20]
        .into_iter()
        .enumerate()
    {
        let plain = pattern(size, i as u8 + 1);
        let p = dir.join(format!("plain{size}"));
        std::fs::write(&p, &plain).unwrap();
        // typage → sealrelay.
        let a = dir.join(format!("to-ours{size}.age"));
        node(
            &ty,
            &[
                "encrypt",
                &ours_pub,
                p.to_str().unwrap(),
                a.to_str().unwrap(),
            ],
        );
        let out = dir.join(format!("opened-ours{size}"));
        ok_in(
            dir,
            &[
                "open",
                "--identity",
                "ours.key",
                a.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            plain,
            "typage → sealrelay at {size}"
        );
        // sealrelay → typage.
        let b = dir.join(format!("to-theirs{size}.age"));
        ok_in(
            dir,
            &[
                "seal",
                "--to",
                &theirs_pub,
                p.to_str().unwrap(),
                "-o",
                b.to_str().unwrap(),
            ],
        );
        let out = dir.join(format!("opened-theirs{size}"));
        node(
            &ty,
            &[
                "decrypt",
                dir.join("theirs.key").to_str().unwrap(),
                b.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            plain,
            "sealrelay → typage at {size}"
        );
    }
}
