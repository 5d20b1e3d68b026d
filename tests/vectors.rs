//! The test vectors of `docs/vectors/`: what `sealrelay vectors write` makes is exactly what is
//! checked in, `vectors check` verifies them, `receipt verify` (what users run) accepts the
//! receipt vectors and refuses the ones that must fail, and a flipped byte makes a check fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sealrelay"))
}

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/vectors")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run sealrelay")
}

const FILES: [&str; 4] = [
    "statements.json",
    "wire.json",
    "checkpoints.json",
    "receipts.json",
];

#[test]
fn the_checked_in_vectors_are_what_the_command_writes_and_they_check() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(bin().args(["vectors", "write"]).arg(tmp.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in FILES {
        let fresh = std::fs::read(tmp.path().join(name)).unwrap();
        let kept = std::fs::read(docs().join(name)).unwrap();
        assert!(
            fresh == kept,
            "docs/vectors/{name} differs from what `sealrelay vectors write` makes now: run `cargo run -- vectors write docs/vectors` and commit the change (a format change is a protocol change)"
        );
    }
    let out = run(bin().args(["vectors", "check"]).arg(docs()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("statements.json: 14 vectors verified"),
        "{stdout}"
    );
    assert!(stdout.contains("ok: 37 vectors"), "{stdout}");
}

#[test]
fn a_flipped_byte_in_each_file_fails_the_check() {
    for (name, field) in [
        ("statements.json", "signature"),
        ("wire.json", "frame"),
        ("checkpoints.json", "note"),
        ("receipts.json", "receipt_file"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        for other in FILES {
            std::fs::copy(docs().join(other), tmp.path().join(other)).unwrap();
        }
        let mut file: Value =
            serde_json::from_slice(&std::fs::read(docs().join(name)).unwrap()).unwrap();
        let v = &mut file["vectors"][0][field];
        let text = v.as_str().unwrap().to_owned();
        // Flip one character in the middle: a hex digit or a letter of the text.
        let at = text.len() / 2
            + text[text.len() / 2..]
                .find(|c: char| c.is_ascii_alphanumeric())
                .unwrap();
        let mut bytes = text.into_bytes();
        bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
        *v = Value::String(String::from_utf8(bytes).unwrap());
        std::fs::write(
            tmp.path().join(name),
            serde_json::to_string_pretty(&file).unwrap(),
        )
        .unwrap();
        let out = run(bin().args(["vectors", "check"]).arg(tmp.path()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        let first = file["vectors"][0]["name"].as_str().unwrap();
        assert!(err.contains(first), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn receipt_verify_accepts_the_receipt_vectors_and_refuses_the_bad_ones() {
    let file: Value =
        serde_json::from_slice(&std::fs::read(docs().join("receipts.json")).unwrap()).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 4);
    for v in vectors {
        let tmp = tempfile::tempdir().unwrap();
        let put = |name: &str, text: &str| {
            let p = tmp.path().join(name);
            std::fs::write(&p, format!("{}\n", text.trim_end())).unwrap();
            p
        };
        let receipt = put("r.receipt", v["receipt_file"].as_str().unwrap());
        let mut cmd = bin();
        cmd.args(["receipt", "verify"])
            .arg(&receipt)
            .arg("--authority")
            .arg(put("authority.pub", v["authority"].as_str().unwrap()))
            .arg("--log-key")
            .arg(put("log.pub", v["log_key"].as_str().unwrap()));
        for (i, w) in v["witnesses"].as_array().unwrap().iter().enumerate() {
            cmd.arg("--witness")
                .arg(put(&format!("w{i}.pub"), w.as_str().unwrap()));
        }
        let out = run(&mut cmd);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let name = v["name"].as_str().unwrap();
        if v["valid"] == false {
            assert_eq!(out.status.code(), Some(1), "{name}: {stdout}{stderr}");
        } else {
            assert!(out.status.success(), "{name}: {stdout}{stderr}");
            let expected = &v["expected"];
            assert!(
                stdout.contains(expected["envelope_id"].as_str().unwrap()),
                "{name}: {stdout}"
            );
        }
    }
}

#[test]
fn writing_onto_a_file_is_refused_in_one_line_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("afile");
    std::fs::write(&file, "keep").unwrap();
    let out = run(bin().args(["vectors", "write"]).arg(&file));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
}
