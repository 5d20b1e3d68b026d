//! Operating the relay: the admin listener (`/metrics`, `/livez`, `/readyz`) of a real `serve`
//! process after a real flow, checked by Prometheus's own `promtool`; readiness that follows
//! the store; and `SEALRELAY_*` variables that override the config file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{ok_in, run_in};
use sealrelay::client::UserClient;
use sealrelay::core::store::Store;
use sealrelay::local::provision::{agent, user};

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

/// GET `url`: (status, body).
fn get(url: &str) -> (u16, String) {
    let mut r = http().get(url).call().expect("the admin listener answers");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

/// `serve` with its admin listener on a free port (and its own database on the PostgreSQL pass).
fn serve_with_metrics(dir: &std::path::Path) -> (std::process::Child, String, String) {
    common::serve_with_admin(dir, "data", common::store_env(dir))
}

/// The value of the sample `name` (with its labels as written), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_after_a_real_flow_pass_promtool_and_name_no_party() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let (server, addr, admin) = serve_with_metrics(dir);
    let relay = ["--relay", addr.as_str()];

    // A grant, a submission, a fetch with its receipt, and a denial.
    let grant = ok_in(
        dir,
        &[
            &["grant", "--identity", "alice.id", "--agent", "research-bot"][..],
            &["--resource", "tickets/1", "--purpose", "triage"],
            &relay,
        ]
        .concat(),
    );
    let mut send = Command::new(common::bin())
        .args(
            [
                &["send", "--identity", "bot.id", "--grant", grant.trim()][..],
                &relay,
            ]
            .concat(),
        )
        .current_dir(dir)
        .envs(common::store_env(dir))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    send.stdin.take().unwrap().write_all(&[7u8; 5000]).unwrap();
    assert!(send.wait().unwrap().success());
    ok_in(
        dir,
        &[
            &["fetch", "--identity", "alice.id", "--all", "-o", "got"][..],
            &relay,
        ]
        .concat(),
    );
    let (code, _, err) = run_in(
        dir,
        &[
            &["grant", "--identity", "alice.id", "--agent", "research-bot"][..],
            &["--resource", "payroll/2026"],
            &relay,
        ]
        .concat(),
    );
    assert_ne!(
        code, 0,
        "a grant outside the agent's scopes is denied: {err}"
    );

    assert_eq!(get(&format!("{admin}/livez")), (200, "ok\n".to_owned()));
    assert_eq!(get(&format!("{admin}/readyz")), (200, "ready\n".to_owned()));
    let (status, text) = get(&format!("{admin}/metrics"));
    assert_eq!(status, 200);
    for (name, at_least) in [
        (
            "sealrelay_requests_total{action=\"grant\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "sealrelay_requests_total{action=\"submit\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "sealrelay_requests_total{action=\"deliver\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "sealrelay_requests_total{action=\"grant\",outcome=\"forbidden\"}",
            1.0,
        ),
        (
            "sealrelay_request_duration_seconds_count{action=\"submit\"}",
            1.0,
        ),
        (
            "sealrelay_policy_decisions_total{decision=\"allow\",principal=\"agent\"}",
            1.0,
        ),
        (
            "sealrelay_policy_decisions_total{decision=\"deny\",principal=\"user\"}",
            1.0,
        ),
        (
            "sealrelay_envelope_bytes_total{direction=\"received\"}",
            5000.0,
        ),
        ("sealrelay_envelope_bytes_total{direction=\"sent\"}", 5000.0),
        ("sealrelay_log_entries", 4.0),
        ("sealrelay_checkpoint_tree_size", 1.0),
        ("sealrelay_quarantined_agents", 0.0),
        ("sealrelay_ready", 1.0),
        ("sealrelay_quarantines_total", 0.0),
        ("sealrelay_commit_batch_operations_count", 1.0),
    ] {
        let v = sample(&text, name).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(v >= at_least, "{name} = {v}, expected at least {at_least}");
    }
    assert_eq!(
        sample(&text, "sealrelay_store_errors_total{kind=\"write\"}"),
        Some(0.0)
    );
    // No party, resource or purpose in any label or value.
    for secret in [
        "alice",
        "research-bot",
        "spiffe://",
        "tickets/1",
        "payroll",
        "triage",
    ] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }

    // Prometheus's own linter and parser.
    if common::have_tool("promtool") {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // And it can fail: a counter without `_total` is reported.
        let mut bad = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        bad.stdin
            .take()
            .unwrap()
            .write_all(b"# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests 1\n")
            .unwrap();
        assert!(
            !bad.wait().unwrap().success(),
            "promtool accepted a bad counter name"
        );
        // The alerting rules shipped in deploy/ parse and name only metrics that exist.
        let rules =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let rules = std::fs::read_to_string(&rules).unwrap();
        for name in rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("sealrelay_"))
        {
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "alerts.yml names {name}, which /metrics does not have"
            );
        }
    }
    common::terminate(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_store_is_down_and_recovers_by_itself() {
    let store = Arc::new(common::hooked::Hooked::in_memory());
    let fail = store.fail.clone();
    let w = common::test_relay_with(
        &[user("alice", 2, &[]), agent("research-bot", &["tickets/*"])],
        |c| c.metrics_listen = "127.0.0.1:0".into(),
        Some(store.clone() as Arc<dyn Store>),
    )
    .await;
    let admin = format!("http://{}", w.relay.metrics_addr.unwrap());
    let alice = UserClient::connect(&w.ids[0], &w.addr).await.unwrap();
    let readyz = {
        let admin = admin.clone();
        move || {
            let admin = admin.clone();
            async move {
                tokio::task::spawn_blocking(move || get(&format!("{admin}/readyz")))
                    .await
                    .unwrap()
            }
        }
    };
    let metrics = || {
        let admin = admin.clone();
        async move {
            tokio::task::spawn_blocking(move || get(&format!("{admin}/metrics")).1)
                .await
                .unwrap()
        }
    };
    assert_eq!(readyz().await.0, 200);
    alice
        .grant(&common::grant_request("tickets/1"))
        .await
        .unwrap();
    // With no write after it, the grant's entry is still checkpointed (the idle commit thread
    // signs what the last batch left uncovered).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = metrics().await;
        let entries = sample(&text, "sealrelay_log_entries").unwrap();
        if sample(&text, "sealrelay_checkpoint_tree_size") == Some(entries) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the checkpoint never covered the log: {entries} entries"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    fail.store(true, Ordering::SeqCst);
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: store:"), "{body}");
    assert_eq!(sample(&metrics().await, "sealrelay_ready"), Some(0.0));
    assert!(!body.trim_end().contains('\n'), "one line: {body}");
    let e = alice
        .grant(&common::grant_request("tickets/2"))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains('\n'), "{e}");
    // The relay answered "unavailable": still retried as unavailable, but a refusal by a relay
    // that was reached (exit 6), not "relay unreachable" (7).
    assert_eq!(e.kind(), sealrelay::ErrorKind::Unavailable, "{e}");
    assert!(e.is_relay_answer(), "{e}");
    assert_eq!(e.exit_code(), 6, "{e}");
    let text = metrics().await;
    assert!(
        sample(&text, "sealrelay_store_errors_total{kind=\"write\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "sealrelay_requests_total{action=\"grant\",outcome=\"unavailable\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    // /livez still answers: the process is alive, only not ready.
    let admin2 = admin.clone();
    let live = tokio::task::spawn_blocking(move || get(&format!("{admin2}/livez")))
        .await
        .unwrap();
    assert_eq!(live.0, 200);

    fail.store(false, Ordering::SeqCst);
    assert_eq!(readyz().await, (200, "ready\n".to_owned()));
    alice
        .grant(&common::grant_request("tickets/3"))
        .await
        .unwrap();
}

#[test]
fn environment_variables_override_the_config_file_and_bad_ones_are_one_line() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    std::fs::write(
        dir.join("relay.toml"),
        "listen = \"127.0.0.1:1\"\ndir = \"keys\"\ndata = \"data\"\nmetrics_listen = \"off\"\n",
    )
    .unwrap();
    // The file says port 1 and no metrics; the environment moves both.
    let mut child = Command::new(common::bin())
        .args(["serve"])
        .env("SEALRELAY_CONFIG", "relay.toml")
        .env("SEALRELAY_LISTEN", "127.0.0.1:0")
        .env("SEALRELAY_METRICS_LISTEN", "127.0.0.1:0")
        .env("SEALRELAY_LIMITS__MAX_CONNECTIONS", "3")
        .current_dir(dir)
        .envs(common::store_env(dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    out.read_line(&mut second).unwrap();
    assert!(
        first.starts_with("sealrelay relay listening on 127.0.0.1:"),
        "{first}"
    );
    assert!(!first.trim().ends_with(":1"), "{first}");
    assert!(
        second.starts_with("sealrelay metrics on http://127.0.0.1:"),
        "{second}"
    );
    common::terminate(child);

    // A bad value, a misspelt table field and a taken metrics port: one line each, exit 2/3,
    // nothing started.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: [(&str, &str, &str); 3] = [
        (
            "SEALRELAY_LIMITS__MAX_CONNECTIONS",
            "many",
            "SEALRELAY_LIMITS__MAX_CONNECTIONS",
        ),
        (
            "SEALRELAY_LIMITS__MAX_CONECTIONS",
            "5",
            "names no config field",
        ),
        (
            "SEALRELAY_METRICS_LISTEN",
            &taken,
            "cannot listen for metrics",
        ),
    ];
    for (name, value, needle) in cases {
        let out = Command::new(common::bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("SEALRELAY_CONFIG", "relay.toml")
            .env(name, value)
            .current_dir(dir)
            .envs(common::store_env(dir))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value} started");
        assert!(err.contains(needle), "{name}={value}: {err}");
        let last = err.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("error:"), "{name}={value}: {err}");
    }
}

/// `grant` as alice through `relay`: (exit code, stderr).
fn grant_through(dir: &std::path::Path, relay: &str) -> (i32, String) {
    let (code, _, err) = run_in(
        dir,
        &[
            "grant",
            "--identity",
            "alice.id",
            "--agent",
            "research-bot",
            "--resource",
            "tickets/1",
            "--relay",
            relay,
        ],
    );
    (code, err)
}

/// docs/cli.md: 6 is a refusal by the relay, 7 a relay that could not be reached. A relay that
/// answers "unavailable, try again" (here: storage full, its free-space reserve larger than any
/// disk) was reached: 6.
#[test]
fn a_relay_that_answers_unavailable_exits_6_and_one_not_reached_exits_7() {
    if std::env::var_os("SEALRELAY_TEST_POSTGRES").is_some() {
        eprintln!("SKIPPED on PostgreSQL: the free-space reserve guards the embedded store");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let reserve = vec![(
        "SEALRELAY_MIN_FREE_BYTES".to_owned(),
        "1000000000000000000".to_owned(),
    )];
    let (server, addr, _) = common::serve_with_admin(dir, "data", reserve);
    let (code, err) = grant_through(dir, &addr);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("storage full"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    common::terminate(server);
    // Nothing answers there now.
    let (code, err) = grant_through(dir, &addr);
    assert_eq!(code, 7, "{err}");
}

/// A data directory whose checkpoints come from a log the store does not hold: a node started
/// without its `store` (on PostgreSQL), or on an empty embedded store, is told that plainly, not
/// that its data was rolled back.
#[test]
fn a_node_started_without_its_store_is_told_so_not_that_it_was_rolled_back() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    common::cli_world(dir);
    let envs = common::store_env(dir);
    let on_postgres = !envs.is_empty();
    let (server, _, _) = common::serve_with_admin(dir, "data", envs.clone());
    common::terminate(server);
    let recorded = std::fs::read_to_string(dir.join("data/checkpoints.store")).unwrap();
    assert_eq!(
        recorded.trim(),
        if on_postgres { "postgres" } else { "embedded" }
    );
    if !on_postgres {
        // The embedded store lost (as a node that ran on PostgreSQL has none).
        std::fs::remove_file(dir.join("data/state.redb")).unwrap();
    }
    let out = Command::new(common::bin())
        .args(["serve", "--dir", "keys", "--data", "data"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .env_remove("SEALRELAY_STORE")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error:"), "{err}");
    assert!(
        last.contains("started without its `store` (SEALRELAY_STORE)"),
        "{last}"
    );
    assert!(!last.contains("rolled back"), "{last}");
    if on_postgres {
        assert!(last.contains("made on PostgreSQL"), "{last}");
        // With its store again, it starts.
        let (server, _, _) = common::serve_with_admin(dir, "data", envs);
        common::terminate(server);
    } else {
        assert!(last.contains("but the store is empty"), "{last}");
    }
}

/// docs/config.md lists every `SEALRELAY_*` variable `serve` reads, and no other
/// (`SEALRELAY_UPDATE_DOCS=1` rewrites the table).
#[test]
fn config_md_lists_every_environment_variable() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let header = "| variable | field |\n|---|---|\n";
    let start = doc
        .find(header)
        .expect("the table header in docs/config.md")
        + header.len();
    let end = doc[start..]
        .find("\n\n")
        .map_or(doc.len(), |i| start + i + 1);
    let mut rows: Vec<String> = sealrelay::server::RelayConfig::env_vars()
        .into_iter()
        .map(|v| format!("| `{}` | `{}` |\n", v.name, v.path.join(".")))
        .collect();
    rows.sort();
    let want = rows.concat();
    if std::env::var_os("SEALRELAY_UPDATE_DOCS").is_some() {
        std::fs::write(&path, format!("{}{want}{}", &doc[..start], &doc[end..])).unwrap();
        return;
    }
    assert_eq!(
        &doc[start..end],
        want,
        "docs/config.md's variable table is out of date (SEALRELAY_UPDATE_DOCS=1 cargo test --test operations config_md)"
    );
}
