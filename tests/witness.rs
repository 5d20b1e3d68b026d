//! Witnessed checkpoints end to end, with real processes: `sealrelay witness serve` and two
//! `sealrelay serve` relays that share a log key but not a history (a split view). The witness
//! cosigns only one history; the other relay's receipts fail `receipt verify --witness`; a
//! client that saw one relay's checkpoint refuses the other's. The witness is killed with
//! SIGKILL between requests and answers 50 times and never cosigns two trees of one size nor a
//! smaller tree after a larger one; an independent verifier in Python (`tests/witness/verify.py`,
//! Ed25519 through the `cryptography` package) accepts the cosigned checkpoints and rejects
//! altered ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ok_in, run_in};
use sealrelay::core::sign::{SigningKey, VerifierKey};
use sealrelay::core::tlog::checkpoint::Checkpoint;
use sealrelay::core::tlog::cosignature::{self, CosignerKey};
use sealrelay::core::tlog::witness_protocol::AddCheckpoint;
use sealrelay::core::tlog::{leaf_hash, Tree};

/// Starts `sealrelay witness serve` in `dir`; returns the process and its URL.
fn start_witness(dir: &Path, key: &str, state: &str, logs: &[&str]) -> (Child, String) {
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "witness",
        "serve",
        "--key",
        key,
        "--state",
        state,
        "--listen",
        "127.0.0.1:0",
    ]);
    for l in logs {
        cmd.args(["--log", l]);
    }
    let mut child = cmd
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("witness "), "witness printed {line:?}");
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    (child, url)
}

/// Starts a relay on `data` with `config`, its log lines going to `log`.
fn start_relay(dir: &Path, data: &str, config: &str, log: &str) -> (Child, String) {
    let mut child = Command::new(common::bin())
        .args([
            "serve",
            "--dir",
            "keys",
            "--data",
            data,
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir)
        .env("SEALRELAY_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("sealrelay relay listening on"), "{line:?}");
    (child, line.trim().rsplit(' ').next().unwrap().to_owned())
}

fn post(url: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    match agent.post(format!("{url}/add-checkpoint")).send(body) {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

/// grant → send → fetch for `user`; returns the receipt path.
fn deliver(dir: &Path, addr: &str, user: &str, n: u32) -> PathBuf {
    grant_and_send(dir, addr, user, n);
    let out = dir.join(format!("out-{user}-{n}"));
    ok_in(
        dir,
        &[
            "fetch",
            "--identity",
            &format!("{user}.id"),
            "--all",
            "-o",
            out.to_str().unwrap(),
            "--relay",
            addr,
        ],
    );
    std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "receipt"))
        .unwrap()
}

/// `user` asks research-bot for tickets/N and the agent sends it.
fn grant_and_send(dir: &Path, addr: &str, user: &str, n: u32) {
    let g = ok_in(
        dir,
        &[
            "grant",
            "--identity",
            &format!("{user}.id"),
            "--agent",
            "research-bot",
            "--resource",
            &format!("tickets/{n}"),
            "--relay",
            addr,
        ],
    );
    std::fs::write(dir.join("data.txt"), format!("ticket {n}\n")).unwrap();
    ok_in(
        dir,
        &[
            "send",
            "--identity",
            "bot.id",
            "--grant",
            g.trim(),
            "data.txt",
            "--relay",
            addr,
        ],
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// keys init; the users (`NAME.id`) and research-bot (`bot.id`, tickets/*) enrolled.
fn world(dir: &Path, users: &[&str]) {
    let users: Vec<(&str, &[&str])> = users.iter().map(|u| (*u, &[][..])).collect();
    common::admin_world(dir, &users);
}

fn kill9(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_split_view_is_refused_by_the_witness_and_caught_by_receipts_and_clients() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    world(dir, &["alice", "bob"]);
    let printed = ok_in(
        dir,
        &[
            "witness",
            "keygen",
            "--name",
            "witness.test/w1",
            "--out",
            "w1.key",
        ],
    );
    let w1_pub = std::fs::read_to_string(dir.join("w1.key.pub")).unwrap();
    assert_eq!(printed, w1_pub);
    let (witness, url) = start_witness(dir, "w1.key", "wstate", &["keys/log.pub"]);
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            "witness_receipt_wait_ms = 3000\n[[witness]]\nurl = \"{url}\"\nkey = \"{}\"\n",
            w1_pub.trim()
        ),
    )
    .unwrap();

    // Relay A, witnessed: alice's receipt carries the witness's cosignature.
    let (a, a_addr) = start_relay(dir, "data", "relay.toml", "a.log");
    let r1 = deliver(dir, &a_addr, "alice", 1);
    let out = ok_in(
        dir,
        &[
            "receipt",
            "verify",
            r1.to_str().unwrap(),
            "--authority",
            "keys/authority.pub",
            "--log-key",
            "keys/log.pub",
            "--witness",
            "w1.key.pub",
        ],
    );
    assert!(out.contains("cosigned by witness.test/w1"), "{out}");
    // Offline, with public keys only: a directory holding the receipt and three public keys.
    let offline = dir.join("offline");
    std::fs::create_dir(&offline).unwrap();
    for (from, to) in [
        (r1.clone(), "r1.receipt"),
        (dir.join("keys/authority.pub"), "authority.pub"),
        (dir.join("keys/log.pub"), "log.pub"),
        (dir.join("w1.key.pub"), "w1.pub"),
    ] {
        std::fs::copy(from, offline.join(to)).unwrap();
    }
    let out = ok_in(
        &offline,
        &[
            "receipt",
            "verify",
            "r1.receipt",
            "--authority",
            "authority.pub",
            "--log-key",
            "log.pub",
            "--witness",
            "w1.pub",
        ],
    );
    assert!(
        out.starts_with("ok: ") && out.contains("witness.test/w1"),
        "{out}"
    );
    common::terminate(a);

    // The split: a copy of A's data becomes relay B (same log key, same history so far).
    copy_dir(&dir.join("data"), &dir.join("data-b"));
    let fork_size = Checkpoint::parse_text(
        std::fs::read_to_string(&r1)
            .map(|s| {
                let f =
                    sealrelay::core::receipt_file::ReceiptFile::from_json(s.as_bytes()).unwrap();
                sealrelay::core::tlog::checkpoint::Note::split(&f.checkpoint)
                    .unwrap()
                    .text
                    .to_owned()
            })
            .unwrap()
            .as_str(),
    )
    .unwrap()
    .size;
    let (a, a_addr) = start_relay(dir, "data", "relay.toml", "a2.log");
    deliver(dir, &a_addr, "alice", 2);
    let seen = ok_in(
        dir,
        &[
            "audit",
            "verify",
            "--identity",
            "alice.id",
            "--relay",
            &a_addr,
            "--witness",
            "w1.key.pub",
        ],
    );
    assert!(seen.contains("cosigned by witness.test/w1"), "{seen}");
    std::fs::write(
        dir.join("relay-b.toml"),
        format!(
            "witness_receipt_wait_ms = 1000\n[[witness]]\nurl = \"{url}\"\nkey = \"{}\"\n",
            w1_pub.trim()
        ),
    )
    .unwrap();
    let (b, b_addr) = start_relay(dir, "data-b", "relay-b.toml", "b.log");
    // Bob, who never saw A, gets a receipt from B: it verifies under the log key alone, but
    // not under a 1-of-1 witness policy.
    let rb = deliver(dir, &b_addr, "bob", 3);
    deliver(dir, &b_addr, "bob", 4);
    let plain = ok_in(
        dir,
        &[
            "receipt",
            "verify",
            rb.to_str().unwrap(),
            "--authority",
            "keys/authority.pub",
            "--log-key",
            "keys/log.pub",
        ],
    );
    assert!(plain.starts_with("ok: "), "{plain}");
    let (code, _, err) = run_in(
        dir,
        &[
            "receipt",
            "verify",
            rb.to_str().unwrap(),
            "--authority",
            "keys/authority.pub",
            "--log-key",
            "keys/log.pub",
            "--witness",
            "w1.key.pub",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("witness cosignatures: not witnessed: 0 of the 1 required witness cosignatures (missing: witness.test/w1)"),
        "{err}"
    );
    // B's checkpoint, offered to the witness directly as an extension of the shared history:
    // 409, with the witness's own (A's) size.
    let b_note =
        sealrelay::core::receipt_file::ReceiptFile::from_json(&std::fs::read(&rb).unwrap())
            .unwrap()
            .checkpoint;
    let (status, body) = post(
        &url,
        &AddCheckpoint {
            old_size: fork_size,
            proof: Vec::new(),
            note: b_note,
        }
        .encode(),
    );
    assert_eq!(status, 409, "{body}");
    let witness_size: u64 = body.trim().parse().unwrap();
    assert!(witness_size > fork_size);
    // B itself tried and was refused (its log says so, with the witness's answer).
    let b_log = std::fs::read_to_string(dir.join("b.log")).unwrap();
    assert!(
        b_log.contains("no cosignature")
            && (b_log.contains("HTTP 422") || b_log.contains("larger than this log")),
        "{b_log}"
    );
    // Alice saw A's checkpoint: B's is refused, by audit verify and by fetch.
    let (code, _, err) = run_in(
        dir,
        &[
            "audit",
            "verify",
            "--identity",
            "alice.id",
            "--relay",
            &b_addr,
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("FORK") || err.contains("ROLLBACK"), "{err}");
    grant_and_send(dir, &b_addr, "alice", 5);
    let (code, _, err) = run_in(
        dir,
        &[
            "fetch",
            "--identity",
            "alice.id",
            "--all",
            "-o",
            "out-fork",
            "--relay",
            &b_addr,
        ],
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("FORK") || err.contains("ROLLBACK"), "{err}");
    // A is unaffected: its checkpoints stay witnessed and extend what alice saw.
    let again = ok_in(
        dir,
        &[
            "audit",
            "verify",
            "--identity",
            "alice.id",
            "--relay",
            &a_addr,
            "--witness",
            "w1.key.pub",
        ],
    );
    assert!(again.contains("consistent with your checkpoint"), "{again}");
    common::terminate(a);
    common::terminate(b);
    kill9(witness);
}

/// Two histories under one log key: `a` and a fork `b` that shares the first `FORK` leaves.
struct Histories {
    key: SigningKey,
    vk: VerifierKey,
    a: Tree,
    b: Tree,
}

const FORK: u64 = 40;
const LEAVES: u64 = 400;

impl Histories {
    fn new() -> Self {
        let key = SigningKey::generate().unwrap();
        let vk = VerifierKey::new("test.example/forked-log", key.public()).unwrap();
        let (mut a, mut b) = (Tree::new(), Tree::new());
        for i in 0..LEAVES {
            a.append(leaf_hash(format!("a{i}").as_bytes()));
            let tag = if i < FORK { "a" } else { "b" };
            b.append(leaf_hash(format!("{tag}{i}").as_bytes()));
        }
        Histories { key, vk, a, b }
    }
    fn tree(&self, branch: usize) -> &Tree {
        if branch == 0 {
            &self.a
        } else {
            &self.b
        }
    }
    fn note(&self, branch: usize, size: u64) -> (Checkpoint, String) {
        let cp = Checkpoint {
            origin: self.vk.name.clone(),
            size,
            root: self.tree(branch).root(size).unwrap(),
        };
        let note = cp.sign(&self.key, &self.vk).unwrap();
        (cp, note)
    }
}

/// A cosignature the witness returned: (branch, size, root).
type Cosigned = (usize, u64, [u8; 32]);

/// Kill -9 the witness at a random moment while four clients race checkpoints of both
/// histories at it, 50 times. Every cosignature verifies; no two cosigned trees of one size
/// differ; the two histories are never both cosigned past the fork; no answer is smaller than
/// one already received before its request was sent; and after each restart the witness
/// remembers at least the largest tree it cosigned before.
#[test]
fn the_witness_survives_kill_9_between_request_and_answer_50_times() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let h = Arc::new(Histories::new());
    std::fs::write(dir.join("log.pub"), format!("{}\n", h.vk.encode())).unwrap();
    ok_in(
        dir,
        &[
            "witness",
            "keygen",
            "--name",
            "witness.test/k9",
            "--out",
            "w.key",
        ],
    );
    let me = CosignerKey::parse(&std::fs::read_to_string(dir.join("w.key.pub")).unwrap()).unwrap();
    let cosigned: Arc<Mutex<Vec<Cosigned>>> = Arc::default();
    let mut remembered = 0u64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for cycle in 0..50 {
        let (witness, url) = start_witness(dir, "w.key", "state", &["log.pub"]);
        // What the witness remembers after the restart: a 409 names its size.
        let largest = cosigned
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.1)
            .max()
            .unwrap_or(0);
        let (status, body) = post(
            &url,
            &AddCheckpoint {
                old_size: 0,
                proof: Vec::new(),
                note: h.note(0, 1).1,
            }
            .encode(),
        );
        let now_at = match status {
            409 => body.trim().parse::<u64>().unwrap(),
            200 => 1,
            other => panic!("cycle {cycle}: probe got {other}: {body}"),
        };
        if status == 200 {
            cosigned.lock().unwrap().push((0, 1, h.a.root(1).unwrap()));
        }
        assert!(
            now_at >= largest && now_at >= remembered,
            "cycle {cycle}: the witness forgot: it is at {now_at} but cosigned {largest} before"
        );
        remembered = now_at;
        // Four clients race: each learns the size from 409s and offers a larger tree.
        let high = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for c in 0..4u64 {
            let (h, url, cosigned, high, me) = (
                h.clone(),
                url.clone(),
                cosigned.clone(),
                high.clone(),
                me.clone(),
            );
            let mut s = cycle * 7919 + c * 104_729 + 1;
            clients.push(std::thread::spawn(move || {
                let mut known = 0u64;
                for _ in 0..400 {
                    s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let branch = usize::from(s >> 63 == 1);
                    let size = (known + 1 + (s >> 33) % 3).min(LEAVES);
                    let (cp, note) = h.note(branch, size);
                    let proof = if known == 0 || known > size {
                        Vec::new()
                    } else {
                        h.tree(branch).consistency_proof(known, size).unwrap()
                    };
                    let floor = high.load(Ordering::SeqCst);
                    let body = AddCheckpoint {
                        old_size: known.min(size),
                        proof,
                        note: note.clone(),
                    }
                    .encode();
                    let (status, answer) = post(&url, &body);
                    match status {
                        0 => return, // killed
                        200 => {
                            let full = format!("{note}{answer}");
                            assert!(
                                cosignature::verify(&full, &me).unwrap().is_some(),
                                "a 200 without a valid cosignature"
                            );
                            assert!(
                                size >= floor,
                                "cosigned {size} after an answer of {floor} was received"
                            );
                            high.fetch_max(size, Ordering::SeqCst);
                            cosigned.lock().unwrap().push((branch, size, cp.root));
                            known = size;
                        }
                        409 => known = answer.trim().parse().unwrap(),
                        // The other history past the fork, or a proof from a size the
                        // witness moved past: refused.
                        422 | 400 => known = 0,
                        other => panic!("unexpected {other}: {answer}"),
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(20 + rand(80)));
        kill9(witness);
        for c in clients {
            c.join().unwrap();
        }
    }
    let all = cosigned.lock().unwrap().clone();
    assert!(
        all.len() > 100,
        "too few cosignatures to mean much: {}",
        all.len()
    );
    // One root per size, across every cycle.
    let mut by_size = std::collections::HashMap::new();
    for (_, size, root) in &all {
        let prev = by_size.insert(*size, *root);
        assert!(
            prev.is_none_or(|p| p == *root),
            "two trees of size {size} cosigned"
        );
    }
    // Never both histories past the fork point.
    let past = |b: usize| all.iter().any(|(br, s, _)| *br == b && *s > FORK);
    assert!(
        !(past(0) && past(1)),
        "both histories were cosigned past the fork"
    );
    eprintln!(
        "{} cosignatures over 50 kill -9 cycles; largest tree {}",
        all.len(),
        all.iter().map(|c| c.1).max().unwrap_or(0)
    );
}

/// Replaces the `n`th base64 character of `line`'s signature with another valid one.
fn flip_sig_char(note: &str, line_prefix: &str, n: usize) -> String {
    let mut out = String::new();
    for line in note.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(line_prefix) {
            let mut chars: Vec<char> = rest.chars().collect();
            chars[n] = if chars[n] == 'A' { 'B' } else { 'A' };
            out.push_str(line_prefix);
            out.extend(chars);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[test]
fn an_independent_python_verifier_accepts_cosigned_checkpoints_and_rejects_altered_ones() {
    let Some(py) = common::python_with_cryptography() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let h = Histories::new();
    std::fs::write(dir.join("log.pub"), format!("{}\n", h.vk.encode())).unwrap();
    ok_in(
        dir,
        &[
            "witness",
            "keygen",
            "--name",
            "witness.test/py",
            "--out",
            "w.key",
        ],
    );
    let w_pub = std::fs::read_to_string(dir.join("w.key.pub")).unwrap();
    let me = CosignerKey::parse(&w_pub).unwrap();
    let (witness, url) = start_witness(dir, "w.key", "state", &["log.pub"]);
    // Cosigned checkpoints from the real witness process.
    let mut good = Vec::new();
    let mut old = 0;
    for size in [3u64, 17, 64, 200] {
        let (_, note) = h.note(0, size);
        let proof = if old == 0 {
            Vec::new()
        } else {
            h.a.consistency_proof(old, size).unwrap()
        };
        let (status, lines) = post(
            &url,
            &AddCheckpoint {
                old_size: old,
                proof,
                note: note.clone(),
            }
            .encode(),
        );
        assert_eq!(status, 200, "{lines}");
        good.push(format!("{note}{lines}"));
        old = size;
    }
    kill9(witness);
    // Altered copies of the last one, each in one way.
    let note = good.last().unwrap().clone();
    let cosig_prefix = format!("\u{2014} {} ", me.name);
    let log_prefix = format!("\u{2014} {} ", h.vk.name);
    let (text, sigs) = note.rsplit_once("\n\n").unwrap();
    let cosig_line = sigs
        .lines()
        .find(|l| l.starts_with(&cosig_prefix))
        .unwrap()
        .to_owned();
    let retimed = {
        let b64 = cosig_line.rsplit(' ').next().unwrap();
        let mut blob = base64_decode(b64);
        blob[11] ^= 1;
        note.replace(b64, &base64_encode(&blob))
    };
    let stranger = {
        let k = SigningKey::generate().unwrap();
        let other = CosignerKey::new(&me.name, k.public()).unwrap();
        let line = cosignature::cosign(&format!("{text}\n"), 5, &k, &other).unwrap();
        note.replace(&format!("{cosig_line}\n"), &line)
    };
    let altered = vec![
        ("root changed", {
            let root = text.lines().nth(2).unwrap();
            let first = if root.starts_with('A') { "B" } else { "A" };
            note.replacen(root, &format!("{first}{}", &root[1..]), 1)
        }),
        ("size changed", note.replacen("\n200\n", "\n201\n", 1)),
        (
            "origin changed",
            note.replacen("test.example/", "test.exampl3/", 1),
        ),
        (
            "cosignature byte changed",
            flip_sig_char(&note, &cosig_prefix, 30),
        ),
        ("cosignature timestamp changed", retimed),
        (
            "log signature changed",
            flip_sig_char(&note, &log_prefix, 30),
        ),
        (
            "log signature removed",
            note.replace(
                &sigs
                    .lines()
                    .find(|l| l.starts_with(&log_prefix))
                    .map(|l| format!("{l}\n"))
                    .unwrap(),
                "",
            ),
        ),
        (
            "cosignature removed",
            note.replace(&format!("{cosig_line}\n"), ""),
        ),
        ("cosigned by another key under the witness's name", stranger),
        ("text line added", note.replacen("\n\n", "\nextra\n\n", 1)),
        (
            "another tree signed by the log, the witness's cosignature moved onto it",
            {
                let (_, other) = h.note(1, 200);
                format!("{other}{cosig_line}\n")
            },
        ),
    ];
    let mut notes: Vec<String> = good.clone();
    notes.extend(altered.iter().map(|(_, n)| n.clone()));
    let input = serde_json::json!({
        "log": h.vk.encode(),
        "witnesses": [w_pub.trim()],
        "quorum": 1,
        "notes": notes,
    });
    let mut child = Command::new(&py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/witness/verify.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(verdicts.len(), notes.len());
    let policy = cosignature::WitnessPolicy::new(vec![me.clone()], Some(1)).unwrap();
    for (i, v) in verdicts.iter().enumerate() {
        let ours = Checkpoint::verify(&notes[i], &h.vk).is_ok() && policy.check(&notes[i]).is_ok();
        eprintln!(
            "{:<50} python: {v}",
            altered
                .get(i.wrapping_sub(good.len()))
                .map_or("cosigned", |a| a.0)
        );
        if i < good.len() {
            assert!(
                v.starts_with("ok ") && v.ends_with("witness.test/py"),
                "good note {i}: {v}"
            );
            assert!(ours, "sealrelay rejects good note {i}");
        } else {
            let what = altered[i - good.len()].0;
            assert!(v.starts_with("bad "), "{what}: python accepted it ({v})");
            assert!(!ours, "{what}: sealrelay accepted it");
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// With its witness down the relay keeps serving: the receipt says not yet witnessed and fails a
/// 1-of-1 policy; once the witness is up and has cosigned, `receipt upgrade` brings the receipt
/// up to date and it verifies.
#[test]
fn a_receipt_answered_while_the_witness_was_down_is_upgraded_later() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    world(dir, &["alice"]);
    ok_in(
        dir,
        &[
            "witness",
            "keygen",
            "--name",
            "witness.test/late",
            "--out",
            "w.key",
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let w_pub = std::fs::read_to_string(dir.join("w.key.pub")).unwrap();
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            "witness_receipt_wait_ms = 300\nwitness_timeout_ms = 500\n[[witness]]\nurl = \"http://127.0.0.1:{port}\"\nkey = \"{}\"\n",
            w_pub.trim()
        ),
    )
    .unwrap();
    let (relay, addr) = start_relay(dir, "data", "relay.toml", "relay.log");
    let receipt = deliver(dir, &addr, "alice", 1);
    let verify = |extra: &[&str]| {
        run_in(
            dir,
            &[
                &[
                    "receipt",
                    "verify",
                    receipt.to_str().unwrap(),
                    "--authority",
                    "keys/authority.pub",
                    "--log-key",
                    "keys/log.pub",
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    let (code, _, err) = verify(&["--witness", "w.key.pub"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not witnessed") && err.contains("receipt upgrade"),
        "{err}"
    );
    assert_eq!(verify(&[]).0, 0, "under the log key alone it verifies");
    let before = std::fs::read(&receipt).unwrap();
    // Upgrading before any witness cosigned changes nothing and says why.
    let (code, _, err) = run_in(
        dir,
        &[
            "receipt",
            "upgrade",
            receipt.to_str().unwrap(),
            "--identity",
            "alice.id",
            "--witness",
            "w.key.pub",
            "--relay",
            &addr,
        ],
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("not witnessed"), "{err}");
    assert_eq!(std::fs::read(&receipt).unwrap(), before);
    // The witness comes up; new activity makes the relay try again at once.
    let (witness, _) = {
        let mut cmd = Command::new(common::bin());
        cmd.args([
            "witness",
            "serve",
            "--key",
            "w.key",
            "--state",
            "wstate",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "keys/log.pub",
        ]);
        let mut child = cmd
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line)
    };
    let mut upgraded = String::new();
    for attempt in 0..40 {
        ok_in(
            dir,
            &[
                "grant",
                "--identity",
                "alice.id",
                "--agent",
                "research-bot",
                "--resource",
                &format!("tickets/poke{attempt}"),
                "--relay",
                &addr,
            ],
        );
        let (code, out, _) = run_in(
            dir,
            &[
                "receipt",
                "upgrade",
                receipt.to_str().unwrap(),
                "--identity",
                "alice.id",
                "--witness",
                "w.key.pub",
                "--relay",
                &addr,
            ],
        );
        if code == 0 {
            upgraded = out;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        upgraded.starts_with("upgraded: ") && upgraded.contains("witness.test/late"),
        "{upgraded}"
    );
    let (code, out, err) = verify(&["--witness", "w.key.pub"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cosigned by witness.test/late"), "{out}");
    common::terminate(relay);
    kill9(witness);
}

/// Issue 28: the witnesses cosign the directory log too (the same log key, origin
/// `<log origin>/directory`), and a person's `keys watch --witness` accepts only a cosigned
/// directory checkpoint: a relay with a forked directory log (relay B: a key for alice that A
/// never logged) gets no cosignature from the witness that saw A's, so alice, even reading B
/// afresh, refuses it.
#[test]
fn the_directory_log_is_witnessed_and_a_forked_one_is_not_cosigned() {
    let t = tempfile::tempdir().unwrap();
    let dir = &t.path().join("a");
    let dir_b = &t.path().join("b");
    std::fs::create_dir(dir).unwrap();
    world(dir, &["alice"]);
    ok_in(
        dir,
        &[
            "witness",
            "keygen",
            "--name",
            "witness.test/w1",
            "--out",
            "w1.key",
        ],
    );
    let w1_pub = std::fs::read_to_string(dir.join("w1.key.pub")).unwrap();
    let (witness, url) = start_witness(dir, "w1.key", "wstate", &["keys/log.pub"]);
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            "[[witness]]\nurl = \"{url}\"\nkey = \"{}\"\n",
            w1_pub.trim()
        ),
    )
    .unwrap();
    copy_dir(dir, dir_b);
    let (a, a_addr) = start_relay(dir, "data", "relay.toml", "a.log");
    let watch = |d: &Path, addr: &str| {
        common::run_in(
            d,
            &[
                "keys",
                "watch",
                "--identity",
                "alice.id",
                "--relay",
                addr,
                "--witness",
                "w1.key.pub",
            ],
        )
    };
    // A's directory checkpoint is cosigned within moments.
    let size_of = |out: &str| -> u64 {
        out.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let (code, out, err) = watch(dir, &a_addr);
        if code == 0 {
            assert!(out.contains("0 new alert(s)"), "{out}");
            break size_of(&out);
        }
        assert!(Instant::now() < deadline, "never cosigned: {err}");
        std::thread::sleep(Duration::from_millis(300));
    };
    // A logs carol, and the witness cosigns A's directory log with her.
    ok_in(
        dir,
        &[
            "user", "add", "carol", "--dir", "keys", "--out", "carol.id", "--relay", &a_addr,
        ],
    );
    let with_carol = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = watch(dir, &a_addr);
        if code == 0 && size_of(&out) > first {
            break;
        }
        assert!(
            Instant::now() < with_carol,
            "carol never cosigned: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Relay B: the same keys and witness, its own directory log where a key for alice stands
    // in carol's place.
    let (b, b_addr) = start_relay(dir_b, "data", "relay.toml", "b.log");
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
            &b_addr,
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    let (code, _, err) = watch(dir_b, &b_addr);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not cosigned by a quorum of your witnesses"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    common::terminate(b);
    common::terminate(a);
    kill9(witness);
}

/// Helper-found: `audit export` read the events up to the relay's newest signed checkpoint but
/// began each pass from the checkpoint the relay hands out by default, its newest *witnessed*
/// one. With the witness behind (down, here), the next pass, `--follow`'s or a restarted
/// export's, found fewer events than it had written and stopped on a false ROLLBACK. It now asks
/// for a checkpoint at least as large as what it wrote, proved to extend it. And with
/// `--witness`, it writes only what the witness cosigned (it verified every checkpoint under the
/// log key alone before: a relay holding that key could show the SIEM a fork).
#[test]
fn an_audit_export_goes_on_while_the_witness_lags_the_log() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    world(dir, &["alice"]);
    ok_in(
        dir,
        &[
            "witness",
            "keygen",
            "--name",
            "witness.test/lags",
            "--out",
            "w.key",
        ],
    );
    let (witness, url) = start_witness(dir, "w.key", "wstate", &["keys/log.pub"]);
    let w_pub = std::fs::read_to_string(dir.join("w.key.pub")).unwrap();
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            "witness_timeout_ms = 300\n[[witness]]\nurl = \"{url}\"\nkey = \"{}\"\n",
            w_pub.trim()
        ),
    )
    .unwrap();
    let (relay, addr) = start_relay(dir, "data", "relay.toml", "relay.log");
    grant_and_send(dir, &addr, "alice", 1);
    // Until the witness has cosigned a checkpoint, then it goes away.
    let started = std::time::Instant::now();
    while run_in(
        dir,
        &[
            "audit",
            "verify",
            "--identity",
            "alice.id",
            "--witness",
            "w.key.pub",
            "--relay",
            &addr,
        ],
    )
    .0 != 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never witnessed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    kill9(witness);
    // `audit export -o OUT`, with `extra` arguments.
    let export_to = |out: &str, extra: &[&str]| {
        let args = [
            &[
                "audit",
                "export",
                "--identity",
                "keys/admin.id",
                "-o",
                out,
                "--relay",
                &addr,
            ][..],
            extra,
        ]
        .concat();
        run_in(dir, &args)
    };
    let export = || export_to("siem.jsonl", &[]);
    grant_and_send(dir, &addr, "alice", 2);
    let (code, _, err) = export();
    assert_eq!(code, 0, "{err}");
    let first = std::fs::read_to_string(dir.join("siem.jsonl"))
        .unwrap()
        .lines()
        .count();
    grant_and_send(dir, &addr, "alice", 3);
    let (code, _, err) = export();
    assert_eq!(code, 0, "the export stopped behind the witness: {err}");
    let indexes: Vec<u64> = std::fs::read_to_string(dir.join("siem.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(indexes.len() > first, "{} after {first}", indexes.len());
    assert_eq!(indexes, (0..indexes.len() as u64).collect::<Vec<_>>());
    // With the witness required (threat 29: clients trust cosigned checkpoints only), an export
    // writes what the witness cosigned and no further, and goes on from there.
    let witnessed_export = || export_to("witnessed.jsonl", &["--witness", "w.key.pub"]);
    for _ in 0..2 {
        let (code, _, err) = witnessed_export();
        assert_eq!(code, 0, "{err}");
    }
    let witnessed = std::fs::read_to_string(dir.join("witnessed.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(
        witnessed > 0 && witnessed < first,
        "{witnessed} witnessed of {}",
        indexes.len()
    );
    kill9(relay);
}
