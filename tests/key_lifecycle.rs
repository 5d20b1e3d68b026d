//! The key lifecycle as an operator and a user walk it, through the real binary and a real
//! `sealrelay serve` (issue 33, defects 1-3): a rotation keeps what the party may do unless told
//! otherwise; a rotation with envelopes waiting loses nothing and blames nobody; a revocation
//! written to the relay's trust-root directory is in force without a push.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ok_in, run_in};

/// Defect 1 (found by walking it): `user add REQUEST --rotate` without `--clearance`/`--role`
/// issued the new serial with clearance 0 and no roles (and `agent add … --rotate` without
/// `--scope`, no scopes). On main the rotated alice below printed "clearance 0, roles []".
#[test]
fn a_rotation_keeps_clearance_roles_and_scopes_unless_told_and_says_what_changed() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    ok_in(dir, &["keys", "init", "--dir", "keys"]);
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "a1.id",
        ],
    );
    ok_in(
        dir,
        &[
            "user",
            "add",
            "a1.id.request",
            "--dir",
            "keys",
            "--clearance",
            "3",
            "--role",
            "approver",
            "--role",
            "auditor",
        ],
    );
    // A new key for alice, nothing else said: everything carries over, and the output says so.
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "a2.id",
        ],
    );
    let out = ok_in(
        dir,
        &["user", "add", "a2.id.request", "--dir", "keys", "--rotate"],
    );
    assert!(out.contains("serial 2"), "{out}");
    assert!(
        out.contains("clearance      3, roles [approver, auditor]"),
        "{out}"
    );
    assert!(out.contains("clearance 3 (kept)"), "{out}");
    assert!(out.contains("roles [approver, auditor] (kept)"), "{out}");
    // A change is stated: the clearance lowered, the roles dropped.
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "alice", "--kind", "user", "--out", "a3.id",
        ],
    );
    let out = ok_in(
        dir,
        &[
            "user",
            "add",
            "a3.id.request",
            "--dir",
            "keys",
            "--rotate",
            "--clearance",
            "1",
            "--no-roles",
        ],
    );
    assert!(out.contains("clearance      1, roles []"), "{out}");
    assert!(out.contains("clearance 1 (changed from 3)"), "{out}");
    assert!(
        out.contains("roles [] (changed from [approver, auditor])"),
        "{out}"
    );
    // Renewal: the same request again (same keys, a new validity period), scopes kept.
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "bot", "--kind", "agent", "--out", "bot.id",
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
            "--scope",
            "public/*",
        ],
    );
    let out = ok_in(
        dir,
        &[
            "agent",
            "add",
            "bot.id.request",
            "--dir",
            "keys",
            "--rotate",
            "--validity",
            "90",
            "-o",
            "bot.id.bundle2",
        ],
    );
    assert!(
        out.contains("scopes         [tickets/*, public/*]"),
        "{out}"
    );
    assert!(out.contains("scopes [tickets/*, public/*] (kept)"), "{out}");
    ok_in(dir, &["directory", "verify", "--dir", "keys"]);
}

/// Polls `f` every 200 ms for up to `secs`; whether it became true.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn grant(dir: &Path, identity: &str, relay: &str, resource: &str) -> String {
    ok_in(
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
    .trim()
    .to_owned()
}

fn send(dir: &Path, relay: &str, grant: &str, data: &str) {
    std::fs::write(dir.join("data.txt"), data).unwrap();
    ok_in(
        dir,
        &[
            "send",
            "--identity",
            "bot.id",
            "--grant",
            grant,
            "--relay",
            relay,
            "data.txt",
        ],
    );
}

/// Defects 2 and 3 through the CLI (found by walking them): a revocation written with
/// `user revoke` (no --relay) was not in force until someone ran `directory push`; and after a
/// rotation with envelopes waiting, the new identity showed them UNVERIFIABLE, `fetch --all`
/// filed undecryptable receipts against the agent, and the old identity was refused, so the
/// data was lost. On main bob was still served after his revocation, and alice's new identity
/// printed "UNVERIFIABLE: the grant is not one you signed".
#[test]
fn a_rotation_with_envelopes_waiting_loses_nothing_and_a_written_revocation_holds_without_a_push() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    common::enroll(dir, "bob", "user", "bob.id");
    let (relay_proc, relay) = common::serve(dir, &[]);

    // Defect 3: bob is revoked on the relay's host, with no push: refused within seconds.
    ok_in(dir, &["inbox", "--identity", "bob.id", "--relay", &relay]);
    let out = ok_in(dir, &["user", "revoke", "bob", "--dir", "keys"]);
    assert!(
        out.contains("directory push"),
        "the output says what else to run: {out}"
    );
    let refused = eventually(20, || {
        let (code, _, err) = run_in(dir, &["inbox", "--identity", "bob.id", "--relay", &relay]);
        code != 0 && err.contains("revoked")
    });
    assert!(
        refused,
        "a revocation written to the relay's DIR/directory was not taken in"
    );

    // Defect 2: two envelopes wait for alice; she rotates her key on her machine, the admin
    // enrolls it (written to the relay's directory: taken in without a push).
    let g1 = grant(dir, "alice.id", &relay, "tickets/1");
    send(dir, &relay, &g1, "first for alice");
    let g2 = grant(dir, "alice.id", &relay, "tickets/2");
    send(dir, &relay, &g2, "second for alice");
    // A grant made with the old key that no agent filled yet.
    let unfilled = grant(dir, "alice.id", &relay, "tickets/unfilled");
    // Her own rotation: new keys signed by her current key (issue 28: a new key without that
    // consent is a reset, which waits).
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
        ],
    );
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
    let taken_in = eventually(20, || {
        let (code, _, _) = run_in(
            dir,
            &["inbox", "--identity", "alice2.id", "--relay", &relay],
        );
        code == 0
    });
    assert!(taken_in, "the rotation was not taken in");
    // Found on review: that one grant (which the agent could not verify against alice's new
    // entry) made the agent's whole listing fail, for every user, until it expired. Since the
    // directory log (issue 28) the relay sends the logged entry that signed it beside the new
    // one, and her rotation's consent links the two: the agent verifies it and lists it.
    let listed = ok_in(dir, &["grants", "--identity", "bot.id", "--relay", &relay]);
    assert!(listed.contains(&unfilled), "{listed}");
    // The new identity recognises her own earlier grants and leaves them for the old key.
    let inbox = ok_in(
        dir,
        &["inbox", "--identity", "alice2.id", "--relay", &relay],
    );
    assert!(!inbox.contains("UNVERIFIABLE"), "{inbox}");
    assert!(inbox.contains("asked with your key of serial 1"), "{inbox}");
    let (code, _, err) = run_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice2.id",
            "--all",
            "-o",
            "new-out",
            "--relay",
            &relay,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("left for now"), "{err}");
    assert!(!err.contains("undecryptable"), "{err}");
    // The old identity, within the grace period, opens both.
    let (code, _, err) = run_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice.id",
            "--all",
            "-o",
            "old-out",
            "--relay",
            &relay,
        ],
    );
    assert_eq!(code, 0, "{err}");
    // The directory fetch made for plaintext is the user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("old-out"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    let opened: Vec<String> = std::fs::read_dir(dir.join("old-out"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(opened.iter().any(|t| t == "first for alice"), "{opened:?}");
    assert!(opened.iter().any(|t| t == "second for alice"), "{opened:?}");
    // But it starts nothing new.
    let (code, _, err) = run_in(
        dir,
        &[
            "grant",
            "--identity",
            "alice.id",
            "--agent",
            "research-bot",
            "--resource",
            "tickets/3",
            "--purpose",
            "p",
            "--relay",
            &relay,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("rotated"), "{err}");
    // And the agent was never counted: it serves alice's new identity at once.
    let g3 = grant(dir, "alice2.id", &relay, "tickets/3");
    send(dir, &relay, &g3, "for the new key");
    let out = ok_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice2.id",
            "--all",
            "-o",
            "new-out2",
            "--relay",
            &relay,
        ],
    );
    let _ = out;
    let got = std::fs::read_dir(dir.join("new-out2"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect::<Vec<_>>();
    assert!(got.iter().any(|t| t == "for the new key"), "{got:?}");
    // Helper-found: the grant made with the old key, filled only now. The agent seals to her
    // newest key (its pins never go back to an older one). Her previous identity cannot open
    // it and is refused a receipt for it (it filed an undecryptable one, which counted against
    // the agent and deleted the ciphertext); her new identity opens it (it refused to, as
    // "sealed to your key of serial 1").
    send(dir, &relay, &unfilled, "filled after the rotation");
    let (_, _, err) = run_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice.id",
            "--all",
            "-o",
            "old-out3",
            "--relay",
            &relay,
        ],
    );
    assert!(err.contains("current identity"), "{err}");
    ok_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice2.id",
            "--all",
            "-o",
            "new-out3",
            "--relay",
            &relay,
        ],
    );
    let got = std::fs::read_dir(dir.join("new-out3"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect::<Vec<_>>();
    assert!(
        got.iter().any(|t| t == "filled after the rotation"),
        "{got:?}"
    );
    common::terminate(relay_proc);
}

/// Safety numbers (issue 28's first piece): `keys show` prints the number of the identity's
/// own, authority-verified entry, the same the library computes for that entry; a key made by
/// someone else for the same name has another number; an identity not enrolled yet is refused
/// with one line and nothing written.
#[test]
fn keys_show_prints_the_safety_number_of_the_identitys_own_keys() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let shown = ok_in(dir, &["keys", "show", "--identity", "alice.id"]);
    let alice = sealrelay::local::identity_file::load(&dir.join("alice.id"), None).unwrap();
    let entry = alice.own_entry().unwrap();
    let number = sealrelay::core::safety::safety_number(&entry);
    assert!(
        shown.contains(&format!("safety number  {number}")),
        "{shown}"
    );
    assert!(shown.contains("spiffe://"), "{shown}");
    // The admin enrolls a second key under alice's name (keys alice never made): its number
    // differs from the one alice compares.
    common::enroll_with(dir, "alice", "user", "mallory.id", &["--rotate"]);
    let other = ok_in(dir, &["keys", "show", "--identity", "mallory.id"]);
    assert!(!other.contains(&number), "{other}");
    assert!(other.contains("safety number  "), "{other}");
    // Not enrolled: one line, exit 3, nothing written.
    ok_in(
        dir,
        &[
            "keys", "gen", "--name", "dave", "--kind", "user", "--out", "dave.id",
        ],
    );
    common::fails_cleanly(
        dir,
        &["keys", "show", "--identity", "dave.id"],
        3,
        "not enrolled yet",
    );
}
