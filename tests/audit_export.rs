//! `sealrelay audit export` against a real `sealrelay serve` (docs/operations.md, "Shipping the
//! audit trail"): a real flow's events (a grant, a policy denial, a submission, a delivery and
//! its receipt, a quarantine and its release, a key enrolled) exported as OCSF and validated
//! by an independent validator (the OCSF schema as `ocsf-json-schema` bundles it, applied with
//! `jsonschema`: tests/audit/validate_ocsf.py), checked field by field, and tied to the log by
//! index and leaf hash; then `--follow` across a relay restart and an exporter killed with
//! SIGKILL: every event exactly once, in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok_in, run_in};
use serde_json::Value;

fn python() -> Option<String> {
    common::python_with(
        "ocsf_json_schema, jsonschema",
        "ocsf-json-schema with jsonschema",
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The events the relay's log holds, as `audit tail --json` shows them.
fn tail(dir: &Path, relay: &str) -> Vec<Value> {
    ok_in(
        dir,
        &[
            "audit",
            "tail",
            "--identity",
            "keys/admin.id",
            "--json",
            "-n",
            "10000",
            "--relay",
            relay,
        ],
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// A flow that leaves one event of each kind a SIEM cares about.
fn flow(dir: &Path, relay: &str) {
    let g = ok_in(
        dir,
        &[
            "grant",
            "--identity",
            "alice.id",
            "--agent",
            "research-bot",
            "--resource",
            "tickets/1",
            "--purpose",
            "triage",
            "--relay",
            relay,
        ],
    );
    let g = g.trim();
    // An agent asking to read the log: denied by policy, logged.
    let (code, _, _) = run_in(
        dir,
        &["audit", "tail", "--identity", "bot.id", "--relay", relay],
    );
    assert_ne!(code, 0);
    std::fs::write(dir.join("ticket"), b"ticket 1").unwrap();
    ok_in(
        dir,
        &[
            "send",
            "--identity",
            "bot.id",
            "--grant",
            g,
            "--relay",
            relay,
            "ticket",
        ],
    );
    ok_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice.id",
            "--all",
            "-o",
            "out",
            "--relay",
            relay,
        ],
    );
    ok_in(
        dir,
        &[
            "agent",
            "quarantine",
            "research-bot",
            "--dir",
            "keys",
            "--relay",
            relay,
        ],
    );
    ok_in(
        dir,
        &[
            "agent",
            "release",
            "research-bot",
            "--dir",
            "keys",
            "--relay",
            relay,
        ],
    );
    ok_in(
        dir,
        &[
            "user", "add", "bob", "--dir", "keys", "--out", "bob.id", "--relay", relay,
        ],
    );
}

#[test]
fn a_real_flow_exports_as_valid_ocsf_tied_to_the_log() {
    let Some(py) = python() else { return };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    // A policy file of its own (the shipped text): the start is logged as `policy.load`.
    std::fs::write(dir.join("p.cedar"), sealrelay::core::policy::DEFAULT_POLICY).unwrap();
    std::fs::write(dir.join("relay.toml"), "policy_file = \"p.cedar\"\n").unwrap();
    let (relay_proc, relay) = common::serve(dir, &["--config", "relay.toml"]);
    flow(dir, &relay);
    for format in ["ocsf", "jsonl", "syslog"] {
        ok_in(
            dir,
            &[
                "audit",
                "export",
                "--identity",
                "keys/admin.id",
                "--format",
                format,
                "-o",
                &format!("out.{format}"),
                "--relay",
                &relay,
            ],
        );
    }
    let validator = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/audit/validate_ocsf.py");
    let v = Command::new(&py)
        .arg(&validator)
        .arg(dir.join("out.ocsf"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success(),
        "the OCSF validator refused the export:\n{said}"
    );
    // The validator can fail: an event without its api, and one with a wrong type_uid.
    let events = lines(&dir.join("out.ocsf"));
    let api = events.iter().find(|e| e["class_uid"] == 6003).unwrap();
    let mut broken = api.clone();
    broken.as_object_mut().unwrap().remove("api");
    let mut wrong = api.clone();
    wrong["type_uid"] = Value::from(600302);
    std::fs::write(dir.join("broken.ocsf"), format!("{broken}\n{wrong}\n")).unwrap();
    let v = Command::new(&py)
        .arg(&validator)
        .arg(dir.join("broken.ocsf"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&v.stdout);
    assert!(!v.status.success() && said.contains("2 invalid"), "{said}");

    // One line per event of the log, in order, each tied to its leaf.
    let log = tail(dir, &relay);
    assert_eq!(events.len(), log.len());
    for (i, (e, l)) in events.iter().zip(&log).enumerate() {
        let s = &e["unmapped"]["sealrelay"];
        assert_eq!(s["log"]["log_index"], i as u64);
        assert_eq!(l["index"], i as u64);
        assert_eq!(s["log"]["leaf_sha256"], l["leaf_sha256"], "event {i}");
        assert_eq!(s["kind"], l["kind"]);
        assert!(s["log"]["checkpoint"]["tree_size"].as_u64().unwrap() > i as u64);
    }
    assert_eq!(lines(&dir.join("out.jsonl")).len(), log.len());
    let syslog = std::fs::read_to_string(dir.join("out.syslog")).unwrap();
    assert_eq!(syslog.lines().count(), log.len());
    assert!(syslog
        .lines()
        .all(|l| l.starts_with('<') && l.contains("[sealrelay@32473 index=\"")));

    // Field by field, one event of each kind.
    let of = |kind: &str| {
        events
            .iter()
            .find(|e| e["unmapped"]["sealrelay"]["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event"))
            .clone()
    };
    let g = of("grant.created");
    assert_eq!(
        (g["class_uid"].clone(), g["activity_id"].clone()),
        (6003.into(), 1.into())
    );
    assert!(g["actor"]["user"]["uid"]
        .as_str()
        .unwrap()
        .ends_with("/user/alice"));
    assert_eq!(g["api"]["operation"], "grant.created");
    assert_eq!(g["status_id"], 1);
    let d = of("deny");
    assert_eq!(d["status_id"], 2);
    assert_eq!(d["action_id"], 2);
    assert_eq!(d["metadata"]["profiles"][0], "security_control");
    assert!(d["actor"]["user"]["uid"]
        .as_str()
        .unwrap()
        .ends_with("/agent/research-bot"));
    assert!(d["status_detail"]
        .as_str()
        .unwrap()
        .contains("no policy permits"));
    let s = of("envelope.submitted");
    assert_eq!(s["type_uid"], 600301);
    assert!(s["actor"]["user"]["name"] == "research-bot");
    let r = of("receipt.recorded");
    assert_eq!(r["unmapped"]["sealrelay"]["decision"], "delivered");
    assert!(r["actor"]["user"]["uid"]
        .as_str()
        .unwrap()
        .ends_with("/user/alice"));
    let q = of("agent.quarantined");
    assert_eq!(q["type_uid"], 300412);
    assert!(q["entity"]["name"]
        .as_str()
        .unwrap()
        .ends_with("/agent/research-bot"));
    assert_eq!(of("agent.released")["type_uid"], 300413);
    let p = of("policy.load");
    assert_eq!(p["type_uid"], 300401);
    assert!(p["unmapped"]["sealrelay"]["detail"]
        .as_str()
        .unwrap()
        .contains("the shipped policy"));
    let k = of("directory.push");
    assert_eq!(k["class_uid"], 3004);
    assert!(k["entity"]["name"].as_str().unwrap().contains("bob"), "{k}");
    common::terminate(relay_proc);
}

/// alice asks research-bot for tickets/I.
fn grant(dir: &Path, relay: &str, i: usize) {
    ok_in(
        dir,
        &[
            "grant",
            "--identity",
            "alice.id",
            "--agent",
            "research-bot",
            "--resource",
            &format!("tickets/{i}"),
            "--relay",
            relay,
        ],
    );
}

fn start_export(dir: &Path, relay: &str) -> std::process::Child {
    Command::new(common::bin())
        .args([
            "audit",
            "export",
            "--identity",
            "keys/admin.id",
            "--format",
            "jsonl",
            "--follow",
            "--interval-ms",
            "50",
            "-o",
            "follow.jsonl",
            "--relay",
            relay,
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("export.log")).unwrap())
        .spawn()
        .unwrap()
}

fn wait_for(dir: &Path, n: usize) {
    let started = Instant::now();
    loop {
        let have = std::fs::read_to_string(dir.join("follow.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if have >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the export has {have} of {n} events"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn follow_across_a_relay_restart_and_a_killed_exporter_writes_each_event_once_in_order() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let (relay_proc, relay) = common::serve(dir, &[]);
    let mut exporter = start_export(dir, &relay);
    for i in 0..5 {
        grant(dir, &relay, i);
    }
    wait_for(dir, tail(dir, &relay).len());
    // The relay stops and comes back on the same address; the exporter keeps following.
    common::terminate(relay_proc);
    std::thread::sleep(Duration::from_millis(300));
    let (relay_proc, relay) = common::serve_at(dir, &relay, &[]);
    for i in 5..10 {
        grant(dir, &relay, i);
    }
    wait_for(dir, tail(dir, &relay).len());
    assert!(
        exporter.try_wait().unwrap().is_none(),
        "the exporter stopped at the relay's restart: {}",
        std::fs::read_to_string(dir.join("export.log")).unwrap()
    );
    // The exporter is killed while events keep coming, and started again.
    for i in 10..40 {
        grant(dir, &relay, i);
        if i == 20 {
            exporter.kill().unwrap();
            exporter.wait().unwrap();
        }
    }
    let mut exporter = start_export(dir, &relay);
    for i in 40..45 {
        grant(dir, &relay, i);
    }
    let log = tail(dir, &relay);
    wait_for(dir, log.len());
    std::thread::sleep(Duration::from_millis(300));
    exporter.kill().unwrap();
    exporter.wait().unwrap();
    let got = lines(&dir.join("follow.jsonl"));
    let indexes: Vec<u64> = got.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (0..log.len() as u64).collect();
    assert_eq!(indexes, want, "every event exactly once, in order");
    for (e, l) in got.iter().zip(&log) {
        assert_eq!(e["log"]["leaf_sha256"], l["leaf_sha256"]);
    }
    let warned = std::fs::read_to_string(dir.join("export.log")).unwrap();
    eprintln!("{} events exported across a relay restart and a SIGKILL of the exporter; it said:\n{warned}", got.len());
    common::terminate(relay_proc);
}

/// `audit export -o FILE` once, without --follow; returns its exit code and stderr.
fn export_once(dir: &Path, relay: &str, out: &str, extra: &[&str]) -> (i32, String) {
    let (code, _, err) = run_in(
        dir,
        &[
            &[
                "audit",
                "export",
                "--identity",
                "keys/admin.id",
                "-o",
                out,
                "--relay",
                relay,
            ][..],
            extra,
        ]
        .concat(),
    );
    (code, err)
}

/// Helper-found: (1) `-o FILE` with no `FILE.state` cut FILE to nothing (the state's output
/// length, 0), losing every record an earlier export or anything else had put there; (2) the
/// first index to write (`--since`) was forgotten once an export had saved its state, so the
/// next run wrote the events it had been told to leave out.
#[test]
fn an_export_neither_empties_a_file_it_did_not_write_nor_forgets_its_since() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let (relay_proc, relay) = common::serve(dir, &[]);
    let grant = |i: usize| grant(dir, &relay, i);
    grant(0);
    // A file with records in it and no state: refused, left as it was.
    let kept = "an earlier record\nanother one\n";
    std::fs::write(dir.join("siem.jsonl"), kept).unwrap();
    let (code, err) = export_once(dir, &relay, "siem.jsonl", &[]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("has no") && err.contains("siem.jsonl.state"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("siem.jsonl")).unwrap(),
        kept
    );
    assert!(!dir.join("siem.jsonl.state").exists());
    // --since past the log's end: nothing written, the state saved; events come; the same
    // export again writes only those from --since on.
    let size = tail(dir, &relay).len() as u64;
    let since = (size + 2).to_string();
    let (code, err) = export_once(dir, &relay, "since.jsonl", &["--since", &since]);
    assert_eq!(code, 0, "{err}");
    assert!(lines(&dir.join("since.jsonl")).is_empty());
    for i in 1..6 {
        grant(i);
    }
    let (code, err) = export_once(dir, &relay, "since.jsonl", &[]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<u64> = lines(&dir.join("since.jsonl"))
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    let end = tail(dir, &relay).len() as u64;
    assert!(end > size + 2, "{end}");
    assert_eq!(got, (size + 2..end).collect::<Vec<_>>());
    common::terminate(relay_proc);
}
