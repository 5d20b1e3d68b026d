//! Sources with real processes (docs/sources.md): `sealrelay serve`, `sealrelay source serve`
//! running as one OS user with its connector file and credential readable by that user only,
//! and `sealrelay mcp` running as another OS user with no connector file, driven by the official
//! MCP Python SDK. The document reaches alice byte-exact; its canary and the source's credential
//! are in no MCP byte, no file of the agent's user, no relay file, and not in the memory of the
//! `sealrelay mcp` process (threat 53). Then the source is killed with SIGKILL while it fills 20
//! dispatched grants, and restarted: every one is filled exactly once.
//!
//! The OS users need root (`setpriv`); without it the first test says so and skips (CI runs as
//! root). Without the SDK it skips as tests/mcp.rs does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod harness;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, ok_in};
use harness::oracles::{canary, canary_hits, files_under};
use serde_json::Value;

/// The source's OS user and the agent's (numbers only: no account is needed).
const SOURCE_UID: u32 = 61_001;
const AGENT_UID: u32 = 61_002;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn python() -> Option<String> {
    common::python_with("mcp.client.session, mcp.client.stdio", "the MCP Python SDK")
}

/// `setpriv` arguments that run what follows as `uid` (its own group, no others).
fn as_user(uid: u32) -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
    ]
}

/// A directory owned by `uid`, private to it.
fn private_dir(path: &Path, uid: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn give(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The data source: answers `/doc/…` with `doc` only to a request carrying `auth`.
fn http_source(doc: Vec<u8>, auth: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut authorized = false;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if h.trim()
                    .eq_ignore_ascii_case(&format!("authorization: {auth}"))
                {
                    authorized = true;
                }
            }
            let (status, body): (&str, &[u8]) = if authorized {
                ("200 OK", &doc)
            } else {
                ("401 Unauthorized", b"")
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(body);
        }
    });
    port
}

/// Every readable mapping of process `pid`, read through /proc/PID/mem (what a scan of its
/// memory sees).
fn process_memory(pid: u32) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = Vec::new();
    let mut regions = 0;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; usize::try_from(b - a).unwrap()];
        if std::os::unix::fs::FileExt::read_exact_at(&mem, &mut buf, a).is_ok() {
            out.extend_from_slice(&buf);
            regions += 1;
        }
    }
    assert!(regions > 5, "read only {regions} regions of {pid}'s memory");
    out
}

/// The `sealrelay mcp` process running as the agent's user (read from /proc: no pgrep needed).
fn mcp_pid() -> u32 {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        if uid == Some(AGENT_UID)
            && args.first().is_some_and(|a| a.ends_with(b"sealrelay"))
            && args.get(1) == Some(&&b"mcp"[..])
        {
            found.push(pid);
        }
    }
    assert_eq!(
        found.len(),
        1,
        "the sealrelay mcp processes of the agent's user: {found:?}"
    );
    found[0]
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn start_source(dir: &Path, uid: Option<u32>, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut argv: Vec<String> = uid.map(as_user).unwrap_or_default();
    argv.push(bin().display().to_string());
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("source.log")).unwrap())
        .spawn()
        .unwrap()
}

fn grant(dir: &Path, relay: &str, resource: &str) -> String {
    ok_in(
        dir,
        &[
            "grant",
            "--identity",
            "alice.id",
            "--agent",
            "research-bot",
            "--resource",
            resource,
            "--purpose",
            "check the account",
            "--relay",
            relay,
        ],
    )
    .trim()
    .to_owned()
}

/// keys init; alice (clearance 1), research-bot (customers/*) and crm (serves customers/*), each
/// made in one step by the admin.
fn world(dir: &Path) {
    ok_in(dir, &["keys", "init", "--dir", "keys"]);
    ok_in(
        dir,
        &[
            "user",
            "add",
            "alice",
            "--dir",
            "keys",
            "--clearance",
            "1",
            "--out",
            "alice.id",
        ],
    );
    ok_in(
        dir,
        &[
            "agent",
            "add",
            "research-bot",
            "--dir",
            "keys",
            "--scope",
            "customers/*",
            "--out",
            "bot.id",
        ],
    );
    ok_in(
        dir,
        &[
            "source",
            "add",
            "crm",
            "--dir",
            "keys",
            "--serves",
            "customers/*",
            "--out",
            "crm.id",
        ],
    );
}

#[test]
fn the_agents_host_never_holds_the_data_or_the_sources_credential() {
    if !is_root() {
        assert!(
            std::env::var_os("SEALRELAY_REQUIRE_TOOLS").is_none(),
            "this test runs the source and the agent as two OS users: it needs root"
        );
        eprintln!("SKIP: not root: the source and the agent cannot run as two OS users");
        return;
    }
    let Some(py) = python() else { return };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    world(dir);
    // The source's files: its identity, its connector file and its scratch space, its user's
    // only; the credential is in its environment only.
    let c = canary();
    let text = format!(
        "CANARY-{}",
        c.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let mut doc = b"Account ACME: the customer record.\n".to_vec();
    doc.extend_from_slice(text.as_bytes());
    doc.push(b'\n');
    doc.extend_from_slice(&c);
    let credential = format!("Bearer crm-credential-{}", hex_of(&canary()));
    let port = http_source(doc.clone(), credential.clone());
    let crm = dir.join("crm");
    private_dir(&crm, SOURCE_UID);
    private_dir(&crm.join("tmp"), SOURCE_UID);
    std::fs::rename(dir.join("crm.id"), crm.join("crm.id")).unwrap();
    give(&crm.join("crm.id"), SOURCE_UID);
    std::fs::write(
        crm.join("connectors.toml"),
        format!("[[connector]]\nresources = \"customers/*\"\nhttp = \"http://127.0.0.1:{port}/doc/{{rest}}\"\nheaders = {{ Authorization = \"env:CRM_TOKEN\" }}\n"),
    )
    .unwrap();
    give(&crm.join("connectors.toml"), SOURCE_UID);
    // The agent's files: its identity only (no connector file, no credential).
    let agent = dir.join("agent");
    private_dir(&agent, AGENT_UID);
    private_dir(&agent.join("tmp"), AGENT_UID);
    std::fs::rename(dir.join("bot.id"), agent.join("bot.id")).unwrap();
    give(&agent.join("bot.id"), AGENT_UID);
    // The agent's user cannot read the source's connector file.
    let mut peek = as_user(AGENT_UID);
    peek.extend([
        "cat".into(),
        crm.join("connectors.toml").display().to_string(),
    ]);
    let peeked = Command::new(&peek[0]).args(&peek[1..]).output().unwrap();
    assert!(
        !peeked.status.success(),
        "the agent's user read the connector file"
    );

    let (relay_proc, relay) = common::serve_logged(dir);
    let source_proc = start_source(
        dir,
        Some(SOURCE_UID),
        &[
            "source",
            "serve",
            "--identity",
            "crm/crm.id",
            "--connectors",
            "crm/connectors.toml",
            "--relay",
            &relay,
            "--poll-ms",
            "100",
        ],
        &[
            ("CRM_TOKEN", &credential),
            ("TMPDIR", &crm.join("tmp").display().to_string()),
        ],
    );
    let main = grant(dir, &relay, "customers/acme");

    // The MCP server runs as the agent's user, with no connector file; its stdin and stdout
    // are teed to files byte for byte. Between the two status calls the requester fetches,
    // and the test reads the MCP server's memory while it still runs.
    let b = bin().display().to_string();
    let wrapper = format!(
        "tee -a mcp.in | TMPDIR='{tmp}' {setpriv} '{b}' mcp --identity agent/bot.id --relay {relay} 2>>mcp.log | tee -a mcp.out",
        tmp = agent.join("tmp").display(),
        setpriv = as_user(AGENT_UID).join(" "),
    );
    let between = format!(
        "for i in $(seq 1 300); do '{b}' inbox --identity alice.id --relay {relay} | grep -q 'sealed    by source crm' && break; sleep 0.1; done; \
         '{b}' fetch --identity alice.id --all -o alice-plain --relay {relay} >/dev/null || exit 3; \
         touch fetched; \
         for i in $(seq 1 600); do [ -f scanned ] && exit 0; sleep 0.1; done; exit 5"
    );
    let plan = serde_json::json!({
        "transport": "stdio",
        "command": ["/bin/sh", "-c", wrapper],
        "cwd": dir,
        "grant": main,
        "between": ["/bin/sh", "-c", between],
    });
    std::fs::write(dir.join("plan.json"), serde_json::to_vec(&plan).unwrap()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let client = Command::new(&py)
        .arg(script)
        .arg(dir.join("plan.json"))
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The MCP server's memory, after the retrieval and the delivery.
    let started = Instant::now();
    let pid: u32 = loop {
        if dir.join("fetched").exists() {
            break mcp_pid();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the MCP flow did not reach the fetch"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let memory = process_memory(pid);
    std::fs::write(dir.join("scanned"), b"").unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the MCP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();

    // What the model saw: a handle, queued at the source, then delivered, step by step.
    let r = &out["retrieve"]["structured"];
    assert_eq!(r["status"], "queued at source", "{out}");
    assert_eq!(r["source"], "crm");
    assert_eq!(r["envelope_id"], Value::Null);
    let mine = out["list_requests"]["structured"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["grant_id"] == main.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["source"], "crm");
    assert_eq!(mine["connector"], false);
    assert_eq!(out["between_rc"], 0);
    let after = &out["status_after"]["structured"];
    assert_eq!(after["status"], "delivered", "{after}");
    assert_eq!(
        after["steps"],
        serde_json::json!(["queued at source crm", "sealed by source crm", "delivered"])
    );
    // alice has the document, byte-exact.
    let fetched: Vec<PathBuf> = files_under(&dir.join("alice-plain"))
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "receipt"))
        .collect();
    assert_eq!(fetched.len(), 1);
    assert_eq!(std::fs::read(&fetched[0]).unwrap(), doc);

    // Neither the canary nor the credential: in the MCP server's memory, in any MCP byte, in
    // any file of the agent's user, in the relay's files and its log.
    let secret = credential.as_bytes();
    let what = "the memory of sealrelay mcp";
    assert!(!find(&memory, secret), "the credential is in {what}");
    let hits = canary_hits(&c, &[], &[(what, &memory)]);
    assert!(hits.is_empty(), "{hits:?}");
    assert!(!find(&memory, text.as_bytes()), "{what}");
    // The scan finds what is there: the agent's own name and the grant it dispatched.
    assert!(
        find(&memory, b"/agent/research-bot"),
        "the scan read nothing useful"
    );
    assert!(
        find(&memory, b"customers/acme"),
        "the scan read nothing useful"
    );
    let mut files = files_under(&agent);
    files.extend(["mcp.in", "mcp.out", "mcp.log", "relay.log"].map(|f| dir.join(f)));
    files.extend(files_under(&dir.join("data")));
    let mcp_bytes = std::fs::read(dir.join("mcp.out")).unwrap();
    assert!(!mcp_bytes.is_empty());
    let hits = canary_hits(
        &c,
        &files,
        &[("the client's results", out.to_string().as_bytes())],
    );
    assert!(hits.is_empty(), "{hits:?}");
    for f in &files {
        assert!(
            !find(&std::fs::read(f).unwrap(), secret),
            "the credential is in {}",
            f.display()
        );
    }
    // The source's log holds ids and sizes, not the data.
    let log = std::fs::read(dir.join("source.log")).unwrap();
    assert!(canary_hits(&c, &[], &[("source log", &log)]).is_empty());
    common::terminate(source_proc);
    common::terminate(relay_proc);
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_source_killed_with_sigkill_fills_every_assignment_exactly_once() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    world(dir);
    // A connector slow enough that a kill lands mid-way (reading, sealing or submitting).
    std::fs::write(
        dir.join("crm.toml"),
        "[[connector]]\nresources = \"customers/*\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.15; printf 'record of %s' \\\"$SEALRELAY_RESOURCE\\\"\"]\n",
    )
    .unwrap();
    let (relay_proc, relay) = common::serve(dir, &[]);
    let mut grants = Vec::new();
    for i in 0..20 {
        let g = grant(dir, &relay, &format!("customers/c{i}"));
        ok_in(
            dir,
            &[
                "dispatch",
                "--identity",
                "bot.id",
                "--grant",
                &g,
                "--relay",
                &relay,
            ],
        );
        grants.push(g);
    }
    let serve_args = [
        "source",
        "serve",
        "--identity",
        "crm.id",
        "--connectors",
        "crm.toml",
        "--relay",
        &relay,
        "--poll-ms",
        "50",
    ];
    let filled = |dir: &Path| {
        ok_in(dir, &["inbox", "--identity", "alice.id", "--relay", &relay])
            .lines()
            .filter(|l| l.contains(" bytes  received "))
            .count()
    };
    let mut kills = 0;
    let mut seed = 0x9e37_79b9_u32;
    while filled(dir) < 20 && kills < 60 {
        let mut p = start_source(dir, None, &serve_args, &[]);
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        std::thread::sleep(Duration::from_millis(150 + u64::from(seed % 300)));
        p.kill().unwrap();
        p.wait().unwrap();
        kills += 1;
    }
    assert!(
        kills >= 3,
        "the source finished before it was killed 3 times ({kills})"
    );
    // One last run to finish what is left, then stop it as an operator would.
    let p = start_source(dir, None, &serve_args, &[]);
    let started = Instant::now();
    while filled(dir) < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not every assignment was filled"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    common::terminate(p);
    // Exactly once: 20 envelopes, one per grant, each the record of its own resource.
    assert_eq!(filled(dir), 20);
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
            &relay,
        ],
    );
    let mut records: Vec<String> = files_under(&dir.join("out"))
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "receipt"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    records.sort();
    let mut want: Vec<String> = (0..20)
        .map(|i| format!("record of customers/c{i}"))
        .collect();
    want.sort();
    assert_eq!(records, want, "after {kills} kills");
    // The log shows one submission per grant, each by the source: no second envelope was ever
    // stored for a grant, whatever the kills interrupted.
    let events = ok_in(
        dir,
        &[
            "audit",
            "tail",
            "--identity",
            "keys/admin.id",
            "--json",
            "-n",
            "1000",
            "--relay",
            &relay,
        ],
    );
    let mut submitted: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "envelope.submitted")
        .map(|e| {
            assert!(e["actor"].as_str().unwrap().ends_with("/source/crm"), "{e}");
            let detail = e["detail"].as_str().unwrap();
            detail
                .split(' ')
                .next()
                .unwrap()
                .trim_start_matches("grant=")
                .to_owned()
        })
        .collect();
    submitted.sort();
    let mut want = grants.clone();
    want.sort();
    assert_eq!(submitted, want, "one envelope.submitted event per grant");
    eprintln!("20 assignments filled exactly once across {kills} SIGKILLs of the source");
    common::terminate(relay_proc);
}
