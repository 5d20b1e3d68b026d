//! Interop both ways with the real Go `age` CLI (Debian package `age`) and with the Rust age
//! crate, byte-exact at every size the issue names, through the `sealrelay` binary. Debian's Go
//! age (1.1) predates the hybrid type, so these users take X25519 keys (`keys gen --x25519`);
//! the post-quantum interop is tests/typage.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::str::FromStr;

use common::{ok_in, pattern, run_in};

const SIZES: [usize; 7] = [
    0,
    1,
    65_535,
    65_536,
    65_537,
    3 * 65_536,
    10 * 1024 * 1024 + 3,
];

fn age(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("age")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn go_age_cli_both_ways_at_every_size() {
    if !common::have_tool("age") || !common::have_tool("age-keygen") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // A plain age identity (age-keygen) and a sealrelay user identity (keys gen).
    let keygen = Command::new("age-keygen")
        .args(["-o", "k.txt"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    std::fs::set_permissions(dir.join("k.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .args(["-y", "k.txt"])
            .current_dir(dir)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let recipient = recipient.trim();
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "alice.id", "--x25519",
        ],
    );
    let alice_recipient = String::from_utf8(
        Command::new("age-keygen")
            .args(["-y", "alice.id"])
            .current_dir(dir)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let alice_recipient = alice_recipient.trim();

    for size in SIZES {
        let pt = pattern(size, size as u8);
        std::fs::write(dir.join("pt"), &pt).unwrap();
        // sealrelay seal -> age -d
        ok_in(dir, &["seal", "--to", recipient, "-o", "ours.age", "pt"]);
        // (age -d to stdout: with -o, Go's age creates no file for an empty plaintext.)
        let back = age(dir, &["-d", "-i", "k.txt", "ours.age"]);
        assert!(back == pt, "age -d of ours, size {size}");
        // age -e -> sealrelay open (plain identity, and a sealrelay identity; stdout and -o)
        age(dir, &["-e", "-r", recipient, "-o", "theirs.age", "pt"]);
        let (code, _, err) = run_in(
            dir,
            &[
                "open",
                "--identity",
                "k.txt",
                "-o",
                "theirs.out",
                "theirs.age",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            std::fs::read(dir.join("theirs.out")).unwrap() == pt,
            "open of age -e, size {size}"
        );
        age(dir, &["-e", "-r", alice_recipient, "-o", "alice.age", "pt"]);
        let out = Command::new(common::bin())
            .args(["open", "--identity", "alice.id", "alice.age"])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == pt, "open to stdout, size {size}");
        // And the Go CLI opens a sealrelay identity file directly.
        ok_in(
            dir,
            &["seal", "--to", alice_recipient, "-o", "to-alice.age", "pt"],
        );
        let back = age(dir, &["-d", "-i", "alice.id", "to-alice.age"]);
        assert!(back == pt, "age -d -i alice.id, size {size}");
    }
}

#[test]
fn age_crate_both_ways_at_every_size() {
    let id = age::x25519::Identity::generate();
    let recipient = age::x25519::Recipient::from_str(&id.to_public().to_string()).unwrap();
    for size in SIZES {
        let pt = pattern(size, 7);
        let mut ours = Vec::new();
        sealrelay::core::envelope::seal(&recipient, &mut pt.as_slice(), &mut ours, 2).unwrap();
        let decryptor = age::Decryptor::new(ours.as_slice()).unwrap();
        let mut back = Vec::new();
        decryptor
            .decrypt(std::iter::once(&id as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == pt, "age crate reads ours, size {size}");

        let enc =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .unwrap();
        let mut theirs = Vec::new();
        let mut w = enc.wrap_output(&mut theirs).unwrap();
        w.write_all(&pt).unwrap();
        w.finish().unwrap();
        let mut back = Vec::new();
        sealrelay::core::envelope::open(&[&id], &mut theirs.as_slice(), &mut back, 2).unwrap();
        assert!(back == pt, "we read the age crate, size {size}");
    }
}

#[test]
fn open_refuses_tampered_streams_after_releasing_only_authenticated_chunks() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "alice.id", "--x25519",
        ],
    );
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "bob", "--kind", "user", "--out", "bob.id", "--x25519",
        ],
    );
    let text = std::fs::read_to_string(dir.join("alice.id")).unwrap();
    let key = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap();
    let recipient = age::x25519::Identity::from_str(key)
        .unwrap()
        .to_public()
        .to_string();
    const C: usize = 65_536;
    let pt = pattern(3 * C, 1); // exactly three chunks
    std::fs::write(dir.join("pt"), &pt).unwrap();
    ok_in(dir, &["seal", "--to", &recipient, "-o", "ct", "pt"]);
    let ct = std::fs::read(dir.join("ct")).unwrap();
    let slot = C + 16;
    let payload = ct.len() - 3 * slot; // header + nonce

    let open = |bytes: &[u8], identity: &str| {
        std::fs::write(dir.join("x"), bytes).unwrap();
        let out = Command::new(common::bin())
            .args(["open", "--identity", identity, "x"])
            .current_dir(dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = open(&ct, "alice.id");
    assert_eq!(code, 0);
    assert!(out == pt);

    // Truncated inside the last chunk: chunks 0 and 1 are released, then the error.
    let (code, out, err) = open(&ct[..ct.len() - 100], "alice.id");
    assert_ne!(code, 0);
    assert!(out == pt[..2 * C], "released {} bytes", out.len());
    assert!(err.contains("payload failure"), "{err}");
    // Reordered: chunks 1 and 2 swapped. Chunk 0 authenticates, chunk 1's slot does not.
    let mut swapped = ct.clone();
    swapped[payload + slot..payload + 2 * slot].copy_from_slice(&ct[payload + 2 * slot..]);
    swapped[payload + 2 * slot..].copy_from_slice(&ct[payload + slot..payload + 2 * slot]);
    let (code, out, _) = open(&swapped, "alice.id");
    assert_ne!(code, 0);
    assert!(out == pt[..C], "released {} bytes", out.len());
    // Appended bytes: every chunk authenticates, the extension is refused.
    let mut extended = ct.clone();
    extended.extend_from_slice(b"\x00appended");
    let (code, out, err) = open(&extended, "alice.id");
    assert_ne!(code, 0);
    assert!(out == pt, "released {} bytes", out.len());
    assert!(err.contains("follows the final chunk"), "{err}");
    // With -o, nothing at all is written unless everything authenticates.
    std::fs::write(dir.join("x"), &extended).unwrap();
    let (code, _, _) = run_in(
        dir,
        &["open", "--identity", "alice.id", "-o", "out.txt", "x"],
    );
    assert_ne!(code, 0);
    assert!(!dir.join("out.txt").exists());
    // A wrong identity.
    let (code, out, err) = open(&ct, "bob.id");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("not sealed to this key"), "{err}");
}
