//! `sealrelay demo` (the README's first command) runs the flow end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn demo_runs_the_flow() {
    let t = tempfile::tempdir().unwrap();
    let out = common::ok_in(t.path(), &["demo", "--keep", "run"]);
    assert!(out.contains("status delivered"), "{out}");
    assert!(
        out.contains("receipt verified") && out.contains("under a checkpoint signed by"),
        "{out}"
    );
    // The receipt the demo kept verifies with the real command, offline.
    let receipt = t.path().join("run/alice-ticket.receipt");
    let verify = common::ok_in(
        t.path(),
        &[
            "receipt",
            "verify",
            receipt.to_str().unwrap(),
            "--authority",
            "run/keys/authority.pub",
            "--log-key",
            "run/keys/log.pub",
        ],
    );
    assert!(verify.starts_with("ok: envelope"), "{verify}");
    assert_eq!(out.matches("refused as it should be").count(), 5, "{out}");
    assert!(
        out.contains("Root cause: the nightly index rebuild"),
        "{out}"
    );
    // Blind retrieval: alice reads the ticket; what the model sees holds no word of it.
    assert!(out.contains("| Ticket 4712 (confidential)"), "{out}");
    let model: Vec<&str> = out.lines().filter(|l| l.contains("model sees:")).collect();
    assert_eq!(model.len(), 3, "{out}");
    assert!(model[1].contains("\"status\":\"submitted\""), "{out}");
    assert!(model[2].contains("\"status\":\"delivered\""), "{out}");
    assert!(
        model
            .iter()
            .all(|l| !l.contains("ACME") && !l.contains("credit")),
        "{out}"
    );
    // The demo's directory verifies with the real command too.
    let verify = common::ok_in(t.path(), &["directory", "verify", "--dir", "run/keys"]);
    assert!(verify.contains("2 users, 1 agents"), "{verify}");
}
