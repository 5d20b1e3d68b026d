//! Provisioning through the real binary: keys init → keys gen → user/agent add → keys import →
//! directory verify, tampering, and every bad input failing with one line and no writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use common::{fails_cleanly, ok_in, run_in};

fn provision(dir: &Path) {
    ok_in(
        dir,
        &[
            "keys",
            "init",
            "--dir",
            "keys",
            "--trust-domain",
            "example.org",
        ],
    );
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "alice.id",
        ],
    );
    ok_in(
        dir,
        &[
            "keys",
            "gen",
            "--name",
            "research-bot",
            "--kind",
            "agent",
            "--out",
            "bot.id",
        ],
    );
    ok_in(
        dir,
        &[
            "user",
            "add",
            "alice.id.request",
            "--dir",
            "keys",
            "--clearance",
            "2",
            "--role",
            "engineer",
        ],
    );
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

#[test]
fn provision_import_verify_and_certificates() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    provision(dir);
    let out = ok_in(dir, &["directory", "verify", "--dir", "keys"]);
    assert!(out.contains("spiffe://example.org/user/alice"), "{out}");
    assert!(
        out.contains("spiffe://example.org/agent/research-bot"),
        "{out}"
    );
    assert!(
        out.contains("ok: 3 signed statements (1 users, 1 agents, 1 admins, 0 revoked)"),
        "{out}"
    );

    // Private files are 0600, and the trust root holds the files the docs promise.
    for f in [
        "alice.id",
        "bot.id",
        "keys/authority.key",
        "keys/ca.key",
        "keys/relay.key",
        "keys/log.key",
        "keys/admin.id",
    ] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    for f in [
        "keys/authority.pub",
        "keys/log.pub",
        "keys/ca.crt",
        "keys/relay.crt",
        "keys/root.json",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }

    // openssl agrees: the client certificate chains to the CA and names the SPIFFE ID.
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-CAfile", "keys/ca.crt", "alice.id.crt"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "alice.id.crt"])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("URI:spiffe://example.org/user/alice"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    let relay = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "keys/relay.crt"])
        .current_dir(dir)
        .output()
        .unwrap();
    let relay = String::from_utf8_lossy(&relay.stdout);
    assert!(
        relay.contains("URI:spiffe://example.org/relay/relay"),
        "{relay}"
    );
    assert!(
        relay.contains("DNS:localhost") && relay.contains("IP Address:127.0.0.1"),
        "{relay}"
    );

    // The identity file is also a plain age identity: Go's age-keygen reads its recipient
    // (Debian's age 1.1 knows X25519 keys only; hybrid keys need age 1.3 or later).
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "carol", "--kind", "user", "--out", "carol.id", "--x25519",
        ],
    );
    let y = std::process::Command::new("age-keygen")
        .args(["-y", "carol.id"])
        .current_dir(dir)
        .output();
    if let Ok(y) = y {
        assert!(y.status.success());
        assert!(String::from_utf8_lossy(&y.stdout).starts_with("age1"));
    }
}

#[test]
fn any_flipped_byte_or_foreign_authority_fails_directory_verify() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    provision(dir);
    let entry = dir.join("keys/directory/users/alice.1.entry");
    let original = std::fs::read(&entry).unwrap();
    for i in 0..original.len() {
        let mut bytes = original.clone();
        bytes[i] ^= 0x01;
        std::fs::write(&entry, &bytes).unwrap();
        let (code, _, err) = run_in(dir, &["directory", "verify", "--dir", "keys"]);
        assert_ne!(code, 0, "flipping byte {i} went unnoticed");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("alice.1.entry"),
            "byte {i}: error does not name the entry: {err}"
        );
    }
    std::fs::write(&entry, &original).unwrap();
    ok_in(dir, &["directory", "verify", "--dir", "keys"]);

    // An entry signed by another authority, for the same name, dropped into this directory.
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    ok_in(
        &other,
        &[
            "keys",
            "init",
            "--dir",
            "keys",
            "--trust-domain",
            "example.org",
        ],
    );
    ok_in(
        &other,
        &["user", "add", "alice", "--dir", "keys", "--out", "alice.id"],
    );
    std::fs::copy(other.join("keys/directory/users/alice.1.entry"), &entry).unwrap();
    let (code, _, err) = run_in(dir, &["directory", "verify", "--dir", "keys"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("user/alice") && err.contains("signed by another authority"),
        "{err}"
    );
}

#[test]
fn bad_inputs_fail_with_one_line_and_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    provision(dir);
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "carol", "--kind", "user", "--out", "carol.id",
        ],
    );

    // A corrupt request.
    std::fs::write(
        dir.join("junk.request"),
        b"{\"type\":\"enrollment-request\",",
    )
    .unwrap();
    fails_cleanly(
        dir,
        &["user", "add", "junk.request", "--dir", "keys"],
        3,
        "not a valid enrollment request",
    );

    // A failed proof of possession: rename the party inside the signed statement.
    let req = std::fs::read_to_string(dir.join("carol.id.request")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&req).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut st = b64.decode(json["statement"].as_str().unwrap()).unwrap();
    let pos = st.windows(5).position(|w| w == b"carol").unwrap();
    st[pos] = b'k';
    let forged = format!(
        "{{\"type\":\"enrollment-request\",\"statement\":\"{}\",\"signature\":\"{}\"}}\n",
        b64.encode(&st),
        json["signature"].as_str().unwrap()
    );
    std::fs::write(dir.join("forged.request"), forged).unwrap();
    fails_cleanly(
        dir,
        &["user", "add", "forged.request", "--dir", "keys"],
        1,
        "proof of possession failed",
    );

    // A duplicate name (alice is enrolled; a second request for alice is refused).
    ok_in(
        dir,
        &[
            "keys",
            "gen",
            "--name",
            "alice",
            "--kind",
            "user",
            "--out",
            "alice2.id",
        ],
    );
    fails_cleanly(
        dir,
        &["user", "add", "alice2.id.request", "--dir", "keys"],
        4,
        "already enrolled",
    );
    fails_cleanly(
        dir,
        &["user", "add", "alice", "--dir", "keys", "--out", "new.id"],
        4,
        "already enrolled",
    );

    // A request of the wrong kind for the command.
    fails_cleanly(
        dir,
        &["agent", "add", "carol.id.request", "--dir", "keys"],
        3,
        "use `sealrelay user add`",
    );

    // A world-readable identity file.
    std::fs::set_permissions(dir.join("carol.id"), std::fs::Permissions::from_mode(0o644)).unwrap();
    fails_cleanly(
        dir,
        &[
            "keys",
            "import",
            "--identity",
            "carol.id",
            "alice.id.bundle",
        ],
        3,
        "chmod 600",
    );
    std::fs::set_permissions(dir.join("carol.id"), std::fs::Permissions::from_mode(0o600)).unwrap();

    // A bundle for someone else.
    fails_cleanly(
        dir,
        &[
            "keys",
            "import",
            "--identity",
            "carol.id",
            "alice.id.bundle",
        ],
        3,
        "is for user/alice",
    );
    fails_cleanly(
        dir,
        &["keys", "import", "--identity", "bot.id", "alice.id.bundle"],
        3,
        "is for user/alice",
    );

    // Missing files.
    fails_cleanly(
        dir,
        &["user", "add", "missing.request", "--dir", "keys"],
        8,
        "does not exist",
    );
    fails_cleanly(
        dir,
        &[
            "keys",
            "import",
            "--identity",
            "nobody.id",
            "alice.id.bundle",
        ],
        8,
        "does not exist",
    );
    fails_cleanly(
        dir,
        &["directory", "verify", "--dir", "nokeys"],
        8,
        "does not exist",
    );
    fails_cleanly(
        dir,
        &["user", "add", "carol.id.request", "--dir", "nokeys"],
        8,
        "keys init",
    );

    // A corrupt identity file.
    std::fs::write(dir.join("bad.id"), b"# sealrelay-version: 1\nnot a key\n").unwrap();
    std::fs::set_permissions(dir.join("bad.id"), std::fs::Permissions::from_mode(0o600)).unwrap();
    fails_cleanly(
        dir,
        &["keys", "import", "--identity", "bad.id", "alice.id.bundle"],
        3,
        "bad.id",
    );

    // Overwrites are refused.
    fails_cleanly(dir, &["keys", "init", "--dir", "keys"], 4, "--force");
    fails_cleanly(
        dir,
        &[
            "keys", "gen", "--name", "x", "--kind", "user", "--out", "alice.id",
        ],
        4,
        "already exists",
    );

    // Bad names and attributes.
    fails_cleanly(
        dir,
        &[
            "keys", "gen", "--name", "Bad Name", "--kind", "user", "--out", "b.id",
        ],
        3,
        "invalid name",
    );
    fails_cleanly(
        dir,
        &[
            "keys", "gen", "--name", "b", "--kind", "robot", "--out", "b.id",
        ],
        3,
        "unknown party kind",
    );
    fails_cleanly(
        dir,
        &[
            "user",
            "add",
            "carol.id.request",
            "--dir",
            "keys",
            "--clearance",
            "12",
        ],
        3,
        "clearance",
    );
    fails_cleanly(
        dir,
        &[
            "user",
            "add",
            "carol.id.request",
            "--dir",
            "keys",
            "--scope",
            "x",
        ],
        3,
        "not scopes",
    );

    // After all that, the directory still verifies and carol can still be enrolled.
    ok_in(dir, &["directory", "verify", "--dir", "keys"]);
    ok_in(dir, &["user", "add", "carol.id.request", "--dir", "keys"]);
}

#[test]
fn one_step_add_rotation_and_revocation() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    provision(dir);
    let out = ok_in(
        dir,
        &[
            "user", "add", "bob", "--dir", "keys", "--out", "bob.id", "--role", "approver",
        ],
    );
    assert!(out.contains("generated here in one step"), "{out}");
    assert_eq!(
        std::fs::metadata(dir.join("bob.id"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Rotation: a new key pair for alice, serial 2 supersedes serial 1.
    ok_in(
        dir,
        &[
            "keys",
            "gen",
            "--name",
            "alice",
            "--kind",
            "user",
            "--out",
            "alice-new.id",
        ],
    );
    let out = ok_in(
        dir,
        &[
            "user",
            "add",
            "alice-new.id.request",
            "--dir",
            "keys",
            "--rotate",
        ],
    );
    assert!(out.contains("(serial 2)"), "{out}");
    ok_in(
        dir,
        &[
            "keys",
            "import",
            "--identity",
            "alice-new.id",
            "alice-new.id.bundle",
        ],
    );

    ok_in(
        dir,
        &[
            "agent",
            "revoke",
            "research-bot",
            "--dir",
            "keys",
            "--reason",
            "test",
        ],
    );
    let out = ok_in(dir, &["directory", "verify", "--dir", "keys"]);
    assert!(out.contains("1 revoked"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("agent/research-bot") && l.contains("revoked")),
        "{out}"
    );
    fails_cleanly(
        dir,
        &["agent", "revoke", "research-bot", "--dir", "keys"],
        4,
        "already revoked",
    );
    fails_cleanly(
        dir,
        &["user", "revoke", "nobody", "--dir", "keys"],
        8,
        "not in the directory",
    );
}

/// `openssl ARGS` in `dir`: its stdout, after it succeeded.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 33: a client that dials a name the relay's certificate lacks is told so in one line,
/// with the command that fixes it; `keys reissue-relay` reissues the relay certificate alone
/// (new names, new key) while the CA, the authority, the log keys and every party enrolled
/// before stay as they were, and the restarted relay serves them under the new name.
#[test]
fn reissue_relay_names_a_new_host_and_keeps_every_party() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    provision(dir);
    let kept = [
        "keys/ca.crt",
        "keys/ca.key",
        "keys/authority.key",
        "keys/authority.pub",
        "keys/log.key",
        "keys/log.pub",
        "keys/root.json",
        "keys/admin.id",
    ];
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let before = kept.map(read);
    let old_key = read("keys/relay.key");

    // The relay on 127.0.0.2 (all of 127/8 is loopback), a name its certificate lacks.
    let (relay, addr) = common::serve_at(dir, "127.0.0.2:0", &[]);
    let (code, _, err) = run_in(dir, &["inbox", "--identity", "alice.id", "--relay", &addr]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("certificate does not name 127.0.0.2")
            && err.contains("keys reissue-relay --san 127.0.0.2"),
        "{err}"
    );
    common::terminate(relay);

    let out = ok_in(
        dir,
        &[
            "keys",
            "reissue-relay",
            "--dir",
            "keys",
            "--san",
            "example.test",
            "--san",
            "127.0.0.2",
        ],
    );
    assert!(
        out.contains("localhost, 127.0.0.1, ::1, example.test, 127.0.0.2"),
        "{out}"
    );
    assert!(out.contains("restart `sealrelay serve`"), "{out}");

    // openssl agrees: the new certificate names example.test and 127.0.0.2, carries the relay's
    // SPIFFE ID and chains to the CA, which is unchanged.
    let text = openssl(dir, &["x509", "-noout", "-text", "-in", "keys/relay.crt"]);
    assert!(
        text.contains("DNS:example.test")
            && text.contains("IP Address:127.0.0.2")
            && text.contains("DNS:localhost")
            && text.contains("URI:spiffe://example.org/relay/relay")
            && text.contains("TLS Web Server Authentication"),
        "{text}"
    );
    openssl(dir, &["verify", "-CAfile", "keys/ca.crt", "keys/relay.crt"]);
    assert!(
        kept.map(read) == before,
        "keys reissue-relay changed more than relay.crt and relay.key"
    );
    assert_ne!(read("keys/relay.key"), old_key, "a new key is the default");
    let mode = std::fs::metadata(dir.join("keys/relay.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Everyone enrolled before still verifies and imports; enrollment goes on.
    let out = ok_in(dir, &["directory", "verify", "--dir", "keys"]);
    assert!(out.contains("ok: 3 signed statements"), "{out}");
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
        &["user", "add", "carol", "--dir", "keys", "--out", "carol.id"],
    );

    // Restarted, the relay serves alice, enrolled before, under the new name.
    let (relay, addr) = common::serve_at(dir, "127.0.0.2:0", &[]);
    ok_in(dir, &["inbox", "--identity", "alice.id", "--relay", &addr]);
    common::terminate(relay);

    // A renewal keeps the names; --keep-key keeps the key.
    let key = read("keys/relay.key");
    let out = ok_in(
        dir,
        &["keys", "reissue-relay", "--dir", "keys", "--keep-key"],
    );
    assert!(out.contains("example.test, 127.0.0.2"), "{out}");
    assert_eq!(read("keys/relay.key"), key);

    // Bad input: one line, nothing written.
    fails_cleanly(
        dir,
        &[
            "keys",
            "reissue-relay",
            "--dir",
            "keys",
            "--san",
            "example.test:4433",
        ],
        3,
        "not a DNS name",
    );
    fails_cleanly(
        dir,
        &["keys", "reissue-relay", "--dir", "keys", "--validity", "0"],
        3,
        "at least 1 day",
    );
    fails_cleanly(
        dir,
        &[
            "keys",
            "reissue-relay",
            "--dir",
            "keys",
            "--validity",
            "99999",
        ],
        3,
        "may not outlive",
    );
    fails_cleanly(
        dir,
        &["keys", "reissue-relay", "--dir", "nowhere"],
        8,
        "no trust root",
    );
}

#[test]
fn every_command_has_help() {
    let t = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["keys", "init", "--help"],
        vec!["keys", "gen", "--help"],
        vec!["keys", "import", "--help"],
        vec!["keys", "reissue-relay", "--help"],
        vec!["user", "add", "--help"],
        vec!["user", "revoke", "--help"],
        vec!["agent", "add", "--help"],
        vec!["agent", "revoke", "--help"],
        vec!["directory", "verify", "--help"],
        vec!["seal", "--help"],
        vec!["open", "--help"],
        vec!["demo", "--help"],
    ] {
        let out = ok_in(t.path(), &args);
        assert!(out.contains("Usage: sealrelay"), "{args:?}: {out}");
    }
    let (code, _, err) = run_in(t.path(), &["no-such-command"]);
    assert_eq!(code, 2, "{err}");
}
