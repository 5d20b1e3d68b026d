//! Key transparency through the real binary and a real `sealrelay serve` (issue 28, threats 47
//! and 48, docs/keys.md): an admin enrolls a key alice never made; alice is told (inbox, keys
//! watch, over the relay and over plain HTTP when revoked); agents refuse to seal to it and the
//! relay refuses its grants until the waiting period has passed; alice's own rotation is in
//! force at once with no alert; a relay that shows a client another directory log is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{enroll, ok_in, run_in, serve_with_admin, store_env, terminate};

/// The waiting period the tests' trust roots pin (short, so that its end can be seen).
const WAIT_SECS: u64 = 6;

fn world(dir: &Path) {
    ok_in(
        dir,
        &[
            "keys",
            "init",
            "--dir",
            "keys",
            "--reset-wait",
            &format!("{WAIT_SECS}s"),
        ],
    );
    enroll(dir, "alice", "user", "alice.id");
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
        &["keys", "import", "--identity", "bot.id", "bot.id.bundle"],
    );
}

fn grant(dir: &Path, identity: &str, resource: &str, relay: &str) -> (i32, String, String) {
    run_in(
        dir,
        &[
            "grant",
            "--identity",
            identity,
            "--agent",
            "research-bot",
            "--resource",
            resource,
            "--purpose",
            "triage",
            "--relay",
            relay,
        ],
    )
}

fn send(dir: &Path, grant: &str, file: &str, relay: &str) -> (i32, String, String) {
    run_in(
        dir,
        &[
            "send",
            "--identity",
            "bot.id",
            "--grant",
            grant,
            file,
            "--relay",
            relay,
        ],
    )
}

fn one_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    lines[0]
}

/// Acceptance 1 and 4 (threat 47): the admin enrolls a key for alice that alice did not make.
#[test]
fn a_key_alice_did_not_make_alerts_her_waits_and_is_refused_until_the_wait_ends() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    world(dir);
    std::fs::write(dir.join("doc.txt"), b"ticket 7: the canary KT-CANARY-1\n").unwrap();
    let (relay_proc, relay, admin) = serve_with_admin(dir, "data", store_env(dir));
    // alice reads her inbox once: her client has seen the directory log with her own key.
    ok_in(dir, &["inbox", "--identity", "alice.id", "--relay", &relay]);
    let (code, g1, err) = grant(dir, "alice.id", "tickets/7", &relay);
    assert_eq!(code, 0, "{err}");
    let g1 = g1.trim().to_owned();

    // The attack: a key made by the admin, enrolled as alice's next serial.
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "rogue.id",
        ],
    );
    let enrolled_at = sealrelay::clock::now();
    let out = ok_in(
        dir,
        &[
            "user",
            "add",
            "rogue.id.request",
            "--dir",
            "keys",
            "--rotate",
            "--relay",
            &relay,
        ],
    );
    assert!(
        out.contains("RESET"),
        "the admin is told it is a reset: {out}"
    );
    ok_in(
        dir,
        &[
            "keys",
            "import",
            "--identity",
            "rogue.id",
            "rogue.id.bundle",
        ],
    );

    // (a) alice's next inbox alerts her (exit 9), naming the admin and the time.
    let (code, _, err) = run_in(dir, &["inbox", "--identity", "alice.id", "--relay", &relay]);
    assert_eq!(code, 9, "{err}");
    assert!(err.contains("KEY ALERT"), "{err}");
    assert!(
        err.contains("enrolled under your name by admin at"),
        "{err}"
    );
    let day = sealrelay::clock::rfc3339(enrolled_at);
    assert!(err.contains(&day[..13]), "the time ({day}): {err}");
    // … and so does keys watch, with the safety number of the key she did not make. (Helper-
    // found: with the relay given as SEALRELAY_RELAY, as every other command takes it, `keys
    // watch` stopped at "no relay" (exit 3), so a cron job never got the alert's exit 9.)
    let by_env = std::process::Command::new(common::bin())
        .args(["keys", "watch", "--identity", "alice.id"])
        .current_dir(dir)
        .env("SEALRELAY_RELAY", &relay)
        .output()
        .unwrap();
    assert_eq!(
        by_env.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&by_env.stderr)
    );
    let (code, out, _) = run_in(
        dir,
        &["keys", "watch", "--identity", "alice.id", "--relay", &relay],
    );
    assert_eq!(code, 9, "{out}");
    let rogue_show = ok_in(dir, &["keys", "show", "--identity", "rogue.id"]);
    let rogue_number = rogue_show
        .lines()
        .find_map(|l| l.trim().strip_prefix("safety number"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(out.contains(&rogue_number), "{out}\n{rogue_number}");
    assert!(out.contains("reset, serial 2"), "{out}");

    // (b) the agent refuses to seal to the new key, with one line (nothing is sent).
    let (code, _, err) = send(dir, &g1, "doc.txt", &relay);
    assert_eq!(code, 1, "{err}");
    let line = one_line(&err);
    assert!(line.contains("was enrolled by admin"), "{line}");
    assert!(line.contains("nothing is sealed to it until"), "{line}");

    // (c) a grant made with the new key is refused by the relay during the wait.
    let (code, _, err) = grant(dir, "rogue.id", "tickets/8", &relay);
    assert_eq!(code, 6, "{err}");
    assert!(one_line(&err).contains("is not in force until"), "{err}");

    // (d) after the waiting period the new key works, and the alert stays in alice's history.
    let deadline = Instant::now() + Duration::from_secs(WAIT_SECS + 30);
    let g2 = loop {
        let (code, out, err) = grant(dir, "rogue.id", "tickets/8", &relay);
        if code == 0 {
            break out.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the reset never came into force: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (code, _, err) = send(dir, &g2, "doc.txt", &relay);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run_in(
        dir,
        &["keys", "watch", "--identity", "alice.id", "--relay", &relay],
    );
    assert_eq!(code, 9, "still open until acknowledged: {out}");
    assert!(
        out.contains("0 new alert(s), 1 open, 1 in the history"),
        "{out}"
    );
    ok_in(
        dir,
        &[
            "keys",
            "watch",
            "--identity",
            "alice.id",
            "--relay",
            &relay,
            "--acknowledge",
        ],
    );
    let out = ok_in(
        dir,
        &["keys", "watch", "--identity", "alice.id", "--relay", &relay],
    );
    assert!(
        out.contains("(acknowledged)"),
        "the history keeps it: {out}"
    );

    // Acceptance 4: revoked, alice still reads the log, over plain HTTP with no certificate.
    ok_in(
        dir,
        &[
            "user", "revoke", "alice", "--dir", "keys", "--relay", &relay,
        ],
    );
    let (code, _, err) = run_in(
        dir,
        &["keys", "watch", "--identity", "alice.id", "--relay", &relay],
    );
    assert_ne!(code, 0, "a revoked identity cannot use the relay: {err}");
    std::fs::remove_file(dir.join("alice.id.keywatch")).unwrap();
    let url = admin.clone();
    assert!(url.starts_with("http://"), "{url}");
    let (code, out, err) = run_in(
        dir,
        &["keys", "watch", "--identity", "alice.id", "--log-url", &url],
    );
    assert_eq!(code, 9, "{out}{err}");
    assert!(out.contains("1 new alert(s)"), "{out}");
    assert!(out.contains(&rogue_number), "{out}");
    terminate(relay_proc);
}

/// Acceptance 2: alice's own rotation is in force at once, with no alert, and what was sealed
/// to her old key still opens with her old identity.
#[test]
fn alices_own_rotation_is_in_force_at_once_with_no_alert() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    world(dir);
    std::fs::write(dir.join("old.txt"), b"sealed to the old key\n").unwrap();
    std::fs::write(dir.join("new.txt"), b"sealed to the new key\n").unwrap();
    let (relay_proc, relay, _) = serve_with_admin(dir, "data", store_env(dir));
    ok_in(dir, &["inbox", "--identity", "alice.id", "--relay", &relay]);
    let (_, g_old, _) = grant(dir, "alice.id", "tickets/1", &relay);
    let (code, _, err) = send(dir, g_old.trim(), "old.txt", &relay);
    assert_eq!(code, 0, "{err}");

    // keys rotate on alice's machine; the admin enrolls that request.
    let out = ok_in(
        dir,
        &[
            "keys",
            "rotate",
            "--identity",
            "alice.id",
            "--out",
            "alice2.id",
        ],
    );
    assert!(out.contains("alice2.id.rotation"), "{out}");
    let out = ok_in(
        dir,
        &[
            "user",
            "add",
            "alice2.id.request",
            "--dir",
            "keys",
            "--rotate",
            "--relay",
            &relay,
        ],
    );
    assert!(out.contains("rotation, signed by serial 1's key"), "{out}");
    assert!(!out.contains("RESET"), "{out}");
    ok_in(
        dir,
        &[
            "keys",
            "import",
            "--identity",
            "alice2.id",
            "alice2.id.bundle",
        ],
    );

    // At once: a grant with the new key, sealed to the new key, no waiting.
    let (code, g_new, err) = grant(dir, "alice2.id", "tickets/2", &relay);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = send(dir, g_new.trim(), "new.txt", &relay);
    assert_eq!(code, 0, "{err}");
    // No alert, for either identity.
    for id in ["alice.id", "alice2.id"] {
        let (code, out, err) = run_in(dir, &["keys", "watch", "--identity", id, "--relay", &relay]);
        assert_eq!(code, 0, "{id}: {out}{err}");
        assert!(out.contains("0 new alert(s), 0 open"), "{id}: {out}");
    }
    let (code, _, err) = run_in(
        dir,
        &["inbox", "--identity", "alice2.id", "--relay", &relay],
    );
    assert_eq!(code, 0, "{err}");
    // The old key's envelope opens with the old identity; the new one's with the new.
    let (code, _, err) = run_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice.id",
            "--all",
            "-o",
            "got-old",
            "--relay",
            &relay,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice2.id",
            "--all",
            "-o",
            "got-new",
            "--relay",
            &relay,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let read_all = |d: &str| -> Vec<Vec<u8>> {
        std::fs::read_dir(dir.join(d))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none())
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    };
    assert_eq!(
        read_all("got-old"),
        vec![b"sealed to the old key\n".to_vec()]
    );
    assert_eq!(
        read_all("got-new"),
        vec![b"sealed to the new key\n".to_vec()]
    );
    terminate(relay_proc);
}

/// Acceptance 3 (threat 48): two relays with copies of one trust root show the agent and
/// alice two directory logs that fork (carol enrolled on the first, a key for alice alice did
/// not make on the second, at the same place in the log). Having seen the first, the agent
/// refuses the second with one line, and alice's watch refuses it too.
#[test]
fn a_relay_that_shows_a_client_another_directory_log_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = &t.path().join("a");
    let dir_b = &t.path().join("b");
    std::fs::create_dir(dir).unwrap();
    world(dir);
    std::fs::write(dir.join("doc.txt"), b"x\n").unwrap();
    let copied = std::process::Command::new("cp")
        .args(["-a", dir.to_str().unwrap(), dir_b.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
    let (a_proc, a, _) = serve_with_admin(dir, "data", Vec::new());
    let (b_proc, b, _) = serve_with_admin(dir_b, "data", Vec::new());
    // On A: carol joins. The agent and alice then read A's directory log.
    ok_in(
        dir,
        &[
            "user", "add", "carol", "--dir", "keys", "--out", "carol.id", "--relay", &a,
        ],
    );
    let (_, g, _) = grant(dir, "alice.id", "tickets/1", &a);
    let (code, _, err) = send(dir, g.trim(), "doc.txt", &a);
    assert_eq!(code, 0, "{err}");
    ok_in(
        dir,
        &["keys", "watch", "--identity", "alice.id", "--relay", &a],
    );
    // On B, at the same place in its log: a key for alice.
    ok_in(
        dir_b,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "rogue.id",
        ],
    );
    ok_in(
        dir_b,
        &[
            "user",
            "add",
            "rogue.id.request",
            "--dir",
            "keys",
            "--rotate",
            "--relay",
            &b,
        ],
    );
    let (code, g, err) = grant(dir, "alice.id", "tickets/2", &b);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = send(dir, g.trim(), "doc.txt", &b);
    assert_eq!(code, 1, "{err}");
    let line = one_line(&err);
    assert!(line.contains("directory log"), "{line}");
    assert!(line.contains("FORK"), "{line}");
    let (code, _, err) = run_in(
        dir,
        &["keys", "watch", "--identity", "alice.id", "--relay", &b],
    );
    assert_eq!(code, 1, "{err}");
    assert!(one_line(&err).contains("FORK"), "{err}");
    terminate(b_proc);
    terminate(a_proc);
}

/// Acceptance 5: an independent verifier (Python, `cryptography`, written from the specs and
/// docs/formats.md; `tests/keys/verify_entry.py`) reads alice's entry, its inclusion proof and
/// the directory checkpoint from the relay's admin listener, verifies them, and rejects each
/// altered form.
#[test]
fn an_independent_python_verifier_checks_an_entrys_proof_and_rejects_altered_ones() {
    let Some(py) = common::python_with_cryptography() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    world(dir);
    let (relay_proc, relay, admin) = serve_with_admin(dir, "data", store_env(dir));
    // A rotation too, so the entry carries a consent and sits after other leaves.
    ok_in(
        dir,
        &[
            "keys",
            "rotate",
            "--identity",
            "alice.id",
            "--out",
            "alice2.id",
        ],
    );
    ok_in(
        dir,
        &[
            "user",
            "add",
            "alice2.id.request",
            "--dir",
            "keys",
            "--rotate",
            "--relay",
            &relay,
        ],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/verify_entry.py");
    let read_key = |f: &str| {
        sealrelay::core::sign::VerifierKey::parse(
            std::fs::read_to_string(dir.join("keys").join(f))
                .unwrap()
                .trim(),
        )
        .unwrap()
    };
    let log = read_key("log.pub");
    let dir_key = sealrelay::core::sign::VerifierKey::new(
        &sealrelay::core::keylog::directory_origin(&log.name),
        log.key,
    )
    .unwrap()
    .encode();
    let authority = read_key("authority.pub").encode();
    let party = "spiffe://sealrelay.local/user/alice";
    let fetched = std::process::Command::new(&py)
        .arg(&script)
        .args(["fetch", "--url", &admin, "--party", party])
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stdout)
    );
    let bundle: serde_json::Value = serde_json::from_slice(&fetched.stdout).unwrap();
    let verify = |b: &serde_json::Value| -> String {
        use std::io::Write;
        let mut child = std::process::Command::new(&py)
            .arg(&script)
            .args(["verify", "--log", &dir_key, "--authority", &authority])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = verify(&bundle);
    assert!(ok.starts_with("ok "), "{ok}");
    assert!(ok.contains("serial=2"), "the newest entry: {ok}");
    assert!(ok.contains(party), "{ok}");
    // Each alteration is refused.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let flip = |s: &str, at: usize| -> String {
        let mut bytes = b64.decode(s).unwrap();
        let i = at.min(bytes.len() - 1);
        bytes[i] ^= 1;
        b64.encode(bytes)
    };
    let mut cases: Vec<(&str, serde_json::Value)> = Vec::new();
    let leaf = bundle["leaf"].as_str().unwrap().to_owned();
    for at in [0, 30, 40, 200] {
        let mut b = bundle.clone();
        b["leaf"] = flip(&leaf, at).into();
        cases.push(("a byte of the leaf", b));
    }
    if let Some(first) = bundle["proof"][0].as_str() {
        let mut b = bundle.clone();
        b["proof"][0] = flip(first, 5).into();
        cases.push(("a proof hash", b));
    }
    let mut b = bundle.clone();
    b["index"] = (bundle["index"].as_u64().unwrap() + 1).into();
    cases.push(("the index", b));
    let note = bundle["checkpoint"].as_str().unwrap();
    let mut lines: Vec<String> = note.lines().map(str::to_owned).collect();
    lines[2] = flip(&lines[2], 3);
    let mut b = bundle.clone();
    b["checkpoint"] = format!("{}\n", lines.join("\n")).into();
    cases.push(("the checkpoint's root", b));
    for (what, b) in cases {
        let out = verify(&b);
        assert!(
            out.starts_with("bad "),
            "{what} altered was accepted: {out}"
        );
    }
    terminate(relay_proc);
}

/// A second admin can shorten one reset's wait; the admin who enrolled the key cannot. The
/// approval is logged, the agent checks it, and alice is told.
#[test]
fn only_a_second_admin_can_shorten_a_resets_wait_and_alice_is_told() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    ok_in(
        dir,
        &["keys", "init", "--dir", "keys", "--reset-wait", "1h"],
    );
    enroll(dir, "alice", "user", "alice.id");
    enroll(dir, "second", "admin", "second.id");
    ok_in(
        dir,
        &[
            "agent",
            "add",
            "research-bot",
            "--dir",
            "keys",
            "--scope",
            "tickets/*",
            "--out",
            "bot.id",
        ],
    );
    std::fs::write(dir.join("doc.txt"), b"x\n").unwrap();
    let (relay_proc, relay, _) = serve_with_admin(dir, "data", store_env(dir));
    ok_in(dir, &["inbox", "--identity", "alice.id", "--relay", &relay]);
    let (_, g, _) = grant(dir, "alice.id", "tickets/1", &relay);
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "rogue.id",
        ],
    );
    ok_in(
        dir,
        &[
            "user",
            "add",
            "rogue.id.request",
            "--dir",
            "keys",
            "--rotate",
            "--relay",
            &relay,
        ],
    );
    let (code, _, err) = send(dir, g.trim(), "doc.txt", &relay);
    assert_eq!(code, 1, "waiting: {err}");
    // The admin whose trust root enrolled it cannot shorten its wait.
    let approve = |identity: &str| {
        run_in(
            dir,
            &[
                "user",
                "approve-reset",
                "alice",
                "--serial",
                "2",
                "--wait",
                "1s",
                "--identity",
                identity,
                "--relay",
                &relay,
            ],
        )
    };
    let (code, _, err) = approve("keys/admin.id");
    assert_eq!(code, 6, "{err}");
    assert!(one_line(&err).contains("a second admin must"), "{err}");
    // A second admin can.
    let (code, out, err) = approve("second.id");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("approved a wait of 1s"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _, err) = send(dir, g.trim(), "doc.txt", &relay);
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the approval never took effect: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, _, err) = run_in(dir, &["inbox", "--identity", "alice.id", "--relay", &relay]);
    assert_eq!(code, 9, "{err}");
    assert!(err.contains("approved a shorter waiting period"), "{err}");
    assert!(err.contains("KEY ALERT: second approved"), "{err}");
    terminate(relay_proc);
}

/// `user add --rotate` says what the new serial is: a rotation (in force at once), a reset (it
/// waits, the person is alerted), or a rotation that descends from a reset (it waits with it).
#[test]
fn user_add_says_what_a_new_serial_is() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    ok_in(
        dir,
        &["keys", "init", "--dir", "keys", "--reset-wait", "2h"],
    );
    enroll(dir, "alice", "user", "a1.id");
    let add = |req: &str| ok_in(dir, &["user", "add", req, "--dir", "keys", "--rotate"]);
    let rotate = |from: &str, to: &str| {
        ok_in(dir, &["keys", "rotate", "--identity", from, "--out", to]);
        let out = add(&format!("{to}.request"));
        ok_in(
            dir,
            &["keys", "import", "--identity", to, &format!("{to}.bundle")],
        );
        out
    };
    let out = rotate("a1.id", "a2.id");
    assert!(
        out.contains("rotation, signed by serial 1's key: in force once the relay has it"),
        "{out}"
    );
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "r.id",
        ],
    );
    let out = add("r.id.request");
    assert!(
        out.contains("RESET: a new key serial 2's key did not sign"),
        "{out}"
    );
    assert!(out.contains("cannot grant for 2h"), "{out}");
    ok_in(
        dir,
        &["keys", "import", "--identity", "r.id", "r.id.bundle"],
    );
    let out = rotate("r.id", "r2.id");
    assert!(
        out.contains("in force when that key is (it descends from a reset"),
        "{out}"
    );
    // A key whose serial was revoked vouches for nothing: its consent is refused.
    ok_in(dir, &["user", "revoke", "alice", "--dir", "keys"]);
    ok_in(
        dir,
        &["keys", "rotate", "--identity", "r2.id", "--out", "r3.id"],
    );
    let (code, _, err) = run_in(
        dir,
        &["user", "add", "r3.id.request", "--dir", "keys", "--rotate"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        one_line(&err).contains("is revoked: its key (perhaps leaked) cannot vouch"),
        "{err}"
    );
}
